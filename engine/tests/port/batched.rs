//! The batched dequeues' arguments, `min` and timeouts, `fill` and `drain`.

use crate::common::errno;
use crate::common::ports::record;
use crate::common::timing::{LATE, PATIENCE};
use crate::{complete, take_all};
use iocp::{Completion, DrainStatus, Drained, Port, GMCS_NMAX};
use std::mem::MaybeUninit;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn batched_dequeues_reject_out_of_range_counts_with_einval() {
    let port = Port::new().unwrap();
    port.post(record(1)).unwrap();
    let mut big = vec![Completion::default(); GMCS_NMAX + 1];
    let mut small = [Completion::default(); 4];
    assert_eq!(errno(port.get_many(&mut [], 0, None)), libc::EINVAL);
    assert_eq!(errno(port.get_many(&mut big, 1, None)), libc::EINVAL);
    assert_eq!(errno(port.get_many(&mut small, 5, None)), libc::EINVAL);

    let mut none: [MaybeUninit<Completion>; 0] = [];
    let mut big_uninit = vec![MaybeUninit::<Completion>::uninit(); GMCS_NMAX + 1];
    let mut small_uninit = [MaybeUninit::<Completion>::uninit(); 4];
    assert_eq!(errno(port.fill(&mut none, 0, None, |r| *r)), libc::EINVAL);
    assert_eq!(
        errno(port.fill(&mut big_uninit, 1, None, |r| *r)),
        libc::EINVAL
    );
    assert_eq!(
        errno(port.fill(&mut small_uninit, 5, None, |r| *r)),
        libc::EINVAL
    );

    assert_eq!(errno(port.drain(0, None)), libc::EINVAL);
    assert_eq!(errno(port.drain(GMCS_NMAX + 1, None)), libc::EINVAL);

    // None of the refusals took the record, and the limit itself is accepted.
    assert_eq!(port.queued(), 1);
    big.truncate(GMCS_NMAX);
    assert_eq!(
        port.get_many(&mut big, GMCS_NMAX, Some(Duration::ZERO))
            .unwrap()
            .count,
        1
    );
    assert_eq!(big[0], record(1));
}

#[test]
fn get_many_with_min_zero_polls_and_ignores_the_timeout() {
    let port = Port::new().unwrap();
    let mut out = [Completion::default(); 8];
    let start = Instant::now();
    assert_eq!(
        port.get_many(&mut out, 0, Some(Duration::from_secs(5)))
            .unwrap(),
        complete(0)
    );
    assert_eq!(port.get_many(&mut out, 0, None).unwrap(), complete(0));
    assert!(
        start.elapsed() < LATE,
        "a poll waited {:?}",
        start.elapsed()
    );

    for i in 0..3 {
        port.post(record(i)).unwrap();
    }
    assert_eq!(port.get_many(&mut out, 0, None).unwrap(), complete(3));
    assert_eq!(out[..3], [record(0), record(1), record(2)]);
}

#[test]
fn get_many_returns_fewer_than_min_with_timed_out_status_when_the_timeout_passes() {
    let port = Port::new().unwrap();
    port.post(record(1)).unwrap();
    port.post(record(2)).unwrap();
    let mut out = [Completion::default(); 8];
    let start = Instant::now();
    let drained = port
        .get_many(&mut out, 5, Some(Duration::from_millis(50)))
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        drained,
        Drained {
            count: 2,
            status: DrainStatus::TimedOut
        }
    );
    assert_eq!(out[..2], [record(1), record(2)]);
    assert_eq!(port.queued(), 0);

    let mut slots = [MaybeUninit::<u32>::uninit(); 8];
    let drained = port
        .fill(
            &mut slots,
            1,
            Some(Duration::from_millis(10)),
            Completion::bytes,
        )
        .unwrap();
    assert_eq!(
        drained,
        Drained {
            count: 0,
            status: DrainStatus::TimedOut
        }
    );
}

