//! Absolute CLOCK_MONOTONIC deadlines.

use std::time::Duration;

/// A point on the CLOCK_MONOTONIC clock: waits are given an absolute deadline so that a
/// wait restarted after a spurious wake or a signal ends at the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline(Duration);

impl Deadline {
    /// The current instant.
    pub(crate) fn now() -> Deadline {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists, so the
        // call cannot fail (checked in debug builds).
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        debug_assert_eq!(rc, 0);
        Deadline(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    /// `timeout` from now; `None` (no deadline) when it does not fit the clock.
    pub(crate) fn after(timeout: Duration) -> Option<Deadline> {
        Deadline::now().0.checked_add(timeout).map(Deadline)
    }

    /// `duration` after this instant (saturating at the clock's end).
    pub(crate) fn plus(self, duration: Duration) -> Deadline {
        Deadline(self.0.saturating_add(duration))
    }

    /// Time left until the deadline, zero once it has passed.
    #[cfg_attr(
        any(loom, all(target_os = "linux", not(iocp_force_fallback))),
        allow(dead_code)
    )]
    pub(crate) fn remaining(self) -> Duration {
        self.0.saturating_sub(Deadline::now().0)
    }

    /// Time from `earlier` to this instant, zero if `earlier` is later.
    pub(crate) fn since(self, earlier: Deadline) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// Nanoseconds since the clock's start, saturated to `u64`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn as_nanos(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the deadline has passed.
    pub(crate) fn has_passed(self) -> bool {
        Deadline::now() >= self
    }

    /// The deadline as a `timespec` on CLOCK_MONOTONIC, saturated to what `time_t` holds.
    #[cfg_attr(
        any(not(target_os = "linux"), loom, iocp_force_fallback),
        allow(dead_code)
    )]
    pub(crate) fn as_timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: libc::time_t::try_from(self.0.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: self.0.subsec_nanos() as _,
        }
    }
}
