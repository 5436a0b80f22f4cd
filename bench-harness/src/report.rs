//! What a run leaves behind: the terminal table, `results.json` and the plots, in the
//! results directory.

use crate::plot;
use crate::results::{utc, Results};
use crate::scenario::spread::{Spread, Standing};
use crate::scenario::{drain, echo, file, resp, wake, Target};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The results directory: `out` if given, else `results/<UTC timestamp>/` here. Created.
pub fn results_dir(out: Option<&Path>) -> io::Result<PathBuf> {
    let dir = match out {
        Some(out) => out.to_owned(),
        None => {
            let base = Path::new("results").join(utc(SystemTime::now(), '-'));
            // Two runs in one second get distinct directories.
            (1..)
                .map(|n| match n {
                    1 => base.clone(),
                    n => PathBuf::from(format!("{}-{n}", base.display())),
                })
                .find(|dir| !dir.exists())
                .expect("some suffix is free")
        }
    };
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes `results.json`, `table.txt` and the plots into `dir`; returns the file names.
pub fn write(dir: &Path, results: &Results, table: &str) -> io::Result<Vec<String>> {
    let mut files = Vec::new();
    let json = serde_json::to_string_pretty(results).map_err(io::Error::other)?;
    fs::write(dir.join("results.json"), json + "\n")?;
    files.push("results.json".to_owned());
    fs::write(dir.join("table.txt"), table)?;
    files.push("table.txt".to_owned());
    files.extend(plot::all(
        dir,
        &results.scenarios,
        &results.machine.summary(),
    )?);
    Ok(files)
}

/// The terminal table: the machine, then one section per scenario that ran.
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    let machine = &results.machine;
    let _ = writeln!(
        out,
        "\niocp-bench on {}, {} cores, {}",
        machine.cpu.name(),
        machine.cores,
        machine.kernel.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        out,
        "{}, commit {}; {:.2} s per measurement{}; wall time {:.1} s",
        machine.rustc.as_deref().unwrap_or("rustc unknown"),
        machine.commit(),
        results.settings.duration_s,
        if results.settings.quick {
            " (--quick: indicative only)"
        } else {
            ""
        },
        results.wall_time_s
    );
    for probe in &machine.stalls {
        let _ = writeln!(out, "{}", probe.summary());
    }
    if let Some(drain) = &results.scenarios.drain {
        drain_table(&mut out, drain);
    }
    if let Some(wake) = &results.scenarios.wake {
        wake_table(&mut out, wake);
    }
    if let Some(echo) = &results.scenarios.echo {
        echo_table(&mut out, echo);
    }
    if let Some(file) = &results.scenarios.file {
        file_table(&mut out, file);
    }
    if let Some(resp) = &results.scenarios.resp {
        resp_table(&mut out, resp);
    }
    out
}

/// The `drain` section: a block of rows per variant, then its targets.
fn drain_table(out: &mut String, report: &drain::Report) {
    let _ = writeln!(
        out,
        "\ndrain: post -> dequeue, records/s (median of {} runs of {:.2} s); ratio to the best peer",
        report.rounds, report.duration_s
    );
    let _ = writeln!(
        out,
        "{:<26} {:<3} {:<22} {:>12} {:>9}",
        "variant", "pin", "implementation", "records/s", "x best"
    );
    for group in &report.groups {
        let mut label = group.label.clone();
        let mut pin = if group.pinned { "yes" } else { "no" };
        for row in &group.rows {
            let best = if group.best_peer == Some(row.subject) {
                " <- best peer"
            } else {
                ""
            };
            match &row.outcome {
                drain::Outcome::Measured {
                    records_per_sec,
                    ratio_to_best_peer,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "{label:<26} {pin:<3} {:<22} {:>12} {:>9}{best}",
                        row.name,
                        si(*records_per_sec),
                        ratio(*ratio_to_best_peer),
                    );
                }
                drain::Outcome::Skipped { reason } => {
                    let _ = writeln!(
                        out,
                        "{label:<26} {pin:<3} {:<22} skipped: {reason}",
                        row.name
                    );
                }
            }
            label.clear();
            pin = "";
        }
        targets(out, 31, &group.targets);
    }
    if report
        .groups
        .iter()
        .any(|g| matches!(g.shape, drain::Shape::Producers { .. }))
    {
        let _ = writeln!(
            out,
            "(io_uring has one submitter per ring, so the producer rows have no io_uring peer)"
        );
    }
}

