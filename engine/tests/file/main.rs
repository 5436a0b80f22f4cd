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
//!
//! The tests live by concern in the modules below ([`owned`], [`overlapped`], [`lio`],
//! [`cancel`], [`shutdown`], [`soak`], [`regressions`]); this file holds what they share.
#![cfg(not(loom))]

mod cancel;
#[path = "../common/mod.rs"]
mod common;
mod lio;
mod overlapped;
mod owned;
mod regressions;
mod shutdown;
mod soak;

use common::timing::BULK_PATIENCE;
use iocp::{
    Aiocb, Completion, File, FileDriver, FilePool, FilePoolBuilder, LioMode, OpResult, Opcode,
    Overlapped, Port, Ticket,
};
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::sync::{mpsc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
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

/// Holds off every other test's pools and waits (bounded) until the threads of earlier ones
/// are gone: while the guard lives, every pool thread in the process is the caller's.
fn pools_alone() -> RwLockWriteGuard<'static, ()> {
    let exclusive = POOLS.write().unwrap_or_else(PoisonError::into_inner);
    assert!(
        pool_threads_become(0),
        "threads of earlier pools are still alive"
    );
    exclusive
}

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

/// A pool on the default driver (io_uring, unless `IOCP_FILE_DRIVER=threads` or the
/// kernel refuses it), with `threads` threads if that is the thread driver.
fn pool(threads: usize) -> TestPool {
    pool_from(FilePool::builder().threads(threads))
}

/// A pool on the thread driver, for the tests of what only it has: a queue of requests not
/// yet started (which a cancel still catches) and threads kept busy by [`Busy`]. Cached
/// reads queue too, rather than being done by the caller.
fn threads_pool(threads: usize) -> TestPool {
    pool_from(
        FilePool::builder()
            .driver(FileDriver::Threads)
            .threads(threads)
            .cached_reads_on_caller(false),
    )
}

/// A pool on the default driver where every request goes to the pool, cached reads too:
/// for the tests of requests in flight behind a busy one.
fn queued_pool(threads: usize) -> TestPool {
    pool_from(
        FilePool::builder()
            .threads(threads)
            .cached_reads_on_caller(false),
    )
}

/// A pool on the io_uring driver; `None`, with a note on stderr, where the kernel refuses
/// io_uring (a test then skips).
fn uring_pool() -> Option<TestPool> {
    let pool = pool_from(FilePool::builder().driver(FileDriver::Uring));
    if pool.driver() != FileDriver::Uring {
        eprintln!("skipped: the kernel refuses io_uring here");
        return None;
    }
    Some(pool)
}

fn pool_from(builder: FilePoolBuilder) -> TestPool {
    let shared = POOLS.read().unwrap_or_else(PoisonError::into_inner);
    TestPool {
        pool: Some(builder.build().unwrap()),
        _shared: shared,
    }
}

/// The `/proc` directories of the threads of file pools alive in this process
/// (`iocp-file-<i>`, `iocp-file-ring`).
fn pool_thread_dirs() -> Vec<std::path::PathBuf> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .map(|task| task.path())
        .filter(|task| {
            std::fs::read_to_string(task.join("comm"))
                .is_ok_and(|comm| comm.starts_with("iocp-file-"))
        })
        .collect()
}

/// Threads of file pools alive in this process.
fn pool_threads() -> usize {
    pool_thread_dirs().len()
}

/// Whether every pool thread alive now is asleep (state `S` in `/proc/self/task/<tid>/stat`).
fn pool_threads_asleep() -> bool {
    pool_thread_dirs().iter().all(|task| {
        std::fs::read_to_string(task.join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
        })
    })
}

/// How many times the pool threads alive now went to sleep, summed
/// (`voluntary_ctxt_switches` of `/proc/self/task/<tid>/status`): a thread asleep that is
/// not woken adds nothing.
fn pool_threads_sleeps() -> u64 {
    pool_thread_dirs()
        .iter()
        .filter_map(|task| std::fs::read_to_string(task.join("status")).ok())
        .filter_map(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .sum()
}

/// What the kernel counts of the read calls of the pool threads alive now, summed: bytes
/// read and calls made (`rchar`, `syscr` of `/proc/self/task/<tid>/io`). `None` where the
/// kernel keeps no such count.
fn pool_threads_reads() -> Option<(u64, u64)> {
    let mut sums = (0, 0);
    for task in pool_thread_dirs() {
        let io = std::fs::read_to_string(task.join("io")).ok()?;
        let field = |name: &str| {
            io.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        sums.0 += field("rchar:")?;
        sums.1 += field("syscr:")?;
    }
    Some(sums)
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
fn finish_one(port: &Port, file: &File, key: u64, ticket: Ticket) -> (Completion, OpResult) {
    let record = collect(port, 1)[0];
    assert_eq!(
        (record.key(), Ticket::of(&record)),
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
                Opcode::Nop,
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
            Opcode::Read,
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
    op: Opcode,
    offset: i64,
    data: Vec<u8>,
    port: Option<&'a Port>,
}

impl<'a> Entry<'a> {
    fn read(fd: RawFd, offset: usize, len: usize, port: Option<&'a Port>) -> Entry<'a> {
        Entry {
            fd,
            op: Opcode::Read,
            offset: offset as i64,
            data: vec![0; len],
            port,
        }
    }

    fn write(fd: RawFd, offset: usize, data: Vec<u8>, port: Option<&'a Port>) -> Entry<'a> {
        Entry {
            fd,
            op: Opcode::Write,
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
    fn reset(&self, i: usize, fd: RawFd, op: Opcode, offset: usize, port: &Port) {
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
