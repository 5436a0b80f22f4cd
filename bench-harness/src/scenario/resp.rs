//! `resp`: `redis-benchmark` against iocp's Redis-protocol server and against Redis.
//!
//! Servers, each a process of its own on a free port of 127.0.0.1, started once for the
//! scenario and killed at its end (on every path: they are [`Process`]es):
//!
//! * `resp_server (iocp)`: `engine/examples/resp_server.rs`, built by cargo from this
//!   checkout in the harness's profile ([`crate::cargo`]; a no-op when up to date) and run
//!   with `--addr 127.0.0.1:PORT --workers N` (`--workers`, default 1: one port, one
//!   thread dequeuing, inline drive);
//! * `redis-server`: Redis as its users run it, persistence off and nothing else changed:
//!   `redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no`.
//!
//! The client is `redis-benchmark` (Debian's `redis-tools`; 6.2 or later, whose `--csv`
//! report has latency percentiles): `-c 50 -r 100000 -t set,get -P {1,16} -n N --csv`,
//! that is 50 connections, keys drawn from 100,000, 3-byte values (its default), SET then
//! GET, without and with a pipeline of 16, a fixed number of requests per test
//! ([`Sizes`]). One run of it is one measurement; a run may last at most
//! [`BENCHMARK_LIMIT`] before it is killed and reported as failed. Rounds alternate between
//! the servers (resp_server, redis-server, resp_server, ...), so that drift of the machine
//! hits both alike; each figure is the median over the rounds, with the lowest and highest.
//! With `--pin`, where the machine has a core for each server thread and one for the
//! benchmark, the server runs on the first `--workers` cores and `redis-benchmark` on the
//! next.
//!
//! Figures, from the `--csv` report: requests/s, p50 and p99 latency (milliseconds,
//! microsecond resolution). Targets, per test and pipeline: resp_server's requests/s over
//! redis-server's ≥ 1, and its p99 over redis-server's ≤ 1.
//!
//! Without `redis-server` or `redis-benchmark` on the `PATH`, or where the example does
//! not build or a server does not start, the scenario is skipped with the reason.

use super::spread::Spread;
use super::{Bound, Target};
use crate::process::{self, Process};
use crate::{cargo, Settings};
use core_affinity::CoreId;
use indicatif::ProgressBar;
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Connections of `redis-benchmark` (`-c`).
pub const CLIENTS: usize = 50;
/// Pipeline depths (`-P`).
pub const PIPELINES: [usize; 2] = [1, 16];
/// Keys drawn at random from this many (`-r`).
pub const KEYSPACE: u64 = 100_000;
/// Bytes per value: redis-benchmark's default (`-d 3`).
pub const VALUE_BYTES: usize = 3;
/// How to get Redis where it is missing.
pub const INSTALL: &str = "run bash bench-harness/scripts/install-peers.sh";
/// The longest one `redis-benchmark` run may take.
const BENCHMARK_LIMIT: Duration = Duration::from_secs(60);
/// The longest a server may take to accept connections after it is started.
const START_LIMIT: Duration = Duration::from_secs(10);
/// Free ports tried for a server (another program may take a port between our look and
/// the server's bind).
const START_ATTEMPTS: usize = 3;
/// The longest `--version` may take.
const VERSION_LIMIT: Duration = Duration::from_secs(10);

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Server {
    /// `engine/examples/resp_server.rs`.
    RespServer,
    /// `redis-server`.
    Redis,
}

/// Both servers, in the order each round runs them.
pub const SERVERS: [Server; 2] = [Server::RespServer, Server::Redis];

impl Server {
    /// Name in the table and the plot.
    pub fn name(self) -> &'static str {
        match self {
            Server::RespServer => "resp_server (iocp)",
            Server::Redis => "redis-server",
        }
    }
}

/// A `redis-benchmark` test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// `SET key:__rand_int__ xxx`.
    Set,
    /// `GET key:__rand_int__`.
    Get,
}

