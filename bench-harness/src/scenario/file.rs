//! `file`: 4 KiB random reads, in reads per second (IOPS): of a page-cached file, and of a
//! file on the local disk read with `O_DIRECT`.
//!
//! Two parts, one after the other, each with a file of its own, written at the part's start
//! and deleted at its end; each 4 KiB block starts with its block number, which every read
//! of ours checks.
//!
//! * **cached**: a [`CACHED_FILE_BYTES`] file (16 MiB with `--quick`) in the temporary
//!   directory (`$TMPDIR`, else `/tmp`), synced so that no writeback runs during the
//!   measurements and read once end to end so that every page is cached; queue depths 16
//!   and 64.
//! * **direct**: a [`DIRECT_FILE_BYTES`] file (64 MiB with `--quick`) in the first of the
//!   temporary directory, `./target` and `.` whose filesystem is not in memory (statfs:
//!   neither tmpfs nor ramfs), synced and dropped from the page cache, then read through a
//!   descriptor opened with `O_DIRECT` into 4096-aligned buffers: every read goes to the
//!   device. Queue depths 1 and 32.
//!
//! Implementations, in each group (one queue depth) of each part:
//!
//! * `iocp lio_listio+get_many (threads)` and `(io_uring)`: a [`FilePool`] on
//!   [`FileDriver::Threads`] (one thread per CPU) or [`FileDriver::Uring`] (skipped, with
//!   the reason, where the kernel refuses io_uring and the pool runs threads instead), and
//!   one [`Port`]; `QD` aiocbs go in with one `lio_listio(LIO_NOWAIT_GMCS)`; the consumer
//!   takes completions with batched `get_many` and resubmits every finished aiocb, with its
//!   next random offset, in one `lio_listio` per batch: `QD` reads stay in flight. Both
//!   pools keep the default `cached_reads_on_caller(true)`: `lio_listio` reads cached pages
//!   before it returns, under either driver, on the calling thread and an idle pool thread
//!   together (the thread driver's, or io_uring's ring thread); an `O_DIRECT` read never
//!   completes that way and always goes to the driver;
//! * `pread loop`: one thread calling `pread` (queue depth 1), on the same sequence of
//!   random offsets (the same generator with the same seed);
//! * `fio psync` and `fio io_uring`: fio 3 on the same file, `--rw=randread --bs=4k
//!   --direct=0` (cached) or `--direct=1` (direct) `--numjobs=1 --time_based
//!   --invalidate=0 --norandommap`, `--iodepth=QD` for io_uring, its `--runtime` the same
//!   as every other measurement's, IOPS read from its `--output-format=json`. When `fio` is
//!   not on the `PATH` these rows are skipped, with the way to install it
//!   (`bench-harness/scripts/install-peers.sh`).
//!
//! Each implementation runs [`Timing::rounds`] times (rounds interleaved within a part); the
//! median is reported, with each iocp driver's ratio to every other row. Targets (issue
//! 13): cached, the faster iocp driver ≥ [`TARGET_RATIO`] x the pread loop at queue depth 16
//! and 64; direct, iocp on io_uring ≥ [`DIRECT_TARGET_RATIO`] x fio io_uring at queue depth
//! [`DIRECT_TARGET_DEPTH`].

use super::spread::median;
use super::{Bound, Target};
use crate::{process, sys, Settings};
use indicatif::ProgressBar;
use iocp::{Aiocb, Completion, FileDriver, FilePool, LioMode, Opcode, Port};
use serde::Serialize;
use std::alloc::{self, Layout};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes per read, and the alignment of every read's buffer (`O_DIRECT` needs the device's
/// logical block, at most 4096 on the disks this runs on).
pub const BLOCK: usize = 4096;
/// Size of the page-cached file in a full run.
pub const CACHED_FILE_BYTES: u64 = 256 << 20;
/// Size of the page-cached file with `--quick`.
pub const QUICK_CACHED_FILE_BYTES: u64 = 16 << 20;
/// Size of the `O_DIRECT` file in a full run: large enough that its blocks are not all in
/// a device's (or a virtual disk's host's) cache.
pub const DIRECT_FILE_BYTES: u64 = 1 << 30;
/// Size of the `O_DIRECT` file with `--quick`.
pub const QUICK_DIRECT_FILE_BYTES: u64 = 64 << 20;
/// The cached part's target, the faster iocp driver's IOPS over the pread loop's at queue
/// depth 16 and 64. Issue 13: "cached 4 KiB random reads through lio_listio + GMCS ≥ 1.2×
/// the pread loop at QD 16 and 64 (the faster driver; both reported)".
pub const TARGET_RATIO: f64 = 1.2;
/// The direct part's target, iocp on io_uring over fio io_uring at [`DIRECT_TARGET_DEPTH`].
/// Issue 13: "O_DIRECT at QD 32 with the io_uring driver ≥ 0.9× fio io_uring".
pub const DIRECT_TARGET_RATIO: f64 = 0.9;
/// The queue depth the direct part's target is judged at.
pub const DIRECT_TARGET_DEPTH: usize = 32;
/// How to get fio where it is missing.
pub const FIO_INSTALL: &str =
    "run bench-harness/scripts/install-peers.sh (Debian/Ubuntu: apt-get install -y fio)";

