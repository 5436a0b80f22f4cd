//! LIFO wake: a post wakes the waiter that fell asleep last.

use crate::{assert_empty, model, port, record};
use iocp::Port;
use loom::thread;

/// Yields to the model's other threads until `n` waiters sleep on `port` (past their last
/// look for work: only a wake ends their wait now).
fn until_sleeping(port: &Port, n: usize) {
    while port.sleeping() < n {
        thread::yield_now();
    }
}

/// Two waiters asleep, the second to fall asleep on top: one post wakes that most recent
/// waiter, which takes the record, and a second post reaches the older one (no wake-up is
/// lost, none is spent on the wrong waiter). Each waiter reports through a channel, so a
/// wrong waiter shows as a failed assertion and a lost wake as a loom deadlock.
///
/// It does not cover a waiter still in its last look when the post lands: such a waiter
/// may take the record itself, by design (it never slept), so the model waits until
/// [`Port::sleeping`] counts each one (posts racing the waiters' sleep are
/// `two_blocking_gets_two_producers`).
#[test]
fn lifo_wake_most_recent_sleeper() {
    model("lifo_wake_most_recent_sleeper", 3, || {
        let port = port(2);
        let (tx, rx) = loom::sync::mpsc::channel();
        let waiter = |id: usize| {
            let (port, tx) = (port.clone(), tx.clone());
            thread::spawn(move || tx.send((id, port.get(None).unwrap())).unwrap())
        };
        let older = waiter(0);
        until_sleeping(&port, 1);
        let newer = waiter(1);
        until_sleeping(&port, 2);
        port.post(record(0, 0)).unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            (1, record(0, 0)),
            "the post did not wake the most recent sleeper"
        );
        port.post(record(0, 1)).unwrap();
        assert_eq!(rx.recv().unwrap(), (0, record(0, 1)));
        newer.join().unwrap();
        older.join().unwrap();
        assert_empty(&port);
    });
}