/// The tests of every run, in the order redis-benchmark runs them.
pub const TESTS: [Test; 2] = [Test::Set, Test::Get];

impl Test {
    /// The test's name in `-t` and in the `--csv` report.
    pub fn name(self) -> &'static str {
        match self {
            Test::Set => "SET",
            Test::Get => "GET",
        }
    }
}

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Why nothing was measured, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// `redis-server --version`.
    pub redis_server: Option<String>,
    /// `redis-benchmark --version`.
    pub redis_benchmark: Option<String>,
    /// Worker threads of resp_server.
    pub workers: usize,
    /// [`CLIENTS`].
    pub clients: usize,
    /// [`KEYSPACE`].
    pub keyspace: u64,
    /// [`VALUE_BYTES`].
    pub value_bytes: usize,
    /// Runs per server and pipeline.
    pub rounds: usize,
    /// Whether the servers and redis-benchmark ran on distinct cores.
    pub pinned: bool,
    /// One group per pipeline depth and test.
    pub groups: Vec<Group>,
}

/// Both servers at one pipeline depth and test.
#[derive(Debug, Serialize)]
pub struct Group {
    /// The test.
    pub test: Test,
    /// [`Test::name`].
    pub name: &'static str,
    /// `-P`.
    pub pipeline: usize,
    /// `-n`: requests per run.
    pub requests: u64,
    /// One row per server, in [`SERVERS`] order.
    pub rows: Vec<Row>,
    /// resp_server against redis-server: requests/s and p99.
    pub targets: Vec<Target>,
}

/// One server at one pipeline depth and test.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The server.
    pub server: Server,
    /// [`Server::name`].
    pub name: &'static str,
    /// Its figures.
    pub outcome: Outcome,
}

/// A server's figures, or why there are none.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Measured in every round.
    Measured {
        /// Requests per second.
        rps: Rounds,
        /// Median latency, ms.
        p50_ms: Rounds,
        /// 99th percentile latency, ms.
        p99_ms: Rounds,
    },
    /// It failed.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// Median requests/s and p99 (ms), if measured.
    pub fn medians(&self) -> Option<(f64, f64)> {
        match self {
            Outcome::Measured { rps, p99_ms, .. } => Some((rps.median, p99_ms.median)),
            Outcome::Skipped { .. } => None,
        }
    }
}

/// A figure over the rounds (its median and range, which it derefs to), with every
/// round's value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rounds {
    /// The median, the lowest and the highest.
    #[serde(flatten)]
    pub spread: Spread,
    /// Every round's, in order.
    pub runs: Vec<f64>,
}

impl Rounds {
    /// The figure over `runs`; `None` when there are none.
    fn of(runs: Vec<f64>) -> Option<Rounds> {
        Some(Rounds {
            spread: Spread::of(&runs)?,
            runs,
        })
    }
}

impl std::ops::Deref for Rounds {
    type Target = Spread;

    fn deref(&self) -> &Spread {
        &self.spread
    }
}

/// How much each run does.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    rounds: usize,
    /// Requests per test at pipeline 1 and at 16.
    requests: [u64; 2],
}

impl Sizes {
    /// Full run: 5 rounds x 2 pipelines x 2 servers x (SET + GET), each test of 100,000
    /// requests unpipelined or 400,000 pipelined, about 0.7 s each at the rates a 2-core VM
    /// sees: some 30 s in all. `--quick`: one round of 5,000 and 20,000 requests, well under
    /// a second (plus the build of the example, a no-op when it is up to date).
    fn of(settings: &Settings) -> Sizes {
        match settings.quick {
            true => Sizes {
                rounds: 1,
                requests: [5_000, 20_000],
            },
            false => Sizes {
                rounds: 5,
                requests: [100_000, 400_000],
            },
        }
    }
}

/// Measurements [`run`] makes: one `redis-benchmark` run per round, pipeline and server.
pub fn measurements(settings: &Settings) -> u64 {
    (Sizes::of(settings).rounds * PIPELINES.len() * SERVERS.len()) as u64
}