/// One line per target, indented by `indent`: the ratio, the bound and the verdict.
fn targets(out: &mut String, indent: usize, targets: &[Target]) {
    for target in targets {
        let _ = writeln!(
            out,
            "{:indent$}target: {} = {} ({}: {})",
            "",
            target.what,
            ratio(target.ratio),
            target.bound,
            match target.met {
                Some(met) => verdict(met),
                None => "not measured",
            }
        );
    }
}

/// The `wake` section: a block of rows per kind of wake and pinning, their targets, the
/// idle waiter.
fn wake_table(out: &mut String, report: &wake::Report) {
    let _ = writeln!(
        out,
        "\nwake: latency in us ({} runs each; spinning: closed-loop ping-pong, {:.2} s per run, a round trip; \
         sleeping: posts {} ms apart, post to the waiter's return)",
        report.rounds,
        report.duration_s,
        wake::SLEEP_GAP.as_secs_f64() * 1e3,
    );
    let _ = writeln!(
        out,
        "{:<9} {:<3} {:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "kind",
        "pin",
        "implementation",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "per s",
        "p50/futex"
    );
    for group in &report.groups {
        let futex_p50 = group
            .rows
            .iter()
            .find(|row| row.subject == wake::Subject::Futex)
            .and_then(|row| row.outcome.latency())
            .map(|latency| latency.p50 as f64);
        let mut kind = match group.kind {
            wake::Kind::Spinning => "spinning",
            wake::Kind::Sleeping { .. } => "sleeping",
        };
        let mut pin = if group.pinned { "yes" } else { "no" };
        for row in &group.rows {
            match &row.outcome {
                wake::Outcome::Measured {
                    samples_per_sec,
                    latency_ns: l,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "{kind:<9} {pin:<3} {:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
                        row.name,
                        us(l.p50),
                        us(l.p90),
                        us(l.p99),
                        us(l.p99_9),
                        us(l.p99_99),
                        us(l.max),
                        si(*samples_per_sec),
                        ratio(futex_p50.map(|f| l.p50 as f64 / f)),
                    );
                }
                wake::Outcome::Skipped { reason } => {
                    let _ = writeln!(out, "{kind:<9} {pin:<3} {:<20} skipped: {reason}", row.name);
                }
            }
            kind = "";
            pin = "";
        }
        targets(out, 14, &group.targets);
    }
    match &report.idle {
        wake::Idle::Measured {
            wait_s,
            cpu_s,
            percent_of_core,
            target_percent,
            target_met,
            ..
        } => {
            let _ = writeln!(
                out,
                "idle waiter: get({wait_s} s) on an empty port used {:.1} us of CPU = {percent_of_core:.4}% of a core (target < {target_percent}%: {})",
                cpu_s * 1e6,
                verdict(*target_met)
            );
        }
        wake::Idle::Skipped { reason } => {
            let _ = writeln!(out, "idle waiter: skipped: {reason}");
        }
    }
}

