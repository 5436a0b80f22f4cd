//! Socket readiness through mio (epoll on Linux, kqueue on the BSDs and macOS).
//!
//! A socket operation is tried at once; only when it would block does its socket get
//! registered here (edge-triggered, for reading and writing, once). When readiness
//! arrives the reactor runs the socket's pending operations and posts their records.
//!
//! Two ways to drive it:
//!
//! * [`Drive::Inline`](crate::Drive::Inline) (the default for ports): the leader/follower
//!   scheme of Boost.Asio's scheduler. A thread waiting on an empty port that finds nobody
//!   polling becomes the leader and waits in `epoll_wait` itself, with its own deadline;
//!   the others sleep on the port's futex stack. Readiness becomes records on the leader's
//!   own thread, which usually dequeues them at once: no hand-off, no wake-up. A post from
//!   another thread reaches a leader blocked in `epoll_wait` through mio's `Waker` (an
//!   eventfd), written only while a leader is blocked. A leader that leaves with a record
//!   while followers sleep wakes one of them to take over.
//! * [`Drive::Thread`](crate::Drive::Thread): a reactor thread per port polls forever;
//!   waiters only sleep on the futex stack. Sockets with no port always use one shared
//!   thread of this kind. The thread is a batch thread (`SCHED_BATCH` on Linux): readiness
//!   that wakes it while a worker runs on its CPU waits for that worker to block or use up
//!   its time slice, so that the two take turns per batch rather than per few records.
//!
//! The reactor knows its sockets only as [`Source`]s, the trait it owns (as mio's
//! `Registry` sits below the sources it registers): the socket code above implements it.
//! Tokens are the addresses of the registered sources, each holding a strong count. A
//! closed socket is deregistered at once but its count is dropped only after the current
//! turn has dispatched its events (the graveyard), so no event refers to freed memory.

use crate::drive::{Readiness, Turns};
use crate::port::Posts;
use crate::primitive::{lock, Mutex};
use crate::sys::fault::{self, Call};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The waker's token; socket tokens are addresses, never this.
const WAKER: Token = Token(usize::MAX);
/// Readiness events collected per turn.
const EVENTS: usize = 256;
/// How long a turn whose poll failed (other than by a signal) pauses before returning, so
/// that a failure that lasts (`ENOMEM` under memory pressure, `EBADF` once a program has
/// closed the poll's descriptor behind the library's back) costs a few hundred polls a
/// second rather than a core.
const FAILED_POLL_PAUSE: Duration = Duration::from_millis(1);

/// What registers with a reactor: a socket whose queued requests readiness lets go.
pub(crate) trait Source: Send + Sync + 'static {
    /// Readiness arrived: runs the requests it lets go; their records join `posts`, which
    /// the reactor posts together once its poll's events are handled.
    fn on_ready(&self, ready: Ready, posts: &mut Posts);
}

/// What one readiness event says.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ready {
    /// A read may go on: data, the end of the stream, or an error to report.
    pub(crate) readable: bool,
    /// Reads will never wait again: the peer closed its end, or the socket failed. The
    /// kernel reports this edge once, so a source that caches readiness keeps it.
    pub(crate) read_closed: bool,
    /// Urgent (out-of-band) data came: a read stops short at its mark with data behind
    /// it, so a short read no longer means an empty queue.
    pub(crate) urgent: bool,
    /// A write may go on (or fail).
    pub(crate) writable: bool,
}

/// Readiness of sources of type `S`, collected by one thread at a time.
pub(crate) struct Reactor<S> {
    /// The poller and who holds it (the inline drive's hand-over, in `drive`).
    turns: Turns<Poller>,
    registry: Registry,
    waker: Waker,
    /// Deregistered sources whose token count is dropped after the current turn.
    graveyard: Mutex<Vec<Arc<S>>>,
    /// The process it was made in (`sys::fork`): its epoll instance is shared with every
    /// process forked since, and its tokens are addresses in this one's memory.
    born: crate::sys::fork::Born,
}

/// What the polling thread alone touches.
pub(crate) struct Poller {
    poll: Poll,
    events: Events,
}

impl<S: Source> Reactor<S> {
    pub(crate) fn new() -> io::Result<Reactor<S>> {
        fault::allocation()?;
        let born = crate::sys::fork::Born::now();
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        Ok(Reactor {
            turns: Turns::new(Poller {
                poll,
                events: Events::with_capacity(EVENTS),
            }),
            registry,
            waker,
            graveyard: Mutex::new(Vec::new()),
            born,
        })
    }

    /// Whether the reactor is this process's: in the child of a later `fork` it is the
    /// parent's, and the child neither registers with it nor deregisters from it (which
    /// would take the socket out of the parent's poll set too).
    pub(crate) fn here(&self) -> bool {
        self.born.is_here()
    }

