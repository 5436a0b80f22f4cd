//! Stress tests: every record posted is delivered exactly once, in per-producer order,
//! through tiny rings (the overflow path) and large ones, to one consumer mixing every
//! dequeue call or to several consumers at once; waits never lose a wake-up; close racing
//! waiters wakes them all.
//!
//! Release builds move several million records through the port; debug builds scale the
//! counts down to stay quick, and `IOCP_STRESS_RECORDS` sets them (see [`records`]).
#![cfg(not(loom))]

mod common;

use common::rng::Rng;
use common::timing::BULK_PATIENCE;
use iocp::{Completion, DrainStatus, Port, GMCS_NMAX};
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Records per producer-and-capacity combination: `IOCP_STRESS_RECORDS` if set (to scale a
/// slow run down, a sanitizer's say), else 2 000 000 in release builds and 400 000 in debug
/// builds.
fn records() -> usize {
    static RECORDS: OnceLock<usize> = OnceLock::new();
    *RECORDS.get_or_init(|| match std::env::var("IOCP_STRESS_RECORDS") {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("IOCP_STRESS_RECORDS={value:?}: not a count")),
        Err(_) if cfg!(debug_assertions) => 400_000,
        Err(_) => 2_000_000,
    })
}

/// The key marking a consumer's last record (never a producer id).
const STOP: u64 = u64::MAX;

/// The record producer `p` posts `seq`-th: every field is derived from both, so a torn or
/// mixed-up record fails the check.
fn encode(p: usize, seq: u32) -> Completion {
    let tag = ((p as u64) << 32 | u64::from(seq)) ^ 0x9e37_79b9_7f4a_7c15;
    Completion::new(p as u64, seq, tag as usize).with_error((seq ^ (p as u32 * 0x101)) & 0xffff)
}

/// Follows each producer's sequence: every record must be the next one of its producer.
struct Checker {
    next: Vec<u32>,
    seen: usize,
}

impl Checker {
    fn new(producers: usize) -> Checker {
        Checker {
            next: vec![0; producers],
            seen: 0,
        }
    }

    fn check(&mut self, record: &Completion) {
        let p = record.key() as usize;
        assert!(p < self.next.len(), "record from no producer: {record:?}");
        let seq = self.next[p];
        assert_eq!(
            *record,
            encode(p, seq),
            "producer {p}: expected sequence {seq}"
        );
        self.next[p] += 1;
        self.seen += 1;
    }
}

/// Starts `producers` threads posting `per_producer` records each. With `pause`, each
/// stops for a moment after every `burst` records, so that consumers run dry and park.
fn spawn_producers(
    port: &Port,
    producers: usize,
    per_producer: usize,
    pause: Option<(usize, Duration)>,
) -> Vec<thread::JoinHandle<()>> {
    let start = Arc::new(Barrier::new(producers));
    (0..producers)
        .map(|p| {
            let (port, start) = (port.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for seq in 0..per_producer as u32 {
                    port.post(encode(p, seq)).unwrap();
                    if let Some((burst, pause)) = pause {
                        if seq as usize % burst == burst - 1 {
                            thread::sleep(pause);
                        }
                    }
                }
            })
        })
        .collect()
}

/// One consumer taking `total` records with each dequeue call in turn, in varied sizes.
fn consume_with_every_call(port: &Port, producers: usize, total: usize) {
    const SIZES: [usize; 6] = [1, 2, 7, 64, 1000, GMCS_NMAX];
    let mut checker = Checker::new(producers);
    let mut out = vec![Completion::default(); GMCS_NMAX];
    let mut uninit = vec![MaybeUninit::<Completion>::uninit(); GMCS_NMAX];
    let lost = |checker: &Checker, call: &str| -> String {
        format!(
            "{call}: nothing came in {BULK_PATIENCE:?} after {} of {total} records (next per producer: {:?})",
            checker.seen, checker.next
        )
    };
    let mut round = 0;
    while checker.seen < total {
        round += 1;
        let size = SIZES[round % SIZES.len()];
        let left = total - checker.seen;
        match round % 4 {
            0 => {
                let drained = port
                    .get_many(&mut out[..size], 1, Some(BULK_PATIENCE))
                    .unwrap();
                assert_eq!(
                    drained.status,
                    DrainStatus::Complete,
                    "{}",
                    lost(&checker, "get_many")
                );
                out[..drained.count].iter().for_each(|r| checker.check(r));
            }
            1 => {
                // Waits for several records at once: posters must wake it only for enough.
                let min = left.min(size).min(32);
                let drained = port
                    .fill(&mut uninit[..size], min, Some(BULK_PATIENCE), |r| *r)
                    .unwrap();
                assert_eq!(
                    drained.status,
                    DrainStatus::Complete,
                    "{}",
                    lost(&checker, "fill")
                );
                assert!(drained.count >= min);
                for slot in &uninit[..drained.count] {
                    // SAFETY: `fill` initialized the first `count` entries.
                    checker.check(unsafe { slot.assume_init_ref() });
                }
            }
            2 => {
                let mut batch = port
                    .drain(size, Some(BULK_PATIENCE))
                    .unwrap_or_else(|e| panic!("{}: {e}", lost(&checker, "drain")));
                let len = batch.len();
                assert!((1..=size).contains(&len));
                // Reads only part of some batches: the rest must come out next, in order.
                let read = if round % 3 == 0 { len.div_ceil(2) } else { len };
                for record in batch.by_ref().take(read) {
                    checker.check(&record);
                }
                assert_eq!(batch.len(), len - read);
            }
            _ => {
                let record = port
                    .get(Some(BULK_PATIENCE))
                    .unwrap_or_else(|e| panic!("{}: {e}", lost(&checker, "get")));
                checker.check(&record);
            }
        }
    }
    assert_eq!(checker.seen, total);
    let mut out = [Completion::default(); 1];
    assert_eq!(
        port.get_many(&mut out, 0, None).unwrap().count,
        0,
        "a record was delivered twice"
    );
}

