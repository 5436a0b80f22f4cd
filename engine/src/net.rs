//! Overlapped socket I/O.
//!
//! A [`Socket`] owns a descriptor (TCP listener or stream, UDP, Unix stream) associated with
//! at most one port under a key. Each operation is tried at once. If it completes, the
//! result comes back from the call and no record is posted (AIX `ReadFile`, Windows with
//! `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`); a failure at once is likewise returned. If it
//! would block, it joins the socket's queue for its direction (reads: recv, recvfrom,
//! accept; writes: send, sendto, connect) and completes later, in order, as one record on
//! the port when the reactor sees the socket ready.
//!
//! One exception, the readiness cache (as tokio's reads have it): after a `recv` on a
//! stream socket comes back short, the receive queue was empty, so the socket's next
//! `recv` joins the queue without a try, which would only have found `EAGAIN`, until the
//! reactor reports the socket readable again. Bytes that arrive after the short read raise
//! that event (the reactor is edge-triggered), so such a `recv` completes through the port
//! even when the bytes were there before the call. The end of the stream, a failure and
//! urgent data turn the cache off for the socket: each is reported once, and a read stops
//! short at an urgent mark with data behind it. Datagram reads never start it (Linux and
//! Android only, where the reactor hears of urgent data).
//!
//! A `recv` with an empty buffer on a stream socket waits for readability and takes no
//! byte (Winsock's zero-byte read; see [`Socket::recv`]). Its 0 bytes say nothing about
//! the receive queue, so it leaves the readiness cache as it found it.
//!
//! Two kinds of request share the queues (the request model of `request`). Owned-buffer
//! requests ([`Socket::recv`] and the like) hand their buffer to the engine; a later
//! completion's record carries a [`Ticket`], and [`Socket::finish`] turns the record back
//! into the result and the buffer. Overlapped requests ([`Socket::read_overlapped`], the C
//! ABI's `ReadFile`) name caller memory and an [`Overlapped`], which the completion fills
//! in before the record (carrying its address) is posted, or before the `hEvent` event is
//! set when the socket has no port.
//!
//! Every queued request yields exactly one completion: its result, or `ECANCELED` when
//! cancelled or when the socket is closed first. A socket's queued requests live under its
//! mutex, which is what makes "cancelled or completed, never both" hold. A request that
//! completes at once takes no lock: a word beside the mutex (`gate`) tells a submission
//! whether it may try at once, and hands a write token to one writer at a time.

use crate::buffer::Buf;
use crate::drive::Driven;
use crate::error::{self, canceled};
use crate::gate::{Gate, Queues, Seen};
use crate::overlapped::Overlapped;
use crate::port::Posts;
use crate::primitive::{lock, Mutex};
use crate::reactor::{self, Ready, Source};
use crate::request::{self, Finished, Notify, OpResult, Submitted, Ticket, Which};
use crate::sys::fork::PerProcess;
use crate::sys::socket as sys;
use crate::{Completion, Port};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::Poll;

/// The readiness of sockets.
pub(crate) type Reactor = reactor::Reactor<SocketInner>;

/// An overlapped socket. Dropping it closes it: pending requests complete with
/// `ECANCELED`, then the descriptor is closed.
///
/// Its descriptor stays open for as long as the `Socket` lives, so [`AsFd`] can lend it;
/// [`close`](Socket::close) ends the socket's use of it (and the connection) at once.
pub struct Socket {
    inner: Arc<SocketInner>,
    fd: OwnedFd,
}

pub(crate) struct SocketInner {
    /// What a submission reads without the mutex (see `gate`).
    gate: Gate,
    state: Mutex<State>,
}

