//! The request model that sockets (`net`), files (`file`) and providers share: what a
//! request yields ([`Submitted`], [`OpResult`]), the [`Ticket`] of an owned-buffer request,
//! where its one completion goes ([`Notify`]), the results kept until
//! [`finish`](crate::Socket::finish) ([`Finished`]), which requests a cancel names
//! ([`Which`]), and the start and publication of an `OVERLAPPED` ([`Started`]).
//!
//! Every request completes exactly once. Its owner decides *who* delivers it (a socket's
//! mutex; a file job's [`Delivery`](crate::completion::Delivery)); this module is *what*
//! delivering does, the same for all of them.

use crate::error::{self, to_record};
use crate::event::Event;
use crate::overlapped::Overlapped;
use crate::{Completion, Port, RawHandle};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// The ticket of an owned-buffer request: unique in the process, so that a record can only
/// ever be finished by the socket or file that made it. The request's record carries it in
/// its `overlapped` field ([`Ticket::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

impl Ticket {
    /// A fresh ticket.
    pub(crate) fn next() -> Ticket {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // Relaxed: tickets only need to be distinct.
        Ticket(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The ticket `record` carries (meaningful for the record of an owned-buffer request).
    pub const fn of(record: &Completion) -> Ticket {
        Ticket::from_raw(record.overlapped() as u64)
    }

    /// The ticket numbered `number`, as [`get`](Self::get) gives it (for a program that
    /// keeps tickets as plain numbers). A number no request was given names none: a
    /// cancel of it fails with `ENOENT`.
    pub const fn from_raw(number: u64) -> Ticket {
        Ticket(number)
    }

    /// The number, as records carry it.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a request handed to the engine has become.
#[derive(Debug)]
pub enum Submitted {
    /// It completed at once; no record will be posted.
    Done(OpResult),
    /// It will complete as one record carrying this ticket ([`Ticket::of`]).
    Pending(Ticket),
}

/// The outcome of an owned-buffer request, with the buffer it was given.
#[derive(Debug)]
pub struct OpResult {
    /// Bytes transferred, or the request's error (`ECANCELED` if cancelled).
    pub result: io::Result<usize>,
    /// The buffer handed in (empty for accept, connect and sync); data read is at the front.
    pub buf: Vec<u8>,
    /// The peer: the sender of a datagram, or an accepted connection's address.
    pub peer: Option<SocketAddr>,
    /// The connection an accept produced (non-blocking, close-on-exec, not yet associated).
    pub accepted: Option<OwnedFd>,
}

impl OpResult {
    /// The result of a request that carries only a buffer (no peer, no connection).
    pub(crate) fn of_buffer(result: io::Result<usize>, buf: Vec<u8>) -> OpResult {
        OpResult {
            result,
            buf,
            peer: None,
            accepted: None,
        }
    }
}

/// Where a request's one completion goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notify {
    /// An owned-buffer request: its result is kept in its owner's [`Finished`] and a record
    /// carrying the ticket goes to the port.
    Ticket(Ticket),
    /// Caller memory and an `OVERLAPPED`: the block is published, then a record carrying
    /// its address goes to the port, or its `hEvent` event is set when there is no port.
    Overlapped(*const Overlapped),
}

impl Notify {
    /// Reports a request that completed after it was queued, with `result` (and the rest
    /// of its owned-buffer outcome, made by `outcome`, kept in `finished`). Returns the
    /// record for the caller to post to the port it is associated with under `key`.
    ///
    /// An overlapped block is published before this returns, and the caller must not touch
    /// it again: its requester may free it.
    pub(crate) fn deliver(
        self,
        result: io::Result<usize>,
        outcome: impl FnOnce(io::Result<usize>) -> OpResult,
        key: Option<u64>,
        finished: &mut Finished,
    ) -> Option<Completion> {
        let (bytes, errno) = to_record(&result);
        match self {
            Notify::Ticket(ticket) => {
                let key = key.expect("owned-buffer requests need a port");
                finished.keep(ticket, outcome(result));
                Some(Completion::new(key, bytes, ticket.0 as usize).with_error(errno))
            }
            Notify::Overlapped(overlapped) => {
                // SAFETY: the submitter of an overlapped request guarantees the block lives,
                // and is not reused, until this completion; nothing touches it after.
                let block = unsafe { &*overlapped };
                // Fails only for STATUS_PENDING, which `to_record` never makes.
                block.complete_with(bytes, errno, key).ok().flatten()
            }
        }
    }
}

/// Which queued requests a cancel names.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Which {
    /// The owned-buffer request with this ticket.
    Ticket(Ticket),
    /// The overlapped request with this block (`CancelIoEx`).
    Overlapped(*const Overlapped),
    /// All of them (`CancelIoEx` with no overlapped, a close).
    All,
}

impl Which {
    /// Whether the request that completes through `notify` is named.
    pub(crate) fn matches(self, notify: &Notify) -> bool {
        match (self, notify) {
            (Which::All, _) => true,
            (Which::Ticket(named), Notify::Ticket(ticket)) => named == *ticket,
            (Which::Overlapped(named), Notify::Overlapped(block)) => named == *block,
            _ => false,
        }
    }

