//! `wake`: how long a post takes to reach a waiting thread, and what an idle waiter costs.
//!
//! **Spinning wake (ping-pong).** Two threads wake each other in turn, closed loop: thread
//! A wakes B and waits to be woken back; B waits, then wakes A. Every round trip A sees
//! (two wakes of a waiting thread) is recorded in an HdrHistogram. Implementations:
//!
//! * `iocp ports`: two [`Port`]s; A posts to port 1 and calls `get(None)` on port 2, B
//!   the mirror image. The port's waiter spins adaptively before it parks on its futex;
//! * `raw futex`: the textbook event on two `AtomicU32`s: store 1 and `FUTEX_WAKE`;
//!   swap to 0, or `FUTEX_WAIT` while it reads 0;
//! * `mio Waker`: two `mio::Poll`s, each with a `Waker` (an eventfd on Linux); A wakes
//!   B's and polls its own.
//!
//! Waits have no timeout, as in the code measured: a watchdog wakes both threads if a
//! measurement overruns (a lost wake-up would), and reports it.
//!
//! **Sleeping wake.** One thread posts every [`SLEEP_GAP`] (2 ms) to a waiter that has long
//! since gone to sleep; each record carries the time just before its post, and the waiter
//! records the time from there to its return. Implementations: `iocp ports`
//! ([`Port::get`]), `iocp C GQCS` (`GetQueuedCompletionStatus` in `libiocp.so`, called as
//! a C program calls it: see [`crate::libiocp`]) and `raw futex` (the event above, the
//! time stamp in a word beside it). The waiters' timeout, [`LOST_WAKE`], only bounds a
//! measurement whose wake-up got lost. A round sends `duration / 2 ms` wakes (at least
//! [`MIN_SLEEPING_WAKES`]).
//!
//! Each implementation runs [`Settings::wake_rounds`] measurements (a ping-pong lasts
//! [`Settings::duration`] after a warm-up of a tenth of that), rounds interleaved; the
//! histograms are merged. With `--pin` each kind runs twice, pinned and unpinned, when the
//! machine has two cores for it.
//!
//! **Idle waiter.** One thread calls `get` with a timeout of [`Settings::idle_wait`] on an
//! empty port; its CPU time (`CLOCK_THREAD_CPUTIME_ID`) over the wall time is the share of
//! a core an idle waiter burns.
//!
//! Targets (DESIGN.md): spinning p50(iocp) ≤ 0.5 × p50(futex); sleeping p50 ≤ 1.1 ×
//! p50(futex), in Rust and through the C ABI; the idle waiter under 1% of a core.

use super::{pin, Bound, Target};
use crate::latency::{self, CurvePoint, Percentiles};
use crate::{libiocp, sys, Settings};
use core_affinity::CoreId;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use iocp::{Completion, Port};
use mio::{Events, Poll, Token, Waker};
use serde::Serialize;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// The design target: spinning wake, iocp's median round trip over the raw futex's.
pub const TARGET_SPINNING_P50: f64 = 0.5;
/// The design target: sleeping wake, iocp's median wake over the raw futex's.
pub const TARGET_SLEEPING_P50: f64 = 1.1;
/// The design target: an idle waiter's CPU use, in percent of a core.
pub const TARGET_IDLE_PERCENT: f64 = 1.0;
/// Time between two posts of the sleeping wake.
pub const SLEEP_GAP: Duration = Duration::from_millis(2);
/// Fewest wakes in one sleeping-wake measurement.
pub const MIN_SLEEPING_WAKES: u64 = 25;