/// Producers post as fast as they can, or in bursts so that the consumer often waits.
fn producers_to_one_consumer(producers: usize, capacity: usize, paced: bool) {
    let port = Port::builder().capacity(capacity).build().unwrap();
    let per_producer = records() / producers;
    let started = Instant::now();
    let pause = paced.then_some((128, Duration::from_micros(20)));
    let threads = spawn_producers(&port, producers, per_producer, pause);
    consume_with_every_call(&port, producers, per_producer * producers);
    for thread in threads {
        thread.join().unwrap();
    }
    eprintln!(
        "{producers} producers, capacity {capacity}, paced {paced}: {} records in {:?}",
        per_producer * producers,
        started.elapsed()
    );
}

#[test]
fn two_producers_one_consumer_capacity_2() {
    producers_to_one_consumer(2, 2, false);
}

#[test]
fn two_paced_producers_one_consumer_capacity_4() {
    producers_to_one_consumer(2, 4, true);
}

#[test]
fn two_producers_one_consumer_capacity_64() {
    producers_to_one_consumer(2, 64, false);
}

#[test]
fn two_paced_producers_one_consumer_capacity_4096() {
    producers_to_one_consumer(2, 4096, true);
}

#[test]
fn four_paced_producers_one_consumer_capacity_2() {
    producers_to_one_consumer(4, 2, true);
}

#[test]
fn four_producers_one_consumer_capacity_4() {
    producers_to_one_consumer(4, 4, false);
}

#[test]
fn four_paced_producers_one_consumer_capacity_64() {
    producers_to_one_consumer(4, 64, true);
}

#[test]
fn four_producers_one_consumer_capacity_4096() {
    producers_to_one_consumer(4, 4096, false);
}

