//! The producer shapes: N threads post, one consumer takes records in batches.

use super::flow::MAX_COUNTERS;
use super::flow::{produce, snooze_if_idle, Counting, Flow, Record, StopOnDrop, Tally};
use super::{c_port, io_error, port, Subject, CAPACITY, MAX_RECORDS, WAIT, WAIT_MS};
use crate::libiocp::Gmcs;
use crate::scenario::{pin, Backoff};
use core_affinity::CoreId;
use crossbeam_queue::ArrayQueue;
use iocp::{Completion, GMCS_NMAX};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// Records per second `subject`'s consumer takes from `producers` threads, for `duration`.
/// iocp's producers post `batch` records per `post_many` (1: one `post` each), and so does
/// `C post_many+GMCS` with `iocp_post_many`; the peers and `C PQCS+GMCS` post one record at
/// a time whatever `batch` is.
pub(super) fn measure(
    subject: Subject,
    producers: usize,
    batch: usize,
    cores: Option<&[CoreId]>,
    duration: Duration,
) -> Result<f64, String> {
    match subject {
        Subject::IocpGetMany | Subject::IocpScalar => {
            let port = port(subject)?;
            let consumer = port.clone();
            let mut out = vec![Completion::default(); GMCS_NMAX];
            run_producers(
                producers,
                batch,
                cores,
                duration,
                |records: &[Completion], _: &Flow| post_iocp(&port, records),
                move |tally: &mut Tally| {
                    let drained = consumer
                        .get_many(&mut out, 1, Some(WAIT))
                        .map_err(io_error("get_many"))?;
                    for record in &out[..drained.count] {
                        tally.take(record.key());
                    }
                    Ok(drained.count)
                },
            )
        }
        Subject::IocpDrain => {
            let port = port(subject)?;
            let consumer = port.clone();
            run_producers(
                producers,
                batch,
                cores,
                duration,
                |records: &[Completion], _: &Flow| post_iocp(&port, records),
                move |tally: &mut Tally| match consumer.drain(GMCS_NMAX, Some(WAIT)) {
                    Ok(records) => {
                        let n = records.len();
                        records.for_each(|record| tally.take(record.key()));
                        Ok(n)
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
                    Err(e) => Err(format!("drain: {e}")),
                },
            )
        }
        Subject::CGetMultiple | Subject::CPostMany => {
            let port = c_port()?;
            let port = &port;
            let mut out = vec![Gmcs::default(); GMCS_NMAX];
            run_producers(
                producers,
                batch,
                cores,
                duration,
                |records: &[Gmcs], _: &Flow| match subject {
                    Subject::CPostMany => port.post_many(records),
                    _ => records.iter().all(|record| {
                        port.post(
                            record.transfer_count,
                            record.completion_key,
                            record.overlapped,
                        )
                    }),
                },
                move |tally: &mut Tally| {
                    let n = port
                        .get_multiple(1, &mut out, WAIT_MS)
                        .map_err(io_error("GetMultipleCompletionStatus"))?;
                    for entry in &out[..n] {
                        tally.take(entry.completion_key.into());
                    }
                    Ok(n)
                },
            )
        }
        Subject::ArrayQueue => {
            let queue = ArrayQueue::new(CAPACITY);
            let queue = &queue;
            let mut idle = Backoff::default();
            run_producers(
                producers,
                batch,
                cores,
                duration,
                |records: &[Completion], flow: &Flow| {
                    records.iter().all(|&record| {
                        let mut record = record;
                        let mut full = Backoff::default();
                        loop {
                            match queue.push(record) {
                                Ok(()) => return true,
                                Err(_) if flow.stopped() => return false,
                                Err(back) => record = back,
                            }
                            full.snooze();
                        }
                    })
                },
                move |tally: &mut Tally| {
                    let mut n = 0;
                    while n < GMCS_NMAX {
                        let Some(record) = queue.pop() else { break };
                        tally.take(record.key());
                        n += 1;
                    }
                    snooze_if_idle(&mut idle, n);
                    Ok(n)
                },
            )
        }
        Subject::Mpsc => {
            let (tx, rx) = mpsc::sync_channel(CAPACITY);
            let mut idle = Backoff::default();
            run_producers(
                producers,
                batch,
                cores,
                duration,
                |records: &[Completion], _: &Flow| {
                    records.iter().all(|&record| tx.send(record).is_ok())
                },
                move |tally: &mut Tally| {
                    let mut n = 0;
                    while n < GMCS_NMAX {
                        match rx.try_recv() {
                            Ok(record) => tally.take(record.key()),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                return Err("the producers hung up".into())
                            }
                        }
                        n += 1;
                    }
                    snooze_if_idle(&mut idle, n);
                    Ok(n)
                },
            )
        }
        Subject::IoUring => Err("io_uring has a single submitter: no N-producer form".into()),
        Subject::IocpGet
        | Subject::IocpGetUpTo
        | Subject::CGet
        | Subject::CGetEx
        | Subject::CrossbeamChannel => Err(format!(
            "{} is a worker-pool dequeue, not a batched drain",
            subject.name()
        )),
    }
}