/// Upper bound on round trips in one measurement, whatever the clock says.
const MAX_ROUND_TRIPS: u64 = 100_000_000;
/// How long past its planned end a measurement may run before the watchdog steps in.
const GRACE: Duration = Duration::from_secs(5);
/// Times the watchdog wakes both threads of a stalled measurement before giving up on
/// waking them (the join then waits).
const KICKS: u32 = 50;
/// A sleeping waiter's timeout: far past [`SLEEP_GAP`], reached only by a lost wake-up.
const LOST_WAKE: Duration = Duration::from_secs(1);

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// iocp ports, in Rust.
    Iocp,
    /// An iocp port through the C ABI (`GetQueuedCompletionStatus`).
    IocpC,
    /// Raw futex words.
    Futex,
    /// mio `Poll`s with `Waker`s.
    MioWaker,
}

impl Subject {
    /// Name in the table and the plots.
    pub fn name(self) -> &'static str {
        match self {
            Subject::Iocp => "iocp ports",
            Subject::IocpC => "iocp C GQCS",
            Subject::Futex => "raw futex",
            Subject::MioWaker => "mio Waker (eventfd)",
        }
    }
}

/// What kind of wake a group measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// Closed-loop ping-pong: the waiter has just started waiting (it spins).
    Spinning,
    /// Posts [`SLEEP_GAP`] apart to a waiter asleep in the kernel.
    Sleeping {
        /// [`SLEEP_GAP`], in milliseconds.
        gap_ms: u64,
    },
}

impl Kind {
    const ALL: [Kind; 2] = [
        Kind::Spinning,
        Kind::Sleeping {
            gap_ms: SLEEP_GAP.as_millis() as u64,
        },
    ];

    /// Implementations, in table order; the raw futex is the reference of every ratio.
    pub fn subjects(self) -> &'static [Subject] {
        match self {
            Kind::Spinning => &[Subject::Iocp, Subject::Futex, Subject::MioWaker],
            Kind::Sleeping { .. } => &[Subject::Iocp, Subject::IocpC, Subject::Futex],
        }
    }

    /// The design's bound on an iocp row's p50 over the raw futex's.
    fn target(self) -> f64 {
        match self {
            Kind::Spinning => TARGET_SPINNING_P50,
            Kind::Sleeping { .. } => TARGET_SLEEPING_P50,
        }
    }
}

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Length of one ping-pong measurement.
    pub duration_s: f64,
    /// Measurements per implementation.
    pub rounds: usize,
    /// One group per kind of wake and pinning.
    pub groups: Vec<Group>,
    /// The idle waiter.
    pub idle: Idle,
}

/// The implementations measured for one kind of wake, pinned or not.
#[derive(Debug, Serialize)]
pub struct Group {
    /// What is measured.
    pub kind: Kind,
    /// Whether the two threads were pinned to distinct cores.
    pub pinned: bool,
    /// One row per implementation.
    pub rows: Vec<Row>,
    /// The design's targets, with this run's ratios.
    pub targets: Vec<Target>,
}

/// One implementation's wakes.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The implementation.
    pub subject: Subject,
    /// [`Subject::name`].
    pub name: &'static str,
    /// What came of it.
    pub outcome: Outcome,
}

/// Measured latencies, or why they were not.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It ran every round.
    Measured {
        /// Round trips (spinning) or wakes (sleeping) recorded.
        samples: u64,
        /// Samples per second of measured time.
        samples_per_sec: f64,
        /// Latency summary, ns.
        latency_ns: Percentiles,
        /// Latency percentile curve.
        curve: Vec<CurvePoint>,
    },
    /// It could not run here.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// The latency summary, if measured.
    pub fn latency(&self) -> Option<&Percentiles> {
        match self {
            Outcome::Measured { latency_ns, .. } => Some(latency_ns),
            Outcome::Skipped { .. } => None,
        }
    }
}

/// The idle waiter's cost, or why it was not measured.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Idle {
    /// Measured.
    Measured {
        /// The `get` timeout.
        wait_s: f64,
        /// Wall time the `get` took.
        wall_s: f64,
        /// CPU time the waiting thread used meanwhile.
        cpu_s: f64,
        /// `cpu_s / wall_s`, in percent of a core.
        percent_of_core: f64,
        /// [`TARGET_IDLE_PERCENT`].
        target_percent: f64,
        /// Whether it stayed under the target.
        target_met: bool,
    },
    /// Not measured.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One kind of wake, pinned or not.