/// Seed of the random offsets, the same for every implementation of ours.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Reads between two clock reads of the pread loop.
const READS_PER_CLOCK_READ: u64 = 64;
/// Upper bound on reads (or `get_many` calls) in one measurement.
const MAX_READS: u64 = 1 << 40;
/// The longest a `get_many` may wait for one completion before the run is declared stuck.
const STUCK: Duration = Duration::from_secs(2);
/// How long fio may take beyond its runtime before it is killed.
const FIO_SLACK: Duration = Duration::from_secs(30);

/// The two parts: what the reads find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A file the page cache holds whole.
    Cached,
    /// A file on a disk, read through an `O_DIRECT` descriptor: every read goes to the
    /// device.
    Direct,
}

impl Kind {
    /// The queue depths of the part's groups.
    pub fn queue_depths(self) -> [usize; 2] {
        match self {
            Kind::Cached => [16, 64],
            Kind::Direct => [1, DIRECT_TARGET_DEPTH],
        }
    }

    fn file_bytes(self, quick: bool) -> u64 {
        match (self, quick) {
            (Kind::Cached, false) => CACHED_FILE_BYTES,
            (Kind::Cached, true) => QUICK_CACHED_FILE_BYTES,
            (Kind::Direct, false) => DIRECT_FILE_BYTES,
            (Kind::Direct, true) => QUICK_DIRECT_FILE_BYTES,
        }
    }
}

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// iocp-rs `lio_listio(LIO_NOWAIT_GMCS)` + `get_many`, the thread driver.
    IocpThreads,
    /// The same on the io_uring driver.
    IocpUring,
    /// One thread calling `pread`.
    Pread,
    /// `fio --ioengine=psync`.
    FioPsync,
    /// `fio --ioengine=io_uring`.
    FioIoUring,
}

impl Subject {
    /// Name in the table and the plots.
    pub fn name(self) -> &'static str {
        match self {
            Subject::IocpThreads => "iocp lio_listio+get_many (threads)",
            Subject::IocpUring => "iocp lio_listio+get_many (io_uring)",
            Subject::Pread => "pread loop (1 thread)",
            Subject::FioPsync => "fio psync",
            Subject::FioIoUring => "fio io_uring",
        }
    }

    /// The queue depth it runs at in a group of depth `qd` (1 for the synchronous ones).
    fn depth(self, qd: usize) -> usize {
        match self {
            Subject::IocpThreads | Subject::IocpUring | Subject::FioIoUring => qd,
            Subject::Pread | Subject::FioPsync => 1,
        }
    }
}

/// The implementations of one group, in table order.
pub const SUBJECTS: [Subject; 5] = [
    Subject::IocpThreads,
    Subject::IocpUring,
    Subject::Pread,
    Subject::FioPsync,
    Subject::FioIoUring,
];

/// The iocp rows: one per driver.
pub const IOCP: [Subject; 2] = [Subject::IocpThreads, Subject::IocpUring];

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Bytes per read.
    pub block_bytes: usize,
    /// Length of one measurement (fio's `--runtime` too).
    pub duration_s: f64,
    /// Measurements per implementation; the median is reported.
    pub rounds: usize,
    /// Threads of iocp's thread driver.
    pub pool_threads: usize,
    /// Why the io_uring driver does not run here; `None` when it does.
    pub io_uring_refused: Option<String>,
    /// fio's version, or why it did not run.
    pub fio: Fio,
    /// Reads of the page-cached file.
    pub cached: Part,
    /// `O_DIRECT` reads of the file on the disk.
    pub direct: Part,
}

/// One part: its file, and a group per queue depth.
#[derive(Debug, Serialize)]
pub struct Part {
    /// What the reads find.
    pub kind: Kind,
    /// Size of the file read.
    pub file_bytes: u64,
    /// Where the file was written, and on what; `None` when no directory would do.
    pub filesystem: Option<Filesystem>,
    /// Time taken to write and sync the file, then read it once (cached) or drop it from
    /// the page cache (direct).
    pub setup_s: Option<f64>,
    /// Why nothing was measured (no directory would do, the file could not be written or
    /// opened); `None` when the groups ran.
    pub skipped: Option<String>,
    /// The bound of the part's target ([`TARGET_RATIO`], [`DIRECT_TARGET_RATIO`]).
    pub target_ratio: f64,
    /// One group per queue depth.
    pub groups: Vec<Group>,
}

/// A directory, and the filesystem it is on.
#[derive(Debug, Serialize)]
pub struct Filesystem {
    /// The directory, absolute.
    pub directory: String,
    /// The filesystem's type (`ext4`), from `/proc/self/mountinfo`.
    pub kind: Option<String>,
    /// What is mounted there (`/dev/vda`), from `/proc/self/mountinfo`.
    pub source: Option<String>,
    /// statfs's `f_type`, the filesystem's magic number.
    pub magic: Option<u64>,
}

