//! Integration tests of [`iocp::Port`]: posting, the dequeue calls and their argument
//! errors, the exclusive batched dequeue (`EBUSY`), LIFO wake order, close, capacity and
//! overflow, the concurrency value, timeouts, and the cost of an idle waiter.
//!
//! The tests live by concern in the modules below; this file holds what they share.
#![cfg(not(loom))]

mod batched;
mod capacity;
mod close;
#[path = "../common/mod.rs"]
mod common;
mod concurrency;
mod exclusive;
mod idle;
mod posting;
mod regressions;
mod timeouts;
mod waking;

use iocp::{Completion, DrainStatus, Drained, Port, GMCS_NMAX};
use std::io;
use std::time::Duration;

/// Takes every queued record with zero-timeout `get_many` calls.
pub(crate) fn take_all(port: &Port) -> Vec<Completion> {
    let mut out = vec![Completion::default(); GMCS_NMAX];
    let mut all = Vec::new();
    loop {
        let drained = port.get_many(&mut out, 0, Some(Duration::ZERO)).unwrap();
        if drained.count == 0 {
            return all;
        }
        all.extend_from_slice(&out[..drained.count]);
    }
}

/// What a batched dequeue returns when it took `count` records, at least its `min`.
pub(crate) fn complete(count: usize) -> Drained {
    Drained {
        count,
        status: DrainStatus::Complete,
    }
}

/// The calling thread's CPU time.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
