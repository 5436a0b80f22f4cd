//! Ring publish/consume and the overflow hand-over: records posted concurrently, into a ring
//! with room and into a full one, delivered exactly once, in per-producer order, never torn.

use crate::{assert_empty, drain_polling, get_polling, model, port, spawn_producer, Tally};

/// Two producers post `counts` records into a ring of `capacity` while the main thread
/// polls them out with `get_many` (or `get`) until all are seen.
fn produce_and_poll(capacity: usize, counts: [u32; 2], with_get: bool) {
    let port = port(capacity);
    let producers: Vec<_> = (0..2)
        .map(|p| spawn_producer(&port, p, counts[p]))
        .collect();
    let mut tally = Tally::new(2);
    let total = counts.iter().sum::<u32>() as usize;
    if with_get {
        get_polling(&port, &mut tally, total);
    } else {
        drain_polling(&port, &mut tally, total);
    }
    for producer in producers {
        producer.join().unwrap();
    }
    tally.assert_all(&counts);
    assert_empty(&port);
}

#[test]
fn ring_publish_consume_capacity_2() {
    model("ring_publish_consume_capacity_2", 2, || {
        produce_and_poll(2, [1, 1], false);
    });
}

#[test]
fn ring_publish_consume_capacity_4() {
    model("ring_publish_consume_capacity_4", 2, || {
        produce_and_poll(4, [2, 2], false);
    });
}

#[test]
fn ring_publish_consume_with_get() {
    model("ring_publish_consume_with_get", 2, || {
        produce_and_poll(4, [2, 1], true);
    });
}

#[test]
fn overflow_capacity_1() {
    model("overflow_capacity_1", 2, || {
        produce_and_poll(1, [2, 1], false);
    });
}

#[test]
fn overflow_capacity_2() {
    model("overflow_capacity_2", 2, || {
        produce_and_poll(2, [2, 2], false);
    });
}

#[test]
fn overflow_capacity_1_with_get() {
    model("overflow_capacity_1_with_get", 2, || {
        produce_and_poll(1, [2, 1], true);
    });
}