impl Filesystem {
    /// `dir` and what it is on; only what can be read about it.
    fn of(dir: &Path) -> Filesystem {
        let directory = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        let (kind, source) = sys::mount_of(&directory).unzip();
        Filesystem {
            directory: directory.display().to_string(),
            kind,
            source,
            magic: sys::filesystem_magic(&directory).ok(),
        }
    }

    /// Whether its pages live in memory only (tmpfs, ramfs): no device behind them.
    fn in_memory(&self) -> bool {
        matches!(self.magic, Some(sys::TMPFS_MAGIC | sys::RAMFS_MAGIC))
    }
}

impl fmt::Display for Filesystem {
    /// `/tmp (ext4 on /dev/vda)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.directory)?;
        match (&self.kind, &self.source, self.magic) {
            (Some(kind), Some(source), _) => write!(f, " ({kind} on {source})"),
            (_, _, Some(magic)) => write!(f, " (filesystem {magic:#x})"),
            _ => Ok(()),
        }
    }
}

/// Whether fio ran.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Fio {
    /// On the PATH.
    Found {
        /// `fio --version`.
        version: String,
    },
    /// Not usable.
    Missing {
        /// Why.
        reason: String,
        /// How to install it.
        install: String,
    },
}

/// Every implementation at one queue depth.
#[derive(Debug, Serialize)]
pub struct Group {
    /// The iocp rows' and fio io_uring's queue depth.
    pub queue_depth: usize,
    /// One row per implementation.
    pub rows: Vec<Row>,
    /// Each iocp driver's IOPS over every other row's.
    pub ratios: Vec<Ratio>,
    /// The part's target at this depth (none at the direct part's depth 1).
    pub targets: Vec<Target>,
}

/// One iocp row's IOPS over another row's.
#[derive(Debug, Serialize)]
pub struct Ratio {
    /// The iocp row.
    pub iocp: Subject,
    /// The row it is divided by.
    pub over: Subject,
    /// The ratio; `None` when a side was not measured.
    pub ratio: Option<f64>,
}

/// One implementation at one queue depth.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The implementation.
    pub subject: Subject,
    /// [`Subject::name`].
    pub name: &'static str,
    /// Reads in flight (1 for the synchronous ones).
    pub queue_depth: usize,
    /// What came of it.
    pub outcome: Outcome,
}

/// A measured implementation, or why it was not.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It ran every round.
    Measured {
        /// Median of `runs`.
        iops: f64,
        /// Reads per second of each round, in order.
        runs: Vec<f64>,
    },
    /// It could not run here.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// The median IOPS, if measured.
    pub fn iops(&self) -> Option<f64> {
        match self {
            Outcome::Measured { iops, .. } => Some(*iops),
            Outcome::Skipped { .. } => None,
        }
    }

    /// The lowest and the highest round, if measured.
    pub fn range(&self) -> Option<(f64, f64)> {
        match self {
            Outcome::Measured { runs, .. } => Some((
                runs.iter().copied().reduce(f64::min)?,
                runs.iter().copied().reduce(f64::max)?,
            )),
            Outcome::Skipped { .. } => None,
        }
    }
}

impl Group {
    /// The median IOPS of `subject`'s row, if measured.
    pub fn iops(&self, subject: Subject) -> Option<f64> {
        self.rows
            .iter()
            .find(|row| row.subject == subject)
            .and_then(|row| row.outcome.iops())
    }
}

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
struct Timing {
    duration: Duration,
    rounds: usize,
    quick: bool,
}

impl Timing {
    /// Full run at the default 0.3 s: 2 parts x 8 measurements x 3 rounds x 0.6 s = 29 s,
    /// plus fio's start-up and writing the two files (1.25 GiB).
    fn of(settings: &Settings) -> Timing {
        Timing {
            duration: settings.duration * 2,
            rounds: if settings.quick { 1 } else { 3 },
            quick: settings.quick,
        }
    }
}

/// One measurement kind: an implementation at a queue depth. The synchronous ones run once
/// per round and appear in every group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Job {
    subject: Subject,
    depth: usize,
}

/// A part's measurements, each subject's at every depth it has, in table order.
fn jobs(kind: Kind) -> Vec<Job> {
    let mut jobs = Vec::new();
    for subject in SUBJECTS {
        for qd in kind.queue_depths() {
            let job = Job {
                subject,
                depth: subject.depth(qd),
            };
            if !jobs.contains(&job) {
                jobs.push(job);
            }
        }
    }
    jobs
}

/// Measurements [`run`] makes: per part, setting the file up, then every job every round.
pub fn measurements(settings: &Settings) -> u64 {
    let rounds = Timing::of(settings).rounds;
    [Kind::Cached, Kind::Direct]
        .into_iter()
        .map(|kind| (1 + jobs(kind).len() * rounds) as u64)
        .sum()
}

