//! Integration tests of [`iocp::Port`]: posting, the dequeue calls and their argument
//! errors, the exclusive batched dequeue (`EBUSY`), LIFO wake order, close, capacity and
//! overflow, the concurrency value, timeouts, and the cost of an idle waiter.
#![cfg(not(loom))]

mod common;

use common::errno;
use common::ports::{record, unlimited};
use common::threads::waiting;
use common::timing::{LATE, LONG, PATIENCE, SETTLE};
use iocp::{Completion, DrainStatus, Drained, Port, GMCS_NMAX, MAX_CAPACITY};
use std::fmt::Debug;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Takes every queued record with zero-timeout `get_many` calls.
fn take_all(port: &Port) -> Vec<Completion> {
    let mut out = vec![Completion::default(); GMCS_NMAX];
    let mut all = Vec::new();
    loop {
        let drained = port.get_many(&mut out, 0, Some(Duration::ZERO)).unwrap();
        if drained.count == 0 {
            return all;
        }
        all.extend_from_slice(&out[..drained.count]);
    }
}

fn complete(count: usize) -> Drained {
    Drained {
        count,
        status: DrainStatus::Complete,
    }
}

// ---------------------------------------------------------------------------------------
// Posting and taking records

#[test]
fn get_returns_the_posted_record_field_for_field() {
    let port = Port::new().unwrap();
    port.post(Completion::new(0xdead_beef_cafe, 4096, 0x1234_5678))
        .unwrap();
    let got = port.get(Some(Duration::ZERO)).unwrap();
    assert_eq!(got.key(), 0xdead_beef_cafe);
    assert_eq!(got.bytes(), 4096);
    assert_eq!(got.overlapped(), 0x1234_5678);
    assert_eq!(got.error(), 0);
    assert_eq!(got.result().unwrap(), 4096);
}

#[test]
fn a_failed_record_is_returned_and_its_result_carries_the_errno() {
    let port = Port::new().unwrap();
    let posted = Completion::new(3, 17, 99).with_error(libc::ECONNRESET as u32);
    port.post(posted).unwrap();
    let got = port.get(Some(Duration::ZERO)).unwrap();
    assert_eq!(got, posted);
    assert_eq!(got.error(), libc::ECONNRESET as u32);
    assert_eq!(errno(got.result()), libc::ECONNRESET);
}

#[test]
fn get_polls_an_empty_port_with_etimedout() {
    let port = Port::new().unwrap();
    let start = Instant::now();
    assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::ETIMEDOUT);
    assert!(start.elapsed() < LATE);
}

#[test]
fn a_poll_finds_queued_records_while_another_thread_polls() {
    // Nobody posts while the two threads poll, so the queue only shrinks: whatever
    // `queued()` reads after a failed poll was already queued when the poll failed. Each
    // thread takes one record at a time, so at most one record can be in the other's hands.
    let port = unlimited();
    let total = 50_000;
    for i in 0..total {
        port.post(record(i)).unwrap();
    }
    let barrier = Barrier::new(2);
    let outcomes: Vec<(usize, usize)> = thread::scope(|s| {
        let poller = || {
            barrier.wait();
            let (mut taken, mut wrongly_empty) = (0, 0);
            loop {
                match port.get(Some(Duration::ZERO)) {
                    Ok(_) => taken += 1,
                    Err(e) => {
                        assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT));
                        if port.queued() <= 1 {
                            return (taken, wrongly_empty);
                        }
                        wrongly_empty += 1;
                    }
                }
            }
        };
        let threads = [s.spawn(poller), s.spawn(poller)];
        threads.map(|t| t.join().unwrap()).to_vec()
    });
    let taken: usize = outcomes.iter().map(|o| o.0).sum();
    let wrongly_empty: usize = outcomes.iter().map(|o| o.1).sum();
    assert_eq!(taken + port.queued(), total);
    assert_eq!(
        wrongly_empty, 0,
        "{wrongly_empty} polls failed ETIMEDOUT while records were queued"
    );
}