    /// Registers `socket` (edge-triggered, both directions, and urgent data where the poll
    /// reports it) under its address.
    pub(crate) fn register(&self, fd: RawFd, socket: &Arc<S>) -> io::Result<()> {
        if let Some(errno) = fault::take(Call::ReactorRegister, fd) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let token = Token(Arc::into_raw(Arc::clone(socket)) as usize);
        let interest = Interest::READABLE | Interest::WRITABLE;
        // Urgent data, which a readiness cache must hear of (see `Ready::urgent`).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let interest = interest | Interest::PRIORITY;
        // The socket reaches the polling thread through the kernel: registered here, its
        // address comes back from `epoll_wait` in `turn`. ThreadSanitizer cannot tie the two
        // (the registry is mio's duplicate of the epoll descriptor), so name the edge.
        #[cfg(iocp_tsan)]
        crate::sys::tsan::release(self);
        self.registry
            .register(&mut mio::unix::SourceFd(&fd), token, interest)
            .inspect_err(|_| {
                // SAFETY: the count taken above was not handed to the registry.
                drop(unsafe { Arc::from_raw(token.0 as *const S) });
            })
    }

    /// Deregisters `socket` (still open as `fd`); its token's count dies after this turn.
    pub(crate) fn deregister(&self, fd: RawFd, socket: &Arc<S>) {
        if !self.here() {
            // The parent's registration, and its token count, are the parent's.
            return;
        }
        // Deregistration fails only if the descriptor is already gone from the poll set,
        // which cannot happen while the socket is open; the count is released regardless.
        let _ = self.registry.deregister(&mut mio::unix::SourceFd(&fd));
        // SAFETY: `register` leaked one count for this token; it is reclaimed exactly once,
        // here, and kept alive in the graveyard until no event of this turn can name it.
        let token_count = unsafe { Arc::from_raw(Arc::as_ptr(socket)) };
        match self.turns.try_hold() {
            // Nobody is polling, so no collected event can name the socket.
            Some(_poller) => drop(token_count),
            None => {
                lock(&self.graveyard).push(token_count);
                // Have the poller bury it soon, rather than at its next event.
                self.wake();
            }
        }
    }

    /// Interrupts a thread blocked in `epoll_wait`.
    pub(crate) fn wake(&self) {
        // A failed eventfd write means the counter is saturated: a wake is pending anyway.
        let _ = self.waker.wake();
    }

    /// The number the fault seam knows this reactor's polls by: its registry's descriptor.
    pub(crate) fn fault_fd(&self) -> RawFd {
        self.registry.as_raw_fd()
    }

    /// One poll: wait up to `timeout`, dispatch readiness, bury deregistered sockets.
    ///
    /// A poll that fails collects nothing and consumes no readiness: the kernel reports it
    /// to the next poll. The failure is returned, after a pause of up to
    /// [`FAILED_POLL_PAUSE`] (within `timeout`) unless a signal caused it.
    fn turn(&self, poller: &mut Poller, timeout: Option<Duration>) -> io::Result<()> {
        let Poller { poll, events } = poller;
        let polled = match fault::take(Call::ReactorPoll, self.fault_fd()) {
            Some(errno) => {
                events.clear();
                Err(io::Error::from_raw_os_error(errno))
            }
            None => poll.poll(events, timeout),
        };
        // The other end of the edge named in `register`.
        #[cfg(iocp_tsan)]
        crate::sys::tsan::acquire(self);
        self.turns.polled();
        // The records of the requests this poll lets go, posted together below.
        let mut posts = Posts::new();
        for event in events.iter() {
            if event.token() == WAKER {
                continue;
            }
            // SAFETY: the token is the address of a socket whose count `register` leaked;
            // that count is released only through the graveyard, after this loop.
            let socket = unsafe { &*(event.token().0 as *const S) };
            let failed = event.is_error();
            let read_closed = event.is_read_closed() || failed;
            let urgent = event.is_priority();
            let ready = Ready {
                readable: event.is_readable() || read_closed || urgent,
                read_closed,
                urgent,
                writable: event.is_writable() || event.is_write_closed() || failed,
            };
            socket.on_ready(ready, &mut posts);
        }
        posts.flush();
        let buried = std::mem::take(&mut *lock(&self.graveyard));
        drop(buried);
        if let Err(err) = &polled {
            if err.kind() != io::ErrorKind::Interrupted {
                thread::sleep(timeout.map_or(FAILED_POLL_PAUSE, |t| t.min(FAILED_POLL_PAUSE)));
            }
        }
        polled
    }
}

impl<S: Source> Readiness for Reactor<S> {
    type Poller = Poller;

    fn turns(&self) -> &Turns<Poller> {
        &self.turns
    }

    fn turn(&self, poller: &mut Poller, timeout: Option<Duration>) -> io::Result<()> {
        Reactor::turn(self, poller, timeout)
    }

    fn wake(&self) {
        Reactor::wake(self);
    }
}
