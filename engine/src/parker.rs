//! Blocking: a futex parker per thread, a LIFO stack of parked waiters per port, and the
//! adaptive spin that comes before parking.
//!
//! A waiter registers its parker on the port's [`WaitStack`] (which counts sleepers), looks
//! once more for work, and sleeps on its parker's futex word until the absolute deadline.
//! A poster publishes its record and then checks the sleeper count; both the registration
//! and the publication are sequentially consistent, so either the poster sees the sleeper
//! or the sleeper sees the record (a Dekker pair) and no wake-up is lost. When the count is
//! zero, posting costs one load and no system call.
//!
//! A waker pops the most recent sleeper (Windows wakes completion-port waiters LIFO, which
//! keeps the hottest thread and its cache busy) and marks its parker notified *under the
//! stack lock*, so that "no longer on the stack" and "notified" are the same fact: a waiter
//! whose wait ended by timeout or signal unregisters itself, and if it is gone from the
//! stack it knows a wake was meant for it. The futex wake itself happens after the lock is
//! released; at worst it reaches the parker's next wait as a spurious return, which
//! [`Parker::park`] absorbs. The lock is taken only by threads that sleep and by posts that
//! find a sleeper, both of which make a system call anyway.

use crate::primitive::{lock, AtomicU32, AtomicUsize, Mutex, Ordering};
use crate::sys::{self, Deadline, WaitStatus};
use std::sync::Arc;
use std::time::Duration;

const EMPTY: u32 = 0;
const NOTIFIED: u32 = 1;

/// One thread's futex word.
pub(crate) struct Parker {
    state: AtomicU32,
}

crate::primitive::thread_local! {
    static CURRENT: Arc<Parker> = Arc::new(Parker { state: AtomicU32::new(EMPTY) });
}

impl Parker {
    /// The calling thread's parker.
    pub(crate) fn current() -> Arc<Parker> {
        CURRENT.with(Arc::clone)
    }

    /// Sleeps until notified ([`WaitStatus::Woken`]), the deadline passes, or a signal
    /// handler runs. Spurious futex returns are absorbed here, against the same deadline.
    pub(crate) fn park(&self, deadline: Option<Deadline>) -> WaitStatus {
        loop {
            // Acquire: pairs with the release store in `notify`.
            if self.state.swap(EMPTY, Ordering::Acquire) == NOTIFIED {
                return WaitStatus::Woken;
            }
            match sys::futex_wait(&self.state, EMPTY, deadline) {
                WaitStatus::Woken => continue,
                ended => return ended,
            }
        }
    }

    fn notify(&self) {
        // Release: pairs with the acquire swap in `park`. A swap rather than a store: loom
        // can order a plain store inside `park`'s swap (tokio-rs/loom#254), and this path
        // makes a system call anyway.
        self.state.swap(NOTIFIED, Ordering::Release);
    }
}

/// The parked waiters of one port, most recent on top.
pub(crate) struct WaitStack {
    sleepers: AtomicUsize,
    stack: Mutex<Vec<Arc<Parker>>>,
    /// Waiters inside [`park`](Self::park), for the loom models (see [`asleep`](Self::asleep)).
    #[cfg(loom)]
    asleep: std::sync::atomic::AtomicUsize,
}

