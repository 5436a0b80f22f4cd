//! Integration tests of regular files through completion ports: owned-buffer requests
//! ([`File::read_at`] and friends, finished with [`File::finish`]), overlapped requests
//! (offsets from `Offset`/`OffsetHigh`, completion to a port or to the `hEvent` event), the
//! synchronous forms, `lio_listio` in its three modes with its `aio_error`, `aio_return` and
//! `aio_cancel` companions and every kind of entry it must refuse on its own, cancellation
//! racing completion, dequeue waits that cancellation must not end, pool shutdown, and a
//! soak that checks every completion arrives exactly once.
//!
//! Every test works on real files in a directory of its own under the system's temporary
//! directory, removed when the test ends, and bounds every wait: a dequeue gives up after
//! [`BULK_PATIENCE`], and a call that cannot time out by itself (an `LIO_WAIT` list, a pool's
//! drop, `GetOverlappedResult` with wait) runs under a [`Watchdog`] that aborts the process
//! rather than let the suite hang.
//!
//! Pool threads are kept busy on purpose by [`Busy`], a large read of `/dev/zero` queued
//! ahead of the requests under test, so that those requests sit in the queue where they can
//! be cancelled.
#![cfg(not(loom))]

mod common;

use common::files::TempDir;
use common::ports::close_keeping_number;
use common::rng::{pattern, Rng};
use common::timing::BULK_PATIENCE;
use common::{address, errno};
use iocp::{
    AioCancel, Aiocb, Completion, DrainStatus, Event, File, FilePool, FilePoolBuilder, LioMode,
    OpResult, Overlapped, Port, AIO_EXTENDED, LIO_NOP, LIO_READ, LIO_WRITE, MAX_TRANSFER,
    STATUS_PENDING,
};
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, PoisonError, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long a call that cannot time out may block before the watchdog aborts the process.
const HANG: Duration = Duration::from_secs(60);
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// The longest read of `/dev/zero` that [`Busy`] issues: tens of milliseconds of work.
const BUSY: usize = 64 * MIB;

// ---------------------------------------------------------------------------------------
// Helpers

/// The five 32-bit words of an `OVERLAPPED` as a C caller sees them: `Internal`,
/// `InternalHigh`, `Offset`, `OffsetHigh`, `hEvent`.
fn words(overlapped: &Overlapped) -> &[AtomicU32; 5] {
    const _: () = assert!(std::mem::size_of::<Overlapped>() == 20);
    const _: () = assert!(std::mem::align_of::<Overlapped>() == 4);
    // SAFETY: `Overlapped` is `repr(C)` with five 32-bit atomic words (the size and
    // alignment are checked above), so it may be viewed as an array of them; every access
    // through the view is atomic, as the engine's own are.
    unsafe { &*(overlapped as *const Overlapped).cast::<[AtomicU32; 5]>() }
}

/// Memory handed to the engine by raw pointer (overlapped blocks, aiocbs, their buffers):
/// at a fixed address, freed on drop, but leaked when the test is unwinding from a failure,
/// since a request may still be using it then.
struct Lent<T: ?Sized> {
    raw: *mut T,
}

impl<T: ?Sized> Lent<T> {
    fn new(value: Box<T>) -> Lent<T> {
        Lent {
            raw: Box::into_raw(value),
        }
    }

    fn ptr(&self) -> *mut T {
        self.raw
    }

    /// The value. For plain data (buffers) tests call this only while no request uses the
    /// memory: before submission, or after the request's completion was seen.
    fn get(&self) -> &T {
        // SAFETY: `raw` came from `Box::into_raw` and is freed only by `drop`; overlapped
        // blocks and aiocbs change under requests only through atomics, and buffers are
        // read only while no request writes them (see above).
        unsafe { &*self.raw }
    }
}

impl Lent<[u8]> {
    fn bytes(data: &[u8]) -> Lent<[u8]> {
        Lent::new(data.to_vec().into_boxed_slice())
    }

    fn zeroed(len: usize) -> Lent<[u8]> {
        Lent::new(vec![0; len].into_boxed_slice())
    }

    fn buf(&self) -> *mut u8 {
        self.raw.cast()
    }

    fn len(&self) -> usize {
        self.raw.len()
    }

    /// Fills the buffer with `byte`; only while no request uses it.
    fn fill(&self, byte: u8) {
        // SAFETY: the buffer is live and no request uses it (the caller's promise).
        unsafe { std::ptr::write_bytes(self.buf(), byte, self.len()) };
    }
}

impl<T> Lent<[T]> {
    fn at(&self, i: usize) -> *mut T {
        assert!(i < self.raw.len());
        self.raw.cast::<T>().wrapping_add(i)
    }
}

impl<T: ?Sized> Drop for Lent<T> {
    fn drop(&mut self) {
        if thread::panicking() {
            // A failed test may have left a request that still uses the memory.
            return;
        }
        // SAFETY: `raw` came from `Box::into_raw` and is freed only here; a test that ends
        // normally has seen every request using it complete.
        drop(unsafe { Box::from_raw(self.raw) });
    }
}

/// Aborts the process if it is still armed after [`HANG`]: for calls with no timeout of
/// their own, so that a lost wake-up fails the suite instead of hanging it.
struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    fn new(what: &'static str) -> Watchdog {
        let (disarm, armed) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            if armed.recv_timeout(HANG) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!("{what}: still blocked after {HANG:?}; aborting the test process");
                std::process::abort();
            }
        });
        Watchdog {
            disarm: Some(disarm),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.disarm.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Pools hold this shared while they live; the test that counts pool threads holds it
/// exclusively, so that it sees its own pool's threads only.
static POOLS: RwLock<()> = RwLock::new(());

/// A pool whose drop (which joins its threads) runs under a watchdog.
struct TestPool {
    pool: Option<FilePool>,
    _shared: RwLockReadGuard<'static, ()>,
}

impl Deref for TestPool {
    type Target = FilePool;

    fn deref(&self) -> &FilePool {
        self.pool.as_ref().expect("live until drop")
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        let _watchdog = Watchdog::new("dropping a file pool");
        drop(self.pool.take());
    }
}

fn pool(threads: usize) -> TestPool {
    pool_from(FilePool::builder().threads(threads))
}

fn pool_from(builder: FilePoolBuilder) -> TestPool {
    let shared = POOLS.read().unwrap_or_else(PoisonError::into_inner);
    TestPool {
        pool: Some(builder.build().unwrap()),
        _shared: shared,
    }
}

/// Threads of file pools alive in this process (`iocp-file-<i>`).
fn pool_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with("iocp-file-"))
        })
        .count()
}

/// Waits (bounded) until `pool_threads()` is `n`; threads leave `/proc` a moment after
/// they are joined.
fn pool_threads_become(n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if pool_threads() == n {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Dequeues exactly `n` records with batched dequeues; fails after [`BULK_PATIENCE`].
fn collect(port: &Port, n: usize) -> Vec<Completion> {
    let deadline = Instant::now() + BULK_PATIENCE;
    let mut out = vec![Completion::default(); 256];
    let mut records = Vec::with_capacity(n);
    while records.len() < n {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .unwrap_or_else(|| {
                let last = &records[records.len().saturating_sub(4)..];
                panic!(
                    "only {} of {n} records after {BULK_PATIENCE:?}; the last: {last:?}",
                    records.len()
                )
            });
        let max = (n - records.len()).min(out.len());
        let drained = port.get_many(&mut out[..max], 1, Some(left)).unwrap();
        records.extend_from_slice(&out[..drained.count]);
    }
    records
}

/// Fails if `port` holds a record, after giving a stray one time to arrive.
fn assert_quiet(port: &Port) {
    thread::sleep(Duration::from_millis(30));
    let mut out = [Completion::default(); 8];
    let drained = port.get_many(&mut out, 0, None).unwrap();
    assert_eq!(
        drained.count,
        0,
        "unexpected records: {:?}",
        &out[..drained.count]
    );
}

/// The one record an owned-buffer request on `file` produces, and its result.
fn finish_one(port: &Port, file: &File, key: u64, ticket: u64) -> (Completion, OpResult) {
    let record = collect(port, 1)[0];
    assert_eq!(
        (record.key(), record.overlapped() as u64),
        (key, ticket),
        "{record:?}"
    );
    let done = file.finish(&record).unwrap();
    (record, done)
}

/// Keeps a pool thread busy: a large read of `/dev/zero`, queued by `lio_listio` without a
/// port, whose end shows through `aio_error`. Queued before the requests under test on a
/// one-thread pool, it keeps them queued (the pool runs jobs in submission order) for the
/// tens of milliseconds it takes.
struct Busy {
    zero: std::fs::File,
    buf: ManuallyDrop<Lent<[u8]>>,
    cb: ManuallyDrop<Lent<Aiocb>>,
}

impl Busy {
    fn new() -> Busy {
        let buf = Lent::zeroed(BUSY);
        // Fault the pages in once, so every read costs the same.
        buf.fill(1);
        Busy {
            zero: std::fs::File::open("/dev/zero").unwrap(),
            buf: ManuallyDrop::new(buf),
            cb: ManuallyDrop::new(Lent::new(Box::new(Aiocb::new(
                -1,
                LIO_NOP,
                0,
                std::ptr::null_mut(),
                0,
            )))),
        }
    }

    /// Starts a read of `len` bytes (at most [`BUSY`]); the previous one must be done.
    fn start(&mut self, pool: &FilePool, len: usize) {
        assert!(
            self.wait(BULK_PATIENCE),
            "the previous busy read never ended"
        );
        let cb = Aiocb::new(
            self.zero.as_raw_fd(),
            LIO_READ,
            0,
            self.buf.buf(),
            len.min(BUSY),
        );
        // SAFETY: no request uses the aiocb any more (waited above), so it may be rewritten.
        unsafe { self.cb.ptr().write(cb) };
        // SAFETY: the aiocb and its buffer stay allocated until the read is done (`Drop`
        // waits for it, and leaks them if it never ends).
        unsafe { pool.lio_listio(LioMode::NoWait, &[self.cb.ptr()]) }.unwrap();
    }

    fn running(&self) -> bool {
        self.cb.get().error() == libc::EINPROGRESS
    }

    /// Waits until the read is done; `false` if it is still running after `limit`.
    fn wait(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.running() {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_micros(200));
        }
        true
    }

    /// Waits for the read and checks that it succeeded.
    fn finish(&self) {
        assert!(self.wait(BULK_PATIENCE), "the busy read never ended");
        assert_eq!(self.cb.get().error(), 0);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.wait(BULK_PATIENCE) {
            // SAFETY: each is dropped once, here, and the read that used them is done.
            unsafe {
                ManuallyDrop::drop(&mut self.buf);
                ManuallyDrop::drop(&mut self.cb);
            }
        }
        // Otherwise both leak: a pool thread may still write them.
    }
}

/// One `lio_listio` entry to build: a request on `fd` with its own buffer holding `data`.
struct Entry<'a> {
    fd: RawFd,
    op: i32,
    offset: i64,
    data: Vec<u8>,
    port: Option<&'a Port>,
}

