//! `drain`: post → batched drain throughput, in records per second.
//!
//! Two shapes:
//!
//! * **same thread**: one thread posts a batch of `B` records, then takes all `B` back
//!   (B = 16, 256, 4096). No other core is involved, so this is the cost of the queue's
//!   own operations per record.
//! * **producers**: 1 or 2 threads post continuously while one consumer takes records in
//!   batches of up to [`GMCS_NMAX`]. Each producer keeps at most `4096 / N` records in
//!   flight (it waits while the consumer is that far behind), as an I/O source is bounded
//!   by its in-flight requests; so no queue ever fills, the port's overflow path is not
//!   what is measured, and every implementation runs under the same flow control.
//!
//! Implementations, every queue 4096 records of 24 bytes (a [`Completion`]):
//!
//! * `iocp get_many`: [`Port::get_many`] copying runs out into a buffer;
//! * `iocp drain`: [`Port::drain`], reading the run in place;
//! * `iocp scalar`: `get_many` on a port built with `scalar_drain(true)`, one slot checked
//!   and freed at a time: what batching buys;
//! * `crossbeam ArrayQueue`: `push`, and a `pop` loop;
//! * `std mpsc`: `sync_channel(4096)`, `send`, and a `try_recv` loop;
//! * `io_uring NOP` (same thread only): `B` NOP SQEs, `submit_and_wait(B)`, reap the `B`
//!   CQEs. An io_uring submission queue has a single submitter, so it has no N-producer
//!   form. Skipped, with the reason, where the kernel refuses io_uring.
//!
//! Every consumer does the same per-record work (it counts records per producer, which
//! also drives the flow control), and every variant runs [`Settings::drain_rounds`] times,
//! rounds interleaved so that a burst of background load hits all variants alike; the
//! median is reported. Target: the better of iocp's batched calls ≥ 3× the best peer.

use super::{pin, Backoff, Padded};
use crate::Settings;
use crossbeam_queue::ArrayQueue;
use indicatif::ProgressBar;
use io_uring::{opcode, squeue, IoUring};
use iocp::{Completion, Port, GMCS_NMAX};
use serde::Serialize;
use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// Batch sizes of the same-thread shape.
pub const BATCHES: [usize; 3] = [16, 256, GMCS_NMAX];
/// Producer counts of the producers shape.
pub const PRODUCERS: [usize; 2] = [1, 2];
/// The design target: iocp batched records/s over the best peer's.
pub const TARGET_RATIO: f64 = 3.0;

/// Slots in every queue (the port's default ring, and the most one drain returns).
const CAPACITY: usize = GMCS_NMAX;
/// Producers a [`Tally`] can count.
const MAX_PRODUCERS: usize = 4;
/// How long one iocp dequeue waits for a record before the consumer looks at the clock.
const WAIT: Duration = Duration::from_millis(10);
/// Records moved between two clock reads in the same-thread shape, so that the clock is
/// not part of the per-record cost at small batch sizes.
const RECORDS_PER_CLOCK_READ: usize = 4096;
/// Records a producer posts between two looks at the stop flag.
const POSTS_PER_STOP_CHECK: u64 = 64;
/// Upper bound on records moved in one measurement, whatever the clock says.
const MAX_RECORDS: u64 = 1 << 40;

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// [`Port::get_many`].
    IocpGetMany,
    /// [`Port::drain`].
    IocpDrain,
    /// `get_many` on a `scalar_drain(true)` port.
    IocpScalar,
    /// `crossbeam_queue::ArrayQueue`.
    ArrayQueue,
    /// `std::sync::mpsc::sync_channel`.
    Mpsc,
    /// io_uring NOPs.
    IoUring,
}

/// Every implementation, in table order; io_uring last, as it has no producers form.
const SUBJECTS: [Subject; 6] = [
    Subject::IocpGetMany,
    Subject::IocpDrain,
    Subject::IocpScalar,
    Subject::ArrayQueue,
    Subject::Mpsc,
    Subject::IoUring,
];

