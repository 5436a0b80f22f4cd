//! Events: what an `OVERLAPPED`'s `hEvent` names.
//!
//! An event is a word that is 1 when signalled. Manual-reset events stay signalled until
//! reset and release every waiter; auto-reset events release one waiter and reset as they
//! do. Each event is named by a handle, a file descriptor the library owns (so it never
//! collides with the caller's descriptors), and registered under it so that a completion
//! can find the event from the `hEvent` number alone.

use crate::error;
use crate::handle::{HandleFd, Handled, Kind, Named, Registry};
use crate::sys::{self, Deadline, WaitStatus};
use crate::RawHandle;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

static EVENTS: Registry<Event> = Registry::new();

/// A manual- or auto-reset event. Clones name the same event; it lives, and its handle
/// stays valid, until the last clone is dropped or [`close`](Self::close) (once given to
/// its handle with [`into_handle`](Self::into_handle), until `close`).
#[derive(Clone)]
pub struct Event {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    signalled: AtomicU32,
    /// Threads in `wait` past their first check.
    waiters: AtomicU32,
    manual_reset: bool,
    handle: HandleFd,
}

impl Event {
    /// A new event, signalled or not.
    pub fn new(manual_reset: bool, signalled: bool) -> io::Result<Event> {
        crate::sys::fault::allocation()?;
        let inner = EVENTS.create(|handle| Inner {
            signalled: AtomicU32::new(signalled.into()),
            waiters: AtomicU32::new(0),
            manual_reset,
            handle,
        })?;
        Ok(Event { inner })
    }

    /// The open event named `handle`: a new reference to it.
    pub fn from_handle(handle: RawHandle) -> Option<Event> {
        EVENTS.get(handle)
    }

    /// Runs `f` on the open event named `handle`; `None` if there is none. As
    /// [`Port::with_handle`](crate::Port::with_handle): no lock, and no reference-count
    /// write for an event kept by its handle; `f` must not block (clone the event to wait).
    pub fn with_handle<R>(handle: RawHandle, f: impl FnOnce(&Event) -> R) -> Option<R> {
        EVENTS.with(handle, f)
    }

    /// Hands the event to its handle, which keeps it alive until [`close`](Self::close)
    /// (what `CloseHandle` expects of `iocp_event_create`'s events). Returns the handle.
    pub fn into_handle(self) -> RawHandle {
        EVENTS.keep(self)
    }

    /// Closes the event's handle: the number is released at once and names nothing from
    /// then on, so completions naming it no longer set this event. Clones still work on the
    /// event itself. `EBADF` if already closed.
    pub fn close(&self) -> io::Result<()> {
        if !EVENTS.remove(&self.inner) {
            return Err(error::closed());
        }
        self.inner.handle.release();
        Ok(())
    }

    /// Checks that the event's handle descriptor is still ours. A caller that closed it
    /// with plain `close` has closed the event: this closes it here too, forgets the number
    /// without closing it again (it may already name the caller's next file) and fails with
    /// `EBADF`, as it does for an event closed already. One `fstat` once the number has
    /// been handed out ([`handle`](Self::handle), [`into_handle`](Self::into_handle)); none
    /// before.
    pub fn check_handle(&self) -> io::Result<()> {
        self.check_intact()
    }

    /// The handle naming this event (what goes into `hEvent`).
    pub fn handle(&self) -> RawHandle {
        self.inner.handle.expose()
    }

    /// Whether the event is manual-reset.
    pub fn is_manual_reset(&self) -> bool {
        self.inner.manual_reset
    }

    /// Whether the event is signalled now.
    pub fn is_set(&self) -> bool {
        self.inner.signalled.load(Ordering::Acquire) == 1
    }

    /// Signals the event, releasing every waiter (manual reset) or one (auto reset).
    pub fn set(&self) {
        let inner = &*self.inner;
        // SeqCst: release pairs with the acquire in `try_take`; sequential consistency is
        // the setter half of the Dekker pair with the waiter count in `wait`.
        inner.signalled.store(1, Ordering::SeqCst);
        if inner.waiters.load(Ordering::SeqCst) != 0 {
            if inner.manual_reset {
                sys::futex_wake_all(&inner.signalled);
            } else {
                sys::futex_wake_one(&inner.signalled);
            }
        }
    }

    /// Clears the signal.
    pub fn reset(&self) {
        // Relaxed: resetting publishes nothing.
        self.inner.signalled.store(0, Ordering::Relaxed);
    }

    /// Waits until the event is signalled (consuming the signal of an auto-reset event),
    /// up to `timeout` (`None`: forever). `ETIMEDOUT` when it passes. A signal handler does
    /// not end the wait, nor does it stretch the timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        let inner = &*self.inner;
        let deadline = timeout.and_then(Deadline::after);
        loop {
            if self.try_take() {
                return Ok(());
            }
            // SeqCst: the waiter half of the Dekker pair with `set`.
            inner.waiters.fetch_add(1, Ordering::SeqCst);
            let status = if inner.signalled.load(Ordering::SeqCst) == 0 {
                sys::futex_wait(&inner.signalled, 0, deadline)
            } else {
                WaitStatus::Woken
            };
            inner.waiters.fetch_sub(1, Ordering::Relaxed);
            if status == WaitStatus::TimedOut {
                return if self.try_take() {
                    Ok(())
                } else {
                    Err(error::timed_out())
                };
            }
        }
    }

    fn try_take(&self) -> bool {
        let signalled = &self.inner.signalled;
        // Acquire: pairs with the store in `set`.
        if self.inner.manual_reset {
            signalled.load(Ordering::Acquire) == 1
        } else {
            signalled
                .compare_exchange(1, 0, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        }
    }
}

impl Named for Inner {
    fn handle_fd(&self) -> &HandleFd {
        &self.handle
    }
}

// SAFETY: `from_arc` and `arc` only wrap and unwrap `inner`, an `Event`'s only field.
unsafe impl Handled for Event {
    const KIND: Kind = Kind::Event;
    type Inner = Inner;

    fn from_arc(inner: Arc<Inner>) -> Event {
        Event { inner }
    }

    fn arc(&self) -> &Arc<Inner> {
        &self.inner
    }

    fn retire(&self) {
        self.inner.handle.disown();
        EVENTS.remove(&self.inner);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The descriptor is still open here, so no other object can have its number yet.
        EVENTS.remove(self);
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("handle", &self.inner.handle())
            .field("manual_reset", &self.is_manual_reset())
            .field("set", &self.is_set())
            .finish()
    }
}
