//! The worker-pool shape: one producer, W workers each taking records in a loop.

use super::flow::{produce, Counting, Flow, StopOnDrop, MAX_COUNTERS};
use super::{c_port, io_error, Subject, CAPACITY, MAX_RECORDS, TAKE_BATCH, WAIT, WAIT_MS};
use crate::libiocp::{self, OverlappedEntry};
use crate::scenario::pin;
use core_affinity::CoreId;
use crossbeam_channel::RecvTimeoutError;
use iocp::{Completion, Port};
use std::hint::black_box;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// Records per second `workers` threads take with `subject` from one producer, for
/// `duration`. The producer is thread 0, worker `w` thread `w + 1`, pinned to those
/// cores when given; the controller that times the run sleeps, unpinned.
pub(super) fn measure(
    subject: Subject,
    workers: usize,
    cores: Option<&[CoreId]>,
    duration: Duration,
) -> Result<f64, String> {
    let run = |post: &(dyn Fn(Completion) -> bool + Sync), worker: &_| {
        run_pool(workers, cores, duration, post, worker)
    };
    match subject {
        Subject::IocpGet | Subject::IocpGetUpTo => {
            // The default settings: ring of 4096, concurrency value = the number of CPUs.
            let port = Port::new().map_err(io_error("creating the port"))?;
            let batched = subject == Subject::IocpGetUpTo;
            run(&|record| port.post(record).is_ok(), &|| -> Taker<'_> {
                let port = port.clone();
                let mut out = [Completion::default(); TAKE_BATCH];
                Box::new(move || {
                    let taken = match batched {
                        true => port.get_up_to(&mut out, Some(WAIT)),
                        false => port.get(Some(WAIT)).map(|record| {
                            out[0] = record;
                            1
                        }),
                    };
                    match taken {
                        Ok(n) => Ok(count(&out[..n], |record| record.key())),
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
                        Err(e) => Err(format!("get: {e}")),
                    }
                })
            })
        }
        Subject::CGet | Subject::CGetEx => {
            let library = libiocp::library()?;
            if subject == Subject::CGetEx {
                library.has_get_ex()?;
            }
            let port = c_port()?;
            let port = &port;
            let post = |record: Completion| {
                port.post(record.bytes(), record.key() as u32, record.overlapped())
            };
            let batched = subject == Subject::CGetEx;
            run(&post, &|| -> Taker<'_> {
                let mut out = [OverlappedEntry::default(); TAKE_BATCH];
                Box::new(move || {
                    let taken = match batched {
                        true => port.get_ex(&mut out, WAIT_MS),
                        false => port.get(WAIT_MS).map(|(key, overlapped)| {
                            out[0].completion_key = key as usize;
                            out[0].overlapped = overlapped;
                            1
                        }),
                    };
                    match taken {
                        Ok(n) => Ok(count(&out[..n], |entry| entry.completion_key as u64)),
                        Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Ok(0),
                        Err(e) => Err(format!("{}: {e}", subject.name())),
                    }
                })
            })
        }
        Subject::CrossbeamChannel => {
            let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
            run(&|record| tx.send(record).is_ok(), &|| -> Taker<'_> {
                let rx = rx.clone();
                Box::new(move || match rx.recv_timeout(WAIT) {
                    Ok(record) => Ok(count(&[record], |record| record.key())),
                    Err(RecvTimeoutError::Timeout) => Ok(0),
                    Err(RecvTimeoutError::Disconnected) => Err("the producer hung up".into()),
                })
            })
        }
        Subject::IocpGetMany
        | Subject::IocpDrain
        | Subject::IocpScalar
        | Subject::CGetMultiple
        | Subject::CPostMany
        | Subject::ArrayQueue
        | Subject::Mpsc
        | Subject::IoUring => Err(format!(
            "{} has a single consumer: no worker-pool form",
            subject.name()
        )),
    }
}

/// A worker's per-record work, the same for every implementation: look at each record's
/// key (the producers shapes' tally). Returns how many records there were.
#[inline]
fn count<T>(records: &[T], key: impl Fn(&T) -> u64) -> usize {
    for record in records {
        black_box(key(record));
    }
    records.len()
}

/// One worker's dequeue: takes what it can within [`WAIT`] and returns how many records.
type Taker<'a> = Box<dyn FnMut() -> Result<usize, String> + Send + 'a>;

/// Runs one producer calling `post` and `workers` threads each calling a [`Taker`] made by
/// `worker`, for `duration`. Returns the records per second the workers took by then.
fn run_pool<'a>(
    workers: usize,
    cores: Option<&[CoreId]>,
    duration: Duration,
    post: &(dyn Fn(Completion) -> bool + Sync),
    worker: &(dyn Fn() -> Taker<'a> + Sync),
) -> Result<f64, String> {
    assert!((1..=MAX_COUNTERS).contains(&workers));
    let flow = Flow::new(Counting::PerConsumer { consumers: workers }, CAPACITY);
    let start = Barrier::new(workers + 2);
    let (flow, start) = (&flow, &start);
    let post = |records: &[Completion], _: &Flow| records.iter().all(|&record| post(record));
    let post = &post;
    thread::scope(|s| {
        s.spawn(move || {
            pin(cores, 0);
            start.wait();
            produce(0, 1, flow, post);
        });
        let takers: Vec<_> = (0..workers)
            .map(|w| {
                let take = worker();
                s.spawn(move || {
                    pin(cores, w + 1);
                    let _stop = StopOnDrop(flow);
                    start.wait();
                    work(w, flow, take)
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        thread::sleep(duration);
        // Acquire: pairs with the workers' release stores of their counts.
        let taken: u64 = flow.taken[..workers]
            .iter()
            .map(|taken| taken.load(Ordering::Acquire))
            .sum();
        let elapsed = began.elapsed();
        flow.stop();
        for taker in takers {
            taker
                .join()
                .unwrap_or_else(|_| Err("a worker panicked".into()))?;
        }
        Ok(taken as f64 / elapsed.as_secs_f64())
    })
}

/// Records a worker takes between two stores of its count.
///
/// The producer reads every worker's count whenever its window looks full, which it does
/// all the time once the workers fall behind it; a store after every record then missed
/// the cache each time, and that bookkeeping, not the queue, set the pace: on a 2-core
/// AMD EPYC, two workers took 17 M records/s from crossbeam-channel and 20-22 M/s with
/// `GetQueuedCompletionStatus`, against 27 M/s and 41-42 M/s with a store every 64. The
/// count a worker has not published yet only makes the producer's window smaller, and a
/// worker that finds nothing publishes all of it.
const PUBLISH_EVERY: u64 = 64;

/// A worker: takes records until the flow stops, publishing its count every
/// [`PUBLISH_EVERY`] records and whenever a take finds none.
fn work(w: usize, flow: &Flow, mut take: Taker<'_>) -> Result<(), String> {
    let mut total: u64 = 0;
    let mut published: u64 = 0;
    while !flow.stopped() && total < MAX_RECORDS {
        let n = take()?;
        total += n as u64;
        if total - published >= PUBLISH_EVERY || (n == 0 && total != published) {
            published = total;
            // Release: pairs with the producer's acquire load of its window and the
            // controller's final read.
            flow.taken[w].store(total, Ordering::Release);
        }
    }
    Ok(())
}
