//! The inline drive's leader/follower hand-over, with `Scripted` readiness in the
//! reactor's place.

use crate::{assert_empty, errno, model, port, record, spawn_producer, Tally, TIMED};
use iocp::{Port, Scripted};
use loom::thread;
use std::sync::Arc;

/// A port whose waiters take turns polling readiness that the model makes (the inline
/// drive, with [`Scripted`] in the reactor's place).
fn driven_port() -> (Port, Arc<Scripted>) {
    let port = port(2);
    let sockets = Arc::new(Scripted::new());
    sockets.drive(&port);
    (port, sockets)
}

/// The only waiter leads: it polls, blocked until readiness or a wake. A record posted
/// meanwhile by another thread reaches it (the poster sees no sleeper and interrupts the
/// blocked poll), or it sees the record in its last look before polling. A lost wakeup is
/// a loom deadlock.
#[test]
fn a_post_reaches_a_leader_blocked_polling() {
    model("a_post_reaches_a_leader_blocked_polling", 3, || {
        let (port, sockets) = driven_port();
        let producer = spawn_producer(&port, 0, 1);
        let mut tally = Tally::new(1);
        tally.see(&port.get(None).unwrap());
        producer.join().unwrap();
        tally.assert_all(&[1]);
        assert_eq!(sockets.collected(), 0);
        assert_empty(&port);
    });
}

/// Two waiters on an inline port, and readiness that only a poll collects: one socket
/// becomes ready, one waiter returns with its record, then a second socket becomes ready,
/// which only a poll of the waiter left behind can collect. So the lead must pass on when
/// the leader leaves with work (else the second record never comes: a loom deadlock), and
/// one thread polls at a time (`Scripted` asserts it).
#[test]
fn the_lead_passes_on_when_the_leader_leaves_with_work() {
    model(
        "the_lead_passes_on_when_the_leader_leaves_with_work",
        2,
        || {
            let (port, sockets) = driven_port();
            let (tx, rx) = loom::sync::mpsc::channel();
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let (port, tx) = (port.clone(), tx.clone());
                    thread::spawn(move || tx.send(port.get(None).unwrap()).unwrap())
                })
                .collect();
            let mut tally = Tally::new(1);
            sockets.become_ready(&port, record(0, 0));
            tally.see(&rx.recv().unwrap());
            sockets.become_ready(&port, record(0, 1));
            tally.see(&rx.recv().unwrap());
            for waiter in waiters {
                waiter.join().unwrap();
            }
            tally.assert_all(&[2]);
            assert_empty(&port);
        },
    );
}

/// A timed waiter and an endless one on an inline port. Loom has no clock, so the timed
/// wait ends at once whether it leads (its poll's deadline has come) or sleeps; when it
/// leaves the lead, the endless waiter must take it over, or the readiness that comes
/// afterwards is never collected (a loom deadlock).
#[test]
fn a_leader_that_times_out_does_not_strand_the_others() {
    model(
        "a_leader_that_times_out_does_not_strand_the_others",
        3,
        || {
            let (port, sockets) = driven_port();
            let endless = {
                let port = port.clone();
                thread::spawn(move || port.get(None).unwrap())
            };
            let err = port.get(TIMED).unwrap_err();
            assert_eq!(errno(&err), libc::ETIMEDOUT, "{err}");
            sockets.become_ready(&port, record(0, 0));
            assert_eq!(endless.join().unwrap(), record(0, 0));
            assert_eq!(sockets.collected(), 1);
            assert_empty(&port);
        },
    );
}

/// A waiter that went to sleep before the port had readiness to poll (the reactor is
/// created with the first socket request that waits) is woken to lead once it has, and
/// collects the readiness that comes.
#[test]
fn a_waiter_asleep_before_the_reactor_exists_comes_to_lead() {
    model(
        "a_waiter_asleep_before_the_reactor_exists_comes_to_lead",
        3,
        || {
            let port = port(2);
            let waiter = {
                let port = port.clone();
                thread::spawn(move || port.get(None).unwrap())
            };
            let sockets = Arc::new(Scripted::new());
            sockets.drive(&port);
            sockets.become_ready(&port, record(0, 0));
            assert_eq!(waiter.join().unwrap(), record(0, 0));
            assert_empty(&port);
        },
    );
}