impl WaitStack {
    pub(crate) fn new() -> WaitStack {
        WaitStack {
            sleepers: AtomicUsize::new(0),
            stack: Mutex::new(Vec::new()),
            #[cfg(loom)]
            asleep: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Puts `parker` on top. The caller must look for work once more before parking.
    pub(crate) fn register(&self, parker: &Arc<Parker>) {
        // Relaxed: no waker can reach the parker before it is on the stack (lock below).
        parker.state.store(EMPTY, Ordering::Relaxed);
        let mut stack = lock(&self.stack);
        stack.push(Arc::clone(parker));
        // SeqCst: the waiter half of the Dekker pair with the poster's SeqCst publication
        // and its `has_sleepers` load.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
    }

    /// Takes `parker` off the stack after a wait that did not end by notification.
    /// `false` means a waker already took it: a wake was meant for this waiter.
    pub(crate) fn unregister(&self, parker: &Arc<Parker>) -> bool {
        let mut stack = lock(&self.stack);
        match stack.iter().rposition(|p| Arc::ptr_eq(p, parker)) {
            Some(i) => {
                stack.remove(i);
                // Relaxed: the count changes under the lock; wakers re-check under it.
                self.sleepers.fetch_sub(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Sleeps on `parker`, registered here and past its last look for work, as
    /// [`Parker::park`] does.
    pub(crate) fn park(&self, parker: &Parker, deadline: Option<Deadline>) -> WaitStatus {
        // Relaxed (both): a std atomic, outside the loom model (no scheduling point), since
        // loom runs the model's threads one at a time; only `asleep` reads it.
        #[cfg(loom)]
        self.asleep
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ended = parker.park(deadline);
        #[cfg(loom)]
        self.asleep
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        ended
    }

    /// Waiters committed to sleep: past their last look for work, asleep or about to be.
    /// Only a wake ends an endless wait from there, so a loom model that counts its endless
    /// waiters here knows they sleep. (Under loom a timed wait ends at once.)
    #[cfg(loom)]
    pub(crate) fn asleep(&self) -> usize {
        // Relaxed: see `park`.
        self.asleep.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether anyone sleeps, read after publishing (the poster half of the Dekker pair).
    // Inline: every `post`, inlined into a caller's crate, reads it; without LTO it was a
    // call per record (12% of a same-thread post-and-drain loop).
    #[inline]
    pub(crate) fn has_sleepers(&self) -> bool {
        // SeqCst: pairs with the SeqCst increment in `register`.
        self.sleepers.load(Ordering::SeqCst) != 0
    }

    /// Wakes the most recent sleeper; `false` if there was none.
    pub(crate) fn wake_one(&self) -> bool {
        let parker = {
            let mut stack = lock(&self.stack);
            let Some(parker) = stack.pop() else {
                return false;
            };
            // Relaxed: as in `unregister`.
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            parker.notify();
            parker
        };
        sys::futex_wake_one(&parker.state);
        true
    }

    /// Wakes every sleeper.
    pub(crate) fn wake_all(&self) {
        let parkers = {
            let mut stack = lock(&self.stack);
            // Relaxed: as in `unregister`.
            self.sleepers.fetch_sub(stack.len(), Ordering::Relaxed);
            for parker in stack.iter() {
                parker.notify();
            }
            std::mem::take(&mut *stack)
        };
        for parker in &parkers {
            sys::futex_wake_one(&parker.state);
        }
    }
}

/// Shortest spin before parking, when there is one: halving the budget below this ends
/// the spin altogether, and a quick wake brings it back at this or more.
pub(crate) const MIN_SPIN: Duration = Duration::from_micros(1);
/// Longest spin before parking, unless a port's builder sets another limit: an idle waiter
/// burns at most this once per wait.
pub(crate) const MAX_SPIN: Duration = Duration::from_micros(100);
/// The longest spin limit a port may have: the budget is kept in `u32` nanoseconds.
pub(crate) const SPIN_LIMIT_MAX: Duration = Duration::from_secs(1);
/// A budget's first value, before any wait taught it.
const FIRST_BUDGET: Duration = Duration::from_micros(20);
/// Backoff: the pause between looks doubles up to 2^`MAX_STEP` `pause` instructions
/// (about half a microsecond), short enough to catch a ping-pong's reply promptly.
const MAX_STEP: u32 = 4;
/// Spinning this long without success yields the CPU between looks (see `Spin`).
const YIELD_AFTER: Duration = Duration::from_micros(1);

/// The spin budget after a parked wait of `waited` that ended with work (`woken`) or not,
/// from the budget `old`: twice a wait that a spin within `limit` would have caught (at
/// least [`MIN_SPIN`], at most `limit`), or else half the old budget, and `floor` (no spin,
/// or [`MIN_SPIN`]) below [`MIN_SPIN`]. A zero `limit` keeps a zero budget.
fn next_budget(
    old: Duration,
    waited: Duration,
    woken: bool,
    floor: Duration,
    limit: Duration,
) -> Duration {
    if woken && waited < limit {
        (waited * 2).max(MIN_SPIN).min(limit)
    } else if old / 2 < MIN_SPIN {
        floor
    } else {
        old / 2
    }
}

/// A port's adaptive spin budget.
///
/// A futex sleep and wake costs microseconds (tens on virtual machines); a record posted
/// while the waiter still spins is caught in the time of a cache-line transfer. The budget
/// follows the waits that actually happen: a wait woken soon after the spin gave up widens
/// the budget to cover it next time, a long or timed-out wait halves it, so an idle port
/// spins little and a busy one rarely sleeps.
///
/// A port's waiter whose waits are all long stops spinning altogether (a budget of zero,
/// [`Spin::stoppable`]) rather than keep a microsecond's spin that never catches anything
/// there and only takes CPU time and yields from a core its waiter may share with the
/// poster. In `iocp-bench wake`, unpinned on a 2-core Xeon VM (posts 2 ms apart to a
/// sleeping waiter), that took the Rust waiter's median wake from 2.28x / 3.63x / 2.93x /
/// 3.76x / 2.44x the raw futex's to 1.66x / 1.55x / 1.58x / 1.89x / 2.24x (five runs in
/// turn); the spinning ping-pong stayed at 0.2x. The file pool's threads keep a
/// microsecond's spin at least ([`Spin::new`]): the io_uring ring thread's spin right after
/// it posts is what catches a consumer's next requests. (With a budget that could stop
/// there too, O_DIRECT reads at queue depth 32 measured 82.0k / 82.3k / 89.8k IOPS against
/// 92.5k / 88.0k / 82.9k without, within this machine's swing.)
///
/// Between looks the spin backs off exponentially (as crossbeam's `Backoff` does): each look
/// pulls the cache lines producers are writing, so fewer looks let a batch build up without
/// slowing every post. After a few microseconds it also yields the CPU between looks, so
/// that a producer sharing the waiter's core gets to run rather than wait for the spin's end.
pub(crate) struct Spin {
    budget_ns: AtomicU32,
    /// The budget below [`MIN_SPIN`]: zero or `MIN_SPIN`.
    floor: Duration,
    /// The longest budget, ns: [`MAX_SPIN`] unless the port's builder set another; zero
    /// for none at all (a port whose waiters sleep at once).
    limit_ns: AtomicU32,
}

impl Spin {
    /// A budget that never drops below [`MIN_SPIN`].
    pub(crate) fn new() -> Spin {
        Spin {
            budget_ns: AtomicU32::new(nanos(FIRST_BUDGET)),
            floor: MIN_SPIN,
            limit_ns: AtomicU32::new(nanos(MAX_SPIN)),
        }
    }

    /// A budget that long waits bring down to no spin at all (a port's waiters).
    pub(crate) fn stoppable() -> Spin {
        Spin {
            floor: Duration::ZERO,
            ..Spin::new()
        }
    }

    /// Sets the longest budget: zero, or from [`MIN_SPIN`] to [`SPIN_LIMIT_MAX`] (the
    /// port's builder checks); the budget now is cut to it. Set before the spin's first
    /// use.
    pub(crate) fn limit_to(&self, limit: Duration) {
        debug_assert!(limit.is_zero() || (MIN_SPIN..=SPIN_LIMIT_MAX).contains(&limit));
        let limit = nanos(limit);
        // Relaxed: see `spin`.
        self.limit_ns.store(limit, Ordering::Relaxed);
        self.budget_ns.fetch_min(limit, Ordering::Relaxed);
    }

    /// The longest budget.
    pub(crate) fn limit(&self) -> Duration {
        // Relaxed: see `spin`.
        Duration::from_nanos(self.limit_ns.load(Ordering::Relaxed).into())
    }

    /// Spins until `ready()` holds (`true`), or the budget or `deadline` runs out (`false`).
    /// Returns when it started, for [`learn`](Self::learn).
    pub(crate) fn spin(
        &self,
        deadline: Option<Deadline>,
        mut ready: impl FnMut() -> bool,
    ) -> (bool, Deadline) {
        let start = Deadline::now();
        if cfg!(loom) {
            return (ready(), start);
        }
        // Relaxed: the budget is a hint; any recent value will do.
        let budget = Duration::from_nanos(self.budget_ns.load(Ordering::Relaxed).into());
        if budget.is_zero() {
            return (ready(), start);
        }
        let mut end = start.plus(budget);
        if let Some(deadline) = deadline {
            end = end.min(deadline);
        }
        let yield_from = start.plus(YIELD_AFTER);
        let mut step = 0;
        loop {
            if ready() {
                return (true, start);
            }
            for _ in 0..1u32 << step {
                crate::primitive::spin_loop();
            }
            if step < MAX_STEP {
                step += 1;
                continue;
            }
            // Past the short steps the pauses dwarf a clock read.
            let now = Deadline::now();
            if now >= end {
                return (false, start);
            }
            if now >= yield_from {
                std::thread::yield_now();
            }
        }
    }

    /// Whether the budget is zero: [`spin`](Self::spin) would only look once.
    #[cfg(not(loom))]
    pub(crate) fn is_off(&self) -> bool {
        // Relaxed: see `spin`.
        self.budget_ns.load(Ordering::Relaxed) == 0
    }

    /// Adapts the budget after a parked wait that began spinning at `start`; `woken` tells
    /// whether it ended with work rather than a timeout.
    pub(crate) fn learn(&self, start: Deadline, woken: bool) {
        let waited = Deadline::now().since(start);
        // Relaxed: see `spin`.
        let old = Duration::from_nanos(self.budget_ns.load(Ordering::Relaxed).into());
        let new = next_budget(old, waited, woken, self.floor, self.limit());
        self.budget_ns.store(nanos(new), Ordering::Relaxed);
    }
}

/// A budget in nanoseconds; at most [`SPIN_LIMIT_MAX`], so it fits.
fn nanos(budget: Duration) -> u32 {
    budget.min(SPIN_LIMIT_MAX).as_nanos() as u32
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn long_waits_halve_the_budget_down_to_no_spin_and_a_quick_wake_restores_it() {
        let long = MAX_SPIN * 3;
        let mut budget = Duration::from_micros(20);
        let mut halvings = 0;
        while !budget.is_zero() {
            let next = next_budget(budget, long, true, Duration::ZERO, MAX_SPIN);
            assert!(next < budget);
            budget = next;
            halvings += 1;
            assert!(halvings < 32, "the budget never reached zero");
        }
        // 20 → 10 → 5 → 2.5 → 1.25 µs, then below MIN_SPIN: no spin.
        assert_eq!(halvings, 5);
        assert_eq!(
            next_budget(Duration::ZERO, long, false, Duration::ZERO, MAX_SPIN),
            Duration::ZERO
        );
        // The file pool's budget stops at MIN_SPIN instead.
        assert_eq!(
            next_budget(MIN_SPIN, long, true, MIN_SPIN, MAX_SPIN),
            MIN_SPIN
        );
        // A wake soon after the waiter parked: spin again, twice that long, within bounds.
        let quick = |waited| next_budget(Duration::ZERO, waited, true, Duration::ZERO, MAX_SPIN);
        assert_eq!(quick(Duration::from_nanos(100)), MIN_SPIN);
        assert_eq!(quick(Duration::from_micros(30)), Duration::from_micros(60));
        assert_eq!(quick(Duration::from_micros(70)), MAX_SPIN);
        // A timeout never lengthens the spin.
        assert_eq!(
            next_budget(
                MIN_SPIN * 4,
                Duration::from_nanos(100),
                false,
                Duration::ZERO,
                MAX_SPIN
            ),
            MIN_SPIN * 2
        );
    }

    #[test]
    fn a_spin_limit_caps_the_budget_and_zero_keeps_it_off() {
        let us = Duration::from_micros;
        // A quick wake widens the budget only up to the limit.
        assert_eq!(
            next_budget(us(5), us(30), true, Duration::ZERO, us(40)),
            us(40)
        );
        assert_eq!(
            next_budget(us(5), us(10), true, Duration::ZERO, us(40)),
            us(20)
        );
        // A wait the limit could not have caught halves the budget, as a long one does.
        assert_eq!(
            next_budget(us(40), us(45), true, Duration::ZERO, us(40)),
            us(20)
        );
        // No limit, no spin: nothing brings the budget back.
        for waited in [Duration::ZERO, Duration::from_nanos(100), us(30), us(500)] {
            let next = next_budget(Duration::ZERO, waited, true, Duration::ZERO, Duration::ZERO);
            assert_eq!(
                next,
                Duration::ZERO,
                "after a wake {waited:?} into the wait"
            );
        }
        let spin = Spin::stoppable();
        assert_eq!(spin.limit(), MAX_SPIN);
        spin.limit_to(us(5));
        assert_eq!(
            spin.budget_ns.load(Ordering::Relaxed),
            5_000,
            "cut to the limit"
        );
        spin.limit_to(Duration::ZERO);
        assert!(spin.is_off());
        let start = Deadline::now();
        spin.learn(start, true);
        assert!(
            spin.is_off(),
            "a quick wake does not turn a zero limit's spin on"
        );
    }

    #[test]
    fn a_zero_budget_looks_once_without_spinning() {
        let spin = Spin::stoppable();
        spin.budget_ns.store(0, Ordering::Relaxed);
        let mut looks = 0;
        let (ready, _) = spin.spin(None, || {
            looks += 1;
            false
        });
        assert!(!ready);
        assert_eq!(looks, 1);
    }
}
