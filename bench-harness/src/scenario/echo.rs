//! `echo`: a TCP echo server on loopback, 64-byte messages, 1, 64 and 256 connections.
//!
//! Servers, each started in this process on threads of its own for one measurement and
//! stopped (and joined) after it, all with the same number of worker threads
//! (`--workers`, default 1: on a 2-core machine one core serves, the other generates load):
//!
//! * `iocp (inline drive)` and `iocp (thread drive)`: the design of
//!   `engine/examples/echo_server.rs` (one port per worker, batched `get_many`, worker 0
//!   accepts and hands connections off by posting their descriptors), with
//!   [`Drive::Inline`] (a waiting worker polls epoll itself) and [`Drive::Thread`] (a
//!   reactor thread per port polls and posts) ([`iocp_server`]);
//! * `mio`: the same server on raw mio, one event loop per worker, edge-triggered, read
//!   until `WouldBlock` and write back ([`mio_server`]);
//! * `tokio`: an accept loop and a task per connection on a `current_thread` runtime (a
//!   `multi_thread` one with more workers) ([`tokio_server`]);
//! * `io_uring`: a completion-based loop per worker with `Accept`, `Recv` and `Send` SQEs
//!   ([`uring_server`]); skipped, with the reason, where the kernel refuses io_uring.
//!
//! Every server sets `TCP_NODELAY` on its connections, reads up to [`READ_SIZE`] bytes at a
//! time and takes the listener from the harness with the same backlog.
//!
//! The client is the harness's own generator ([`crate::loadgen`]): one thread (pinned with
//! `--pin`) driving all the connections, non-blocking, from one epoll. For each connection
//! count it first runs every server **closed loop** (one message in flight per connection:
//! peak messages/s and round-trip percentiles), [`CLOSED_ROUNDS`] rounds merged into one
//! histogram; then every server **open loop** at [`OPEN_RATE_FRACTION`] of the weakest
//! server's closed-loop rate, with latency counted from each message's intended send time
//! (coordinated-omission correction, as wrk2 does), [`OPEN_ROUNDS`] longer rounds each kept
//! apart: a tail is the median round's figure with the lowest and highest ([`spread`](super::spread)).
//! Rounds are interleaved across the servers (round `r` of every server before round
//! `r + 1` of any), so that a burst of background load hits every server alike.
//!
//! Targets: iocp's closed-loop messages/s ≥ every peer's, and its open-loop p99 ≤ every
//! peer's, called only when every round of iocp's is below every round of the best peer's
//! (the peer with the lowest median p99) and called missed only when every round is above;
//! otherwise it is within the spread, no verdict. The table gives each row's ratio to the
//! best peer for both.
//!
//! Beside each loop, the CPU it took ([`loadgen::CpuUse`]): in the closed loop the server's
//! and the generator's share of a core each (both near 100% means they share the ceiling,
//! and a server can go no faster than the generator drives it); in the open loop, at one
//! rate for every server, the server's CPU time per message, spinning included.
//!
//! Then the scale row ([`scale`]): 10,000 connections (1,000 with `--quick`) of which 64
//! run the closed loop and the rest stay idle; the active ones' messages/s and p99, and the
//! memory each server keeps per idle connection. That row has a third iocp server,
//! `iocp (zero-byte reads)`: the inline drive's, its connections waiting with Winsock's
//! zero-byte read instead of a read of their own buffer ([`iocp_server::Reads`]).

mod iocp_server;
mod mio_server;
pub mod scale;
mod tokio_server;
mod uring_server;

use super::spread::{standing, Spread, Standing};
use crate::latency::{self, CurvePoint, Percentiles};
use crate::loadgen::{self, CpuUse, Mode, Plan, MESSAGE};
use crate::sys::pin_set;
use crate::{Servers, Settings};
use core_affinity::CoreId;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use iocp::Drive;
use iocp_server::Reads;
use serde::Serialize;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Connection counts of a full run.
pub const CONNECTIONS: [usize; 3] = [1, 64, 256];
/// Connection counts of a `--quick` run.
pub const QUICK_CONNECTIONS: [usize; 2] = [1, 64];
/// The open loop runs at this fraction of the weakest server's closed-loop rate.
pub const OPEN_RATE_FRACTION: f64 = 0.5;
/// Closed-loop rounds per server and connection count (1 with `--quick`), merged.
pub const CLOSED_ROUNDS: usize = 2;
/// Open-loop rounds per server and connection count (2 with `--quick`), each kept: enough
/// for a median that one hiccup cannot move, and a spread a comparison must clear.
pub const OPEN_ROUNDS: usize = 5;
/// Length of one open-loop round in units of `--duration` (1.5 s at the default): long
/// enough that a round's p99 rests on some 10^5 messages, not on a handful of hiccups.
const OPEN_ROUND_DURATIONS: u32 = 5;
/// Load generator threads (one core's worth on a 2-core machine).
pub const GENERATOR_THREADS: usize = 1;
/// Bytes every server reads at most per read.
pub const READ_SIZE: usize = 4096;
/// The listener's backlog: all 256 connections can wait in it while a server starts.
const BACKLOG: usize = 1024;
/// How long past its planned end a server keeps running before it stops by itself.
const SERVER_GRACE: Duration = Duration::from_secs(5);
/// How long stopping a server may take before the measurement is reported as stuck.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Server {
    /// iocp-rs, [`Drive::Inline`].
    IocpInline,
    /// iocp-rs, [`Drive::Thread`].
    IocpThread,
    /// iocp-rs, [`Drive::Inline`], its connections waiting with zero-byte reads: the scale
    /// row only (see [`SCALE_SERVERS`]).
    IocpZeroByte,
    /// Raw mio.
    Mio,
    /// tokio.
    Tokio,
    /// io_uring.
    IoUring,
}

