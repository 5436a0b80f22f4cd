//! Cancel versus complete, on the engine's `Delivery`: exactly one record delivered.

use crate::{assert_empty, model, port, POLL};
use iocp::{Cancel, Completion, Delivery, Port};
use loom::thread;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The record of the model's operation: its result, or `ECANCELED`.
fn op_record(errno: u32) -> Completion {
    let bytes = if errno == 0 { 512 } else { 0 };
    Completion::new(9, bytes, 0x9000).with_error(errno)
}

/// The operation's report: what its owner reads before the record comes (the aiocb's
/// status, the result kept for `finish`), 0 until made. Loom's atomic, so that the model
/// checks that a canceller told `Done` sees it.
struct Report(loom::sync::atomic::AtomicU32);

impl Report {
    fn new() -> Arc<Report> {
        Arc::new(Report(loom::sync::atomic::AtomicU32::new(0)))
    }

    /// Delivers `errno`'s completion as the file pool does: the report, then the record.
    fn deliver(&self, op: &Delivery, port: &Port, errno: u32) {
        op.deliver(
            // Relaxed: published by the release store of `Done` in `deliver`.
            || self.0.store(errno + 1, Ordering::Relaxed),
            |()| port.post(op_record(errno)).unwrap(),
        );
    }

    fn made(&self) -> bool {
        // Relaxed: ordered by the acquire of the claim that answered `Done`.
        self.0.load(Ordering::Relaxed) != 0
    }
}

/// Races the runner of a queued operation (a file-pool thread: [`Delivery::start`], then
/// the result) against `cancellers` cancellers ([`Delivery::cancel`], `ECANCELED` when it
/// wins), each delivering as the file pool does, and checks that exactly one record is
/// delivered, the one that the runner's and the cancellers' answers call for, and that a
/// canceller told `Done` sees the report.
fn cancel_race(cancellers: usize) {
    let port = port(2);
    let op = Arc::new(Delivery::new());
    let report = Report::new();
    let runner = {
        let (port, op, report) = (port.clone(), Arc::clone(&op), Arc::clone(&report));
        thread::spawn(move || {
            let ran = op.start();
            if ran {
                report.deliver(&op, &port, 0);
            }
            ran
        })
    };
    let cancel = |port: &Port, op: &Delivery, report: &Report| {
        let told = op.cancel();
        match told {
            Cancel::Cancelled => report.deliver(op, port, libc::ECANCELED as u32),
            Cancel::Done => assert!(report.made(), "told done before the report was made"),
            Cancel::Running => {}
        }
        told
    };
    let others: Vec<_> = (1..cancellers)
        .map(|_| {
            let (port, op, report) = (port.clone(), Arc::clone(&op), Arc::clone(&report));
            thread::spawn(move || cancel(&port, &op, &report))
        })
        .collect();
    let mut told = vec![cancel(&port, &op, &report)];
    told.extend(others.into_iter().map(|c| c.join().unwrap()));
    let ran = runner.join().unwrap();
    let won = told.iter().filter(|&&t| t == Cancel::Cancelled).count();
    assert_eq!(
        won + usize::from(ran),
        1,
        "runner ran: {ran}, cancellers told {told:?}"
    );
    let expected = if ran {
        op_record(0)
    } else {
        op_record(libc::ECANCELED as u32)
    };
    assert_eq!(port.get(POLL).expect("no record"), expected);
    assert_empty(&port);
}

#[test]
fn cancel_races_complete() {
    model("cancel_races_complete", 3, || cancel_race(1));
}

/// Two cancellers and the runner: still one record, and at most one canceller is told it
/// cancelled.
#[test]
fn two_cancels_race_complete() {
    model("two_cancels_race_complete", 3, || cancel_race(2));
}

/// A canceller that asks until it is told the operation is done (as a program calling
/// `aio_cancel` until `AIO_ALLDONE` would) sees the report, and the one record follows.
///
/// Regression: the canceller's claim read `DONE` with a relaxed failure ordering, so being
/// told "done" did not synchronize with the delivery: the canceller could then read the
/// aiocb's status and miss what the delivery had reported.
#[test]
fn cancel_told_done_sees_the_record() {
    model("cancel_told_done_sees_the_record", 3, || {
        let port = port(2);
        let op = Arc::new(Delivery::new());
        let report = Report::new();
        let runner = {
            let (port, op, report) = (port.clone(), Arc::clone(&op), Arc::clone(&report));
            thread::spawn(move || {
                if op.start() {
                    report.deliver(&op, &port, 0);
                }
            })
        };
        let mut cancelled = false;
        loop {
            match op.cancel() {
                Cancel::Cancelled => {
                    report.deliver(&op, &port, libc::ECANCELED as u32);
                    cancelled = true;
                }
                Cancel::Running => thread::yield_now(),
                Cancel::Done => break,
            }
        }
        assert!(report.made(), "told done before the report was made");
        runner.join().unwrap();
        let expected = if cancelled {
            op_record(libc::ECANCELED as u32)
        } else {
            op_record(0)
        };
        assert_eq!(port.get(POLL).unwrap(), expected);
        assert_empty(&port);
    });
}