/// iocp's producer: one `post_many` for a batch, one `post` for a single record.
#[inline]
fn post_iocp(port: &iocp::Port, records: &[Completion]) -> bool {
    match records {
        [record] => port.post(*record).is_ok(),
        records => port.post_many(records).is_ok(),
    }
}

/// Runs `producers` threads calling `post` with their records (made in the form `post`
/// takes), `batch` at a time, and one consumer calling `take` for `duration`. Returns the
/// records per second the consumer took. Thread `i` is pinned to `cores[i]` when given
/// (the consumer is thread 0).
///
/// `post` returns `false` when the producer should stop (the queue is gone or the flow
/// says stop); `take` hands each record it takes to the tally and returns how many. The
/// consumer owns `take` and drops it when done, which disconnects a channel's producers.
fn run_producers<R: Record>(
    producers: usize,
    batch: usize,
    cores: Option<&[CoreId]>,
    duration: Duration,
    post: impl Fn(&[R], &Flow) -> bool + Sync,
    take: impl FnMut(&mut Tally) -> Result<usize, String> + Send,
) -> Result<f64, String> {
    assert!((1..=MAX_COUNTERS).contains(&producers));
    let flow = Flow::new(Counting::PerProducer, CAPACITY / producers);
    let start = Barrier::new(producers + 1);
    let (flow, start, post) = (&flow, &start, &post);
    thread::scope(|s| {
        for p in 0..producers {
            s.spawn(move || {
                pin(cores, p + 1);
                start.wait();
                produce(p, batch, flow, post);
            });
        }
        s.spawn(move || {
            pin(cores, 0);
            let _stop = StopOnDrop(flow);
            start.wait();
            consume(producers, flow, take, duration)
        })
        .join()
        .unwrap_or_else(|_| Err("the consumer panicked".into()))
    })
}

/// The consumer: takes records until `duration` has passed, publishing its per-producer
/// counts after every take. Returns records per second.
fn consume(
    producers: usize,
    flow: &Flow,
    mut take: impl FnMut(&mut Tally) -> Result<usize, String>,
    duration: Duration,
) -> Result<f64, String> {
    let mut tally = Tally::default();
    let start = Instant::now();
    let deadline = start + duration;
    let result = loop {
        if take(&mut tally)? > 0 {
            for (p, &count) in tally.counts[..producers].iter().enumerate() {
                // Release: pairs with the producer's acquire load of its window.
                flow.taken[p].store(count, Ordering::Release);
            }
        }
        if Instant::now() >= deadline || tally.total() >= MAX_RECORDS {
            break Ok(tally.total() as f64 / start.elapsed().as_secs_f64());
        }
    };
    flow.stop();
    drop(take);
    result
}