/// One test's figures from one `redis-benchmark` run.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Every run of one server at one pipeline depth: per test, a sample per round; or why
/// the runs stopped.
type Runs = Result<[Vec<Sample>; 2], String>;

/// Starts both servers, runs every round, stops the servers; advances `bar` after each
/// `redis-benchmark` run. `workers`: resp_server's worker threads.
pub fn run(settings: &Settings, workers: usize, bar: &ProgressBar) -> Report {
    let sizes = Sizes::of(settings);
    let cores = settings.pin_plan(workers + 1);
    let redis_server = version("redis-server");
    let redis_benchmark = version("redis-benchmark");
    let mut report = Report {
        skipped: None,
        redis_server: redis_server.as_ref().ok().cloned(),
        redis_benchmark: redis_benchmark.as_ref().ok().cloned(),
        workers,
        clients: CLIENTS,
        keyspace: KEYSPACE,
        value_bytes: VALUE_BYTES,
        rounds: sizes.rounds,
        pinned: cores.is_some(),
        groups: Vec::new(),
    };
    let measured = redis_server
        .and(redis_benchmark)
        .and_then(|_| measure(sizes, workers, cores, bar));
    match measured {
        Ok(runs) => report.groups = summarize(sizes, runs),
        Err(reason) => {
            bar.set_position(measurements(settings));
            report.skipped = Some(reason);
        }
    }
    report
}

/// `PROGRAM --version`, or why it cannot run (naming the install script when it is not on
/// the `PATH`).
fn version(program: &str) -> Result<String, String> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    if !on_path {
        return Err(format!(
            "{program} is not on the PATH; to install it, {INSTALL}"
        ));
    }
    let done = process::run(
        program,
        Command::new(program).arg("--version"),
        None,
        VERSION_LIMIT,
    )?;
    match done.status.success() {
        true => Ok(done.stdout.trim().to_owned()),
        false => Err(format!(
            "`{program} --version` failed ({}): {}",
            done.status,
            done.last_words()
        )),
    }
}

/// The measurements: `runs[server][pipeline]`.
fn measure(
    sizes: Sizes,
    workers: usize,
    cores: Option<&[CoreId]>,
    bar: &ProgressBar,
) -> Result<Vec<Vec<Runs>>, String> {
    let (server_cores, benchmark_cores) = match cores {
        Some(cores) => (Some(&cores[..workers]), Some(&cores[workers..])),
        None => (None, None),
    };
    bar.set_message("building the resp_server example");
    let example = build_example()?;
    let workers_arg = workers.to_string();
    let resp = start(Server::RespServer, server_cores, |port| {
        let mut command = Command::new(&example);
        command.args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--workers",
            &workers_arg,
        ]);
        command
    })?;
    let redis = start(Server::Redis, server_cores, |port| {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            // Nothing is written with persistence off; were it, it would not land here.
            .current_dir(std::env::temp_dir());
        command
    })?;
    let mut servers = [resp, redis];
    let mut runs: Vec<Vec<Runs>> = SERVERS
        .iter()
        .map(|_| {
            PIPELINES
                .iter()
                .map(|_| Ok([Vec::new(), Vec::new()]))
                .collect()
        })
        .collect();
    for round in 1..=sizes.rounds {
        for (p, &pipeline) in PIPELINES.iter().enumerate() {
            for (s, (server, running)) in SERVERS.iter().zip(&mut servers).enumerate() {
                bar.set_message(format!(
                    "round {round}/{}, pipeline {pipeline}: {}",
                    sizes.rounds,
                    server.name()
                ));
                if let Ok(samples) = &mut runs[s][p] {
                    let measured = running.process.alive().and_then(|()| {
                        benchmark(running.addr, pipeline, sizes.requests[p], benchmark_cores)
                    });
                    match measured {
                        Ok(run) => {
                            for (samples, sample) in samples.iter_mut().zip(run) {
                                samples.push(sample);
                            }
                        }
                        Err(reason) => runs[s][p] = Err(reason),
                    }
                }
                bar.inc(1);
            }
        }
    }
    // Dropping the servers kills them.
    Ok(runs)
}