/// The `echo` section: a block per connection count, a row per server (closed-loop
/// messages/s, p99, and the CPU the server and the generator used; open-loop p50, p99 and
/// p99.9 as the median round with the lowest and highest, and the server's CPU time per
/// message), then iocp's verdicts, the p99's called only outside the spread.
fn echo_table(out: &mut String, report: &echo::Report) {
    let _ = writeln!(
        out,
        "\necho: TCP echo on 127.0.0.1, {} B messages, {} worker{} per server, {} generator thread{}{}{}",
        report.message_bytes,
        report.workers,
        plural(report.workers),
        report.generator_threads,
        plural(report.generator_threads),
        if report.pinned { ", pinned" } else { "" },
        report
            .iocp_spin_limit_us
            .map_or(String::new(), |us| format!(", iocp spin limit {us:.0} us"))
    );
    let _ = writeln!(
        out,
        "closed loop: {} x {:.2} s merged, msg/s, round trip (us), CPU of server/generator (% of a core); open loop: {} rounds of {:.2} s at {:.0}% \
         of the weakest closed-loop rate, latency (us) from the intended send time, median round [lowest - highest], server CPU per message (us)",
        report.closed_rounds,
        report.closed_duration_s,
        report.open_rounds,
        report.open_duration_s,
        report.open_rate_fraction * 100.0
    );
    let _ = writeln!(
        out,
        "{:<6} {:<22} {:>9} {:>7} {:>9} {:>7} | {:>8} {:>22} {:>22} {:>7} {:>7} p99 vs best",
        "conns",
        "server",
        "msg/s",
        "x best",
        "p99",
        "cpu",
        "open p50",
        "p99",
        "p99.9",
        "cpu/msg",
        "x best"
    );
    for group in &report.groups {
        let mut label = group.connections.to_string();
        for row in &group.rows {
            let closed = match &row.closed {
                echo::Outcome::Measured(c) => format!(
                    "{:>9} {:>7} {:>9} {:>7}",
                    si(c.messages_per_sec),
                    ratio(row.throughput_ratio),
                    us(c.latency_ns.p99),
                    cpu_pair(c.server_cores, c.generator_cores)
                ),
                echo::Outcome::Skipped { .. } => {
                    format!("{:>9} {:>7} {:>9} {:>7}", "-", "-", "-", "-")
                }
            };
            let open = match &row.open {
                echo::Outcome::Measured(o) => {
                    let late = if o.late > 0 {
                        format!(" ({} late)", o.late)
                    } else {
                        String::new()
                    };
                    format!(
                        "{:>8} {:>22} {:>22} {:>7} {:>7} {:<16}{late}",
                        us_short(o.p50_ns.median),
                        us_spread(&o.p99_ns),
                        us_spread(&o.p99_9_ns),
                        o.server_cpu_per_message_ns.map_or("-".into(), us_short),
                        ratio(row.p99_ratio),
                        row.p99_standing.map_or("", standing)
                    )
                }
                echo::Outcome::Skipped { .. } => String::new(),
            };
            let mut marks = Vec::new();
            if group.best_peer_throughput == Some(row.server) {
                marks.push("best msg/s");
            }
            if group.best_peer_p99 == Some(row.server) {
                marks.push("best p99");
            }
            let marks = if marks.is_empty() {
                String::new()
            } else {
                format!(" <- {}", marks.join(", "))
            };
            let line = format!("{label:<6} {:<22} {closed} | {open}{marks}", row.name);
            let _ = writeln!(out, "{}", line.trim_end());
            use echo::Outcome::Skipped;
            match (&row.closed, &row.open) {
                (Skipped { reason: closed }, Skipped { reason: open }) if closed == open => {
                    let _ = writeln!(out, "{:<6} {:<22} skipped: {closed}", "", "");
                }
                (closed, open) => {
                    let closed = match closed {
                        Skipped { reason } => Some(reason),
                        echo::Outcome::Measured(_) => None,
                    };
                    let open = match open {
                        Skipped { reason } => Some(reason),
                        echo::Outcome::Measured(_) => None,
                    };
                    for (mode, reason) in [("closed", closed), ("open", open)] {
                        if let Some(reason) = reason {
                            let _ =
                                writeln!(out, "{:<6} {:<22} {mode} loop skipped: {reason}", "", "");
                        }
                    }
                }
            }
            label.clear();
        }
        if let Some(rate) = group.open_rate {
            let _ = writeln!(out, "{:<6} open loop at {} msg/s", "", si(rate));
        }
        for row in group.rows.iter().filter(|row| row.server.is_iocp()) {
            let mut parts = Vec::new();
            let target = row.server.throughput_target();
            if let (Some(t), Some(target), Some(met)) =
                (row.throughput_ratio, target, row.throughput_met)
            {
                parts.push(format!(
                    "msg/s {t:.2}x the best peer's (target >= {target}x: {})",
                    verdict(met)
                ));
            }
            if let (Some(p), Some(standing)) = (row.p99_ratio, row.p99_standing) {
                let called = match standing {
                    Standing::Lower => verdict(true),
                    Standing::Higher => verdict(false),
                    Standing::WithinSpread => "within the spread, no verdict",
                };
                parts.push(format!(
                    "open p99 {p:.2}x the best peer's, median rounds (target <= 1x outside the spread: {called})"
                ));
            }
            if !parts.is_empty() {
                let _ = writeln!(out, "{:<6} {}: {}", "", row.name, parts.join("; "));
            }
        }
    }
    echo_scale_table(out, &report.scale);
}