#[derive(Clone, Copy, Debug)]
struct Variant {
    kind: Kind,
    pinned: bool,
}

impl Variant {
    /// Every kind unpinned; with `--pin` and two cores, also pinned (first).
    fn all(settings: &Settings) -> Vec<Variant> {
        let pinnable = settings.pin_plan(2).is_some();
        Kind::ALL
            .into_iter()
            .flat_map(|kind| {
                [
                    pinnable.then_some(Variant { kind, pinned: true }),
                    Some(Variant {
                        kind,
                        pinned: false,
                    }),
                ]
            })
            .flatten()
            .collect()
    }
}

/// Measurements [`run`] makes: the wake rounds and the idle waiter.
pub fn measurements(settings: &Settings) -> u64 {
    let per_round: usize = Variant::all(settings)
        .iter()
        .map(|variant| variant.kind.subjects().len())
        .sum();
    (per_round * settings.wake_rounds + 1) as u64
}

/// Measures every variant and implementation and the idle waiter, advancing `bar` after
/// each.
pub fn run(settings: &Settings, bar: &ProgressBar) -> Report {
    let variants = Variant::all(settings);
    let mut merged: Vec<Vec<Result<Measured, String>>> = variants
        .iter()
        .map(|variant| {
            variant
                .kind
                .subjects()
                .iter()
                .map(|_| Ok(Measured::default()))
                .collect()
        })
        .collect();
    for round in 1..=settings.wake_rounds {
        for (slots, &variant) in merged.iter_mut().zip(&variants) {
            let cores = variant.pinned.then(|| settings.pin_plan(2)).flatten();
            for (slot, &subject) in slots.iter_mut().zip(variant.kind.subjects()) {
                bar.set_message(format!(
                    "round {round}/{}: {:?}{}, {}",
                    settings.wake_rounds,
                    variant.kind,
                    if variant.pinned { " (pinned)" } else { "" },
                    subject.name()
                ));
                if let Ok(total) = slot {
                    let measured = match variant.kind {
                        Kind::Spinning => measure(subject, cores, settings),
                        Kind::Sleeping { .. } => sleeping(subject, cores, settings),
                    };
                    match measured {
                        Ok(measured) => total.add(&measured),
                        Err(reason) => *slot = Err(reason),
                    }
                }
                bar.inc(1);
            }
        }
    }
    bar.set_message("idle waiter");
    let idle = idle_waiter(settings.idle_wait);
    bar.inc(1);
    let groups = variants
        .iter()
        .zip(merged)
        .map(|(&variant, merged)| summarize(variant, merged))
        .collect();
    Report {
        duration_s: settings.duration.as_secs_f64(),
        rounds: settings.wake_rounds,
        groups,
        idle,
    }
}

/// Rows and targets of one variant.
fn summarize(variant: Variant, merged: Vec<Result<Measured, String>>) -> Group {
    let rows: Vec<Row> = variant
        .kind
        .subjects()
        .iter()
        .zip(merged)
        .map(|(&subject, merged)| Row {
            subject,
            name: subject.name(),
            outcome: match merged {
                Ok(m) if m.histogram.is_empty() => Outcome::Skipped {
                    reason: "nothing was recorded".into(),
                },
                Ok(m) => Outcome::Measured {
                    samples: m.histogram.len(),
                    samples_per_sec: m.histogram.len() as f64 / m.busy.as_secs_f64(),
                    latency_ns: Percentiles::of(&m.histogram),
                    curve: latency::curve(&m.histogram),
                },
                Err(reason) => Outcome::Skipped { reason },
            },
        })
        .collect();
    let p50 = |subject| {
        rows.iter()
            .find(|row| row.subject == subject)
            .and_then(|row| row.outcome.latency())
            .map(|latency| latency.p50 as f64)
    };
    let targets = variant
        .kind
        .subjects()
        .iter()
        .filter(|&&subject| matches!(subject, Subject::Iocp | Subject::IocpC))
        .map(|&subject| {
            Target::new(
                format!("p50 {} / p50 raw futex", subject.name()),
                p50(subject).zip(p50(Subject::Futex)).map(|(a, b)| a / b),
                Bound::AtMost(variant.kind.target()),
            )
        })
        .collect();
    Group {
        kind: variant.kind,
        pinned: variant.pinned,
        rows,
        targets,
    }
}