/// Runs the cached part, then the direct part; advances `bar` after each step.
pub fn run(settings: &Settings, bar: &ProgressBar) -> Report {
    let timing = Timing::of(settings);
    let fio = find_fio();
    let io_uring_refused = probe_uring().err();
    let part = |kind| run_part(kind, &timing, &fio, io_uring_refused.as_deref(), bar);
    let cached = part(Kind::Cached);
    let direct = part(Kind::Direct);
    Report {
        block_bytes: BLOCK,
        duration_s: timing.duration.as_secs_f64(),
        rounds: timing.rounds,
        pool_threads: thread::available_parallelism().map_or(1, usize::from),
        io_uring_refused,
        fio,
        cached,
        direct,
    }
}

/// Whether the io_uring driver runs here: the reason when the kernel refuses it (the pool
/// asked for io_uring then runs threads).
fn probe_uring() -> Result<(), String> {
    let pool = FilePool::builder()
        .driver(FileDriver::Uring)
        .build()
        .map_err(|e| format!("starting a file pool on io_uring: {e}"))?;
    match pool.driver() {
        FileDriver::Uring => Ok(()),
        driver => Err(format!(
            "the kernel refuses io_uring here (a pool built with FileDriver::Uring runs {driver:?})"
        )),
    }
}

/// Where a part's file goes. Cached: the temporary directory. Direct: the first of the
/// temporary directory, `./target` and `.` whose filesystem has a device behind it.
fn directory(kind: Kind) -> Result<Filesystem, String> {
    let temp = std::env::temp_dir();
    if kind == Kind::Cached {
        return Ok(Filesystem::of(&temp));
    }
    let mut refused = Vec::new();
    for dir in [temp, PathBuf::from("target"), PathBuf::from(".")] {
        if !dir.is_dir() {
            continue;
        }
        let filesystem = Filesystem::of(&dir);
        if !filesystem.in_memory() {
            return Ok(filesystem);
        }
        refused.push(filesystem.to_string());
    }
    Err(format!(
        "every directory for the O_DIRECT file is in memory, not on a disk: {}",
        refused.join(", ")
    ))
}

/// One part: sets its file up, measures every job every round, deletes the file.
fn run_part(
    kind: Kind,
    timing: &Timing,
    fio: &Fio,
    io_uring_refused: Option<&str>,
    bar: &ProgressBar,
) -> Part {
    let file_bytes = kind.file_bytes(timing.quick);
    let jobs = jobs(kind);
    let mut part = Part {
        kind,
        file_bytes,
        filesystem: None,
        setup_s: None,
        skipped: None,
        target_ratio: match kind {
            Kind::Cached => TARGET_RATIO,
            Kind::Direct => DIRECT_TARGET_RATIO,
        },
        groups: Vec::new(),
    };
    bar.set_message(match kind {
        Kind::Cached => format!("writing and caching a {} MiB file", file_bytes >> 20),
        Kind::Direct => format!("writing a {} MiB file for O_DIRECT reads", file_bytes >> 20),
    });
    let setup = Instant::now();
    let file = directory(kind).and_then(|filesystem| {
        let file = TestFile::create(Path::new(&filesystem.directory), file_bytes, kind)
            .map_err(|e| format!("setting the file up in {filesystem}: {e}"));
        part.filesystem = Some(filesystem);
        file
    });
    bar.inc(1);
    let file = match file {
        Ok(file) => file,
        Err(reason) => {
            part.skipped = Some(reason);
            bar.inc((jobs.len() * timing.rounds) as u64);
            return part;
        }
    };
    part.setup_s = Some(setup.elapsed().as_secs_f64());
    let mut runs: Vec<Result<Vec<f64>, String>> = jobs
        .iter()
        .map(|job| match (job.subject, fio, io_uring_refused) {
            (Subject::FioPsync | Subject::FioIoUring, Fio::Missing { reason, install }, _) => {
                Err(format!("{reason}; to install it, {install}"))
            }
            (Subject::IocpUring, _, Some(reason)) => Err(reason.to_owned()),
            _ => Ok(Vec::new()),
        })
        .collect();
    let part_name = match kind {
        Kind::Cached => "cached",
        Kind::Direct => "O_DIRECT",
    };
    for round in 1..=timing.rounds {
        for (slot, job) in runs.iter_mut().zip(&jobs) {
            bar.set_message(format!(
                "{part_name}, round {round}/{}: {}, QD {}",
                timing.rounds,
                job.subject.name(),
                job.depth
            ));
            if let Ok(rates) = &mut *slot {
                match measure(*job, &file, timing.duration) {
                    Ok(rate) => rates.push(rate),
                    Err(reason) => *slot = Err(reason),
                }
            }
            bar.inc(1);
        }
    }
    drop(file);
    let result = |subject: Subject, depth: usize| {
        let i = jobs
            .iter()
            .position(|job| job.subject == subject && job.depth == subject.depth(depth))
            .expect("every subject has a job at every depth");
        match &runs[i] {
            Ok(rates) => match median(rates) {
                Some(iops) => Outcome::Measured {
                    iops,
                    runs: rates.clone(),
                },
                None => Outcome::Skipped {
                    reason: "no rounds ran".into(),
                },
            },
            Err(reason) => Outcome::Skipped {
                reason: reason.clone(),
            },
        }
    };
    part.groups = kind
        .queue_depths()
        .into_iter()
        .map(|depth| {
            let rows = SUBJECTS
                .iter()
                .map(|&subject| Row {
                    subject,
                    name: subject.name(),
                    queue_depth: subject.depth(depth),
                    outcome: result(subject, depth),
                })
                .collect();
            group(kind, depth, rows)
        })
        .collect();
    part
}

