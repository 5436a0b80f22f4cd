//! `wake`: how long a post takes to reach a parked waiter, and what an idle waiter costs.
//!
//! **Ping-pong.** Two threads wake each other in turn, closed loop: thread A wakes B and
//! waits to be woken back; B waits, then wakes A. Every round trip A sees (two wakes of a
//! waiting thread) is recorded in an HdrHistogram. Implementations:
//!
//! * `iocp ports`: two [`Port`]s; A posts to port 1 and calls `get(None)` on port 2, B
//!   the mirror image. The port's waiter spins adaptively before it parks on its futex;
//! * `raw futex`: the textbook event on two `AtomicU32`s: store 1 and `FUTEX_WAKE`;
//!   swap to 0, or `FUTEX_WAIT` while it reads 0;
//! * `mio Waker`: two `mio::Poll`s, each with a `Waker` (an eventfd on Linux); A wakes
//!   B's and polls its own.
//!
//! Each implementation runs [`Settings::wake_rounds`] measurements of
//! [`Settings::duration`] (after a warm-up of a tenth of that), rounds interleaved; the
//! histograms are merged. Waits have no timeout, as in the code measured: a watchdog wakes
//! both threads if a measurement overruns (a lost wake-up would), and reports it.
//!
//! **Idle waiter.** One thread calls `get` with a timeout of [`Settings::idle_wait`] on an
//! empty port; its CPU time (`CLOCK_THREAD_CPUTIME_ID`) over the wall time is the share of
//! a core an idle waiter burns.
//!
//! Targets: p50(iocp) ≤ 0.5 × p50(futex); the idle waiter under 1% of a core.

use super::pin;
use crate::latency::{self, CurvePoint, Percentiles};
use crate::{sys, Settings};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use iocp::{Completion, Port};
use mio::{Events, Poll, Token, Waker};
use serde::Serialize;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// The design target: iocp's median round trip over the raw futex's.
pub const TARGET_P50_RATIO: f64 = 0.5;
/// The design target: an idle waiter's CPU use, in percent of a core.
pub const TARGET_IDLE_PERCENT: f64 = 1.0;

/// Upper bound on round trips in one measurement, whatever the clock says.
const MAX_ROUND_TRIPS: u64 = 100_000_000;
/// How long past its planned end a measurement may run before the watchdog steps in.
const GRACE: Duration = Duration::from_secs(5);
/// Times the watchdog wakes both threads of a stalled measurement before giving up on
/// waking them (the join then waits).
const KICKS: u32 = 50;

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// Two iocp ports.
    Iocp,
    /// Two raw futex words.
    Futex,
    /// Two mio `Poll`s with `Waker`s.
    MioWaker,
}

/// Every implementation, in table order.
pub const SUBJECTS: [Subject; 3] = [Subject::Iocp, Subject::Futex, Subject::MioWaker];

impl Subject {
    /// Name in the table and the plots.
    pub fn name(self) -> &'static str {
        match self {
            Subject::Iocp => "iocp ports",
            Subject::Futex => "raw futex",
            Subject::MioWaker => "mio Waker (eventfd)",
        }
    }
}

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Length of one measurement.
    pub duration_s: f64,
    /// Measurements per implementation.
    pub rounds: usize,
    /// Whether the two threads were pinned to distinct cores.
    pub pinned: bool,
    /// One row per implementation.
    pub rows: Vec<Row>,
    /// p50(iocp) / p50(raw futex).
    pub p50_ratio_iocp_to_futex: Option<f64>,
    /// [`TARGET_P50_RATIO`].
    pub target_p50_ratio: f64,
    /// Whether the ratio is within the target.
    pub p50_target_met: Option<bool>,
    /// The idle waiter.
    pub idle: Idle,
}

/// One implementation's ping-pong.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The implementation.
    pub subject: Subject,
    /// [`Subject::name`].
    pub name: &'static str,
    /// What came of it.
    pub outcome: Outcome,
}

