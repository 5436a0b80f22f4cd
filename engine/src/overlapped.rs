//! `OVERLAPPED`: the status block of one asynchronous request.
//!
//! The layout is AIX's and Windows' (`Internal`, `InternalHigh`, `Offset`, `OffsetHigh`,
//! `hEvent`, five 32-bit words), so a C caller's `OVERLAPPED` is this very struct.
//! `Internal` holds [`STATUS_PENDING`] while the request runs and its final status after:
//! 0 for success, else the `errno`. A completion stores the byte count in `InternalHigh`
//! *before* it stores `Internal` with release ordering, so whoever sees `Internal` done
//! (acquire) also sees the count. Waiting for a result sleeps on the `Internal` word itself
//! (a futex), so no event is needed; the completer makes the wake system call only when
//! some thread sleeps on some overlapped (a process-wide count, checked after the store).

use crate::error;
use crate::event::Event;
use crate::sys;
use crate::{Completion, Port, RawHandle};
use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};

/// `Internal` of a request still in progress (`WSS_OPERATION_IN_PROGRESS`, `STATUS_PENDING`).
pub const STATUS_PENDING: u32 = 0x103;

/// Threads sleeping in [`Overlapped::get_result`] on any overlapped.
static RESULT_WAITERS: AtomicUsize = AtomicUsize::new(0);

/// The status block of an asynchronous request, laid out as C's `OVERLAPPED`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Overlapped {
    internal: AtomicU32,
    internal_high: AtomicU32,
    offset: AtomicU32,
    offset_high: AtomicU32,
    event: AtomicI32,
}

impl Overlapped {
    /// A zeroed block: not pending, offset 0, no event.
    pub const fn new() -> Overlapped {
        Overlapped {
            internal: AtomicU32::new(0),
            internal_high: AtomicU32::new(0),
            offset: AtomicU32::new(0),
            offset_high: AtomicU32::new(0),
            event: AtomicI32::new(0),
        }
    }

    /// A zeroed block whose completion, when the handle has no port, sets `event`.
    pub fn with_event(event: &Event) -> Overlapped {
        let overlapped = Overlapped::new();
        overlapped.event.store(event.handle(), Ordering::Relaxed);
        overlapped
    }

    /// The 64-bit file offset (`OffsetHigh:Offset`).
    pub fn offset(&self) -> u64 {
        // Relaxed: the offset is set before the request is issued, which orders it.
        let low = self.offset.load(Ordering::Relaxed);
        let high = self.offset_high.load(Ordering::Relaxed);
        (u64::from(high) << 32) | u64::from(low)
    }

    /// Sets the file offset of the next request.
    pub fn set_offset(&self, offset: u64) {
        // Relaxed: see `offset`.
        self.offset.store(offset as u32, Ordering::Relaxed);
        self.offset_high
            .store((offset >> 32) as u32, Ordering::Relaxed);
    }

    /// The `hEvent` handle (0 for none).
    pub fn event_handle(&self) -> RawHandle {
        // Relaxed: set before the request is issued.
        self.event.load(Ordering::Relaxed)
    }

    /// Marks the request as in progress (`Internal = STATUS_PENDING`); done by whoever
    /// accepts the request, before it can complete.
    pub fn start(&self) {
        // Relaxed: the request is handed to its completer afterwards, which orders this.
        self.internal_high.store(0, Ordering::Relaxed);
        self.internal.store(STATUS_PENDING, Ordering::Relaxed);
    }

    /// `InternalHigh`: the byte count of a finished request.
    pub fn bytes(&self) -> u32 {
        // Acquire: read after `Internal` says done, as `get_result` does.
        self.internal_high.load(Ordering::Acquire)
    }

    /// `HasOverlappedIoCompleted`: `Internal != STATUS_PENDING`.
    pub fn is_complete(&self) -> bool {
        // Acquire: pairs with the store in `publish`, so the byte count is visible.
        self.internal.load(Ordering::Acquire) != STATUS_PENDING
    }