impl<'a> Entry<'a> {
    fn read(fd: RawFd, offset: usize, len: usize, port: Option<&'a Port>) -> Entry<'a> {
        Entry {
            fd,
            op: LIO_READ,
            offset: offset as i64,
            data: vec![0; len],
            port,
        }
    }

    fn write(fd: RawFd, offset: usize, data: Vec<u8>, port: Option<&'a Port>) -> Entry<'a> {
        Entry {
            fd,
            op: LIO_WRITE,
            offset: offset as i64,
            data,
            port,
        }
    }
}

/// Aiocbs and their buffers at fixed addresses, for as long as requests may use them.
struct Lio {
    cbs: Lent<[Aiocb]>,
    bufs: Vec<Lent<[u8]>>,
}

impl Lio {
    fn new(entries: Vec<Entry<'_>>) -> Lio {
        let bufs: Vec<Lent<[u8]>> = entries.iter().map(|e| Lent::bytes(&e.data)).collect();
        let cbs = entries
            .iter()
            .zip(&bufs)
            .map(|(entry, buf)| {
                let cb = Aiocb::new(entry.fd, entry.op, entry.offset, buf.buf(), buf.len());
                match entry.port {
                    Some(port) => cb.with_port(port),
                    None => cb,
                }
            })
            .collect::<Box<[Aiocb]>>();
        Lio {
            cbs: Lent::new(cbs),
            bufs,
        }
    }

    fn len(&self) -> usize {
        self.bufs.len()
    }

    fn cb(&self, i: usize) -> &Aiocb {
        &self.cbs.get()[i]
    }

    fn ptr(&self, i: usize) -> *mut Aiocb {
        self.cbs.at(i)
    }

    /// Every entry, in order.
    fn list(&self) -> Vec<*mut Aiocb> {
        (0..self.len()).map(|i| self.ptr(i)).collect()
    }

    /// Entry `i`'s buffer; only once its request is done.
    fn buf(&self, i: usize) -> &[u8] {
        self.bufs[i].get()
    }

    /// The entry a record's `overlapped` names.
    fn index_of(&self, record: &Completion) -> usize {
        (0..self.len())
            .find(|&i| self.ptr(i) as usize == record.overlapped())
            .unwrap_or_else(|| panic!("record names no aiocb of the list: {record:?}"))
    }

    /// Changes entry `i` before it is submitted.
    fn edit(&mut self, i: usize, change: impl FnOnce(&mut Aiocb)) {
        // SAFETY: `&mut self` and the caller's promise: no request uses the aiocb now.
        change(unsafe { &mut *self.ptr(i) });
    }

    /// Rewrites entry `i` (and zeroes its buffer) while no request uses it.
    fn reset(&self, i: usize, fd: RawFd, op: i32, offset: usize, port: &Port) {
        self.bufs[i].fill(0);
        let cb = Aiocb::new(
            fd,
            op,
            offset as i64,
            self.bufs[i].buf(),
            self.bufs[i].len(),
        )
        .with_port(port);
        // SAFETY: no request uses the aiocb now (the caller's promise).
        unsafe { self.ptr(i).write(cb) };
    }
}

/// `aio_error` and `aio_return` of an aiocb, in one value to compare.
fn aio_state(cb: &Aiocb) -> (i32, isize) {
    let result = match cb.result() {
        Ok(n) => n,
        Err(err) => panic!("aio_return failed ({err}) for a request that is not in flight"),
    };
    (cb.error(), result)
}

// ---------------------------------------------------------------------------------------
// Owned-buffer requests

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Write,
    Read,
}

#[derive(Clone, Copy, Debug)]
struct Region {
    file: usize,
    offset: u64,
    len: usize,
    seed: u64,
}

const PARALLEL_FILES: usize = 2;
const PARALLEL_SUBMITTERS: usize = 4;
const PARALLEL_KEY: u64 = 100;

/// Several threads submit `phase` for every region (in a shuffled order) while one thread
/// drains the port with `get_many`; each request must come back exactly once, whole.
fn run_phase(files: &[File], port: &Port, regions: &[Region], phase: Phase, seed: u64) {
    let mut order: Vec<usize> = (0..regions.len()).collect();
    Rng::new(seed).shuffle(&mut order);
    let syncs = if phase == Phase::Write {
        2 * PARALLEL_SUBMITTERS
    } else {
        0
    };
    let expected = regions.len() + syncs;
    let (done, submitted) = thread::scope(|s| {
        let drainer = s.spawn(|| {
            let mut done = HashMap::new();
            for record in collect(port, expected) {
                let f = record.key().wrapping_sub(PARALLEL_KEY) as usize;
                assert!(f < files.len(), "record with an unknown key: {record:?}");
                let result = files[f].finish(&record).unwrap_or_else(|err| {
                    panic!("{record:?} is no unfinished request of its file: {err}")
                });
                let id = (record.key(), record.overlapped() as u64);
                assert!(
                    done.insert(id, (record, result)).is_none(),
                    "two records for {id:?}"
                );
            }
            done
        });
        let submitters: Vec<_> = (0..PARALLEL_SUBMITTERS)
            .map(|t| {
                let order = &order;
                s.spawn(move || {
                    let mut tickets = Vec::new();
                    for &i in order.iter().skip(t).step_by(PARALLEL_SUBMITTERS) {
                        let region = regions[i];
                        let file = &files[region.file];
                        let ticket = match phase {
                            Phase::Write => {
                                file.write_at(pattern(region.seed, region.len), region.offset)
                            }
                            Phase::Read => file.read_at(vec![0; region.len], region.offset),
                        }
                        .unwrap();
                        tickets.push((region.file, ticket, Some(i)));
                    }
                    if phase == Phase::Write {
                        let f = t % files.len();
                        tickets.push((f, files[f].sync_all().unwrap(), None));
                        tickets.push((f, files[f].sync_data().unwrap(), None));
                    }
                    tickets
                })
            })
            .collect();
        let submitted: Vec<_> = submitters
            .into_iter()
            .flat_map(|submitter| submitter.join().unwrap())
            .collect();
        (drainer.join().unwrap(), submitted)
    });
    let mut done = done;
    assert_eq!(submitted.len(), expected);
    for (f, ticket, region) in submitted {
        let key = PARALLEL_KEY + f as u64;
        let (record, result) = done
            .remove(&(key, ticket))
            .unwrap_or_else(|| panic!("no record for ticket {ticket} of file {f}"));
        match region {
            None => {
                assert_eq!(record.result().unwrap(), 0, "a sync carries no bytes");
                assert_eq!(result.result.unwrap(), 0);
                assert!(result.buf.is_empty());
            }
            Some(i) => {
                let region = regions[i];
                assert_eq!(record.result().unwrap(), region.len as u32, "{region:?}");
                assert_eq!(result.result.unwrap(), region.len, "{region:?}");
                assert!(
                    result.buf == pattern(region.seed, region.len),
                    "{phase:?} of {region:?}: the buffer that came back holds other bytes"
                );
            }
        }
    }
    assert!(done.is_empty(), "records for no request: {:?}", done.keys());
}

#[test]
fn writes_then_reads_at_random_offsets_from_several_threads_each_complete_exactly_once() {
    const REGIONS: usize = 160;
    const SLOT: u64 = 8192;
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-parallel");
    let files: Vec<File> = (0..PARALLEL_FILES)
        .map(|f| {
            let file = scratch.file(&format!("data{f}"), &[]);
            port.associate_file(file, PARALLEL_KEY + f as u64, &pool)
                .unwrap()
        })
        .collect();
    // Non-overlapping regions at random offsets (random gaps and lengths, unaligned).
    let mut rng = Rng::new(1);
    let mut regions = Vec::new();
    for file in 0..PARALLEL_FILES {
        for r in 0..REGIONS {
            let jitter = rng.below(4096) as u64;
            regions.push(Region {
                file,
                offset: r as u64 * SLOT + jitter,
                len: 1 + rng.below(4096),
                seed: (file * REGIONS + r) as u64 + 1,
            });
        }
    }
    run_phase(&files, &port, &regions, Phase::Write, 2);
    run_phase(&files, &port, &regions, Phase::Read, 3);
    assert_quiet(&port);
    // The bytes are where they belong, as a plain read of the files sees them.
    let contents: Vec<Vec<u8>> = (0..PARALLEL_FILES)
        .map(|f| std::fs::read(scratch.path(&format!("data{f}"))).unwrap())
        .collect();
    for region in &regions {
        let at = region.offset as usize;
        assert!(contents[region.file][at..at + region.len] == pattern(region.seed, region.len));
    }
}

#[test]
fn reads_at_end_of_file_complete_short_with_the_bytes_read() {
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-eof");
    let data = pattern(7, 10_000);
    let file = port
        .associate_file(scratch.file("data", &data), 5, &pool)
        .unwrap();
    // (offset, buffer, bytes that exist there)
    let cases = [
        (8192, 4096, 1808),
        (9_999, 10, 1),
        (10_000, 4096, 0),
        (1 << 40, 16, 0),
        (0, 20_000, 10_000),
    ];
    for (offset, len, available) in cases {
        let ticket = file.read_at(vec![0xaa; len], offset).unwrap();
        let (record, done) = finish_one(&port, &file, 5, ticket);
        assert_eq!(record.result().unwrap(), available as u32, "at {offset}");
        assert_eq!(done.result.unwrap(), available, "at {offset}");
        assert_eq!(done.buf.len(), len, "the whole buffer comes back");
        let at = offset as usize;
        if available > 0 {
            assert!(done.buf[..available] == data[at..at + available]);
        }
        assert!(
            done.buf[available..].iter().all(|&b| b == 0xaa),
            "bytes past the end are left alone"
        );
    }

    // The overlapped form: `InternalHigh` and the record say how much came.
    let overlapped = Lent::new(Box::new(Overlapped::new()));
    overlapped.get().set_offset(9_000);
    let buf = Lent::zeroed(4096);
    // SAFETY: the buffer and block stay allocated until the record is dequeued below.
    unsafe { file.read_overlapped(buf.buf(), buf.len(), overlapped.ptr()) }.unwrap();
    let record = collect(&port, 1)[0];
    assert_eq!(record.overlapped(), address(overlapped.get()));
    assert_eq!(record.result().unwrap(), 1000);
    assert_eq!(overlapped.get().get_result(false).unwrap(), 1000);
    assert!(buf.get()[..1000] == data[9_000..]);

    // lio_listio: aio_return is the short count.
    let lio = Lio::new(vec![
        Entry::read(file.raw_fd(), 9_990, 100, None),
        Entry::read(file.raw_fd(), 10_000, 100, None),
    ]);
    {
        let _watchdog = Watchdog::new("LIO_WAIT at end of file");
        // SAFETY: `lio` outlives the call, which returns once both requests are done.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }.unwrap();
    }
    assert_eq!(aio_state(lio.cb(0)), (0, 10));
    assert_eq!(aio_state(lio.cb(1)), (0, 0));
    assert!(lio.buf(0)[..10] == data[9_990..]);

    // The synchronous form.
    let mut buf = [0u8; 4096];
    assert_eq!(file.read_at_blocking(&mut buf, 9_500).unwrap(), 500);
    assert!(buf[..500] == data[9_500..]);
    assert_eq!(file.read_at_blocking(&mut buf, 10_000).unwrap(), 0);
    assert_quiet(&port);
}

#[test]
fn transfers_larger_than_a_mebibyte_complete_whole_in_one_request() {
    const LEN: usize = 3 * MIB + 123;
    const MORE: usize = 2 * MIB + 7;
    const LIO: usize = 3 * MIB / 2;
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-large");
    let file = port
        .associate_file(scratch.file("data", &[]), 3, &pool)
        .unwrap();

    // Owned buffers.
    let data = pattern(11, LEN);
    let ticket = file.write_at(data.clone(), 0).unwrap();
    let (record, done) = finish_one(&port, &file, 3, ticket);
    assert_eq!(record.result().unwrap(), LEN as u32);
    assert_eq!(done.result.unwrap(), LEN);
    let ticket = file.read_at(vec![0; 4 * MIB], 0).unwrap();
    let (record, done) = finish_one(&port, &file, 3, ticket);
    assert_eq!(record.result().unwrap(), LEN as u32);
    assert!(done.buf[..LEN] == data[..], "3 MiB read back");

    // Overlapped: append 2 MiB, read it back.
    let more = pattern(12, MORE);
    let source = Lent::bytes(&more);
    let sink = Lent::zeroed(MORE);
    let block = Lent::new(Box::new(Overlapped::new()));
    block.get().set_offset(LEN as u64);
    // SAFETY: buffer and block stay allocated until the record is dequeued below.
    unsafe { file.write_overlapped(source.buf(), MORE, block.ptr()) }.unwrap();
    assert_eq!(collect(&port, 1)[0].result().unwrap(), MORE as u32);
    // SAFETY: as above.
    unsafe { file.read_overlapped(sink.buf(), MORE, block.ptr()) }.unwrap();
    assert_eq!(collect(&port, 1)[0].result().unwrap(), MORE as u32);
    assert!(sink.get() == &more[..], "2 MiB overlapped read back");

    // lio_listio: a 1.5 MiB read and a 1.5 MiB write in one list.
    let tail = pattern(13, LIO);
    let fd = file.raw_fd();
    let lio = Lio::new(vec![
        Entry::read(fd, 1000, LIO, None),
        Entry::write(fd, LEN + MORE, tail.clone(), None),
    ]);
    {
        let _watchdog = Watchdog::new("LIO_WAIT of large transfers");
        // SAFETY: `lio` outlives the call, which returns once both requests are done.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }.unwrap();
    }
    assert_eq!(aio_state(lio.cb(0)), (0, LIO as isize));
    assert_eq!(aio_state(lio.cb(1)), (0, LIO as isize));
    assert!(lio.buf(0) == &data[1000..1000 + LIO]);

    let all = std::fs::read(scratch.path("data")).unwrap();
    assert_eq!(all.len(), LEN + MORE + LIO);
    assert!(all[..LEN] == data[..]);
    assert!(all[LEN..LEN + MORE] == more[..]);
    assert!(all[LEN + MORE..] == tail[..]);
    assert_quiet(&port);
}

#[test]
fn owned_requests_on_an_unassociated_file_fail_with_enotconn() {
    let pool = pool(1);
    let scratch = TempDir::new("file-enotconn");
    let file = pool.open(scratch.file("data", b"hello world")).unwrap();
    assert_eq!(errno(file.read_at(vec![0; 5], 0)), libc::ENOTCONN);
    assert_eq!(errno(file.write_at(b"HELLO".to_vec(), 0)), libc::ENOTCONN);
    assert_eq!(errno(file.sync_all()), libc::ENOTCONN);
    assert_eq!(errno(file.sync_data()), libc::ENOTCONN);
    // Nothing was queued, and nothing was written.
    assert_eq!(errno(file.cancel_all()), libc::ENOENT);
    assert_eq!(std::fs::read(scratch.path("data")).unwrap(), b"hello world");
    // The synchronous form needs no port.
    let mut buf = [0u8; 5];
    assert_eq!(file.read_at_blocking(&mut buf, 6).unwrap(), 5);
    assert_eq!(&buf, b"world");

    // Once associated, the same requests work.
    let port = Port::new().unwrap();
    file.associate(&port, 3).unwrap();
    let ticket = file.read_at(vec![0; 5], 0).unwrap();
    let (_, done) = finish_one(&port, &file, 3, ticket);
    assert_eq!(done.result.unwrap(), 5);
    assert_eq!(done.buf, b"hello");
}

#[test]
fn a_second_association_fails_with_ealready_and_the_first_stays() {
    let pool = pool(1);
    let scratch = TempDir::new("file-ealready");
    let first = Port::new().unwrap();
    let second = Port::new().unwrap();
    let file = first
        .associate_file(scratch.file("data", b"0123456789"), 1, &pool)
        .unwrap();
    assert_eq!(errno(file.associate(&second, 2)), libc::EALREADY);
    assert_eq!(errno(file.associate(&first, 1)), libc::EALREADY);
    assert_eq!(errno(file.associate(&first, 9)), libc::EALREADY);

    // A file opened on the pool and associated by hand follows the same rule.
    let other = pool.open(scratch.open("data")).unwrap();
    other.associate(&second, 7).unwrap();
    assert_eq!(errno(other.associate(&first, 8)), libc::EALREADY);

    // Records still go to the first association.
    let ticket = file.read_at(vec![0; 4], 2).unwrap();
    let (_, done) = finish_one(&first, &file, 1, ticket);
    assert_eq!(done.buf, b"2345");
    let ticket = other.read_at(vec![0; 2], 8).unwrap();
    let (_, done) = finish_one(&second, &other, 7, ticket);
    assert_eq!(done.buf, b"89");
    assert_quiet(&first);
    assert_quiet(&second);
}

#[test]
fn the_synchronous_form_transfers_on_the_calling_thread_and_posts_nothing() {
    let pool = pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-sync");
    let file = port
        .associate_file(scratch.file("data", &[]), 4, &pool)
        .unwrap();
    let data = pattern(17, 3 * MIB);
    assert_eq!(file.write_at_blocking(&data, 100).unwrap(), data.len());
    let mut back = vec![0u8; 4 * MIB];
    assert_eq!(
        file.read_at_blocking(&mut back, 100).unwrap(),
        data.len(),
        "a short read at the end of the file"
    );
    assert!(back[..data.len()] == data[..]);
    assert_eq!(file.read_at_blocking(&mut back[..10], 0).unwrap(), 10);
    assert!(
        back[..10].iter().all(|&b| b == 0),
        "the hole before offset 100"
    );
    assert_eq!(file.read_at_blocking(&mut back, 1 << 40).unwrap(), 0);
    // Offsets that do not fit `off_t` are refused.
    assert_eq!(
        errno(file.read_at_blocking(&mut back, u64::MAX)),
        libc::EINVAL
    );
    assert_eq!(
        errno(file.write_at_blocking(&data, i64::MAX as u64 + 1)),
        libc::EINVAL
    );
    // The kernel's errors come straight back.
    let read_only = pool.open(scratch.read_only("ro", b"read only")).unwrap();
    assert_eq!(errno(read_only.write_at_blocking(b"x", 0)), libc::EBADF);
    assert_quiet(&port);
}

#[test]
fn a_request_the_kernel_rejects_completes_with_its_errno_and_returns_the_buffer() {
    let pool = pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-kernel-errors");
    let read_only = port
        .associate_file(scratch.read_only("ro", b"read only"), 1, &pool)
        .unwrap();
    let data = pattern(19, 1000);
    let ticket = read_only.write_at(data.clone(), 0).unwrap();
    let (record, done) = finish_one(&port, &read_only, 1, ticket);
    assert_eq!(record.error(), libc::EBADF as u32);
    assert_eq!(errno(done.result), libc::EBADF);
    assert_eq!(done.buf, data, "the buffer comes back intact");

    let directory = std::fs::File::open(scratch.path("")).unwrap();
    let directory = port.associate_file(directory, 2, &pool).unwrap();
    let ticket = directory.read_at(vec![0; 16], 0).unwrap();
    let (record, done) = finish_one(&port, &directory, 2, ticket);
    assert_eq!(record.error(), libc::EISDIR as u32);
    assert_eq!(errno(done.result), libc::EISDIR);
    assert_eq!(done.buf, vec![0; 16]);

    // Offsets beyond `off_t` are refused at submission, and nothing is queued.
    assert_eq!(errno(read_only.read_at(vec![0; 4], u64::MAX)), libc::EINVAL);
    assert_quiet(&port);
}

// ---------------------------------------------------------------------------------------
// Overlapped requests

#[test]
fn overlapped_requests_post_their_block_address_under_the_file_key() {
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-overlapped");
    let data = pattern(23, 16 * KIB);
    let file = port
        .associate_file(scratch.file("data", &data), 42, &pool)
        .unwrap();
    // With a port the record is the report; the event (if any) is left alone.
    let event = Event::new(true, false).unwrap();
    let blocks = Lent::new(
        (0..4)
            .map(|_| Overlapped::with_event(&event))
            .collect::<Box<[_]>>(),
    );
    let bufs: Vec<Lent<[u8]>> = (0..4).map(|_| Lent::zeroed(3000)).collect();
    let written = pattern(24, 3000);
    for (i, buf) in bufs.iter().enumerate() {
        let block = &blocks.get()[i];
        block.set_offset(i as u64 * 4000);
        if i == 3 {
            // SAFETY: nothing else uses the buffer before its request.
            unsafe { std::ptr::copy_nonoverlapping(written.as_ptr(), buf.buf(), 3000) };
            block.set_offset(16 * KIB as u64);
            // SAFETY: buffer and block stay allocated until the records are dequeued below.
            unsafe { file.write_overlapped(buf.buf(), 3000, blocks.at(i)) }.unwrap();
        } else {
            // SAFETY: as above.
            unsafe { file.read_overlapped(buf.buf(), 3000, blocks.at(i)) }.unwrap();
        }
        assert_eq!(
            words(block)[4].load(Ordering::Relaxed),
            event.handle() as u32
        );
    }
    let mut seen = HashSet::new();
    for record in collect(&port, 4) {
        let i = (0..4)
            .find(|&i| address(&blocks.get()[i]) == record.overlapped())
            .unwrap_or_else(|| panic!("record names no block: {record:?}"));
        assert!(seen.insert(i), "two records for block {i}");
        assert_eq!((record.key(), record.result().unwrap()), (42, 3000));
        let block = &blocks.get()[i];
        assert!(block.is_complete());
        assert_eq!(block.get_result(false).unwrap(), 3000);
        assert_eq!(block.bytes(), 3000);
        assert_eq!(
            words(block)[0].load(Ordering::Acquire),
            0,
            "Internal = success"
        );
        assert_eq!(
            words(block)[1].load(Ordering::Acquire),
            3000,
            "InternalHigh"
        );
        if i < 3 {
            let at = i * 4000;
            assert!(bufs[i].get() == &data[at..at + 3000]);
        }
    }
    assert!(
        !event.is_set(),
        "a file with a port reports through the port only"
    );
    let mut back = vec![0u8; 3000];
    file.read_at_blocking(&mut back, 16 * KIB as u64).unwrap();
    assert_eq!(back, written);

    // An offset beyond `off_t` is refused at once and the block is not left pending.
    let block = Lent::new(Box::new(Overlapped::new()));
    block.get().set_offset(u64::MAX);
    // SAFETY: the request is refused synchronously; nothing keeps the pointers.
    let refused = unsafe { file.read_overlapped(bufs[0].buf(), 16, block.ptr()) };
    assert_eq!(errno(refused), libc::EINVAL);
    assert_ne!(
        words(block.get())[0].load(Ordering::Acquire),
        STATUS_PENDING
    );
    assert_eq!(
        errno(file.cancel_overlapped(block.ptr())),
        libc::ENOENT,
        "nothing is queued"
    );
    assert_quiet(&port);
}

#[test]
fn overlapped_offsets_above_4_gib_are_split_across_offset_and_offset_high() {
    const FAR: u64 = 5 << 30;
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-far");
    let file = port
        .associate_file(scratch.file("sparse", &[]), 8, &pool)
        .unwrap();
    match file.write_at_blocking(b"far away", FAR) {
        Ok(8) => {}
        other => {
            eprintln!("skipped: the filesystem refuses a sparse file reaching 5 GiB: {other:?}");
            return;
        }
    }

    // Offset and OffsetHigh written in place, as a C caller fills its OVERLAPPED.
    let block = Lent::new(Box::new(Overlapped::new()));
    let w = words(block.get());
    w[2].store(FAR as u32, Ordering::Relaxed);
    w[3].store((FAR >> 32) as u32, Ordering::Relaxed);
    assert_eq!(block.get().offset(), FAR);
    let buf = Lent::zeroed(8);
    // SAFETY: buffer and block stay allocated until the record is dequeued below.
    unsafe { file.read_overlapped(buf.buf(), 8, block.ptr()) }.unwrap();
    let record = collect(&port, 1)[0];
    assert_eq!(record.overlapped(), address(block.get()));
    assert_eq!(record.result().unwrap(), 8);
    assert_eq!(buf.get(), b"far away");

    // `set_offset` fills both words; a write lands at the full 64-bit offset.
    let target = FAR + 4096 + 3;
    block.get().set_offset(target);
    assert_eq!(w[2].load(Ordering::Relaxed), target as u32);
    assert_eq!(w[3].load(Ordering::Relaxed), (target >> 32) as u32);
    let source = Lent::bytes(b"beyond 4 GiB");
    // SAFETY: as above.
    unsafe { file.write_overlapped(source.buf(), source.len(), block.ptr()) }.unwrap();
    assert_eq!(collect(&port, 1)[0].result().unwrap(), 12);
    let mut back = [0u8; 12];
    assert_eq!(file.read_at_blocking(&mut back, target).unwrap(), 12);
    assert_eq!(&back, b"beyond 4 GiB");
    // Not at the offset truncated to its low word (a hole, all zeros).
    assert_eq!(
        file.read_at_blocking(&mut back, target as u32 as u64)
            .unwrap(),
        12
    );
    assert_eq!(
        back, [0; 12],
        "the write went to Offset alone, OffsetHigh ignored"
    );

    // OffsetHigh alone (Offset 0): exactly 4 GiB, a hole.
    block.get().set_offset(1 << 32);
    let zeros = Lent::bytes(&[0xff; 8]);
    // SAFETY: as above.
    unsafe { file.read_overlapped(zeros.buf(), 8, block.ptr()) }.unwrap();
    assert_eq!(collect(&port, 1)[0].result().unwrap(), 8);
    assert_eq!(zeros.get(), &[0; 8]);

    // lio_listio takes a 64-bit aio_offset.
    let lio = Lio::new(vec![Entry::read(file.raw_fd(), FAR as usize, 8, None)]);
    {
        let _watchdog = Watchdog::new("LIO_WAIT above 4 GiB");
        // SAFETY: `lio` outlives the call, which returns once the request is done.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }.unwrap();
    }
    assert_eq!(aio_state(lio.cb(0)), (0, 8));
    assert_eq!(lio.buf(0), b"far away");
    assert_quiet(&port);
}

#[test]
fn overlapped_requests_on_an_unassociated_file_complete_through_their_event() {
    let pool = pool(2);
    let scratch = TempDir::new("file-event");
    let data = pattern(21, 6000);
    let file = pool.open(scratch.file("data", &data)).unwrap();

    // A manual-reset event, a read.
    let manual = Event::new(true, false).unwrap();
    let block = Lent::new(Box::new(Overlapped::with_event(&manual)));
    block.get().set_offset(1000);
    let buf = Lent::zeroed(3000);
    // SAFETY: buffer and block stay allocated until the event says the request is done.
    unsafe { file.read_overlapped(buf.buf(), 3000, block.ptr()) }.unwrap();
    manual.wait(Some(BULK_PATIENCE)).unwrap();
    assert!(manual.is_set(), "a manual-reset event stays set");
    assert!(block.get().is_complete());
    assert_eq!(block.get().get_result(false).unwrap(), 3000);
    assert!(buf.get() == &data[1000..4000]);

    // An auto-reset event, a write at the end.
    let auto = Event::new(false, false).unwrap();
    let block = Lent::new(Box::new(Overlapped::with_event(&auto)));
    block.get().set_offset(6000);
    let more = pattern(22, 500);
    let source = Lent::bytes(&more);
    // SAFETY: as above.
    unsafe { file.write_overlapped(source.buf(), 500, block.ptr()) }.unwrap();
    auto.wait(Some(BULK_PATIENCE)).unwrap();
    assert!(!auto.is_set(), "the wait consumed the auto-reset signal");
    assert_eq!(block.get().get_result(false).unwrap(), 500);
    let mut back = vec![0u8; 500];
    file.read_at_blocking(&mut back, 6000).unwrap();
    assert_eq!(back, more);

    // A failure is reported through the event too.
    let read_only = pool.open(scratch.read_only("ro", b"read only")).unwrap();
    let failing = Event::new(true, false).unwrap();
    let block = Lent::new(Box::new(Overlapped::with_event(&failing)));
    // SAFETY: as above.
    unsafe { read_only.write_overlapped(source.buf(), 500, block.ptr()) }.unwrap();
    failing.wait(Some(BULK_PATIENCE)).unwrap();
    assert_eq!(errno(block.get().get_result(false)), libc::EBADF);

    // No event at all: GetOverlappedResult waits on the block itself.
    let block = Lent::new(Box::new(Overlapped::new()));
    block.get().set_offset(10);
    let buf = Lent::zeroed(20);
    // SAFETY: as above; `get_result(true)` returns once the request is done.
    unsafe { file.read_overlapped(buf.buf(), 20, block.ptr()) }.unwrap();
    let bytes = {
        let _watchdog = Watchdog::new("GetOverlappedResult with wait");
        block.get().get_result(true).unwrap()
    };
    assert_eq!(bytes, 20);
    assert!(buf.get() == &data[10..30]);
}

// ---------------------------------------------------------------------------------------
// lio_listio

/// Reads of the data file's first half interleaved with writes past its end, all naming
/// `port`.
fn mixed_entries(fd: RawFd, data_len: usize, n: usize, port: &Port) -> Vec<Entry<'_>> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                Entry::read(fd, i * 2048, 4096, Some(port))
            } else {
                Entry::write(
                    fd,
                    data_len + i * 3000,
                    pattern(100 + i as u64, 3000),
                    Some(port),
                )
            }
        })
        .collect()
}