/// The echo scale row: a row per server, the active connections' closed-loop msg/s, ratio
/// and p99, and the server's resident memory per idle connection.
fn echo_scale_table(out: &mut String, scale: &echo::scale::Scale) {
    let _ = writeln!(
        out,
        "scale: {} connections{}, {} active (closed loop), {} idle; msg/s and round trip (us) of the active ones; server RSS growth per idle connection",
        scale.connections,
        if scale.quick {
            format!(" (--quick; {} in a full run)", echo::scale::CONNECTIONS)
        } else {
            String::new()
        },
        scale.active,
        scale.connections - scale.active
    );
    if let Some(reason) = &scale.skipped {
        let _ = writeln!(out, "{:<6} skipped: {reason}", "");
        return;
    }
    let mut label = scale.connections.to_string();
    for row in &scale.rows {
        let best = if scale.best_peer_throughput == Some(row.server) {
            " <- best msg/s"
        } else {
            ""
        };
        match &row.outcome {
            echo::Outcome::Measured(loaded) => {
                let _ = writeln!(
                    out,
                    "{label:<6} {:<22} {:>9} {:>7} {:>9} | {:>8.0} B per idle connection{best}",
                    row.name,
                    si(loaded.messages_per_sec),
                    ratio(row.throughput_ratio),
                    us(loaded.latency_ns.p99),
                    loaded.idle_bytes_per_connection,
                );
            }
            echo::Outcome::Skipped { reason } => {
                let _ = writeln!(out, "{label:<6} {:<22} skipped: {reason}", row.name);
            }
        }
        label.clear();
    }
}

/// The `file` section: each part (cached, `O_DIRECT`) with a block per queue depth and its
/// target, then the io_uring driver's and fio's status.
fn file_table(out: &mut String, report: &file::Report) {
    for part in [&report.cached, &report.direct] {
        file_part_table(out, report, part);
    }
    if let Some(reason) = &report.io_uring_refused {
        let _ = writeln!(out, "iocp io_uring driver: skipped: {reason}");
    }
    match &report.fio {
        file::Fio::Found { version } => {
            let _ = writeln!(out, "fio: {version}");
        }
        file::Fio::Missing { reason, install } => {
            let _ = writeln!(out, "fio: skipped: {reason}; to install it, {install}");
        }
    }
}

/// One part of the `file` section: a row per implementation and queue depth, with each
/// iocp driver's IOPS over the row's.
fn file_part_table(out: &mut String, report: &file::Report, part: &file::Part) {
    let place = part
        .filesystem
        .as_ref()
        .map_or_else(String::new, |filesystem| format!(" in {filesystem}"));
    let what = match part.kind {
        file::Kind::Cached => format!("a page-cached {} MiB file{place}", part.file_bytes >> 20),
        file::Kind::Direct => format!(
            "a {} MiB file{place}, opened with O_DIRECT",
            part.file_bytes >> 20
        ),
    };
    let _ = writeln!(
        out,
        "\nfile, {}: {} KiB random reads of {what}, IOPS (median of {} runs of {:.2} s); thread driver: {} threads",
        match part.kind {
            file::Kind::Cached => "cached",
            file::Kind::Direct => "O_DIRECT",
        },
        report.block_bytes / 1024,
        report.rounds,
        report.duration_s,
        report.pool_threads
    );
    if let Some(reason) = &part.skipped {
        let _ = writeln!(out, "skipped: {reason}");
        return;
    }
    let _ = writeln!(
        out,
        "{:<4} {:<36} {:>4} {:>10} {:>16} {:>16}",
        "QD", "implementation", "QD", "IOPS", "threads / this", "io_uring / this"
    );
    for group in &part.groups {
        let mut label = group.queue_depth.to_string();
        for row in &group.rows {
            match &row.outcome {
                file::Outcome::Measured { iops, .. } => {
                    let [threads, uring] = file::IOCP.map(|iocp| {
                        ratio(
                            group
                                .ratios
                                .iter()
                                .find(|r| r.iocp == iocp && r.over == row.subject)
                                .and_then(|r| r.ratio),
                        )
                    });
                    let _ = writeln!(
                        out,
                        "{label:<4} {:<36} {:>4} {:>10} {threads:>16} {uring:>16}",
                        row.name,
                        row.queue_depth,
                        si(*iops)
                    );
                }
                file::Outcome::Skipped { reason } => {
                    let _ = writeln!(
                        out,
                        "{label:<4} {:<36} {:>4} skipped: {reason}",
                        row.name, row.queue_depth
                    );
                }
            }
            label.clear();
        }
        targets(out, 5, &group.targets);
    }
}

