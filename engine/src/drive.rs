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
//!   `blocked` and interrupts the leader's wait ([`Driving::wake_if_blocked`]); the leader
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
//! [`Driven`] object and so depends on no socket code; a post reads the hand-over flags,
//! which the port keeps beside the object ([`Driving`]), and only a leader's turn and a
//! wake go through the object.

use crate::primitive::{AtomicBool, Mutex, Ordering};
#[cfg(not(loom))]
use crate::{parker::Spin, sys::Deadline};
#[cfg(not(loom))]
use std::any::Any;
use std::io;
use std::sync::Arc;
use std::time::Duration;

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
/// loom model's stand-in): the port holds an `Arc<dyn Driven>` (in a [`Driving`]), so it
/// names no socket type, and the code that made the readiness takes its own type back with
/// [`into_any`](Self::into_any). Posts reach it only through its [`Flags`].
pub(crate) trait Driven: Send + Sync {
    /// What followers and posters read of the hand-over (a port keeps its own reference
    /// to it beside the object: see [`Driving`]).
    fn flags(&self) -> &Arc<Flags>;

    /// Becomes the leader if nobody is: waits for readiness (unless `ready()` already
    /// holds) until `timeout`, and runs what became ready. `None` if another thread leads.
    ///
    /// `ready` looks for work without a barrier, as often as the leader's spin likes;
    /// `sync` is the barrier that makes the last look, just before the wait, see every post
    /// (the port's side of the sleeper Dekker pair, see `ring`).
    fn lead(
        &self,
        timeout: Option<Duration>,
        ready: &dyn Fn() -> bool,
        sync: &dyn Fn(),
    ) -> Option<io::Result<()>>;

    /// Ends a turn's wait, or the next one's if none waits.
    fn wake(&self);

    /// Starts a thread that polls until [`stop`](<dyn Driven>::stop)
    /// ([`Drive::Thread`](crate::Drive::Thread)), a batch thread (`sys::sched`).
    #[cfg(not(loom))]
    fn spawn_thread(self: Arc<Self>, name: &str) -> io::Result<()>;

