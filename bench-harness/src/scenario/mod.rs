//! The scenarios, one module each.
//!
//! Each module supplies the same two functions, which `main` calls:
//!
//! * `measurements(&Settings) -> u64`: how many measurements `run` will make (the length
//!   of its progress bar);
//! * `run(&Settings, &ProgressBar) -> Report`: makes them, advancing the bar after each,
//!   and returns a serializable report with every figure, which `report` prints and
//!   `plot` draws. A peer that cannot run on this machine is reported as skipped, with the
//!   reason; it never aborts the run.
//!
//! Every measurement runs on threads of its own (so pinning never leaks into the next),
//! is bounded in time and in count, and joins all its threads before it returns.

pub mod drain;
pub mod echo;
pub mod file;
pub mod wake;

use core_affinity::CoreId;
use std::ops::Deref;

/// Pins the calling thread to `cores[index]` when there is a plan.
fn pin(cores: Option<&[CoreId]>, index: usize) {
    if let Some(cores) = cores {
        // A refusal (e.g. a cpuset without that core) just leaves the thread unpinned.
        core_affinity::set_for_current(cores[index]);
    }
}

/// A value alone on its cache line pair (128 bytes, as crossbeam's `CachePadded` on
/// x86_64, where the adjacent-line prefetcher pulls lines in pairs), so that threads
/// writing neighbouring values do not contend.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

impl<T> Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Waiting for another thread without a blocking primitive: spin a little, then yield,
/// because the machine may have fewer cores than the measurement has threads.
#[derive(Default)]
struct Backoff {
    spins: u32,
}

impl Backoff {
    const SPINS_BEFORE_YIELD: u32 = 64;

    fn snooze(&mut self) {
        if self.spins < Self::SPINS_BEFORE_YIELD {
            self.spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }

    fn reset(&mut self) {
        self.spins = 0;
    }
}
