//! The concurrency value: how many threads a port releases at once, and when a released
//! thread counts out.

use crate::common::errno;
use crate::common::ports::{record, unlimited};
use crate::common::timing::{LATE, LONG, PATIENCE, SETTLE};
use crate::complete;
use iocp::{Completion, Port};
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// A thread that takes one record from `port` and stays released until told to go on,
/// then does `then` (a thread that returns from `then` exits, which also counts it out).
pub(crate) fn released_thread(
    port: &Port,
    then: impl FnOnce() + Send + 'static,
) -> (thread::JoinHandle<()>, mpsc::Sender<()>) {
    let (got_tx, got_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let port = port.clone();
    let handle = thread::spawn(move || {
        got_tx.send(port.get(Some(PATIENCE))).unwrap();
        let _ = go_rx.recv();
        then();
    });
    let got = got_rx.recv_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(got, record(0));
    (handle, go_tx)
}

/// Starts a thread whose first `get` must time out although records are queued (the
/// concurrency value is reached) and whose second waits for its release.
fn held_back_thread(port: &Port) -> mpsc::Receiver<(io::Result<Completion>, Instant)> {
    let (tx, rx) = mpsc::channel();
    let port = port.clone();
    thread::spawn(move || {
        let start = Instant::now();
        let first = port.get(Some(Duration::from_millis(100)));
        let waited = start.elapsed();
        tx.send((first, Instant::now())).unwrap();
        assert!(waited >= Duration::from_millis(100));
        let second = port.get(Some(LONG));
        tx.send((second, Instant::now())).unwrap();
    });
    let (first, _) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(errno(first), libc::ETIMEDOUT);
    // Still held back: its second `get` has not returned.
    thread::sleep(SETTLE);
    assert_eq!(rx.try_recv().err(), Some(mpsc::TryRecvError::Empty));
    rx
}

#[test]
fn the_concurrency_value_holds_a_get_back_until_the_released_thread_exits() {
    let port = Port::builder().concurrency(1).build().unwrap();
    for i in 0..3 {
        port.post(record(i)).unwrap();
    }
    let (a, go) = released_thread(&port, || {});
    let b = held_back_thread(&port);
    let released = Instant::now();
    go.send(()).unwrap();
    a.join().unwrap();
    let (got, returned) = b.recv_timeout(PATIENCE).unwrap();
    assert_eq!(got.unwrap(), record(1));
    assert!(
        returned - released < LATE,
        "released {:?} late",
        returned - released
    );
    assert_eq!(port.queued(), 1);
}

#[test]
fn the_concurrency_value_releases_a_get_when_the_released_thread_calls_get_again() {
    let port = Port::builder().concurrency(1).build().unwrap();
    for i in 0..3 {
        port.post(record(i)).unwrap();
    }
    // A `get` on any port counts the released thread out; on an empty one it stays out.
    let other = Port::new().unwrap();
    let (a_done_tx, a_done_rx) = mpsc::channel();
    let (a, go) = released_thread(&port, move || {
        assert_eq!(errno(other.get(Some(Duration::ZERO))), libc::ETIMEDOUT);
        a_done_tx.send(()).unwrap();
        // Stays alive, so only the `get` can have released the other thread.
        thread::sleep(Duration::from_millis(300));
    });
    let b = held_back_thread(&port);
    let released = Instant::now();
    go.send(()).unwrap();
    a_done_rx.recv_timeout(PATIENCE).unwrap();
    let (got, returned) = b.recv_timeout(PATIENCE).unwrap();
    assert_eq!(got.unwrap(), record(1));
    assert!(
        returned - released < LATE,
        "released {:?} late",
        returned - released
    );
    a.join().unwrap();
}

#[test]
fn batched_dequeues_ignore_the_concurrency_value() {
    let port = Port::builder().concurrency(1).build().unwrap();
    for i in 0..5 {
        port.post(record(i)).unwrap();
    }
    let (a, go) = released_thread(&port, || {});
    // This thread is not released, but the limit is reached: `get` is held back...
    assert_eq!(
        errno(port.get(Some(Duration::from_millis(20)))),
        libc::ETIMEDOUT
    );
    // ...while the batched dequeues are not.
    let mut out = [Completion::default(); 2];
    assert_eq!(
        port.get_many(&mut out, 2, Some(Duration::ZERO)).unwrap(),
        complete(2)
    );
    assert_eq!(out, [record(1), record(2)]);
    assert_eq!(
        port.drain(8, Some(Duration::ZERO))
            .unwrap()
            .collect::<Vec<_>>(),
        vec![record(3), record(4)]
    );
    go.send(()).unwrap();
    a.join().unwrap();
}

#[test]
fn an_unlimited_port_releases_any_number_of_threads() {
    let port = unlimited();
    for i in 0..8 {
        port.post(record(i)).unwrap();
    }
    // Eight threads each hold a released record at once.
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (port, barrier) = (port.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                let got = port.get(Some(PATIENCE));
                barrier.wait();
                got
            })
        })
        .collect();
    let mut keys: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap().key())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..8).collect::<Vec<_>>());
}
