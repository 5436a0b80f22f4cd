//! The EBUSY rule: a batched dequeue and a `get` exclude each other, and a `get` never
//! takes a record while a batched dequeue holds the port.

use crate::{errno, model, port, record, POLL};
use iocp::Completion;
use loom::thread;

/// A batched dequeue waiting for one record and a `get` poll: the poll is refused
/// (`EBUSY`) while the batched dequeue runs and otherwise finds nothing; a poll is not a
/// waiter, so the batched dequeue is never refused on its account and ends with the close.
#[test]
fn ebusy_rule() {
    model("ebusy_rule", 3, || {
        let port = port(2);
        let batched = {
            let port = port.clone();
            thread::spawn(move || {
                let mut out = [Completion::default(); 1];
                port.get_many(&mut out, 1, None)
            })
        };
        let polled = errno(&port.get(POLL).unwrap_err());
        assert!(
            polled == libc::EBUSY || polled == libc::ETIMEDOUT,
            "get: {polled}"
        );
        port.close().unwrap();
        let batched = errno(&batched.join().unwrap().unwrap_err());
        assert_eq!(batched, libc::EBADF, "get_many");
    });
}

/// A batched dequeue and a blocking `get`: whichever comes second is refused with `EBUSY`
/// (never both), the other one waits until the close ends it with `EBADF`.
#[test]
fn ebusy_rule_blocking_get() {
    model("ebusy_rule_blocking_get", 3, || {
        let port = port(2);
        let batched = {
            let port = port.clone();
            thread::spawn(move || {
                let mut out = [Completion::default(); 1];
                port.get_many(&mut out, 1, None)
            })
        };
        let single = {
            let port = port.clone();
            thread::spawn(move || port.get(None))
        };
        port.close().unwrap();
        let batched = errno(&batched.join().unwrap().unwrap_err());
        let single = errno(&single.join().unwrap().unwrap_err());
        for errno in [batched, single] {
            assert!(errno == libc::EBUSY || errno == libc::EBADF, "{errno}");
        }
        assert!(
            !(batched == libc::EBUSY && single == libc::EBUSY),
            "both refused"
        );
    });
}

/// The EBUSY rule with a record: once another thread has seen the batched dequeue hold the
/// port (its own `get` was refused) and then posts, a `get` in a third thread must not
/// take that record while the batched dequeue still runs.
#[test]
fn ebusy_rule_no_get_slips_in() {
    model("ebusy_rule_no_get_slips_in", 3, || {
        let port = port(2);
        let batched = {
            let port = port.clone();
            thread::spawn(move || {
                let mut out = [Completion::default(); 1];
                port.get_many(&mut out, 1, None).map(|d| (d.count, out[0]))
            })
        };
        let other = {
            let port = port.clone();
            thread::spawn(move || port.get(POLL))
        };
        let held = port.get(POLL).is_err_and(|err| errno(&err) == libc::EBUSY);
        port.post(record(0, 0)).unwrap();
        let other = other.join().unwrap();
        if let Err(err) = &other {
            let errno = errno(err);
            assert!(errno == libc::EBUSY || errno == libc::ETIMEDOUT, "{err}");
        }
        // With the only record taken by `other`, the batched dequeue can only end by the
        // close below: it held the port all along, from before the post.
        assert!(
            !(held && other.is_ok()),
            "get took {other:?} while the batched dequeue held the port"
        );
        port.close().unwrap();
        match batched.join().unwrap() {
            Ok((count, got)) => {
                assert_eq!((count, got), (1, record(0, 0)));
                assert!(other.is_err(), "record delivered twice");
            }
            // Only polls ran beside it, and a poll is not a waiter: never refused.
            Err(err) => assert_eq!(errno(&err), libc::EBADF, "{err}"),
        }
    });
}
