//! `drain`: post → dequeue throughput, in records per second, iocp in Rust and through its
//! C ABI against its peers.
//!
//! Shapes:
//!
//! * **same thread**: one thread posts a batch of `B` records, then takes all `B` back
//!   (B = 16, 256, 4096). No other core is involved, so this is the cost of the queue's
//!   own operations per record.
//! * **same thread, batched post**: the same with `B` = [`POST_BATCH`], iocp posting the
//!   batch with one [`Port::post_many`]; the peers post as above (io_uring's submission is
//!   batched by nature).
//! * **producers**: 1 or 2 threads post continuously while one consumer takes records in
//!   batches of up to [`GMCS_NMAX`]. Each producer keeps at most `4096 / N` records in
//!   flight (it waits while the consumer is that far behind), as an I/O source is bounded
//!   by its in-flight requests; so no queue ever fills, the port's overflow path is not
//!   what is measured, and every implementation runs under the same flow control.
//! * **batched post**: the producers shape with iocp's producers posting [`POST_BATCH`]
//!   records per [`Port::post_many`]; the peers post one record at a time, as they must.
//! * **worker pool**: 1 producer (flow-controlled as above, 4096 in flight) and `W` = 2 or
//!   4 worker threads, each taking records in a loop: one at a time ([`Port::get`],
//!   `GetQueuedCompletionStatus`, crossbeam-channel's `recv`) or up to [`TAKE_BATCH`]
//!   (the non-exclusive [`Port::get_up_to`], `GetQueuedCompletionStatusEx`). The pool's
//!   ports keep the default concurrency value (the number of CPUs), as a program that
//!   passes 0 gets: the design's worker pool is Windows' and the value is part of it.
//!   Records/s is what all workers took by the deadline, read by a controller thread that
//!   sleeps through the measurement.
//!
//! Implementations, every queue 4096 records of 24 bytes (a [`iocp::Completion`]):
//!
//! * `iocp get_many`: [`Port::get_many`] copying runs out into a buffer;
//! * `iocp drain`: [`Port::drain`], reading the run in place;
//! * `iocp scalar`: `get_many` on a port built with `scalar_drain(true)`, one slot checked
//!   and freed at a time: what batching buys;
//! * `iocp get`, `iocp get_up_to`: the worker pool's dequeues;
//! * `C PQCS+GMCS`, `C GQCS`, `C GQCSEx`: `PostQueuedCompletionStatus` with
//!   `GetMultipleCompletionStatus`, `GetQueuedCompletionStatus` or
//!   `GetQueuedCompletionStatusEx`, called in `libiocp.so` as a C program calls them (see
//!   [`crate::libiocp`]), in the same loops as their Rust counterparts;
//! * `C post_many+GMCS` (batched post shapes): `iocp_post_many` with
//!   `GetMultipleCompletionStatus`, the C ABI's counterpart of `iocp get_many` there;
//! * `crossbeam ArrayQueue`: `push`, and a `pop` loop;
//! * `std mpsc`: `sync_channel(4096)`, `send`, and a `try_recv` loop;
//! * `crossbeam-channel`: `bounded(4096)`, `send`, and `recv_timeout` in every worker
//!   (the pool's peer: a multi-consumer channel);
//! * `io_uring NOP` (same thread only): `B` NOP SQEs, `submit_and_wait(B)`, reap the `B`
//!   CQEs. An io_uring submission queue has a single submitter, so it has no N-producer
//!   form. Skipped, with the reason, where the kernel refuses io_uring.
//!
//! Every consumer does the same per-record work (it counts records per producer, which
//! also drives the flow control), and every variant runs [`Settings::drain_rounds`] times,
//! rounds interleaved so that a burst of background load hits all variants alike; the
//! median is reported. With `--pin`, every shape whose threads the machine can give a core
//! each runs twice, pinned and unpinned, as two groups.
//!
//! Targets (DESIGN.md, "Performance targets"), each a ratio of medians in one group:
//!
//! | shape | ratio | target |
//! | --- | --- | --- |
//! | same thread | better of `get_many`/`drain` over the best peer | ≥ 1.8 |
//! | producers | the same; `C PQCS+GMCS` over the best peer | ≥ 1.5; ≥ 1.2 |
//! | batched post (both) | better of `get_many`/`drain` over the best peer | ≥ 3 |
//! | worker pool | each iocp row (Rust and C) over the best peer | ≥ 1.0 |
//! | every shape with C rows | each C row over its Rust counterpart | ≥ 0.9 |

mod flow;
mod pool;
mod producers;
mod same_thread;