/// Entry `i` of `mixed_entries` did what it should: read the right bytes or wrote its own.
fn check_mixed(lio: &Lio, i: usize, data: &[u8], file: &[u8]) {
    let cb = lio.cb(i);
    let at = cb.aio_offset as usize;
    match cb.aio_lio_opcode {
        LIO_READ => assert!(lio.buf(i) == &data[at..at + 4096], "read {i}"),
        _ => assert!(file[at..at + 3000] == *lio.buf(i), "write {i}"),
    }
}

#[test]
fn lio_wait_returns_with_every_request_done_and_posts_no_record() {
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-wait");
    let data = pattern(31, 64 * KIB);
    let file = scratch.file("data", &data);
    let lio = Lio::new(mixed_entries(file.as_raw_fd(), data.len(), 16, &port));
    {
        let _watchdog = Watchdog::new("LIO_WAIT");
        // SAFETY: `lio` outlives the call, which returns once every request is done.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }.unwrap();
    }
    let contents = std::fs::read(scratch.path("data")).unwrap();
    for i in 0..lio.len() {
        let expected = if i % 2 == 0 { 4096 } else { 3000 };
        assert_eq!(aio_state(lio.cb(i)), (0, expected), "entry {i}");
        check_mixed(&lio, i, &data, &contents);
    }
    assert_quiet(&port);
}