/// Every server of the throughput and latency rows, in table order.
pub const SERVERS: [Server; 5] = [
    Server::IocpInline,
    Server::IocpThread,
    Server::Mio,
    Server::Tokio,
    Server::IoUring,
];

/// The servers of the scale row: those of the other rows, and iocp with zero-byte reads,
/// whose idle connections hold no read buffer.
pub const SCALE_SERVERS: [Server; 6] = [
    Server::IocpInline,
    Server::IocpThread,
    Server::IocpZeroByte,
    Server::Mio,
    Server::Tokio,
    Server::IoUring,
];

impl Server {
    /// Name in the table and the plots.
    pub fn name(self) -> &'static str {
        match self {
            Server::IocpInline => "iocp (inline drive)",
            Server::IocpThread => "iocp (thread drive)",
            Server::IocpZeroByte => "iocp (zero-byte reads)",
            Server::Mio => "mio (epoll ET)",
            Server::Tokio => "tokio",
            Server::IoUring => "io_uring",
        }
    }

    /// A peer (not iocp).
    pub fn is_peer(self) -> bool {
        !self.is_iocp()
    }

    /// iocp-rs, on either drive.
    pub fn is_iocp(self) -> bool {
        matches!(
            self,
            Server::IocpInline | Server::IocpThread | Server::IocpZeroByte
        )
    }

    /// The closed-loop throughput this server must reach, over the best peer's: 1.1x with
    /// the inline drive (the one a server picks for speed), 1x with the thread drive;
    /// `None` for a peer and for the scale row's zero-byte reads.
    pub fn throughput_target(self) -> Option<f64> {
        match self {
            Server::IocpInline => Some(1.1),
            Server::IocpThread => Some(1.0),
            Server::IocpZeroByte | Server::Mio | Server::Tokio | Server::IoUring => None,
        }
    }
}

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Worker threads of every server.
    pub workers: usize,
    /// The iocp servers' spin limit, µs, where the command line set one.
    pub iocp_spin_limit_us: Option<f64>,
    /// Load generator threads.
    pub generator_threads: usize,
    /// Bytes per message.
    pub message_bytes: usize,
    /// Unrecorded lead-in of each measurement.
    pub warmup_s: f64,
    /// Length of one closed-loop measurement.
    pub closed_duration_s: f64,
    /// Closed-loop measurements per server and connection count (merged).
    pub closed_rounds: usize,
    /// Length of one open-loop measurement.
    pub open_duration_s: f64,
    /// Open-loop measurements per server and connection count (each kept).
    pub open_rounds: usize,
    /// [`OPEN_RATE_FRACTION`].
    pub open_rate_fraction: f64,
    /// Whether the servers and the generator were pinned to distinct cores.
    pub pinned: bool,
    /// One group per connection count.
    pub groups: Vec<Group>,
    /// The scale row: many connections, few of them active.
    pub scale: scale::Scale,
}

/// Every server at one connection count.
#[derive(Debug, Serialize)]
pub struct Group {
    /// Connections.
    pub connections: usize,
    /// The open loop's rate, messages/s (absent when no closed loop was measured).
    pub open_rate: Option<f64>,
    /// One row per server.
    pub rows: Vec<Row>,
    /// The peer with the most closed-loop messages/s.
    pub best_peer_throughput: Option<Server>,
    /// The peer with the lowest open-loop p99 (median over the rounds).
    pub best_peer_p99: Option<Server>,
}

