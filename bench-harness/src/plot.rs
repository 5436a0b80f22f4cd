//! The SVG plots of a run:
//!
//! * `wake-latency.svg`: latency against percentile, a panel per kind of wake (spinning,
//!   sleeping) and pinning, one curve per implementation, percentiles spaced by their
//!   nines (90%, 99%, 99.9%, ...) so that the tail is as wide as the body;
//! * `drain-throughput.svg`: records/s per variant and implementation, as grouped bars on
//!   a log scale, a panel per family of shapes (same thread, producers, batched post,
//!   worker pool), pinned variants marked `*`;
//! * `echo-throughput.svg`: closed-loop messages/s per connection count and server, as
//!   grouped bars, the scale row's (many connections, few active) last;
//! * `echo-latency.svg`: open-loop p99 and p99.9 (from the intended send time) per
//!   connection count and server, a bar at the median round with a whisker from the lowest
//!   round to the highest;
//! * `file-iops.svg`: reads/s per queue depth and implementation, as grouped bars with a
//!   whisker from the lowest round to the highest, a panel per part (page-cached file,
//!   `O_DIRECT` reads from the disk);
//! * `resp.svg`: requests/s, p50 and p99 per test and pipeline depth, a panel each, a bar
//!   per server (the median over the rounds) with a whisker from the lowest to the highest.

use crate::latency;
use crate::results::Scenarios;
use crate::scenario::{drain, echo, file, resp, wake};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::io;
use std::path::Path;

/// Size of every plot, in SVG pixels.
const WIDTH: u32 = 1100;
const HEIGHT: u32 = 620;
/// x units per nine on the latency plot, per group on the throughput plot: plotters takes
/// custom tick positions only on integer axes.
const X_SCALE: i32 = 1000;
/// Matplotlib's "tab10" colors.
const TAB_BLUE: RGBColor = RGBColor(31, 119, 180);
const TAB_CYAN: RGBColor = RGBColor(23, 190, 207);
const TAB_PURPLE: RGBColor = RGBColor(148, 103, 189);
const TAB_ORANGE: RGBColor = RGBColor(255, 127, 14);
const TAB_GREEN: RGBColor = RGBColor(44, 160, 44);
const TAB_RED: RGBColor = RGBColor(214, 39, 40);
const TAB_BROWN: RGBColor = RGBColor(140, 86, 75);
const TAB_PINK: RGBColor = RGBColor(227, 119, 194);
const TAB_OLIVE: RGBColor = RGBColor(188, 189, 34);

/// iocp in Rust in blues and purple, through the C ABI in brown and pink, the peers in
/// warm colors and greens.
fn drain_color(subject: drain::Subject) -> RGBColor {
    match subject {
        drain::Subject::IocpGetMany | drain::Subject::IocpGet => TAB_BLUE,
        drain::Subject::IocpDrain | drain::Subject::IocpGetUpTo => TAB_CYAN,
        drain::Subject::IocpScalar => TAB_PURPLE,
        drain::Subject::CGetMultiple | drain::Subject::CPostMany | drain::Subject::CGet => {
            TAB_BROWN
        }
        drain::Subject::CGetEx => TAB_PINK,
        drain::Subject::ArrayQueue => TAB_ORANGE,
        drain::Subject::Mpsc => TAB_GREEN,
        drain::Subject::CrossbeamChannel => TAB_OLIVE,
        drain::Subject::IoUring => TAB_RED,
    }
}

/// iocp in the same blue and brown as in the drain plot, the peers in their own colors.
fn wake_color(subject: wake::Subject) -> RGBColor {
    match subject {
        wake::Subject::Iocp => TAB_BLUE,
        wake::Subject::IocpC => TAB_BROWN,
        wake::Subject::Futex => TAB_ORANGE,
        wake::Subject::MioWaker => TAB_GREEN,
    }
}

/// Draws the plots of every scenario that ran into `dir`; returns the file names.
/// Each names `machine` (the CPU and the build, [`Machine::summary`]) along its bottom.
///
/// [`Machine::summary`]: crate::results::Machine::summary
pub fn all(dir: &Path, scenarios: &Scenarios, machine: &str) -> io::Result<Vec<String>> {
    let mut files = Vec::new();
    if let Some(wake) = &scenarios.wake {
        files.extend(latency(dir, wake, machine)?);
    }
    if let Some(drain) = &scenarios.drain {
        files.extend(throughput(dir, drain, machine)?);
    }
    if let Some(echo) = &scenarios.echo {
        files.extend(echo_throughput(dir, echo, machine)?);
        files.extend(echo_latency(dir, echo, machine)?);
    }
    if let Some(file) = &scenarios.file {
        files.extend(file_iops(dir, file, machine)?);
    }
    if let Some(resp) = &scenarios.resp {
        files.extend(resp_plot(dir, resp, machine)?);
    }
    Ok(files)
}

