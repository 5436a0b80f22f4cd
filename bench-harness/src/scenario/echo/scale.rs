//! The echo scale row: [`CONNECTIONS`] connections to one server, of which [`ACTIVE`] run
//! the closed loop and the rest are connected and idle.
//!
//! **Throughput and p99** are the closed loop's on the active connections (the harness's
//! generator, as in the other rows), with the idle ones established before it starts.
//!
//! **Memory per idle connection** is what the server keeps for a connection it has accepted
//! and waits on. The servers are threads of the harness, so it is read from the harness
//! process's resident memory (`Rss` of `/proc/self/smaps_rollup`), once with the server
//! started and idle (after a `malloc_trim`, so that what the server allocates next lands on
//! pages counted as they are touched, not on pages freed earlier), and once after the idle
//! connections are established; the difference over their number is the figure. The
//! clients' ends of the idle connections live in a **child process** (this same binary, run
//! as `iocp-bench idle-clients`, see [`hold_idle_clients`]), so no client state is in the
//! harness's memory and none need be subtracted; the harness holds nothing per idle
//! connection meanwhile (its only allocations in the window are the two threads that read
//! the child's output, a few KiB against the megabytes measured). The child knows the
//! server has taken every idle connection when an echo comes back on the last one it
//! opened: every server accepts in order from one listener, and each starts reading a
//! connection as it accepts it (tokio: when it first runs the connection's task, which
//! its FIFO run queue does before it reaches the last one's).
//!
//! What the figure leaves out: the kernel's memory for the sockets (the same for every
//! server, and no part of a process's resident memory) and memory a server reserved
//! before the idle connections came (its threads' stacks, a ring, a table sized ahead).
//!
//! Both ends of every connection are descriptors, the server's in the harness and the idle
//! clients' in the child: the row raises the soft `RLIMIT_NOFILE` to what it needs (never
//! past the hard limit; it is put back afterwards) and is skipped, with the reason, where
//! the hard limit is too low.

use super::{Context, Merged, Outcome, Server, Spread, SCALE_SERVERS};
use crate::latency::Percentiles;
use crate::loadgen::{self, Mode};
use crate::process::Process;
use crate::sys;
use crate::Settings;
use core_affinity::CoreId;
use indicatif::ProgressBar;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Connections of a full run.
pub const CONNECTIONS: usize = 10_000;
/// Connections of a `--quick` run.
pub const QUICK_CONNECTIONS: usize = 1_000;
/// Connections running the closed loop.
pub const ACTIVE: usize = 64;
/// Descriptors the harness needs beyond one per connection and one per active client:
/// stdio, listeners, epoll and timer instances, pipes, the C library's.
const SPARE_DESCRIPTORS: u64 = 256;
/// The longest the idle connections may take to be established and taken by the server.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// The longest one idle connection's connect may take (the listener's queue may be full
/// for a moment, and a dropped SYN is sent again after a second).
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// How long the idle-clients child lives at most, whatever the harness does.
const HOLD_LIMIT: Duration = Duration::from_secs(300);
/// What the child prints once every idle connection is established and served.
const READY: &str = "ready";
/// The bytes the child sends on its last connection to see the server answer.
const PROBE: &[u8] = b"is every connection before this one accepted?";

/// The row.
#[derive(Debug, Serialize)]
pub struct Scale {
    /// Connections in all.
    pub connections: usize,
    /// Of which running the closed loop.
    pub active: usize,
    /// `--quick` ran [`QUICK_CONNECTIONS`] instead of [`CONNECTIONS`].
    pub quick: bool,
    /// Why the row did not run, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// One row per server.
    pub rows: Vec<Row>,
    /// The peer with the most messages/s.
    pub best_peer_throughput: Option<Server>,
}

/// One server with the idle connections.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The server.
    pub server: Server,
    /// [`Server::name`].
    pub name: &'static str,
    /// Its figures.
    pub outcome: Outcome<Loaded>,
    /// Messages/s over the best peer's.
    pub throughput_ratio: Option<f64>,
}

/// A server's figures with the idle connections.
#[derive(Debug, Serialize)]
pub struct Loaded {
    /// Closed-loop messages per second of the active connections, over every round.
    pub messages_per_sec: f64,
    /// Messages per second of each round.
    pub runs: Vec<f64>,
    /// Their round trips, ns (every round merged).
    pub latency_ns: Percentiles,
    /// Resident memory per idle connection, bytes: the median over the rounds.
    pub idle_bytes_per_connection: f64,
    /// The same, per round.
    pub idle_bytes_runs: Vec<f64>,
}

/// Connections of the row for this run.
fn connections(settings: &Settings) -> usize {
    if settings.quick {
        QUICK_CONNECTIONS
    } else {
        CONNECTIONS
    }
}