impl Subject {
    /// Name in the table and the plots.
    pub fn name(self) -> &'static str {
        match self {
            Subject::IocpGetMany => "iocp get_many",
            Subject::IocpDrain => "iocp drain",
            Subject::IocpScalar => "iocp scalar get_many",
            Subject::ArrayQueue => "crossbeam ArrayQueue",
            Subject::Mpsc => "std mpsc sync_channel",
            Subject::IoUring => "io_uring NOP",
        }
    }

    /// One of iocp's batched dequeues, whose ratio to the best peer has a target.
    pub fn is_iocp_batched(self) -> bool {
        matches!(self, Subject::IocpGetMany | Subject::IocpDrain)
    }

    /// A peer (not iocp).
    pub fn is_peer(self) -> bool {
        matches!(self, Subject::ArrayQueue | Subject::Mpsc | Subject::IoUring)
    }
}

/// How records flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shape {
    /// One thread posts `batch` records, then takes them back.
    SameThread {
        /// Records per round.
        batch: usize,
    },
    /// `producers` threads post continuously; one consumer drains.
    Producers {
        /// Posting threads.
        producers: usize,
    },
}

impl Shape {
    fn all() -> impl Iterator<Item = Shape> {
        let same = BATCHES.map(|batch| Shape::SameThread { batch });
        let producers = PRODUCERS.map(|producers| Shape::Producers { producers });
        same.into_iter().chain(producers)
    }

    /// Name in the table and the plots.
    pub fn label(self) -> String {
        match self {
            Shape::SameThread { batch } => format!("same thread, batch {batch}"),
            Shape::Producers { producers: 1 } => "1 producer".into(),
            Shape::Producers { producers } => format!("{producers} producers"),
        }
    }

    fn subjects(self) -> &'static [Subject] {
        match self {
            Shape::SameThread { .. } => &SUBJECTS,
            // All but io_uring, which has a single submitter.
            Shape::Producers { .. } => &SUBJECTS[..SUBJECTS.len() - 1],
        }
    }

    fn threads(self) -> usize {
        match self {
            Shape::SameThread { .. } => 1,
            Shape::Producers { producers } => producers + 1,
        }
    }
}

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Length of one measurement.
    pub duration_s: f64,
    /// Measurements per variant.
    pub rounds: usize,
    /// [`TARGET_RATIO`].
    pub target_ratio: f64,
    /// One group per shape.
    pub groups: Vec<Group>,
}

/// The implementations measured in one shape.
#[derive(Debug, Serialize)]
pub struct Group {
    /// [`Shape::label`].
    pub label: String,
    /// The shape.
    pub shape: Shape,
    /// Whether its threads were pinned to distinct cores.
    pub pinned: bool,
    /// One row per implementation.
    pub rows: Vec<Row>,
    /// The peer with the most records/s.
    pub best_peer: Option<Subject>,
    /// The better of iocp's batched dequeues over the best peer.
    pub iocp_batched_ratio: Option<f64>,
    /// Whether that ratio reaches [`TARGET_RATIO`].
    pub target_met: Option<bool>,
}

/// One implementation in one shape.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The implementation.
    pub subject: Subject,
    /// [`Subject::name`].
    pub name: &'static str,
    /// What came of it.
    pub outcome: Outcome,
}

/// A measured implementation, or why it was not.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It ran every round.
    Measured {
        /// Median of `runs`.
        records_per_sec: f64,
        /// Records per second of each round, in order.
        runs: Vec<f64>,
        /// `records_per_sec` over the best peer's.
        ratio_to_best_peer: Option<f64>,
    },
    /// It could not run here.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// The median records/s, if measured.
    pub fn records_per_sec(&self) -> Option<f64> {
        match self {
            Outcome::Measured {
                records_per_sec, ..
            } => Some(*records_per_sec),
            Outcome::Skipped { .. } => None,
        }
    }
}

/// Measurements [`run`] makes.
pub fn measurements(settings: &Settings) -> u64 {
    let per_round: usize = Shape::all().map(|shape| shape.subjects().len()).sum();
    (per_round * settings.drain_rounds) as u64
}

