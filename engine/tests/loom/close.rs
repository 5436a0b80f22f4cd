//! Close while waiting: every blocked waiter woken with `EBADF`, also when a post races
//! the close.

use crate::{errno, model, port, record};
use iocp::Completion;
use loom::thread;

#[test]
fn close_wakes_blocked_get() {
    model("close_wakes_blocked_get", 3, || {
        let port = port(2);
        let waiter = {
            let port = port.clone();
            thread::spawn(move || port.get(None))
        };
        port.close().unwrap();
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(errno(&err), libc::EBADF, "{err}");
    });
}

#[test]
fn close_wakes_blocked_get_many() {
    model("close_wakes_blocked_get_many", 3, || {
        let port = port(2);
        let waiter = {
            let port = port.clone();
            thread::spawn(move || {
                let mut out = [Completion::default(); 2];
                port.get_many(&mut out, 1, None)
            })
        };
        port.close().unwrap();
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(errno(&err), libc::EBADF, "{err}");
    });
}

#[test]
fn close_races_post() {
    model("close_races_post", 3, || {
        let port = port(2);
        let waiter = {
            let port = port.clone();
            thread::spawn(move || port.get(None))
        };
        let producer = {
            let port = port.clone();
            thread::spawn(move || port.post(record(0, 0)))
        };
        port.close().unwrap();
        let posted = producer.join().unwrap();
        match waiter.join().unwrap() {
            Ok(got) => {
                assert!(posted.is_ok(), "received a record whose post failed");
                assert_eq!(got, record(0, 0));
            }
            Err(err) => assert_eq!(errno(&err), libc::EBADF, "{err}"),
        }
        if let Err(err) = posted {
            assert_eq!(errno(&err), libc::EBADF, "{err}");
        }
    });
}