/// Measures every server with the idle connections, rounds interleaved; `context` is that
/// of the active connections. A server that is not `available` or fails a round is skipped
/// with the reason.
pub(super) fn run(
    settings: &Settings,
    context: &Context<'_>,
    available: impl Fn(Server) -> Result<(), String>,
    bar: &ProgressBar,
) -> Scale {
    let connections = connections(settings);
    let mut scale = Scale {
        connections,
        active: context.connections,
        quick: settings.quick,
        skipped: None,
        rows: Vec::new(),
        best_peer_throughput: None,
    };
    let idle = connections - context.connections;
    let soft = match raise_descriptor_limit(connections) {
        Ok(soft) => soft,
        Err(reason) => {
            bar.inc((SCALE_SERVERS.len() * context.timing.closed_rounds) as u64);
            scale.skipped = Some(reason);
            return scale;
        }
    };
    let mut merged: Vec<Result<(Merged, Vec<f64>), String>> = SCALE_SERVERS
        .iter()
        .map(|&server| available(server).map(|()| (Merged::new(), Vec::new())))
        .collect();
    let rounds = context.timing.closed_rounds;
    for round in 1..=rounds {
        for (slot, &server) in merged.iter_mut().zip(&SCALE_SERVERS) {
            bar.set_message(format!(
                "{connections} conn ({} active), round {round}/{rounds}: {}",
                context.connections,
                server.name()
            ));
            if let Ok((total, memory)) = slot {
                match measure(context, server, idle) {
                    Ok((measured, bytes)) => {
                        total.add(&measured);
                        memory.push(bytes);
                    }
                    Err(reason) => *slot = Err(reason),
                }
            }
            bar.inc(1);
        }
    }
    // Only raised, never lowered, so this puts it back.
    let _ = sys::set_open_files_limit(soft);
    summarize(&mut scale, merged);
    scale
}

/// One measurement: the server, the idle connections, the closed loop on the active ones.
fn measure(
    context: &Context<'_>,
    server: Server,
    idle: usize,
) -> Result<(loadgen::Measured, f64), String> {
    // The listener's queue holds as many as the kernel lets it (somaxconn).
    let backlog = context.connections + idle;
    let (measured, idle) =
        context.measure_with(server, Mode::Closed, backlog, SETUP_LIMIT, |addr, cores| {
            open_idle(addr, idle, cores)
        })?;
    Ok((measured, idle.bytes_per_connection))
}