/// The groups of the report, with their targets.
fn summarize(sizes: Sizes, runs: Vec<Vec<Runs>>) -> Vec<Group> {
    let mut groups = Vec::new();
    for (p, &pipeline) in PIPELINES.iter().enumerate() {
        for (t, &test) in TESTS.iter().enumerate() {
            let rows: Vec<Row> = SERVERS
                .iter()
                .zip(&runs)
                .map(|(&server, runs)| Row {
                    server,
                    name: server.name(),
                    outcome: outcome(&runs[p], t),
                })
                .collect();
            let medians = |server| {
                rows.iter()
                    .find(|row| row.server == server)
                    .and_then(|row| row.outcome.medians())
            };
            let (ours, redis) = (medians(Server::RespServer), medians(Server::Redis));
            let ratio = |pick: fn((f64, f64)) -> f64| Some(pick(ours?) / pick(redis?).max(1e-3));
            let targets = vec![
                Target::new(
                    "resp_server rps / redis-server rps",
                    ratio(|(rps, _)| rps),
                    Bound::AtLeast(1.0),
                ),
                Target::new(
                    "resp_server p99 / redis-server p99",
                    ratio(|(_, p99)| p99),
                    Bound::AtMost(1.0),
                ),
            ];
            groups.push(Group {
                test,
                name: test.name(),
                pipeline,
                requests: sizes.requests[p],
                rows,
                targets,
            });
        }
    }
    groups
}

/// The figures of test `t` over the rounds of `runs`.
fn outcome(runs: &Runs, t: usize) -> Outcome {
    let samples = match runs {
        Ok(samples) => &samples[t],
        Err(reason) => {
            return Outcome::Skipped {
                reason: reason.clone(),
            }
        }
    };
    let spread = |pick: fn(&Sample) -> f64| Rounds::of(samples.iter().map(pick).collect());
    match (
        spread(|s| s.rps),
        spread(|s| s.p50_ms),
        spread(|s| s.p99_ms),
    ) {
        (Some(rps), Some(p50_ms), Some(p99_ms)) => Outcome::Measured {
            rps,
            p50_ms,
            p99_ms,
        },
        _ => Outcome::Skipped {
            reason: "no run completed".into(),
        },
    }
}

/// `cargo build -p iocp-engine --example resp_server`; the executable cargo reports.
fn build_example() -> Result<PathBuf, String> {
    let executables = cargo::build(
        "the resp_server example",
        &["-p", "iocp-engine", "--example", "resp_server"],
        |message| {
            let ours = message["target"]["name"] == "resp_server";
            match message["executable"].as_str() {
                Some(path) if ours => vec![PathBuf::from(path)],
                _ => Vec::new(),
            }
        },
    )?;
    executables
        .into_iter()
        .next()
        .ok_or_else(|| "building the resp_server example: cargo reported no executable".into())
}

/// A server process and the address it serves.
struct Running {
    process: Process,
    addr: SocketAddr,
}

/// Starts `server` with the command `command(port)` makes, on a free port of 127.0.0.1,
/// restricted to `cores`; returns once it accepts connections. A server that exits before
/// (another program took the port) is started again on another port.
fn start(
    server: Server,
    cores: Option<&[CoreId]>,
    command: impl Fn(u16) -> Command,
) -> Result<Running, String> {
    let mut failure = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut process = Process::spawn(server.name(), &mut command(port), cores)?;
        match wait_until_accepting(&mut process, addr) {
            Ok(()) => return Ok(Running { process, addr }),
            // The process is killed as it is dropped here.
            Err(reason) => failure = reason,
        }
    }
    Err(format!("{} did not start: {failure}", server.name()))
}

