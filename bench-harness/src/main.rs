//! `iocp-bench`: the iocp-rs load generator.
//!
//! Runs each scenario against its peers in one process, on one machine, in one sitting, so
//! that the ratios it prints compare like with like: while it runs it shows a progress bar
//! per scenario; at the end it prints a table with every implementation's figures and its
//! ratio to the best peer, and writes a results directory (`results.json` with the machine,
//! the command and every figure; `table.txt`; SVG plots).
//!
//! Scenarios (`iocp-bench [SCENARIO]`, all of them when none is named):
//!
//! * `drain`: post → dequeue throughput (same thread, producers, batched post, worker
//!   pool), iocp in Rust and through its C ABI against crossbeam's `ArrayQueue` and
//!   channel, `std::sync::mpsc` and io_uring NOPs ([`scenario::drain`]).
//! * `wake`: post-to-waiter latency, to a spinning waiter (ping-pong) and to a sleeping
//!   one (posts 2 ms apart), iocp in Rust and through its C ABI against a raw futex and
//!   mio's `Waker`, and the CPU an idle waiter burns ([`scenario::wake`]).
//! * `echo`: TCP echo on loopback, 64-byte messages, 1 to 256 connections, closed and open
//!   loop, iocp's two drives against the same server on mio, tokio and io_uring
//!   ([`scenario::echo`], driven by [`loadgen`]).
//! * `file`: 4 KiB random reads, iocp's `lio_listio` on its thread and io_uring drivers
//!   against a `pread` loop and fio: of a page-cached file at queue depths 16 and 64, and
//!   with `O_DIRECT` from the local disk at queue depths 1 and 32 ([`scenario::file`]).
//! * `resp`: `redis-benchmark` SET and GET, 50 clients, pipelines of 1 and 16, against
//!   iocp's `resp_server` example and against `redis-server` ([`scenario::resp`]).
//!
//! Every measurement is bounded in time and count, and every thread it starts is joined
//! before the next one begins. `--quick` shrinks the run to a few seconds (CI smoke run).

mod cargo;
mod latency;
mod libiocp;
mod loadgen;
mod plot;
mod process;
mod report;
mod results;
mod scenario;
mod stalls;
mod sys;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "iocp-bench",
    version,
    about = "iocp-rs scenarios against their peers"
)]
struct Cli {
    /// Scenario to run; all of them when omitted.
    #[command(subcommand)]
    scenario: Option<Command>,
    /// Smoke run: a few seconds in all, figures only indicative.
    #[arg(long, global = true)]
    quick: bool,
    /// Results directory [default: results/UTC-TIMESTAMP/ in the current directory].
    #[arg(long, global = true, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Also run every `drain` and `wake` shape pinned (each thread on a core of its own),
    /// where the machine has enough cores: the table then has a pinned and an unpinned group.
    #[arg(long, global = true)]
    pin: bool,
    /// Seconds per measurement [default: 0.3, or 0.02 with --quick].
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Worker threads of every `echo` server and of `resp`'s resp_server.
    #[arg(long, global = true, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// The spin limit of the iocp `echo` servers' ports (`PortBuilder::spin_limit`), in
    /// microseconds; 0: their waiters sleep at once [default: the engine's, 100].
    #[arg(long, global = true, value_name = "US",
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    iocp_spin_limit_us: Option<u32>,
    /// Only these connection counts in `echo`'s throughput and latency rows, 1 to 1024,
    /// comma-separated (its 10,000-connection row runs regardless) [default: 1,64,256, or
    /// 1,64 with --quick].
    #[arg(long, global = true, value_name = "N,...", value_delimiter = ',',
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    connections: Vec<u16>,
}

/// The subcommands: one per scenario, plus `all`.
///
/// A new scenario is one variant here, one module under `scenario/` with `measurements`
/// and `run`, one field in [`results::Scenarios`] with its table, and one arm in [`run`]
/// below.
#[derive(Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    /// Every scenario, one after the other (the default).
    All,
    /// Post → dequeue throughput: same thread, producers, batched post, worker pool, C ABI.
    Drain,
    /// Post-to-waiter latency, spinning and sleeping, against futex and mio Waker; idle CPU.
    Wake,
    /// TCP echo, 64 B, 1/64/256 connections, closed and open loop, against mio, tokio, io_uring.
    Echo,
    /// 4 KiB random reads, cached (QD 16/64) and O_DIRECT (QD 1/32): lio_listio on both drivers, pread, fio.
    File,
    /// redis-benchmark SET/GET, 50 clients, pipeline 1/16: resp_server against redis-server.
    Resp,
    /// Not a scenario: the child process of echo's scale row, which holds its idle
    /// connections ([`scenario::echo::scale::hold_idle_clients`]).
    #[command(hide = true)]
    IdleClients {
        /// The server.
        #[arg(long)]
        addr: SocketAddr,
        /// Connections to open.
        #[arg(long)]
        count: usize,
        /// Seconds to hold them at most.
        #[arg(long)]
        seconds: u64,
    },
}