use super::spread::median;
use super::{Bound, Target};
use crate::libiocp;
use crate::Settings;
use indicatif::ProgressBar;
use io_uring::{opcode, IoUring};
use iocp::{Port, GMCS_NMAX};
use serde::Serialize;
use std::io;
use std::time::Duration;

/// Batch sizes of the same-thread shape.
pub const BATCHES: [usize; 3] = [16, 256, GMCS_NMAX];
/// Producer counts of the producers and batched-post shapes.
pub const PRODUCERS: [usize; 2] = [1, 2];
/// Records per [`Port::post_many`] in the batched-post shapes.
pub const POST_BATCH: usize = 32;
/// Worker counts of the worker-pool shape.
pub const WORKERS: [usize; 2] = [2, 4];
/// Most records one `get_up_to` / `GetQueuedCompletionStatusEx` takes in the pool.
pub const TAKE_BATCH: usize = 32;

/// Slots in every queue (the port's default ring, and the most one drain returns).
const CAPACITY: usize = GMCS_NMAX;
/// How long one blocking dequeue waits for a record before its caller looks at the clock.
const WAIT: Duration = Duration::from_millis(10);
/// [`WAIT`] as a C timeout.
const WAIT_MS: libiocp::Dword = 10;
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
    /// [`Port::get`], in every worker.
    IocpGet,
    /// [`Port::get_up_to`], in every worker.
    IocpGetUpTo,
    /// `PostQueuedCompletionStatus` and `GetMultipleCompletionStatus` in `libiocp.so`.
    CGetMultiple,
    /// `iocp_post_many` and `GetMultipleCompletionStatus` in `libiocp.so`.
    CPostMany,
    /// `GetQueuedCompletionStatus` in `libiocp.so`, in every worker.
    CGet,
    /// `GetQueuedCompletionStatusEx` in `libiocp.so`, in every worker.
    CGetEx,
    /// `crossbeam_queue::ArrayQueue`.
    ArrayQueue,
    /// `std::sync::mpsc::sync_channel`.
    Mpsc,
    /// `crossbeam_channel::bounded`, in every worker.
    CrossbeamChannel,
    /// io_uring NOPs.
    IoUring,
}

impl Subject {
    /// Name in the table and the plots.
    pub fn name(self) -> &'static str {
        match self {
            Subject::IocpGetMany => "iocp get_many",
            Subject::IocpDrain => "iocp drain",
            Subject::IocpScalar => "iocp scalar get_many",
            Subject::IocpGet => "iocp get",
            Subject::IocpGetUpTo => "iocp get_up_to",
            Subject::CGetMultiple => "C PQCS+GMCS",
            Subject::CPostMany => "C post_many+GMCS",
            Subject::CGet => "C GQCS",
            Subject::CGetEx => "C GQCSEx",
            Subject::ArrayQueue => "crossbeam ArrayQueue",
            Subject::Mpsc => "std mpsc sync_channel",
            Subject::CrossbeamChannel => "crossbeam-channel",
            Subject::IoUring => "io_uring NOP",
        }
    }

    /// A peer (not iocp).
    pub fn is_peer(self) -> bool {
        matches!(
            self,
            Subject::ArrayQueue | Subject::Mpsc | Subject::CrossbeamChannel | Subject::IoUring
        )
    }

    /// For a call through the C ABI, the Rust call it is measured against.
    pub fn rust_counterpart(self) -> Option<Subject> {
        match self {
            Subject::CGetMultiple | Subject::CPostMany => Some(Subject::IocpGetMany),
            Subject::CGet => Some(Subject::IocpGet),
            Subject::CGetEx => Some(Subject::IocpGetUpTo),
            _ => None,
        }
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
    /// The same, iocp posting the batch with one `post_many`.
    SameThreadBatchedPost {
        /// Records per round.
        batch: usize,
    },
    /// `producers` threads post continuously; one consumer drains.
    Producers {
        /// Posting threads.
        producers: usize,
    },
    /// The same, iocp's producers posting `batch` records per `post_many`.
    BatchedPost {
        /// Posting threads.
        producers: usize,
        /// Records per `post_many`.
        batch: usize,
    },
    /// One producer; `workers` threads take records.
    Pool {
        /// Taking threads.
        workers: usize,
    },
}

