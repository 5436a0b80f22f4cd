//! Waking: waiters wake last-in first-out, and a post ends a long wait promptly.

use crate::common::ports::{record, unlimited};
use crate::common::threads::waiting;
use crate::common::timing::{LATE, LONG, PATIENCE, SETTLE};
use crate::complete;
use iocp::{Completion, Port};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn parked_get_waiters_wake_last_in_first_out() {
    let port = unlimited();
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for id in 0..3u64 {
        let port = port.clone();
        let tx = tx.clone();
        let barrier = Arc::new(Barrier::new(2));
        let started = Arc::clone(&barrier);
        threads.push(thread::spawn(move || {
            started.wait();
            let got = port.get(Some(LONG)).map(|r| r.key());
            tx.send((id, got)).unwrap();
        }));
        barrier.wait();
        thread::sleep(SETTLE);
    }
    for key in 0..3u64 {
        port.post(Completion::new(key, 0, 0)).unwrap();
        let (id, got) = rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!(got.unwrap(), key);
        assert_eq!(
            id,
            2 - key,
            "record {key} went to waiter {id}, not the latest"
        );
        thread::sleep(Duration::from_millis(20));
    }
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_post_ends_a_long_get_promptly() {
    let port = unlimited();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || {
            let got = port.get(Some(LONG));
            (got, Instant::now())
        }
    });
    let posted = Instant::now();
    port.post(record(3)).unwrap();
    let (got, returned) = rx.recv_timeout(PATIENCE).unwrap();
    handle.join().unwrap();
    assert_eq!(got.unwrap(), record(3));
    assert!(
        returned - posted < LATE,
        "woke {:?} after the post",
        returned - posted
    );
}

#[test]
fn a_post_ends_a_long_get_many_promptly() {
    let port = Port::new().unwrap();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || {
            let mut out = [Completion::default(); 4];
            let got = port.get_many(&mut out, 1, Some(LONG)).map(|d| (d, out[0]));
            (got, Instant::now())
        }
    });
    let posted = Instant::now();
    port.post(record(3)).unwrap();
    let (got, returned) = rx.recv_timeout(PATIENCE).unwrap();
    handle.join().unwrap();
    assert_eq!(got.unwrap(), (complete(1), record(3)));
    assert!(
        returned - posted < LATE,
        "woke {:?} after the post",
        returned - posted
    );
}

#[test]
fn a_post_ends_a_long_drain_promptly() {
    let port = Port::new().unwrap();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || {
            let got = port.drain(4, Some(LONG)).map(|b| b.collect::<Vec<_>>());
            (got, Instant::now())
        }
    });
    let posted = Instant::now();
    port.post(record(3)).unwrap();
    let (got, returned) = rx.recv_timeout(PATIENCE).unwrap();
    handle.join().unwrap();
    assert_eq!(got.unwrap(), vec![record(3)]);
    assert!(
        returned - posted < LATE,
        "woke {:?} after the post",
        returned - posted
    );
}
