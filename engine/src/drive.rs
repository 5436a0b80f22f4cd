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
//!   sleeps, reads `leading` ([`Readiness::is_led`]): nobody leading, it leads instead. A
//!   leader clears `leading` and then, if anyone sleeps, wakes one to take over (the port's
//!   `Shared::wait`), however it leaves: with work, by timeout or by a signal.
//!
//! The wait itself is behind [`Readiness`]: the reactor's mio poll, or under loom a model's
//! stand-in ([`Scripted`]) whose readiness the model makes, so that the loom models check
//! this very hand-over. The trait is used generically, through the port's one readiness
//! type: nothing is dispatched at run time.

use crate::primitive::{AtomicBool, Mutex, Ordering};
use std::io;
use std::time::Duration;

/// Readiness that one thread at a time waits for and runs: what a leader polls.
pub(crate) trait Readiness {
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

    /// Becomes the leader if nobody is: waits for readiness (unless `ready()` already
    /// holds) until `timeout`, and runs what became ready. `None` if another thread leads.
    fn lead(&self, timeout: Option<Duration>, ready: impl Fn() -> bool) -> Option<io::Result<()>> {
        let turns = self.turns();
        let mut poller = turns.try_hold()?;
        // SeqCst: announced before the last look for work (Dekker with posters, through
        // `wake_if_blocked`, and with followers, through `is_led`).
        turns.leading.store(true, Ordering::SeqCst);
        turns.blocked.store(true, Ordering::SeqCst);
        crate::primitive::loom_seqcst_fence();
        let result = if ready() {
            Ok(())
        } else {
            self.turn(&mut poller, timeout)
        };
        // Relaxed: a late wake only costs the next poll a spurious return.
        turns.blocked.store(false, Ordering::Relaxed);
        // SeqCst: the leader half of the hand-over Dekker pair (see `port`).
        turns.leading.store(false, Ordering::SeqCst);
        Some(result)
    }

    /// Whether a thread leads.
    fn is_led(&self) -> bool {
        // SeqCst: pairs with the store in `lead` (see `port`'s follower check).
        self.turns().leading.load(Ordering::SeqCst)
    }

    /// After a post: wakes the leader if it is blocked waiting for readiness.
    fn wake_if_blocked(&self) {
        // SeqCst: the poster half of the Dekker pair with `lead`.
        if self.turns().blocked.load(Ordering::SeqCst) {
            self.wake();
        }
    }
}

/// Who polls: the poller, held by the thread that polls, and what followers and posters
/// read of it.
pub(crate) struct Turns<P> {
    poller: Mutex<P>,
    /// Under loom, set while a thread holds the poller (see [`Turns::try_hold`]).
    #[cfg(loom)]
    claimed: AtomicBool,
    /// Set while a thread holds the poller (inline drive).
    leading: AtomicBool,
    /// Set while the leader is, or is about to be, blocked waiting for readiness.
    blocked: AtomicBool,
}

impl<P> Turns<P> {
    pub(crate) fn new(poller: P) -> Turns<P> {
        Turns {
            poller: Mutex::new(poller),
            #[cfg(loom)]
            claimed: AtomicBool::new(false),
            leading: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
        }
    }

    /// The poller, for a thread that polls forever (the reactor thread of
    /// [`Drive::Thread`](crate::Drive::Thread)), waiting for a leader to leave.
    #[cfg(not(loom))]
    pub(crate) fn hold(&self) -> crate::primitive::MutexGuard<'_, P> {
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
        self.blocked.store(false, Ordering::Relaxed);
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

/// Under loom, the readiness a model makes: sockets that become ready
/// ([`become_ready`](Self::become_ready)) and whose records the leader's next turn posts,
/// as the reactor posts those of the requests it completes.
///
/// A turn without a timeout waits, on a loom condition variable, until a socket is ready or
/// [`wake`](Readiness::wake) is called (a wake is kept for the next turn when none waits,
/// as the reactor's eventfd keeps it). Loom has no clock: a turn with a timeout never
/// waits, and when nothing is ready it fails with `ETIMEDOUT`, a deadline that has come
/// (the port's wait then times out, as it does when a timed futex wait ends under loom).
#[cfg(loom)]
pub struct Scripted {
    turns: Turns<()>,
    state: Mutex<Script>,
    changed: crate::primitive::Condvar,
    /// Whether a turn runs: std's atomic, outside the model, since loom runs one thread at
    /// a time; only the check in `turn` reads it.
    polling: std::sync::atomic::AtomicBool,
}

/// What a [`Scripted`] readiness holds.
#[cfg(loom)]
struct Script {
    /// Sockets ready and the records their requests complete with, for the next turn.
    ready: Vec<(crate::Port, crate::Completion)>,
    /// A wake not yet taken by a turn.
    woken: bool,
    /// Turns that collected readiness.
    collected: usize,
}

#[cfg(loom)]
impl Scripted {
    /// Readiness with nothing ready, to be given to a port with
    /// [`Port::drive_with`](crate::Port::drive_with).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Scripted {
        Scripted {
            turns: Turns::new(()),
            state: Mutex::new(Script {
                ready: Vec::new(),
                woken: false,
                collected: 0,
            }),
            changed: crate::primitive::Condvar::new(),
            polling: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A socket becomes ready: the leader's next turn posts `record` to `port`. Ends a
    /// turn's wait, as the kernel ends `epoll_wait`.
    pub fn become_ready(&self, port: &crate::Port, record: crate::Completion) {
        crate::primitive::lock(&self.state)
            .ready
            .push((port.clone(), record));
        self.changed.notify_all();
    }

    /// Turns so far that collected readiness (posted the records of ready sockets).
    pub fn collected(&self) -> usize {
        crate::primitive::lock(&self.state).collected
    }

    /// As the reactor's `stop` does for a leader: ends a turn's wait.
    pub(crate) fn stop(&self) {
        self.wake();
    }
}

#[cfg(loom)]
impl Readiness for Scripted {
    type Poller = ();

    fn turns(&self) -> &Turns<()> {
        &self.turns
    }

    fn turn(&self, _poller: &mut (), timeout: Option<Duration>) -> io::Result<()> {
        // Relaxed (both): see `polling`.
        let other = self
            .polling
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!other, "two threads poll at once");
        let mut state = crate::primitive::lock(&self.state);
        while timeout.is_none() && state.ready.is_empty() && !state.woken {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.woken = false;
        let ready = std::mem::take(&mut state.ready);
        state.collected += usize::from(!ready.is_empty());
        drop(state);
        self.turns.polled();
        let collected = !ready.is_empty();
        for (port, record) in ready {
            // A closed port discards its records, these with them.
            let _ = port.post(record);
        }
        self.polling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match timeout {
            Some(_) if !collected => Err(crate::error::timed_out()),
            _ => Ok(()),
        }
    }

    fn wake(&self) {
        crate::primitive::lock(&self.state).woken = true;
        self.changed.notify_all();
    }
}
