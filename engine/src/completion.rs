//! The completion record, and the decision of who delivers an operation's one record.

use crate::primitive::{AtomicU8, Ordering};
use std::io;

/// One completion record: what `GetQueuedCompletionStatus` returns and what a
/// `struct gmcs` entry holds.
///
/// `overlapped` is an opaque address: for I/O it is the address of the request's
/// [`Overlapped`](crate::Overlapped), for a posted record whatever the poster chose.
/// `error` is 0 for success or the failed operation's `errno`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Completion {
    key: u64,
    overlapped: usize,
    bytes: u32,
    error: u32,
}

// `to_words` relies on this layout: three 8-byte words, the 4-byte fields in the last.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<Completion>() == 24);
    assert!(std::mem::offset_of!(Completion, overlapped) == 8);
    assert!(std::mem::offset_of!(Completion, bytes) == 16);
    assert!(std::mem::offset_of!(Completion, error) == 20);
};

impl Completion {
    /// The record as the three 8-byte words of its memory, its two 4-byte fields joined
    /// into the last: a ring slot takes it in three stores rather than four, and a post on
    /// the same thread as its drain is bound by its stores (on an AMD EPYC, 16 posts and a
    /// drain went from 5.1 to 4.8 ns a record with this alone).
    #[cfg(target_pointer_width = "64")]
    #[inline(always)]
    pub(crate) fn to_words(self) -> [u64; 3] {
        let last = if cfg!(target_endian = "little") {
            u64::from(self.bytes) | u64::from(self.error) << 32
        } else {
            u64::from(self.bytes) << 32 | u64::from(self.error)
        };
        [self.key, self.overlapped as u64, last]
    }

    /// A successful record.
    pub const fn new(key: u64, bytes: u32, overlapped: usize) -> Completion {
        Completion {
            key,
            overlapped,
            bytes,
            error: 0,
        }
    }

    /// The same record, marked as a failed operation with `errno` (0 means success).
    pub const fn with_error(self, errno: u32) -> Completion {
        Completion {
            error: errno,
            ..self
        }
    }

    /// The completion key the handle was associated (or the record posted) with.
    pub const fn key(&self) -> u64 {
        self.key
    }

    /// Bytes transferred.
    pub const fn bytes(&self) -> u32 {
        self.bytes
    }

    /// The overlapped address the record carries.
    pub const fn overlapped(&self) -> usize {
        self.overlapped
    }

    /// The operation's `errno`, 0 for success.
    pub const fn error(&self) -> u32 {
        self.error
    }

    /// The byte count, or the operation's error.
    pub fn result(&self) -> io::Result<u32> {
        match self.error {
            0 => Ok(self.bytes),
            errno => Err(io::Error::from_raw_os_error(errno as i32)),
        }
    }
}

/// Not started: the next claim, by its runner or a canceller, wins.
const QUEUED: u8 = 0;
/// Claimed: the winner is running the operation, or cancelling it.
const RUNNING: u8 = 1;
/// The completion has been reported (its record may still be on its way to the port).
const DONE: u8 = 2;

/// Decides who delivers a queued operation's one completion: the thread that runs it, or a
/// canceller that gets there first (the file pool's jobs). One compare-and-swap
/// `QUEUED → RUNNING` decides, so exactly one of them delivers; the winner delivers
/// through [`deliver`](Self::deliver), which marks the operation done once its report is
/// made and before its record is posted: a canceller told [`Cancel::Done`] sees the report,
/// and one told [`Cancel::Running`] is never looking at an operation whose record was
/// already dequeued.
///
/// The loom models `cancel_races_complete`, `two_cancels_race_complete` and
/// `cancel_told_done_sees_the_record` race a runner against cancellers on this type.
#[derive(Debug)]
pub struct Delivery {
    /// `QUEUED`, `RUNNING` or `DONE`; only ever moves forward.
    state: AtomicU8,
}

/// What a [`Delivery::cancel`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancel {
    /// Cancelled before it started: the caller must deliver it, with `ECANCELED`.
    Cancelled,
    /// Started (or being cancelled by another caller), its I/O not yet over: its
    /// completion is on its way.
    Running,
    /// Reported: the aiocb or result is filled in; its record is queued or on its way.
    Done,
}

impl Delivery {
    /// A queued operation.
    #[allow(clippy::new_without_default)] // only jobs make one, each with `new`
    pub fn new() -> Delivery {
        Delivery {
            state: AtomicU8::new(QUEUED),
        }
    }

    /// The runner's claim, before it starts the operation: `false` when a canceller won
    /// (and delivers), so the runner must leave the operation alone.
    pub fn start(&self) -> bool {
        // Relaxed: the claim orders nothing else; the operation reached the runner through
        // its queue, and a runner that loses only drops its reference.
        self.state
            .compare_exchange(QUEUED, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// A canceller's claim. On [`Cancel::Cancelled`] the caller delivers the `ECANCELED`
    /// completion through [`deliver`](Self::deliver).
    pub fn cancel(&self) -> Cancel {
        // Relaxed on success: as in `start`, the canceller reached the operation through a
        // lock. Acquire on failure: pairs with the release store in `deliver`, so a
        // canceller told `Done` sees everything the delivery reported (the record in the
        // port, the aiocb's status).
        match self
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::Relaxed, Ordering::Acquire)
        {
            Ok(_) => Cancel::Cancelled,
            Err(RUNNING) => Cancel::Running,
            Err(_) => Cancel::Done,
        }
    }

    /// Delivers the completion: `report` fills in what the operation's owner reads (the
    /// aiocb, the result kept for `finish`), the operation is marked done, then `post` sends
    /// what `report` returned (the record). Only the winner of [`start`](Self::start) or
    /// [`cancel`](Self::cancel) calls it, once.
    ///
    /// Done comes before the post so that a program that dequeued the record and then
    /// cancels is told [`Cancel::Done`], never that the operation still runs; a canceller
    /// told `Done` sees the report, and the record follows.
    pub fn deliver<R>(&self, report: impl FnOnce() -> R, post: impl FnOnce(R)) {
        debug_assert_eq!(
            // Relaxed: this thread set RUNNING itself.
            self.state.load(Ordering::Relaxed),
            RUNNING,
            "delivered by a thread that did not win the claim"
        );
        let reported = report();
        // Release: pairs with the acquire of a failed claim in `cancel`.
        self.state.store(DONE, Ordering::Release);
        post(reported);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc};
    use std::thread;
    use std::time::Duration;

    /// Regression: the operation was marked done only after its record was posted, so a
    /// program that dequeued the record and then cancelled could be told `Running`
    /// (`aio_cancel` → `AIO_NOTCANCELED`; seen as a flaky
    /// `cancel_with_nothing_queued_fails_with_enoent_and_aio_cancel_reports_all_done`).
    #[test]
    fn regression_cancel_after_the_record_was_posted_said_running() {
        let delivery = Arc::new(Delivery::new());
        assert!(delivery.start());
        let (posted, dequeued) = mpsc::channel();
        let canceller = {
            let delivery = Arc::clone(&delivery);
            thread::spawn(move || {
                dequeued.recv().unwrap();
                delivery.cancel()
            })
        };
        delivery.deliver(
            || (),
            |()| {
                posted.send(()).unwrap();
                // Long enough for the canceller to look before `deliver` returns.
                thread::sleep(Duration::from_millis(100));
            },
        );
        assert_eq!(canceller.join().unwrap(), Cancel::Done);
        assert_eq!(delivery.cancel(), Cancel::Done);
    }
}