/// One server at one connection count.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The server.
    pub server: Server,
    /// [`Server::name`].
    pub name: &'static str,
    /// Closed loop.
    pub closed: Outcome<Closed>,
    /// Open loop.
    pub open: Outcome<Open>,
    /// Closed-loop messages/s over the best peer's.
    pub throughput_ratio: Option<f64>,
    /// Open-loop p99 over the best peer's (lowest), medians over the rounds.
    pub p99_ratio: Option<f64>,
    /// iocp rows: the throughput ratio reaches the server's
    /// [`throughput_target`](Server::throughput_target).
    pub throughput_met: Option<bool>,
    /// iocp rows: where the open-loop p99 rounds stand against the best peer's; the p99
    /// target (≤ the best peer's) is met when `lower`, missed when `higher`, neither when
    /// `within_spread`.
    pub p99_standing: Option<Standing>,
}

/// A measurement, or why there is none.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome<T> {
    /// Measured.
    Measured(T),
    /// It could not run here, or failed.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl<T> Outcome<T> {
    /// The figures, if measured.
    pub fn measured(&self) -> Option<&T> {
        match self {
            Outcome::Measured(figures) => Some(figures),
            Outcome::Skipped { .. } => None,
        }
    }
}

/// Closed-loop figures.
#[derive(Debug, Serialize)]
pub struct Closed {
    /// Messages per second over every round's window.
    pub messages_per_sec: f64,
    /// Messages per second of each round.
    pub runs: Vec<f64>,
    /// Round-trip latency, ns (every round merged).
    pub latency_ns: Percentiles,
    /// Its percentile curve.
    pub curve: Vec<CurvePoint>,
    /// The server's CPU time over the rounds' windows, in cores (1.0: one core all the
    /// time); `None` where a round's clocks were not read.
    pub server_cores: Option<f64>,
    /// The generator threads' CPU time, likewise: near 1.0 per generator thread, the
    /// generator is as busy as it can be and shares the ceiling with the server.
    pub generator_cores: Option<f64>,
}

/// Open-loop figures.
#[derive(Debug, Serialize)]
pub struct Open {
    /// The rate asked for, messages/s.
    pub rate: f64,
    /// Messages intended in the windows over their length.
    pub messages_per_sec: f64,
    /// Messages not back within the drain limit after their window.
    pub late: u64,
    /// p50 over the rounds (median, lowest and highest round), ns.
    pub p50_ns: Spread,
    /// p99 over the rounds, ns: the figure the p99 target compares.
    pub p99_ns: Spread,
    /// p99.9 over the rounds, ns.
    pub p99_9_ns: Spread,
    /// Every round's figures, in the order they ran.
    pub rounds: Vec<Round>,
    /// Latency from the intended send time, ns (every round merged: one round's hiccup
    /// is the merged tail, so the spreads above are the figures to compare).
    pub latency_ns: Percentiles,
    /// Its percentile curve.
    pub curve: Vec<CurvePoint>,
    /// The server's CPU time over the rounds' windows, in cores.
    pub server_cores: Option<f64>,
    /// The server's CPU time per message at this rate, ns: what serving a message costs,
    /// spinning and sleeping included, where the closed loop's saturated core cannot tell.
    pub server_cpu_per_message_ns: Option<f64>,
}

/// One round of one server in one loop.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Round {
    /// Messages per second: completed (closed loop) or intended (open loop) in the window.
    pub messages_per_sec: f64,
    /// Open loop: messages not back within the drain limit after the window.
    pub late: u64,
    /// Latency, ns (open loop: from the intended send time).
    pub latency_ns: Percentiles,
    /// The server's CPU time over the window, in cores.
    pub server_cores: Option<f64>,
    /// The generator threads' CPU time over the window, in cores.
    pub generator_cores: Option<f64>,
}

/// How long each measurement runs, and how often.
#[derive(Clone, Copy, Debug)]
struct Timing {
    warmup: Duration,
    closed: Duration,
    closed_rounds: usize,
    open: Duration,
    open_rounds: usize,
}

impl Timing {
    /// Full run at the default 0.3 s: 3 connection counts x 5 servers x (2 x (0.1 + 0.6 s)
    /// closed + 5 x (0.1 + 1.5 s) open) = 141 s, plus the scale row, setup and teardown:
    /// about 2.5 minutes.
    fn of(settings: &Settings) -> Timing {
        Timing {
            warmup: (settings.duration / 3).max(Duration::from_millis(10)),
            closed: settings.duration * 2,
            closed_rounds: if settings.quick { 1 } else { CLOSED_ROUNDS },
            open: settings.duration * OPEN_ROUND_DURATIONS,
            open_rounds: if settings.quick { 2 } else { OPEN_ROUNDS },
        }
    }