#[test]
fn lio_nowait_returns_at_once_and_reports_through_aiocbs_and_records_keyed_zero() {
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-nowait");
    let data = pattern(41, 64 * KIB);
    let file = scratch.file("data", &data);
    let lio = Lio::new(mixed_entries(file.as_raw_fd(), data.len(), 12, &port));

    busy.start(&pool, BUSY);
    // SAFETY: `lio` outlives every request: all records are dequeued below.
    unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
    let states: Vec<i32> = (0..lio.len()).map(|i| lio.cb(i).error()).collect();
    let last_result = lio.cb(lio.len() - 1).result();
    let busy_still_running = busy.running();
    for (i, &state) in states.iter().enumerate() {
        assert!(
            state == libc::EINPROGRESS || state == 0,
            "entry {i}: aio_error {state}"
        );
    }
    if busy_still_running {
        // The pool's only thread was still on the busy read, ahead of the whole list.
        assert!(
            states.iter().all(|&s| s == libc::EINPROGRESS),
            "requests reported done before they could run: {states:?}"
        );
        assert_eq!(
            errno(last_result),
            libc::EINVAL,
            "aio_return while in flight"
        );
    } else {
        eprintln!("note: the busy read ended before the list could be seen in progress");
    }

    let mut seen = HashSet::new();
    for record in collect(&port, lio.len()) {
        let i = lio.index_of(&record);
        assert!(seen.insert(i), "two records for entry {i}");
        let expected = if i % 2 == 0 { 4096 } else { 3000 };
        assert_eq!(record.key(), 0, "lio records carry key 0");
        assert_eq!(record.result().unwrap(), expected as u32);
        // The aiocb is updated before its record is posted.
        assert_eq!(aio_state(lio.cb(i)), (0, expected as isize), "entry {i}");
    }
    let contents = std::fs::read(scratch.path("data")).unwrap();
    for i in 0..lio.len() {
        check_mixed(&lio, i, &data, &contents);
    }
    busy.finish();
    assert_quiet(&port);
}

#[test]
fn lio_nowait_gmcs_leaves_aiocbs_untouched_and_reports_through_records_only() {
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-gmcs");
    let data = pattern(43, 64 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let short = scratch.file("short", &data[..1000]);
    let mut entries = mixed_entries(fd, data.len(), 12, &port);
    // And a read at the end of a file: its record carries the short count.
    entries.push(Entry::read(short.as_raw_fd(), 900, 4096, Some(&port)));
    let lio = Lio::new(entries);
    let untouched: Vec<_> = (0..lio.len()).map(|i| aio_state(lio.cb(i))).collect();
    assert!(untouched.iter().all(|&state| state == (0, 0)));

    busy.start(&pool, BUSY);
    // SAFETY: `lio` outlives every request: all records are dequeued below.
    unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &lio.list()) }.unwrap();
    for i in 0..lio.len() {
        assert_eq!(
            lio.cb(i).error(),
            0,
            "entry {i}: GMCS mode never marks EINPROGRESS"
        );
    }
    let mut seen = HashSet::new();
    for record in collect(&port, lio.len()) {
        let i = lio.index_of(&record);
        assert!(seen.insert(i), "two records for entry {i}");
        let expected = match i {
            12 => 100,
            _ if i % 2 == 0 => 4096,
            _ => 3000,
        };
        assert_eq!(record.key(), 0, "the key is unused in GMCS mode");
        assert_eq!(record.result().unwrap(), expected, "entry {i}");
    }
    for (i, &before) in untouched.iter().enumerate() {
        assert_eq!(
            aio_state(lio.cb(i)),
            before,
            "entry {i}: the aiocb was touched"
        );
    }
    let contents = std::fs::read(scratch.path("data")).unwrap();
    for i in 0..12 {
        check_mixed(&lio, i, &data, &contents);
    }
    assert!(lio.buf(12)[..100] == data[900..1000]);
    busy.finish();
    assert_quiet(&port);
}

/// What one entry of [`bad_list`] must come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// A good request: reads or writes its bytes.
    Good(usize),
    /// A good request naming no port.
    GoodNoPort(usize),
    /// Refused with this errno; the entry names a live port.
    Refused(i32),
    /// Refused with this errno for its port (bad or missing), so in every mode only the
    /// aiocb can say so.
    BadPort(i32),
    /// `LIO_NOP`: skipped.
    Nop,
}

/// A list mixing good requests with every kind of entry `lio_listio` must refuse on its
/// own, and NULL entries.
struct BadList {
    lio: Lio,
    fates: Vec<Fate>,
    list: Vec<*mut Aiocb>,
    _event: Event,
}

fn bad_list(fd: RawFd, data_len: usize, port: &Port) -> BadList {
    let event = Event::new(true, false).unwrap();
    let p = Some(port);
    let mut entries = Vec::new();
    let mut fates = Vec::new();
    let mut add = |entry, fate| {
        entries.push(entry);
        fates.push(fate);
    };
    add(Entry::read(fd, 0, 4096, p), Fate::Good(4096));
    add(Entry::read(-1, 0, 16, p), Fate::Refused(libc::EBADF));
    add(
        Entry::write(fd, data_len, pattern(61, 2000), p),
        Fate::Good(2000),
    );
    add(Entry::read(i32::MAX, 0, 16, p), Fate::Refused(libc::EBADF));
    add(Entry::read(fd, 0, 16, p), Fate::Refused(libc::EINVAL)); // negative offset (below)
    add(Entry::read(fd, 5000, 1000, p), Fate::Good(1000));
    add(Entry::read(fd, 0, 16, p), Fate::Refused(libc::EINVAL)); // nbytes > 2^31 - 1
    add(Entry::read(fd, 0, 16, p), Fate::Refused(libc::EINVAL)); // unknown opcode
    add(Entry::read(fd, 0, 16, p), Fate::Refused(libc::EINVAL)); // NULL buffer
    add(Entry::read(fd, 0, 16, None), Fate::BadPort(libc::EBADF)); // aio_iocpfd -1
    add(Entry::read(fd, 0, 16, None), Fate::BadPort(libc::EBADF)); // an event's handle
    add(Entry::read(fd, 0, 16, p), Fate::Nop);
    add(Entry::read(fd, 100, 512, None), Fate::GoodNoPort(512));
    add(
        Entry::write(fd, data_len + 4096, pattern(62, 777), p),
        Fate::Good(777),
    );
    let mut lio = Lio::new(entries);
    lio.edit(4, |cb| cb.aio_offset = -4096);
    lio.edit(6, |cb| cb.aio_nbytes = MAX_TRANSFER + 1);
    lio.edit(7, |cb| cb.aio_lio_opcode = 7);
    lio.edit(8, |cb| cb.aio_buf = std::ptr::null_mut());
    lio.edit(9, |cb| {
        cb.aio_flag = AIO_EXTENDED;
        cb.aio_iocpfd = -1;
    });
    lio.edit(10, |cb| {
        cb.aio_flag = AIO_EXTENDED;
        cb.aio_iocpfd = event.handle();
    });
    lio.edit(11, |cb| cb.aio_lio_opcode = LIO_NOP);
    // NULL entries between the others.
    let mut list = Vec::new();
    for i in 0..lio.len() {
        if i % 4 == 0 {
            list.push(std::ptr::null_mut());
        }
        list.push(lio.ptr(i));
    }
    list.push(std::ptr::null_mut());
    BadList {
        lio,
        fates,
        list,
        _event: event,
    }
}

/// Submits [`bad_list`] in `mode` and checks every entry's fate.
fn lio_refuses_bad_entries_alone(mode: LioMode) {
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-bad");
    let data = pattern(63, 64 * KIB);
    let file = scratch.file("data", &data);
    let bad = bad_list(file.as_raw_fd(), data.len(), &port);
    let lio = &bad.lio;
    let returned = {
        let _watchdog = Watchdog::new("lio_listio with bad entries");
        // SAFETY: the aiocbs and buffers outlive every request: Wait returns once they are
        // done, and in the other modes every record is dequeued and every aiocb polled below.
        unsafe { pool.lio_listio(mode, &bad.list) }
    };
    assert_eq!(errno(returned), libc::EIO, "{mode:?}");

    // Which entries report through a record.
    let posts = |fate: Fate| match (mode, fate) {
        (LioMode::Wait, _) => false,
        (_, Fate::Good(_)) => true,
        (LioMode::NoWaitGmcs, Fate::Refused(_)) => true,
        _ => false,
    };
    let expected_records = bad.fates.iter().filter(|&&fate| posts(fate)).count();
    let mut recorded = HashMap::new();
    for record in collect(&port, expected_records) {
        let i = lio.index_of(&record);
        assert!(posts(bad.fates[i]), "{mode:?}: entry {i} posted {record:?}");
        assert_eq!(record.key(), 0);
        assert!(
            recorded.insert(i, record).is_none(),
            "two records for entry {i}"
        );
    }
    // Requests without a record (GoodNoPort in NoWait mode) report through their aiocb.
    let deadline = Instant::now() + BULK_PATIENCE;
    while (0..lio.len()).any(|i| lio.cb(i).error() == libc::EINPROGRESS) {
        assert!(
            Instant::now() < deadline,
            "{mode:?}: a request never completed"
        );
        thread::sleep(Duration::from_millis(1));
    }
    for (i, &fate) in bad.fates.iter().enumerate() {
        let state = aio_state(lio.cb(i));
        let gmcs = mode == LioMode::NoWaitGmcs;
        match fate {
            Fate::Good(n) => {
                if gmcs {
                    assert_eq!(state, (0, 0), "{mode:?}: entry {i} untouched");
                } else {
                    assert_eq!(state, (0, n as isize), "{mode:?}: entry {i}");
                }
                if let Some(record) = recorded.get(&i) {
                    assert_eq!(record.result().unwrap(), n as u32, "{mode:?}: entry {i}");
                }
            }
            Fate::GoodNoPort(_) if gmcs => {
                // GMCS needs a port: refused, and only the aiocb can say so.
                assert_eq!(state, (libc::EINVAL, -1), "{mode:?}: entry {i}");
            }
            Fate::GoodNoPort(n) => assert_eq!(state, (0, n as isize), "{mode:?}: entry {i}"),
            Fate::Refused(err) if gmcs => {
                assert_eq!(state, (0, 0), "{mode:?}: entry {i} untouched");
                let record = recorded[&i];
                assert_eq!(
                    (record.error(), record.bytes()),
                    (err as u32, 0),
                    "{mode:?}: entry {i}"
                );
            }
            Fate::Refused(err) | Fate::BadPort(err) => {
                assert_eq!(state, (err, -1), "{mode:?}: entry {i}");
            }
            Fate::Nop => assert_eq!(state, (0, 0), "{mode:?}: the NOP entry was touched"),
        }
    }
    // The good entries moved the right bytes.
    let contents = std::fs::read(scratch.path("data")).unwrap();
    assert!(lio.buf(0) == &data[..4096]);
    assert!(contents[data.len()..data.len() + 2000] == *lio.buf(2));
    assert!(lio.buf(5) == &data[5000..6000]);
    assert!(contents[data.len() + 4096..data.len() + 4096 + 777] == *lio.buf(13));
    if mode != LioMode::NoWaitGmcs {
        assert!(lio.buf(12) == &data[100..612]);
    }
    assert_quiet(&port);
}