#[test]
fn get_many_waits_until_min_records_have_come() {
    let port = Port::new().unwrap();
    let producer = {
        let port = port.clone();
        thread::spawn(move || {
            for i in 0..5 {
                thread::sleep(Duration::from_millis(10));
                port.post(record(i)).unwrap();
            }
        })
    };
    let mut out = [Completion::default(); 8];
    // The records trickle in one by one; a single call must collect all five.
    let drained = port.get_many(&mut out, 5, Some(PATIENCE)).unwrap();
    producer.join().unwrap();
    assert_eq!(drained, complete(5));
    assert_eq!(out[..5], (0..5).map(record).collect::<Vec<_>>());
}

#[test]
fn fill_writes_mapped_records_into_uninitialized_memory() {
    let port = Port::new().unwrap();
    for i in 0..5 {
        port.post(record(i).with_error(i as u32)).unwrap();
    }
    let mut out = [MaybeUninit::<(u64, u32, u32)>::uninit(); 16];
    let drained = port
        .fill(&mut out, 1, None, |r| (r.key(), r.bytes() * 10, r.error()))
        .unwrap();
    assert_eq!(drained, complete(5));
    for (i, slot) in out[..5].iter().enumerate() {
        // SAFETY: `fill` initialized the first `count` entries.
        let entry = unsafe { slot.assume_init() };
        assert_eq!(entry, (i as u64, i as u32 * 10, i as u32));
    }
}

#[test]
fn drain_is_an_exact_size_iterator_of_the_ready_records() {
    let port = Port::new().unwrap();
    for i in 0..5 {
        port.post(record(i)).unwrap();
    }
    let mut batch = port.drain(64, None).unwrap();
    assert_eq!(batch.len(), 5);
    assert_eq!(batch.size_hint(), (5, Some(5)));
    assert_eq!(batch.next(), Some(record(0)));
    assert_eq!(batch.len(), 4);
    assert_eq!(
        batch.by_ref().collect::<Vec<_>>(),
        (1..5).map(record).collect::<Vec<_>>()
    );
    assert_eq!(batch.len(), 0);
    assert_eq!(batch.next(), None);
    drop(batch);
    assert_eq!(port.queued(), 0);
}

#[test]
fn drain_returns_at_most_max_records() {
    let port = Port::new().unwrap();
    for i in 0..10 {
        port.post(record(i)).unwrap();
    }
    let batch = port.drain(4, None).unwrap();
    assert_eq!(batch.len(), 4);
    assert_eq!(
        batch.collect::<Vec<_>>(),
        (0..4).map(record).collect::<Vec<_>>()
    );
    assert_eq!(port.queued(), 6);
}

#[test]
fn dropping_a_batch_frees_only_the_records_it_yielded() {
    let port = Port::new().unwrap();
    for i in 0..5 {
        port.post(record(i)).unwrap();
    }
    let mut batch = port.drain(64, None).unwrap();
    assert_eq!(batch.len(), 5);
    assert_eq!(batch.next(), Some(record(0)));
    assert_eq!(batch.next(), Some(record(1)));
    drop(batch);
    assert_eq!(port.queued(), 3);
    assert_eq!(take_all(&port), (2..5).map(record).collect::<Vec<_>>());

    // A batch dropped unread frees nothing.
    port.post(record(9)).unwrap();
    drop(port.drain(64, None).unwrap());
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap(), record(9));
}

#[test]
fn drain_on_an_empty_port_fails_etimedout() {
    let port = Port::new().unwrap();
    assert_eq!(errno(port.drain(8, Some(Duration::ZERO))), libc::ETIMEDOUT);
    let start = Instant::now();
    assert_eq!(
        errno(port.drain(8, Some(Duration::from_millis(20)))),
        libc::ETIMEDOUT
    );
    assert!(start.elapsed() >= Duration::from_millis(20));
}
