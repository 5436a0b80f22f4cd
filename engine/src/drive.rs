//! The inline drive's hand-over: the threads waiting on a port take turns collecting socket
//! readiness (leader/follower, as Boost.Asio's scheduler does; see `reactor`).
//!
//! A waiter that finds nobody polling becomes the *leader*: it takes the poller (a try-lock,
//! so one thread leads at a time), announces itself (`leading`, and `blocked` for the
//! wait), takes a last look for records, and only then waits for readiness. The others
//! (*followers*) sleep on the port's wait stack. Two Dekker pairs keep a record or a
//! follower from being stranded while the leader waits:
//!
//! * **Poster and leader.** A poster publishes its record and, finding no sleeper, reads
//!   `blocked` and interrupts the leader's wait ([`Readiness::wake_if_blocked`]); the leader
//!   stores `blocked` before its last look. Either the poster sees the leader blocked or
//!   the leader sees the record.
//! * **Follower and leaving leader.** A follower registers on the wait stack and, before it
//!   sleeps, reads `leading` (`is_led`): nobody leading, it leads instead. A
//!   leader clears `leading` and then, if anyone sleeps, wakes one to take over (the port's
//!   `Shared::wait`), however it leaves: with work, by timeout or by a signal.
//!
//! The wait itself is behind [`Readiness`]: the reactor's mio poll, or under loom a model's
//! stand-in (`scripted`) whose readiness the model makes, so that the loom models check
//! this very hand-over. This module sits below the port, which holds its readiness as a
//! [`Driven`] and so depends on no socket code; a post reads the hand-over flags in place,
//! and only a leader's turn and a wake go through the trait object.

use crate::primitive::{AtomicBool, Mutex, Ordering};
use std::io;
use std::time::Duration;
#[cfg(not(loom))]
use std::{any::Any, sync::Arc};

/// Readiness that one thread at a time waits for and runs: what a leader polls. A port
/// holds it as a [`Driven`], which every `Readiness` is.
pub(crate) trait Readiness: Send + Sync + 'static {
    /// What only the polling thread touches (mio's `Poll` and its event buffer).
    type Poller;

    /// The hand-over state of this readiness.
    fn turns(&self) -> &Turns<Self::Poller>;

    /// One turn: waits up to `timeout` for readiness, unless [`wake`](Self::wake) ends the
    /// wait (or came since the last turn), then calls [`Turns::polled`] and runs what
    /// became ready, posting its records.
    fn turn(&self, poller: &mut Self::Poller, timeout: Option<Duration>) -> io::Result<()>;

    /// Ends a turn's wait, or the next one's if none waits.
    fn wake(&self);
}

/// A port's readiness as the port sees it, whatever collects it (the socket reactor, or a
/// loom model's stand-in): the port holds an `Arc<dyn Driven>`, so it names no socket
/// type, and the code that made the readiness takes its own type back with
/// [`into_any`](Self::into_any). Posts reach it only through [`Flags`], read in place.
pub(crate) trait Driven: Send + Sync {
    /// What followers and posters read of the hand-over.
    fn flags(&self) -> &Flags;

    /// Becomes the leader if nobody is: waits for readiness (unless `ready()` already
    /// holds) until `timeout`, and runs what became ready. `None` if another thread leads.
    fn lead(&self, timeout: Option<Duration>, ready: &dyn Fn() -> bool) -> Option<io::Result<()>>;

    /// Ends a turn's wait, or the next one's if none waits.
    fn wake(&self);

    /// Starts a thread that polls until [`stop`](<dyn Driven>::stop)
    /// ([`Drive::Thread`](crate::Drive::Thread)).
    #[cfg(not(loom))]
    fn spawn_thread(self: Arc<Self>, name: &str) -> io::Result<()>;

    /// The readiness as its own type, for [`Arc::downcast`].
    #[cfg(not(loom))]
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<R: Readiness> Driven for R {
    fn flags(&self) -> &Flags {
        &self.turns().flags
    }

    fn lead(&self, timeout: Option<Duration>, ready: &dyn Fn() -> bool) -> Option<io::Result<()>> {
        let turns = self.turns();
        let mut poller = turns.try_hold()?;
        let flags = &turns.flags;
        // SeqCst: announced before the last look for work (Dekker with posters, through
        // `wake_if_blocked`, and with followers, through `is_led`).
        flags.leading.store(true, Ordering::SeqCst);
        flags.blocked.store(true, Ordering::SeqCst);
        crate::primitive::loom_seqcst_fence();
        let result = if ready() {
            Ok(())
        } else {
            self.turn(&mut poller, timeout)
        };
        // Relaxed: a late wake only costs the next poll a spurious return.
        flags.blocked.store(false, Ordering::Relaxed);
        // SeqCst: the leader half of the hand-over Dekker pair (see `port`).
        flags.leading.store(false, Ordering::SeqCst);
        Some(result)
    }

    fn wake(&self) {
        Readiness::wake(self);
    }

    #[cfg(not(loom))]
    fn spawn_thread(self: Arc<Self>, name: &str) -> io::Result<()> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut poller = self.turns().hold();
                // Relaxed: `stop` is followed by a wake, which ends the turn below.
                while !self.flags().stopped.load(Ordering::Relaxed) {
                    // A failed turn collected nothing and lost nothing (the kernel keeps the
                    // readiness for the next one), and nobody waits for this thread's
                    // result: turn again.
                    let _ = self.turn(&mut poller, None);
                }
            })?;
        Ok(())
    }

    #[cfg(not(loom))]
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

