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
pub mod resp;
pub mod spread;
pub mod wake;

use core_affinity::CoreId;
use serde::Serialize;
use std::fmt;
use std::ops::Deref;

/// One of the design's performance targets (DESIGN.md), on a ratio this run measured.
#[derive(Debug, Serialize)]
pub struct Target {
    /// What is divided by what, e.g. `iocp batched / best peer`.
    pub what: String,
    /// The ratio; `None` when a side of it was not measured.
    pub ratio: Option<f64>,
    /// The bound the ratio must keep.
    pub bound: Bound,
    /// Whether it does; `None` when not measured.
    pub met: Option<bool>,
}

/// A target's bound on its ratio.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
}

impl Target {
    /// The target `bound` on `ratio`, judged.
    pub fn new(what: impl Into<String>, ratio: Option<f64>, bound: Bound) -> Target {
        let met = ratio.map(|ratio| match bound {
            Bound::AtLeast(low) => ratio >= low,
            Bound::AtMost(high) => ratio <= high,
        });
        Target {
            what: what.into(),
            ratio,
            bound,
            met,
        }
    }
}

impl fmt::Display for Bound {
    /// `>= 1.5x`, `<= 0.5x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::AtLeast(low) => write!(f, ">= {low}x"),
            Bound::AtMost(high) => write!(f, "<= {high}x"),
        }
    }
}

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
