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
//! peak messages/s and round-trip percentiles); then every server **open loop** at
//! [`OPEN_RATE_FRACTION`] of the weakest server's closed-loop rate, with latency counted
//! from each message's intended send time (coordinated-omission correction, as wrk2
//! does). Each runs [`Timing::rounds`] rounds (rounds interleaved across the servers, so
//! that a burst of background load hits every server alike), merged into one histogram.
//!
//! Targets: iocp's closed-loop messages/s ≥ every peer's, and its open-loop p99 ≤ every
//! peer's. The table gives each row's ratio to the best peer for both.
//!
//! Then the scale row ([`scale`]): 10,000 connections (1,000 with `--quick`) of which 64
//! run the closed loop and the rest stay idle; the active ones' messages/s and p99, and the
//! memory each server keeps per idle connection.

mod iocp_server;
mod mio_server;
pub mod scale;
mod tokio_server;
mod uring_server;

use crate::latency::{self, CurvePoint, Percentiles};
use crate::loadgen::{self, Mode, Plan, MESSAGE};
use crate::sys::pin_set;
use crate::Settings;
use core_affinity::CoreId;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use iocp::Drive;
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
    /// Raw mio.
    Mio,
    /// tokio.
    Tokio,
    /// io_uring.
    IoUring,
}

/// Every server, in table order.
pub const SERVERS: [Server; 5] = [
    Server::IocpInline,
    Server::IocpThread,
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
            Server::Mio => "mio (epoll ET)",
            Server::Tokio => "tokio",
            Server::IoUring => "io_uring",
        }
    }

    /// A peer (not iocp).
    pub fn is_peer(self) -> bool {
        !self.is_iocp()
    }

    /// One of iocp's two drives.
    pub fn is_iocp(self) -> bool {
        matches!(self, Server::IocpInline | Server::IocpThread)
    }
}

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Worker threads of every server.
    pub workers: usize,
    /// Load generator threads.
    pub generator_threads: usize,
    /// Bytes per message.
    pub message_bytes: usize,
    /// Unrecorded lead-in of each measurement.
    pub warmup_s: f64,
    /// Length of one closed-loop measurement.
    pub closed_duration_s: f64,
    /// Measurements per server, connection count and loop (merged).
    pub rounds: usize,
    /// Length of one open-loop measurement.
    pub open_duration_s: f64,
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
    /// The peer with the lowest open-loop p99.
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
    /// Open-loop p99 over the best peer's (lowest).
    pub p99_ratio: Option<f64>,
    /// iocp rows: throughput ratio ≥ 1 and p99 ratio ≤ 1.
    pub target_met: Option<bool>,
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
    /// Latency from the intended send time, ns (every round merged).
    pub latency_ns: Percentiles,
    /// Its percentile curve.
    pub curve: Vec<CurvePoint>,
}

/// How long each measurement runs.
#[derive(Clone, Copy, Debug)]
struct Timing {
    warmup: Duration,
    closed: Duration,
    open: Duration,
    rounds: usize,
}

impl Timing {
    /// Full run at the default 0.3 s: 3 connection counts x 5 servers x 2 rounds x
    /// ((0.1 + 0.6 s) closed + (0.1 + 0.9 s) open) = 51 s, plus setup and teardown.
    fn of(settings: &Settings) -> Timing {
        Timing {
            warmup: (settings.duration / 3).max(Duration::from_millis(10)),
            closed: settings.duration * 2,
            open: settings.duration * 3,
            rounds: if settings.quick { 1 } else { 2 },
        }
    }
}

fn connection_counts(settings: &Settings) -> &'static [usize] {
    if settings.quick {
        &QUICK_CONNECTIONS
    } else {
        &CONNECTIONS
    }
}

/// Measurements [`run`] makes.
pub fn measurements(settings: &Settings) -> u64 {
    let rounds = Timing::of(settings).rounds;
    let per_count = SERVERS.len() * rounds * 2;
    let scale = SERVERS.len() * rounds;
    (connection_counts(settings).len() * per_count + scale) as u64
}

/// The rounds of one server in one loop, merged.
struct Merged {
    messages: u64,
    window: Duration,
    late: u64,
    runs: Vec<f64>,
    histogram: Histogram<u64>,
}

impl Merged {
    fn new() -> Merged {
        Merged {
            messages: 0,
            window: Duration::ZERO,
            late: 0,
            runs: Vec::new(),
            histogram: latency::histogram(),
        }
    }

    fn add(&mut self, measured: &loadgen::Measured) {
        self.messages += measured.messages;
        self.window += measured.window;
        self.late += measured.late;
        self.runs.push(measured.per_sec());
        self.histogram
            .add(&measured.histogram)
            .expect("histograms with the same bounds add");
    }

    fn per_sec(&self) -> f64 {
        self.messages as f64 / self.window.as_secs_f64()
    }
}