#[test]
fn lio_wait_fails_bad_entries_alone_with_their_errno_and_returns_eio() {
    lio_refuses_bad_entries_alone(LioMode::Wait);
}

#[test]
fn lio_nowait_fails_bad_entries_alone_with_their_errno_and_returns_eio() {
    lio_refuses_bad_entries_alone(LioMode::NoWait);
}

#[test]
fn lio_nowait_gmcs_fails_bad_entries_alone_with_error_records_and_returns_eio() {
    lio_refuses_bad_entries_alone(LioMode::NoWaitGmcs);
}

#[test]
fn lio_naming_a_closed_port_fails_that_entry_with_ebadf() {
    let pool = pool(1);
    let live = Port::new().unwrap();
    let closed = Port::new().unwrap();
    // Keep the number from a port of a test running alongside, which would take the entry.
    let _number = close_keeping_number(&closed);
    let scratch = TempDir::new("file-lio-closed-port");
    let data = pattern(65, 8 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    for mode in [LioMode::NoWaitGmcs, LioMode::NoWait] {
        let lio = Lio::new(vec![
            Entry::read(fd, 0, 512, Some(&live)),
            Entry::read(fd, 512, 512, Some(&closed)),
        ]);
        // SAFETY: `lio` outlives both requests: the marker below runs after them on the
        // pool's only thread, and its record is dequeued before `lio` is dropped.
        let returned = unsafe { pool.lio_listio(mode, &lio.list()) };
        let marker = Lio::new(vec![Entry::read(fd, 0, 1, Some(&live))]);
        // SAFETY: `marker` outlives its request, whose record is dequeued below.
        unsafe { pool.lio_listio(LioMode::NoWait, &marker.list()) }.unwrap();
        let records = collect(&live, 2);
        assert_eq!(lio.index_of(&records[0]), 0);
        assert_eq!(marker.index_of(&records[1]), 0);
        assert_eq!(
            aio_state(lio.cb(1)),
            (libc::EBADF, -1),
            "{mode:?}: an entry naming a closed port was accepted; its report is lost"
        );
        assert_eq!(errno(returned), libc::EIO, "{mode:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Cancellation

#[test]
fn cancel_with_nothing_queued_fails_with_enoent_and_aio_cancel_reports_all_done() {
    let pool = pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-cancel-idle");
    let file = port
        .associate_file(scratch.file("data", b"data"), 1, &pool)
        .unwrap();
    assert_eq!(errno(file.cancel(12345)), libc::ENOENT);
    assert_eq!(errno(file.cancel_all()), libc::ENOENT);
    let block = Overlapped::new();
    assert_eq!(errno(file.cancel_overlapped(&block)), libc::ENOENT);
    // A finished request is not cancellable either.
    let ticket = file.read_at(vec![0; 4], 0).unwrap();
    let (_, done) = finish_one(&port, &file, 1, ticket);
    assert_eq!(done.buf, b"data");
    assert_eq!(errno(file.cancel(ticket)), libc::ENOENT);
    assert_eq!(
        pool.aio_cancel(file.raw_fd(), None).unwrap(),
        AioCancel::AllDone
    );
    let cb = Aiocb::new(file.raw_fd(), LIO_READ, 0, std::ptr::null_mut(), 0);
    assert_eq!(
        pool.aio_cancel(file.raw_fd(), Some(&cb)).unwrap(),
        AioCancel::AllDone
    );
    assert_eq!(errno(pool.aio_cancel(-1, None)), libc::EBADF);
    assert_eq!(errno(pool.aio_cancel(i32::MAX, None)), libc::EBADF);
    assert_quiet(&port);
}

#[test]
fn cancellation_racing_completion_yields_exactly_one_record_per_request() {
    const BLOCK: usize = 512;
    const BLOCKS: usize = 64;
    const OWNED: usize = 24;
    const BLOCKED: usize = 8;
    let iterations = if cfg!(debug_assertions) { 120 } else { 500 };
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-cancel-race");
    let data = pattern(51, BLOCK * BLOCKS);
    let owned = port
        .associate_file(scratch.file("data", &data), 1, &pool)
        .unwrap();
    let overlapped = port.associate_file(scratch.open("data"), 2, &pool).unwrap();
    let blocks = Lent::new(
        (0..BLOCKED)
            .map(|_| Overlapped::new())
            .collect::<Box<[_]>>(),
    );
    let bufs: Vec<Lent<[u8]>> = (0..BLOCKED).map(|_| Lent::zeroed(BLOCK)).collect();
    let mut rng = Rng::new(52);
    let (mut cancelled, mut too_late, mut swept) = (0, 0, 0);
    for iteration in 0..iterations {
        // Sometimes a long busy read (the requests wait in the queue), sometimes none.
        busy.start(&pool, rng.below(8 * MIB + 1) * rng.below(2));
        let mut tickets: HashMap<u64, (usize, bool)> = HashMap::new();
        let mut order = Vec::new();
        let mut offsets = [0; BLOCKED];
        let mut block_cancelled = [false; BLOCKED];
        for i in 0..OWNED {
            let offset = rng.below(BLOCKS) * BLOCK;
            let ticket = owned.read_at(vec![0; BLOCK], offset as u64).unwrap();
            tickets.insert(ticket, (offset, false));
            order.push(ticket);
            if i < BLOCKED {
                offsets[i] = rng.below(BLOCKS) * BLOCK;
                bufs[i].fill(0);
                blocks.get()[i].set_offset(offsets[i] as u64);
                // SAFETY: buffer and block stay allocated and unused until their record is
                // dequeued below.
                unsafe { overlapped.read_overlapped(bufs[i].buf(), BLOCK, blocks.at(i)) }.unwrap();
            }
            if rng.below(2) == 0 {
                let victim = order[rng.below(order.len())];
                match owned.cancel(victim) {
                    Ok(()) => {
                        let entry = tickets.get_mut(&victim).unwrap();
                        assert!(!entry.1, "ticket {victim} cancelled twice");
                        entry.1 = true;
                        cancelled += 1;
                    }
                    Err(err) => {
                        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
                        too_late += 1;
                    }
                }
            }
            if i < BLOCKED && rng.below(2) == 0 {
                let victim = rng.below(i + 1);
                match overlapped.cancel_overlapped(blocks.at(victim)) {
                    Ok(()) => {
                        assert!(!block_cancelled[victim], "block {victim} cancelled twice");
                        block_cancelled[victim] = true;
                        cancelled += 1;
                    }
                    Err(err) => {
                        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
                        too_late += 1;
                    }
                }
            }
        }
        // Now and then cancel whatever of the owned requests is still queued.
        let sweep = if iteration % 8 == 7 {
            match owned.cancel_all() {
                Ok(n) => n,
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
                    0
                }
            }
        } else {
            0
        };
        swept += sweep;
        let mut swept_seen = 0;
        let mut block_seen = [false; BLOCKED];
        for record in collect(&port, OWNED + BLOCKED) {
            match record.key() {
                1 => {
                    let ticket = record.overlapped() as u64;
                    let (offset, was_cancelled) = tickets
                        .remove(&ticket)
                        .unwrap_or_else(|| panic!("unknown or repeated ticket: {record:?}"));
                    let done = owned.finish(&record).unwrap();
                    assert_eq!(done.buf.len(), BLOCK);
                    if record.error() == libc::ECANCELED as u32 && !was_cancelled {
                        assert!(sweep > 0, "ticket {ticket} cancelled by nobody");
                        swept_seen += 1;
                    } else if was_cancelled {
                        assert_eq!(record.error(), libc::ECANCELED as u32, "{record:?}");
                    }
                    if record.error() == libc::ECANCELED as u32 {
                        assert_eq!(errno(done.result), libc::ECANCELED);
                        assert!(done.buf.iter().all(|&b| b == 0), "cancelled, yet read");
                    } else {
                        assert_eq!(record.result().unwrap(), BLOCK as u32, "{record:?}");
                        assert_eq!(done.result.unwrap(), BLOCK);
                        assert!(done.buf == data[offset..offset + BLOCK]);
                    }
                }
                2 => {
                    let i = (0..BLOCKED)
                        .find(|&i| address(&blocks.get()[i]) == record.overlapped())
                        .unwrap_or_else(|| panic!("record names no block: {record:?}"));
                    assert!(!block_seen[i], "two records for block {i}");
                    block_seen[i] = true;
                    let block = &blocks.get()[i];
                    if block_cancelled[i] {
                        assert_eq!(record.error(), libc::ECANCELED as u32, "{record:?}");
                        assert_eq!(errno(block.get_result(false)), libc::ECANCELED);
                        assert!(bufs[i].get().iter().all(|&b| b == 0));
                    } else {
                        assert_eq!(record.result().unwrap(), BLOCK as u32, "{record:?}");
                        assert_eq!(block.get_result(false).unwrap(), BLOCK as u32);
                        assert!(bufs[i].get() == &data[offsets[i]..offsets[i] + BLOCK]);
                    }
                }
                _ => panic!("record with an unknown key: {record:?}"),
            }
        }
        assert!(tickets.is_empty());
        assert_eq!(
            swept_seen, sweep,
            "cancel_all's count and the ECANCELED records"
        );
        busy.finish();
    }
    assert_eq!(errno(owned.cancel_all()), libc::ENOENT);
    assert_eq!(errno(overlapped.cancel_all()), libc::ENOENT);
    assert_quiet(&port);
    eprintln!("{cancelled} cancelled, {swept} swept by cancel_all, {too_late} too late");
    assert!(
        cancelled > 0,
        "no cancellation ever won: the race was not exercised"
    );
}

#[test]
fn aio_cancel_racing_completion_reports_what_it_did_and_each_request_completes_once() {
    const BLOCK: usize = 512;
    const BLOCKS: usize = 64;
    const N: usize = 16;
    let iterations = if cfg!(debug_assertions) { 120 } else { 500 };
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-aio-cancel-race");
    let data = pattern(53, BLOCK * BLOCKS);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let lio = Lio::new((0..N).map(|_| Entry::read(fd, 0, BLOCK, None)).collect());
    let mut rng = Rng::new(54);
    // Canceled, NotCanceled, AllDone.
    let mut outcomes = [0usize; 3];
    for iteration in 0..iterations {
        busy.start(&pool, rng.below(8 * MIB + 1) * rng.below(2));
        let offsets: Vec<usize> = (0..N).map(|_| rng.below(BLOCKS) * BLOCK).collect();
        for (i, &offset) in offsets.iter().enumerate() {
            lio.reset(i, fd, LIO_READ, offset, &port);
        }
        // SAFETY: `lio` outlives every request: all records are dequeued below.
        unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
        let mut cancelled = [false; N];
        for _ in 0..N / 2 {
            let i = rng.below(N);
            let outcome = pool.aio_cancel(fd, Some(lio.ptr(i))).unwrap();
            match outcome {
                AioCancel::Canceled => {
                    outcomes[0] += 1;
                    assert!(!cancelled[i], "entry {i} cancelled twice");
                    cancelled[i] = true;
                    // The canceller completes the request before returning.
                    assert_eq!(aio_state(lio.cb(i)), (libc::ECANCELED, -1));
                }
                AioCancel::NotCanceled => outcomes[1] += 1,
                AioCancel::AllDone => outcomes[2] += 1,
            }
        }
        // Now and then cancel whatever is still queued on the descriptor.
        let sweep = (iteration % 8 == 7).then(|| pool.aio_cancel(fd, None).unwrap());
        let mut swept = 0;
        let mut seen = [false; N];
        for record in collect(&port, N) {
            let i = lio.index_of(&record);
            assert!(!seen[i], "two records for entry {i}");
            seen[i] = true;
            assert_eq!(record.key(), 0);
            let state = aio_state(lio.cb(i));
            if record.error() == libc::ECANCELED as u32 {
                assert_eq!(state, (libc::ECANCELED, -1), "entry {i}");
                assert!(lio.buf(i).iter().all(|&b| b == 0), "cancelled, yet read");
                if !cancelled[i] {
                    assert!(sweep.is_some(), "entry {i} cancelled by nobody");
                    swept += 1;
                }
            } else {
                assert!(!cancelled[i], "entry {i}: Canceled, yet it ran: {record:?}");
                assert_eq!(record.result().unwrap(), BLOCK as u32);
                assert_eq!(state, (0, BLOCK as isize), "entry {i}");
                assert!(lio.buf(i) == &data[offsets[i]..offsets[i] + BLOCK]);
            }
        }
        match sweep {
            Some(AioCancel::AllDone) => assert_eq!(swept, 0),
            Some(AioCancel::Canceled) => assert!(swept > 0),
            _ => {}
        }
        busy.finish();
    }
    assert_eq!(pool.aio_cancel(fd, None).unwrap(), AioCancel::AllDone);
    assert_eq!(
        pool.aio_cancel(fd, Some(lio.ptr(0))).unwrap(),
        AioCancel::AllDone
    );
    assert_quiet(&port);
    eprintln!("aio_cancel outcomes (Canceled, NotCanceled, AllDone): {outcomes:?}");
    assert!(
        outcomes[0] > 0,
        "no cancellation ever won: the race was not exercised"
    );
}

#[test]
fn aio_cancel_reports_canceled_for_queued_not_canceled_for_running_all_done_for_finished() {
    const BIG: usize = BUSY;
    let pool = pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-aio-cancel-outcomes");
    let data = pattern(55, 8 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let zfd = zero.as_raw_fd();
    let big = Lent::zeroed(BIG);
    big.fill(1);
    let mut observed_running = false;
    for attempt in 0..20 {
        // A marker with a record, then a long read, then two queued requests.
        let mut lio = Lio::new(vec![
            Entry::read(fd, 0, 16, Some(&port)),
            Entry::read(zfd, 0, 0, None),
            Entry::read(fd, 512, 512, Some(&port)),
            Entry::read(fd, 1024, 512, Some(&port)),
            Entry::read(zfd, 0, 4096, None),
        ]);
        lio.edit(1, |cb| {
            cb.aio_buf = big.buf();
            cb.aio_nbytes = BIG;
        });
        // SAFETY: `lio` and `big` outlive every request: records are dequeued and the
        // portless entries polled until done below.
        unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
        // Once the marker's record is in, the only thread moves on to the long read.
        assert_eq!(lio.index_of(&collect(&port, 1)[0]), 0);
        thread::sleep(Duration::from_millis(2));
        let long = pool.aio_cancel(zfd, Some(lio.ptr(1))).unwrap();
        // The two queued reads on the data file: one by one, then the rest of the fd.
        let first = pool.aio_cancel(fd, Some(lio.ptr(2))).unwrap();
        let again = pool.aio_cancel(fd, Some(lio.ptr(2))).unwrap();
        let rest = pool.aio_cancel(fd, None).unwrap();
        let zero_rest = pool.aio_cancel(zfd, None).unwrap();
        let long_running = lio.cb(1).error() == libc::EINPROGRESS;
        // Wait for everything, then judge.
        let records = collect(&port, 2);
        let deadline = Instant::now() + BULK_PATIENCE;
        while (0..lio.len()).any(|i| lio.cb(i).error() == libc::EINPROGRESS) {
            assert!(Instant::now() < deadline, "a request never completed");
            thread::sleep(Duration::from_millis(1));
        }
        if long != AioCancel::NotCanceled || !long_running {
            eprintln!("attempt {attempt}: the long read was not caught running ({long:?})");
            continue;
        }
        observed_running = true;
        assert_eq!(first, AioCancel::Canceled, "a queued request");
        assert_eq!(
            again,
            AioCancel::AllDone,
            "the same request, already cancelled"
        );
        assert_eq!(rest, AioCancel::Canceled, "the other queued request");
        // The running read is not cancelled, the one queued behind it on the fd is.
        assert_eq!(zero_rest, AioCancel::NotCanceled);
        assert_eq!(aio_state(lio.cb(1)), (0, BIG as isize));
        assert_eq!(aio_state(lio.cb(2)), (libc::ECANCELED, -1));
        assert_eq!(aio_state(lio.cb(3)), (libc::ECANCELED, -1));
        assert_eq!(aio_state(lio.cb(4)), (libc::ECANCELED, -1));
        for record in records {
            let i = lio.index_of(&record);
            assert!(i == 2 || i == 3, "{record:?}");
            assert_eq!(
                (record.error(), record.bytes()),
                (libc::ECANCELED as u32, 0)
            );
        }
        assert_eq!(
            pool.aio_cancel(zfd, Some(lio.ptr(1))).unwrap(),
            AioCancel::AllDone
        );
        break;
    }
    assert!(observed_running, "the long read was never caught running");
    assert_quiet(&port);
}

#[test]
fn aio_cancel_says_all_done_only_once_aio_error_has_the_result() {
    let rounds = if cfg!(debug_assertions) { 200 } else { 1000 };
    let pool = pool(1);
    let mut busy = Busy::new();
    let scratch = TempDir::new("file-aio-all-done");
    let data = pattern(69, 4 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    // A request queued behind a busy read, cancelled by two threads at once: one wins
    // (AIO_CANCELED), the other finds it no longer queued and says AIO_ALLDONE, then reads
    // aio_error at once.
    let target = AtomicUsize::new(0);
    let armed = AtomicUsize::new(0);
    let arrived = AtomicUsize::new(0);
    let partner_done = AtomicUsize::new(0);
    let partner_result = std::sync::Mutex::new(None);
    let spin_until = |done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + BULK_PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "the other canceller never came");
            std::hint::spin_loop();
        }
    };
    let cancel = |round: usize| {
        arrived.fetch_add(1, Ordering::SeqCst);
        spin_until(&|| arrived.load(Ordering::SeqCst) >= 2 * round);
        let cb = target.load(Ordering::SeqCst) as *const Aiocb;
        let outcome = pool.aio_cancel(fd, Some(cb)).unwrap();
        // SAFETY: the aiocb lives until both cancellers are done and the request is done.
        (outcome, unsafe { &*cb }.error())
    };
    // (AIO_ALLDONE seen, of which with aio_error still EINPROGRESS)
    let (mut all_done, mut early) = (0, 0);
    thread::scope(|s| {
        s.spawn(|| {
            for round in 1..=rounds {
                spin_until(&|| armed.load(Ordering::SeqCst) >= round);
                let result = cancel(round);
                *partner_result.lock().unwrap() = Some(result);
                partner_done.store(round, Ordering::SeqCst);
            }
        });
        for round in 1..=rounds {
            busy.start(&pool, 32 * MIB);
            let lio = Lio::new(vec![Entry::read(fd, 0, 512, None)]);
            // SAFETY: `lio` outlives the request, which is polled until done below.
            unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
            target.store(lio.ptr(0) as usize, Ordering::SeqCst);
            armed.store(round, Ordering::SeqCst);
            let mine = cancel(round);
            spin_until(&|| partner_done.load(Ordering::SeqCst) >= round);
            let theirs = partner_result.lock().unwrap().take().unwrap();
            for (outcome, state) in [mine, theirs] {
                match outcome {
                    AioCancel::Canceled => assert_eq!(state, libc::ECANCELED),
                    AioCancel::AllDone => {
                        all_done += 1;
                        if state == libc::EINPROGRESS {
                            early += 1;
                        }
                    }
                    AioCancel::NotCanceled => {}
                }
            }
            let deadline = Instant::now() + BULK_PATIENCE;
            while lio.cb(0).error() == libc::EINPROGRESS {
                assert!(Instant::now() < deadline, "the request never completed");
                thread::yield_now();
            }
            busy.finish();
        }
    });
    eprintln!("AIO_ALLDONE {all_done} times, {early} of them while aio_error said EINPROGRESS");
    assert_eq!(
        early, 0,
        "aio_cancel said AIO_ALLDONE while aio_error still said EINPROGRESS"
    );
}

#[test]
fn cancelling_a_request_never_ends_a_dequeue_wait() {
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-cancel-wait");
    let data = pattern(57, 4 * KIB);
    let file = port
        .associate_file(scratch.file("data", &data), 9, &pool)
        .unwrap();
    let mut cancelled_once = false;
    for attempt in 0..5 {
        let (tx, rx) = mpsc::channel();
        thread::scope(|s| {
            s.spawn(|| {
                let mut out = [Completion::default(); 8];
                let drained = port.get_many(&mut out, 3, Some(BULK_PATIENCE)).unwrap();
                tx.send((drained, out)).unwrap();
            });
            // Let the waiter park (not needed for correctness), then queue two requests
            // behind a busy read and cancel the first at once.
            thread::sleep(Duration::from_millis(30));
            busy.start(&pool, BUSY);
            let t1 = file.read_at(vec![0; 512], 0).unwrap();
            let t2 = file.read_at(vec![0; 512], 512).unwrap();
            let cancel = file.cancel(t1);
            // Only two records can come (the cancelled one and t2): the wait goes on.
            assert!(
                rx.recv_timeout(Duration::from_millis(150)).is_err(),
                "a dequeue wait for 3 records ended with at most 2 available"
            );
            port.post(Completion::new(77, 0, 0xfeed)).unwrap();
            let (drained, out) = rx
                .recv_timeout(BULK_PATIENCE)
                .expect("the waiter never returned");
            assert_eq!(drained.status, DrainStatus::Complete);
            assert_eq!(drained.count, 3);
            let records = &out[..3];
            let of = |ticket: u64| {
                *records
                    .iter()
                    .find(|r| r.key() == 9 && r.overlapped() as u64 == ticket)
                    .unwrap_or_else(|| panic!("no record for ticket {ticket}: {records:?}"))
            };
            let (r1, r2) = (of(t1), of(t2));
            assert!(records.iter().any(|r| r.key() == 77));
            assert_eq!(r2.result().unwrap(), 512);
            match cancel {
                Ok(()) => {
                    assert_eq!(r1.error(), libc::ECANCELED as u32);
                    cancelled_once = true;
                }
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
                    assert_eq!(r1.result().unwrap(), 512);
                    eprintln!("attempt {attempt}: the request ran before it was cancelled");
                }
            }
            file.finish(&r1).unwrap();
            file.finish(&r2).unwrap();
        });
        busy.finish();
        if cancelled_once {
            break;
        }
    }
    assert!(cancelled_once, "never cancelled a queued request");
    assert_quiet(&port);
}

#[test]
fn aio_cancel_never_ends_a_gmcs_wait_which_runs_to_its_timeout() {
    const WAIT: Duration = Duration::from_millis(300);
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-aio-cancel-wait");
    let data = pattern(59, 4 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let mut cancelled_once = false;
    for attempt in 0..5 {
        let lio = Lio::new(vec![
            Entry::read(fd, 0, 512, Some(&port)),
            Entry::read(fd, 512, 512, Some(&port)),
        ]);
        let (drained, out, waited, cancel) = thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut out = [Completion::default(); 8];
                let start = Instant::now();
                let drained = port.get_many(&mut out, 3, Some(WAIT)).unwrap();
                (drained, out, start.elapsed())
            });
            // Let the waiter park, then queue both behind a busy read and cancel one.
            thread::sleep(Duration::from_millis(30));
            busy.start(&pool, BUSY);
            // SAFETY: `lio` outlives both requests: both records are dequeued below.
            unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &lio.list()) }.unwrap();
            let cancel = pool.aio_cancel(fd, Some(lio.ptr(0))).unwrap();
            let (drained, out, waited) = waiter.join().unwrap();
            (drained, out, waited, cancel)
        });
        // Never more than two records: the wait ran to its timeout.
        assert_eq!(drained.status, DrainStatus::TimedOut);
        assert!(waited >= WAIT, "the wait ended early, after {waited:?}");
        assert!(drained.count <= 2);
        let mut records = out[..drained.count].to_vec();
        records.extend(collect(&port, 2 - records.len()));
        let of = |i: usize| {
            *records
                .iter()
                .find(|r| lio.index_of(r) == i)
                .unwrap_or_else(|| panic!("no record for entry {i}: {records:?}"))
        };
        let (first, second) = (of(0), of(1));
        assert_eq!((first.key(), second.key()), (0, 0));
        assert_eq!(second.result().unwrap(), 512);
        for i in 0..2 {
            assert_eq!(
                aio_state(lio.cb(i)),
                (0, 0),
                "GMCS mode leaves the aiocb alone"
            );
        }
        busy.finish();
        match cancel {
            AioCancel::Canceled => {
                assert_eq!((first.error(), first.bytes()), (libc::ECANCELED as u32, 0));
                cancelled_once = true;
                break;
            }
            other => {
                assert_eq!(first.result().unwrap(), 512);
                eprintln!("attempt {attempt}: aio_cancel came too late ({other:?})");
            }
        }
    }
    assert!(cancelled_once, "never cancelled a queued request");
    assert_quiet(&port);
}