impl Shape {
    fn all() -> impl Iterator<Item = Shape> {
        let same = BATCHES.map(|batch| Shape::SameThread { batch });
        let same_batched = Shape::SameThreadBatchedPost { batch: POST_BATCH };
        let producers = PRODUCERS.map(|producers| Shape::Producers { producers });
        let batched = PRODUCERS.map(|producers| Shape::BatchedPost {
            producers,
            batch: POST_BATCH,
        });
        let pools = WORKERS.map(|workers| Shape::Pool { workers });
        same.into_iter()
            .chain([same_batched])
            .chain(producers)
            .chain(batched)
            .chain(pools)
    }

    /// Name in the table and the plots.
    pub fn label(self) -> String {
        let producers = |n: usize| match n {
            1 => "1 producer".to_owned(),
            n => format!("{n} producers"),
        };
        match self {
            Shape::SameThread { batch } => format!("same thread, batch {batch}"),
            Shape::SameThreadBatchedPost { batch } => format!("same thread, post_many {batch}"),
            Shape::Producers { producers: n } => producers(n),
            Shape::BatchedPost {
                producers: n,
                batch,
            } => format!("{}, post_many {batch}", producers(n)),
            Shape::Pool { workers } => format!("pool, {workers} workers"),
        }
    }

    fn subjects(self) -> &'static [Subject] {
        use Subject::*;
        match self {
            Shape::SameThread { .. } => &[
                IocpGetMany,
                IocpDrain,
                IocpScalar,
                CGetMultiple,
                ArrayQueue,
                Mpsc,
                IoUring,
            ],
            Shape::SameThreadBatchedPost { .. } => {
                &[IocpGetMany, IocpDrain, CPostMany, ArrayQueue, Mpsc, IoUring]
            }
            // No io_uring: a submission queue has a single submitter.
            Shape::Producers { .. } => &[
                IocpGetMany,
                IocpDrain,
                IocpScalar,
                CGetMultiple,
                ArrayQueue,
                Mpsc,
            ],
            Shape::BatchedPost { .. } => &[IocpGetMany, IocpDrain, CPostMany, ArrayQueue, Mpsc],
            Shape::Pool { .. } => &[IocpGet, IocpGetUpTo, CGet, CGetEx, CrossbeamChannel],
        }
    }

    fn threads(self) -> usize {
        match self {
            Shape::SameThread { .. } | Shape::SameThreadBatchedPost { .. } => 1,
            Shape::Producers { producers } | Shape::BatchedPost { producers, .. } => producers + 1,
            Shape::Pool { workers } => workers + 1,
        }
    }

    /// The design's bound on the better of iocp's batched dequeues over the best peer.
    fn batched_target(self) -> Option<f64> {
        match self {
            Shape::SameThread { .. } => Some(1.8),
            Shape::Producers { .. } => Some(1.5),
            Shape::SameThreadBatchedPost { .. } | Shape::BatchedPost { .. } => Some(3.0),
            Shape::Pool { .. } => None,
        }
    }
}

/// The design's bound on a C ABI row over its Rust counterpart.
const C_TO_RUST: f64 = 0.9;
/// The design's bound on `C PQCS+GMCS` over the best peer with producer threads.
const C_PRODUCERS_TO_PEER: f64 = 1.2;
/// The design's bound on every iocp worker-pool row over the best peer.
const POOL_TO_PEER: f64 = 1.0;

/// One shape, pinned or not: one group of the report.
#[derive(Clone, Copy, Debug)]
struct Variant {
    shape: Shape,
    pinned: bool,
}

impl Variant {
    /// Every shape unpinned; with `--pin`, those the machine can pin also pinned (first).
    fn all(settings: &Settings) -> Vec<Variant> {
        Shape::all()
            .flat_map(|shape| {
                let pinned = settings.pin_plan(shape.threads()).is_some();
                [
                    pinned.then_some(Variant {
                        shape,
                        pinned: true,
                    }),
                    Some(Variant {
                        shape,
                        pinned: false,
                    }),
                ]
            })
            .flatten()
            .collect()
    }

    fn cores(self, settings: &Settings) -> Option<&[core_affinity::CoreId]> {
        self.pinned
            .then(|| settings.pin_plan(self.shape.threads()))
            .flatten()
    }
}

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Length of one measurement.
    pub duration_s: f64,
    /// Measurements per variant.
    pub rounds: usize,
    /// One group per shape and pinning.
    pub groups: Vec<Group>,
}

/// The implementations measured in one shape, pinned or not.
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
    /// The design's targets for this shape, with this run's ratios.
    pub targets: Vec<Target>,
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
    let per_round: usize = Variant::all(settings)
        .iter()
        .map(|variant| variant.shape.subjects().len())
        .sum();
    (per_round * settings.drain_rounds) as u64
}