/// A group of `rows` at queue depth `depth`, with its ratios and the part's target.
fn group(kind: Kind, depth: usize, rows: Vec<Row>) -> Group {
    let mut group = Group {
        queue_depth: depth,
        rows,
        ratios: Vec::new(),
        targets: Vec::new(),
    };
    let ratio = |iocp, over| group.iops(iocp).zip(group.iops(over)).map(|(a, b)| a / b);
    let ratios = IOCP
        .iter()
        .flat_map(|&iocp| {
            SUBJECTS
                .iter()
                .filter(move |&&over| over != iocp)
                .map(move |&over| Ratio {
                    iocp,
                    over,
                    ratio: ratio(iocp, over),
                })
        })
        .collect();
    let targets = match kind {
        Kind::Cached => {
            // The faster driver is judged; both are reported.
            let faster = IOCP
                .iter()
                .filter_map(|&iocp| Some((iocp, ratio(iocp, Subject::Pread)?)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let what = match faster {
                Some((iocp, _)) => format!("{} / pread loop (the faster driver)", iocp.name()),
                None => "the faster iocp driver / pread loop".to_owned(),
            };
            vec![Target::new(
                what,
                faster.map(|(_, r)| r),
                Bound::AtLeast(TARGET_RATIO),
            )]
        }
        Kind::Direct if depth == DIRECT_TARGET_DEPTH => vec![Target::new(
            format!("{} / fio io_uring", Subject::IocpUring.name()),
            ratio(Subject::IocpUring, Subject::FioIoUring),
            Bound::AtLeast(DIRECT_TARGET_RATIO),
        )],
        Kind::Direct => Vec::new(),
    };
    group.ratios = ratios;
    group.targets = targets;
    group
}

/// One measurement: reads per second, or why it failed.
fn measure(job: Job, file: &TestFile, duration: Duration) -> Result<f64, String> {
    // The in-process readers run on threads of their own, as every measurement does,
    // named so that a profile tells them apart.
    let on_thread = |name: &str, read: &(dyn Fn() -> Result<f64, String> + Sync)| {
        thread::scope(|s| {
            thread::Builder::new()
                .name(name.into())
                .spawn_scoped(s, read)
                .map_err(|e| format!("spawning {name}: {e}"))?
                .join()
                .unwrap_or_else(|_| Err(format!("{name} panicked")))
        })
    };
    match job.subject {
        Subject::IocpThreads => on_thread("file-iocp-threads", &|| {
            iocp_reads(file, FileDriver::Threads, job.depth, duration)
        }),
        Subject::IocpUring => on_thread("file-iocp-uring", &|| {
            iocp_reads(file, FileDriver::Uring, job.depth, duration)
        }),
        Subject::Pread => on_thread("file-pread", &|| pread_loop(file, duration)),
        Subject::FioPsync => fio(file, "psync", 1, duration),
        Subject::FioIoUring => fio(file, "io_uring", job.depth, duration),
    }
}

/// The random block offsets: xorshift64*, the same sequence for every implementation of
/// ours.
struct Offsets {
    state: u64,
    blocks: u64,
}

impl Offsets {
    fn new(file_bytes: u64) -> Offsets {
        Offsets {
            state: SEED,
            blocks: file_bytes / BLOCK as u64,
        }
    }

    /// The next block's offset in bytes.
    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % self.blocks) * BLOCK as u64
    }
}

/// Checks that a read of the block at `offset` returned that block (it starts with its
/// number).
fn check_block(data: &[u8], offset: u64) -> Result<(), String> {
    let number = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    if number == offset / BLOCK as u64 {
        Ok(())
    } else {
        Err(format!(
            "the read at {offset} returned block {number}, not {}",
            offset / BLOCK as u64
        ))
    }
}

/// A warm-up of a tenth of the measurement, then the measurement: the window in which
/// completions are counted.
fn window(duration: Duration) -> (Instant, Instant) {
    let from = Instant::now() + duration / 10;
    (from, from + duration)
}

