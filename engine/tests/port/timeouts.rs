//! Timeouts: waits end on time, whatever the call.

use crate::common::errno;
use crate::common::ports::{record, unlimited};
use crate::common::threads::waiting;
use crate::common::timing::{LATE, PATIENCE};
use iocp::{Completion, DrainStatus, Drained, Port};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

fn assert_timed_wait(timeout: Duration, elapsed: Duration, what: &str) {
    assert!(
        elapsed >= timeout,
        "{what} {timeout:?} returned early, after {elapsed:?}"
    );
    assert!(
        elapsed < timeout + LATE,
        "{what} {timeout:?} returned late, after {elapsed:?}"
    );
}

const TIMEOUTS: [Duration; 3] = [
    Duration::from_millis(1),
    Duration::from_millis(10),
    Duration::from_millis(50),
];

#[test]
fn get_timeouts_are_never_early_nor_grossly_late() {
    let port = Port::new().unwrap();
    for timeout in TIMEOUTS {
        let start = Instant::now();
        let result = port.get(Some(timeout));
        let elapsed = start.elapsed();
        assert_eq!(errno(result), libc::ETIMEDOUT);
        assert_timed_wait(timeout, elapsed, "get");
    }
}

#[test]
fn get_many_timeouts_are_never_early_nor_grossly_late() {
    let port = Port::new().unwrap();
    let mut out = [Completion::default(); 4];
    for timeout in TIMEOUTS {
        let start = Instant::now();
        let drained = port.get_many(&mut out, 1, Some(timeout)).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(
            drained,
            Drained {
                count: 0,
                status: DrainStatus::TimedOut
            }
        );
        assert_timed_wait(timeout, elapsed, "get_many");
    }
}

#[test]
fn drain_timeouts_are_never_early_nor_grossly_late() {
    let port = Port::new().unwrap();
    for timeout in TIMEOUTS {
        let start = Instant::now();
        let result = port.drain(4, Some(timeout));
        let elapsed = start.elapsed();
        assert_eq!(errno(result), libc::ETIMEDOUT);
        assert_timed_wait(timeout, elapsed, "drain");
    }
}

#[test]
fn a_timeout_too_long_for_the_clock_waits_like_none() {
    let port = unlimited();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || port.get(Some(Duration::MAX))
    });
    assert!(
        matches!(
            rx.recv_timeout(Duration::from_millis(50)),
            Err(RecvTimeoutError::Timeout)
        ),
        "a wait without a usable deadline ended"
    );
    port.post(record(1)).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap().unwrap(), record(1));
    handle.join().unwrap();
}