    /// Rounds per server in `mode`.
    fn rounds(&self, mode: Mode) -> usize {
        match mode {
            Mode::Closed => self.closed_rounds,
            Mode::Open { .. } => self.open_rounds,
        }
    }
}

/// The connection counts of the throughput and latency rows: `--connections`, else
/// [`CONNECTIONS`] ([`QUICK_CONNECTIONS`] with `--quick`).
fn connection_counts(settings: &Settings) -> &[usize] {
    match &settings.echo_connections {
        Some(counts) => counts,
        None if settings.quick => &QUICK_CONNECTIONS,
        None => &CONNECTIONS,
    }
}

/// Measurements [`run`] makes.
pub fn measurements(settings: &Settings) -> u64 {
    let timing = Timing::of(settings);
    let per_count = SERVERS.len() * (timing.closed_rounds + timing.open_rounds);
    let scale = SERVERS.len() * timing.closed_rounds;
    (connection_counts(settings).len() * per_count + scale) as u64
}

/// The rounds of one server in one loop: each round's figures, and all of them merged.
struct Merged {
    messages: u64,
    window: Duration,
    late: u64,
    rounds: Vec<Round>,
    histogram: Histogram<u64>,
    /// Every round's CPU time, or `None` if a round has none.
    cpu: Option<CpuUse>,
}

impl Merged {
    fn new() -> Merged {
        Merged {
            messages: 0,
            window: Duration::ZERO,
            late: 0,
            rounds: Vec::new(),
            histogram: latency::histogram(),
            cpu: None,
        }
    }

    fn add(&mut self, measured: &loadgen::Measured) {
        self.messages += measured.messages;
        self.window += measured.window;
        self.late += measured.late;
        self.cpu = match (self.rounds.is_empty(), self.cpu, measured.cpu) {
            (true, _, round) => round,
            (false, Some(rounds), Some(round)) => Some(rounds.plus(round)),
            _ => None,
        };
        self.rounds.push(Round {
            messages_per_sec: measured.per_sec(),
            late: measured.late,
            latency_ns: Percentiles::of(&measured.histogram),
            server_cores: measured.cpu.as_ref().map(CpuUse::server_cores),
            generator_cores: measured.cpu.as_ref().map(CpuUse::generator_cores),
        });
        self.histogram
            .add(&measured.histogram)
            .expect("histograms with the same bounds add");
    }

    fn per_sec(&self) -> f64 {
        self.messages as f64 / self.window.as_secs_f64()
    }

    /// The server's CPU time over the rounds, in cores.
    fn server_cores(&self) -> Option<f64> {
        self.cpu.as_ref().map(CpuUse::server_cores)
    }

    /// Each round's messages/s.
    fn runs(&self) -> Vec<f64> {
        self.rounds.iter().map(|r| r.messages_per_sec).collect()
    }

    /// A latency percentile over the rounds; `None` without rounds.
    fn spread(&self, pick: fn(&Percentiles) -> u64) -> Option<Spread> {
        let rounds: Vec<f64> = self
            .rounds
            .iter()
            .map(|r| pick(&r.latency_ns) as f64)
            .collect();
        Spread::of(&rounds)
    }
}

/// Measures every server at every connection count, advancing `bar` after each
/// measurement, with `servers.workers` worker threads in every server.
pub fn run(settings: &Settings, servers: Servers, bar: &ProgressBar) -> Report {
    let Servers {
        workers,
        iocp_spin_limit,
    } = servers;
    let timing = Timing::of(settings);
    let io_uring = uring_server::probe();
    let cores = settings.pin_plan(workers + GENERATOR_THREADS);
    let available = |server| match (server, &io_uring) {
        (Server::IoUring, Err(reason)) => Err(reason.clone()),
        _ => Ok(()),
    };
    let groups = connection_counts(settings)
        .iter()
        .map(|&connections| {
            let context = Context {
                connections,
                workers,
                iocp_spin_limit,
                timing,
                cores,
            };
            let closed = context.rounds(Mode::Closed, available, bar);
            let weakest = closed
                .iter()
                .filter_map(|slot| slot.as_ref().ok().map(Merged::per_sec))
                .min_by(f64::total_cmp);
            let open_rate = weakest.map(|rate| rate * OPEN_RATE_FRACTION);
            let open = match open_rate {
                Some(rate) => context.rounds(Mode::Open { rate }, available, bar),
                None => {
                    bar.inc((SERVERS.len() * timing.open_rounds) as u64);
                    SERVERS
                        .iter()
                        .map(|_| Err("no closed-loop rate to set the open loop's".into()))
                        .collect()
                }
            };
            summarize(connections, open_rate, closed, open)
        })
        .collect();
    let active = Context {
        connections: scale::ACTIVE,
        workers,
        iocp_spin_limit,
        timing,
        cores,
    };
    let scale = scale::run(settings, &active, available, bar);
    Report {
        workers,
        iocp_spin_limit_us: iocp_spin_limit.map(|limit| limit.as_secs_f64() * 1e6),
        generator_threads: GENERATOR_THREADS,
        message_bytes: MESSAGE,
        warmup_s: timing.warmup.as_secs_f64(),
        closed_duration_s: timing.closed.as_secs_f64(),
        closed_rounds: timing.closed_rounds,
        open_duration_s: timing.open.as_secs_f64(),
        open_rounds: timing.open_rounds,
        open_rate_fraction: OPEN_RATE_FRACTION,
        pinned: cores.is_some(),
        groups,
        scale,
    }
}