struct State {
    /// The descriptor's number (the `Socket` owns the descriptor), `None` once closed: no
    /// call is made on it after that.
    fd: Option<RawFd>,
    /// The port and key, once associated.
    port: Option<(Port, u64)>,
    /// The reactor the socket is registered with, once a request had to wait.
    reactor: Option<Arc<Reactor>>,
    reads: VecDeque<Request>,
    writes: VecDeque<Request>,
    /// Results of owned-buffer requests that completed through the port.
    finished: Finished,
}

/// What a request does: tried at once, then, if it would block, queued with its
/// [`Notify`] as a [`Request`].
struct Op {
    kind: Kind,
    buf: Buf,
}

struct Request {
    op: Op,
    notify: Notify,
}

/// A request that completed at once.
struct Done {
    op: Op,
    result: io::Result<usize>,
    extra: Extra,
    /// The socket had no port when the request was tried.
    portless: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Recv,
    /// `sent` bytes are out already: a send completes only once all of it is, so that
    /// sends queued behind it reach the peer in order.
    Send {
        sent: usize,
    },
    Accept,
    RecvFrom,
    SendTo(SocketAddr),
    /// `started` once `connect(2)` has been called.
    Connect {
        addr: SocketAddr,
        started: bool,
    },
}

/// What one attempt produced besides the byte count.
#[derive(Default)]
struct Extra {
    peer: Option<SocketAddr>,
    accepted: Option<OwnedFd>,
}

// SAFETY: the raw pointers in `Buf::Raw` and `Notify::Overlapped` come from callers of the
// `unsafe` overlapped functions, who guarantee the memory stays valid and untouched until
// the request completes, from whatever thread completes it.
unsafe impl Send for Request {}

impl Kind {
    fn is_read(self) -> bool {
        matches!(self, Kind::Recv | Kind::Accept | Kind::RecvFrom)
    }
}

impl Socket {
    /// Takes over a socket and associates it with `port` under `key`
    /// (`CreateIoCompletionPort`): its requests that do not complete at once become records
    /// there. `EINVAL` for a descriptor that is not a socket.
    pub fn associated(socket: impl Into<OwnedFd>, port: &Port, key: u64) -> io::Result<Socket> {
        let socket = Socket::unassociated(socket)?;
        socket.associate(port, key)?;
        Ok(socket)
    }

    /// Takes over a socket without a port: its overlapped requests report through their
    /// `Overlapped` and its `hEvent`. `EINVAL` for a descriptor that is not a socket.
    pub fn unassociated(socket: impl Into<OwnedFd>) -> io::Result<Socket> {
        let fd = socket.into();
        if !sys::is_socket(fd.as_fd())? {
            return Err(error::invalid());
        }
        sys::prepare(fd.as_fd())?;
        crate::sys::fault::allocation()?;
        Ok(Socket::with(fd))
    }

    /// A socket over the engine's duplicate of a caller's descriptor (the C ABI's): the
    /// open file is the caller's too, so it is not put in non-blocking mode (transfers pass
    /// `MSG_DONTWAIT`). `fd` must be a socket.
    #[cfg(feature = "c-abi")]
    pub(crate) fn duplicate(fd: OwnedFd) -> Socket {
        Socket::with(fd)
    }

    fn with(fd: OwnedFd) -> Socket {
        Socket {
            inner: Arc::new(SocketInner {
                gate: Gate::default(),
                state: Mutex::new(State {
                    fd: Some(fd.as_raw_fd()),
                    port: None,
                    reactor: None,
                    reads: VecDeque::new(),
                    writes: VecDeque::new(),
                    finished: Finished::default(),
                }),
            }),
            fd,
        }
    }

