//! Close: every waiter woken with `EBADF`, every later call failing with it.

use crate::common::errno;
use crate::common::ports::{record, unlimited};
use crate::common::threads::waiting;
use crate::common::timing::{LATE, LONG, PATIENCE, SETTLE};
use iocp::{Completion, Port};
use std::fmt::Debug;
use std::io;
use std::mem::MaybeUninit;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

fn assert_woken_with_ebadf<T: Debug>(
    rx: &mpsc::Receiver<(io::Result<T>, Instant)>,
    closed: Instant,
) {
    let (result, returned) = rx.recv_timeout(PATIENCE).expect("a waiter stayed asleep");
    assert_eq!(errno(result), libc::EBADF);
    assert!(
        returned.saturating_duration_since(closed) < LATE,
        "woke {:?} after close",
        returned.saturating_duration_since(closed)
    );
}

#[test]
fn close_wakes_every_waiting_get_with_ebadf() {
    let port = unlimited();
    let (tx, rx) = mpsc::channel();
    let barrier = Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (port, tx, barrier) = (port.clone(), tx.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let got = port.get(Some(LONG));
                tx.send((got, Instant::now())).unwrap();
            })
        })
        .collect();
    barrier.wait();
    thread::sleep(SETTLE);
    let closed = Instant::now();
    port.close().unwrap();
    for _ in 0..4 {
        assert_woken_with_ebadf(&rx, closed);
    }
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn close_wakes_a_waiting_get_many_with_ebadf() {
    let port = Port::new().unwrap();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || {
            let mut out = [Completion::default(); 4];
            (port.get_many(&mut out, 1, Some(LONG)), Instant::now())
        }
    });
    let closed = Instant::now();
    port.close().unwrap();
    assert_woken_with_ebadf(&rx, closed);
    handle.join().unwrap();
}

#[test]
fn close_wakes_a_waiting_drain_with_ebadf() {
    let port = Port::new().unwrap();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || (port.drain(4, Some(LONG)).map(|b| b.len()), Instant::now())
    });
    let closed = Instant::now();
    port.close().unwrap();
    assert_woken_with_ebadf(&rx, closed);
    handle.join().unwrap();
}

#[test]
fn every_call_after_close_fails_ebadf() {
    let port = Port::new().unwrap();
    port.post(record(1)).unwrap();
    assert!(!port.is_closed());
    port.close().unwrap();
    assert!(port.is_closed());
    assert_eq!(errno(port.close()), libc::EBADF);
    assert_eq!(errno(port.clone().close()), libc::EBADF);
    assert_eq!(errno(port.post(record(2))), libc::EBADF);
    // Queued records are discarded, and an infinite wait does not wait.
    assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::EBADF);
    assert_eq!(errno(port.get(None)), libc::EBADF);
    let mut out = [Completion::default(); 4];
    assert_eq!(errno(port.get_many(&mut out, 1, None)), libc::EBADF);
    assert_eq!(errno(port.get_many(&mut out, 0, None)), libc::EBADF);
    let mut uninit = [MaybeUninit::<Completion>::uninit(); 4];
    assert_eq!(errno(port.fill(&mut uninit, 1, None, |r| *r)), libc::EBADF);
    assert_eq!(errno(port.drain(4, None)), libc::EBADF);
}