/// iocp's drives in the blues of the other plots, the peers in their own colors.
fn echo_color(server: echo::Server) -> RGBColor {
    match server {
        echo::Server::IocpInline => TAB_BLUE,
        echo::Server::IocpThread => TAB_CYAN,
        echo::Server::IocpZeroByte => TAB_PURPLE,
        echo::Server::Mio => TAB_GREEN,
        echo::Server::Tokio => TAB_ORANGE,
        echo::Server::IoUring => TAB_RED,
    }
}

/// iocp in blue, Redis in its red.
fn resp_color(server: resp::Server) -> RGBColor {
    match server {
        resp::Server::RespServer => TAB_BLUE,
        resp::Server::Redis => TAB_RED,
    }
}

/// iocp's drivers in the blues of the other plots, the peers in their own colors.
fn file_color(subject: file::Subject) -> RGBColor {
    match subject {
        file::Subject::IocpThreads => TAB_BLUE,
        file::Subject::IocpUring => TAB_CYAN,
        file::Subject::Pread => TAB_ORANGE,
        file::Subject::FioPsync => TAB_GREEN,
        file::Subject::FioIoUring => TAB_RED,
    }
}

/// One implementation's bars, a value (or none) per group.
struct Series {
    name: &'static str,
    color: RGBColor,
    values: Vec<Option<f64>>,
    /// Each value's lowest and highest round, drawn as a whisker (none: no whiskers).
    ranges: Vec<Option<(f64, f64)>>,
}

/// `echo-throughput.svg`, unless nothing was measured.
fn echo_throughput(dir: &Path, report: &echo::Report, machine: &str) -> io::Result<Option<String>> {
    let Some(first) = report.groups.first() else {
        return Ok(None);
    };
    let series: Vec<Series> = first
        .rows
        .iter()
        .map(|row| Series {
            name: row.name,
            color: echo_color(row.server),
            values: report
                .groups
                .iter()
                .map(|group| {
                    let row = group.rows.iter().find(|r| r.server == row.server)?;
                    row.closed.measured().map(|c| c.messages_per_sec)
                })
                .chain([report
                    .scale
                    .rows
                    .iter()
                    .find(|r| r.server == row.server)
                    .and_then(|r| r.outcome.measured())
                    .map(|loaded| loaded.messages_per_sec)])
                .collect(),
            ranges: Vec::new(),
        })
        .collect();
    let labels: Vec<String> = report
        .groups
        .iter()
        .map(|group| {
            format!(
                "{} connection{}",
                group.connections,
                plural(group.connections)
            )
        })
        .chain([format!(
            "{} connections, {} active",
            report.scale.connections, report.scale.active
        )])
        .collect();
    grouped_bars(
        dir,
        "echo-throughput.svg",
        machine,
        "echo: closed-loop throughput, 64-byte messages on loopback",
        "messages/s",
        &labels,
        &series,
    )
}

/// `file-iops.svg`, unless nothing was measured: a panel per part that ran.
fn file_iops(dir: &Path, report: &file::Report, machine: &str) -> io::Result<Option<String>> {
    let parts: Vec<&file::Part> = [&report.cached, &report.direct]
        .into_iter()
        .filter(|part| {
            part.groups
                .iter()
                .flat_map(|group| &group.rows)
                .any(|row| row.outcome.iops().is_some())
        })
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    let name = "file-iops.svg";
    let path = dir.join(name);
    let root = canvas(&path, (WIDTH, HEIGHT * parts.len() as u32), machine)?;
    let root = root
        .titled(
            "file: 4 KiB random reads (median reads/s, lowest to highest round)",
            ("sans-serif", 22),
        )
        .map_err(plot_error)?;
    for (area, part) in root.split_evenly((parts.len(), 1)).iter().zip(parts) {
        let series: Vec<Series> = file::SUBJECTS
            .iter()
            .map(|&subject| {
                let rows: Vec<Option<&file::Row>> = part
                    .groups
                    .iter()
                    .map(|group| group.rows.iter().find(|row| row.subject == subject))
                    .collect();
                Series {
                    name: subject.name(),
                    color: file_color(subject),
                    values: rows.iter().map(|&row| row?.outcome.iops()).collect(),
                    ranges: rows.iter().map(|&row| row?.outcome.range()).collect(),
                }
            })
            .collect();
        let labels: Vec<String> = part
            .groups
            .iter()
            .map(|group| format!("queue depth {}", group.queue_depth))
            .collect();
        let place = part
            .filesystem
            .as_ref()
            .map_or_else(String::new, |filesystem| format!(" in {filesystem}"));
        let title = match part.kind {
            file::Kind::Cached => format!("page-cached {} MiB file", part.file_bytes >> 20),
            file::Kind::Direct => {
                format!("O_DIRECT, {} MiB file{place}", part.file_bytes >> 20)
            }
        };
        bar_panel(area, (&title, 16), "reads/s", &labels, &series)?;
    }
    root.present().map_err(plot_error)?;
    Ok(Some(name.to_owned()))
}