    /// Associates the socket with `port` under `key`. `EALREADY` if it has a port,
    /// `EBUSY` while it has requests in flight, `EBADF` once closed.
    pub fn associate(&self, port: &Port, key: u64) -> io::Result<()> {
        let mut state = lock(&self.inner.state);
        let fd = state.fd()?;
        if state.port.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EALREADY));
        }
        if port.is_closed() {
            return Err(error::closed());
        }
        if !state.reads.is_empty() || !state.writes.is_empty() || !self.inner.gate.port() {
            return Err(error::busy());
        }
        if let Some(reactor) = state.reactor.take() {
            // Registered with the shared port-less reactor: move to the port's on demand.
            reactor.deregister(fd, &self.inner);
        }
        state.port = Some((port.clone(), key));
        Ok(())
    }

    /// The port and key the socket is associated with.
    pub fn port(&self) -> Option<(Port, u64)> {
        lock(&self.inner.state).port.clone()
    }

    /// Receives into `buf` (up to its length).
    ///
    /// An empty `buf` on a stream socket is a zero-byte read, Winsock's idiom for many idle
    /// connections: it completes with 0 bytes once the socket is readable (bytes queued, or
    /// the end of the stream; a failure comes back as the error) and takes none of the
    /// bytes, so a server lends a buffer only to the read after it. On a datagram socket it
    /// takes the next datagram and keeps none of it, as `recv(2)` does.
    pub fn recv(&self, buf: Vec<u8>) -> io::Result<Submitted> {
        self.submit_owned(Kind::Recv, Buf::Owned(buf))
    }

    /// Sends all of `buf`: the request completes once every byte is out (sends queued behind
    /// it wait, so the stream keeps its order), or with the error that stopped it.
    pub fn send(&self, buf: Vec<u8>) -> io::Result<Submitted> {
        self.submit_owned(Kind::Send { sent: 0 }, Buf::Owned(buf))
    }

    /// Receives one datagram into `buf`, with its sender in [`OpResult::peer`].
    pub fn recv_from(&self, buf: Vec<u8>) -> io::Result<Submitted> {
        self.submit_owned(Kind::RecvFrom, Buf::Owned(buf))
    }

    /// Sends `buf` as one datagram to `addr`.
    pub fn send_to(&self, buf: Vec<u8>, addr: SocketAddr) -> io::Result<Submitted> {
        self.submit_owned(Kind::SendTo(addr), Buf::Owned(buf))
    }

    /// Accepts a connection, returned in [`OpResult::accepted`].
    pub fn accept(&self) -> io::Result<Submitted> {
        self.submit_owned(Kind::Accept, Buf::None)
    }

    /// Connects to `addr`.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<Submitted> {
        self.submit_owned(
            Kind::Connect {
                addr,
                started: false,
            },
            Buf::None,
        )
    }

    /// Turns a record of this socket's owned-buffer request back into its result and
    /// buffer. `EINVAL` for a record that is not one (or was finished already).
    pub fn finish(&self, record: &Completion) -> io::Result<OpResult> {
        lock(&self.inner.state).finished.take(record)
    }

    /// Cancels the pending request with `ticket`: it completes with `ECANCELED`.
    /// `ENOENT` if it is not pending (it may have completed first).
    pub fn cancel(&self, ticket: Ticket) -> io::Result<()> {
        self.cancel_where(Which::Ticket(ticket)).map(drop)
    }

    /// Cancels every pending request (`CancelIoEx` with no overlapped): each completes
    /// with `ECANCELED`. Returns how many; `ENOENT` if none was pending.
    pub fn cancel_all(&self) -> io::Result<usize> {
        self.cancel_where(Which::All)
    }

    /// Cancels the pending overlapped request `overlapped` (`CancelIoEx`). `ENOENT` if it
    /// is not pending.
    pub fn cancel_overlapped(&self, overlapped: *const Overlapped) -> io::Result<()> {
        self.cancel_where(Which::Overlapped(overlapped)).map(drop)
    }

    /// Receives into caller memory, completing through `overlapped` (`ReadFile` on a
    /// socket). `Ok(Some(n))` when done at once (the block is filled in, no record);
    /// `Ok(None)` when it will complete later through the port, or the block's event. A
    /// `len` of 0 is a zero-byte read, as an empty buffer is to [`recv`](Socket::recv).
    ///
    /// # Safety
    ///
    /// `buf` must be valid for writes of `len` bytes and `overlapped` must point to a live
    /// [`Overlapped`]; both must stay valid, and `buf` untouched, until the request
    /// completes (the block no longer reads as pending).
    pub unsafe fn read_overlapped(
        &self,
        buf: *mut u8,
        len: usize,
        overlapped: *const Overlapped,
    ) -> io::Result<Option<u32>> {
        self.submit_overlapped(Kind::Recv, Buf::Raw { ptr: buf, len }, overlapped)
    }

    /// Sends caller memory, completing through `overlapped` (`WriteFile` on a socket).
    ///
    /// # Safety
    ///
    /// As [`read_overlapped`](Self::read_overlapped), with `buf` valid for reads.
    pub unsafe fn write_overlapped(
        &self,
        buf: *const u8,
        len: usize,
        overlapped: *const Overlapped,
    ) -> io::Result<Option<u32>> {
        let buf = Buf::Raw {
            ptr: buf.cast_mut(),
            len,
        };
        self.submit_overlapped(Kind::Send { sent: 0 }, buf, overlapped)
    }

    /// Closes the socket now (`closesocket`), though other threads may still hold it:
    /// pending requests complete with `ECANCELED`, later ones fail with `EBADF`, and the
    /// connection is shut down both ways, so the peer sees the close (a listener stops
    /// listening). The descriptor itself is closed when the `Socket` is dropped, so a
    /// number lent by [`as_fd`](AsFd::as_fd) never names another file meanwhile. `EBADF`
    /// if already closed.
    pub fn close(&self) -> io::Result<()> {
        self.inner.retire()?;
        // An unconnected socket has nothing to shut down (`ENOTCONN`): it is closed all the
        // same, as far as the engine is concerned.
        let _ = sys::shutdown(self.fd.as_raw_fd());
        Ok(())
    }

    /// Ends the socket's requests (`ECANCELED`) and its use of the descriptor, as
    /// [`close`](Self::close) does, without shutting the connection down: the socket over
    /// the engine's duplicate of a caller's descriptor, which the caller may hold under
    /// another number. `EBADF` if already closed.
    #[cfg(feature = "c-abi")]
    pub(crate) fn retire(&self) -> io::Result<()> {
        self.inner.retire()
    }

    /// The descriptor's number: open for as long as the socket lives, closed or not.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn submit_owned(&self, kind: Kind, buf: Buf) -> io::Result<Submitted> {
        // The ticket is drawn only for a request that waits (it is a process-wide count).
        let queued = || {
            let ticket = Ticket::next();
            (Notify::Ticket(ticket), ticket)
        };
        let op = Op { kind, buf };
        match self.inner.submit(self.raw_fd(), op, true, queued)? {
            Ok(done) => Ok(Submitted::Done(
                done.op.into_result(done.result, done.extra),
            )),
            Err(ticket) => Ok(Submitted::Pending(ticket)),
        }
    }

    fn submit_overlapped(
        &self,
        kind: Kind,
        buf: Buf,
        overlapped: *const Overlapped,
    ) -> io::Result<Option<u32>> {
        // SAFETY: the callers' callers guarantee `overlapped` is live until completion.
        let started = unsafe { request::start(overlapped) };
        let op = Op { kind, buf };
        let queued = || (Notify::Overlapped(overlapped), ());
        match self.inner.submit(self.raw_fd(), op, false, queued) {
            Ok(Ok(done)) => started.done_at_once(done.result, done.portless).map(Some),
            Ok(Err(())) => Ok(None),
            Err(err) => Err(started.refuse(err)),
        }
    }

    fn cancel_where(&self, which: Which) -> io::Result<usize> {
        let mut guard = lock(&self.inner.state);
        let state = &mut *guard;
        let mut cancelled = Vec::new();
        for queue in [&mut state.reads, &mut state.writes] {
            let mut i = 0;
            while i < queue.len() {
                if which.matches(&queue[i].notify) {
                    cancelled.extend(queue.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        let count = cancelled.len();
        self.inner.gate.mirror(state.queues(), false);
        let mut posts = Posts::new();
        for request in cancelled {
            state.deliver(request, Err(canceled()), Extra::default(), &mut posts);
        }
        posts.flush();
        Which::outcome(count)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Already closed is the only failure, and then there is nothing left to do. The
        // descriptor closes after this, when `fd` is dropped: nothing uses its number then.
        let _ = self.inner.retire();
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("Socket")
            .field("fd", &self.fd.as_raw_fd())
            .field("closed", &state.fd.is_none())
            .field("key", &state.port.as_ref().map(|(_, key)| key))
            .field("pending", &(state.reads.len() + state.writes.len()))
            .finish()
    }
}

impl SocketInner {
    /// Tries `op` at once unless its direction has requests queued, or it is a `recv` the
    /// readiness cache knows would block (see `gate`); queues it, with the [`Notify`] that
    /// `queued` makes, if it would block. `Ok` with the result if it completed at once;
    /// `Err` with what `queued` gave besides the notify if it waits. `owned` requests need
    /// a port (`ENOTCONN`).
    ///
    /// Without the lock, a read tries after one load of the socket's word and a write after
    /// claiming its write token; the mutex is taken only to queue, and to try under it what
    /// the word could not allow.
    fn submit<T>(
        self: &Arc<Self>,
        fd: RawFd,
        mut op: Op,
        owned: bool,
        queued: impl FnOnce() -> (Notify, T),
    ) -> io::Result<Result<Done, T>> {
        let seen = self.gate.load();
        if seen.closed() {
            return Err(error::closed());
        }
        if owned {
            // A port, once given, stays until the socket is closed.
            request::need_port(seen.ported().then_some(()))?;
        }
        let mut tried = None;
        if op.kind.is_read() {
            if seen.may_try_read(op.kind == Kind::Recv) {
                match op.attempt(fd) {
                    Poll::Ready((result, extra)) => {
                        note_read(&self.gate, fd, &op, &result, seen);
                        let portless = !seen.ported();
                        return Ok(Ok(Done::new(op, result, extra, portless)));
                    }
                    Poll::Pending => tried = Some(seen),
                }
            }
        } else if !matches!(op.kind, Kind::Connect { .. }) {
            if let Some(claimed) = self.gate.claim_write() {
                return match op.attempt(fd) {
                    Poll::Ready((result, extra)) => {
                        if self.gate.give_back_write() {
                            self.run_writes(fd);
                        }
                        Ok(Ok(Done::new(op, result, extra, !claimed.ported())))
                    }
                    Poll::Pending => self.hand_over(fd, op, claimed, queued).map(Err),
                };
            }
        }
        let mut state = lock(&self.state);
        state.fd()?;
        let now = self.gate.load();
        let read = op.kind.is_read();
        let queue_empty = if read {
            state.reads.is_empty()
        } else {
            state.writes.is_empty()
        };
        // A read during a connect would take the connect's error (`SO_ERROR`) for itself;
        // a read that found the socket not ready without the lock tries again only if an
        // event came since; a write tries only with the write token.
        let try_now = queue_empty
            && if read {
                let waits =
                    state.connecting() || op.kind == Kind::Recv && now.waits_for_readiness();
                !waits && tried.map_or(true, |tried| tried.event_since(now))
            } else {
                self.gate.claim_write().is_some()
            };
        if try_now {
            if let Poll::Ready((result, extra)) = op.attempt(fd) {
                if read {
                    note_read(&self.gate, fd, &op, &result, now);
                } else {
                    // Nobody queues a write without the mutex: no write waits for this.
                    self.gate.give_back_write();
                }
                return Ok(Ok(Done::new(op, result, extra, state.port.is_none())));
            }
        }
        let holds_token = try_now && !read;
        if let Err(err) = state.register(self, fd) {
            if holds_token {
                self.gate.give_back_write();
            }
            return Err(err);
        }
        let (notify, pending) = queued();
        let queue = match read {
            true => &mut state.reads,
            false => &mut state.writes,
        };
        request::push_back_starting_small(queue, Request { op, notify });
        // A write that tried under the lock hands its token over with its request queued.
        let before = self.gate.mirror(state.queues(), holds_token);
        if !read && queue_empty && !try_now && !before.writing() {
            // The token was out (a write without the lock) when this one looked, and its
            // holder gave it back before this write was queued, so did not see it.
            state.run_now(&self.gate, fd, false);
        }
        Ok(Err(pending))
    }

    /// Queues a write that would block, tried while holding the write token, at the front
    /// (writes queued meanwhile wait behind it) and gives the token back. An event handled
    /// since the token was claimed found it out and ran nothing: the write tries again.
    fn hand_over<T>(
        self: &Arc<Self>,
        fd: RawFd,
        op: Op,
        claimed: Seen,
        queued: impl FnOnce() -> (Notify, T),
    ) -> io::Result<T> {
        let mut state = lock(&self.state);
        if let Err(err) = state.fd().and_then(|_| state.register(self, fd)) {
            // Closed meanwhile, or never registered, so nothing is queued behind it: a
            // queued request registered its socket first.
            self.gate.give_back_write();
            return Err(err);
        }
        let (notify, pending) = queued();
        state.writes.push_front(Request { op, notify });
        let before = self.gate.mirror(state.queues(), true);
        if claimed.event_since(before) {
            state.run_now(&self.gate, fd, false);
        }
        Ok(pending)
    }

    /// Runs the writes queued while a write without the lock held the token.
    fn run_writes(&self, fd: RawFd) {
        let mut state = lock(&self.state);
        if state.fd().is_ok() {
            state.run_now(&self.gate, fd, false);
        }
    }

    /// Completes the queued requests with `ECANCELED`, leaves the reactor and stops using
    /// the descriptor (which its `Socket` closes later).
    fn retire(self: &Arc<Self>) -> io::Result<()> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let fd = state.fd()?;
        self.gate.close();
        let pending: Vec<Request> = state
            .reads
            .drain(..)
            .chain(state.writes.drain(..))
            .collect();
        self.gate.mirror(state.queues(), false);
        let mut posts = Posts::new();
        for request in pending {
            state.deliver(request, Err(canceled()), Extra::default(), &mut posts);
        }
        posts.flush();
        if let Some(reactor) = state.reactor.take() {
            reactor.deregister(fd, self);
        }
        state.fd = None;
        // A closed socket may wait in the reactor's graveyard a little: it must not keep
        // its port (and so the reactor) alive from there.
        state.port = None;
        Ok(())
    }
}

impl Source for SocketInner {
    /// Runs the queued requests that can now complete, writes first.
    fn on_ready(&self, ready: Ready, posts: &mut Posts) {
        let mut state = lock(&self.state);
        let Ok(fd) = state.fd() else {
            // Closed after the event was collected.
            return;
        };
        self.gate
            .event(ready.readable, ready.read_closed || ready.urgent);
        // Writes first: a connect they finish lets the reads go.
        if ready.writable {
            state.run(&self.gate, fd, false, posts);
        }
        if ready.readable {
            state.run(&self.gate, fd, true, posts);
        }
        self.gate.mirror(state.queues(), false);
    }
}

/// The reactor of sockets that have no port, driven by a thread of its own: one per
/// process (a forked child's sockets do not wait for the parent's thread).
fn portless() -> io::Result<&'static Arc<Reactor>> {
    static PORTLESS: PerProcess<Arc<Reactor>> = PerProcess::new();
    let (reactor, made) = PORTLESS.get_or_make(|| Reactor::new().map(Arc::new))?;
    if made {
        Arc::clone(reactor).spawn_thread("iocp-portless")?;
    }
    Ok(reactor)
}

impl State {
    fn fd(&self) -> io::Result<RawFd> {
        self.fd.ok_or_else(error::closed)
    }

    /// Whether a connect is under way (at the front of the write queue).
    fn connecting(&self) -> bool {
        matches!(
            self.writes.front(),
            Some(Request {
                op: Op {
                    kind: Kind::Connect { started: true, .. },
                    ..
                },
                ..
            })
        )
    }

    /// What the socket's word mirrors of the queues.
    fn queues(&self) -> Queues {
        Queues {
            reads: !self.reads.is_empty(),
            writes: !self.writes.is_empty(),
            connecting: self.connecting(),
        }
    }

    /// Registers the socket with its port's reactor (or the port-less one), if not yet.
    /// `EBADF` in a forked child for a socket the parent registered: its readiness, its
    /// queued requests and its write token are the parent's (see `sys::fork`).
    fn register(&mut self, socket: &Arc<SocketInner>, fd: RawFd) -> io::Result<()> {
        if self.reactor.as_ref().is_some_and(|reactor| !reactor.here()) {
            return Err(error::closed());
        }
        if self.reactor.is_none() {
            let reactor = match &self.port {
                Some((port, _)) => port.readiness(Reactor::new)?,
                None => Arc::clone(portless()?),
            };
            reactor.register(fd, socket)?;
            self.reactor = Some(reactor);
        }
        Ok(())
    }

    /// Runs one direction's queued requests (see [`run`](Self::run)), mirrors the queues
    /// and posts the records.
    fn run_now(&mut self, gate: &Gate, fd: RawFd, reads: bool) {
        let mut posts = Posts::new();
        self.run(gate, fd, reads, &mut posts);
        gate.mirror(self.queues(), false);
        posts.flush();
    }

    /// Completes queued requests of one direction, in order, until one would block. Writes
    /// wait while a write without the lock holds the token: its holder runs them after.
    fn run(&mut self, gate: &Gate, fd: RawFd, reads: bool, posts: &mut Posts) {
        if if reads {
            self.connecting()
        } else {
            gate.load().writing()
        } {
            return;
        }
        loop {
            let queue = if reads {
                &mut self.reads
            } else {
                &mut self.writes
            };
            let Some(request) = queue.front_mut() else {
                return;
            };
            let Poll::Ready((result, extra)) = request.op.attempt(fd) else {
                return;
            };
            let request = queue.pop_front().expect("front exists");
            note_read(gate, fd, &request.op, &result, gate.load());
            self.deliver(request, result, extra, posts);
            if reads && gate.load().waits_for_readiness() {
                // The next read would find the queue empty: it waits for the next event.
                return;
            }
        }
    }

    /// Reports a request that completed after it was queued (see [`Notify::deliver`]); its
    /// record joins `posts` (posted by their owner soon after, with the others).
    fn deliver(
        &mut self,
        request: Request,
        result: io::Result<usize>,
        extra: Extra,
        posts: &mut Posts,
    ) {
        let key = self.port.as_ref().map(|(_, key)| *key);
        let Request { op, notify } = request;
        let outcome = |result| op.into_result(result, extra);
        if let Some(record) = notify.deliver(result, outcome, key, &mut self.finished) {
            let (port, _) = self.port.as_ref().expect("a key comes with its port");
            posts.push(port, record);
        }
    }
}

/// Updates the readiness cache after `op`, tried from the word `seen`, completed with
/// `result`: a `recv` on a stream that got fewer bytes than it asked for (and more than
/// none: 0 is the end of the stream, which every later read finds at once too) drained the
/// receive queue, unless a readable event came since `seen`.
fn note_read(gate: &Gate, fd: RawFd, op: &Op, result: &io::Result<usize>, seen: Seen) {
    // Only where the reactor hears of urgent data (see `Ready::urgent`).
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return;
    }
    let Ok(n) = *result else { return };
    if op.kind != Kind::Recv || n == 0 || n >= op.buf.transfer_len() {
        return;
    }
    // Asked once per socket, at its first short read; a socket whose type cannot be read
    // counts as no stream, and so keeps trying every read.
    let stream = gate.stream().unwrap_or_else(|| {
        let stream = sys::is_stream(fd).unwrap_or(false);
        gate.set_stream(stream);
        stream
    });
    if stream {
        gate.drained(seen);
    }
}