    /// The readiness as its own type, for [`Arc::downcast`].
    #[cfg(not(loom))]
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<R: Readiness> Driven for R {
    fn flags(&self) -> &Arc<Flags> {
        &self.turns().flags
    }

    fn lead(
        &self,
        timeout: Option<Duration>,
        ready: &dyn Fn() -> bool,
        sync: &dyn Fn(),
    ) -> Option<io::Result<()>> {
        let turns = self.turns();
        let mut poller = turns.try_hold()?;
        let flags = &turns.flags;
        // SeqCst: announced before the last look for work (Dekker with followers, through
        // `is_led`).
        flags.leading.store(true, Ordering::SeqCst);
        let result = self.spin_and_wait(&mut poller, timeout, ready, sync);
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
                // Woken by readiness, the thread waits for the one on its CPU (a worker of
                // the port, busy with the previous records) to block or use up its time
                // slice rather than preempting it: sharing a CPU with a worker, it then
                // polls once per batch the worker takes, where preempting made both threads
                // switch every few records. TCP echo, 64 connections, the server pinned to
                // one core (AMD EPYC VM, `iocp-bench echo --pin`, two pairs of runs):
                // 115k and 125k messages/s before, 177k and 176k after, as the inline
                // drive.
                crate::sys::sched::run_as_batch();
                // It posts one batch per poll, to workers that sleep between them: a fence
                // per batch costs less than their `membarrier` (see `ring`).
                crate::ring::fence_own_posts();
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

/// How a leader's spin ended.
#[cfg(not(loom))]
enum Spun {
    /// Work came: no wait.
    Ready,
    /// A look failed with `EINTR` (only the fault seam makes one): the lead's result, as a
    /// wait's would be.
    Interrupted(io::Error),
    /// Nothing came: wait for up to the time left (`None`: no limit); the spin began at the
    /// instant given, for [`Spin::learn`], unless this is a poll (a zero timeout), which
    /// waits for nothing and so teaches the budget nothing (and reads no clock).
    Waiting(Option<Duration>, Option<Deadline>),
}

/// The leader's spin, before it blocks in the kernel: a sleep there and the wake that ends
/// it cost tens of microseconds on a virtual machine (a halted virtual CPU is woken by
/// the hypervisor), about a loopback round trip. So the leader first looks for readiness
/// without blocking, turn after turn, for a budget learnt as a port's waiters learn theirs
/// (see [`Spin`]): a server whose next request comes within it never sleeps, and an idle
/// one stops spinning after a few long waits (and then makes no look of its own before it
/// blocks, as before it had a budget). Its posts need no wake meanwhile (`blocked` is
/// clear): each look also looks at the port's records, without the barrier of the last
/// look (a system call when other threads post on lanes of their own), which only the
/// decision to block needs. A poll (a zero timeout) does not spin.
trait Leading: Readiness {
    /// The leader's turn once it has announced itself: the spin, then (unless work came)
    /// `blocked` raised, the last look (after `sync`), and the wait.
    fn spin_and_wait(
        &self,
        poller: &mut Self::Poller,
        timeout: Option<Duration>,
        ready: &dyn Fn() -> bool,
        sync: &dyn Fn(),
    ) -> io::Result<()> {
        #[cfg(not(loom))]
        let (timeout, spun) = match self.spin(poller, timeout, ready) {
            Spun::Ready => return Ok(()),
            Spun::Interrupted(err) => return Err(err),
            Spun::Waiting(left, start) => (left, start),
        };
        let flags = &self.turns().flags;
        // SeqCst: announced before the last look for work (Dekker with posters, through
        // `wake_if_blocked`).
        flags.blocked.store(true, Ordering::SeqCst);
        crate::primitive::loom_seqcst_fence();
        sync();
        if ready() {
            return Ok(());
        }
        let result = self.turn(poller, timeout);
        #[cfg(not(loom))]
        if let Some(start) = spun {
            self.turns().spin.learn(start, ready());
        }
        result
    }

    #[cfg(not(loom))]
    fn spin(
        &self,
        poller: &mut Self::Poller,
        timeout: Option<Duration>,
        ready: &dyn Fn() -> bool,
    ) -> Spun {
        if timeout == Some(Duration::ZERO) {
            return Spun::Waiting(timeout, None);
        }
        if self.turns().spin.is_off() {
            return Spun::Waiting(timeout, Some(Deadline::now()));
        }
        let deadline = timeout.and_then(Deadline::after);
        let mut failed = None;
        let (found, start) = self.turns().spin.spin(deadline, || {
            if ready() {
                return true;
            }
            match self.turn(poller, Some(Duration::ZERO)) {
                Ok(()) => ready(),
                Err(err) => {
                    failed = Some(err);
                    true
                }
            }
        });
        match (found, failed) {
            (true, None) => Spun::Ready,
            (_, Some(err)) if err.kind() == io::ErrorKind::Interrupted => Spun::Interrupted(err),
            // Another failure (`ENOMEM`) ends the spin: the wait retries the poll, and
            // pauses if it fails again.
            _ => Spun::Waiting(deadline.map(Deadline::remaining), Some(start)),
        }
    }
}

impl<R: Readiness> Leading for R {}

/// A port's readiness as the port holds it: the [`Driven`] object, and its flags beside it,
/// so that a post, which reads them ([`wake_if_blocked`](Self::wake_if_blocked)), makes no
/// call through the object (one every post cost 0.5 ns a record to a thread posting 16
/// records to a port with a socket and taking them back: 5.75 ns against 5.2, AMD EPYC).
pub(crate) struct Driving {
    driven: Arc<dyn Driven>,
    flags: Arc<Flags>,
}

impl Driving {
    pub(crate) fn new(driven: Arc<dyn Driven>) -> Driving {
        let flags = Arc::clone(driven.flags());
        Driving { driven, flags }
    }

    /// The readiness.
    pub(crate) fn driven(&self) -> &Arc<dyn Driven> {
        &self.driven
    }

    /// Whether a thread leads.
    pub(crate) fn is_led(&self) -> bool {
        // SeqCst: pairs with the store in `lead` (see `port`'s follower check).
        self.flags.leading.load(Ordering::SeqCst)
    }

    /// After a post: wakes the leader if it is blocked waiting for readiness.
    pub(crate) fn wake_if_blocked(&self) {
        if self.is_blocked() {
            self.driven.wake();
        }
    }

    /// Whether the leader is blocked waiting for readiness.
    #[inline(always)]
    pub(crate) fn is_blocked(&self) -> bool {
        // SeqCst: the poster half of the Dekker pair with `lead`.
        self.flags.blocked.load(Ordering::SeqCst)
    }

    /// Ends the thread [`spawn_thread`](Driven::spawn_thread) started, or a leader's wait.
    pub(crate) fn stop(&self) {
        // Relaxed: the wake below is the synchronization.
        self.flags.stopped.store(true, Ordering::Relaxed);
        self.driven.wake();
    }
}

/// Who polls: the poller, held by the thread that polls, and what followers and posters
/// read of it.
pub(crate) struct Turns<P> {
    poller: Mutex<P>,
    /// How long a leader looks for readiness before it blocks (see `Leading`).
    #[cfg(not(loom))]
    spin: Spin,
    /// Under loom, set while a thread holds the poller (see [`Turns::try_hold`]).
    #[cfg(loom)]
    claimed: AtomicBool,
    flags: Arc<Flags>,
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
    /// Sets the longest spin of the leader before it blocks (the port's spin limit).
    #[cfg(not(loom))]
    pub(crate) fn limit_spin(&self, limit: Duration) {
        self.spin.limit_to(limit);
    }

    /// The longest spin of the leader.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn spin_limit(&self) -> Duration {
        self.spin.limit()
    }

    pub(crate) fn new(poller: P) -> Turns<P> {
        Turns {
            poller: Mutex::new(poller),
            #[cfg(not(loom))]
            spin: Spin::stoppable(),
            #[cfg(loom)]
            claimed: AtomicBool::new(false),
            flags: Arc::new(Flags {
                leading: AtomicBool::new(false),
                blocked: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
            }),
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Readiness that records its turns: looks (zero timeouts) and blocking waits, which
    /// last `wait` and find work (`work`) when `busy`.
    struct Recorder {
        turns: Turns<()>,
        looks: AtomicUsize,
        waits: Mutex<Vec<Option<Duration>>>,
        wait: Duration,
        busy: AtomicBool,
        work: AtomicBool,
    }

    impl Recorder {
        fn new(wait: Duration) -> Recorder {
            Recorder {
                turns: Turns::new(()),
                looks: AtomicUsize::new(0),
                waits: Mutex::new(Vec::new()),
                wait,
                busy: AtomicBool::new(false),
                work: AtomicBool::new(false),
            }
        }

        fn looks(&self) -> usize {
            self.looks.load(Ordering::Relaxed)
        }

        fn waits(&self) -> Vec<Option<Duration>> {
            crate::primitive::lock(&self.waits).clone()
        }

        /// One lead that wants work (`work` set by a turn), with `timeout`.
        fn lead_once(&self, timeout: Option<Duration>) {
            self.work.store(false, Ordering::Relaxed);
            let ready = || self.work.load(Ordering::Relaxed);
            assert!(Driven::lead(self, timeout, &ready, &|| ()).unwrap().is_ok());
        }
    }

    impl Readiness for Recorder {
        type Poller = ();

        fn turns(&self) -> &Turns<()> {
            &self.turns
        }

        fn turn(&self, _: &mut (), timeout: Option<Duration>) -> io::Result<()> {
            if timeout == Some(Duration::ZERO) {
                self.looks.fetch_add(1, Ordering::Relaxed);
            } else {
                crate::primitive::lock(&self.waits).push(timeout);
                std::thread::sleep(self.wait);
                if self.busy.load(Ordering::Relaxed) {
                    self.work.store(true, Ordering::Relaxed);
                }
            }
            Ok(())
        }

        fn wake(&self) {}
    }

    #[test]
    fn a_leader_looks_without_blocking_and_takes_work_that_comes_meanwhile() {
        let readiness = Recorder::new(Duration::ZERO);
        // The third look finds work.
        let ready = || readiness.looks() >= 3;
        assert!(
            Driven::lead(&readiness, Some(Duration::from_secs(5)), &ready, &|| ())
                .unwrap()
                .is_ok()
        );
        assert_eq!(readiness.looks(), 3);
        assert_eq!(readiness.waits(), [], "it blocked with work on its way");
    }

    #[test]
    fn only_the_last_look_before_a_wait_pays_for_the_barrier() {
        let readiness = Recorder::new(Duration::ZERO);
        let syncs = AtomicUsize::new(0);
        let sync = || {
            syncs.fetch_add(1, Ordering::Relaxed);
        };
        // Work found by the third look: no wait, no barrier.
        let ready = || readiness.looks() >= 3;
        let lead = Driven::lead(&readiness, Some(Duration::from_secs(5)), &ready, &sync);
        assert!(lead.unwrap().is_ok());
        assert_eq!(syncs.load(Ordering::Relaxed), 0);
        // Nothing found: one barrier, before the one wait.
        let looks = readiness.looks();
        let lead = Driven::lead(
            &readiness,
            Some(Duration::from_millis(50)),
            &|| false,
            &sync,
        );
        assert!(lead.unwrap().is_ok());
        assert!(readiness.looks() > looks + 1, "the spin looked once");
        assert_eq!(syncs.load(Ordering::Relaxed), 1);
        assert_eq!(readiness.waits().len(), 1);
    }

    #[test]
    fn a_leader_that_finds_nothing_blocks_for_the_time_left_and_a_poll_never_spins() {
        let readiness = Recorder::new(Duration::ZERO);
        readiness.lead_once(Some(Duration::from_millis(50)));
        assert!(readiness.looks() > 0, "no look before blocking");
        let waits = readiness.waits();
        assert_eq!(waits.len(), 1);
        let left = waits[0].unwrap();
        assert!(
            left > Duration::ZERO && left < Duration::from_millis(50),
            "{left:?}"
        );

        let looks = readiness.looks();
        readiness.lead_once(Some(Duration::ZERO));
        assert_eq!(readiness.looks(), looks + 1, "a poll is one look");
        assert_eq!(readiness.waits().len(), 1);
    }

    #[test]
    fn long_waits_stop_the_spin_a_poll_leaves_it_off_and_a_quick_wake_brings_it_back() {
        // Waits of 2 ms, longer than any spin: each halves the budget, down to none.
        let mut readiness = Recorder::new(Duration::from_millis(2));
        let mut spinning = 0;
        loop {
            let looks = readiness.looks();
            readiness.lead_once(None);
            if readiness.looks() == looks {
                break;
            }
            spinning += 1;
            assert!(spinning < 32, "the spin never stopped");
        }
        // 20 µs to start with: 10, 5, 2.5, 1.25, then none (see `Spin`).
        assert_eq!(spinning, 5);
        let looks = readiness.looks();
        readiness.lead_once(None);
        assert_eq!(readiness.looks(), looks, "a look without a budget");

        // A poll that finds work waited for nothing: it teaches the budget nothing.
        readiness.wait = Duration::ZERO;
        readiness.busy.store(true, Ordering::Relaxed);
        let looks = readiness.looks();
        let found_by_the_poll = || readiness.looks() > looks;
        let lead = Driven::lead(&readiness, Some(Duration::ZERO), &found_by_the_poll, &|| ());
        assert!(lead.unwrap().is_ok());
        assert_eq!(readiness.looks(), looks + 1);
        assert!(readiness.turns.spin.is_off(), "a poll restored the spin");

        // A wait that ends at once with work: the next lead spins again.
        let looks = readiness.looks();
        readiness.lead_once(None);
        assert_eq!(readiness.looks(), looks, "no budget yet");
        readiness.lead_once(None);
        assert!(
            readiness.looks() > looks,
            "a quick wake did not restore the spin"
        );
    }
}