/// Round trips of one or more measurements.
struct Measured {
    histogram: Histogram<u64>,
    /// Time the recorded round trips took, end to end.
    busy: Duration,
}

impl Default for Measured {
    fn default() -> Measured {
        Measured {
            histogram: latency::histogram(),
            busy: Duration::ZERO,
        }
    }
}

impl Measured {
    fn add(&mut self, other: &Measured) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with the same bounds add");
        self.busy += other.busy;
    }
}

/// One ping-pong measurement of `subject`, its two threads pinned to `cores` if given.
fn measure(
    subject: Subject,
    cores: Option<&[CoreId]>,
    settings: &Settings,
) -> Result<Measured, String> {
    match subject {
        Subject::Iocp => {
            let ports = [new_port()?, new_port()?];
            let receiver = |i: usize| {
                let port = ports[i].clone();
                move || port.get(None).map(drop)
            };
            ping_pong(
                cores,
                settings,
                |to| ports[to].post(Completion::new(0, 0, 0)),
                [receiver(0), receiver(1)],
            )
        }
        Subject::Futex => {
            let words = [AtomicU32::new(0), AtomicU32::new(0)];
            let receiver = |i: usize| {
                let word = &words[i];
                move || {
                    futex_recv(word);
                    Ok(())
                }
            };
            ping_pong(
                cores,
                settings,
                |to| {
                    futex_send(&words[to]);
                    Ok(())
                },
                [receiver(0), receiver(1)],
            )
        }
        Subject::MioWaker => {
            let mio = |e: io::Error| format!("mio: {e}");
            let [poll_0, poll_1] = [Poll::new().map_err(mio)?, Poll::new().map_err(mio)?];
            let wakers = [
                Waker::new(poll_0.registry(), WAKE).map_err(mio)?,
                Waker::new(poll_1.registry(), WAKE).map_err(mio)?,
            ];
            let receiver = |mut poll: Poll| {
                let mut events = Events::with_capacity(8);
                move || mio_recv(&mut poll, &mut events)
            };
            ping_pong(
                cores,
                settings,
                |to| wakers[to].wake(),
                [receiver(poll_0), receiver(poll_1)],
            )
        }
        Subject::IocpC => Err("the C ABI is measured in the sleeping wake only".into()),
    }
}