impl dyn Driven + '_ {
    /// Whether a thread leads.
    pub(crate) fn is_led(&self) -> bool {
        // SeqCst: pairs with the store in `lead` (see `port`'s follower check).
        self.flags().leading.load(Ordering::SeqCst)
    }

    /// After a post: wakes the leader if it is blocked waiting for readiness.
    pub(crate) fn wake_if_blocked(&self) {
        // SeqCst: the poster half of the Dekker pair with `lead`.
        if self.flags().blocked.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Ends the thread [`spawn_thread`](Driven::spawn_thread) started, or a leader's wait.
    pub(crate) fn stop(&self) {
        // Relaxed: the wake below is the synchronization.
        self.flags().stopped.store(true, Ordering::Relaxed);
        self.wake();
    }
}

/// Who polls: the poller, held by the thread that polls, and what followers and posters
/// read of it.
pub(crate) struct Turns<P> {
    poller: Mutex<P>,
    /// Under loom, set while a thread holds the poller (see [`Turns::try_hold`]).
    #[cfg(loom)]
    claimed: AtomicBool,
    flags: Flags,
}

/// The hand-over state followers and posters read without the poller.
pub(crate) struct Flags {
    /// Set while a thread holds the poller (inline drive).
    leading: AtomicBool,
    /// Set while the leader is, or is about to be, blocked waiting for readiness.
    blocked: AtomicBool,
    /// Tells a thread that polls forever to exit.
    stopped: AtomicBool,
}

impl<P> Turns<P> {
    pub(crate) fn new(poller: P) -> Turns<P> {
        Turns {
            poller: Mutex::new(poller),
            #[cfg(loom)]
            claimed: AtomicBool::new(false),
            flags: Flags {
                leading: AtomicBool::new(false),
                blocked: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
            },
        }
    }

    /// The poller, for a thread that polls forever (the reactor thread of
    /// [`Drive::Thread`](crate::Drive::Thread)), waiting for a leader to leave.
    #[cfg(not(loom))]
    fn hold(&self) -> crate::primitive::MutexGuard<'_, P> {
        crate::primitive::lock(&self.poller)
    }

    /// The poller if no thread is polling now.
    #[cfg(not(loom))]
    pub(crate) fn try_hold(&self) -> Option<crate::primitive::MutexGuard<'_, P>> {
        self.poller.try_lock().ok()
    }

    /// The poller if no thread is polling now. Loom's `try_lock` can block a thread that
    /// tries while another takes the mutex (a false deadlock when the taker then waits for
    /// the one it blocked), so under loom a flag decides, and the mutex it guards is free.
    #[cfg(loom)]
    pub(crate) fn try_hold(&self) -> Option<Held<'_, P>> {
        // Acquire: pairs with the release in `Held::drop`.
        if self.claimed.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(Held {
            poller: crate::primitive::lock(&self.poller),
            claimed: &self.claimed,
        })
    }

    /// Called by [`Readiness::turn`] once its wait is over: posts need not interrupt it any
    /// more (the records it is about to post would otherwise wake the next one).
    pub(crate) fn polled(&self) {
        // Relaxed: events are being handled; a late wake only costs a spurious return.
        self.flags.blocked.store(false, Ordering::Relaxed);
    }
}

/// Under loom, the poller held by the thread that won `Turns::claimed`.
#[cfg(loom)]
pub(crate) struct Held<'a, P> {
    poller: crate::primitive::MutexGuard<'a, P>,
    claimed: &'a AtomicBool,
}

#[cfg(loom)]
impl<P> std::ops::Deref for Held<'_, P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.poller
    }
}

#[cfg(loom)]
impl<P> std::ops::DerefMut for Held<'_, P> {
    fn deref_mut(&mut self) -> &mut P {
        &mut self.poller
    }
}

#[cfg(loom)]
impl<P> Drop for Held<'_, P> {
    fn drop(&mut self) {
        // Release: pairs with the acquire in `Turns::try_hold`. A swap rather than a store,
        // which loom can order inside a racing swap (tokio-rs/loom#254). The mutex is
        // unlocked next (field drop), before anyone can want it but the next winner.
        self.claimed.swap(false, Ordering::Release);
    }
}
