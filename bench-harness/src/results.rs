//! What a run measured, as `results.json` records it: the scenarios' reports, the settings
//! and the machine that makes figures from different runs comparable (or shows that they
//! are not).

use crate::scenario::{drain, echo, file, resp, wake};
use crate::stalls::Stalls;
use crate::{sys, Settings};
use serde::Serialize;
use std::fs;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Everything `results.json` holds.
#[derive(Debug, Serialize)]
pub struct Results {
    /// `iocp-bench` and its version.
    pub harness: String,
    /// The command line, as the process received it.
    pub command: Vec<String>,
    /// The scenario subcommand (`all` when none was given).
    pub scenario: &'static str,
    /// When the run ended, UTC, ISO 8601.
    pub finished_at: String,
    /// Wall time of the whole run, in seconds.
    pub wall_time_s: f64,
    /// The machine the figures come from.
    pub machine: Machine,
    /// How the run was configured.
    pub settings: SettingsRecord,
    /// The scenarios that ran.
    pub scenarios: Scenarios,
}

/// The scenarios' reports; a scenario that did not run is absent.
#[derive(Debug, Default, Serialize)]
pub struct Scenarios {
    /// `drain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<drain::Report>,
    /// `wake`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake: Option<wake::Report>,
    /// `echo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<echo::Report>,
    /// `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<file::Report>,
    /// `resp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp: Option<resp::Report>,
}

/// The settings, as recorded.
#[derive(Debug, Serialize)]
pub struct SettingsRecord {
    /// `--quick`.
    pub quick: bool,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// `--pin`, and the cores it could use.
    pub pin_cores: Vec<usize>,
}

/// The machine a run measured.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// The CPU.
    #[serde(flatten)]
    pub cpu: Cpu,
    /// CPUs this process may run on.
    pub cores: usize,
    /// `uname -srvm`.
    pub kernel: Option<String>,
    /// `rustc -V`, if a rustc is on the PATH.
    pub rustc: Option<String>,
    /// `git rev-parse HEAD` in the current directory, if it is a checkout.
    pub git_commit: Option<String>,
    /// Whether that checkout had uncommitted changes.
    pub git_dirty: Option<bool>,
    /// How often it held up a thread that had a core to itself, measured before the
    /// scenarios and after them ([`crate::stalls`]).
    pub stalls: Vec<Stalls>,
}

/// The CPU, from `/proc/cpuinfo` (its first processor's lines).
#[derive(Debug, Serialize)]
pub struct Cpu {
    /// Model name.
    pub cpu_model: Option<String>,
    /// Family, model number and stepping: a virtual machine's model name may name only the
    /// line ("AMD EPYC", "Intel(R) Xeon(R) Processor"), and these tell its generations
    /// apart.
    pub cpu_family: Option<u32>,
    /// See [`cpu_family`](Self::cpu_family).
    pub cpu_model_number: Option<u32>,
    /// See [`cpu_family`](Self::cpu_family).
    pub cpu_stepping: Option<u32>,
}

impl Cpu {
    /// The CPU that `/proc/cpuinfo` text describes; a field it lacks, or a number that is
    /// not one, is left unknown rather than guessed.
    fn parse(cpuinfo: &str) -> Cpu {
        // The first `name : value` line whose name is `name` exactly (`model` must not
        // find `model name`).
        let field = |name: &str| {
            cpuinfo.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim())
            })
        };
        let number = |name| field(name).and_then(|value| value.parse().ok());
        Cpu {
            cpu_model: field("model name").map(str::to_owned),
            cpu_family: number("cpu family"),
            cpu_model_number: number("model"),
            cpu_stepping: number("stepping"),
        }
    }

    /// Its name as the table and the plots give it: the model name, then family, model
    /// number and stepping where known.
    pub fn name(&self) -> String {
        let name = self.cpu_model.as_deref().unwrap_or("unknown CPU");
        let numbers: Vec<String> = [
            ("family", self.cpu_family),
            ("model", self.cpu_model_number),
            ("stepping", self.cpu_stepping),
        ]
        .iter()
        .filter_map(|(what, number)| number.map(|n| format!("{what} {n}")))
        .collect();
        match numbers.is_empty() {
            true => name.to_owned(),
            false => format!("{name} ({})", numbers.join(" ")),
        }
    }
}