#[test]
fn a_zero_timeout_drain_finds_queued_records_while_another_thread_polls_with_get() {
    // As above, with the second thread draining one record per batch: a drain that fails
    // ETIMEDOUT while more than one record is queued missed records that were there. The
    // drains start once the poller is taking records, so that the two really compete.
    let port = unlimited();
    let total = 100_000;
    for i in 0..total {
        port.post(record(i)).unwrap();
    }
    let polled = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let wrongly_empty = thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                match port.get(Some(Duration::ZERO)) {
                    Ok(_) => {
                        polled.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => assert!(
                        matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ETIMEDOUT)),
                        "{e}"
                    ),
                }
            }
        });
        while polled.load(Ordering::Relaxed) == 0 {
            thread::yield_now();
        }
        let mut wrongly_empty = 0;
        loop {
            match port.drain(1, Some(Duration::ZERO)) {
                Ok(batch) => assert_eq!(batch.count(), 1),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT));
                    if port.queued() <= 1 {
                        done.store(true, Ordering::Relaxed);
                        return wrongly_empty;
                    }
                    wrongly_empty += 1;
                }
            }
        }
    });
    assert_eq!(
        wrongly_empty, 0,
        "{wrongly_empty} drains failed ETIMEDOUT while records were queued"
    );
}

#[test]
fn a_get_racing_a_drain_never_spins_while_the_batch_is_held() {
    // A slow poll is measured in CPU time, but a VM may charge a host's preemption of the
    // vCPU to whatever thread was running: a spike is only a finding if a second run shows
    // it too. The bug this guards against showed in most runs.
    let hold = Duration::from_millis(4);
    let (mut longest, mut calls) = race_polls_against_batches(hold);
    if longest >= hold / 2 {
        eprintln!("a poll took {longest:?} of CPU; running the race again");
        (longest, calls) = race_polls_against_batches(hold);
    }
    assert!(
        longest < hold / 2,
        "a poll spun for {longest:?} of CPU while a batch was held ({calls} polls)"
    );
}

/// Polls with `get` in one thread while this one takes batches and holds each for `hold`;
/// returns the longest poll in CPU time and how many polls ran.
fn race_polls_against_batches(hold: Duration) -> (Duration, u64) {
    // A poll returns at once: a record, EBUSY while a batch is held, or ETIMEDOUT. One
    // that slipped past the EBUSY check as the batch was taken must not spin on the
    // batch's claim for as long as the batch lives. CPU time, unlike wall time, is not
    // stretched by preemption on a loaded machine. The poller puts back what it takes and
    // the batches are dropped unread, so records never run out.
    let port = unlimited();
    for i in 0..64 {
        port.post(record(i)).unwrap();
    }
    let done = AtomicBool::new(false);
    let polling = AtomicBool::new(false);
    let mut rng = 0x9e37_79b9_u32;
    thread::scope(|s| {
        let poller = s.spawn(|| {
            let (mut longest, mut calls) = (Duration::ZERO, 0u64);
            polling.store(true, Ordering::Relaxed);
            while !done.load(Ordering::Relaxed) {
                let before = thread_cpu_time();
                let got = port.get(Some(Duration::ZERO));
                longest = longest.max(thread_cpu_time() - before);
                calls += 1;
                if let Ok(record) = got {
                    port.post(record).unwrap();
                }
            }
            (longest, calls)
        });
        while !polling.load(Ordering::Relaxed) {
            thread::yield_now();
        }
        for _ in 0..250 {
            if let Ok(batch) = port.drain(4, Some(Duration::ZERO)) {
                thread::sleep(hold);
                drop(batch);
            }
            // Leaves the port free for a varying moment, for a poll to get past its check.
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let until = Instant::now() + Duration::from_nanos(u64::from(rng % 1500));
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        done.store(true, Ordering::Relaxed);
        poller.join().unwrap()
    })
}

#[test]
fn records_come_out_in_posting_order_through_every_dequeue_call() {
    let port = Port::new().unwrap();
    for i in 0..12 {
        port.post(record(i)).unwrap();
    }
    assert_eq!(port.queued(), 12);
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap(), record(0));
    let mut out = [Completion::default(); 3];
    assert_eq!(port.get_many(&mut out, 3, None).unwrap(), complete(3));
    assert_eq!(out, [record(1), record(2), record(3)]);
    let mut keys = [MaybeUninit::<u64>::uninit(); 4];
    assert_eq!(
        port.fill(&mut keys, 4, None, Completion::key).unwrap(),
        complete(4)
    );
    // SAFETY: `fill` reported all four entries written.
    let keys = keys.map(|key| unsafe { key.assume_init() });
    assert_eq!(keys, [4, 5, 6, 7]);
    let batch = port.drain(GMCS_NMAX, None).unwrap();
    assert_eq!(
        batch.collect::<Vec<_>>(),
        (8..12).map(record).collect::<Vec<_>>()
    );
    assert_eq!(port.queued(), 0);
}