/// The iocp implementation on `driver` at queue depth `qd`.
fn iocp_reads(
    file: &TestFile,
    driver: FileDriver,
    qd: usize,
    duration: Duration,
) -> Result<f64, String> {
    let fd = file.fd();
    let mut offsets = Offsets::new(file.bytes);
    // Declared before the pool, so dropped after it: dropping the pool waits for every
    // queued read, so nothing names these any more when they are freed.
    let mut buffers = AlignedBuffer::new(qd * BLOCK);
    let port = Port::new().map_err(|e| format!("creating the port: {e}"))?;
    let buffer_base = buffers.as_mut_ptr();
    let mut aiocbs: Vec<Aiocb> = (0..qd)
        .map(|i| {
            let buf = buffer_base.wrapping_add(i * BLOCK);
            Aiocb::new(fd, Opcode::Read, offsets.next() as i64, buf, BLOCK).with_port(&port)
        })
        .collect();
    // From here on the aiocbs are reached through this pointer only.
    let base = aiocbs.as_mut_ptr();
    let pool = FilePool::builder()
        .driver(driver)
        .build()
        .map_err(|e| format!("starting the file pool: {e}"))?;
    if pool.driver() != driver {
        return Err(format!(
            "the file pool runs {:?}, not {driver:?}",
            pool.driver()
        ));
    }
    let list: Vec<*mut Aiocb> = (0..qd).map(|i| base.wrapping_add(i)).collect();
    // SAFETY: every entry points into `aiocbs`, whose reads go into `buffers`; both outlive
    // `pool`, and an aiocb is only changed again after its record has been dequeued.
    unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &list) }
        .map_err(|e| format!("lio_listio: {e}"))?;
    let mut records = vec![Completion::default(); qd];
    let mut again: Vec<*mut Aiocb> = Vec::with_capacity(qd);
    let (from, end) = window(duration);
    let mut counted: u64 = 0;
    let mut last = from;
    let result = (|| {
        for _ in 0..MAX_READS {
            let drained = port
                .get_many(&mut records, 1, Some(STUCK))
                .map_err(|e| format!("get_many: {e}"))?;
            if drained.count == 0 {
                return Err(format!("no read completed within {} s", STUCK.as_secs()));
            }
            let now = Instant::now();
            for record in &records[..drained.count] {
                let index = (record.overlapped().wrapping_sub(base as usize)) / size_of::<Aiocb>();
                if index >= qd {
                    return Err(format!("a record names no aiocb of ours: {record:?}"));
                }
                let bytes = record.result().map_err(|e| format!("a read failed: {e}"))?;
                if bytes as usize != BLOCK {
                    return Err(format!("a read returned {bytes} bytes"));
                }
                let aiocb = base.wrapping_add(index);
                // SAFETY: the record was dequeued, so the pool is done with this aiocb and
                // its buffer (the port's release/acquire orders the read's bytes before).
                let (offset, data) = unsafe {
                    let offset = (*aiocb).aio_offset as u64;
                    (offset, std::slice::from_raw_parts((*aiocb).aio_buf, BLOCK))
                };
                check_block(data, offset)?;
                if now >= from {
                    counted += 1;
                }
                if now < end {
                    // SAFETY: `aiocb` is in `aiocbs`; its record was dequeued and it is not
                    // resubmitted until below, so the pool neither reads nor writes it now.
                    unsafe { (*aiocb).aio_offset = offsets.next() as i64 };
                    again.push(aiocb);
                }
            }
            if !again.is_empty() {
                // SAFETY: each entry is in `aiocbs`, its record dequeued, and reads into
                // `buffers`; both outlive `pool`, untouched until the entry's next record.
                unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &again) }
                    .map_err(|e| format!("lio_listio: {e}"))?;
                again.clear();
            }
            last = now;
            if now >= end {
                break;
            }
        }
        Ok(())
    })();
    // Finishes every read still queued and joins the threads: after this nothing names
    // `aiocbs` or `buffers`.
    drop(pool);
    drop(aiocbs);
    drop(buffers);
    result?;
    Ok(counted as f64 / last.saturating_duration_since(from).as_secs_f64())
}

/// The synchronous baseline: one thread, `pread` after `pread`, the same offsets.
fn pread_loop(file: &TestFile, duration: Duration) -> Result<f64, String> {
    let mut offsets = Offsets::new(file.bytes);
    let mut buf = AlignedBuffer::new(BLOCK);
    let buf = buf.as_mut_slice();
    let (from, end) = window(duration);
    let mut counted: u64 = 0;
    let mut reads: u64 = 0;
    let mut now = Instant::now();
    while reads < MAX_READS {
        for _ in 0..READS_PER_CLOCK_READ {
            let offset = offsets.next();
            let n = file
                .file
                .read_at(buf, offset)
                .map_err(|e| format!("pread: {e}"))?;
            if n != BLOCK {
                return Err(format!("a read returned {n} bytes"));
            }
            check_block(buf, offset)?;
        }
        reads += READS_PER_CLOCK_READ;
        now = Instant::now();
        if now >= from {
            counted += READS_PER_CLOCK_READ;
        }
        if now >= end {
            break;
        }
    }
    // The batch that crossed `from` is counted whole: at most 63 reads of slack.
    Ok(counted as f64 / now.saturating_duration_since(from).as_secs_f64())
}

/// `fio --version`, or why fio cannot run.
fn find_fio() -> Fio {
    match Command::new("fio")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Fio::Found {
            version: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        },
        Ok(out) => Fio::Missing {
            reason: format!("`fio --version` failed ({})", out.status),
            install: FIO_INSTALL.into(),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Fio::Missing {
            reason: "fio is not on the PATH".into(),
            install: FIO_INSTALL.into(),
        },
        Err(e) => Fio::Missing {
            reason: format!("cannot run fio: {e}"),
            install: FIO_INSTALL.into(),
        },
    }
}