/// Measures every shape and implementation, advancing `bar` after each measurement.
pub fn run(settings: &Settings, bar: &ProgressBar) -> Report {
    let io_uring = probe_io_uring();
    let shapes: Vec<Shape> = Shape::all().collect();
    // runs[g][i]: the rates of shape g's subject i so far, or why it cannot run.
    let mut runs: Vec<Vec<Result<Vec<f64>, String>>> = shapes
        .iter()
        .map(|shape| {
            shape
                .subjects()
                .iter()
                .map(|&subject| match (subject, &io_uring) {
                    (Subject::IoUring, Err(reason)) => Err(reason.clone()),
                    _ => Ok(Vec::new()),
                })
                .collect()
        })
        .collect();
    for round in 1..=settings.drain_rounds {
        for (g, &shape) in shapes.iter().enumerate() {
            for (i, &subject) in shape.subjects().iter().enumerate() {
                bar.set_message(format!(
                    "round {round}/{}: {}, {}",
                    settings.drain_rounds,
                    shape.label(),
                    subject.name()
                ));
                let slot = &mut runs[g][i];
                if let Ok(rates) = slot {
                    match measure(shape, subject, settings) {
                        Ok(rate) => rates.push(rate),
                        Err(reason) => *slot = Err(reason),
                    }
                }
                bar.inc(1);
            }
        }
    }
    let groups = shapes
        .iter()
        .zip(runs)
        .map(|(&shape, runs)| summarize(shape, runs, settings))
        .collect();
    Report {
        duration_s: settings.duration.as_secs_f64(),
        rounds: settings.drain_rounds,
        target_ratio: TARGET_RATIO,
        groups,
    }
}