#[test]
fn clones_are_handles_to_the_same_port() {
    let port = Port::new().unwrap();
    let clone = port.clone();
    assert!(port.same_port(&clone));
    assert!(clone.same_port(&port));
    assert!(!port.same_port(&Port::new().unwrap()));
    clone.post(record(5)).unwrap();
    assert_eq!(port.queued(), 1);
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap(), record(5));
    clone.close().unwrap();
    assert!(port.is_closed());
}

#[test]
fn the_default_concurrency_value_is_the_number_of_cpus() {
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(Port::new().unwrap().concurrency(), cpus);
    assert_eq!(
        Port::builder()
            .concurrency(0)
            .build()
            .unwrap()
            .concurrency(),
        cpus
    );
    assert_eq!(unlimited().concurrency(), usize::MAX);
    assert_eq!(
        Port::builder()
            .concurrency(3)
            .build()
            .unwrap()
            .concurrency(),
        3
    );
}

// ---------------------------------------------------------------------------------------
// Batched dequeues: arguments, min, timeouts

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

// ---------------------------------------------------------------------------------------
// The exclusive batched dequeue

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

// ---------------------------------------------------------------------------------------
// Waking

#[test]
fn parked_get_waiters_wake_last_in_first_out() {
    let port = unlimited();
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for id in 0..3u64 {
        let port = port.clone();
        let tx = tx.clone();
        let barrier = Arc::new(Barrier::new(2));
        let started = Arc::clone(&barrier);
        threads.push(thread::spawn(move || {
            started.wait();
            let got = port.get(Some(LONG)).map(|r| r.key());
            tx.send((id, got)).unwrap();
        }));
        barrier.wait();
        thread::sleep(SETTLE);
    }
    for key in 0..3u64 {
        port.post(Completion::new(key, 0, 0)).unwrap();
        let (id, got) = rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!(got.unwrap(), key);
        assert_eq!(
            id,
            2 - key,
            "record {key} went to waiter {id}, not the latest"
        );
        thread::sleep(Duration::from_millis(20));
    }
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_post_ends_a_long_get_promptly() {
    let port = unlimited();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || {
            let got = port.get(Some(LONG));
            (got, Instant::now())
        }
    });
    let posted = Instant::now();
    port.post(record(3)).unwrap();
    let (got, returned) = rx.recv_timeout(PATIENCE).unwrap();
    handle.join().unwrap();
    assert_eq!(got.unwrap(), record(3));
    assert!(
        returned - posted < LATE,
        "woke {:?} after the post",
        returned - posted
    );
}

#[test]
fn a_post_ends_a_long_get_many_promptly() {
    let port = Port::new().unwrap();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || {
            let mut out = [Completion::default(); 4];
            let got = port.get_many(&mut out, 1, Some(LONG)).map(|d| (d, out[0]));
            (got, Instant::now())
        }
    });
    let posted = Instant::now();
    port.post(record(3)).unwrap();
    let (got, returned) = rx.recv_timeout(PATIENCE).unwrap();
    handle.join().unwrap();
    assert_eq!(got.unwrap(), (complete(1), record(3)));
    assert!(
        returned - posted < LATE,
        "woke {:?} after the post",
        returned - posted
    );
}