impl Command {
    /// The scenarios this command runs, in order.
    fn scenarios(self) -> &'static [Command] {
        match self {
            Command::All => &[
                Command::Drain,
                Command::Wake,
                Command::Echo,
                Command::File,
                Command::Resp,
            ],
            Command::Drain => &[Command::Drain],
            Command::Wake => &[Command::Wake],
            Command::Echo => &[Command::Echo],
            Command::File => &[Command::File],
            Command::Resp => &[Command::Resp],
            Command::IdleClients { .. } => &[],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Command::All => "all",
            Command::Drain => "drain",
            Command::Wake => "wake",
            Command::Echo => "echo",
            Command::File => "file",
            Command::Resp => "resp",
            Command::IdleClients { .. } => "idle-clients",
        }
    }
}

/// How long and how often to measure, shared by every scenario.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--quick` was given.
    pub quick: bool,
    /// Length of one measurement (one run of one variant).
    pub duration: Duration,
    /// Runs per `drain` variant; the median is reported.
    pub drain_rounds: usize,
    /// Runs per `wake` implementation; their histograms are merged.
    pub wake_rounds: usize,
    /// How long the idle waiter blocks on its empty port.
    pub idle_wait: Duration,
    /// How long each of the two stall probes spins on every core ([`stalls`]).
    pub stall_probe: Duration,
    /// Cores to pin threads to (empty without `--pin`).
    pub cores: Vec<core_affinity::CoreId>,
    /// `--connections`, in increasing order (`None`: `echo`'s own counts).
    pub echo_connections: Option<Vec<usize>>,
}

impl Settings {
    fn new(cli: &Cli) -> Settings {
        // Full run: drain is 53 measurements x 5 rounds x 0.3 s = 80 s (89 with --pin on 2
        // cores: 133 s), wake 6 x 12 x 0.3 s = 23 s (46 s pinned too), echo about 65 s (of
        // which its 10,000-connection row 10 s) and file about 45 s (their modules derive
        // their lengths from this duration), resp about 30 s (a fixed number of requests):
        // about four minutes on 2 cores, five with --pin; the stall probes add 4 s.
        let ms = Duration::from_millis;
        let (duration, drain_rounds, wake_rounds, idle_wait, stall_probe) = if cli.quick {
            (ms(20), 3, 2, ms(250), ms(200))
        } else {
            (ms(300), 5, 12, ms(1_000), ms(2_000))
        };
        let cores = if cli.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut echo_connections: Vec<usize> = cli.connections.iter().map(|&n| n.into()).collect();
        echo_connections.sort_unstable();
        echo_connections.dedup();
        Settings {
            quick: cli.quick,
            duration: cli.duration.unwrap_or(duration),
            drain_rounds,
            wake_rounds,
            idle_wait,
            stall_probe,
            cores,
            echo_connections: (!echo_connections.is_empty()).then_some(echo_connections),
        }
    }

    /// Cores for a measurement with `threads` threads: one each, or none at all when the
    /// machine has too few (pinning two threads to one core would serialize them).
    pub fn pin_plan(&self, threads: usize) -> Option<&[core_affinity::CoreId]> {
        (self.cores.len() >= threads).then(|| &self.cores[..threads])
    }
}

