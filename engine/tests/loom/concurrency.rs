//! The concurrency value: a second thread is released only once the first comes back.

use crate::{assert_empty, errno, model, port, record, POLL};
use iocp::Port;
use loom::thread;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A port that releases at most one thread at once.
fn port_concurrency_1() -> Port {
    Port::builder().capacity(2).concurrency(1).build().unwrap()
}

/// Concurrency 1. A thread takes record 0 with `get` (it is released: it runs), says so,
/// and calls `get` on the port again. The main thread posts record 1 and calls `get`: it
/// must not be released while the other thread runs, and must be released (no lost
/// wake-up: a loom deadlock) once that thread is back in `get`, unless the returning
/// thread takes record 1 itself. Then that thread posts record 2 for the main thread, and
/// counts itself out with a `get` on an unlimited port (not by exiting: see the module
/// docs); the main thread is released once it has. Each record reaches one thread once.
///
/// The thread's exit as a way out is left to the std test
/// `the_concurrency_value_holds_a_get_back_until_the_released_thread_exits`.
#[test]
fn concurrency_1_releases_a_second_thread_when_the_first_comes_back() {
    model(
        "concurrency_1_releases_a_second_thread_when_the_first_comes_back",
        3,
        || {
            let elsewhere = port(2);
            let port = port_concurrency_1();
            let running = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let (tx, rx) = loom::sync::mpsc::channel();
            port.post(record(0, 0)).unwrap();
            let first = {
                let (port, running) = (port.clone(), Arc::clone(&running));
                thread::spawn(move || {
                    assert_eq!(port.get(None).unwrap(), record(0, 0));
                    // SeqCst (all stores): read by the main thread once it is released.
                    running.store(true, Ordering::SeqCst);
                    tx.send(()).unwrap();
                    running.store(false, Ordering::SeqCst);
                    match port.get(None) {
                        Ok(got) => {
                            running.store(true, Ordering::SeqCst);
                            assert_eq!(got, record(0, 1));
                            // The main thread still waits: give it a record, and go.
                            port.post(record(0, 2)).unwrap();
                            running.store(false, Ordering::SeqCst);
                            let err = elsewhere.get(POLL).unwrap_err();
                            assert_eq!(errno(&err), libc::ETIMEDOUT, "{err}");
                            true
                        }
                        Err(err) => {
                            assert_eq!(errno(&err), libc::EBADF, "{err}");
                            false
                        }
                    }
                })
            };
            rx.recv().unwrap();
            port.post(record(0, 1)).unwrap();
            let got = port.get(None).unwrap();
            // SeqCst: see the stores.
            assert!(
                !running.load(Ordering::SeqCst),
                "released while the first thread ran"
            );
            // Ends the first thread's second `get` if it still waits.
            port.close().unwrap();
            let took_1 = first.join().unwrap();
            let expected = if took_1 { record(0, 2) } else { record(0, 1) };
            assert_eq!(got, expected);
        },
    );
}

/// Concurrency 1 on port `a`, none on port `b`. A thread takes record 0 from `a`, says so,
/// and waits on `b`. The main thread posts record 1 to `a` and calls `get` on it: the
/// other thread's `get` on `b` counts it out of `a` (the thread-local `Released` entry
/// holds `a` weakly and `b`'s `get` reaches it), so the main thread is released.
///
/// Regression: `come_back` returned at once on a port without a limit, so a thread that
/// moved on to such a port kept its old port's place for as long as it waited there; here
/// the main thread was never released (a loom deadlock).
#[test]
fn a_get_on_an_unlimited_port_counts_the_thread_out() {
    model(
        "a_get_on_an_unlimited_port_counts_the_thread_out",
        3,
        || {
            let a = port_concurrency_1();
            let b = port(2);
            let (tx, rx) = loom::sync::mpsc::channel();
            a.post(record(0, 0)).unwrap();
            let moves_on = {
                let (a, b) = (a.clone(), b.clone());
                thread::spawn(move || {
                    assert_eq!(a.get(None).unwrap(), record(0, 0));
                    tx.send(()).unwrap();
                    b.get(None).unwrap()
                })
            };
            rx.recv().unwrap();
            a.post(record(0, 1)).unwrap();
            assert_eq!(a.get(None).unwrap(), record(0, 1));
            b.post(record(1, 0)).unwrap();
            assert_eq!(moves_on.join().unwrap(), record(1, 0));
            assert_empty(&a);
            assert_empty(&b);
        },
    );
}
