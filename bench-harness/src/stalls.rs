//! How often the machine holds up a thread that has a core to itself.
//!
//! Before the scenarios and again after them, one thread pinned to each core reads the
//! monotonic clock in a tight loop for a window and counts the gaps between successive
//! readings (two probes bracket the run, as the machine's load may change during it): a gap
//! is time the thread did not run (an interrupt, another task given the core, the
//! hypervisor running something else on the virtual CPU). This is the floor under every
//! tail the scenarios measure: a server or generator thread held up 5 ms in a round shows
//! as a 5 ms latency there whatever the server, and at a set rate the messages that pile up
//! meanwhile wait too. The figures go in the table's header and `results.json`, so that a
//! reader can tell a machine that stalls from a server that does.

use serde::Serialize;
use std::thread;
use std::time::{Duration, Instant};

/// A gap counted as a stall: well above a clock read (tens of nanoseconds) and an
/// ordinary interrupt (a few microseconds).
const STALL: Duration = Duration::from_micros(100);
/// A stall long enough to show in the scenarios' p99 at their rates.
const LONG_STALL: Duration = Duration::from_millis(1);
/// Upper bound on clock reads per core, whatever the clock does.
const MAX_READS: u64 = 1 << 36;

/// When a probe ran.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Before the first scenario.
    Before,
    /// After the last one.
    After,
}

/// The stalls seen on each core over the same window.
#[derive(Debug, Serialize)]
pub struct Stalls {
    /// Before or after the scenarios.
    pub when: When,
    /// How long each core's thread spun, in seconds.
    pub window_s: f64,
    /// Whether the threads were pinned one to a core (otherwise one unpinned thread ran).
    pub pinned: bool,
    /// One entry per core (one in all when unpinned).
    pub cores: Vec<CoreStalls>,
}

/// The stalls of one core's thread.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct CoreStalls {
    /// The core's id, as the OS numbers it (`None` for the unpinned thread).
    pub core: Option<usize>,
    /// Gaps over 100 µs.
    pub over_100us: u64,
    /// Gaps over 1 ms.
    pub over_1ms: u64,
    /// The longest gap, in microseconds.
    pub longest_us: f64,
    /// The gaps over 100 µs added up, in milliseconds: time the thread was held up.
    pub held_ms: f64,
}

impl CoreStalls {
    /// Counts one gap between clock readings.
    fn add(&mut self, gap: Duration) {
        if gap <= STALL {
            return;
        }
        self.over_100us += 1;
        self.over_1ms += u64::from(gap > LONG_STALL);
        self.longest_us = self.longest_us.max(gap.as_secs_f64() * 1e6);
        self.held_ms += gap.as_secs_f64() * 1e3;
    }
}

/// Spins a thread on each of `cores` (one unpinned thread when there are none) for
/// `window`, all at once, and counts their stalls; `when` says where in the run.
pub fn measure(when: When, cores: &[core_affinity::CoreId], window: Duration) -> Stalls {
    let cores_stalls = if cores.is_empty() {
        vec![spin(None, window)]
    } else {
        thread::scope(|scope| {
            let threads: Vec<_> = cores
                .iter()
                .map(|&core| scope.spawn(move || spin(Some(core), window)))
                .collect();
            // A probe that panicked is a harness bug: it fails the run rather than read
            // as a core without stalls.
            threads
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|e| std::panic::resume_unwind(e))
                })
                .collect()
        })
    };
    Stalls {
        when,
        window_s: window.as_secs_f64(),
        pinned: !cores.is_empty(),
        cores: cores_stalls,
    }
}

/// One core's probe: pinned to `core` if given, reads the clock until `window` has passed.
fn spin(core: Option<core_affinity::CoreId>, window: Duration) -> CoreStalls {
    let pinned = core.is_some_and(core_affinity::set_for_current);
    let mut stalls = CoreStalls {
        core: core.filter(|_| pinned).map(|core| core.id),
        ..CoreStalls::default()
    };
    let start = Instant::now();
    let mut last = start;
    for _ in 0..MAX_READS {
        let now = Instant::now();
        stalls.add(now - last);
        last = now;
        if now - start >= window {
            break;
        }
    }
    stalls
}

impl Stalls {
    /// The table's line: each core's stalls over 1 ms, the longest, and the time held up.
    pub fn summary(&self) -> String {
        let cores: Vec<String> = self
            .cores
            .iter()
            .map(|core| {
                format!(
                    "{}: {} over 1 ms ({} over 100 us), longest {:.2} ms, held {:.1} ms",
                    core.core
                        .map_or_else(|| "unpinned".to_owned(), |id| format!("core {id}")),
                    core.over_1ms,
                    core.over_100us,
                    core.longest_us / 1e3,
                    core.held_ms
                )
            })
            .collect();
        format!(
            "stalls of a thread spinning alone {} for {:.1} s {} the scenarios: {}",
            if self.pinned {
                "on each core"
            } else {
                "(unpinned)"
            },
            self.window_s,
            match self.when {
                When::Before => "before",
                When::After => "after",
            },
            cores.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_counted_by_length() {
        let mut stalls = CoreStalls::default();
        for us in [0, 1, 20, 100, 101, 999, 1_000, 1_001, 7_500] {
            stalls.add(Duration::from_micros(us));
        }
        assert_eq!(stalls.over_100us, 5, "101, 999, 1000, 1001 and 7500 us");
        assert_eq!(stalls.over_1ms, 2, "1001 and 7500 us");
        assert_eq!(stalls.longest_us, 7_500.0);
        let held = (101 + 999 + 1_000 + 1_001 + 7_500) as f64 / 1e3;
        assert!((stalls.held_ms - held).abs() < 1e-9, "{}", stalls.held_ms);
    }

    #[test]
    fn each_core_spins_for_the_window_and_is_named() {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let window = Duration::from_millis(30);
        let started = Instant::now();
        let stalls = measure(When::After, &cores, window);
        assert!(started.elapsed() >= window);
        assert_eq!(stalls.pinned, !cores.is_empty());
        assert_eq!(stalls.cores.len(), cores.len().max(1));
        for (probe, core) in stalls.cores.iter().zip(&cores) {
            assert!(probe.core.is_none_or(|id| id == core.id));
            // Held up for longer than it ran is impossible.
            assert!(probe.held_ms <= started.elapsed().as_secs_f64() * 1e3);
            assert!(probe.over_1ms <= probe.over_100us);
        }
        let summary = stalls.summary();
        assert_eq!(
            summary.matches("over 1 ms").count(),
            stalls.cores.len(),
            "{summary}"
        );
        assert!(summary.contains(" after the scenarios: "), "{summary}");
    }
}