/// `--duration`: seconds, fractional, within reason.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !(0.001..=600.0).contains(&secs) {
        return Err("must be between 0.001 and 600 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::IdleClients {
        addr,
        count,
        seconds,
    }) = cli.scenario
    {
        return scenario::echo::scale::hold_idle_clients(addr, count, Duration::from_secs(seconds));
    }
    let settings = Settings::new(&cli);
    let command = cli.scenario.unwrap_or(Command::All);
    let started = Instant::now();
    let out = match report::results_dir(cli.out.as_deref()) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("iocp-bench: cannot create the results directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.pin && settings.cores.is_empty() {
        eprintln!("iocp-bench: --pin: this machine does not report its cores; running unpinned");
    }

    let servers = Servers {
        workers: cli.workers.into(),
        iocp_spin_limit: cli
            .iocp_spin_limit_us
            .map(|us| Duration::from_micros(us.into())),
    };
    let all_cores = core_affinity::get_core_ids().unwrap_or_default();
    let probe = settings.stall_probe;
    let before = stalls::measure(stalls::When::Before, &all_cores, probe);
    let mut scenarios = results::Scenarios::default();
    for &scenario in command.scenarios() {
        run(scenario, &settings, servers, &mut scenarios);
    }
    let after = stalls::measure(stalls::When::After, &all_cores, probe);

    let results = results::Results::new(
        command.name(),
        &settings,
        vec![before, after],
        scenarios,
        started.elapsed(),
    );
    let table = report::table(&results);
    println!("{table}");
    match report::write(&out, &results, &table) {
        Ok(files) => {
            println!("results: {}", out.display());
            for file in files {
                println!("  {file}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iocp-bench: cannot write results to {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

/// What the command line sets for the servers of `echo` and `resp`.
#[derive(Clone, Copy, Debug)]
pub struct Servers {
    /// `--workers`: worker threads of every `echo` server and of `resp`'s resp_server.
    pub workers: usize,
    /// `--iocp-spin-limit-us`: the iocp `echo` servers' spin limit, if not the engine's.
    pub iocp_spin_limit: Option<Duration>,
}

/// Runs one scenario under its progress bar and files its report.
fn run(
    scenario: Command,
    settings: &Settings,
    servers: Servers,
    scenarios: &mut results::Scenarios,
) {
    use scenario::{drain, echo, file, resp, wake};
    let name = scenario.name();
    match scenario {
        Command::All | Command::IdleClients { .. } => {
            unreachable!("`Command::scenarios` lists scenarios only")
        }
        Command::Drain => {
            let bar = progress_bar(name, drain::measurements(settings));
            scenarios.drain = Some(drain::run(settings, &bar));
            bar.finish_with_message("done");
        }
        Command::Wake => {
            let bar = progress_bar(name, wake::measurements(settings));
            scenarios.wake = Some(wake::run(settings, &bar));
            bar.finish_with_message("done");
        }
        Command::Echo => {
            let bar = progress_bar(name, echo::measurements(settings));
            scenarios.echo = Some(echo::run(settings, servers, &bar));
            bar.finish_with_message("done");
        }
        Command::File => {
            let bar = progress_bar(name, file::measurements(settings));
            scenarios.file = Some(file::run(settings, &bar));
            bar.finish_with_message("done");
        }
        Command::Resp => {
            let bar = progress_bar(name, resp::measurements(settings));
            let report = resp::run(settings, servers.workers, &bar);
            match &report.skipped {
                Some(_) => bar.finish_with_message("skipped"),
                None => bar.finish_with_message("done"),
            }
            scenarios.resp = Some(report);
        }
    }
}

/// A bar that redraws only when a measurement ends: no ticker thread competes with the
/// threads being measured. Hidden when stderr is not a terminal.
fn progress_bar(name: &str, measurements: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>6} [{bar:32}] {pos:>3}/{len:3} {elapsed:>4} {wide_msg}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    let bar = ProgressBar::new(measurements)
        .with_style(style)
        .with_prefix(name.to_owned());
    if bar.is_hidden() {
        // No terminal (CI): one line per scenario says what the silence is.
        eprintln!("iocp-bench: {name}: {measurements} measurements");
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_counts_are_sorted_without_repeats_and_bounded() {
        let parse = |args: &[&str]| Cli::try_parse_from(["iocp-bench", "echo"].iter().chain(args));
        let counts = |args: &[&str]| Settings::new(&parse(args).unwrap()).echo_connections;
        assert_eq!(counts(&[]), None);
        assert_eq!(counts(&["--connections", "256,1,256"]), Some(vec![1, 256]));
        assert_eq!(
            counts(&["--connections", "64", "--connections", "1024"]),
            Some(vec![64, 1024])
        );
        for bad in ["0", "1025", "x", "1,,2", ""] {
            assert!(parse(&["--connections", bad]).is_err(), "{bad:?} accepted");
        }
    }
}