#[test]
fn dropping_a_file_cancels_its_queued_requests() {
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-drop-file");
    let data = pattern(67, 4 * KIB);
    let file = port
        .associate_file(scratch.file("data", &data), 4, &pool)
        .unwrap();
    busy.start(&pool, BUSY);
    let tickets: HashSet<u64> = (0..10)
        .map(|i| file.read_at(vec![0; 256], i * 256).unwrap())
        .collect();
    drop(file);
    let all_queued = busy.running();
    let mut seen = HashSet::new();
    for record in collect(&port, tickets.len()) {
        let ticket = record.overlapped() as u64;
        assert!(
            tickets.contains(&ticket) && seen.insert(ticket),
            "{record:?}"
        );
        assert_eq!(record.key(), 4);
        if all_queued {
            assert_eq!(record.error(), libc::ECANCELED as u32, "{record:?}");
        } else {
            assert!(record.error() == libc::ECANCELED as u32 || record.bytes() == 256);
        }
    }
    busy.finish();
    assert_quiet(&port);
}

// ---------------------------------------------------------------------------------------
// Pool shutdown

#[test]
fn dropping_the_pool_completes_every_queued_request_and_joins_its_threads() {
    const OWNED: usize = 1000;
    const BLOCKED: usize = 300;
    const LISTED: usize = 300;
    const BLOCK: usize = 256;
    let _exclusive = POOLS.write().unwrap_or_else(PoisonError::into_inner);
    assert!(
        pool_threads_become(0),
        "threads of earlier pools are still alive"
    );
    let pool = FilePool::builder().threads(2).build().unwrap();
    assert_eq!(pool.threads(), 2);
    assert!(
        pool_threads_become(2),
        "the pool did not start two named threads"
    );
    let port = Port::builder().capacity(4096).build().unwrap();
    let scratch = TempDir::new("file-drop-pool");
    let data = pattern(71, BLOCK * 64);
    let file = port
        .associate_file(scratch.file("data", &data), 1, &pool)
        .unwrap();
    let blocked = port.associate_file(scratch.open("data"), 2, &pool).unwrap();
    // Both threads busy, so what follows queues up.
    let mut busy = [Busy::new(), Busy::new()];
    for b in &mut busy {
        b.start(&pool, BUSY);
    }
    let mut tickets = HashMap::new();
    for i in 0..OWNED {
        let offset = (i % 64) * BLOCK;
        let ticket = if i % 2 == 0 {
            file.read_at(vec![0; BLOCK], offset as u64)
        } else {
            file.write_at(data[offset..offset + BLOCK].to_vec(), offset as u64)
        }
        .unwrap();
        tickets.insert(ticket, offset);
    }
    let blocks = Lent::new(
        (0..BLOCKED)
            .map(|_| Overlapped::new())
            .collect::<Box<[_]>>(),
    );
    let bufs: Vec<Lent<[u8]>> = (0..BLOCKED).map(|_| Lent::zeroed(BLOCK)).collect();
    for (i, buf) in bufs.iter().enumerate() {
        blocks.get()[i].set_offset(((i % 64) * BLOCK) as u64);
        // SAFETY: buffers and blocks stay allocated until their records are dequeued below.
        unsafe { blocked.read_overlapped(buf.buf(), BLOCK, blocks.at(i)) }.unwrap();
    }
    let lio = Lio::new(
        (0..LISTED)
            .map(|i| Entry::read(file.raw_fd(), (i % 64) * BLOCK, BLOCK, Some(&port)))
            .collect(),
    );
    // SAFETY: `lio` outlives every request: all records are dequeued below.
    unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
    let queued_at_drop = busy.iter().filter(|b| b.running()).count();

    {
        let _watchdog = Watchdog::new("dropping a pool with queued requests");
        drop(pool);
    }
    // Every record was posted before the drop returned.
    let total = OWNED + BLOCKED + LISTED;
    assert_eq!(port.queued(), total, "records missing right after the drop");
    assert!(busy.iter().all(|b| !b.running()));
    assert!(
        pool_threads_become(0),
        "the pool's threads outlived its drop"
    );

    let mut blocks_seen = HashSet::new();
    let mut listed_seen = HashSet::new();
    for record in collect(&port, total) {
        match record.key() {
            1 if tickets.contains_key(&(record.overlapped() as u64)) => {
                let offset = tickets.remove(&(record.overlapped() as u64)).unwrap();
                let done = file.finish(&record).unwrap();
                assert_eq!(done.result.unwrap(), BLOCK);
                assert!(done.buf == data[offset..offset + BLOCK]);
            }
            2 => {
                let i = (0..BLOCKED)
                    .find(|&i| address(&blocks.get()[i]) == record.overlapped())
                    .unwrap_or_else(|| panic!("record names no block: {record:?}"));
                assert!(blocks_seen.insert(i));
                assert_eq!(record.result().unwrap(), BLOCK as u32);
                let at = (i % 64) * BLOCK;
                assert!(bufs[i].get() == &data[at..at + BLOCK]);
            }
            0 => {
                let i = lio.index_of(&record);
                assert!(listed_seen.insert(i));
                assert_eq!(aio_state(lio.cb(i)), (0, BLOCK as isize));
            }
            _ => panic!("unexpected record {record:?}"),
        }
    }
    assert!(tickets.is_empty());
    for b in &busy {
        b.finish();
    }
    eprintln!("{queued_at_drop} of 2 threads were still busy when the queue was filled");
    assert_quiet(&port);
}