/// A measured ping-pong, or why it was not.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It ran every round.
    Measured {
        /// Round trips recorded.
        round_trips: u64,
        /// Round trips per second of measured time.
        round_trips_per_sec: f64,
        /// Round-trip latency summary, ns.
        latency_ns: Percentiles,
        /// Round-trip latency percentile curve.
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

/// Measurements [`run`] makes: the ping-pong rounds and the idle waiter.
pub fn measurements(settings: &Settings) -> u64 {
    (SUBJECTS.len() * settings.wake_rounds + 1) as u64
}

/// Measures every implementation and the idle waiter, advancing `bar` after each.
pub fn run(settings: &Settings, bar: &ProgressBar) -> Report {
    let mut merged: Vec<Result<Measured, String>> =
        SUBJECTS.iter().map(|_| Ok(Measured::default())).collect();
    for round in 1..=settings.wake_rounds {
        for (slot, &subject) in merged.iter_mut().zip(&SUBJECTS) {
            bar.set_message(format!(
                "round {round}/{}: {}",
                settings.wake_rounds,
                subject.name()
            ));
            if let Ok(total) = slot {
                match measure(subject, settings) {
                    Ok(measured) => total.add(&measured),
                    Err(reason) => *slot = Err(reason),
                }
            }
            bar.inc(1);
        }
    }
    bar.set_message("idle waiter");
    let idle = idle_waiter(settings.idle_wait);
    bar.inc(1);

    let rows: Vec<Row> = SUBJECTS
        .iter()
        .zip(merged)
        .map(|(&subject, merged)| Row {
            subject,
            name: subject.name(),
            outcome: match merged {
                Ok(m) if m.histogram.is_empty() => Outcome::Skipped {
                    reason: "no round trip was recorded".into(),
                },
                Ok(m) => Outcome::Measured {
                    round_trips: m.histogram.len(),
                    round_trips_per_sec: m.histogram.len() as f64 / m.busy.as_secs_f64(),
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
    let ratio = p50(Subject::Iocp)
        .zip(p50(Subject::Futex))
        .map(|(iocp, futex)| iocp / futex);
    Report {
        duration_s: settings.duration.as_secs_f64(),
        rounds: settings.wake_rounds,
        pinned: settings.pin_plan(2).is_some(),
        rows,
        p50_ratio_iocp_to_futex: ratio,
        target_p50_ratio: TARGET_P50_RATIO,
        p50_target_met: ratio.map(|ratio| ratio <= TARGET_P50_RATIO),
        idle,
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

/// One ping-pong measurement of `subject`.
fn measure(subject: Subject, settings: &Settings) -> Result<Measured, String> {
    match subject {
        Subject::Iocp => {
            let ports = [new_port()?, new_port()?];
            let receiver = |i: usize| {
                let port = ports[i].clone();
                move || port.get(None).map(drop)
            };
            ping_pong(
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
                settings,
                |to| wakers[to].wake(),
                [receiver(poll_0), receiver(poll_1)],
            )
        }
    }
}

/// A port with the default settings, as an application would create it.
fn new_port() -> Result<Port, String> {
    Port::new().map_err(|e| format!("creating a port: {e}"))
}

/// The raw futex event: set, then wake whoever sleeps on it.
fn futex_send(word: &AtomicU32) {
    // Release: pairs with the acquire swap in `futex_recv`.
    word.store(1, Ordering::Release);
    sys::futex_wake_one(word);
}

/// Waits for the event and resets it.
fn futex_recv(word: &AtomicU32) {
    // Acquire: pairs with the release store in `futex_send`.
    while word.swap(0, Ordering::Acquire) == 0 {
        sys::futex_wait(word, 0);
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
    settings: &Settings,
    send: impl Fn(usize) -> io::Result<()> + Sync,
    [mut recv_0, mut recv_1]: [R; 2],
) -> Result<Measured, String>
where
    R: FnMut() -> io::Result<()> + Send,
{
    let stop = AtomicBool::new(false);
    let cores = settings.pin_plan(2);
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
            cores: Vec::new(),
        }
    }

    #[test]
    fn every_implementation_round_trips() {
        for subject in SUBJECTS {
            let measured = measure(subject, &settings())
                .unwrap_or_else(|reason| panic!("{subject:?}: {reason}"));
            assert!(!measured.histogram.is_empty(), "{subject:?}");
            assert!(measured.busy > Duration::ZERO);
        }
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