impl Machine {
    fn detect(stalls: Vec<Stalls>) -> Machine {
        Machine {
            cpu: Cpu::parse(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default()),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: sys::uname(),
            rustc: output("rustc", &["-V"]),
            git_commit: output("git", &["rev-parse", "HEAD"]),
            git_dirty: output("git", &["status", "--porcelain"]).map(|s| !s.is_empty()),
            stalls,
        }
    }

    /// The commit measured, its first 12 digits, and whether the checkout had changes.
    pub fn commit(&self) -> String {
        let commit = self
            .git_commit
            .as_deref()
            .map_or("unknown", |c| &c[..c.len().min(12)]);
        match self.git_dirty {
            Some(true) => format!("{commit} (dirty)"),
            _ => commit.to_owned(),
        }
    }

    /// The machine and the build in one line, for the plots: CPU, cores, commit.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} cores; commit {}",
            self.cpu.name(),
            self.cores,
            self.commit()
        )
    }
}

/// A command's trimmed standard output, if it ran and succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Results {
    /// Gathers the run's record.
    pub fn new(
        scenario: &'static str,
        settings: &Settings,
        stalls: Vec<Stalls>,
        scenarios: Scenarios,
        wall_time: Duration,
    ) -> Results {
        Results {
            harness: format!("iocp-bench {}", env!("CARGO_PKG_VERSION")),
            command: std::env::args().collect(),
            scenario,
            finished_at: utc(SystemTime::now(), ':'),
            wall_time_s: wall_time.as_secs_f64(),
            machine: Machine::detect(stalls),
            settings: SettingsRecord {
                quick: settings.quick,
                duration_s: settings.duration.as_secs_f64(),
                pin_cores: settings.cores.iter().map(|core| core.id).collect(),
            },
            scenarios,
        }
    }
}

/// `2026-05-21T13:45:02Z` (with `time_separator` between the clock fields: `-` keeps the
/// string usable as a file name everywhere).
pub fn utc(time: SystemTime, time_separator: char) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to a proleptic Gregorian date.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let s = time_separator;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}{s}{:02}{s}{:02}Z",
        secs_of_day / 3_600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_named_by_model_name_family_model_and_stepping() {
        // The first processor's lines, as two of the virtual machines' kernels print them
        // (here with `model name` first: `model` must not find it).
        let epyc = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\
                    model name\t: AMD EPYC\nmodel\t\t: 17\nstepping\t: 1\n\n\
                    processor\t: 1\ncpu family\t: 26\nmodel\t\t: 18\n";
        assert_eq!(
            Cpu::parse(epyc).name(),
            "AMD EPYC (family 25 model 17 stepping 1)"
        );
        let xeon = "processor\t: 0\ncpu family\t: 6\nmodel\t\t: 167\n\
                    model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 1\n";
        let machine = Machine {
            cpu: Cpu::parse(xeon),
            cores: 2,
            kernel: None,
            rustc: None,
            git_commit: Some("68abbcbe3de4a1b2".into()),
            git_dirty: Some(true),
            stalls: Vec::new(),
        };
        assert_eq!(
            machine.summary(),
            "Intel(R) Xeon(R) Processor (family 6 model 167 stepping 1), 2 cores; \
             commit 68abbcbe3de4 (dirty)"
        );
        // Some architectures print no family: what there is, and no empty parentheses.
        assert_eq!(Cpu::parse("model name\t: Some CPU\n").name(), "Some CPU");
        // A number that is not one is left out rather than guessed.
        assert_eq!(
            Cpu::parse("cpu family\t: 6\nmodel\t\t: unknown\n").name(),
            "unknown CPU (family 6)"
        );
        assert_eq!(Cpu::parse("").name(), "unknown CPU");
    }

    #[test]
    fn utc_formats_known_instants() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(utc(at(0), ':'), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day) 12:34:56.
        assert_eq!(utc(at(951_827_696), ':'), "2000-02-29T12:34:56Z");
        assert_eq!(utc(at(1_767_225_599), '-'), "2025-12-31T23-59-59Z");
    }
}