    /// A cancel's answer once `cancelled` requests were cancelled: their count, or
    /// `ENOENT` when none was queued (it may have completed first).
    pub(crate) fn outcome(cancelled: usize) -> io::Result<usize> {
        match cancelled {
            0 => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            n => Ok(n),
        }
    }
}

/// Appends `item`, making room for one on a queue's first push where `push_back` would
/// make room for four: a socket seldom has more than one request of a direction waiting or
/// one result unclaimed, and a server with many idle connections keeps one read of each
/// waiting (80 bytes where four would take 320).
pub(crate) fn push_back_starting_small<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.capacity() == 0 {
        queue.reserve_exact(1);
    }
    queue.push_back(item);
}

/// The results of a socket's or file's owned-buffer requests that completed through the
/// port, kept by ticket until the program [`take`](Self::take)s them with the record.
///
/// A queue in delivery order, searched from the front: a program finishes records in the
/// order it dequeues them, which is the order they were delivered in (a record is posted
/// right after its result is kept), so the search ends at the first entry and the take is
/// a `pop_front`. No hashing per request, and the queue's storage is reused, where a hash
/// map hashed every ticket twice. A result finished out of order costs a scan of the
/// results delivered before it and not finished yet.
#[derive(Debug, Default)]
pub(crate) struct Finished(VecDeque<(Ticket, OpResult)>);

impl Finished {
    /// Keeps the result of the request with `ticket` until it is taken.
    fn keep(&mut self, ticket: Ticket, result: OpResult) {
        push_back_starting_small(&mut self.0, (ticket, result));
    }

    /// The result `record` announces. `EINVAL` for a record that is not one of this owner's
    /// (or was finished already).
    pub(crate) fn take(&mut self, record: &Completion) -> io::Result<OpResult> {
        let ticket = Ticket::of(record);
        let at = self
            .0
            .iter()
            .position(|(kept, _)| *kept == ticket)
            .ok_or_else(error::invalid)?;
        let (_, result) = self.0.remove(at).expect("found above");
        Ok(result)
    }
}

/// An owned-buffer request can only come back through a port's record: `ENOTCONN` for an
/// owner without one.
pub(crate) fn need_port<T>(port: Option<T>) -> io::Result<T> {
    port.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOTCONN))
}

/// An overlapped request being submitted: its block reads as pending from [`start`] on,
/// and completes exactly once, through [`Notify::deliver`] once queued, or here.
pub(crate) struct Started<'a> {
    block: &'a Overlapped,
    /// The block's event, read before it was marked pending (after its publication the
    /// requester may reuse the block).
    event: RawHandle,
}

/// Starts the overlapped request whose block is `overlapped`.
///
/// # Safety
///
/// `overlapped` must point to a live [`Overlapped`] that stays valid until the request
/// completes.
pub(crate) unsafe fn start<'a>(overlapped: *const Overlapped) -> Started<'a> {
    // SAFETY: the caller guarantees the block is live until the request completes, which
    // is no earlier than the end of the submission this `Started` is used for.
    let block = unsafe { &*overlapped };
    let event = block.event_handle();
    block.start();
    Started { block, event }
}

impl Started<'_> {
    /// The request was never queued: its block completes with the error, so that nobody
    /// waits on it, and the error is returned.
    pub(crate) fn refuse(self, err: io::Error) -> io::Error {
        // Fails only for STATUS_PENDING, which no errno is.
        let _ = self
            .block
            .publish(0, err.raw_os_error().unwrap_or(libc::EIO) as u32);
        err
    }

    /// The request completed at once with `result`: its block is published and, as on
    /// Windows, its event set when the handle has no port; no record is posted. Returns the
    /// byte count.
    pub(crate) fn done_at_once(self, result: io::Result<usize>, portless: bool) -> io::Result<u32> {
        let (bytes, errno) = to_record(&result);
        self.block.publish(bytes, errno)?;
        if portless {
            if let Some(event) = Event::from_handle(self.event) {
                event.set();
            }
        }
        result.map(|_| bytes)
    }
}

/// The port a handle is associated with, and the key, if it is.
pub(crate) type Association = Option<(Port, u64)>;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn record_of(ticket: Ticket) -> Completion {
        Completion::new(7, 0, ticket.get() as usize)
    }

    fn kept(finished: &mut Finished, ticket: Ticket, n: usize) {
        finished.keep(ticket, OpResult::of_buffer(Ok(n), vec![0; n]));
    }

    #[test]
    fn results_are_taken_by_ticket_in_any_order_and_only_once() {
        let mut finished = Finished::default();
        let tickets: Vec<Ticket> = (0..4).map(|_| Ticket::next()).collect();
        for (n, &ticket) in tickets.iter().enumerate() {
            kept(&mut finished, ticket, n);
        }
        // In order for the first, then out of order.
        for &n in &[0, 3, 1, 2] {
            let result = finished.take(&record_of(tickets[n])).unwrap();
            assert_eq!(result.result.unwrap(), n);
            assert_eq!(result.buf.len(), n);
        }
        for &ticket in &tickets {
            let err = finished.take(&record_of(ticket)).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "taken twice");
        }
    }

    #[test]
    fn a_record_of_another_owner_is_refused_and_takes_nothing() {
        let mut finished = Finished::default();
        let mine = Ticket::next();
        kept(&mut finished, mine, 3);
        let err = finished.take(&record_of(Ticket::next())).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(finished.take(&record_of(mine)).unwrap().result.unwrap(), 3);
    }
}