/// One fio run: IOPS from its JSON report.
fn fio(file: &TestFile, engine: &str, qd: usize, duration: Duration) -> Result<f64, String> {
    let runtime_ms = duration.as_millis().max(1);
    let done = process::run(
        "fio",
        Command::new("fio").args([
            "--name=iocp-bench".to_owned(),
            format!("--filename={}", file.path.display()),
            format!("--size={}", file.bytes),
            "--rw=randread".into(),
            "--bs=4k".into(),
            format!("--direct={}", u8::from(file.kind == Kind::Direct)),
            format!("--ioengine={engine}"),
            format!("--iodepth={qd}"),
            "--numjobs=1".into(),
            format!("--runtime={runtime_ms}ms"),
            "--time_based".into(),
            // Keep the page cache that the scenario warmed (fio drops it by default), and
            // pick offsets with replacement, as our implementations do.
            "--invalidate=0".into(),
            "--norandommap".into(),
            "--output-format=json".into(),
        ]),
        None,
        duration + FIO_SLACK,
    )?;
    if !done.status.success() {
        return Err(format!(
            "fio --ioengine={engine} failed ({}): {}",
            done.status,
            done.last_words()
        ));
    }
    parse_fio_iops(&done.stdout)
        .ok_or_else(|| format!("fio's JSON report has no read IOPS: {}", done.last_words()))
}

/// The read IOPS of the first job in fio's JSON report (which may follow warnings).
fn parse_fio_iops(out: &str) -> Option<f64> {
    let json: serde_json::Value = serde_json::from_str(&out[out.find('{')?..]).ok()?;
    let iops = json
        .get("jobs")?
        .get(0)?
        .get("read")?
        .get("iops")?
        .as_f64()?;
    (iops > 0.0).then_some(iops)
}