#[test]
fn a_post_ends_a_long_drain_promptly() {
    let port = Port::new().unwrap();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || {
            let got = port.drain(4, Some(LONG)).map(|b| b.collect::<Vec<_>>());
            (got, Instant::now())
        }
    });
    let posted = Instant::now();
    port.post(record(3)).unwrap();
    let (got, returned) = rx.recv_timeout(PATIENCE).unwrap();
    handle.join().unwrap();
    assert_eq!(got.unwrap(), vec![record(3)]);
    assert!(
        returned - posted < LATE,
        "woke {:?} after the post",
        returned - posted
    );
}

// ---------------------------------------------------------------------------------------
// Close

fn assert_woken_with_ebadf<T: Debug>(
    rx: &mpsc::Receiver<(io::Result<T>, Instant)>,
    closed: Instant,
) {
    let (result, returned) = rx.recv_timeout(PATIENCE).expect("a waiter stayed asleep");
    assert_eq!(errno(result), libc::EBADF);
    assert!(
        returned.saturating_duration_since(closed) < LATE,
        "woke {:?} after close",
        returned.saturating_duration_since(closed)
    );
}

#[test]
fn close_wakes_every_waiting_get_with_ebadf() {
    let port = unlimited();
    let (tx, rx) = mpsc::channel();
    let barrier = Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (port, tx, barrier) = (port.clone(), tx.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let got = port.get(Some(LONG));
                tx.send((got, Instant::now())).unwrap();
            })
        })
        .collect();
    barrier.wait();
    thread::sleep(SETTLE);
    let closed = Instant::now();
    port.close().unwrap();
    for _ in 0..4 {
        assert_woken_with_ebadf(&rx, closed);
    }
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn close_wakes_a_waiting_get_many_with_ebadf() {
    let port = Port::new().unwrap();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || {
            let mut out = [Completion::default(); 4];
            (port.get_many(&mut out, 1, Some(LONG)), Instant::now())
        }
    });
    let closed = Instant::now();
    port.close().unwrap();
    assert_woken_with_ebadf(&rx, closed);
    handle.join().unwrap();
}

#[test]
fn close_wakes_a_waiting_drain_with_ebadf() {
    let port = Port::new().unwrap();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || (port.drain(4, Some(LONG)).map(|b| b.len()), Instant::now())
    });
    let closed = Instant::now();
    port.close().unwrap();
    assert_woken_with_ebadf(&rx, closed);
    handle.join().unwrap();
}

#[test]
fn every_call_after_close_fails_ebadf() {
    let port = Port::new().unwrap();
    port.post(record(1)).unwrap();
    assert!(!port.is_closed());
    port.close().unwrap();
    assert!(port.is_closed());
    assert_eq!(errno(port.close()), libc::EBADF);
    assert_eq!(errno(port.clone().close()), libc::EBADF);
    assert_eq!(errno(port.post(record(2))), libc::EBADF);
    // Queued records are discarded, and an infinite wait does not wait.
    assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::EBADF);
    assert_eq!(errno(port.get(None)), libc::EBADF);
    let mut out = [Completion::default(); 4];
    assert_eq!(errno(port.get_many(&mut out, 1, None)), libc::EBADF);
    assert_eq!(errno(port.get_many(&mut out, 0, None)), libc::EBADF);
    let mut uninit = [MaybeUninit::<Completion>::uninit(); 4];
    assert_eq!(errno(port.fill(&mut uninit, 1, None, |r| *r)), libc::EBADF);
    assert_eq!(errno(port.drain(4, None)), libc::EBADF);
}

// ---------------------------------------------------------------------------------------
// Capacity and overflow

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