    /// `GetOverlappedResult`: the byte count or the request's error. While the request
    /// runs, `wait == false` fails with `EINPROGRESS`, `wait == true` sleeps until it is done
    /// (signals do not end this wait).
    pub fn get_result(&self, wait: bool) -> io::Result<u32> {
        loop {
            // Acquire: pairs with the store in `publish`.
            let status = self.internal.load(Ordering::Acquire);
            if status != STATUS_PENDING {
                // Relaxed: ordered after `Internal` by the acquire above.
                let bytes = self.internal_high.load(Ordering::Relaxed);
                return match status {
                    0 => Ok(bytes),
                    errno => Err(io::Error::from_raw_os_error(errno as i32)),
                };
            }
            if !wait {
                return Err(error::in_progress());
            }
            // SeqCst: the waiter half of a Dekker pair with `publish` (store `Internal`,
            // then read the count): either the completer sees us or we see it done.
            RESULT_WAITERS.fetch_add(1, Ordering::SeqCst);
            if self.internal.load(Ordering::SeqCst) == STATUS_PENDING {
                sys::futex_wait(&self.internal, STATUS_PENDING, None);
            }
            RESULT_WAITERS.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Completes the request: `InternalHigh = bytes`, then `Internal = errno` (0 for
    /// success), then wakes threads waiting in [`get_result`](Self::get_result).
    /// `EINVAL` if `errno` is [`STATUS_PENDING`], which would read as still running.
    pub fn publish(&self, bytes: u32, errno: u32) -> io::Result<()> {
        if errno == STATUS_PENDING {
            return Err(error::invalid());
        }
        // The wake below names the word by address only: once `Internal` is stored the
        // requester may free the block, so no reference to it is made after that store.
        let word: *const AtomicU32 = &self.internal;
        // Relaxed: published by the store of `Internal` below.
        self.internal_high.store(bytes, Ordering::Relaxed);
        // SeqCst: release pairs with the acquire loads of `Internal`; sequential consistency
        // is the completer half of the Dekker pair in `get_result`.
        self.internal.store(errno, Ordering::SeqCst);
        if RESULT_WAITERS.load(Ordering::SeqCst) != 0 {
            sys::futex_wake_all(word);
        }
        Ok(())
    }

    /// Completes the request and reports it: a record carrying this block's address to
    /// `port` under `key` if the handle has a port, else the `hEvent` event is set (the
    /// Winsock provider rule of `WPUCompleteOverlappedRequest`). After this returns the
    /// requester may free the block, so the caller must not touch it again.
    pub fn complete(&self, bytes: u32, errno: u32, port: Option<(&Port, u64)>) -> io::Result<()> {
        match self.complete_with(bytes, errno, port.map(|(_, key)| key))? {
            Some(record) => port.expect("a key comes with its port").0.post(record),
            None => Ok(()),
        }
    }

    /// As [`complete`](Self::complete), but the record for a port (`key` given) is returned
    /// for the caller to post, after the block is published; without a key the `hEvent`
    /// event is set. After this returns the caller must not touch the block again.
    pub(crate) fn complete_with(
        &self,
        bytes: u32,
        errno: u32,
        key: Option<u64>,
    ) -> io::Result<Option<Completion>> {
        let address = self as *const Overlapped as usize;
        // Read before publishing: once `Internal` is done the requester may reuse the block.
        let event = self.event_handle();
        self.publish(bytes, errno)?;
        match key {
            Some(key) => Ok(Some(Completion::new(key, bytes, address).with_error(errno))),
            None => {
                if let Some(event) = Event::from_handle(event) {
                    event.set();
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_c() {
        assert_eq!(std::mem::size_of::<Overlapped>(), 20);
        assert_eq!(std::mem::align_of::<Overlapped>(), 4);
        assert_eq!(std::mem::offset_of!(Overlapped, internal), 0);
        assert_eq!(std::mem::offset_of!(Overlapped, internal_high), 4);
        assert_eq!(std::mem::offset_of!(Overlapped, offset), 8);
        assert_eq!(std::mem::offset_of!(Overlapped, offset_high), 12);
        assert_eq!(std::mem::offset_of!(Overlapped, event), 16);
    }

    #[test]
    fn offset_round_trips_through_both_words() {
        let o = Overlapped::new();
        o.set_offset(0x1234_5678_9abc_def0);
        assert_eq!(o.offset(), 0x1234_5678_9abc_def0);
        assert_eq!(o.offset.load(Ordering::Relaxed), 0x9abc_def0);
        assert_eq!(o.offset_high.load(Ordering::Relaxed), 0x1234_5678);
    }

    /// The Dekker pair between `get_result`'s sleeper and `publish`: whatever the
    /// interleaving, the waiter wakes and reads the count stored before the status. Under
    /// Miri the futex is emulated and its weak-memory emulation checks the orderings.
    #[test]
    fn a_waiter_in_get_result_wakes_with_the_result_another_thread_publishes() {
        let rounds = if cfg!(miri) { 4 } else { 500 };
        for round in 0..rounds {
            let block = std::sync::Arc::new(Overlapped::new());
            block.start();
            let waiter = {
                let block = std::sync::Arc::clone(&block);
                std::thread::spawn(move || block.get_result(true))
            };
            if round % 2 == 0 {
                // Sometimes let the waiter get to its futex first.
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            let errno = if round % 3 == 0 { libc::EIO as u32 } else { 0 };
            block.publish(round, errno).unwrap();
            let result = waiter.join().unwrap();
            match errno {
                0 => assert_eq!(result.unwrap(), round),
                _ => assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO)),
            }
            assert!(block.is_complete());
            assert_eq!(block.bytes(), round);
        }
    }

    #[test]
    fn a_thread_that_sees_the_request_complete_sees_its_byte_count() {
        let rounds = if cfg!(miri) { 4 } else { 500 };
        for round in 1..=rounds {
            let block = std::sync::Arc::new(Overlapped::new());
            block.start();
            let reader = {
                let block = std::sync::Arc::clone(&block);
                std::thread::spawn(move || {
                    while !block.is_complete() {
                        std::thread::yield_now();
                    }
                    block.bytes()
                })
            };
            block.publish(round, 0).unwrap();
            assert_eq!(reader.join().unwrap(), round);
        }
    }
}