/// Medians, the best peer, and every row's ratio to it.
fn summarize(shape: Shape, runs: Vec<Result<Vec<f64>, String>>, settings: &Settings) -> Group {
    let medians: Vec<Option<f64>> = runs
        .iter()
        .map(|runs| runs.as_ref().ok().and_then(|rates| median(rates)))
        .collect();
    let best_peer = shape
        .subjects()
        .iter()
        .zip(&medians)
        .filter(|(subject, _)| subject.is_peer())
        .filter_map(|(&subject, median)| Some((subject, (*median)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let ratio = |rate: f64| best_peer.map(|(_, best)| rate / best);
    let rows: Vec<Row> = shape
        .subjects()
        .iter()
        .zip(runs)
        .zip(&medians)
        .map(|((&subject, runs), median)| Row {
            subject,
            name: subject.name(),
            outcome: match (runs, median) {
                (Ok(runs), Some(median)) => Outcome::Measured {
                    records_per_sec: *median,
                    runs,
                    ratio_to_best_peer: ratio(*median),
                },
                (Ok(_), None) => Outcome::Skipped {
                    reason: "no rounds ran".into(),
                },
                (Err(reason), _) => Outcome::Skipped { reason },
            },
        })
        .collect();
    let iocp_batched = rows
        .iter()
        .filter(|row| row.subject.is_iocp_batched())
        .filter_map(|row| row.outcome.records_per_sec())
        .max_by(f64::total_cmp);
    let iocp_batched_ratio = iocp_batched.and_then(ratio);
    Group {
        label: shape.label(),
        shape,
        pinned: settings.pin_plan(shape.threads()).is_some(),
        rows,
        best_peer: best_peer.map(|(subject, _)| subject),
        iocp_batched_ratio,
        target_met: iocp_batched_ratio.map(|ratio| ratio >= TARGET_RATIO),
    }
}

/// The median of `values`; `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// One measurement of `subject` in `shape`: records per second, or why it failed.
fn measure(shape: Shape, subject: Subject, settings: &Settings) -> Result<f64, String> {
    match shape {
        Shape::SameThread { batch } => {
            let cores = settings.pin_plan(1);
            thread::scope(|s| {
                s.spawn(|| {
                    pin(cores, 0);
                    same_thread(subject, batch, settings.duration)
                })
                .join()
                .unwrap_or_else(|_| Err("the measurement thread panicked".into()))
            })
        }
        Shape::Producers { producers } => with_producers(subject, producers, settings),
    }
}

/// Turns an `io::Error` from `what` into the reason a row is skipped.
fn io_error(what: &'static str) -> impl Fn(io::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// A port the size of every other queue, scalar for [`Subject::IocpScalar`].
fn port(subject: Subject) -> Result<Port, String> {
    Port::builder()
        .capacity(CAPACITY)
        .scalar_drain(subject == Subject::IocpScalar)
        .build()
        .map_err(io_error("creating the port"))
}

/// The same-thread shape: post `batch` records, take them back, repeat for `duration`.
fn same_thread(subject: Subject, batch: usize, duration: Duration) -> Result<f64, String> {
    let record = |i: usize| Completion::new(0, i as u32, i);
    match subject {
        Subject::IocpGetMany | Subject::IocpScalar => {
            let port = port(subject)?;
            let mut out = vec![Completion::default(); batch];
            timed(batch, duration, |sum| {
                for i in 0..batch {
                    port.post(record(i)).map_err(io_error("post"))?;
                }
                let mut got = 0;
                while got < batch {
                    let drained = port
                        .get_many(&mut out[..batch - got], 1, Some(WAIT))
                        .map_err(io_error("get_many"))?;
                    for record in &out[..drained.count] {
                        *sum += u64::from(record.bytes());
                    }
                    got += drained.count;
                    if drained.count == 0 {
                        return Err(format!("{} posted records never came back", batch - got));
                    }
                }
                Ok(())
            })
        }
        Subject::IocpDrain => {
            let port = port(subject)?;
            timed(batch, duration, |sum| {
                for i in 0..batch {
                    port.post(record(i)).map_err(io_error("post"))?;
                }
                let mut got = 0;
                while got < batch {
                    let records = port
                        .drain(batch - got, Some(WAIT))
                        .map_err(io_error("drain"))?;
                    got += records.len();
                    for record in records {
                        *sum += u64::from(record.bytes());
                    }
                }
                Ok(())
            })
        }
        Subject::ArrayQueue => {
            let queue = ArrayQueue::new(CAPACITY);
            timed(batch, duration, |sum| {
                for i in 0..batch {
                    queue.push(record(i)).map_err(|_| "the queue is full")?;
                }
                let mut got = 0;
                while let Some(record) = queue.pop() {
                    *sum += u64::from(record.bytes());
                    got += 1;
                }
                check_all_back(got, batch)
            })
        }
        Subject::Mpsc => {
            let (tx, rx) = mpsc::sync_channel(CAPACITY);
            timed(batch, duration, |sum| {
                for i in 0..batch {
                    tx.try_send(record(i)).map_err(|e| format!("send: {e}"))?;
                }
                let mut got = 0;
                while let Ok(record) = rx.try_recv() {
                    *sum += u64::from(record.bytes());
                    got += 1;
                }
                check_all_back(got, batch)
            })
        }
        Subject::IoUring => {
            let mut ring = IoUring::new(CAPACITY as u32).map_err(io_error("io_uring_setup"))?;
            let nops: Vec<squeue::Entry> = (0..batch)
                .map(|i| opcode::Nop::new().build().user_data(i as u64))
                .collect();
            timed(batch, duration, |sum| {
                // SAFETY: a NOP names no buffer and no file: nothing has to outlive it.
                unsafe { ring.submission().push_multiple(&nops) }
                    .map_err(|_| "the submission queue is full")?;
                ring.submit_and_wait(batch)
                    .map_err(io_error("io_uring_enter"))?;
                let mut got = 0;
                for cqe in ring.completion() {
                    *sum += cqe.user_data();
                    got += 1;
                }
                check_all_back(got, batch)
            })
        }
    }
}

/// A round must get back exactly what it posted.
fn check_all_back(got: usize, batch: usize) -> Result<(), String> {
    if got == batch {
        Ok(())
    } else {
        Err(format!("{got} of {batch} records came back"))
    }
}

/// Runs `round` (which moves `batch` records and adds them into its checksum) once to warm
/// up, then repeatedly for `duration`. Returns records per second.
fn timed(
    batch: usize,
    duration: Duration,
    mut round: impl FnMut(&mut u64) -> Result<(), String>,
) -> Result<f64, String> {
    let mut checksum = 0;
    // The first round faults in the queue's memory.
    round(&mut checksum)?;
    let rounds_per_clock_read = (RECORDS_PER_CLOCK_READ / batch).max(1) as u64;
    let start = Instant::now();
    let deadline = start + duration;
    let mut rounds = 0;
    while rounds * (batch as u64) < MAX_RECORDS {
        for _ in 0..rounds_per_clock_read {
            round(&mut checksum)?;
        }
        rounds += rounds_per_clock_read;
        if Instant::now() >= deadline {
            break;
        }
    }
    black_box(checksum);
    Ok((rounds * batch as u64) as f64 / start.elapsed().as_secs_f64())
}

/// State the producers and the consumer share.
struct Flow {
    /// Set when the consumer is done (or gone); producers then stop.
    stop: Padded<AtomicBool>,
    /// Records the consumer has taken from each producer.
    taken: [Padded<AtomicU64>; MAX_PRODUCERS],
    /// Records a producer may have in flight.
    window: u64,
}

impl Flow {
    fn stopped(&self) -> bool {
        // Relaxed: a flag with no data behind it; a late look costs one more post.
        self.stop.load(Ordering::Relaxed)
    }
}

/// Sets the stop flag when dropped, also when the consumer unwinds.
struct StopOnDrop<'a>(&'a Flow);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        // Relaxed: as in `Flow::stopped`.
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// The consumer's per-record work: counting records per producer (the record's key).
#[derive(Default)]
struct Tally {
    counts: [u64; MAX_PRODUCERS],
}

impl Tally {
    #[inline]
    fn take(&mut self, record: &Completion) {
        self.counts[record.key() as usize % MAX_PRODUCERS] += 1;
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The producers shape for `subject`.
fn with_producers(subject: Subject, producers: usize, settings: &Settings) -> Result<f64, String> {
    match subject {
        Subject::IocpGetMany | Subject::IocpScalar => {
            let port = port(subject)?;
            let consumer = port.clone();
            let mut out = vec![Completion::default(); GMCS_NMAX];
            run_producers(
                producers,
                settings,
                |record, _| port.post(record).is_ok(),
                move |tally| {
                    let drained = consumer
                        .get_many(&mut out, 1, Some(WAIT))
                        .map_err(io_error("get_many"))?;
                    for record in &out[..drained.count] {
                        tally.take(record);
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
                settings,
                |record, _| port.post(record).is_ok(),
                move |tally| match consumer.drain(GMCS_NMAX, Some(WAIT)) {
                    Ok(records) => {
                        let n = records.len();
                        records.for_each(|record| tally.take(&record));
                        Ok(n)
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
                    Err(e) => Err(format!("drain: {e}")),
                },
            )
        }
        Subject::ArrayQueue => {
            let queue = ArrayQueue::new(CAPACITY);
            let queue = &queue;
            let mut idle = Backoff::default();
            run_producers(
                producers,
                settings,
                |mut record, flow| {
                    let mut full = Backoff::default();
                    loop {
                        match queue.push(record) {
                            Ok(()) => return true,
                            Err(_) if flow.stopped() => return false,
                            Err(back) => record = back,
                        }
                        full.snooze();
                    }
                },
                move |tally| {
                    let mut n = 0;
                    while n < GMCS_NMAX {
                        let Some(record) = queue.pop() else { break };
                        tally.take(&record);
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
                settings,
                |record, _| tx.send(record).is_ok(),
                move |tally| {
                    let mut n = 0;
                    while n < GMCS_NMAX {
                        match rx.try_recv() {
                            Ok(record) => tally.take(&record),
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
    }
}

/// A polling consumer that found nothing backs off, as a blocking one would sleep.
fn snooze_if_idle(idle: &mut Backoff, taken: usize) {
    if taken == 0 {
        idle.snooze();
    } else {
        idle.reset();
    }
}

/// Runs `producers` threads calling `post` with their records, and one consumer calling
/// `take` for [`Settings::duration`]. Returns the records per second the consumer took.
///
/// `post` returns `false` when the producer should stop (the queue is gone or the flow
/// says stop); `take` hands each record it takes to the tally and returns how many. The
/// consumer owns `take` and drops it when done, which disconnects a channel's producers.
fn run_producers(
    producers: usize,
    settings: &Settings,
    post: impl Fn(Completion, &Flow) -> bool + Sync,
    take: impl FnMut(&mut Tally) -> Result<usize, String> + Send,
) -> Result<f64, String> {
    assert!((1..=MAX_PRODUCERS).contains(&producers));
    let flow = Flow {
        stop: Padded::default(),
        taken: Default::default(),
        window: (CAPACITY / producers) as u64,
    };
    let cores = settings.pin_plan(producers + 1);
    let start = Barrier::new(producers + 1);
    let (flow, start, post) = (&flow, &start, &post);
    thread::scope(|s| {
        for p in 0..producers {
            s.spawn(move || {
                pin(cores, p + 1);
                start.wait();
                produce(p, flow, post);
            });
        }
        s.spawn(move || {
            pin(cores, 0);
            let _stop = StopOnDrop(flow);
            start.wait();
            consume(producers, flow, take, settings.duration)
        })
        .join()
        .unwrap_or_else(|_| Err("the consumer panicked".into()))
    })
}

/// A producer: posts records keyed by its index, at most `flow.window` ahead of the
/// consumer, until told to stop.
fn produce(p: usize, flow: &Flow, post: &impl Fn(Completion, &Flow) -> bool) {
    let mut sent: u64 = 0;
    // The consumer's count for this producer when last read: re-read only when the window
    // looks full, so the producer does not pull the consumer's cache line on every post.
    let mut taken: u64 = 0;
    let mut backoff = Backoff::default();
    while sent < MAX_RECORDS {
        if sent - taken >= flow.window {
            // Acquire: pairs with the consumer's release store after it took the records.
            taken = flow.taken[p].load(Ordering::Acquire);
            if sent - taken >= flow.window {
                if flow.stopped() {
                    return;
                }
                backoff.snooze();
                continue;
            }
            backoff.reset();
        }
        if !post(Completion::new(p as u64, sent as u32, sent as usize), flow) {
            return;
        }
        sent += 1;
        if sent.is_multiple_of(POSTS_PER_STOP_CHECK) && flow.stopped() {
            return;
        }
    }
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
    // Relaxed: as in `Flow::stopped`.
    flow.stop.store(true, Ordering::Relaxed);
    drop(take);
    result
}

/// Whether io_uring works here: the kernel may lack it, or a sysctl or seccomp filter may
/// refuse it (`EPERM`, `ENOSYS`). Returns the reason to print when it does not.
fn probe_io_uring() -> Result<(), String> {
    let mut ring = IoUring::new(8).map_err(io_error("io_uring_setup"))?;
    // SAFETY: a NOP names no buffer and no file: nothing has to outlive it.
    unsafe {
        ring.submission()
            .push(&opcode::Nop::new().build().user_data(7))
    }
    .map_err(|_| "the submission queue is full")?;
    ring.submit_and_wait(1)
        .map_err(io_error("io_uring_enter"))?;
    let cqe = ring.completion().next();
    match cqe {
        Some(cqe) if cqe.user_data() == 7 && cqe.result() == 0 => Ok(()),
        other => Err(format!("a NOP did not complete as expected: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            quick: true,
            duration: Duration::from_millis(5),
            drain_rounds: 1,
            wake_rounds: 1,
            idle_wait: Duration::from_millis(10),
            cores: Vec::new(),
        }
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn every_subject_moves_records_in_every_shape() {
        let settings = settings();
        let io_uring = probe_io_uring();
        for shape in Shape::all() {
            for &subject in shape.subjects() {
                match measure(shape, subject, &settings) {
                    Ok(rate) => assert!(rate > 0.0, "{shape:?} {subject:?}"),
                    Err(reason) if subject == Subject::IoUring && io_uring.is_err() => {
                        assert!(!reason.is_empty())
                    }
                    Err(reason) => panic!("{shape:?} {subject:?}: {reason}"),
                }
            }
        }
    }

    #[test]
    fn the_ratio_is_to_the_best_peer() {
        let runs = vec![
            Ok(vec![600.0]),
            Ok(vec![500.0]),
            Ok(vec![100.0]),
            Ok(vec![200.0]),
            Ok(vec![150.0]),
            Err("refused".to_string()),
        ];
        let group = summarize(Shape::SameThread { batch: 16 }, runs, &settings());
        assert_eq!(group.best_peer, Some(Subject::ArrayQueue));
        assert_eq!(group.iocp_batched_ratio, Some(3.0));
        assert_eq!(group.target_met, Some(true));
        assert!(matches!(group.rows[5].outcome, Outcome::Skipped { .. }));
    }
}
