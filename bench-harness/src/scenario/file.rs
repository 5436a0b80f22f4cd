//! `file`: 4 KiB random reads of a page-cached file, in reads per second (IOPS).
//!
//! The scenario writes a [`FILE_BYTES`] file (16 MiB with `--quick`) in the temporary
//! directory (`$TMPDIR`, else `/tmp`), syncs it so that no writeback runs during the
//! measurements, reads it once end to end so that every page is cached, and deletes it at
//! the end. Each 4 KiB block starts with its block number, which every read checks.
//!
//! Implementations, at queue depths 16 and 64 where they have one:
//!
//! * `iocp lio_listio`: a [`FilePool`] with the default threads (one per CPU) and one
//!   [`Port`]; `QD` aiocbs go in with one `lio_listio(LIO_NOWAIT_GMCS)`; the consumer takes
//!   completions with batched `get_many` and resubmits every finished aiocb, with its next
//!   random offset, in one `lio_listio` per batch: `QD` reads stay in flight;
//! * `pread loop`: one thread calling `pread` (queue depth 1), on the same sequence of
//!   random offsets (the same generator with the same seed);
//! * `fio psync` and `fio io_uring`: fio 3 on the same file, `--rw=randread --bs=4k
//!   --direct=0 --numjobs=1 --time_based --invalidate=0 --norandommap`, `--iodepth=QD` for
//!   io_uring, its `--runtime` the same as every other measurement's, IOPS read from its
//!   `--output-format=json`. When `fio` is not on the `PATH` these rows are skipped, with
//!   the way to install it (`bench-harness/scripts/install-peers.sh`).
//!
//! Each implementation runs [`Timing::rounds`] times (rounds interleaved); the median is
//! reported. Target: iocp ≥ the pread loop at queue depth ≥ 16 (the design: "≥ psync");
//! the ratios to fio psync and fio io_uring are reported.

use crate::{process, Settings};
use indicatif::ProgressBar;
use iocp::{Aiocb, Completion, FilePool, LioMode, Opcode, Port};
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Queue depths measured.
pub const QUEUE_DEPTHS: [usize; 2] = [16, 64];
/// Bytes per read.
pub const BLOCK: usize = 4096;
/// Size of the file read in a full run.
pub const FILE_BYTES: u64 = 256 << 20;
/// Size of the file read with `--quick`.
pub const QUICK_FILE_BYTES: u64 = 16 << 20;
/// The design target: iocp's IOPS over the pread loop's, at queue depth ≥ 16.
pub const TARGET_RATIO: f64 = 1.0;
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

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// iocp-rs `lio_listio(LIO_NOWAIT_GMCS)` + `get_many`.
    Iocp,
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
            Subject::Iocp => "iocp lio_listio+get_many",
            Subject::Pread => "pread loop (1 thread)",
            Subject::FioPsync => "fio psync",
            Subject::FioIoUring => "fio io_uring",
        }
    }

    /// The queue depth it runs at in a group of depth `qd` (1 for the synchronous ones).
    fn depth(self, qd: usize) -> usize {
        match self {
            Subject::Iocp | Subject::FioIoUring => qd,
            Subject::Pread | Subject::FioPsync => 1,
        }
    }
}

/// The implementations of one group, in table order.
const SUBJECTS: [Subject; 4] = [
    Subject::Iocp,
    Subject::Pread,
    Subject::FioPsync,
    Subject::FioIoUring,
];

/// Everything the scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Size of the file read.
    pub file_bytes: u64,
    /// Bytes per read.
    pub block_bytes: usize,
    /// Length of one measurement (fio's `--runtime` too).
    pub duration_s: f64,
    /// Measurements per implementation; the median is reported.
    pub rounds: usize,
    /// Threads of iocp's file pool.
    pub pool_threads: usize,
    /// Time taken to write, sync and read the file once.
    pub setup_s: f64,
    /// fio's version, or why it did not run.
    pub fio: Fio,
    /// [`TARGET_RATIO`].
    pub target_ratio: f64,
    /// One group per queue depth.
    pub groups: Vec<Group>,
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
    /// iocp's and fio io_uring's queue depth.
    pub queue_depth: usize,
    /// One row per implementation.
    pub rows: Vec<Row>,
    /// iocp IOPS over the pread loop's.
    pub iocp_to_pread: Option<f64>,
    /// iocp IOPS over fio psync's.
    pub iocp_to_fio_psync: Option<f64>,
    /// iocp IOPS over fio io_uring's.
    pub iocp_to_fio_io_uring: Option<f64>,
    /// Whether `iocp_to_pread` reaches [`TARGET_RATIO`].
    pub target_met: Option<bool>,
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
}

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
struct Timing {
    duration: Duration,
    rounds: usize,
    file_bytes: u64,
}