/// Measures every variant and implementation, advancing `bar` after each measurement.
pub fn run(settings: &Settings, bar: &ProgressBar) -> Report {
    let io_uring = probe_io_uring();
    bar.set_message("building libiocp.so for the C ABI rows");
    let c_abi = libiocp::library().map(drop);
    let get_ex = libiocp::library().and_then(libiocp::Library::has_get_ex);
    let variants = Variant::all(settings);
    // runs[g][i]: the rates of variant g's subject i so far, or why it cannot run.
    let mut runs: Vec<Vec<Result<Vec<f64>, String>>> = variants
        .iter()
        .map(|variant| {
            variant
                .shape
                .subjects()
                .iter()
                .map(|&subject| {
                    let available = match subject {
                        Subject::IoUring => io_uring.clone(),
                        Subject::CGetEx => get_ex.clone(),
                        Subject::CGetMultiple | Subject::CPostMany | Subject::CGet => c_abi.clone(),
                        _ => Ok(()),
                    };
                    available.map(|()| Vec::new())
                })
                .collect()
        })
        .collect();
    for round in 1..=settings.drain_rounds {
        for (g, &variant) in variants.iter().enumerate() {
            for (i, &subject) in variant.shape.subjects().iter().enumerate() {
                bar.set_message(format!(
                    "round {round}/{}: {}{}, {}",
                    settings.drain_rounds,
                    variant.shape.label(),
                    if variant.pinned { " (pinned)" } else { "" },
                    subject.name()
                ));
                let slot = &mut runs[g][i];
                if let Ok(rates) = slot {
                    match measure(variant, subject, settings) {
                        Ok(rate) => rates.push(rate),
                        Err(reason) => *slot = Err(reason),
                    }
                }
                bar.inc(1);
            }
        }
    }
    let groups = variants
        .iter()
        .zip(runs)
        .map(|(&variant, runs)| summarize(variant, runs))
        .collect();
    Report {
        duration_s: settings.duration.as_secs_f64(),
        rounds: settings.drain_rounds,
        groups,
    }
}

/// Medians, the best peer, every row's ratio to it, and the shape's targets.
fn summarize(variant: Variant, runs: Vec<Result<Vec<f64>, String>>) -> Group {
    let shape = variant.shape;
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
    let over_best = |rate: Option<f64>| Some(rate? / best_peer?.1);
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
                    ratio_to_best_peer: over_best(Some(*median)),
                },
                (Ok(_), None) => Outcome::Skipped {
                    reason: "no rounds ran".into(),
                },
                (Err(reason), _) => Outcome::Skipped { reason },
            },
        })
        .collect();
    let targets = targets(shape, &rows, over_best);
    Group {
        label: shape.label(),
        shape,
        pinned: variant.pinned,
        rows,
        best_peer: best_peer.map(|(subject, _)| subject),
        targets,
    }
}

/// The design's targets for `shape` (see the module docs), on `rows`' medians;
/// `over_best` divides a rate by the best peer's.
fn targets(
    shape: Shape,
    rows: &[Row],
    over_best: impl Fn(Option<f64>) -> Option<f64>,
) -> Vec<Target> {
    let rate = |subject: Subject| {
        rows.iter()
            .find(|row| row.subject == subject)
            .and_then(|row| row.outcome.records_per_sec())
    };
    let mut targets = Vec::new();
    if let Some(bound) = shape.batched_target() {
        let batched = [Subject::IocpGetMany, Subject::IocpDrain]
            .into_iter()
            .filter_map(rate)
            .max_by(f64::total_cmp);
        targets.push(Target::new(
            "iocp batched / best peer",
            over_best(batched),
            Bound::AtLeast(bound),
        ));
    }
    for row in rows {
        let subject = row.subject;
        let to_peer = match (shape, subject) {
            (Shape::Producers { .. }, Subject::CGetMultiple) => Some(C_PRODUCERS_TO_PEER),
            (Shape::Pool { .. }, _) if !subject.is_peer() => Some(POOL_TO_PEER),
            _ => None,
        };
        if let Some(bound) = to_peer {
            targets.push(Target::new(
                format!("{} / best peer", subject.name()),
                over_best(rate(subject)),
                Bound::AtLeast(bound),
            ));
        }
        if let Some(rust) = subject.rust_counterpart() {
            let ratio = rate(subject).zip(rate(rust)).map(|(c, rust)| c / rust);
            targets.push(Target::new(
                format!("{} / {}", subject.name(), rust.name()),
                ratio,
                Bound::AtLeast(C_TO_RUST),
            ));
        }
    }
    targets
}