/// One sleeping-wake measurement of `subject`, the waiter pinned to `cores[0]` and the
/// poster to `cores[1]` if given.
fn sleeping(
    subject: Subject,
    cores: Option<&[CoreId]>,
    settings: &Settings,
) -> Result<Measured, String> {
    let wakes = u64::try_from(settings.duration.as_nanos() / SLEEP_GAP.as_nanos())
        .unwrap_or(u64::MAX)
        .max(MIN_SLEEPING_WAKES);
    match subject {
        Subject::Iocp => {
            let port = new_port()?;
            sleeping_wakes(
                cores,
                wakes,
                |stamp| {
                    port.post(Completion::new(0, 0, stamp))
                        .map_err(|e| format!("post: {e}"))
                },
                || {
                    port.get(Some(LOST_WAKE))
                        .map(|record| record.overlapped())
                        .map_err(|e| format!("get: {e}"))
                },
            )
        }
        Subject::IocpC => {
            let port = libiocp::CPort::new(libiocp::library()?)?;
            let lost_wake_ms = LOST_WAKE.as_millis() as libiocp::Dword;
            sleeping_wakes(
                cores,
                wakes,
                |stamp| match port.post(0, 0, stamp) {
                    true => Ok(()),
                    false => Err(format!(
                        "PostQueuedCompletionStatus: {}",
                        io::Error::last_os_error()
                    )),
                },
                || {
                    port.get(lost_wake_ms)
                        .map(|(_, overlapped)| overlapped)
                        .map_err(|e| format!("GetQueuedCompletionStatus: {e}"))
                },
            )
        }
        Subject::Futex => {
            let word = AtomicU32::new(0);
            let stamp = AtomicU64::new(0);
            sleeping_wakes(
                cores,
                wakes,
                |at| {
                    // Relaxed: published by the release increment in `futex_send`.
                    stamp.store(at as u64, Ordering::Relaxed);
                    futex_send(&word);
                    Ok(())
                },
                || {
                    futex_recv(&word);
                    // Relaxed: ordered by the acquire compare-and-swap in `futex_recv`.
                    Ok(stamp.load(Ordering::Relaxed) as usize)
                },
            )
        }
        Subject::MioWaker => Err("the sleeping wake's peer is the raw futex".into()),
    }
}

/// Runs `wakes` sleeping wakes: a poster thread sleeps [`SLEEP_GAP`], then calls `send`
/// with the time (ns since the start); the waiter thread calls `recv`, which waits for
/// that time and returns it, and records how long ago it was.
fn sleeping_wakes(
    cores: Option<&[CoreId]>,
    wakes: u64,
    send: impl Fn(usize) -> Result<(), String> + Sync,
    mut recv: impl FnMut() -> Result<usize, String> + Send,
) -> Result<Measured, String> {
    let start = Instant::now();
    let since_start = move || start.elapsed().as_nanos() as usize;
    thread::scope(|s| {
        let waiter = s.spawn(move || {
            pin(cores, 0);
            let mut measured = Measured::default();
            let began = Instant::now();
            for _ in 0..wakes {
                let sent = recv()?;
                let latency = since_start().saturating_sub(sent);
                latency::record(
                    &mut measured.histogram,
                    Duration::from_nanos(latency as u64),
                );
            }
            measured.busy = began.elapsed();
            Ok(measured)
        });
        let send = &send;
        let poster = s.spawn(move || {
            pin(cores, 1);
            for _ in 0..wakes {
                thread::sleep(SLEEP_GAP);
                send(since_start())?;
            }
            Ok::<(), String>(())
        });
        let posted = poster
            .join()
            .unwrap_or_else(|_| Err("the poster panicked".into()));
        let measured = waiter
            .join()
            .unwrap_or_else(|_| Err("the waiter panicked".into()));
        posted.and(measured)
    })
}

/// A port with the default settings, as an application would create it.
fn new_port() -> Result<Port, String> {
    Port::new().map_err(|e| format!("creating a port: {e}"))
}

/// The raw futex event: count one more, then wake whoever sleeps on it. A count, not a
/// flag: a waiter that falls behind by one send (preempted past the gap) must still find
/// both, as a port's waiter finds both records, or it would wait for a send already spent.
fn futex_send(word: &AtomicU32) {
    // Release: pairs with the acquire compare-and-swap in `futex_recv`.
    word.fetch_add(1, Ordering::Release);
    sys::futex_wake_one(word);
}