/// The rows of one connection count, with their ratios to the best peer.
fn summarize(
    connections: usize,
    open_rate: Option<f64>,
    closed: Vec<Result<Merged, String>>,
    open: Vec<Result<Merged, String>>,
) -> Group {
    let closed: Vec<Outcome<Closed>> = closed
        .into_iter()
        .map(|slot| match slot {
            Ok(merged) if merged.messages > 0 => Outcome::Measured(Closed {
                messages_per_sec: merged.per_sec(),
                runs: merged.runs(),
                latency_ns: Percentiles::of(&merged.histogram),
                curve: latency::curve(&merged.histogram),
                server_cores: merged.server_cores(),
                generator_cores: merged.cpu.as_ref().map(CpuUse::generator_cores),
            }),
            Ok(_) => Outcome::Skipped {
                reason: "no message completed".into(),
            },
            Err(reason) => Outcome::Skipped { reason },
        })
        .collect();
    let open: Vec<Outcome<Open>> = open
        .into_iter()
        .map(|slot| match slot {
            Ok(merged) if merged.messages > 0 => {
                let spread = |pick| merged.spread(pick).expect("a measured loop has rounds");
                Outcome::Measured(Open {
                    rate: open_rate.unwrap_or_default(),
                    messages_per_sec: merged.per_sec(),
                    late: merged.late,
                    p50_ns: spread(|l| l.p50),
                    p99_ns: spread(|l| l.p99),
                    p99_9_ns: spread(|l| l.p99_9),
                    latency_ns: Percentiles::of(&merged.histogram),
                    curve: latency::curve(&merged.histogram),
                    server_cores: merged.server_cores(),
                    server_cpu_per_message_ns: merged
                        .cpu
                        .map(|cpu| cpu.server().as_nanos() as f64 / merged.messages as f64),
                    rounds: merged.rounds,
                })
            }
            Ok(_) => Outcome::Skipped {
                reason: "no message completed".into(),
            },
            Err(reason) => Outcome::Skipped { reason },
        })
        .collect();
    let throughputs: Vec<Option<f64>> = closed
        .iter()
        .map(|c| c.measured().map(|c| c.messages_per_sec))
        .collect();
    let p99s: Vec<Option<Spread>> = open
        .iter()
        .map(|o| o.measured().map(|o| o.p99_ns))
        .collect();
    let throughput = |i: usize| throughputs[i];
    let p99 = |i: usize| p99s[i];
    let peers = || (0..SERVERS.len()).filter(|&i| SERVERS[i].is_peer());
    let best_throughput = peers()
        .filter_map(|i| Some((i, throughput(i)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let best_p99 = peers()
        .filter_map(|i| Some((i, p99(i)?)))
        .min_by(|a, b| a.1.median.total_cmp(&b.1.median));
    let rows = SERVERS
        .iter()
        .zip(closed.into_iter().zip(open))
        .enumerate()
        .map(|(i, (&server, (closed, open)))| {
            let throughput_ratio = throughput(i).zip(best_throughput).map(|(t, (_, b))| t / b);
            let p99_ratio = p99(i)
                .zip(best_p99)
                .map(|(p, (_, b))| p.median / b.median.max(1.0));
            // The verdicts are iocp's alone.
            let iocp = server.is_iocp();
            Row {
                server,
                name: server.name(),
                closed,
                open,
                throughput_ratio,
                p99_ratio,
                throughput_met: throughput_ratio
                    .zip(server.throughput_target())
                    .map(|(t, target)| t >= target),
                p99_standing: p99(i)
                    .zip(best_p99)
                    .filter(|_| iocp)
                    .map(|(p, (_, b))| standing(&p, &b)),
            }
        })
        .collect();
    Group {
        connections,
        open_rate,
        rows,
        best_peer_throughput: best_throughput.map(|(i, _)| SERVERS[i]),
        best_peer_p99: best_p99.map(|(i, _)| SERVERS[i]),
    }
}

/// What every measurement at one connection count shares.
struct Context<'a> {
    connections: usize,
    workers: usize,
    /// The iocp servers' spin limit, if not the engine's.
    iocp_spin_limit: Option<Duration>,
    timing: Timing,
    /// Server cores first (`workers` of them), then the generator's.
    cores: Option<&'a [CoreId]>,
}

impl Context<'_> {
    /// Every server in `mode`, [`Timing::rounds`] times, rounds interleaved; a server that
    /// is not `available` or fails a round is skipped with the reason.
    fn rounds(
        &self,
        mode: Mode,
        available: impl Fn(Server) -> Result<(), String>,
        bar: &ProgressBar,
    ) -> Vec<Result<Merged, String>> {
        let mut merged: Vec<Result<Merged, String>> = SERVERS
            .iter()
            .map(|&server| available(server).map(|()| Merged::new()))
            .collect();
        let rounds = self.timing.rounds(mode);
        let loop_name = match mode {
            Mode::Closed => "closed",
            Mode::Open { .. } => "open",
        };
        for round in 1..=rounds {
            for (slot, &server) in merged.iter_mut().zip(&SERVERS) {
                bar.set_message(format!(
                    "{} conn, {loop_name} loop {round}/{rounds}: {}",
                    self.connections,
                    server.name()
                ));
                if let Ok(total) = slot {
                    match self.measure(server, mode) {
                        Ok(measured) => total.add(&measured),
                        Err(reason) => *slot = Err(reason),
                    }
                }
                bar.inc(1);
            }
        }
        merged
    }

    /// One measurement: start `server`, run the generator against it, stop the server.
    fn measure(&self, server: Server, mode: Mode) -> Result<loadgen::Measured, String> {
        let nothing = |_: SocketAddr, _: Option<&[CoreId]>| Ok(());
        let (measured, ()) = self.measure_with(server, mode, BACKLOG, Duration::ZERO, nothing)?;
        Ok(measured)
    }

    /// One measurement: start `server` on a listener with a `backlog`-deep queue, call
    /// `prepare` with its address and the generator's cores (it has `setup` to run in), run
    /// the generator against it, stop the server. What `prepare` returns is handed back.
    fn measure_with<T>(
        &self,
        server: Server,
        mode: Mode,
        backlog: usize,
        setup: Duration,
        prepare: impl FnOnce(SocketAddr, Option<&[CoreId]>) -> Result<T, String>,
    ) -> Result<(loadgen::Measured, T), String> {
        let listener = listen(backlog).map_err(|e| format!("listen: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?;
        let duration = match mode {
            Mode::Closed => self.timing.closed,
            Mode::Open { .. } => self.timing.open,
        };
        // Past this the server stops by itself, whatever happens to the harness's stop.
        let deadline = Instant::now() + setup + self.timing.warmup + duration + SERVER_GRACE;
        let (server_cores, generator_cores) = match self.cores {
            Some(cores) => (
                Some(cores[..self.workers].to_vec()),
                Some(cores[self.workers..].to_vec()),
            ),
            None => (None, None),
        };
        let launch = Launch {
            listener,
            workers: self.workers,
            cores: server_cores,
            deadline,
        };
        let running = match server {
            Server::IocpInline => {
                iocp_server::start(launch, Drive::Inline, self.iocp_spin_limit, Reads::Owned)
            }
            Server::IocpThread => {
                iocp_server::start(launch, Drive::Thread, self.iocp_spin_limit, Reads::Owned)
            }
            Server::IocpZeroByte => {
                iocp_server::start(launch, Drive::Inline, self.iocp_spin_limit, Reads::ZeroByte)
            }
            Server::Mio => mio_server::start(launch),
            Server::Tokio => tokio_server::start(launch),
            Server::IoUring => uring_server::start(launch),
        }?;
        let prepared = match prepare(addr, generator_cores.as_deref()) {
            Ok(prepared) => prepared,
            Err(reason) => {
                let _ = running.stop();
                return Err(reason);
            }
        };
        let measured = loadgen::run(&Plan {
            addr,
            connections: self.connections,
            threads: GENERATOR_THREADS,
            mode,
            warmup: self.timing.warmup,
            duration,
            cores: generator_cores,
        });
        // The generator has closed its connections; stop the server either way.
        let stopped = running.stop();
        let measured = measured?;
        stopped?;
        if measured.messages == 0 {
            return Err("no message completed".into());
        }
        Ok((measured, prepared))
    }
}

/// What a server is started with.
struct Launch {
    /// Bound to 127.0.0.1, listening with [`BACKLOG`], blocking.
    listener: TcpListener,
    /// Worker threads.
    workers: usize,
    /// The CPU set of the server's threads, if pinned.
    cores: Option<Vec<CoreId>>,
    /// When the server stops by itself.
    deadline: Instant,
}

/// A server running on threads of its own.
struct Running {
    /// Its threads; each returns its error, if it failed.
    threads: Vec<JoinHandle<Result<(), String>>>,
    /// Asks it to stop (may be called again if it is slow to).
    stop: Box<dyn Fn() + Send>,
}

impl Running {
    /// Stops the server and joins its threads, waiting at most [`STOP_LIMIT`]; a server
    /// still running then is reported (and its threads left to end at their deadline).
    fn stop(self) -> Result<(), String> {
        (self.stop)();
        let limit = Instant::now() + STOP_LIMIT;
        let mut asked = Instant::now();
        while !self.threads.iter().all(JoinHandle::is_finished) {
            let now = Instant::now();
            if now >= limit {
                return Err(format!(
                    "the server did not stop within {} s",
                    STOP_LIMIT.as_secs()
                ));
            }
            if now - asked >= Duration::from_millis(100) {
                (self.stop)();
                asked = now;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let mut failure = None;
        for handle in self.threads {
            let result = handle
                .join()
                .unwrap_or_else(|_| Err("a server thread panicked".into()));
            failure = failure.or(result.err());
        }
        match failure {
            Some(reason) => Err(format!("server: {reason}")),
            None => Ok(()),
        }
    }
}

/// A listener on 127.0.0.1 (any port) with a `backlog`-deep queue (at most the kernel's
/// `somaxconn`).
fn listen(backlog: usize) -> io::Result<TcpListener> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    // std listens with a backlog of 128; listening again on a listening socket only
    // changes the backlog (Linux), so that 256 connections can queue up.
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: listen(2) on a socket this function owns; no memory is passed.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

/// Sets `TCP_NODELAY` on a socket, as every server does (a failure only leaves Nagle on).
fn set_nodelay(socket: &impl AsFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
    unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(connections: usize) -> Context<'static> {
        Context {
            connections,
            workers: 1,
            iocp_spin_limit: None,
            timing: Timing {
                warmup: Duration::from_millis(10),
                closed: Duration::from_millis(30),
                closed_rounds: 1,
                open: Duration::from_millis(30),
                open_rounds: 1,
            },
            cores: None,
        }
    }

    #[test]
    fn every_server_echoes_closed_and_open_loop() {
        let io_uring = uring_server::probe();
        // The scale row's servers: every server there is.
        for server in SCALE_SERVERS {
            if server == Server::IoUring && io_uring.is_err() {
                continue;
            }
            for connections in [1, 8] {
                let context = context(connections);
                let closed = context
                    .measure(server, Mode::Closed)
                    .unwrap_or_else(|e| panic!("{server:?} closed, {connections}: {e}"));
                assert!(closed.messages > 0, "{server:?}");
                assert!(closed.cpu.is_some(), "{server:?}: the CPU clocks were read");
                let open = context
                    .measure(server, Mode::Open { rate: 2_000.0 })
                    .unwrap_or_else(|e| panic!("{server:?} open, {connections}: {e}"));
                assert_eq!(open.late, 0, "{server:?}");
            }
        }
    }

    #[test]
    fn two_workers_serve_many_connections() {
        let io_uring = uring_server::probe();
        let mut context = context(16);
        context.workers = 2;
        for server in SCALE_SERVERS {
            if server == Server::IoUring && io_uring.is_err() {
                continue;
            }
            let closed = context
                .measure(server, Mode::Closed)
                .unwrap_or_else(|e| panic!("{server:?}: {e}"));
            assert!(closed.messages > 0, "{server:?}");
        }
    }

    /// A loop's rounds: one message each at `rate`/s with the given latency (its every
    /// percentile).
    fn rounds(rate: f64, latencies_ns: &[u64]) -> Result<Merged, String> {
        let mut merged = Merged::new();
        for &ns in latencies_ns {
            let mut histogram = latency::histogram();
            latency::record(&mut histogram, Duration::from_nanos(ns));
            merged.add(&loadgen::Measured {
                messages: rate as u64,
                window: Duration::from_secs(1),
                histogram,
                late: 0,
                cpu: None,
            });
        }
        Ok(merged)
    }

    #[test]
    fn a_loop_has_cpu_figures_only_if_every_round_has() {
        let ms = Duration::from_millis;
        let round = |cpu| loadgen::Measured {
            messages: 1_000,
            window: ms(100),
            histogram: latency::histogram(),
            late: 0,
            cpu,
        };
        let cpu = CpuUse {
            wall: ms(100),
            process: ms(130),
            generator: ms(50),
        };
        let mut merged = Merged::new();
        merged.add(&round(Some(cpu)));
        merged.add(&round(Some(CpuUse {
            process: ms(110),
            ..cpu
        })));
        // (80 + 60) ms of server time over 200 ms, for 2,000 messages.
        assert!((merged.server_cores().unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(merged.cpu.unwrap().server(), ms(140));
        assert_eq!(merged.rounds[1].server_cores, Some(0.6));
        merged.add(&round(None));
        assert_eq!(merged.server_cores(), None);
        assert_eq!(merged.rounds[2].generator_cores, None);
        merged.add(&round(Some(cpu)));
        assert_eq!(
            merged.server_cores(),
            None,
            "a loop missing a round stays unread"
        );
    }

    /// A group whose closed loop has the given rates and open loop the given p99 rounds,
    /// in [`SERVERS`] order; io_uring refused.
    fn group(rates: [f64; 4], p99s: [&[u64]; 4]) -> Group {
        let refused = || Err("refused".to_string());
        let mut closed: Vec<_> = rates.iter().map(|&rate| rounds(rate, &[0])).collect();
        let mut open: Vec<_> = p99s.iter().map(|p99s| rounds(1.0, p99s)).collect();
        closed.push(refused());
        open.push(refused());
        summarize(64, Some(25.0), closed, open)
    }

    #[test]
    fn the_inline_drive_must_beat_the_best_peer_by_a_tenth_and_the_thread_drive_match_it() {
        let p99s: [&[u64]; 4] = [&[1], &[1], &[1], &[1]];
        let close = group([105.0, 105.0, 100.0, 90.0], p99s);
        assert_eq!(close.rows[0].throughput_met, Some(false), "inline at 1.05x");
        assert_eq!(close.rows[1].throughput_met, Some(true), "thread at 1.05x");
        let ahead = group([110.0, 99.0, 100.0, 90.0], p99s);
        assert_eq!(ahead.rows[0].throughput_met, Some(true), "inline at 1.1x");
        assert_eq!(ahead.rows[1].throughput_met, Some(false), "thread at 0.99x");
    }

    #[test]
    fn ratios_are_to_the_best_peer() {
        let group = group(
            [200.0, 50.0, 100.0, 80.0],
            [
                &[10_000, 11_000, 12_000],
                &[9_000, 15_000, 40_000],
                &[20_000, 25_000, 30_000],
                // The lowest round of all, but not the lowest median.
                &[5_000, 30_000, 90_000],
            ],
        );
        assert_eq!(group.best_peer_throughput, Some(Server::Mio));
        assert_eq!(group.best_peer_p99, Some(Server::Mio));
        let inline = &group.rows[0];
        assert!((inline.throughput_ratio.unwrap() - 2.0).abs() < 1e-9);
        assert!((inline.p99_ratio.unwrap() - 11.0 / 25.0).abs() < 1e-2);
        assert_eq!(inline.throughput_met, Some(true));
        let thread = &group.rows[1];
        assert_eq!(thread.throughput_met, Some(false));
        assert!(thread.p99_ratio.unwrap() < 1.0);
        assert_eq!(group.rows[2].throughput_met, None);
        assert_eq!(group.rows[2].p99_standing, None);
        assert!(matches!(group.rows[4].open, Outcome::Skipped { .. }));
        let open = group.rows[3].open.measured().unwrap();
        assert_eq!(open.rounds.len(), 3);
        assert!((open.p99_ns.median - 30_000.0).abs() <= 30.0);
    }

    #[test]
    fn p99_verdicts_hold_outside_the_spread() {
        let peers: [&[u64]; 2] = [&[20_000, 25_000, 30_000], &[22_000, 40_000, 50_000]];
        let met = group(
            [1.0; 4],
            [
                // Every round under the best peer's best: lower, the target met.
                &[10_000, 11_000, 19_000],
                // A lower median, but its worst round over the peer's best: no verdict.
                &[9_000, 15_000, 40_000],
                peers[0],
                peers[1],
            ],
        );
        assert_eq!(met.rows[0].p99_standing, Some(Standing::Lower));
        assert_eq!(met.rows[1].p99_standing, Some(Standing::WithinSpread));
        let missed = group(
            [1.0; 4],
            [
                // Every round over the best peer's worst: higher, the target missed.
                &[31_000, 35_000, 60_000],
                // A higher median, but its best round under the peer's worst.
                &[29_000, 45_000, 60_000],
                peers[0],
                peers[1],
            ],
        );
        assert_eq!(missed.rows[0].p99_standing, Some(Standing::Higher));
        assert_eq!(missed.rows[1].p99_standing, Some(Standing::WithinSpread));
    }
}