#[test]
fn requests_after_the_pool_is_dropped_fail_with_eagain() {
    let pool = pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-after-drop");
    let file = port
        .associate_file(scratch.file("data", b"still here"), 1, &pool)
        .unwrap();
    let unassociated = pool.open(scratch.open("data")).unwrap();
    drop(pool);
    assert_eq!(errno(file.read_at(vec![0; 4], 0)), libc::EAGAIN);
    assert_eq!(errno(file.write_at(vec![0; 4], 0)), libc::EAGAIN);
    assert_eq!(errno(file.sync_all()), libc::EAGAIN);
    assert_eq!(errno(file.sync_data()), libc::EAGAIN);
    // An overlapped request is refused too, its block completed with the error rather
    // than left pending.
    let event = Event::new(true, false).unwrap();
    let block = Lent::new(Box::new(Overlapped::with_event(&event)));
    let buf = Lent::zeroed(4);
    for target in [&file, &unassociated] {
        // SAFETY: the request is refused synchronously; nothing keeps the pointers.
        let refused = unsafe { target.read_overlapped(buf.buf(), 4, block.ptr()) };
        assert_eq!(errno(refused), libc::EAGAIN);
        assert!(
            block.get().is_complete(),
            "a refused request left its block pending"
        );
        assert_eq!(errno(block.get().get_result(false)), libc::EAGAIN);
        // SAFETY: as above.
        let refused = unsafe { target.write_overlapped(buf.buf(), 4, block.ptr()) };
        assert_eq!(errno(refused), libc::EAGAIN);
    }
    assert_eq!(errno(file.cancel_all()), libc::ENOENT);
    // The synchronous form does not need the pool.
    let mut back = [0u8; 10];
    assert_eq!(file.read_at_blocking(&mut back, 0).unwrap(), 10);
    assert_eq!(&back, b"still here");
    assert_quiet(&port);
}

/// Queues `n` owned-buffer requests on one file behind a busy read and drains them; returns
/// the time from the first submission to the last record (submission is linear, so a
/// quadratic completion path still dominates, and the figure does not depend on when the
/// busy read happens to end).
fn drain_queued_on_one_file(n: usize) -> Duration {
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::builder().capacity(1 << 17).build().unwrap();
    let scratch = TempDir::new("file-queued-on-one-file");
    let file = port
        .associate_file(scratch.file("data", &[0; 64]), 1, &pool)
        .unwrap();
    busy.start(&pool, BUSY);
    let start = Instant::now();
    for _ in 0..n {
        file.read_at(Vec::new(), 0).unwrap();
    }
    busy.finish();
    let records = collect(&port, n);
    let took = start.elapsed();
    for record in records {
        file.finish(&record).unwrap();
    }
    took
}

#[test]
fn many_requests_queued_on_one_file_complete_in_linear_time() {
    // The median of three runs per size: one run of a few milliseconds on a loaded machine
    // can be an outlier either way.
    let median = |n| {
        let mut runs: Vec<Duration> = (0..3).map(|_| drain_queued_on_one_file(n)).collect();
        runs.sort();
        runs[1]
    };
    let small = median(4_000);
    let large = median(32_000);
    let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
    eprintln!("4k queued: {small:?}, 32k queued: {large:?}, ratio {ratio:.1} (linear: 8)");
    assert!(
        ratio < 24.0,
        "8 times the requests took {ratio:.1} times as long"
    );
}

#[test]
fn a_pool_has_one_thread_per_cpu_by_default_and_pinned_pools_run_requests() {
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(pool_from(FilePool::builder()).threads(), cpus);
    let pinned = pool_from(FilePool::builder().threads(3).pin(true));
    assert_eq!(pinned.threads(), 3);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-pinned");
    let data = pattern(73, 30 * 100);
    let file = port
        .associate_file(scratch.file("data", &data), 6, &pinned)
        .unwrap();
    let tickets: HashMap<u64, usize> = (0..30)
        .map(|i| (file.read_at(vec![0; 100], i as u64 * 100).unwrap(), i))
        .collect();
    for record in collect(&port, tickets.len()) {
        let i = tickets[&(record.overlapped() as u64)];
        let done = file.finish(&record).unwrap();
        assert!(done.buf == data[i * 100..(i + 1) * 100]);
    }
    assert_quiet(&port);
}

// ---------------------------------------------------------------------------------------
// Soak

/// An overlapped request of the soak, block first so that its address is the request's.
#[repr(C)]
struct SoakBlock {
    overlapped: Overlapped,
    block: usize,
    buf: [u8; SOAK_BLOCK],
}

/// An lio request of the soak, aiocb first so that its address is the request's.
#[repr(C)]
struct SoakCb {
    cb: Aiocb,
    block: usize,
    gmcs: bool,
    buf: [u8; SOAK_BLOCK],
}

const SOAK_BLOCK: usize = 256;
const SOAK_BLOCKS: usize = 1024;
/// Requests each submitter keeps in flight at most.
const SOAK_WINDOW: usize = 256;
const SOAK_OWNED_KEY: u64 = 1;
const SOAK_OVERLAPPED_KEY: u64 = 2;

/// Waits while `inflight` is at the window; the drainer lowers it.
fn soak_admit(inflight: &AtomicUsize, deadline: Instant) {
    while inflight.load(Ordering::Acquire) >= SOAK_WINDOW {
        assert!(
            Instant::now() < deadline,
            "the soak's records stopped coming"
        );
        thread::yield_now();
    }
    inflight.fetch_add(1, Ordering::AcqRel);
}

