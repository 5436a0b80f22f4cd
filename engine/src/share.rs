//! Sharing a run of short, independent tasks between the thread that has them and one idle
//! pool thread: the file pool's way to spread a `lio_listio` list's cached reads over two
//! cores without handing any request over.
//!
//! The calling thread puts its run on offer in the pool's one slot ([`Offers`]) and starts on
//! the tasks itself; an idle pool thread that looks at the slot takes the run out of it and
//! works on it too. The caller claims tasks one at a time from the front, the helper a
//! quarter of what is left (at most [`MAX_CLAIM`]) at a time from the back, so the two split
//! the run as their speeds allow without writing one cache line for every task (a small
//! share per claim leaves the caller little to wait for at the end), and the caller alone
//! does everything when no thread comes. The caller returns only when every task has run: it
//! takes its run back out of the slot, or, if a helper took it first, waits until that
//! helper has finished its last task. So the tasks may borrow the caller's stack, and the
//! caller sees every task's effects when [`Offers::run`] returns.
//!
//! The slot holds one run at a time: a second caller finding it taken runs alone.

use crate::primitive::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use crossbeam_utils::CachePadded;
use std::ptr;

/// A run on offer: its tasks, the part not yet claimed, and whether a helper is done with it.
struct Split<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    /// The unclaimed tasks `front..back`, as `back << 32 | front`: the caller claims one at
    /// a time from the front, a helper a quarter of what is left at a time from the back, so
    /// that the two rarely write this line in turn.
    unclaimed: AtomicU64,
    /// Set by a helper that took the run out of the slot, after its last task.
    helped: AtomicBool,
}

impl Split<'_> {
    /// The caller's part: claims and runs tasks from the front until none is left.
    fn work_front(&self) {
        loop {
            // Relaxed: the read-modify-write alone makes every index go to one thread; what
            // the tasks did is ordered by `helped` (helper to caller). Once the front has
            // met the back, a further increment claims nothing and is harmless.
            let (front, back) = unpack(self.unclaimed.fetch_add(1, Ordering::Relaxed));
            if front >= back {
                return;
            }
            (self.task)(front as usize);
        }
    }

    /// A helper's part: claims a quarter of what is left from the back (at least one task, at
    /// most [`MAX_CLAIM`]) and runs it, until nothing is left.
    fn work_back(&self) {
        // Relaxed (all three): as in `work_front`.
        let mut seen = self.unclaimed.load(Ordering::Relaxed);
        loop {
            let (front, back) = unpack(seen);
            if front >= back {
                return;
            }
            let from = back - (back - front).div_ceil(4).min(MAX_CLAIM);
            match self.unclaimed.compare_exchange_weak(
                seen,
                pack(front, from),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    (from..back).for_each(|i| (self.task)(i as usize));
                    seen = self.unclaimed.load(Ordering::Relaxed);
                }
                Err(now) => seen = now,
            }
        }
    }
}

/// Most tasks a helper claims at once: a pool thread helping is not doing its own work
/// (io_uring's ring thread reaps and submits between claims).
const MAX_CLAIM: u32 = 4;

/// `front..back` as [`Split::unclaimed`] holds it.
fn pack(front: u32, back: u32) -> u64 {
    u64::from(back) << 32 | u64::from(front)
}

/// The `front..back` that [`Split::unclaimed`] holds.
fn unpack(unclaimed: u64) -> (u32, u32) {
    (unclaimed as u32, (unclaimed >> 32) as u32)
}

/// The slot through which a pool's threads are offered runs of tasks.
pub struct Offers {
    /// Null, or the run on offer, which lives on its caller's stack (its lifetime erased:
    /// see [`Offers::run`] for why it outlives every use through here).
    slot: CachePadded<AtomicPtr<Split<'static>>>,
}

impl Default for Offers {
    fn default() -> Offers {
        Offers::new()
    }
}

impl Offers {
    /// An empty slot.
    pub fn new() -> Offers {
        Offers {
            slot: CachePadded::new(AtomicPtr::new(ptr::null_mut())),
        }
    }

    /// Whether a run is on offer (a hint for an idle thread's spin).
    pub fn pending(&self) -> bool {
        // Relaxed: a hint; `help` takes the run with an acquire swap.
        !self.slot.load(Ordering::Relaxed).is_null()
    }