/// The rows, with their ratios to the best peer.
fn summarize(scale: &mut Scale, merged: Vec<Result<(Merged, Vec<f64>), String>>) {
    let outcomes: Vec<Outcome<Loaded>> = merged
        .into_iter()
        .map(|slot| match slot {
            Ok((merged, memory)) if merged.messages > 0 => Outcome::Measured(Loaded {
                messages_per_sec: merged.per_sec(),
                runs: merged.runs(),
                latency_ns: Percentiles::of(&merged.histogram),
                idle_bytes_per_connection: Spread::of(&memory).map_or(0.0, |s| s.median),
                idle_bytes_runs: memory,
            }),
            Ok(_) => Outcome::Skipped {
                reason: "no message completed".into(),
            },
            Err(reason) => Outcome::Skipped { reason },
        })
        .collect();
    let best = SCALE_SERVERS
        .iter()
        .zip(&outcomes)
        .filter(|(server, _)| server.is_peer())
        .filter_map(|(&server, outcome)| Some((server, outcome.measured()?.messages_per_sec)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    scale.best_peer_throughput = best.map(|(server, _)| server);
    scale.rows = SCALE_SERVERS
        .iter()
        .zip(outcomes)
        .map(|(&server, outcome)| Row {
            server,
            name: server.name(),
            throughput_ratio: outcome
                .measured()
                .zip(best)
                .map(|(loaded, (_, best))| loaded.messages_per_sec / best),
            outcome,
        })
        .collect();
}

/// Raises the soft descriptor limit to what `connections` need; returns the soft limit to
/// put back, or why the row cannot run.
fn raise_descriptor_limit(connections: usize) -> Result<u64, String> {
    let need = (connections + ACTIVE) as u64 + SPARE_DESCRIPTORS;
    let (soft, hard) = sys::open_files_limit().map_err(|e| format!("getrlimit: {e}"))?;
    if hard < need {
        return Err(format!(
            "needs {need} descriptors and RLIMIT_NOFILE's hard limit is {hard} \
             (raise it, e.g. `ulimit -Hn {need}` as root)"
        ));
    }
    if soft < need {
        sys::set_open_files_limit(need).map_err(|e| format!("setrlimit: {e}"))?;
    }
    Ok(soft)
}

/// The idle connections of one measurement, held by a child process until dropped.
struct Idle {
    /// The child (killed when dropped, which closes its connections).
    _clients: Process,
    /// The harness's resident memory grew by this much per idle connection.
    bytes_per_connection: f64,
}

/// Opens `count` idle connections to `addr` from a child process (restricted to `cores`)
/// and measures the harness's resident memory around it: see the module's doc.
fn open_idle(addr: SocketAddr, count: usize, cores: Option<&[CoreId]>) -> Result<Idle, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    sys::trim_heap();
    let before = sys::resident_bytes().map_err(|e| format!("reading RSS: {e}"))?;
    let mut clients = Process::spawn(
        "the idle clients",
        Command::new(exe).args([
            "idle-clients".to_owned(),
            "--addr".into(),
            addr.to_string(),
            "--count".into(),
            count.to_string(),
            "--seconds".into(),
            HOLD_LIMIT.as_secs().to_string(),
        ]),
        cores,
    )?;
    let line = clients.line(SETUP_LIMIT)?;
    if line != READY {
        return Err(format!("the idle clients: {line}"));
    }
    let after = sys::resident_bytes().map_err(|e| format!("reading RSS: {e}"))?;
    Ok(Idle {
        _clients: clients,
        bytes_per_connection: after.saturating_sub(before) as f64 / count as f64,
    })
}

/// `iocp-bench idle-clients`: opens `count` connections to `addr`, sees the server echo on
/// the last one, prints [`READY`] and holds them all until its standard input ends (the
/// harness closes it, or dies) or `limit` passes. On failure it prints `error: ...`.
pub fn hold_idle_clients(addr: SocketAddr, count: usize, limit: Duration) -> ExitCode {
    let until = Instant::now() + limit;
    match connect_idle(addr, count, until) {
        Ok(connections) => {
            println!("{READY}");
            let _ = std::io::stdout().flush();
            let (ended, input_end) = mpsc::channel();
            // Detached: the process exits with the connections, whatever the thread does.
            let _ = thread::Builder::new().name("stdin".into()).spawn(move || {
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
                let _ = ended.send(());
            });
            let _ = input_end.recv_timeout(until.saturating_duration_since(Instant::now()));
            drop(connections);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The child's connections, the last one probed with an echo.
fn connect_idle(addr: SocketAddr, count: usize, until: Instant) -> Result<Vec<TcpStream>, String> {
    let need = count as u64 + SPARE_DESCRIPTORS;
    let (soft, _) = sys::open_files_limit().map_err(|e| format!("getrlimit: {e}"))?;
    if soft < need {
        sys::set_open_files_limit(need).map_err(|e| format!("setrlimit to {need}: {e}"))?;
    }
    let mut connections = Vec::with_capacity(count);
    for i in 0..count {
        if Instant::now() >= until {
            return Err(format!(
                "{i} of {count} connections made in the time allowed"
            ));
        }
        let stream = TcpStream::connect_timeout(&addr, CONNECT_LIMIT)
            .map_err(|e| format!("connect {addr} (connection {i} of {count}): {e}"))?;
        connections.push(stream);
    }
    let last = connections.last_mut().ok_or("no connection to hold")?;
    let wait = until.saturating_duration_since(Instant::now());
    let mut echo = vec![0; PROBE.len()];
    last.set_nodelay(true)
        .and_then(|()| last.set_read_timeout(Some(wait.min(SETUP_LIMIT))))
        .and_then(|()| last.write_all(PROBE))
        .and_then(|()| last.read_exact(&mut echo))
        .map_err(|e| format!("the probe's echo: {e}"))?;
    if echo != PROBE {
        return Err("the probe's echo differs from what was sent".into());
    }
    Ok(connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_limit_is_raised_or_the_row_refused() {
        let (soft, hard) = sys::open_files_limit().unwrap();
        let refused = raise_descriptor_limit(usize::try_from(hard).unwrap_or(usize::MAX));
        assert!(refused.unwrap_err().contains("hard limit"));
        assert_eq!(sys::open_files_limit().unwrap().0, soft);
        let within = (hard.min(4096) - ACTIVE as u64 - SPARE_DESCRIPTORS) as usize;
        assert_eq!(raise_descriptor_limit(within), Ok(soft));
        assert!(sys::open_files_limit().unwrap().0 >= hard.min(4096));
        sys::set_open_files_limit(soft).unwrap();
    }

    #[test]
    fn idle_connections_are_held_and_probed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // An echo server for the last connection; the others are only accepted.
        let server = thread::spawn(move || {
            let mut accepted = Vec::new();
            for _ in 0..5 {
                accepted.push(listener.accept().unwrap().0);
            }
            let last = accepted.last_mut().unwrap();
            let mut buf = vec![0; PROBE.len()];
            last.read_exact(&mut buf).unwrap();
            last.write_all(&buf).unwrap();
            accepted
        });
        let until = Instant::now() + Duration::from_secs(10);
        let held = connect_idle(addr, 5, until).unwrap();
        assert_eq!(held.len(), 5);
        assert_eq!(server.join().unwrap().len(), 5);
        // Nothing listens on a port just released.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(connect_idle(closed, 1, until)
            .unwrap_err()
            .contains("connect"));
    }
}