// ---------------------------------------------------------------------------------------
// The concurrency value

/// A thread that takes one record from `port` and stays released until told to go on,
/// then does `then` (a thread that returns from `then` exits, which also counts it out).
fn released_thread(
    port: &Port,
    then: impl FnOnce() + Send + 'static,
) -> (thread::JoinHandle<()>, mpsc::Sender<()>) {
    let (got_tx, got_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let port = port.clone();
    let handle = thread::spawn(move || {
        got_tx.send(port.get(Some(PATIENCE))).unwrap();
        let _ = go_rx.recv();
        then();
    });
    let got = got_rx.recv_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(got, record(0));
    (handle, go_tx)
}

/// Starts a thread whose first `get` must time out although records are queued (the
/// concurrency value is reached) and whose second waits for its release.
fn held_back_thread(port: &Port) -> mpsc::Receiver<(io::Result<Completion>, Instant)> {
    let (tx, rx) = mpsc::channel();
    let port = port.clone();
    thread::spawn(move || {
        let start = Instant::now();
        let first = port.get(Some(Duration::from_millis(100)));
        let waited = start.elapsed();
        tx.send((first, Instant::now())).unwrap();
        assert!(waited >= Duration::from_millis(100));
        let second = port.get(Some(LONG));
        tx.send((second, Instant::now())).unwrap();
    });
    let (first, _) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(errno(first), libc::ETIMEDOUT);
    // Still held back: its second `get` has not returned.
    thread::sleep(SETTLE);
    assert_eq!(rx.try_recv().err(), Some(mpsc::TryRecvError::Empty));
    rx
}

#[test]
fn the_concurrency_value_holds_a_get_back_until_the_released_thread_exits() {
    let port = Port::builder().concurrency(1).build().unwrap();
    for i in 0..3 {
        port.post(record(i)).unwrap();
    }
    let (a, go) = released_thread(&port, || {});
    let b = held_back_thread(&port);
    let released = Instant::now();
    go.send(()).unwrap();
    a.join().unwrap();
    let (got, returned) = b.recv_timeout(PATIENCE).unwrap();
    assert_eq!(got.unwrap(), record(1));
    assert!(
        returned - released < LATE,
        "released {:?} late",
        returned - released
    );
    assert_eq!(port.queued(), 1);
}

#[test]
fn the_concurrency_value_releases_a_get_when_the_released_thread_calls_get_again() {
    let port = Port::builder().concurrency(1).build().unwrap();
    for i in 0..3 {
        port.post(record(i)).unwrap();
    }
    // A `get` on any port counts the released thread out; on an empty one it stays out.
    let other = Port::new().unwrap();
    let (a_done_tx, a_done_rx) = mpsc::channel();
    let (a, go) = released_thread(&port, move || {
        assert_eq!(errno(other.get(Some(Duration::ZERO))), libc::ETIMEDOUT);
        a_done_tx.send(()).unwrap();
        // Stays alive, so only the `get` can have released the other thread.
        thread::sleep(Duration::from_millis(300));
    });
    let b = held_back_thread(&port);
    let released = Instant::now();
    go.send(()).unwrap();
    a_done_rx.recv_timeout(PATIENCE).unwrap();
    let (got, returned) = b.recv_timeout(PATIENCE).unwrap();
    assert_eq!(got.unwrap(), record(1));
    assert!(
        returned - released < LATE,
        "released {:?} late",
        returned - released
    );
    a.join().unwrap();
}

#[test]
fn batched_dequeues_ignore_the_concurrency_value() {
    let port = Port::builder().concurrency(1).build().unwrap();
    for i in 0..5 {
        port.post(record(i)).unwrap();
    }
    let (a, go) = released_thread(&port, || {});
    // This thread is not released, but the limit is reached: `get` is held back...
    assert_eq!(
        errno(port.get(Some(Duration::from_millis(20)))),
        libc::ETIMEDOUT
    );
    // ...while the batched dequeues are not.
    let mut out = [Completion::default(); 2];
    assert_eq!(
        port.get_many(&mut out, 2, Some(Duration::ZERO)).unwrap(),
        complete(2)
    );
    assert_eq!(out, [record(1), record(2)]);
    assert_eq!(
        port.drain(8, Some(Duration::ZERO))
            .unwrap()
            .collect::<Vec<_>>(),
        vec![record(3), record(4)]
    );
    go.send(()).unwrap();
    a.join().unwrap();
}

#[test]
fn an_unlimited_port_releases_any_number_of_threads() {
    let port = unlimited();
    for i in 0..8 {
        port.post(record(i)).unwrap();
    }
    // Eight threads each hold a released record at once.
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (port, barrier) = (port.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                let got = port.get(Some(PATIENCE));
                barrier.wait();
                got
            })
        })
        .collect();
    let mut keys: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap().key())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..8).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------