#[test]
fn soak_every_completion_arrives_exactly_once() {
    let per_kind = if cfg!(debug_assertions) {
        3_400
    } else {
        34_000
    };
    let pool = pool(2);
    // A small ring: most records go through the overflow queue.
    let port = Port::builder().capacity(64).build().unwrap();
    let scratch = TempDir::new("file-soak");
    // Writes put back the bytes already there, so every read sees `data` whatever the order.
    let data = pattern(81, SOAK_BLOCK * SOAK_BLOCKS);
    let owned = port
        .associate_file(scratch.file("data", &data), SOAK_OWNED_KEY, &pool)
        .unwrap();
    let blocked = port
        .associate_file(scratch.open("data"), SOAK_OVERLAPPED_KEY, &pool)
        .unwrap();
    let listed = scratch.open("data");
    let lfd = listed.as_raw_fd();
    let deadline = Instant::now() + Duration::from_secs(60);
    let inflight = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    let (meta_tx, meta_rx) = mpsc::channel::<(u64, usize, bool)>();
    let started = Instant::now();

    let (allocations, received) = thread::scope(|s| {
        // Owned buffers: reads and writes by ticket.
        let owned_submitter = s.spawn({
            let (owned, data, inflight) = (&owned, &data, &inflight[0]);
            move || {
                let mut rng = Rng::new(82);
                for i in 0..per_kind {
                    soak_admit(inflight, deadline);
                    let block = rng.below(SOAK_BLOCKS);
                    let offset = block * SOAK_BLOCK;
                    let write = i % 2 == 1;
                    let ticket = if write {
                        owned.write_at(data[offset..offset + SOAK_BLOCK].to_vec(), offset as u64)
                    } else {
                        owned.read_at(vec![0; SOAK_BLOCK], offset as u64)
                    }
                    .unwrap();
                    meta_tx.send((ticket, block, write)).unwrap();
                }
            }
        });
        // Overlapped blocks, each its own allocation, freed after the drain.
        let overlapped_submitter = s.spawn({
            let (blocked, data, inflight) = (&blocked, &data, &inflight[1]);
            move || {
                let mut rng = Rng::new(83);
                let mut requests = Vec::with_capacity(per_kind);
                for i in 0..per_kind {
                    soak_admit(inflight, deadline);
                    let block = rng.below(SOAK_BLOCKS);
                    let offset = block * SOAK_BLOCK;
                    let write = i % 2 == 1;
                    let mut request = Box::new(SoakBlock {
                        overlapped: Overlapped::new(),
                        block,
                        buf: [0; SOAK_BLOCK],
                    });
                    if write {
                        request
                            .buf
                            .copy_from_slice(&data[offset..offset + SOAK_BLOCK]);
                    }
                    request.overlapped.set_offset(offset as u64);
                    let raw = Box::into_raw(request);
                    requests.push(raw as usize);
                    // SAFETY: the request is freed only after the drain saw every record.
                    let buf = unsafe { std::ptr::addr_of_mut!((*raw).buf) }.cast::<u8>();
                    // SAFETY: as above; the block is the first field, so the record's
                    // address is the request's.
                    let ovl = unsafe { std::ptr::addr_of!((*raw).overlapped) };
                    // SAFETY: buffer and block outlive the request (see above).
                    unsafe {
                        if write {
                            blocked.write_overlapped(buf, SOAK_BLOCK, ovl)
                        } else {
                            blocked.read_overlapped(buf, SOAK_BLOCK, ovl)
                        }
                    }
                    .unwrap();
                }
                requests
            }
        });
        // lio_listio, 16 at a time, NoWait and NoWaitGmcs in turn.
        let lio_submitter = s.spawn({
            let (pool, port, data, inflight) = (&*pool, &port, &data, &inflight[2]);
            move || {
                let mut rng = Rng::new(84);
                let mut requests = Vec::with_capacity(per_kind);
                let mut batch = Vec::with_capacity(16);
                for i in 0..per_kind {
                    soak_admit(inflight, deadline);
                    let block = rng.below(SOAK_BLOCKS);
                    let offset = block * SOAK_BLOCK;
                    let write = i % 2 == 1;
                    let gmcs = (i / 16) % 2 == 1;
                    let op = if write { LIO_WRITE } else { LIO_READ };
                    let raw = Box::into_raw(Box::new(SoakCb {
                        cb: Aiocb::new(-1, LIO_NOP, 0, std::ptr::null_mut(), 0),
                        block,
                        gmcs,
                        buf: [0; SOAK_BLOCK],
                    }));
                    // SAFETY: freshly allocated, not yet shared with anyone.
                    let request = unsafe { &mut *raw };
                    if write {
                        request
                            .buf
                            .copy_from_slice(&data[offset..offset + SOAK_BLOCK]);
                    }
                    let buf = request.buf.as_mut_ptr();
                    request.cb =
                        Aiocb::new(lfd, op, offset as i64, buf, SOAK_BLOCK).with_port(port);
                    requests.push(raw as usize);
                    batch.push(raw.cast::<Aiocb>());
                    if batch.len() == 16 || i + 1 == per_kind {
                        let mode = if gmcs {
                            LioMode::NoWaitGmcs
                        } else {
                            LioMode::NoWait
                        };
                        // SAFETY: the requests are freed only after the drain saw every
                        // record; a batch is all one mode (16 divides the mode's run).
                        unsafe { pool.lio_listio(mode, &batch) }.unwrap();
                        batch.clear();
                    }
                }
                requests
            }
        });

        // The drainer: every record once, with the right bytes.
        let total = 3 * per_kind;
        let mut out = vec![Completion::default(); 256];
        let mut received = 0;
        let mut early: HashMap<u64, OpResult> = HashMap::new();
        let mut meta: HashMap<u64, (usize, bool)> = HashMap::new();
        let mut tickets_seen = HashSet::new();
        let mut addresses_seen = HashSet::new();
        let check_owned = |result: OpResult, block: usize, write: bool| {
            let at = block * SOAK_BLOCK;
            assert_eq!(result.result.unwrap(), SOAK_BLOCK, "write {write}");
            assert!(result.buf == data[at..at + SOAK_BLOCK], "block {block}");
        };
        while received < total {
            assert!(
                Instant::now() < deadline,
                "{received} of {total} records after the deadline"
            );
            let drained = port
                .get_many(&mut out, 1, Some(Duration::from_millis(100)))
                .unwrap();
            for record in &out[..drained.count] {
                received += 1;
                match record.key() {
                    SOAK_OWNED_KEY => {
                        inflight[0].fetch_sub(1, Ordering::AcqRel);
                        let ticket = record.overlapped() as u64;
                        assert!(tickets_seen.insert(ticket), "ticket {ticket} twice");
                        assert_eq!(record.result().unwrap(), SOAK_BLOCK as u32);
                        let result = owned.finish(record).unwrap();
                        for (t, block, write) in meta_rx.try_iter() {
                            match early.remove(&t) {
                                Some(result) => check_owned(result, block, write),
                                None => {
                                    meta.insert(t, (block, write));
                                }
                            }
                        }
                        match meta.remove(&ticket) {
                            Some((block, write)) => check_owned(result, block, write),
                            None => {
                                early.insert(ticket, result);
                            }
                        }
                    }
                    SOAK_OVERLAPPED_KEY => {
                        inflight[1].fetch_sub(1, Ordering::AcqRel);
                        let at = record.overlapped();
                        assert!(addresses_seen.insert(at), "block {at:#x} twice");
                        // SAFETY: a live request of the overlapped submitter (freed after
                        // the drain), done: its record is here.
                        let request = unsafe { &*(at as *const SoakBlock) };
                        assert_eq!(record.result().unwrap(), SOAK_BLOCK as u32);
                        assert_eq!(
                            request.overlapped.get_result(false).unwrap(),
                            SOAK_BLOCK as u32
                        );
                        let offset = request.block * SOAK_BLOCK;
                        assert!(request.buf[..] == data[offset..offset + SOAK_BLOCK]);
                    }
                    0 => {
                        inflight[2].fetch_sub(1, Ordering::AcqRel);
                        let at = record.overlapped();
                        assert!(addresses_seen.insert(at), "aiocb {at:#x} twice");
                        // SAFETY: as above, for the lio submitter's requests.
                        let request = unsafe { &*(at as *const SoakCb) };
                        assert_eq!(record.result().unwrap(), SOAK_BLOCK as u32);
                        let expected = if request.gmcs {
                            (0, 0)
                        } else {
                            (0, SOAK_BLOCK as isize)
                        };
                        assert_eq!(aio_state(&request.cb), expected, "gmcs {}", request.gmcs);
                        let offset = request.block * SOAK_BLOCK;
                        assert!(request.buf[..] == data[offset..offset + SOAK_BLOCK]);
                    }
                    _ => panic!("record with an unknown key: {record:?}"),
                }
            }
        }
        owned_submitter.join().unwrap();
        for (ticket, block, write) in meta_rx.try_iter() {
            match early.remove(&ticket) {
                Some(result) => check_owned(result, block, write),
                None => {
                    meta.insert(ticket, (block, write));
                }
            }
        }
        assert!(early.is_empty(), "records for tickets never issued");
        assert!(meta.is_empty(), "tickets whose record never came: {meta:?}");
        let allocations = (
            overlapped_submitter.join().unwrap(),
            lio_submitter.join().unwrap(),
        );
        (allocations, received)
    });
    assert_eq!(received, 3 * per_kind);
    assert_quiet(&port);
    for at in allocations.0 {
        // SAFETY: allocated by `Box::into_raw` above; its request is done.
        drop(unsafe { Box::from_raw(at as *mut SoakBlock) });
    }
    for at in allocations.1 {
        // SAFETY: as above.
        drop(unsafe { Box::from_raw(at as *mut SoakCb) });
    }
    eprintln!("soak: {received} requests in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// Regression tests, named after the bug

/// Guards 05007d4 ("association with a closed port succeeded (sockets, providers, files)"):
/// the socket and provider cases have tests of their own; a file took a closed port as its
/// association, and its requests then went to a port that discards every record.
#[test]
fn regression_associating_a_file_with_a_closed_port_succeeded() {
    let pool = pool(1);
    let scratch = TempDir::new("file-closed-port");
    let closed = Port::new().unwrap();
    closed.close().unwrap();
    let file = scratch.file("data", b"0123456789");
    assert_eq!(
        errno(closed.associate_file(file, 1, &pool)),
        libc::EBADF,
        "Port::associate_file"
    );
    let file = pool.open(scratch.open("data")).unwrap();
    assert_eq!(
        errno(file.associate(&closed, 2)),
        libc::EBADF,
        "File::associate"
    );
    // The refusal left the file unassociated: a live port takes it, and gets its records.
    assert_eq!(errno(file.read_at(vec![0; 4], 0)), libc::ENOTCONN);
    let live = Port::new().unwrap();
    file.associate(&live, 3).unwrap();
    let ticket = file.read_at(vec![0; 4], 3).unwrap();
    let (_, done) = finish_one(&live, &file, 3, ticket);
    assert_eq!(done.buf, b"3456");
}

/// Guards the rule 05007d4 restored ("a refused LIO_WAIT list returned before the entries
/// it had queued were done"): an `LIO_WAIT` call that fails must still have waited for
/// every entry it queued, since the caller may reuse their aiocbs and buffers as soon as it
/// returns. The good entries sit behind a busy read on the pool's only thread, so a call
/// that returned early would find them still `EINPROGRESS`.
///
/// The path 05007d4 fixed, a submission refused with `EAGAIN` because the pool is
/// stopping, cannot be reached from outside the crate (`lio_listio` borrows the pool, and
/// only its drop stops it); this test holds the `EIO` path, a list with a bad entry, to the
/// same rule. That path already waited before the fix: this test keeps it so, it does not
/// reproduce the bug.
#[test]
fn regression_refused_lio_wait_list_returned_before_its_good_entries_were_done() {
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-wait-refused");
    let data = pattern(67, 64 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let mut lio = Lio::new(vec![
        Entry::read(fd, 0, 4096, Some(&port)),
        Entry::write(fd, data.len(), pattern(68, 3000), Some(&port)),
        Entry::read(fd, 0, 16, Some(&port)), // refused: a negative offset (below)
        Entry::read(fd, 8192, 4096, None),
        Entry::read(fd, 20_000, 1000, Some(&port)),
    ]);
    lio.edit(2, |cb| cb.aio_offset = -1);
    let good = [(0, 4096), (1, 3000), (3, 4096), (4, 1000)];

    busy.start(&pool, BUSY);
    let returned = {
        let _watchdog = Watchdog::new("a refused LIO_WAIT list");
        // SAFETY: `lio` outlives every request: `Wait` returns once they are done, which
        // this test checks; were it to return early, `Lio` leaks its memory on the panic.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }
    };
    // Read at once, before the pool can catch up.
    let states: Vec<_> = good
        .iter()
        .map(|&(i, _)| (lio.cb(i).error(), lio.cb(i).result().ok()))
        .collect();
    let busy_still_running = busy.running();
    assert_eq!(errno(returned), libc::EIO);
    for (&(i, n), &state) in good.iter().zip(&states) {
        assert_eq!(
            state,
            (0, Some(n)),
            "entry {i}: (aio_error, aio_return) when LIO_WAIT returned, with the busy read \
             ahead of it still running: {busy_still_running}"
        );
    }
    assert_eq!(aio_state(lio.cb(2)), (libc::EINVAL, -1));
    let contents = std::fs::read(scratch.path("data")).unwrap();
    assert!(lio.buf(0) == &data[..4096]);
    assert!(contents[data.len()..] == *lio.buf(1));
    assert!(lio.buf(3) == &data[8192..12288]);
    assert!(lio.buf(4) == &data[20_000..21_000]);
    busy.finish();
    assert_quiet(&port);
}
