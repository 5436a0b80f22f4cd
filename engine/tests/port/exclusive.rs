//! The exclusive batched dequeue: every other dequeue fails `EBUSY` meanwhile.

use crate::common::errno;
use crate::common::ports::{record, unlimited};
use crate::common::threads::waiting;
use crate::common::timing::{LONG, PATIENCE};
use crate::{complete, take_all};
use iocp::{Completion, Port};
use std::mem::MaybeUninit;
use std::thread;
use std::time::Duration;

fn assert_batched_dequeues_busy(port: &Port) {
    let mut out = [Completion::default(); 4];
    let mut uninit = [MaybeUninit::<Completion>::uninit(); 4];
    assert_eq!(errno(port.get_many(&mut out, 0, None)), libc::EBUSY);
    assert_eq!(
        errno(port.get_many(&mut out, 1, Some(Duration::from_millis(10)))),
        libc::EBUSY
    );
    assert_eq!(errno(port.fill(&mut uninit, 0, None, |r| *r)), libc::EBUSY);
    assert_eq!(errno(port.drain(4, Some(Duration::ZERO))), libc::EBUSY);
}

#[test]
fn while_get_many_waits_every_other_dequeue_fails_ebusy() {
    let port = unlimited();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || {
            let mut out = [Completion::default(); 4];
            port.get_many(&mut out, 2, Some(LONG)).map(|d| (d, out))
        }
    });
    assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::EBUSY);
    assert_eq!(
        errno(port.get(Some(Duration::from_millis(10)))),
        libc::EBUSY
    );
    assert_batched_dequeues_busy(&port);

    // Posting is never refused, and the waiter takes what is posted.
    port.post(record(1)).unwrap();
    port.post(record(2)).unwrap();
    let (drained, out) = rx.recv_timeout(PATIENCE).unwrap().unwrap();
    handle.join().unwrap();
    assert_eq!(drained, complete(2));
    assert_eq!(out[..2], [record(1), record(2)]);
    // The exclusive dequeue ended with the call.
    assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::ETIMEDOUT);
}

#[test]
fn while_get_waits_batched_dequeues_fail_ebusy() {
    let port = unlimited();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || port.get(Some(LONG))
    });
    assert_batched_dequeues_busy(&port);
    port.post(record(7)).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap().unwrap(), record(7));
    handle.join().unwrap();
    let mut out = [Completion::default(); 4];
    assert_eq!(port.get_many(&mut out, 0, None).unwrap(), complete(0));
}

#[test]
fn while_a_batch_is_alive_every_other_dequeue_fails_ebusy() {
    let port = Port::new().unwrap();
    for i in 0..4 {
        port.post(record(i)).unwrap();
    }
    let mut batch = port.drain(2, None).unwrap();
    assert_eq!(batch.next(), Some(record(0)));
    assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::EBUSY);
    assert_batched_dequeues_busy(&port);
    // The same from another thread, which cannot have any claim on the batch.
    thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::EBUSY);
            assert_batched_dequeues_busy(&port);
        });
    });
    port.post(record(4)).unwrap();
    drop(batch);
    assert_eq!(take_all(&port), (1..5).map(record).collect::<Vec<_>>());
}
