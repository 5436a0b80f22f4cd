//! Regression tests, named after the bug.

use crate::common::ports::record;
use crate::common::threads::waiting;
use crate::common::timing::{LONG, PATIENCE};
use crate::complete;
use crate::concurrency::released_thread;
use iocp::{Completion, Port};
use std::fmt::Debug;
use std::io;

/// Posts one record to `port` while `wait` (a batched dequeue started on another thread)
/// sleeps, and checks that the post, not the wait's [`LONG`] timeout, ended it.
fn assert_a_post_wakes<T: Debug + Send + 'static>(
    port: &Port,
    what: &str,
    wait: impl FnOnce(Port) -> io::Result<T> + Send + 'static,
) -> T {
    let (handle, rx) = waiting({
        let port = port.clone();
        move || wait(port)
    });
    port.post(record(9)).unwrap();
    // The wait's own timeout is twice as long: only the post can end it within this.
    let got = rx
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what} slept through the post for {PATIENCE:?}"));
    handle.join().unwrap();
    got.unwrap_or_else(|err| panic!("{what} failed: {err}"))
}

/// Guards 5a65621 ("wake exclusive waiters regardless of the concurrency value"): a post
/// skipped the wake whenever released `get` threads filled the concurrency value, although
/// a batched waiter (`get_many`, `drain`) ignores that value, so it slept to its timeout.
#[test]
fn regression_batched_waiter_slept_through_posts_when_concurrency_was_full() {
    let port = Port::builder().concurrency(1).build().unwrap();
    port.post(record(0)).unwrap();
    // Holds the only slot until told to go.
    let (released, go) = released_thread(&port, || {});

    let (drained, first) = assert_a_post_wakes(&port, "get_many", |port| {
        let mut out = [Completion::default(); 4];
        port.get_many(&mut out, 1, Some(LONG)).map(|d| (d, out[0]))
    });
    assert_eq!((drained, first), (complete(1), record(9)));

    let batch = assert_a_post_wakes(&port, "drain", |port| {
        port.drain(4, Some(LONG)).map(|b| b.collect::<Vec<_>>())
    });
    assert_eq!(batch, vec![record(9)]);

    go.send(()).unwrap();
    released.join().unwrap();
}