/// Measures every server at every connection count, advancing `bar` after each
/// measurement. `workers`: worker threads of every server.
pub fn run(settings: &Settings, workers: usize, bar: &ProgressBar) -> Report {
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
                    bar.inc((SERVERS.len() * timing.rounds) as u64);
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
        timing,
        cores,
    };
    let scale = scale::run(settings, &active, available, bar);
    Report {
        workers,
        generator_threads: GENERATOR_THREADS,
        message_bytes: MESSAGE,
        warmup_s: timing.warmup.as_secs_f64(),
        closed_duration_s: timing.closed.as_secs_f64(),
        rounds: timing.rounds,
        open_duration_s: timing.open.as_secs_f64(),
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
                runs: merged.runs,
                latency_ns: Percentiles::of(&merged.histogram),
                curve: latency::curve(&merged.histogram),
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
            Ok(merged) if merged.messages > 0 => Outcome::Measured(Open {
                rate: open_rate.unwrap_or_default(),
                messages_per_sec: merged.per_sec(),
                late: merged.late,
                latency_ns: Percentiles::of(&merged.histogram),
                curve: latency::curve(&merged.histogram),
            }),
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
    let p99s: Vec<Option<f64>> = open
        .iter()
        .map(|o| o.measured().map(|o| o.latency_ns.p99 as f64))
        .collect();
    let throughput = |i: usize| throughputs[i];
    let p99 = |i: usize| p99s[i];
    let peers = || (0..SERVERS.len()).filter(|&i| SERVERS[i].is_peer());
    let best_throughput = peers()
        .filter_map(|i| Some((i, throughput(i)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let best_p99 = peers()
        .filter_map(|i| Some((i, p99(i)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let rows = SERVERS
        .iter()
        .zip(closed.into_iter().zip(open))
        .enumerate()
        .map(|(i, (&server, (closed, open)))| {
            let throughput_ratio = throughput(i).zip(best_throughput).map(|(t, (_, b))| t / b);
            let p99_ratio = p99(i).zip(best_p99).map(|(p, (_, b))| p / b.max(1.0));
            let target_met = server
                .is_iocp()
                .then(|| Some(throughput_ratio? >= 1.0 && p99_ratio? <= 1.0))
                .flatten();
            Row {
                server,
                name: server.name(),
                closed,
                open,
                throughput_ratio,
                p99_ratio,
                target_met,
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
        let rounds = self.timing.rounds;
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
            Server::IocpInline => iocp_server::start(launch, Drive::Inline),
            Server::IocpThread => iocp_server::start(launch, Drive::Thread),
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
            timing: Timing {
                warmup: Duration::from_millis(10),
                closed: Duration::from_millis(30),
                open: Duration::from_millis(30),
                rounds: 1,
            },
            cores: None,
        }
    }

    #[test]
    fn every_server_echoes_closed_and_open_loop() {
        let io_uring = uring_server::probe();
        for server in SERVERS {
            if server == Server::IoUring && io_uring.is_err() {
                continue;
            }
            for connections in [1, 8] {
                let context = context(connections);
                let closed = context
                    .measure(server, Mode::Closed)
                    .unwrap_or_else(|e| panic!("{server:?} closed, {connections}: {e}"));
                assert!(closed.messages > 0, "{server:?}");
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
        for server in SERVERS {
            if server == Server::IoUring && io_uring.is_err() {
                continue;
            }
            let closed = context
                .measure(server, Mode::Closed)
                .unwrap_or_else(|e| panic!("{server:?}: {e}"));
            assert!(closed.messages > 0, "{server:?}");
        }
    }

    #[test]
    fn ratios_are_to_the_best_peer() {
        let measured = |rate: f64, p99_ns: u64| {
            let mut merged = Merged::new();
            let mut histogram = latency::histogram();
            latency::record(&mut histogram, Duration::from_nanos(p99_ns));
            merged.add(&loadgen::Measured {
                messages: rate as u64,
                window: Duration::from_secs(1),
                histogram,
                late: 0,
            });
            merged
        };
        let open = |p99_ns: u64| Ok(measured(1.0, p99_ns));
        let closed = vec![
            Ok(measured(200.0, 0)),
            Ok(measured(50.0, 0)),
            Ok(measured(100.0, 0)),
            Ok(measured(80.0, 0)),
            Err("refused".to_string()),
        ];
        let opens = vec![
            open(10_000),
            open(40_000),
            open(20_000),
            open(30_000),
            Err("refused".into()),
        ];
        let group = summarize(64, Some(25.0), closed, opens);
        assert_eq!(group.best_peer_throughput, Some(Server::Mio));
        assert_eq!(group.best_peer_p99, Some(Server::Mio));
        let inline = &group.rows[0];
        assert!((inline.throughput_ratio.unwrap() - 2.0).abs() < 1e-9);
        assert!((inline.p99_ratio.unwrap() - 0.5).abs() < 1e-2);
        assert_eq!(inline.target_met, Some(true));
        assert_eq!(group.rows[1].target_met, Some(false));
        assert_eq!(group.rows[2].target_met, None);
        assert!(matches!(group.rows[4].open, Outcome::Skipped { .. }));
    }
}