/// A port of 127.0.0.1 that nothing listens on at the moment.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Connects to `addr` until it accepts, `process` exits, or [`START_LIMIT`] passes.
fn wait_until_accepting(process: &mut Process, addr: SocketAddr) -> Result<(), String> {
    let until = Instant::now() + START_LIMIT;
    loop {
        process.alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "nothing accepted on {addr} within {} s",
                START_LIMIT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One `redis-benchmark` run against `addr`: SET then GET, `requests` each, pipelined
/// `pipeline` deep; each test's figures, in [`TESTS`] order.
fn benchmark(
    addr: SocketAddr,
    pipeline: usize,
    requests: u64,
    cores: Option<&[CoreId]>,
) -> Result<[Sample; 2], String> {
    let tests: Vec<&str> = TESTS.iter().map(|test| test.name()).collect();
    let done = process::run(
        "redis-benchmark",
        Command::new("redis-benchmark").args([
            "-h".to_owned(),
            addr.ip().to_string(),
            "-p".into(),
            addr.port().to_string(),
            "-c".into(),
            CLIENTS.to_string(),
            "-n".into(),
            requests.to_string(),
            "-r".into(),
            KEYSPACE.to_string(),
            "-d".into(),
            VALUE_BYTES.to_string(),
            "-P".into(),
            pipeline.to_string(),
            "-t".into(),
            tests.join(",").to_lowercase(),
            "--csv".into(),
        ]),
        cores,
        BENCHMARK_LIMIT,
    )?;
    if !done.status.success() {
        return Err(format!(
            "redis-benchmark failed ({}): {}",
            done.status,
            done.last_words()
        ));
    }
    let report = parse_csv(&done.stdout)?;
    let sample = |test: Test| {
        report
            .iter()
            .find(|(name, _)| name == test.name())
            .map(|&(_, sample)| sample)
            .ok_or_else(|| {
                format!(
                    "redis-benchmark reported no {} test: {}",
                    test.name(),
                    done.last_words()
                )
            })
    };
    Ok([sample(TESTS[0])?, sample(TESTS[1])?])
}

/// The tests of a `redis-benchmark --csv` report: a header line
/// (`"test","rps","avg_latency_ms",...,"p50_latency_ms",...,"p99_latency_ms",...`), then a
/// line per test. Columns are found by name; a report without `p50_latency_ms` and
/// `p99_latency_ms` (redis-benchmark before 6.2) is an error.
fn parse_csv(out: &str) -> Result<Vec<(String, Sample)>, String> {
    let mut lines = out.lines().map(csv_fields);
    let header = lines
        .find(|fields| fields.first().is_some_and(|field| field == "test"))
        .ok_or("redis-benchmark's --csv report has no header line")?;
    let column = |name: &str| {
        header
            .iter()
            .position(|field| field == name)
            .ok_or_else(|| format!("redis-benchmark's --csv report has no {name} column"))
    };
    let (rps, p50, p99) = (
        column("rps")?,
        column("p50_latency_ms")?,
        column("p99_latency_ms")?,
    );
    let mut tests = Vec::new();
    for fields in lines.filter(|fields| fields.len() == header.len()) {
        let number = |i: usize| {
            fields[i]
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| format!("redis-benchmark reported {:?} as a figure", fields[i]))
        };
        let sample = Sample {
            rps: number(rps)?,
            p50_ms: number(p50)?,
            p99_ms: number(p99)?,
        };
        tests.push((fields[0].clone(), sample));
    }
    Ok(tests)
}

/// The fields of one CSV line: comma-separated, each optionally in double quotes (a doubled
/// quote inside stands for one).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.trim_end().chars().peekable();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("never empty");
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => field.push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `redis-benchmark -c 50 -n 20000 -t set,get --csv` (7.0.15) against redis-server
    /// 7.0.15, as captured on the development VM.
    const SAMPLE: &str = "\
\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"
\"SET\",\"149253.73\",\"0.216\",\"0.024\",\"0.207\",\"0.311\",\"0.431\",\"2.871\"
\"GET\",\"81967.21\",\"0.402\",\"0.040\",\"0.207\",\"2.079\",\"4.351\",\"8.583\"
";

    #[test]
    fn csv_report_is_parsed_by_column_name() {
        let tests = parse_csv(SAMPLE).unwrap();
        assert_eq!(
            tests,
            vec![
                (
                    "SET".to_owned(),
                    Sample {
                        rps: 149_253.73,
                        p50_ms: 0.207,
                        p99_ms: 0.431
                    }
                ),
                (
                    "GET".to_owned(),
                    Sample {
                        rps: 81_967.21,
                        p50_ms: 0.207,
                        p99_ms: 4.351
                    }
                ),
            ]
        );
        // Columns in another order, and a warning line before the header.
        let reordered = "WARNING: something\n\
                         \"test\",\"p99_latency_ms\",\"rps\",\"p50_latency_ms\"\n\
                         \"GET\",\"1.5\",\"1000\",\"0.5\"\n";
        let tests = parse_csv(reordered).unwrap();
        assert_eq!(tests[0].1.rps, 1000.0);
        assert_eq!(tests[0].1.p99_ms, 1.5);
    }

    #[test]
    fn csv_reports_without_percentiles_or_numbers_are_errors() {
        // redis-benchmark 6.0: no header, rps only.
        assert!(parse_csv("\"SET\",\"149253.73\"\n\"GET\",\"81967.21\"\n").is_err());
        let no_p99 = "\"test\",\"rps\",\"p50_latency_ms\"\n\"SET\",\"1\",\"2\"\n";
        assert!(parse_csv(no_p99).unwrap_err().contains("p99_latency_ms"));
        let garbled = SAMPLE.replace("149253.73", "fast");
        assert!(parse_csv(&garbled).unwrap_err().contains("fast"));
    }

    #[test]
    fn csv_fields_unquote() {
        assert_eq!(csv_fields("\"a\",b,\"c,d\""), ["a", "b", "c,d"]);
        assert_eq!(csv_fields("\"say \"\"hi\"\"\",\"\""), ["say \"hi\"", ""]);
    }

    #[test]
    fn spreads_take_the_median_and_the_extremes() {
        let odd = Rounds::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        assert_eq!(odd.runs, [3.0, 1.0, 2.0]);
        assert_eq!(Rounds::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Rounds::of(Vec::new()).is_none());
    }

    #[test]
    fn targets_compare_resp_server_with_redis() {
        let sample = |rps, p99_ms| Sample {
            rps,
            p50_ms: 0.1,
            p99_ms,
        };
        let ours: Runs = Ok([vec![sample(200.0, 1.0)], vec![sample(50.0, 4.0)]]);
        let redis: Runs = Ok([vec![sample(100.0, 2.0)], vec![sample(100.0, 2.0)]]);
        let failed: Runs = Err("refused".into());
        let sizes = Sizes {
            rounds: 1,
            requests: [10, 20],
        };
        let groups = summarize(sizes, vec![vec![ours, failed], vec![redis.clone(), redis]]);
        assert_eq!(groups.len(), 4);
        let set = &groups[0];
        assert_eq!((set.test, set.pipeline, set.requests), (Test::Set, 1, 10));
        assert_eq!(set.targets[0].ratio, Some(2.0));
        assert_eq!(set.targets[0].met, Some(true));
        assert_eq!(set.targets[1].ratio, Some(0.5));
        assert_eq!(set.targets[1].met, Some(true));
        let get = &groups[1];
        assert_eq!(get.test, Test::Get);
        assert_eq!(get.targets[0].met, Some(false));
        assert_eq!(get.targets[1].met, Some(false));
        // Pipeline 16: resp_server failed, so nothing is judged.
        assert!(matches!(groups[2].rows[0].outcome, Outcome::Skipped { .. }));
        assert_eq!(groups[2].targets[0].met, None);
    }
}