impl Timing {
    /// Full run at the default 0.3 s: 6 measurements x 3 rounds x 0.6 s = 11 s, plus fio's
    /// start-up and writing and reading the file once.
    fn of(settings: &Settings) -> Timing {
        Timing {
            duration: settings.duration * 2,
            rounds: if settings.quick { 1 } else { 3 },
            file_bytes: if settings.quick {
                QUICK_FILE_BYTES
            } else {
                FILE_BYTES
            },
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

fn jobs() -> Vec<Job> {
    let mut jobs: Vec<Job> = QUEUE_DEPTHS
        .iter()
        .map(|&depth| Job {
            subject: Subject::Iocp,
            depth,
        })
        .collect();
    for subject in [Subject::Pread, Subject::FioPsync] {
        jobs.push(Job { subject, depth: 1 });
    }
    jobs.extend(QUEUE_DEPTHS.iter().map(|&depth| Job {
        subject: Subject::FioIoUring,
        depth,
    }));
    jobs
}

/// Measurements [`run`] makes: setting the file up, then every job every round.
pub fn measurements(settings: &Settings) -> u64 {
    (1 + jobs().len() * Timing::of(settings).rounds) as u64
}

/// Sets the file up, measures every implementation, deletes the file; advances `bar` after
/// each step.
pub fn run(settings: &Settings, bar: &ProgressBar) -> Report {
    let timing = Timing::of(settings);
    let fio = find_fio();
    bar.set_message(format!(
        "writing and caching a {} MiB file",
        timing.file_bytes >> 20
    ));
    let setup = Instant::now();
    let file = TestFile::create(timing.file_bytes);
    let setup_s = setup.elapsed().as_secs_f64();
    bar.inc(1);
    let jobs = jobs();
    let mut runs: Vec<Result<Vec<f64>, String>> = jobs
        .iter()
        .map(|job| match (&file, job.subject, &fio) {
            (Err(e), _, _) => Err(format!("creating the file: {e}")),
            (_, Subject::FioPsync | Subject::FioIoUring, Fio::Missing { reason, install }) => {
                Err(format!("{reason}; to install it, {install}"))
            }
            _ => Ok(Vec::new()),
        })
        .collect();
    for round in 1..=timing.rounds {
        for (slot, job) in runs.iter_mut().zip(&jobs) {
            bar.set_message(format!(
                "round {round}/{}: {}, QD {}",
                timing.rounds,
                job.subject.name(),
                job.depth
            ));
            if let (Ok(rates), Ok(file)) = (&mut *slot, &file) {
                match measure(*job, file, timing.duration) {
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
    let groups = QUEUE_DEPTHS
        .iter()
        .map(|&depth| {
            let rows: Vec<Row> = SUBJECTS
                .iter()
                .map(|&subject| Row {
                    subject,
                    name: subject.name(),
                    queue_depth: subject.depth(depth),
                    outcome: result(subject, depth),
                })
                .collect();
            let iops = |subject: Subject| {
                rows.iter()
                    .find(|row| row.subject == subject)
                    .and_then(|row| row.outcome.iops())
            };
            let iocp = iops(Subject::Iocp);
            let ratio = |peer| iocp.zip(iops(peer)).map(|(a, b)| a / b);
            let iocp_to_pread = ratio(Subject::Pread);
            Group {
                queue_depth: depth,
                iocp_to_pread,
                iocp_to_fio_psync: ratio(Subject::FioPsync),
                iocp_to_fio_io_uring: ratio(Subject::FioIoUring),
                target_met: iocp_to_pread.map(|r| r >= TARGET_RATIO),
                rows,
            }
        })
        .collect();
    Report {
        file_bytes: timing.file_bytes,
        block_bytes: BLOCK,
        duration_s: timing.duration.as_secs_f64(),
        rounds: timing.rounds,
        pool_threads: thread::available_parallelism().map_or(1, usize::from),
        setup_s,
        fio,
        target_ratio: TARGET_RATIO,
        groups,
    }
}

/// The median of `values`; `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
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
        Subject::Iocp => on_thread("file-iocp", &|| iocp_reads(file, job.depth, duration)),
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

/// The iocp implementation at queue depth `qd`.
fn iocp_reads(file: &TestFile, qd: usize, duration: Duration) -> Result<f64, String> {
    let fd = file.fd();
    let mut offsets = Offsets::new(file.bytes);
    // Declared before the pool, so dropped after it: dropping the pool waits for every
    // queued read, so nothing names these any more when they are freed.
    let mut buffers = vec![0u8; qd * BLOCK];
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
    let pool = FilePool::new().map_err(|e| format!("starting the file pool: {e}"))?;
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
    let mut buf = vec![0u8; BLOCK];
    let (from, end) = window(duration);
    let mut counted: u64 = 0;
    let mut reads: u64 = 0;
    let mut now = Instant::now();
    while reads < MAX_READS {
        for _ in 0..READS_PER_CLOCK_READ {
            let offset = offsets.next();
            let n = file
                .file
                .read_at(&mut buf, offset)
                .map_err(|e| format!("pread: {e}"))?;
            if n != BLOCK {
                return Err(format!("a read returned {n} bytes"));
            }
            check_block(&buf, offset)?;
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
            "--direct=0".into(),
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

/// The file read, deleted when dropped.
struct TestFile {
    path: PathBuf,
    file: File,
    bytes: u64,
}

impl TestFile {
    /// Writes `bytes` (a whole number of blocks, each starting with its number), syncs
    /// them, and reads them once so that the page cache holds the whole file.
    fn create(bytes: u64) -> io::Result<TestFile> {
        // A name of its own per file: the tests make two at once in one process, and one
        // would truncate the other's under it.
        static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
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
        let mut test = TestFile { path, file, bytes };
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

    #[test]
    fn the_file_is_laid_out_and_removed() {
        let file = TestFile::create(SMALL).unwrap();
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
        let file = TestFile::create(SMALL).unwrap();
        for qd in QUEUE_DEPTHS {
            let iops = iocp_reads(&file, qd, Duration::from_millis(20)).unwrap();
            assert!(iops > 0.0, "QD {qd}");
        }
        assert!(pread_loop(&file, Duration::from_millis(20)).unwrap() > 0.0);
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