    /// Runs `task(i)` for every `i` in `0..len`, each exactly once, on this thread and on a
    /// helper that takes the run meanwhile; returns when all have run, with their effects
    /// visible to this thread. `wake` runs when the run is on offer (to wake a helper).
    pub fn run(&self, len: usize, task: &(dyn Fn(usize) + Sync), wake: impl FnOnce()) {
        // Runs are short (a list's chunk): the count fits the packing.
        let len = u32::try_from(len).expect("a run of at most 2^32 - 1 tasks");
        let split = Split {
            task,
            unclaimed: AtomicU64::new(pack(0, len)),
            helped: AtomicBool::new(false),
        };
        let offered = (&split as *const Split<'_>)
            .cast_mut()
            .cast::<Split<'static>>();
        // Release: pairs with the acquire swap in `help`, which then sees `split` whole.
        // Relaxed failure: another run is on offer; this one runs here alone.
        let on_offer = self
            .slot
            .compare_exchange(
                ptr::null_mut(),
                offered,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok();
        if on_offer {
            wake();
        }
        split.work_front();
        if !on_offer {
            return;
        }
        // Taking the run back: if it is still in the slot no helper ever saw it. Relaxed
        // (both): on success nobody else touches `split`; on failure the wait below orders.
        let taken_back = self
            .slot
            .compare_exchange(
                offered,
                ptr::null_mut(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
        if taken_back {
            return;
        }
        // A helper took the run: `split` must live until it is done with it. It holds at most
        // `MAX_CLAIM` short tasks, so this wait is short, unless the helper was preempted.
        let mut spins = 0u32;
        // Acquire: pairs with the helper's release store, after its last task.
        while !split.helped.load(Ordering::Acquire) {
            spins += 1;
            if spins < 64 {
                crate::primitive::spin_loop();
            } else {
                crate::primitive::yield_now();
            }
        }
    }

    /// Takes the run on offer, if any, and works on it until no task is left. Returns
    /// whether there was one.
    pub fn help(&self) -> bool {
        if !self.pending() {
            return false;
        }
        // Acquire: pairs with the release of the offering compare-and-swap in `run`.
        let taken = self.slot.swap(ptr::null_mut(), Ordering::Acquire);
        // SAFETY: a non-null pointer in the slot is a `Split` that its caller keeps alive
        // until it takes it back out of the slot (it is not there any more: this swap took it)
        // or sees `helped` set (below, after the last use of it here).
        let Some(split) = (unsafe { taken.as_ref() }) else {
            return false;
        };
        split.work_back();
        // Release: pairs with the caller's acquire load in `run`: the tasks run here are
        // visible to it, and this is the last touch of `split`.
        split.helped.store(true, Ordering::Release);
        true
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32};
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn with_no_helper_the_caller_runs_every_task_once() {
        let offers = Offers::new();
        let runs: Vec<AtomicU32> = (0..10).map(|_| AtomicU32::new(0)).collect();
        let mut woken = 0;
        offers.run(
            runs.len(),
            &|i| {
                runs[i].fetch_add(1, Ordering::Relaxed);
            },
            || woken += 1,
        );
        assert!(runs.iter().all(|n| n.load(Ordering::Relaxed) == 1));
        assert_eq!(woken, 1, "the run was on offer");
        assert!(!offers.pending(), "and is taken back");
        assert!(!offers.help(), "nothing is left to help with");
    }

    #[test]
    fn a_helper_takes_tasks_and_the_caller_waits_for_it() {
        let offers = Arc::new(Offers::new());
        let runs: Vec<AtomicU32> = (0..64).map(|_| AtomicU32::new(0)).collect();
        let by_helper = AtomicU32::new(0);
        let caller_done = Arc::new(AtomicBool::new(false));
        let helper = {
            let (offers, caller_done) = (Arc::clone(&offers), Arc::clone(&caller_done));
            thread::spawn(move || {
                // Bounded by the caller: it sets the flag once its run returned.
                while !caller_done.load(Ordering::Relaxed) {
                    if offers.help() {
                        return true;
                    }
                    thread::yield_now();
                }
                false
            })
        };
        let helper_id = helper.thread().id();
        let patience = std::time::Instant::now() + std::time::Duration::from_secs(10);
        offers.run(
            runs.len(),
            &|i| {
                if thread::current().id() == helper_id {
                    by_helper.fetch_add(1, Ordering::Relaxed);
                } else if i == 0 {
                    // Holds task 0 until the helper has taken the run out of the slot and
                    // run a task of it (it claims tasks from the back), or for at most ten
                    // seconds. Waiting only for the slot to empty let a helper preempted
                    // right after taking the run find every task claimed by the caller
                    // meanwhile (seen once in CI, on two busy cores).
                    while (offers.pending() || by_helper.load(Ordering::Relaxed) == 0)
                        && std::time::Instant::now() < patience
                    {
                        thread::yield_now();
                    }
                }
                runs[i].fetch_add(1, Ordering::Relaxed);
            },
            || {},
        );
        caller_done.store(true, Ordering::Relaxed);
        // Every task ran once, the helper's too, by the time `run` returned.
        assert!(runs.iter().all(|n| n.load(Ordering::Relaxed) == 1));
        assert!(helper.join().unwrap(), "the helper found the run on offer");
        assert!(
            by_helper.load(Ordering::Relaxed) > 0,
            "and took tasks of it"
        );
    }

    #[test]
    fn a_second_caller_runs_alone_while_the_slot_is_taken() {
        let offers = Offers::new();
        let inner_runs = AtomicU32::new(0);
        offers.run(
            1,
            &|_| {
                // The outer run is on offer now: this one cannot be.
                offers.run(
                    3,
                    &|_| {
                        inner_runs.fetch_add(1, Ordering::Relaxed);
                    },
                    || unreachable!("the slot was taken: nothing to wake for"),
                );
            },
            || {},
        );
        assert_eq!(inner_runs.load(Ordering::Relaxed), 3);
        assert!(!offers.pending(), "the outer run was taken back");
    }
}