/// Several threads taking records with `get` until each takes a [`STOP`] record, counting
/// the others in `taken`; returns what each took, in its order.
fn get_consumers(
    port: &Port,
    consumers: usize,
    taken: &Arc<AtomicUsize>,
) -> Vec<thread::JoinHandle<Vec<Completion>>> {
    (0..consumers)
        .map(|_| {
            let (port, count) = (port.clone(), Arc::clone(taken));
            thread::spawn(move || {
                let mut taken = Vec::new();
                loop {
                    let record = port.get(Some(BULK_PATIENCE)).unwrap_or_else(|e| {
                        panic!("get: {e} after taking {} records", taken.len())
                    });
                    if record.key() == STOP {
                        return taken;
                    }
                    taken.push(record);
                    // Relaxed: a count the main thread polls; the records travel by `join`.
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// Each consumer saw each producer's records in order; together they saw each once.
fn check_exactly_once(taken: &[Vec<Completion>], producers: usize, per_producer: usize) {
    let mut counts = vec![vec![0u8; per_producer]; producers];
    for records in taken {
        let mut last: Vec<Option<u32>> = vec![None; producers];
        for record in records {
            let p = record.key() as usize;
            assert!(p < producers, "record from no producer: {record:?}");
            let seq = record.bytes();
            assert_eq!(*record, encode(p, seq), "torn record");
            if let Some(before) = last[p] {
                assert!(
                    before < seq,
                    "producer {p}: {seq} taken after {before} by one consumer"
                );
            }
            last[p] = Some(seq);
            counts[p][seq as usize] += 1;
        }
    }
    for (p, counts) in counts.iter().enumerate() {
        for (seq, &count) in counts.iter().enumerate() {
            assert_eq!(
                count, 1,
                "producer {p} record {seq} delivered {count} times"
            );
        }
    }
}

fn producers_to_get_consumers(
    producers: usize,
    consumers: usize,
    capacity: usize,
    concurrency: usize,
) {
    let port = Port::builder()
        .capacity(capacity)
        .concurrency(concurrency)
        .build()
        .unwrap();
    let per_producer = records() / 2 / producers;
    let started = Instant::now();
    let count = Arc::new(AtomicUsize::new(0));
    let takers = get_consumers(&port, consumers, &count);
    let pause = Some((64, Duration::from_micros(50)));
    for thread in spawn_producers(&port, producers, per_producer, pause) {
        thread.join().unwrap();
    }
    // Order holds per posting thread, not across threads (see `PortBuilder::fifo`): a STOP
    // posted now could come out before records still queued in the producers' lanes, so it
    // is posted once they are all taken. A consumer stops at its first STOP record, so each
    // takes exactly one.
    let deadline = Instant::now() + BULK_PATIENCE;
    // Relaxed: see `get_consumers`.
    while count.load(Ordering::Relaxed) < producers * per_producer {
        assert!(
            Instant::now() < deadline,
            "the consumers stopped taking records"
        );
        thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..consumers {
        port.post(Completion::new(STOP, 0, 0)).unwrap();
    }
    let taken: Vec<_> = takers.into_iter().map(|t| t.join().unwrap()).collect();
    check_exactly_once(&taken, producers, per_producer);
    eprintln!(
        "{producers} producers, {consumers} get consumers, capacity {capacity}, concurrency \
         {concurrency}: {} records in {:?} (per consumer {:?})",
        per_producer * producers,
        started.elapsed(),
        taken.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

#[test]
fn several_get_consumers_take_each_record_once_capacity_2() {
    producers_to_get_consumers(2, 3, 2, usize::MAX);
}

#[test]
fn several_get_consumers_take_each_record_once_capacity_64() {
    producers_to_get_consumers(2, 4, 64, usize::MAX);
}

#[test]
fn get_consumers_held_to_concurrency_one_take_each_record_once() {
    producers_to_get_consumers(2, 3, 64, 1);
}

#[test]
fn consumers_mixing_get_and_get_many_take_each_record_once() {
    // Batched and single dequeues exclude each other with EBUSY; a consumer refused one
    // tries the other. Short timeouts let consumers see the end.
    let producers = 2;
    let per_producer = records() / 4 / producers;
    let total = per_producer * producers;
    let port = Port::builder()
        .capacity(16)
        .concurrency(usize::MAX)
        .build()
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let consumers: Vec<_> = (0..3)
        .map(|c| {
            let (port, seen) = (port.clone(), Arc::clone(&seen));
            thread::spawn(move || {
                let mut taken = Vec::new();
                let mut out = [Completion::default(); 32];
                let short = Some(Duration::from_millis(5));
                let busy = |e: &io::Error| e.raw_os_error() == Some(libc::EBUSY);
                let mut round = c;
                while seen.load(Ordering::Relaxed) < total {
                    assert!(Instant::now() < deadline, "consumers made no progress");
                    round += 1;
                    let got = if round % 2 == 0 {
                        match port.get_many(&mut out, 1, short) {
                            Ok(drained) => {
                                taken.extend_from_slice(&out[..drained.count]);
                                drained.count
                            }
                            Err(e) if busy(&e) => 0,
                            Err(e) => panic!("get_many: {e}"),
                        }
                    } else {
                        match port.get(short) {
                            Ok(record) => {
                                taken.push(record);
                                1
                            }
                            Err(e) if busy(&e) || e.raw_os_error() == Some(libc::ETIMEDOUT) => 0,
                            Err(e) => panic!("get: {e}"),
                        }
                    };
                    if got == 0 {
                        thread::yield_now();
                    }
                    seen.fetch_add(got, Ordering::Relaxed);
                }
                taken
            })
        })
        .collect();
    let pause = Some((64, Duration::from_micros(50)));
    for thread in spawn_producers(&port, producers, per_producer, pause) {
        thread.join().unwrap();
    }
    let taken: Vec<_> = consumers.into_iter().map(|t| t.join().unwrap()).collect();
    check_exactly_once(&taken, producers, per_producer);
    assert_eq!(port.queued(), 0);
}

/// Two threads bounce a token between two ports; every hop is a wait that a post must
/// end, so a single lost wake-up stalls the exchange.
fn ping_pong(hops: usize, wait: fn(&Port) -> Completion) {
    let ping = Port::new().unwrap();
    let pong = Port::new().unwrap();
    let other = {
        let (ping, pong) = (ping.clone(), pong.clone());
        thread::spawn(move || {
            for _ in 0..hops {
                let token = wait(&ping);
                pong.post(Completion::new(token.key() + 1, 0, 0)).unwrap();
            }
        })
    };
    let mut token = 0;
    for _ in 0..hops {
        ping.post(Completion::new(token, 0, 0)).unwrap();
        let back = wait(&pong);
        assert_eq!(back.key(), token + 1);
        token = back.key() + 1;
    }
    other.join().unwrap();
}

fn hops() -> usize {
    if cfg!(debug_assertions) {
        5_000
    } else {
        100_000
    }
}

#[test]
fn ping_pong_through_get_never_loses_a_wake_up() {
    ping_pong(hops(), |port| {
        port.get(Some(BULK_PATIENCE)).expect("a wake-up was lost")
    });
}

#[test]
fn ping_pong_through_get_many_never_loses_a_wake_up() {
    ping_pong(hops(), |port| {
        let mut out = [Completion::default(); 4];
        let drained = port.get_many(&mut out, 1, Some(BULK_PATIENCE)).unwrap();
        assert_eq!(drained.count, 1, "a wake-up was lost");
        out[0]
    });
}

#[test]
fn ping_pong_through_drain_never_loses_a_wake_up() {
    ping_pong(hops(), |port| {
        let mut batch = port
            .drain(4, Some(BULK_PATIENCE))
            .expect("a wake-up was lost");
        assert_eq!(batch.len(), 1);
        batch.next().unwrap()
    });
}

#[test]
fn records_racing_short_get_timeouts_are_each_delivered_once() {
    // Waiters time out constantly while records arrive, so wake-ups race timeouts: a
    // wake meant for a waiter that already timed out must reach another waiter or leave
    // the record queued, never lose it.
    let port = Port::builder()
        .capacity(8)
        .concurrency(usize::MAX)
        .build()
        .unwrap();
    let per_producer = records() / 8;
    let stop = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let (port, stop) = (port.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let mut taken = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match port.get(Some(Duration::from_micros(200))) {
                        Ok(record) => taken.push(record),
                        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT)),
                    }
                }
                taken
            })
        })
        .collect();
    let producer = {
        let port = port.clone();
        thread::spawn(move || {
            for seq in 0..per_producer as u32 {
                port.post(encode(0, seq)).unwrap();
                if seq % 16 == 0 {
                    // Gaps long enough for the waiters to park and time out.
                    thread::sleep(Duration::from_micros(150));
                }
            }
        })
    };
    producer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut taken: Vec<_> = consumers.into_iter().map(|t| t.join().unwrap()).collect();
    let mut rest = Vec::new();
    while let Ok(record) = port.get(Some(Duration::ZERO)) {
        rest.push(record);
    }
    taken.push(rest);
    check_exactly_once(&taken, 1, per_producer);
}

#[test]
fn close_racing_waiters_wakes_every_one_with_ebadf() {
    let rounds = if cfg!(debug_assertions) { 60 } else { 300 };
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let wait = Duration::from_secs(30);
    for round in 0..rounds {
        let port = Port::builder().concurrency(usize::MAX).build().unwrap();
        // Get waiters share the port; a batched waiter must be alone on it.
        let waiters = if round % 3 == 0 { 6 } else { 1 };
        let barrier = Arc::new(Barrier::new(waiters + 1));
        let (tx, rx) = mpsc::channel();
        let threads: Vec<_> = (0..waiters)
            .map(|_| {
                let (port, barrier, tx) = (port.clone(), Arc::clone(&barrier), tx.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let result = match round % 3 {
                        0 => port.get(Some(wait)).map(drop),
                        1 => {
                            let mut out = [Completion::default(); 4];
                            port.get_many(&mut out, 1, Some(wait)).map(drop)
                        }
                        _ => port.drain(4, Some(wait)).map(drop),
                    };
                    tx.send(result.map_err(|e| e.raw_os_error())).unwrap();
                })
            })
            .collect();
        barrier.wait();
        // From before the waiters reach their wait to long after they sleep.
        let delay = match rng.next() % 4 {
            0 => Duration::ZERO,
            1 => Duration::from_micros(rng.next() % 50),
            2 => Duration::from_micros(rng.next() % 500),
            _ => Duration::from_millis(2 + rng.next() % 5),
        };
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        let closed = Instant::now();
        port.close().unwrap();
        for _ in 0..waiters {
            let result = rx
                .recv_timeout(Duration::from_secs(2))
                .unwrap_or_else(|_| panic!("round {round}: a waiter slept through close"));
            assert_eq!(result, Err(Some(libc::EBADF)), "round {round}");
        }
        assert!(closed.elapsed() < Duration::from_secs(2));
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