// Timeouts

fn assert_timed_wait(timeout: Duration, elapsed: Duration, what: &str) {
    assert!(
        elapsed >= timeout,
        "{what} {timeout:?} returned early, after {elapsed:?}"
    );
    assert!(
        elapsed < timeout + LATE,
        "{what} {timeout:?} returned late, after {elapsed:?}"
    );
}

const TIMEOUTS: [Duration; 3] = [
    Duration::from_millis(1),
    Duration::from_millis(10),
    Duration::from_millis(50),
];

#[test]
fn get_timeouts_are_never_early_nor_grossly_late() {
    let port = Port::new().unwrap();
    for timeout in TIMEOUTS {
        let start = Instant::now();
        let result = port.get(Some(timeout));
        let elapsed = start.elapsed();
        assert_eq!(errno(result), libc::ETIMEDOUT);
        assert_timed_wait(timeout, elapsed, "get");
    }
}

#[test]
fn get_many_timeouts_are_never_early_nor_grossly_late() {
    let port = Port::new().unwrap();
    let mut out = [Completion::default(); 4];
    for timeout in TIMEOUTS {
        let start = Instant::now();
        let drained = port.get_many(&mut out, 1, Some(timeout)).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(
            drained,
            Drained {
                count: 0,
                status: DrainStatus::TimedOut
            }
        );
        assert_timed_wait(timeout, elapsed, "get_many");
    }
}

#[test]
fn drain_timeouts_are_never_early_nor_grossly_late() {
    let port = Port::new().unwrap();
    for timeout in TIMEOUTS {
        let start = Instant::now();
        let result = port.drain(4, Some(timeout));
        let elapsed = start.elapsed();
        assert_eq!(errno(result), libc::ETIMEDOUT);
        assert_timed_wait(timeout, elapsed, "drain");
    }
}

#[test]
fn a_timeout_too_long_for_the_clock_waits_like_none() {
    let port = unlimited();
    let (handle, rx) = waiting({
        let port = port.clone();
        move || port.get(Some(Duration::MAX))
    });
    assert!(
        matches!(
            rx.recv_timeout(Duration::from_millis(50)),
            Err(RecvTimeoutError::Timeout)
        ),
        "a wait without a usable deadline ended"
    );
    port.post(record(1)).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap().unwrap(), record(1));
    handle.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// Idle cost

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn an_idle_waiter_uses_under_one_percent_of_a_core() {
    let port = Port::new().unwrap();
    let (wall, cpu, result) = thread::spawn(move || {
        let start = Instant::now();
        let cpu_before = thread_cpu_time();
        let result = port.get(Some(Duration::from_secs(1)));
        let cpu = thread_cpu_time() - cpu_before;
        (start.elapsed(), cpu, result)
    })
    .join()
    .unwrap();
    assert_eq!(errno(result), libc::ETIMEDOUT);
    assert!(wall >= Duration::from_secs(1));
    assert!(
        cpu < Duration::from_millis(10),
        "an idle 1 s wait used {cpu:?} of CPU"
    );
}

// ---------------------------------------------------------------------------------------
// Regression tests, named after the bug

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