impl Done {
    fn new(op: Op, result: io::Result<usize>, extra: Extra, portless: bool) -> Done {
        Done {
            op,
            result,
            extra,
            portless,
        }
    }
}

impl Op {
    /// One non-blocking try; `Pending` if it would block.
    fn attempt(&mut self, fd: RawFd) -> Poll<(io::Result<usize>, Extra)> {
        let (ptr, len) = self.buf.raw();
        let mut extra = Extra::default();
        // In every arm below, `ptr..ptr + len` is the owned vector this request holds, or
        // caller memory that the overlapped functions' callers guarantee until completion.
        let result = match &mut self.kind {
            // SAFETY: `ptr..ptr + len` is writable until this request completes (above).
            Kind::Recv => unsafe { sys::recv(fd, ptr, len) },
            Kind::Send { sent } => {
                // SAFETY: `ptr..ptr + len` is readable until completion (above), and
                // `*sent <= len`, so the rest is inside it.
                match unsafe { sys::send(fd, ptr.add(*sent), len - *sent) } {
                    Ok(n) if *sent + n < len => {
                        *sent += n;
                        return Poll::Pending;
                    }
                    Ok(n) => Ok(*sent + n),
                    Err(err) => Err(err),
                }
            }
            // SAFETY: `ptr..ptr + len` is writable until this request completes (above).
            Kind::RecvFrom => unsafe { sys::recv_from(fd, ptr, len) }.map(|(n, peer)| {
                extra.peer = peer;
                n
            }),
            // SAFETY: `ptr..ptr + len` is readable until this request completes (above).
            Kind::SendTo(addr) => unsafe { sys::send_to(fd, ptr, len, addr) },
            Kind::Accept => sys::accept(fd).map(|(stream, peer)| {
                extra.accepted = Some(stream);
                extra.peer = peer;
                0
            }),
            Kind::Connect { addr, started } => {
                if *started {
                    match sys::take_error(fd) {
                        Ok(None) => connected_or_pending(fd),
                        Ok(Some(err)) | Err(err) => Err(err),
                    }
                } else {
                    *started = true;
                    match sys::connect(fd, addr) {
                        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {
                            return Poll::Pending;
                        }
                        other => other.map(|()| 0),
                    }
                }
            }
        };
        match result {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            result => Poll::Ready((result, extra)),
        }
    }

    fn into_result(self, result: io::Result<usize>, extra: Extra) -> OpResult {
        OpResult {
            peer: extra.peer,
            accepted: extra.accepted,
            ..OpResult::of_buffer(result, self.buf.into_vec())
        }
    }
}

/// After a writable event on a connecting socket with no pending error: connected, unless
/// the event was for something else and the connection is still in progress. A connection
/// that failed while a read made at the same time (on another thread, without the lock)
/// took its error is `ECONNABORTED`: it never comes.
fn connected_or_pending(fd: RawFd) -> io::Result<usize> {
    match sys::peer_addr(fd) {
        Ok(_) => Ok(0),
        Err(err) if err.raw_os_error() == Some(libc::ENOTCONN) => {
            if sys::still_connecting(fd) {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Err(io::Error::from_raw_os_error(libc::ECONNABORTED))
            }
        }
        Err(err) => Err(err),
    }
}
