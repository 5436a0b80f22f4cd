//! Capacity and overflow: the ring's size rules, and a full ring losing nothing.

use crate::common::errno;
use crate::common::ports::record;
use crate::take_all;
use iocp::{Completion, Port, MAX_CAPACITY};
use std::time::Duration;

#[test]
fn capacity_must_be_a_power_of_two_up_to_the_maximum() {
    for bad in [
        0,
        3,
        6,
        100,
        4095,
        MAX_CAPACITY + 1,
        MAX_CAPACITY * 2,
        usize::MAX,
    ] {
        let built = Port::builder().capacity(bad).build();
        assert_eq!(errno(built), libc::EINVAL, "capacity {bad}");
    }
    for good in [1, 2, 64, 4096, 1 << 16] {
        assert_eq!(
            Port::builder().capacity(good).build().unwrap().capacity(),
            good
        );
    }
    assert_eq!(Port::new().unwrap().capacity(), iocp::DEFAULT_CAPACITY);
}

#[test]
fn the_largest_capacity_is_accepted() {
    let port = Port::builder().capacity(MAX_CAPACITY).build().unwrap();
    assert_eq!(port.capacity(), MAX_CAPACITY);
    port.post(record(1)).unwrap();
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap(), record(1));
}

#[test]
fn a_full_ring_spills_into_the_overflow_and_loses_nothing() {
    let port = Port::builder().capacity(2).build().unwrap();
    for i in 0..10_000 {
        port.post(record(i)).unwrap();
    }
    assert_eq!(port.queued(), 10_000);
    assert_eq!(take_all(&port), (0..10_000).map(record).collect::<Vec<_>>());
    assert_eq!(port.queued(), 0);
}

#[test]
fn overflow_keeps_order_through_every_dequeue_call() {
    for capacity in [1, 2, 4] {
        let port = Port::builder().capacity(capacity).build().unwrap();
        let mut next_post = 0;
        let mut next_take = 0;
        let mut take = |got: Completion| {
            assert_eq!(got, record(next_take), "capacity {capacity}");
            next_take += 1;
        };
        for round in 0..200 {
            for _ in 0..(round % 13) + 1 {
                port.post(record(next_post)).unwrap();
                next_post += 1;
            }
            match round % 3 {
                0 => take(port.get(Some(Duration::ZERO)).unwrap()),
                1 => {
                    let mut out = [Completion::default(); 5];
                    let drained = port.get_many(&mut out, 1, Some(Duration::ZERO)).unwrap();
                    out[..drained.count].iter().copied().for_each(&mut take);
                }
                _ => port
                    .drain(7, Some(Duration::ZERO))
                    .unwrap()
                    .for_each(&mut take),
            }
        }
        take_all(&port).into_iter().for_each(&mut take);
        assert_eq!(next_take, next_post);
    }
}