/// Zeroed memory aligned to [`BLOCK`], as `O_DIRECT` requires of a read's buffer (the
/// cached reads use the same).
struct AlignedBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuffer {
    /// `len` bytes (at least one block).
    fn new(len: usize) -> AlignedBuffer {
        let layout = Layout::from_size_align(len.max(BLOCK), BLOCK).expect("a valid layout");
        // SAFETY: the layout's size is at least BLOCK, never zero.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuffer { ptr, layout }
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` holds `layout.size()` initialized (zeroed) bytes, owned by `self`,
        // which the returned borrow keeps borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this very layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// The file read, deleted when dropped.
struct TestFile {
    path: PathBuf,
    /// The descriptor our reads use: opened with `O_DIRECT` for [`Kind::Direct`].
    file: File,
    bytes: u64,
    kind: Kind,
}

impl TestFile {
    /// Writes `bytes` in `dir` (a whole number of blocks, each starting with its number)
    /// and syncs them; then reads them once so that the page cache holds the whole file
    /// ([`Kind::Cached`]), or drops them from the page cache (whose memory `O_DIRECT` reads
    /// would not use) and opens the file again with `O_DIRECT` ([`Kind::Direct`]).
    fn create(dir: &Path, bytes: u64, kind: Kind) -> io::Result<TestFile> {
        // A name of its own per file: the tests make two at once in one process, and one
        // would truncate the other's under it.
        static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
        let path = dir.join(format!(
            "iocp-bench-{}-{}.dat",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        // From here on, dropping `test` deletes the file, also on an error below.
        let mut test = TestFile {
            path,
            file,
            bytes,
            kind,
        };
        const CHUNK: usize = 1 << 20;
        let mut chunk = vec![0xa5u8; CHUNK];
        let mut written = 0u64;
        while written < bytes {
            let len = CHUNK.min((bytes - written) as usize);
            for (i, block) in chunk[..len].chunks_mut(BLOCK).enumerate() {
                let number = written / BLOCK as u64 + i as u64;
                block[..8].copy_from_slice(&number.to_le_bytes());
            }
            test.file.write_all(&chunk[..len])?;
            written += len as u64;
        }
        // Write back now, so that no writeback competes with the measurements.
        test.file.sync_data()?;
        if kind == Kind::Direct {
            sys::drop_cached_pages(&test.file)?;
            test.file = sys::open_direct(&test.path)?;
            return Ok(test);
        }
        let mut reader = File::open(&test.path)?;
        let mut total = 0u64;
        for _ in 0..=bytes / CHUNK as u64 {
            let n = reader.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        if total != bytes {
            return Err(io::Error::other(format!(
                "read {total} bytes back of {bytes}"
            )));
        }
        Ok(test)
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    #[cfg(test)]
    fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        // Already gone is fine.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: u64 = 1 << 20;

    fn cached(bytes: u64) -> TestFile {
        TestFile::create(&std::env::temp_dir(), bytes, Kind::Cached).unwrap()
    }

    /// The drivers that run here: threads always, io_uring where the kernel allows it.
    fn drivers() -> Vec<FileDriver> {
        let mut drivers = vec![FileDriver::Threads];
        if probe_uring().is_ok() {
            drivers.push(FileDriver::Uring);
        }
        drivers
    }

    #[test]
    fn the_file_is_laid_out_and_removed() {
        let file = cached(SMALL);
        let path = file.path().to_owned();
        let mut block = vec![0; BLOCK];
        file.file.read_at(&mut block, 5 * BLOCK as u64).unwrap();
        check_block(&block, 5 * BLOCK as u64).unwrap();
        assert!(check_block(&block, 6 * BLOCK as u64).is_err());
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn offsets_are_aligned_in_range_and_repeatable() {
        let mut a = Offsets::new(SMALL);
        let mut b = Offsets::new(SMALL);
        for _ in 0..10_000 {
            let offset = a.next();
            assert_eq!(offset, b.next());
            assert_eq!(offset % BLOCK as u64, 0);
            assert!(offset < SMALL);
        }
    }

    #[test]
    fn iocp_and_pread_read_the_file() {
        let file = cached(SMALL);
        assert_every_reader_reads(&file, Kind::Cached);
    }

    #[test]
    fn iocp_and_pread_read_with_o_direct() {
        let Ok(filesystem) = directory(Kind::Direct) else {
            eprintln!("no directory on a disk here: the O_DIRECT reads are not tested");
            return;
        };
        assert!(!filesystem.in_memory());
        let dir = Path::new(&filesystem.directory);
        let file = match TestFile::create(dir, SMALL, Kind::Direct) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                eprintln!("{filesystem} refuses O_DIRECT: the O_DIRECT reads are not tested");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        // An O_DIRECT read needs an aligned buffer.
        let mut block = AlignedBuffer::new(BLOCK);
        assert_eq!(block.as_mut_ptr() as usize % BLOCK, 0);
        file.file
            .read_at(block.as_mut_slice(), 7 * BLOCK as u64)
            .unwrap();
        check_block(block.as_mut_slice(), 7 * BLOCK as u64).unwrap();
        assert_every_reader_reads(&file, Kind::Direct);
    }

    /// Each iocp driver at each of `kind`'s queue depths, and the pread loop, read `file`
    /// in a short measurement.
    fn assert_every_reader_reads(file: &TestFile, kind: Kind) {
        for driver in drivers() {
            for qd in kind.queue_depths() {
                let iops = iocp_reads(file, driver, qd, Duration::from_millis(20)).unwrap();
                assert!(iops > 0.0, "{driver:?}, QD {qd}");
            }
        }
        assert!(pread_loop(file, Duration::from_millis(20)).unwrap() > 0.0);
    }

    #[test]
    fn synchronous_jobs_run_once_per_part() {
        for kind in [Kind::Cached, Kind::Direct] {
            let jobs = jobs(kind);
            // Two iocp drivers and fio io_uring at both depths, pread and fio psync once.
            assert_eq!(jobs.len(), 8, "{kind:?}");
            let count = |subject| jobs.iter().filter(|job| job.subject == subject).count();
            assert_eq!(count(Subject::Pread), 1);
            assert_eq!(count(Subject::FioIoUring), 2);
        }
    }

    #[test]
    fn the_cached_target_judges_the_faster_driver() {
        let rows = |threads: f64, uring: Option<f64>| {
            SUBJECTS
                .iter()
                .map(|&subject| Row {
                    subject,
                    name: subject.name(),
                    queue_depth: 16,
                    outcome: match (subject, uring) {
                        (Subject::IocpThreads, _) => Outcome::Measured {
                            iops: threads,
                            runs: vec![threads],
                        },
                        (Subject::IocpUring, Some(iops)) => Outcome::Measured {
                            iops,
                            runs: vec![iops],
                        },
                        (Subject::IocpUring, None) => Outcome::Skipped {
                            reason: "refused".into(),
                        },
                        _ => Outcome::Measured {
                            iops: 100.0,
                            runs: vec![100.0],
                        },
                    },
                })
                .collect()
        };
        let group = group(Kind::Cached, 16, rows(110.0, Some(130.0)));
        let target = &group.targets[0];
        assert_eq!(target.ratio, Some(1.3));
        assert_eq!(target.met, Some(true));
        assert!(target.what.contains("(io_uring)"), "{}", target.what);
        assert_eq!(group.ratios.len(), 2 * 4);
        let group = super::group(Kind::Cached, 16, rows(110.0, None));
        assert_eq!(group.targets[0].ratio, Some(1.1));
        assert_eq!(group.targets[0].met, Some(false));
        assert!(super::group(Kind::Direct, 1, rows(1.0, None))
            .targets
            .is_empty());
        let direct = super::group(Kind::Direct, DIRECT_TARGET_DEPTH, rows(1.0, Some(95.0)));
        assert_eq!(direct.targets[0].ratio, Some(0.95));
    }

    #[test]
    fn fio_json_is_parsed() {
        let out = "fio: some warning\n{\"jobs\": [{\"read\": {\"iops\": 1234.5}}]}";
        assert_eq!(parse_fio_iops(out), Some(1234.5));
        assert_eq!(parse_fio_iops("{\"jobs\": []}"), None);
        assert_eq!(parse_fio_iops("no json"), None);
    }

    #[test]
    fn the_median_of_runs() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }
}