/// Grouped bars on a linear axis from zero: a group per label, a bar per series. `None`
/// when no series has a value.
fn grouped_bars(
    dir: &Path,
    name: &str,
    machine: &str,
    caption: &str,
    y_desc: &str,
    labels: &[String],
    series: &[Series],
) -> io::Result<Option<String>> {
    if series.iter().all(|s| s.values.iter().all(Option::is_none)) {
        return Ok(None);
    }
    let path = dir.join(name);
    let root = canvas(&path, (WIDTH, HEIGHT), machine)?;
    bar_panel(&root, (caption, 22), y_desc, labels, series)?;
    root.present().map_err(plot_error)?;
    Ok(Some(name.to_owned()))
}

/// One panel of grouped bars on a linear axis from zero, each bar with a whisker from its
/// series' lowest to highest value where the series has a range. Empty when no series has
/// a value.
fn bar_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    (caption, caption_size): (&str, u32),
    y_desc: &str,
    labels: &[String],
    series: &[Series],
) -> io::Result<()> {
    let tops = series.iter().flat_map(|s| {
        s.values
            .iter()
            .zip(s.ranges.iter().map(Some).chain(std::iter::repeat(None)))
            .filter_map(|(value, range)| match range {
                Some(Some((_, high))) => Some(*high),
                _ => *value,
            })
    });
    let Some(high) = tops.reduce(f64::max) else {
        return Ok(());
    };
    // Each group is X_SCALE wide: 10% margin on each side, bars sharing the rest.
    let width = X_SCALE * 8 / 10 / series.len().max(1) as i32;
    let groups_end = labels.len() as i32 * X_SCALE;
    let centers: Vec<i32> = (0..groups_end)
        .step_by(X_SCALE as usize)
        .map(|x| x + X_SCALE / 2)
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", caption_size))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(70)
        // A third of headroom keeps the tallest bars clear of the legend.
        .build_cartesian_2d((0..groups_end).with_key_points(centers), 0.0..high * 1.35)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .x_label_formatter(&|&x| {
            labels
                .get((x / X_SCALE) as usize)
                .cloned()
                .unwrap_or_default()
        })
        .y_label_formatter(&|&y| si(y))
        .draw()
        .map_err(plot_error)?;
    for (j, series) in series.iter().enumerate() {
        let color = series.color;
        let left = |g: usize| g as i32 * X_SCALE + X_SCALE / 10 + j as i32 * width;
        let bars = series.values.iter().enumerate().filter_map(|(g, value)| {
            let x = left(g);
            Some(Rectangle::new(
                [(x, 0.0), (x + width * 9 / 10, (*value)?)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(series.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        let whiskers = series.ranges.iter().enumerate().filter_map(|(g, range)| {
            let (low, high) = (*range)?;
            let x = left(g) + width * 9 / 20;
            Some(PathElement::new(
                [(x, low), (x, high)],
                BLACK.stroke_width(2),
            ))
        });
        chart.draw_series(whiskers).map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// `resp.svg`, unless nothing was measured: requests/s, p50 and p99 per test and pipeline
/// depth, a bar per server at its median over the rounds, a whisker from the lowest round
/// to the highest.
fn resp_plot(dir: &Path, report: &resp::Report, machine: &str) -> io::Result<Option<String>> {
    if report.groups.is_empty() {
        return Ok(None);
    }
    let labels: Vec<String> = report
        .groups
        .iter()
        .map(|group| format!("{} P{}", group.name, group.pipeline))
        .collect();
    let figures = [
        ("requests/s", "requests/s" as &str, 0),
        ("p50 latency", "ms", 1),
        ("p99 latency", "ms", 2),
    ];
    let name = "resp.svg";
    let path = dir.join(name);
    let root = canvas(&path, (WIDTH * 3 / 2, HEIGHT), machine)?;
    let root = root
        .titled(
            "resp: redis-benchmark, 50 clients, against resp_server (iocp) and redis-server \
             (median of the rounds, lowest to highest)",
            ("sans-serif", 20),
        )
        .map_err(plot_error)?;
    for (area, (title, unit, figure)) in root.split_evenly((1, figures.len())).iter().zip(figures) {
        let series: Vec<Series> = resp::SERVERS
            .iter()
            .map(|&server| {
                let spreads: Vec<Option<&resp::Rounds>> = report
                    .groups
                    .iter()
                    .map(|group| {
                        let row = group.rows.iter().find(|row| row.server == server)?;
                        match &row.outcome {
                            resp::Outcome::Measured {
                                rps,
                                p50_ms,
                                p99_ms,
                            } => Some([rps, p50_ms, p99_ms][figure]),
                            resp::Outcome::Skipped { .. } => None,
                        }
                    })
                    .collect();
                Series {
                    name: server.name(),
                    color: resp_color(server),
                    values: spreads.iter().map(|s| s.map(|s| s.median)).collect(),
                    ranges: spreads.iter().map(|s| s.map(|s| (s.min, s.max))).collect(),
                }
            })
            .collect();
        bar_panel(area, (title, 16), unit, &labels, &series)?;
    }
    root.present().map_err(plot_error)?;
    Ok(Some(name.to_owned()))
}

/// `echo-latency.svg`, unless no open loop was measured: a panel per connection count,
/// the open loop's p99 and p99.9 per server, a bar at the median round with a whisker from
/// the lowest round to the highest.
fn echo_latency(dir: &Path, report: &echo::Report, machine: &str) -> io::Result<Option<String>> {
    let groups: Vec<&echo::Group> = report
        .groups
        .iter()
        .filter(|group| group.rows.iter().any(|row| row.open.measured().is_some()))
        .collect();
    if groups.is_empty() {
        return Ok(None);
    }
    let name = "echo-latency.svg";
    let path = dir.join(name);
    let root = canvas(&path, (WIDTH * 3 / 2, HEIGHT), machine)?;
    let root = root
        .titled(
            &format!(
                "echo: open-loop latency from the intended send time (median of {} rounds, lowest to highest)",
                report.open_rounds
            ),
            ("sans-serif", 20),
        )
        .map_err(plot_error)?;
    let labels = ["p99".to_owned(), "p99.9".to_owned()];
    for (area, group) in root.split_evenly((1, groups.len())).iter().zip(groups) {
        let series: Vec<Series> = group
            .rows
            .iter()
            .map(|row| {
                let spreads = match row.open.measured() {
                    Some(open) => [Some(open.p99_ns), Some(open.p99_9_ns)],
                    None => [None, None],
                };
                Series {
                    name: row.name,
                    color: echo_color(row.server),
                    values: spreads.iter().map(|s| s.map(|s| s.median / 1e3)).collect(),
                    ranges: spreads
                        .iter()
                        .map(|s| s.map(|s| (s.min / 1e3, s.max / 1e3)))
                        .collect(),
                }
            })
            .collect();
        let title = format!(
            "{} connection{}, {} msg/s",
            group.connections,
            plural(group.connections),
            group.open_rate.map_or("-".into(), si_rounded)
        );
        bar_panel(area, (&title, 16), "latency (µs)", &labels, &series)?;
    }
    root.present().map_err(plot_error)?;
    Ok(Some(name.to_owned()))
}

/// A percentile curve as plot points: (nines x [`X_SCALE`], µs), the 100th percentile left
/// out (it has no finite position on the axis).
fn curve_points(curve: &[latency::CurvePoint]) -> Vec<(i32, f64)> {
    curve
        .iter()
        .filter(|point| point.percentile < 100.0)
        .map(|point| {
            let x = (nines(point.percentile) * f64::from(X_SCALE)).round() as i32;
            (x, point.ns as f64 / 1e3)
        })
        .collect()
}

/// One latency-against-percentile panel, the percentile axis spaced by nines.
fn percentile_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    curves: Vec<Curve>,
) -> io::Result<()> {
    let all_points = || curves.iter().flat_map(|curve| curve.points.iter());
    let Some(max_x) = all_points().map(|&(x, _)| x).max() else {
        return Ok(());
    };
    let (low, high) = all_points().fold((f64::MAX, f64::MIN), |(low, high), &(_, y)| {
        (low.min(y), high.max(y))
    });
    let max_nines = ((max_x + X_SCALE - 1) / X_SCALE).max(1);
    let ticks: Vec<i32> = (0..=max_nines).map(|n| n * X_SCALE).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(
            (0..max_nines * X_SCALE).with_key_points(ticks),
            (low / 1.5..high * 1.5).log_scale(),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .x_label_formatter(&|&x| percentile_label(f64::from(x) / f64::from(X_SCALE)))
        .y_label_formatter(&|&y| log_label(y, |y| format!("{y}")))
        .draw()
        .map_err(plot_error)?;
    for Curve {
        name,
        color,
        points,
    } in curves
    {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// `12.3k`: a rate rounded for a caption.
fn si_rounded(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// `s` after a count other than one.
fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Height of the strip along the bottom of every plot that names the machine.
const FOOTER: u32 = 28;

/// A white SVG drawing at `path` of `size` and a strip below it that names `machine`;
/// returns the area above the strip, where the plot goes.
fn canvas<'a>(
    path: &'a Path,
    (width, height): (u32, u32),
    machine: &str,
) -> io::Result<DrawingArea<SVGBackend<'a>, Shift>> {
    let root = SVGBackend::new(path, (width, height + FOOTER)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (plot, footer) = root.split_vertically(height);
    let style = ("sans-serif", 16).into_font().color(&BLACK.mix(0.7));
    footer
        .draw_text(machine, &style, (16, 4))
        .map_err(plot_error)?;
    Ok(plot)
}

/// Plotters' errors, as the `io::Error` the results writer reports.
fn plot_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("plot: {e}"))
}

/// One implementation's line on the latency plot.
struct Curve {
    name: &'static str,
    color: RGBColor,
    /// (percentile in nines x [`X_SCALE`], latency in µs)
    points: Vec<(i32, f64)>,
}

/// `wake-latency.svg`, unless nothing was measured: a panel per group.
fn latency(dir: &Path, report: &wake::Report, machine: &str) -> io::Result<Option<String>> {
    let panels: Vec<(String, Vec<Curve>)> = report
        .groups
        .iter()
        .map(|group| {
            let curves = group
                .rows
                .iter()
                .filter_map(|row| match &row.outcome {
                    wake::Outcome::Measured { curve, .. } => Some(Curve {
                        name: row.name,
                        color: wake_color(row.subject),
                        points: curve_points(curve),
                    }),
                    wake::Outcome::Skipped { .. } => None,
                })
                .collect();
            let title = match group.kind {
                wake::Kind::Spinning => "spinning wake: closed-loop ping-pong round trip",
                wake::Kind::Sleeping { .. } => "sleeping wake: post to return, posts 2 ms apart",
            };
            let pinned = if group.pinned { "pinned" } else { "unpinned" };
            (format!("{title} ({pinned})"), curves)
        })
        .collect();
    if panels
        .iter()
        .flat_map(|(_, curves)| curves)
        .all(|curve| curve.points.is_empty())
    {
        return Ok(None);
    }
    let name = "wake-latency.svg";
    let path = dir.join(name);
    let rows = panels.len().div_ceil(2);
    let root = canvas(&path, (WIDTH * 2, HEIGHT * rows as u32), machine)?;
    for ((title, curves), area) in panels.into_iter().zip(root.split_evenly((rows, 2))) {
        percentile_panel(&area, &title, curves)?;
    }
    root.present().map_err(plot_error)?;
    Ok(Some(name.to_owned()))
}

/// Labels the 1-2-5 steps of a log axis and leaves the other ticks bare.
fn log_label(value: f64, format: impl Fn(f64) -> String) -> String {
    let mantissa = value / 10f64.powf(value.log10().floor());
    if [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6) {
        format(value)
    } else {
        String::new()
    }
}

/// `20M`: records per second with an SI prefix.
fn si(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{}G", v / 1e9),
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

/// The nines of a percentile: 0 for 0%, 1 for 90%, 2 for 99%, 3 for 99.9% ...
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

/// The percentile `nines` stands for, written as briefly as it reads: `99.9%`.
fn percentile_label(nines: f64) -> String {
    let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = (nines.ceil() as usize).saturating_sub(2);
    format!("{percentile:.decimals$}%")
}

/// `drain-throughput.svg`, unless nothing was measured.
fn throughput(dir: &Path, report: &drain::Report, machine: &str) -> io::Result<Option<String>> {
    let rates = || {
        report
            .groups
            .iter()
            .flat_map(|group| group.rows.iter())
            .filter_map(|row| row.outcome.records_per_sec())
    };
    let Some(high) = rates().reduce(f64::max) else {
        return Ok(None);
    };
    let low = rates().reduce(f64::min).unwrap_or(high);
    // A decade of headroom keeps the tallest bars clear of the legend.
    let y_range = (low / 3.0, high * 10.0);

    let name = "drain-throughput.svg";
    let path = dir.join(name);
    let root = canvas(&path, (WIDTH * 2, HEIGHT * 2), machine)?;
    let root = root
        .titled(
            "drain: post -> dequeue throughput (median records/s; * pinned)",
            ("sans-serif", 22),
        )
        .map_err(plot_error)?;
    let family = |pick: fn(drain::Shape) -> bool| -> Vec<&drain::Group> {
        report.groups.iter().filter(|g| pick(g.shape)).collect()
    };
    let panels = [
        (
            "1 thread: post a batch, take it back",
            family(|shape| matches!(shape, drain::Shape::SameThread { .. })),
        ),
        (
            "N producers, 1 consumer",
            family(|shape| matches!(shape, drain::Shape::Producers { .. })),
        ),
        (
            "batched post (iocp post_many; peers one at a time)",
            family(|shape| {
                matches!(
                    shape,
                    drain::Shape::SameThreadBatchedPost { .. } | drain::Shape::BatchedPost { .. }
                )
            }),
        ),
        (
            "worker pool: 1 producer, W workers",
            family(|shape| matches!(shape, drain::Shape::Pool { .. })),
        ),
    ];
    for ((title, groups), area) in panels.iter().zip(root.split_evenly((2, 2))) {
        bars(&area, title, groups, y_range)?;
    }
    root.present().map_err(plot_error)?;
    Ok(Some(name.to_owned()))
}

/// One panel of grouped bars: a group per variant, a bar per implementation.
fn bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    groups: &[&drain::Group],
    (low, high): (f64, f64),
) -> io::Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    // Every implementation of the panel's groups, in order of first appearance.
    let mut subjects: Vec<(drain::Subject, &str)> = Vec::new();
    for row in groups.iter().flat_map(|group| &group.rows) {
        if !subjects.iter().any(|&(subject, _)| subject == row.subject) {
            subjects.push((row.subject, row.name));
        }
    }
    // Each group is X_SCALE wide: 10% margin on each side, bars sharing the rest.
    let width = X_SCALE * 8 / 10 / subjects.len() as i32;
    let groups_end = groups.len() as i32 * X_SCALE;
    let centers: Vec<i32> = (0..groups_end)
        .step_by(X_SCALE as usize)
        .map(|x| x + X_SCALE / 2)
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..groups_end).with_key_points(centers),
            (low..high).log_scale(),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("records/s (log scale)")
        .x_label_formatter(&|&x| {
            groups
                .get((x / X_SCALE) as usize)
                .map_or_else(String::new, |group| short_label(group))
        })
        .y_label_formatter(&|&y| log_label(y, si))
        .draw()
        .map_err(plot_error)?;
    for (j, &(subject, name)) in subjects.iter().enumerate() {
        let color = drain_color(subject);
        let bars = groups.iter().enumerate().filter_map(|(g, group)| {
            let rate = group
                .rows
                .iter()
                .find(|row| row.subject == subject)?
                .outcome
                .records_per_sec()?;
            let x = g as i32 * X_SCALE + X_SCALE / 10 + j as i32 * width;
            Some(Rectangle::new(
                [(x, low), (x + width * 9 / 10, rate)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// A variant's label short enough to sit under its bars; `*` when pinned.
fn short_label(group: &drain::Group) -> String {
    let label = match group.shape {
        drain::Shape::SameThread { batch } => format!("batch {batch}"),
        drain::Shape::SameThreadBatchedPost { .. } => "1 thread".to_owned(),
        drain::Shape::Producers { producers } | drain::Shape::BatchedPost { producers, .. } => {
            format!("{producers} prod.")
        }
        drain::Shape::Pool { workers } => format!("{workers} workers"),
    };
    match group.pinned {
        true => label + " *",
        false => label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
    }
}