/// One measurement of `subject` in `variant`: records per second, or why it failed.
fn measure(variant: Variant, subject: Subject, settings: &Settings) -> Result<f64, String> {
    let cores = variant.cores(settings);
    let duration = settings.duration;
    match variant.shape {
        Shape::SameThread { batch } => same_thread::measure(subject, batch, false, cores, duration),
        Shape::SameThreadBatchedPost { batch } => {
            same_thread::measure(subject, batch, true, cores, duration)
        }
        Shape::Producers { producers } => {
            producers::measure(subject, producers, 1, cores, duration)
        }
        Shape::BatchedPost { producers, batch } => {
            producers::measure(subject, producers, batch, cores, duration)
        }
        Shape::Pool { workers } => pool::measure(subject, workers, cores, duration),
    }
}

/// Turns an `io::Error` from `what` into the reason a row is skipped.
fn io_error(what: &'static str) -> impl Fn(io::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// The reason a C ABI call failed, from `errno`.
fn c_error(what: &'static str) -> String {
    io_error(what)(io::Error::last_os_error())
}

/// A port the size of every other queue, scalar for [`Subject::IocpScalar`].
fn port(subject: Subject) -> Result<Port, String> {
    Port::builder()
        .capacity(CAPACITY)
        .scalar_drain(subject == Subject::IocpScalar)
        .build()
        .map_err(io_error("creating the port"))
}

/// A port made through the C ABI (its ring has the default capacity, 4096).
fn c_port() -> Result<libiocp::CPort, String> {
    libiocp::CPort::new(libiocp::library()?)
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
            stall_probe: Duration::from_millis(10),
            cores: Vec::new(),
            echo_connections: None,
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
        let get_ex = libiocp::library().and_then(libiocp::Library::has_get_ex);
        for shape in Shape::all() {
            let variant = Variant {
                shape,
                pinned: false,
            };
            for &subject in shape.subjects() {
                // On a loaded machine the 5 ms window can end before a producer thread
                // first runs: a rate of zero is measured again, up to ten times.
                let mut outcome = measure(variant, subject, &settings);
                for _ in 0..10 {
                    if !matches!(outcome, Ok(rate) if rate == 0.0) {
                        break;
                    }
                    outcome = measure(variant, subject, &settings);
                }
                match outcome {
                    Ok(rate) => assert!(rate > 0.0, "{shape:?} {subject:?}"),
                    Err(reason) if subject == Subject::IoUring && io_uring.is_err() => {
                        assert!(!reason.is_empty())
                    }
                    Err(reason) if subject == Subject::CGetEx && get_ex.is_err() => {
                        assert!(!reason.is_empty())
                    }
                    Err(reason) => panic!("{shape:?} {subject:?}: {reason}"),
                }
            }
        }
    }

    #[test]
    fn pinning_doubles_only_the_shapes_the_machine_can_pin() {
        let mut settings = settings();
        settings.cores = (0..2).map(|id| core_affinity::CoreId { id }).collect();
        let variants = Variant::all(&settings);
        let count = |shape: Shape| variants.iter().filter(|v| v.shape == shape).count();
        assert_eq!(count(Shape::SameThread { batch: 16 }), 2);
        assert_eq!(count(Shape::Producers { producers: 1 }), 2);
        assert_eq!(count(Shape::Producers { producers: 2 }), 1);
        assert_eq!(count(Shape::Pool { workers: 2 }), 1);
        assert!(Variant::all(&self::settings()).iter().all(|v| !v.pinned));
    }

    #[test]
    fn the_ratios_are_to_the_best_peer_and_to_rust() {
        let runs = vec![
            Ok(vec![600.0]),
            Ok(vec![500.0]),
            Ok(vec![100.0]),
            Ok(vec![540.0]),
            Ok(vec![200.0]),
            Ok(vec![150.0]),
            Err("refused".to_string()),
        ];
        let variant = Variant {
            shape: Shape::SameThread { batch: 16 },
            pinned: false,
        };
        let group = summarize(variant, runs);
        assert_eq!(group.best_peer, Some(Subject::ArrayQueue));
        assert!(matches!(group.rows[6].outcome, Outcome::Skipped { .. }));
        let [batched, c_to_rust] = &group.targets[..] else {
            panic!("{:?}", group.targets)
        };
        assert_eq!((batched.ratio, batched.met), (Some(3.0), Some(true)));
        assert_eq!((c_to_rust.ratio, c_to_rust.met), (Some(0.9), Some(true)));
    }
}