/// Waits for the count to be positive and takes one.
fn futex_recv(word: &AtomicU32) {
    loop {
        // Relaxed: the compare-and-swap below acquires.
        let count = word.load(Ordering::Relaxed);
        if count == 0 {
            sys::futex_wait(word, 0);
            continue;
        }
        // Acquire: pairs with the release increment in `futex_send`.
        if word
            .compare_exchange(count, count - 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// mio's only event source here is the waker.
const WAKE: Token = Token(0);

/// Polls until the waker's event comes (a poll may also end early on a signal).
fn mio_recv(poll: &mut Poll, events: &mut Events) -> io::Result<()> {
    loop {
        match poll.poll(events, None) {
            Ok(()) if !events.is_empty() => return Ok(()),
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs one ping-pong: side 0 (the initiator, which records) and side 1 (the echo), each
/// waiting with its receiver; `send(i)` wakes side `i`.
fn ping_pong<R>(
    cores: Option<&[CoreId]>,
    settings: &Settings,
    send: impl Fn(usize) -> io::Result<()> + Sync,
    [mut recv_0, mut recv_1]: [R; 2],
) -> Result<Measured, String>
where
    R: FnMut() -> io::Result<()> + Send,
{
    let stop = AtomicBool::new(false);
    let warmup = settings.duration / 10;
    let (done, finished) = mpsc::channel();
    let (send, stop) = (&send, &stop);
    thread::scope(|s| {
        let initiator = s.spawn({
            let done = done.clone();
            move || {
                pin(cores, 0);
                let _hangup = Hangup {
                    send,
                    other: 1,
                    stop,
                    done,
                };
                initiate(send, &mut recv_0, stop, warmup, settings.duration)
            }
        });
        let echo = s.spawn(move || {
            pin(cores, 1);
            let _hangup = Hangup {
                send,
                other: 0,
                stop,
                done,
            };
            for _ in 0..=MAX_ROUND_TRIPS {
                recv_1()?;
                // Acquire: pairs with the release store in `Hangup::drop` before its wake.
                if stop.load(Ordering::Acquire) {
                    break;
                }
                send(0)?;
            }
            Ok::<(), io::Error>(())
        });

        let stalled = watch(&finished, warmup + settings.duration + GRACE);
        if stalled {
            // Release: pairs with the sides' acquire loads after they wake.
            stop.store(true, Ordering::Release);
            for _ in 0..KICKS {
                let _ = send(0);
                let _ = send(1);
                if initiator.is_finished() && echo.is_finished() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        let measured = initiator.join();
        let echoed = echo.join();
        if stalled {
            return Err("stalled: a side stopped being woken (lost wake-up?)".into());
        }
        let measured = measured
            .map_err(|_| "the initiator panicked".to_string())?
            .map_err(|e| format!("initiator: {e}"))?;
        echoed
            .map_err(|_| "the echo thread panicked".to_string())?
            .map_err(|e| format!("echo: {e}"))?;
        Ok(measured)
    })
}

/// Waits until both sides have hung up, or `limit` passes: `true` when it did.
fn watch(finished: &mpsc::Receiver<()>, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    for _ in 0..2 {
        match finished.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => return true,
            // Both senders are gone: both sides have ended.
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
    false
}

/// The initiator's loop: wake the other side, wait to be woken back, record the round
/// trip; for `warmup` unrecorded, then for `duration`.
fn initiate(
    send: &impl Fn(usize) -> io::Result<()>,
    recv: &mut impl FnMut() -> io::Result<()>,
    stop: &AtomicBool,
    warmup: Duration,
    duration: Duration,
) -> io::Result<Measured> {
    let mut measured = Measured::default();
    let start = Instant::now();
    let record_from = start + warmup;
    let deadline = record_from + duration;
    // One clock read per round trip: each round trip ends where the next begins.
    let mut last = start;
    for _ in 0..MAX_ROUND_TRIPS {
        send(1)?;
        recv()?;
        let now = Instant::now();
        if now >= record_from {
            latency::record(&mut measured.histogram, now - last);
            measured.busy += now - last;
        }
        last = now;
        // Relaxed: whoever sets it (the watchdog, or the echo side ending) also wakes this
        // thread, and the wake orders the store before this load.
        if now >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(measured)
}

/// When a side's thread ends, however it ends: tells the other side to stop and wakes
/// it, so that it never waits for a peer that is gone, then tells the watchdog.
struct Hangup<'a> {
    /// The ping-pong's `send` (only called on the way out: no need to be generic).
    send: &'a dyn Fn(usize) -> io::Result<()>,
    other: usize,
    stop: &'a AtomicBool,
    done: Sender<()>,
}

impl Drop for Hangup<'_> {
    fn drop(&mut self) {
        // Release: pairs with the acquire load in the echo loop, which follows its wake.
        self.stop.store(true, Ordering::Release);
        // Failing to wake a side that has already ended is fine.
        let _ = (self.send)(self.other);
        let _ = self.done.send(());
    }
}

/// The idle waiter: CPU used by a thread waiting `wait` on an empty port.
fn idle_waiter(wait: Duration) -> Idle {
    let measured = thread::scope(|s| {
        s.spawn(|| {
            let port = new_port()?;
            let cpu = sys::thread_cpu_time();
            let start = Instant::now();
            let got = port.get(Some(wait));
            let wall = start.elapsed();
            let cpu = sys::thread_cpu_time().saturating_sub(cpu);
            match got {
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok((wall, cpu)),
                Err(e) => Err(format!("get: {e}")),
                Ok(record) => Err(format!("an empty port returned {record:?}")),
            }
        })
        .join()
        .unwrap_or_else(|_| Err("the idle waiter panicked".into()))
    });
    match measured {
        Ok((wall, cpu)) => {
            let percent = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
            Idle::Measured {
                wait_s: wait.as_secs_f64(),
                wall_s: wall.as_secs_f64(),
                cpu_s: cpu.as_secs_f64(),
                percent_of_core: percent,
                target_percent: TARGET_IDLE_PERCENT,
                target_met: percent < TARGET_IDLE_PERCENT,
            }
        }
        Err(reason) => Idle::Skipped { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            quick: true,
            duration: Duration::from_millis(20),
            drain_rounds: 1,
            wake_rounds: 1,
            idle_wait: Duration::from_millis(50),
            stall_probe: Duration::from_millis(10),
            cores: Vec::new(),
            echo_connections: None,
        }
    }

    #[test]
    fn every_implementation_wakes_its_waiter() {
        for kind in Kind::ALL {
            for &subject in kind.subjects() {
                let measured = match kind {
                    Kind::Spinning => measure(subject, None, &settings()),
                    Kind::Sleeping { .. } => sleeping(subject, None, &settings()),
                }
                .unwrap_or_else(|reason| panic!("{kind:?} {subject:?}: {reason}"));
                assert!(!measured.histogram.is_empty(), "{kind:?} {subject:?}");
                assert!(measured.busy > Duration::ZERO);
            }
        }
    }

    #[test]
    fn a_sleeping_wake_is_judged_against_the_futex() {
        let at = |p50_ns: u64| {
            let mut measured = Measured::default();
            latency::record(&mut measured.histogram, Duration::from_nanos(p50_ns));
            measured.busy = Duration::from_millis(1);
            Ok(measured)
        };
        let variant = Variant {
            kind: Kind::ALL[1],
            pinned: false,
        };
        let group = summarize(variant, vec![at(10_000), at(12_000), at(10_000)]);
        let met: Vec<Option<bool>> = group.targets.iter().map(|t| t.met).collect();
        assert_eq!(met, [Some(true), Some(false)]);
    }

    #[test]
    fn an_idle_waiter_times_out_and_is_measured() {
        match idle_waiter(Duration::from_millis(50)) {
            Idle::Measured { wall_s, cpu_s, .. } => {
                assert!(wall_s >= 0.05, "a timeout is never early");
                assert!(cpu_s <= wall_s);
            }
            Idle::Skipped { reason } => panic!("{reason}"),
        }
    }
}