/// The `resp` section: a block per pipeline depth and test, a row per server (requests/s,
/// p50 and p99 as medians over the rounds, lowest to highest after each), then the targets.
fn resp_table(out: &mut String, report: &resp::Report) {
    let _ = writeln!(
        out,
        "\nresp: redis-benchmark, {} clients, random keys of {}, {}-byte values; resp_server (iocp, {} worker{}) and redis-server (--save '' --appendonly no){}",
        report.clients,
        report.keyspace,
        report.value_bytes,
        report.workers,
        plural(report.workers),
        if report.pinned { ", pinned" } else { "" }
    );
    if let Some(reason) = &report.skipped {
        let _ = writeln!(out, "skipped: {reason}");
        return;
    }
    let _ = writeln!(
        out,
        "median of {} rounds, servers alternating, [lowest - highest]; latency in ms; {}; {}",
        report.rounds,
        report
            .redis_benchmark
            .as_deref()
            .unwrap_or("redis-benchmark"),
        // `Redis server v=7.0.15 sha=... malloc=...`: the version is enough here.
        report
            .redis_server
            .as_deref()
            .and_then(|v| v.split_whitespace().find_map(|w| w.strip_prefix("v=")))
            .map_or("redis-server".to_owned(), |v| format!("redis-server {v}"))
    );
    let _ = writeln!(
        out,
        "{:<4} {:>2} {:<19} {:>24} {:>22} {:>22}",
        "test", "P", "server", "requests/s", "p50", "p99"
    );
    for group in &report.groups {
        let mut test = group.name;
        let mut pipeline = group.pipeline.to_string();
        for row in &group.rows {
            match &row.outcome {
                resp::Outcome::Measured {
                    rps,
                    p50_ms,
                    p99_ms,
                } => {
                    let _ = writeln!(
                        out,
                        "{test:<4} {pipeline:>2} {:<19} {:>24} {:>22} {:>22}",
                        row.name,
                        format!("{} [{} - {}]", si(rps.median), si(rps.min), si(rps.max)),
                        ms(p50_ms),
                        ms(p99_ms),
                    );
                }
                resp::Outcome::Skipped { reason } => {
                    let _ = writeln!(
                        out,
                        "{test:<4} {pipeline:>2} {:<19} skipped: {reason}",
                        row.name
                    );
                }
            }
            test = "";
            pipeline.clear();
        }
        targets(out, 8, &group.targets);
    }
}

/// Where iocp's p99 rounds stand against the best peer's, for the table.
fn standing(standing: Standing) -> &'static str {
    match standing {
        Standing::Lower => "lower",
        Standing::Higher => "higher",
        Standing::WithinSpread => "within the spread",
    }
}

/// Nanoseconds over the rounds as microseconds: `48.2 [12.3 - 9437]`.
fn us_spread(spread: &Spread) -> String {
    format!(
        "{} [{} - {}]",
        us_short(spread.median),
        us_short(spread.min),
        us_short(spread.max)
    )
}

/// Nanoseconds as microseconds to about three significant digits: `7.39`, `48.2`, `9437`.
fn us_short(ns: f64) -> String {
    match ns / 1e3 {
        us if us < 10.0 => format!("{us:.2}"),
        us if us < 100.0 => format!("{us:.1}"),
        us => format!("{us:.0}"),
    }
}

/// Milliseconds over the rounds: `0.207 [0.199 - 0.215]`.
fn ms(spread: &resp::Rounds) -> String {
    format!(
        "{:.3} [{:.3} - {:.3}]",
        spread.median, spread.min, spread.max
    )
}

/// Two CPU shares as percentages of a core: `99/95`.
fn cpu_pair(server: Option<f64>, generator: Option<f64>) -> String {
    let percent = |cores: Option<f64>| cores.map_or("-".into(), |c| format!("{:.0}", c * 100.0));
    format!("{}/{}", percent(server), percent(generator))
}

/// `1.23x`, or `-`.
fn ratio(value: Option<f64>) -> String {
    value.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// `s` after a count other than one.
fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// How a target fared, in capitals when missed so that it stands out.
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// `123.4M`-style figure with an SI prefix.
fn si(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Nanoseconds as microseconds.
fn us(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_prefixes() {
        assert_eq!(si(999.0), "999");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(123_456_789.0), "123.46M");
        assert_eq!(si(2.5e9), "2.50G");
    }
}
