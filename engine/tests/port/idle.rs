//! Idle cost: a waiter asleep on a port uses under one percent of a core.

use crate::common::errno;
use crate::thread_cpu_time;
use iocp::Port;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn an_idle_waiter_uses_under_one_percent_of_a_core() {
    let port = Port::new().unwrap();
    let (wall, cpu, result) = thread::spawn(move || {
        let start = Instant::now();
        let cpu_before = thread_cpu_time();
        let result = port.get(Some(Duration::from_secs(1)));
        let cpu = thread_cpu_time() - cpu_before;
        (start.elapsed(), cpu, result)
    })
    .join()
    .unwrap();
    assert_eq!(errno(result), libc::ETIMEDOUT);
    assert!(wall >= Duration::from_secs(1));
    assert!(
        cpu < Duration::from_millis(10),
        "an idle 1 s wait used {cpu:?} of CPU"
    );
}
