//! A bounded soak: minutes of sockets, files, posts, cancels and closes mixed across
//! threads. It checks that every request handed to the engine has exactly one outcome, that
//! data comes back as it was written, and that nothing leaks: descriptors and threads return
//! to their count after a warm-up round exactly, live heap bytes and RSS stay within the
//! bounds stated below.
//!
//! ```text
//! cargo test -p iocp-engine --release --test soak -- --ignored soak --nocapture
//! ```
//!
//! `IOCP_SOAK_SECS` sets the length (default 120 s), `IOCP_SOAK_SEED` the seed of the random
//! choices (printed at the start; a rerun repeats the choices, not the thread interleavings).
//!
//! The soak runs in rounds of a few seconds, three workloads at once in each:
//!
//! * **net**: one port (random ring capacity, drive and concurrency value) served by two
//!   threads that dequeue with every call (`get`, polling `get`, `get_many` waiting for one
//!   or for several, `drain` read in part). On it: TCP echo over 127.0.0.1 (the engine's
//!   accept, its connect or std's, recv and send with owned buffers, messages of 1 B to
//!   256 KiB, sends and recvs queued behind a pending connect; a third of the clients
//!   through `Overlapped` blocks and caller memory instead, as the C ABI's `WriteFile` and
//!   `ReadFile` do), UDP echo (`recv_from`, `send_to`), cancels of pending reads (by ticket,
//!   by block, and of everything a socket has pending), clients and servers that close with
//!   requests pending, and two producers posting `(producer, seq)` records into the port.
//! * **files**: one port and a file pool of its own (1 to 3 threads): owned-buffer reads,
//!   writes and syncs on two files, `lio_listio` in all three modes, overlapped reads and
//!   writes, a provider completing overlapped requests (`WPUCompleteOverlappedRequest`),
//!   cancels by ticket, by block, by aiocb and of everything, files dropped with requests
//!   queued, and a producer posting records.
//! * **churn**: short-lived ports closed while threads wait on them (`get` and `get_many`),
//!   closed with records queued, closed with a socket request pending while an inline
//!   leader waits in `epoll_wait`, dropped with requests pending.
//!
//! A net or file round ends gracefully or abruptly. Gracefully: producers stop, clients
//! finish their message, every socket is closed, the round waits until every request and
//! every posted record has been seen, and then closes the port under its waiting threads.
//! Abruptly, at a random moment: the port is closed while threads wait on it and requests
//! are pending, and what the close discarded is accounted for request by request (`finish`
//! by ticket, the overlapped block, the aiocb).
//!
//! Exactly once: every record names a request pending on its port (an unknown ticket or a
//! second record fails the soak); every request has one outcome, at once, as one record,
//! or (its record discarded by an explicit close) as a result that `finish` hands back
//! once; a cancel that succeeded means `ECANCELED`, and `ECANCELED` only comes after a
//! cancel or a close. Every posted `(producer, seq)` is dequeued at most once, in
//! per-producer order as each thread sees it, and all of them unless the port was closed
//! (the rest are counted as discarded). Bytes echoed, read and written are compared with
//! what was sent or is in the file; at the end of each file round the file itself is read
//! back: a write that completed is there, a cancelled one is not.
//!
//! Every wait has a timeout and every loop a bound in count and time.
#![cfg(not(loom))]

mod common;

use common::errno;
use common::files::unlinked_file;
use common::ports::DRIVES;
use common::rng::{mix, pattern, Rng};
use common::sockets::tcp_socket;
use common::timing::BULK_PATIENCE;
use iocp::{
    AioCancel, Aiocb, Completion, DrainStatus, File, FilePool, LioMode, OpResult, Overlapped, Port,
    ProviderSocket, Socket, Submitted, LIO_READ, LIO_WRITE,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------

/// Length of the soak unless `IOCP_SOAK_SECS` says otherwise.
const DEFAULT_SECS: u64 = 120;
/// One round's busy phase (the last round gets what is left).
const ROUND: Duration = Duration::from_secs(3);
/// The warm-up round, after which the leak baseline is taken.
const WARM_UP: Duration = Duration::from_secs(1);
/// Longest a waiting thread may take to return after its port is closed. Generous: the
/// machine has 2 cores shared with builds, and a serving thread may finish a record first.
const WAKE_BOUND: Duration = Duration::from_secs(3);
/// Longest the end waits for deferred releases: a `Drive::Thread` reactor thread, which owns
/// its epoll and eventfd descriptors, exits on its own after its port closes.
const SETTLE: Duration = Duration::from_secs(5);
/// Live heap bytes may grow this much from the warm-up to the end: the registries of ports
/// and provider handles keep their tables at the capacity of their peak, a few KiB. (It
/// stays within a few hundred bytes in practice.) A leak per socket, file or port passes it
/// within seconds: each socket's state alone is a few hundred bytes, and a round closes
/// thousands.
const HEAP_BOUND: i64 = 256 << 10;
/// RSS may grow this much. The heap is counted exactly above, so RSS is there for memory
/// the counter does not see (thread stacks, libc's own allocations, what mio and the kernel
/// map for us) and it carries the allocator's slack: with the thresholds pinned (see
/// [`pin_allocator`]) and `malloc_trim` before each reading, what glibc keeps is the free
/// space at the top of each thread arena (up to the 128 KiB trim threshold, 8 arenas per
/// core) and pages that live small chunks pin: a few MiB. A leaked port with the default
/// ring (100 KiB), socket buffer or thread stack per round passes 16 MiB within the
/// default run.
const RSS_BOUND: i64 = 16 << 20;

const CAPACITIES: [usize; 5] = [1, 2, 8, 64, 4096];
const CONCURRENCY: [usize; 4] = [0, 1, 2, usize::MAX];

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "minutes long: cargo test -p iocp-engine --release --test soak -- --ignored soak --nocapture"]
fn soak() {
    let secs = env_number("IOCP_SOAK_SECS").unwrap_or(DEFAULT_SECS);
    let seed = env_number("IOCP_SOAK_SEED").unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
        now.map_or(1, |now| now.as_nanos() as u64)
    });
    eprintln!("soak: {secs} s, seed {seed} (IOCP_SOAK_SECS, IOCP_SOAK_SEED)");
    let stats = Stats::default();
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    pin_allocator();
    let initial = usage();
    round(0, &mut rng, WARM_UP, &stats);
    // The baseline: every lazily built thing of the engine and of std exists by now.
    let baseline = settle(&initial);
    let mut rounds = 0;
    for index in 1..=100_000 {
        let left = end.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(500) {
            break;
        }
        round(index, &mut rng, left.min(ROUND), &stats);
        rounds = index;
    }
    let elapsed = started.elapsed();
    let after = settle(&baseline);
    stats.print(elapsed, rounds, [&initial, &baseline, &after]);
    assert_eq!(
        (after.fds, after.threads),
        (baseline.fds, baseline.threads),
        "descriptors or threads leaked: (fds, threads) after the warm-up vs at the end"
    );
    assert!(
        after.heap - baseline.heap < HEAP_BOUND,
        "live heap grew by {} bytes",
        after.heap - baseline.heap
    );
    assert!(
        after.rss - baseline.rss < RSS_BOUND,
        "RSS grew by {} KiB",
        (after.rss - baseline.rss) >> 10
    );
}

/// One round: the three workloads at once, each on ports of its own.
fn round(index: usize, rng: &mut Rng, budget: Duration, stats: &Stats) {
    let started = Instant::now();
    let seeds = [rng.next(), rng.next(), rng.next()];
    let (net, files, churn) = thread::scope(|s| {
        let net = s.spawn(|| net_round(seeds[0], budget, stats));
        let files = s.spawn(|| file_round(seeds[1], budget, stats));
        let churn = churn_round(seeds[2], budget, stats);
        (join(net), join(files), churn)
    });
    add(&stats.rounds, 1);
    eprintln!(
        "round {index}: {:.1} s; {net}; {files}; {churn}",
        started.elapsed().as_secs_f64()
    );
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
    )
}

// ---------------------------------------------------------------------------------------
// Measuring the process
// ---------------------------------------------------------------------------------------

/// The system allocator, counting live bytes so that the leak check does not rest on RSS.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call goes to the system allocator with its arguments unchanged; the count
// kept on the side has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; `ptr` came from this allocator, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, with the caller's `new_size` contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What the leak check compares.
#[derive(Clone, Copy, Debug)]
struct Usage {
    fds: usize,
    threads: usize,
    rss: i64,
    peak_rss: i64,
    heap: i64,
}

fn usage() -> Usage {
    trim();
    let fds = entries("/proc/self/fd");
    let threads = entries("/proc/self/task");
    let (rss, peak_rss) = (status_bytes("VmRSS:"), status_bytes("VmHWM:"));
    // Read last: the readings above have freed what they allocated.
    let heap = LIVE_BYTES.load(Ordering::Relaxed);
    Usage {
        fds,
        threads,
        rss,
        peak_rss,
        heap,
    }
}

/// Entries of a `/proc` directory (for `fd`, including the one reading it, every time).
fn entries(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{dir}: {err}"))
        .count()
}

/// A size from `/proc/self/status` (`VmRSS:`, resident now; `VmHWM:`, the peak), in bytes.
fn status_bytes(field: &str) -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next()?.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    kib << 10
}

/// Makes RSS follow what is in use rather than the allocator's history. By default glibc
/// raises its mmap threshold to the largest block freed so far (up to 32 MiB) and its trim
/// threshold to twice that: after one 256 KiB echo buffer every later one comes from a
/// thread arena, whose free top `malloc_trim` does not give back. Pinned, blocks from
/// 128 KiB up are mapped and unmapped on their own and arena tops are trimmed past 128 KiB.
fn pin_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for param in [libc::M_MMAP_THRESHOLD, libc::M_TRIM_THRESHOLD] {
        // SAFETY: mallopt only changes allocator settings; it takes no pointers.
        let set = unsafe { libc::mallopt(param, 128 << 10) };
        assert_eq!(set, 1, "mallopt({param})");
    }
}

/// Gives the allocator's free memory back, so RSS says more about what is in use.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Measures once descriptors and threads are down to `target`, or after [`SETTLE`].
fn settle(target: &Usage) -> Usage {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = usage();
        let settled = now.fds <= target.fds && now.threads <= target.threads;
        if settled || Instant::now() >= deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// What happened, counted by every thread of the soak.
#[derive(Default)]
struct Stats {
    rounds: AtomicU64,
    ports: AtomicU64,
    port_closes: AtomicU64,
    /// Threads that were waiting on (or serving) a port and returned `EBADF` once it closed.
    woken: AtomicU64,
    posts: AtomicU64,
    posts_discarded: AtomicU64,
    socket_ops: AtomicU64,
    socket_ops_at_once: AtomicU64,
    connections: AtomicU64,
    echoed_bytes: AtomicU64,
    datagrams: AtomicU64,
    file_ops: AtomicU64,
    lio_ops: AtomicU64,
    overlapped_ops: AtomicU64,
    cancel_calls: AtomicU64,
    /// Cancels that found nothing to cancel: the request had completed first.
    cancel_misses: AtomicU64,
    /// Requests that ended with `ECANCELED` (cancelled, or their socket or file closed).
    cancelled: AtomicU64,
    /// Sockets closed and files dropped.
    closes: AtomicU64,
    closes_with_pending: AtomicU64,
    records: AtomicU64,
    /// Outcomes whose record an explicit close discarded, each found exactly once by other
    /// means (`finish` by ticket, the overlapped block, the aiocb).
    discarded: AtomicU64,
    busy: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    fn print(&self, elapsed: Duration, rounds: usize, [initial, baseline, after]: [&Usage; 3]) {
        let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mib = |bytes: i64| bytes as f64 / f64::from(1 << 20);
        eprintln!(
            "\nsoak summary\n\
             \x20 duration     {:.1} s, {rounds} rounds after a warm-up round\n\
             \x20 ports        {} created, {} closed explicitly, {} waiting threads returned EBADF on a close\n\
             \x20 posts        {} posted, {} discarded by closes and drops, the rest dequeued once each\n\
             \x20 socket ops   {} ({} done at once), {} connections, {:.1} MiB echoed over TCP, {} datagrams echoed\n\
             \x20 file ops     {} owned-buffer, {} lio_listio, {} overlapped (file and provider)\n\
             \x20 cancels      {} calls ({} found the request done), {} requests ended ECANCELED\n\
             \x20 closes       {} sockets closed and files dropped, {} of them with requests pending\n\
             \x20 records      {} dequeued, {} outcomes whose record a close discarded (each found once)\n\
             \x20 EBUSY        {} retries\n\
             \x20 fds          {} at start, {} after warm-up, {} at end\n\
             \x20 threads      {} at start, {} after warm-up, {} at end\n\
             \x20 RSS          {:.1} MiB at start, {:.1} MiB after warm-up, {:.1} MiB at end (peak {:.1} MiB)\n\
             \x20 heap         {:.2} MiB at start, {:.2} MiB after warm-up, {:.2} MiB at end",
            elapsed.as_secs_f64(),
            n(&self.ports),
            n(&self.port_closes),
            n(&self.woken),
            n(&self.posts),
            n(&self.posts_discarded),
            n(&self.socket_ops),
            n(&self.socket_ops_at_once),
            n(&self.connections),
            n(&self.echoed_bytes) as f64 / f64::from(1 << 20),
            n(&self.datagrams),
            n(&self.file_ops),
            n(&self.lio_ops),
            n(&self.overlapped_ops),
            n(&self.cancel_calls),
            n(&self.cancel_misses),
            n(&self.cancelled),
            n(&self.closes),
            n(&self.closes_with_pending),
            n(&self.records),
            n(&self.discarded),
            n(&self.busy),
            initial.fds,
            baseline.fds,
            after.fds,
            initial.threads,
            baseline.threads,
            after.threads,
            mib(initial.rss),
            mib(baseline.rss),
            mib(after.rss),
            mib(after.peak_rss),
            mib(initial.heap),
            mib(baseline.heap),
            mib(after.heap),
        );
        assert_eq!(n(&self.rounds) as usize, rounds + 1);
    }
}

// ---------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------

/// A request, by ticket (owned buffers) or by the address of its block or aiocb.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Req {
    Ticket(u64),
    At(usize),
}

/// A record agrees with the result `finish` handed back for it.
fn check_record(record: &Completion, result: &io::Result<usize>) {
    match result {
        Ok(n) => assert_eq!(
            (record.error(), record.bytes() as usize),
            (0, *n),
            "{record:?}"
        ),
        Err(err) => assert_eq!(
            (Some(record.error() as i32), record.bytes()),
            (err.raw_os_error(), 0),
            "{record:?}"
        ),
    }
}

/// Two accounts of one outcome agree (errors by their errno).
fn check_same(a: &io::Result<usize>, b: &io::Result<usize>) {
    let errno = |result: &io::Result<usize>| match result {
        Ok(n) => Ok(*n),
        Err(err) => Err(err.raw_os_error()),
    };
    assert_eq!(errno(a), errno(b), "two accounts of one outcome differ");
}

fn is_canceled<T>(result: &io::Result<T>) -> bool {
    result
        .as_ref()
        .is_err_and(|err| err.raw_os_error() == Some(libc::ECANCELED))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|_| panic!("another thread of the round failed holding its state"))
}

/// Joins a scoped thread, passing its panic on as it was.
fn join<T>(thread: thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn sleep_until(at: Instant) {
    thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// Polls `done` until it holds or `within` passes; whether it held.
fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Closes `port`, first noting when, for the waiters' wake check.
fn close_port(port: &Port, closed_at: &OnceLock<Instant>, stats: &Stats) {
    // Already set only by a failing thread's `CloseOnPanic`, whose close comes first.
    let _ = closed_at.set(Instant::now());
    port.close().expect("the first close of a port succeeds");
    add(&stats.port_closes, 1);
}

/// Closes the port when the thread holding it panics, so that the round's other threads
/// stop waiting on it and the failure shows at once.
struct CloseOnPanic<'a> {
    port: &'a Port,
    closed_at: &'a OnceLock<Instant>,
}

impl Drop for CloseOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = self.closed_at.set(Instant::now());
            let _ = self.port.close();
        }
    }
}

/// The round's random ending: `None` for a graceful end at the deadline, or the moment
/// the port is closed under its threads.
fn ending(rng: &mut Rng, start: Instant, budget: Duration) -> Option<Instant> {
    rng.one_in(3)
        .then(|| start + budget.mul_f64(0.2 + 0.6 * rng.unit()))
}

fn ending_name(abrupt: Option<Instant>) -> &'static str {
    match abrupt {
        Some(_) => "abrupt",
        None => "graceful",
    }
}

// ---------------------------------------------------------------------------------------
// Posted records
// ---------------------------------------------------------------------------------------

/// Keys of posted records: `POSTED + producer` (sockets and files use small keys).
const POSTED: u64 = 1 << 40;
/// Records each producer posts in a round at most.
const POSTS_MAX: usize = 100_000;
/// Records a producer may have posted that no server has dequeued yet; past it the
/// producer waits. Without it a loaded machine let the producers run up to 160,000 records
/// ahead of the serving threads, and with a concurrency value of 1 the drain at the end of
/// a graceful round outlasted [`BULK_PATIENCE`] with nothing lost: one server may run, the other
/// rightly sleeps in `get`, and the one running spends most of its time on batched
/// dequeues refused with `EBUSY` (the other waits in `get`) and the pause after each, a
/// thousand or two records a second. Still beyond every ring capacity but the largest, so
/// the overflow path keeps its load.
const BACKLOG_MAX: usize = 1024;

/// Producers' records, each of which must be dequeued at most once.
struct Posts {
    producers: Vec<Producer>,
}

struct Producer {
    accepted: AtomicUsize,
    /// A bit per sequence number.
    seen: Vec<AtomicU64>,
    seen_count: AtomicUsize,
}

impl Posts {
    fn new(producers: usize) -> Posts {
        Posts {
            producers: (0..producers)
                .map(|_| Producer {
                    accepted: AtomicUsize::new(0),
                    seen: (0..POSTS_MAX.div_ceil(64))
                        .map(|_| AtomicU64::new(0))
                        .collect(),
                    seen_count: AtomicUsize::new(0),
                })
                .collect(),
        }
    }

    /// The record producer `p` posts `seq`-th: every field derives from both, so a torn or
    /// mixed-up record fails the check.
    fn record(p: usize, seq: u32) -> Completion {
        let tag = mix((p as u64) << 32 | u64::from(seq));
        Completion::new(POSTED + p as u64, seq, tag as usize).with_error((tag >> 48) as u32)
    }

    fn owns(&self, key: u64) -> bool {
        key.checked_sub(POSTED)
            .is_some_and(|p| p < self.producers.len() as u64)
    }

    /// Posts in bursts until `until`, [`POSTS_MAX`] or the port's close, never more than
    /// [`BACKLOG_MAX`] records ahead of the serving threads.
    fn produce(&self, p: usize, port: &Port, mut rng: Rng, until: Instant, stats: &Stats) {
        let burst = 1 + rng.below(128);
        let mut accepted = 0;
        'posting: for seq in 0..POSTS_MAX {
            if seq % burst == 0 {
                if Instant::now() >= until {
                    break;
                }
                // Pauses let the ring run dry, so that consumers park and get woken.
                thread::sleep(rng.micros(500));
                // Relaxed: a count to pace by; a stale one only makes this wait longer.
                while accepted - self.producers[p].seen_count.load(Ordering::Relaxed) > BACKLOG_MAX
                {
                    if Instant::now() >= until || port.is_closed() {
                        break 'posting;
                    }
                    thread::sleep(Duration::from_micros(200));
                }
            }
            match port.post(Posts::record(p, seq as u32)) {
                Ok(()) => accepted += 1,
                Err(err) if err.raw_os_error() == Some(libc::EBADF) => break,
                Err(err) => panic!("post: {err}"),
            }
        }
        self.producers[p]
            .accepted
            .store(accepted, Ordering::Release);
        add(&stats.posts, accepted as u64);
    }

    /// Checks a dequeued record; `last` is the calling thread's latest sequence number of
    /// each producer, which must grow (per-producer order).
    fn see(&self, record: &Completion, last: &mut [Option<u32>]) {
        let p = (record.key() - POSTED) as usize;
        let seq = record.bytes();
        assert_eq!(*record, Posts::record(p, seq), "a torn posted record");
        let producer = &self.producers[p];
        let bit = 1u64 << (seq % 64);
        let before = producer.seen[seq as usize / 64].fetch_or(bit, Ordering::Relaxed);
        assert_eq!(before & bit, 0, "posted record ({p}, {seq}) dequeued twice");
        producer.seen_count.fetch_add(1, Ordering::Relaxed);
        if let Some(previous) = last[p] {
            assert!(
                seq > previous,
                "producer {p}: {seq} dequeued after {previous} by the same thread"
            );
        }
        last[p] = Some(seq);
    }

    /// Records posted and not (yet) dequeued; final once the producers are joined.
    fn unseen(&self) -> u64 {
        self.producers
            .iter()
            .map(|p| {
                p.accepted.load(Ordering::Acquire) as u64
                    - p.seen_count.load(Ordering::Relaxed) as u64
            })
            .sum()
    }
}

/// A thread serving `port` until it is closed: it dequeues with every call in turn, checks
/// posted records itself and hands the others to `handle`.
fn serve(
    port: &Port,
    posts: &Posts,
    mut rng: Rng,
    stats: &Stats,
    closed_at: &OnceLock<Instant>,
    hard: Instant,
    mut handle: impl FnMut(&Completion),
) {
    let _guard = CloseOnPanic { port, closed_at };
    let mut last = vec![None; posts.producers.len()];
    let mut out = [Completion::default(); 64];
    let mut taken: Vec<Completion> = Vec::with_capacity(out.len());
    loop {
        assert!(
            Instant::now() < hard,
            "a serving thread outlived its round: the port was never closed"
        );
        taken.clear();
        let dequeued = match rng.below(10) {
            0..=3 => port
                .get(Some(BULK_PATIENCE))
                .map(|record| taken.push(record)),
            4 => port
                .get(Some(Duration::ZERO))
                .map(|record| taken.push(record)),
            5 | 6 => {
                let n = 1 + rng.below(out.len());
                port.get_many(&mut out[..n], 1, Some(BULK_PATIENCE))
                    .map(|drained| {
                        assert_ne!(drained.status, DrainStatus::Interrupted, "no signals here");
                        taken.extend_from_slice(&out[..drained.count]);
                    })
            }
            7 => {
                // Waits briefly for several and may get fewer, as AIX's GMCS does.
                let min = 2 + rng.below(3);
                let n = min + rng.below(out.len() - min);
                port.get_many(&mut out[..n], min, Some(Duration::from_millis(2)))
                    .map(|drained| {
                        assert_ne!(drained.status, DrainStatus::Interrupted, "no signals here");
                        taken.extend_from_slice(&out[..drained.count]);
                    })
            }
            _ => {
                let max = 1 + rng.below(64);
                let half = rng.one_in(4);
                port.drain(max, Some(BULK_PATIENCE)).map(|mut batch| {
                    // Some batches are read in part: the rest stays queued, in order.
                    let len = batch.len();
                    let read = if half { len.div_ceil(2) } else { len };
                    taken.extend(batch.by_ref().take(read));
                })
            }
        };
        if let Err(err) = dequeued {
            match err.raw_os_error() {
                Some(libc::EBADF) => {
                    let after = closed_at
                        .get()
                        .expect("EBADF only after the close")
                        .elapsed();
                    assert!(
                        after < WAKE_BOUND,
                        "a serving thread returned {after:?} after its port closed"
                    );
                    add(&stats.woken, 1);
                    return;
                }
                Some(libc::ETIMEDOUT) => {}
                // The other serving thread holds the batched dequeue, or waits in `get`.
                Some(libc::EBUSY) => {
                    add(&stats.busy, 1);
                    thread::sleep(Duration::from_micros(200));
                }
                _ => panic!("dequeue: {err}"),
            }
        }
        add(&stats.records, taken.len() as u64);
        for record in &taken {
            if posts.owns(record.key()) {
                posts.see(record, &mut last);
            } else {
                handle(record);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Net: TCP and UDP echo over loopback on one port
// ---------------------------------------------------------------------------------------

const NET_CLIENTS: usize = 6;
const UDP_CLIENTS: usize = 3;
const UDP_SERVER_READS: usize = 4;
const ACCEPTS: usize = 2;
/// TCP and UDP clients a round starts at most.
const CLIENTS_MAX: usize = 400;
const CLIENT_READ: usize = 16 * 1024;
const SERVER_READ: usize = 64 * 1024;
const DATAGRAM_READ: usize = 2048;
const DATAGRAM_MAX: usize = 1400;
const CANCEL_ONE_IN: usize = 16;
const ABORT_ONE_IN: usize = 64;
/// Overlapped socket requests a round makes at most (their blocks stay allocated until the
/// round ends, so that no block address is reused meanwhile).
const SOCKET_OVERLAPPED_MAX: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Listener,
    Client,
    Server,
    UdpServer,
    UdpClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NetOp {
    Accept,
    Connect,
    Recv,
    Send(usize),
    RecvFrom,
    SendTo(usize),
}

struct Conn {
    socket: Socket,
    kind: Kind,
    closed: bool,
    /// Requests whose record has not been seen; the socket is kept until none is left,
    /// since only it can `finish` them.
    pending: usize,
    /// TCP client: the message being echoed, how much came back, messages still to send,
    /// whether the first was sent.
    msg: Vec<u8>,
    got: usize,
    messages_left: usize,
    started: bool,
    /// UDP client: the datagram being echoed.
    seq: u64,
    /// TCP client: sends and recvs go through `Overlapped` blocks and caller memory (the C
    /// ABI's `WriteFile`/`ReadFile` path) rather than owned buffers.
    overlapped: bool,
}

/// An overlapped socket request: the block whose address its record carries, and its
/// buffer (taken back when the request is done).
struct OvlIo {
    ovl: Overlapped,
    buf: Vec<u8>,
}

/// The net round's state; its port's serving threads take turns at it.
struct Net<'a> {
    port: Port,
    stats: &'a Stats,
    rng: Rng,
    stopping: bool,
    listen_addr: SocketAddr,
    udp_addr: SocketAddr,
    conns: HashMap<u64, Conn>,
    next_key: u64,
    /// Pending owned-buffer requests by ticket.
    open: HashMap<u64, (u64, NetOp)>,
    /// Pending overlapped requests by block address: socket, request, `OvlIo` address.
    open_ovl: HashMap<usize, (u64, NetOp, usize)>,
    /// Every overlapped request of the round, freed when it ends.
    ovl_all: Vec<usize>,
    /// Requests a cancel reached: `true` when it said it cancelled (then `ECANCELED` is due),
    /// `false` when it may have (a cancel of everything).
    cancels: HashMap<Req, bool>,
    /// Results of requests that completed at once, handled after the current one.
    ready: VecDeque<(u64, NetOp, OpResult)>,
    clients: usize,
}

impl<'a> Net<'a> {
    fn new(port: Port, stats: &'a Stats, rng: Rng) -> Net<'a> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut net = Net {
            port,
            stats,
            rng,
            stopping: false,
            listen_addr: listener.local_addr().unwrap(),
            udp_addr: udp.local_addr().unwrap(),
            conns: HashMap::new(),
            next_key: 1,
            open: HashMap::new(),
            open_ovl: HashMap::new(),
            ovl_all: Vec::new(),
            cancels: HashMap::new(),
            ready: VecDeque::new(),
            clients: 0,
        };
        let listener = net
            .add(listener, Kind::Listener)
            .expect("a new port is open");
        for _ in 0..ACCEPTS {
            net.read(listener);
        }
        let udp = net.add(udp, Kind::UdpServer).expect("a new port is open");
        for _ in 0..UDP_SERVER_READS {
            net.read(udp);
        }
        for _ in 0..NET_CLIENTS {
            net.start_client();
        }
        for _ in 0..UDP_CLIENTS {
            net.start_udp_client();
        }
        net.run_ready();
        net
    }

    fn conn(&mut self, key: u64) -> &mut Conn {
        self.conns
            .get_mut(&key)
            .expect("a socket stays while its requests are pending")
    }

    /// Associates a socket under a fresh key; `None` once the round closed the port.
    fn add(&mut self, fd: impl Into<OwnedFd>, kind: Kind) -> Option<u64> {
        let key = self.next_key;
        self.next_key += 1;
        match self.port.associate(fd, key) {
            Ok(socket) => {
                let messages_left = 1 + self.rng.below(6);
                let overlapped = kind == Kind::Client && self.rng.one_in(3);
                let conn = Conn {
                    socket,
                    kind,
                    closed: false,
                    pending: 0,
                    msg: Vec::new(),
                    got: 0,
                    messages_left,
                    started: false,
                    seq: 0,
                    overlapped,
                };
                self.conns.insert(key, conn);
                Some(key)
            }
            Err(err) if err.raw_os_error() == Some(libc::EBADF) && self.port.is_closed() => None,
            Err(err) => panic!("associate: {err}"),
        }
    }

    fn submit(&mut self, key: u64, op: NetOp, submitted: io::Result<Submitted>) -> Option<Req> {
        add(&self.stats.socket_ops, 1);
        match submitted.unwrap_or_else(|err| panic!("#{key} {op:?} refused: {err}")) {
            Submitted::Pending(ticket) => {
                let fresh = self.open.insert(ticket, (key, op)).is_none();
                assert!(fresh, "ticket {ticket} handed out twice");
                self.conn(key).pending += 1;
                Some(Req::Ticket(ticket))
            }
            Submitted::Done(done) => {
                add(&self.stats.socket_ops_at_once, 1);
                self.ready.push_back((key, op, done));
                None
            }
        }
    }

    /// Issues `op` (a recv or a send of `buf`) on a socket through an `Overlapped`.
    fn submit_overlapped(&mut self, key: u64, op: NetOp, buf: Vec<u8>) -> Option<Req> {
        add(&self.stats.socket_ops, 1);
        let raw = Box::into_raw(Box::new(OvlIo {
            ovl: Overlapped::new(),
            buf,
        }));
        self.ovl_all.push(raw as usize);
        // SAFETY: a fresh allocation that nothing else refers to yet.
        let io = unsafe { &mut *raw };
        let (ptr, len, ovl) = (
            io.buf.as_mut_ptr(),
            io.buf.len(),
            std::ptr::addr_of!(io.ovl),
        );
        let socket = &self.conns[&key].socket;
        // SAFETY: the block and the buffer stay allocated, the buffer untouched, until the
        // block reads complete: the round frees them only at its end, once every socket is
        // closed (which completes what is pending), and takes the buffer back only then.
        let started = unsafe {
            match op {
                NetOp::Send(_) => socket.write_overlapped(ptr, len, ovl),
                _ => socket.read_overlapped(ptr, len, ovl),
            }
        };
        let result = match started {
            Ok(None) => {
                self.open_ovl.insert(ovl as usize, (key, op, raw as usize));
                self.conn(key).pending += 1;
                return Some(Req::At(ovl as usize));
            }
            Ok(Some(n)) => Ok(n as usize),
            Err(err) => Err(err),
        };
        // Done (or failed) at once: no record comes, the block says the same.
        let block = io.ovl.get_result(false).map(|n| n as usize);
        check_same(&block, &result);
        add(&self.stats.socket_ops_at_once, 1);
        let done = OpResult {
            result,
            buf: std::mem::take(&mut io.buf),
            peer: None,
            accepted: None,
        };
        self.ready.push_back((key, op, done));
        None
    }

    /// Cancels one pending request, which then must end `ECANCELED` unless it was done.
    fn cancel(&mut self, key: u64, req: Req) {
        add(&self.stats.cancel_calls, 1);
        let socket = &self.conns[&key].socket;
        let cancelled = match req {
            Req::Ticket(ticket) => socket.cancel(ticket),
            Req::At(at) => socket.cancel_overlapped(at as *const Overlapped),
        };
        match cancelled {
            Ok(()) => {
                self.cancels.insert(req, true);
            }
            // It completed first: cancelled or completed, never both.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                add(&self.stats.cancel_misses, 1)
            }
            Err(err) => panic!("cancel: {err}"),
        }
    }

    /// Cancels everything a socket has pending (`CancelIoEx` with no overlapped).
    fn cancel_all(&mut self, key: u64) {
        add(&self.stats.cancel_calls, 1);
        let tickets = self.open.iter().filter(|(_, (k, _))| *k == key);
        let blocks = self.open_ovl.iter().filter(|(_, (k, _, _))| *k == key);
        let reached: Vec<Req> = tickets
            .map(|(ticket, _)| Req::Ticket(*ticket))
            .chain(blocks.map(|(at, _)| Req::At(*at)))
            .collect();
        match self.conns[&key].socket.cancel_all() {
            Ok(_) => {
                for req in reached {
                    self.cancels.entry(req).or_insert(false);
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                add(&self.stats.cancel_misses, 1)
            }
            Err(err) => panic!("cancel_all: {err}"),
        }
    }

    /// Issues the socket's read-direction request; some are cancelled at once.
    fn read(&mut self, key: u64) {
        let conn = self.conn(key);
        if conn.kind == Kind::Client && conn.overlapped {
            if let Some(req) = self.submit_overlapped(key, NetOp::Recv, vec![0; CLIENT_READ]) {
                if self.rng.one_in(CANCEL_ONE_IN) {
                    self.cancel(key, req);
                }
            }
            return;
        }
        let (op, submitted) = match conn.kind {
            Kind::Listener => (NetOp::Accept, conn.socket.accept()),
            Kind::Client => (NetOp::Recv, conn.socket.recv(vec![0; CLIENT_READ])),
            Kind::Server => (NetOp::Recv, conn.socket.recv(vec![0; SERVER_READ])),
            Kind::UdpServer | Kind::UdpClient => (
                NetOp::RecvFrom,
                conn.socket.recv_from(vec![0; DATAGRAM_READ]),
            ),
        };
        if let Some(req) = self.submit(key, op, submitted) {
            if self.rng.one_in(CANCEL_ONE_IN) {
                self.cancel(key, req);
            }
        }
    }

    /// Closes a socket; what it has pending completes with `ECANCELED`.
    fn close(&mut self, key: u64) {
        let stats = self.stats;
        let conn = self.conn(key);
        if conn.closed {
            return;
        }
        conn.closed = true;
        add(&stats.closes, 1);
        if conn.pending > 0 {
            add(&stats.closes_with_pending, 1);
        }
        conn.socket
            .close()
            .expect("the first close of a socket succeeds");
    }

    fn start_client(&mut self) {
        if self.stopping || self.clients >= CLIENTS_MAX {
            return;
        }
        self.clients += 1;
        add(&self.stats.connections, 1);
        if self.rng.one_in(4) {
            // std's blocking connect: the socket joins the port connected.
            let stream = TcpStream::connect(self.listen_addr).expect("connect to our listener");
            if let Some(key) = self.add(stream, Kind::Client) {
                self.start_message(key);
                self.read(key);
            }
            return;
        }
        let Some(key) = self.add(tcp_socket(libc::AF_INET), Kind::Client) else {
            return;
        };
        let addr = self.listen_addr;
        let submitted = self.conn(key).socket.connect(addr);
        self.submit(key, NetOp::Connect, submitted);
        if self.rng.one_in(2) {
            // The send queues behind the pending connect, the recv waits for it.
            self.start_message(key);
            self.read(key);
        }
    }

    fn start_message(&mut self, key: u64) {
        let len = if self.rng.one_in(8) {
            1 + self.rng.below(256 * 1024)
        } else {
            1 + self.rng.below(4096)
        };
        let msg = pattern(self.rng.next(), len);
        let room = self.ovl_all.len() < SOCKET_OVERLAPPED_MAX;
        let conn = self.conn(key);
        conn.started = true;
        conn.got = 0;
        conn.msg = msg.clone();
        if conn.overlapped && room {
            self.submit_overlapped(key, NetOp::Send(len), msg);
        } else {
            let submitted = conn.socket.send(msg);
            self.submit(key, NetOp::Send(len), submitted);
        }
    }

    fn start_udp_client(&mut self) {
        if self.stopping || self.clients >= CLIENTS_MAX {
            return;
        }
        self.clients += 1;
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
        if let Some(key) = self.add(socket, Kind::UdpClient) {
            self.read(key);
            self.send_datagram(key);
        }
    }

    fn send_datagram(&mut self, key: u64) {
        let to = self.udp_addr;
        let conn = self.conn(key);
        let datagram = datagram(key, conn.seq);
        let len = datagram.len();
        let submitted = conn.socket.send_to(datagram, to);
        self.submit(key, NetOp::SendTo(len), submitted);
    }

    /// A record from the port: it must name a pending request, which `finish` (or the
    /// request's block) completes.
    fn on_record(&mut self, record: &Completion) {
        if let Some((key, op, raw)) = self.open_ovl.remove(&record.overlapped()) {
            assert_eq!(record.key(), key, "{record:?}: the key of another socket");
            self.conn(key).pending -= 1;
            let done = take_overlapped(raw);
            check_record(record, &done.result);
            let cancel = self.cancels.remove(&Req::At(record.overlapped()));
            self.on_result(key, op, done, cancel);
            self.run_ready();
            return;
        }
        let ticket = record.overlapped() as u64;
        let (key, op) = self.open.remove(&ticket).unwrap_or_else(|| {
            panic!("{record:?}: no request has this ticket pending (unknown, or a second record)")
        });
        assert_eq!(record.key(), key, "{record:?}: the key of another socket");
        let conn = self.conn(key);
        conn.pending -= 1;
        let done = conn
            .socket
            .finish(record)
            .unwrap_or_else(|err| panic!("{record:?}: finish: {err}"));
        check_record(record, &done.result);
        let cancel = self.cancels.remove(&Req::Ticket(ticket));
        self.on_result(key, op, done, cancel);
        self.run_ready();
    }

    /// `cancel`: whether a cancel reached the request, and if it said it cancelled it.
    fn on_result(&mut self, key: u64, op: NetOp, done: OpResult, cancel: Option<bool>) {
        let conn = self.conn(key);
        let (kind, closed) = (conn.kind, conn.closed);
        if is_canceled(&done.result) {
            add(&self.stats.cancelled, 1);
            assert!(
                cancel.is_some() || closed,
                "#{key} {op:?}: ECANCELED, yet neither cancelled nor closed"
            );
            match op {
                _ if closed => {}
                // A cancelled read: read again (the data it would have had is still there).
                NetOp::Accept | NetOp::Recv | NetOp::RecvFrom => self.read(key),
                // A cancelled send leaves a hole in the stream: give the connection up.
                _ => self.close(key),
            }
            return;
        }
        assert_ne!(
            cancel,
            Some(true),
            "#{key} {op:?}: its cancel succeeded, yet it completed with {:?}",
            done.result
        );
        match kind {
            Kind::Listener => self.on_accept(key, done, closed),
            Kind::Client => self.on_client(key, op, done, closed),
            Kind::Server => self.on_server(key, op, done, closed),
            Kind::UdpServer => self.on_udp_server(key, op, done, closed),
            Kind::UdpClient => self.on_udp_client(key, op, done, closed),
        }
    }

    /// Errors a stream request may meet from its peer: an abort, or the end of the round.
    fn peer_error(&self, err: &io::Error) -> bool {
        match err.raw_os_error() {
            Some(libc::EPIPE | libc::ECONNRESET) => true,
            Some(libc::ECONNREFUSED | libc::ENOTCONN) => self.stopping,
            _ => false,
        }
    }

    fn on_accept(&mut self, key: u64, done: OpResult, closed: bool) {
        let n = done.result.unwrap_or_else(|err| panic!("accept: {err}"));
        assert_eq!(n, 0);
        let stream = done.accepted.expect("an accept yields a connection");
        if closed || self.stopping {
            return;
        }
        if let Some(server) = self.add(stream, Kind::Server) {
            self.read(server);
        }
        self.read(key);
    }

    fn on_client(&mut self, key: u64, op: NetOp, done: OpResult, closed: bool) {
        let (stats, stopping) = (self.stats, self.stopping);
        match (op, done.result) {
            (NetOp::Connect, Ok(_)) => {
                if !closed && !self.conn(key).started {
                    self.start_message(key);
                    self.read(key);
                }
            }
            (NetOp::Send(len), Ok(n)) => assert_eq!(n, len, "#{key}: a send completes whole"),
            // The server aborted.
            (NetOp::Recv, Ok(0)) => self.close(key),
            (NetOp::Recv, Ok(n)) => {
                let conn = self.conn(key);
                let (from, to) = (conn.got, conn.got + n);
                assert!(
                    to <= conn.msg.len(),
                    "#{key}: {to} bytes echoed of a {}-byte message",
                    conn.msg.len()
                );
                assert!(
                    done.buf[..n] == conn.msg[from..to],
                    "#{key}: echoed bytes {from}..{to} differ from those sent"
                );
                conn.got = to;
                if closed {
                    return;
                }
                if to == conn.msg.len() {
                    add(&stats.echoed_bytes, to as u64);
                    conn.messages_left -= 1;
                    if conn.messages_left == 0 || stopping {
                        self.close(key);
                        return;
                    }
                    self.start_message(key);
                }
                self.read(key);
                if self.rng.one_in(ABORT_ONE_IN) {
                    // With the read just issued, and maybe a send, pending.
                    self.close(key);
                }
            }
            (_, Err(err)) if self.peer_error(&err) => self.close(key),
            (op, result) => panic!("#{key} client {op:?}: {result:?}"),
        }
    }

    fn on_server(&mut self, key: u64, op: NetOp, done: OpResult, closed: bool) {
        match (op, done.result) {
            (NetOp::Recv, Ok(0)) => self.close(key),
            (NetOp::Recv, Ok(n)) => {
                if closed {
                    return;
                }
                let mut echo = done.buf;
                echo.truncate(n);
                let submitted = self.conn(key).socket.send(echo);
                self.submit(key, NetOp::Send(n), submitted);
                self.read(key);
                if self.rng.one_in(2 * ABORT_ONE_IN) {
                    self.close(key);
                } else if self.rng.one_in(2 * ABORT_ONE_IN) {
                    // The recv and maybe sends: a cancelled send ends the connection.
                    self.cancel_all(key);
                }
            }
            (NetOp::Send(len), Ok(n)) => assert_eq!(n, len, "#{key}: a send completes whole"),
            (_, Err(err)) if self.peer_error(&err) => self.close(key),
            (op, result) => panic!("#{key} server {op:?}: {result:?}"),
        }
    }

    fn on_udp_server(&mut self, key: u64, op: NetOp, done: OpResult, closed: bool) {
        match (op, done.result) {
            (NetOp::RecvFrom, Ok(n)) => {
                check_datagram(&done.buf[..n]);
                let peer = done.peer.expect("a datagram has a sender");
                if closed {
                    return;
                }
                let mut echo = done.buf;
                echo.truncate(n);
                let submitted = self.conn(key).socket.send_to(echo, peer);
                self.submit(key, NetOp::SendTo(n), submitted);
                self.read(key);
            }
            (NetOp::SendTo(len), Ok(n)) => assert_eq!(n, len, "a datagram goes whole"),
            (op, result) => panic!("#{key} UDP server {op:?}: {result:?}"),
        }
    }

    fn on_udp_client(&mut self, key: u64, op: NetOp, done: OpResult, closed: bool) {
        match (op, done.result) {
            (NetOp::RecvFrom, Ok(n)) => {
                assert_eq!(
                    done.peer,
                    Some(self.udp_addr),
                    "#{key}: a datagram from a stranger"
                );
                let echoed = check_datagram(&done.buf[..n]);
                let leave = self.stopping || self.rng.one_in(256);
                add(&self.stats.datagrams, 1);
                let conn = self.conn(key);
                assert_eq!(
                    echoed,
                    (key, conn.seq),
                    "#{key}: the echo of another datagram"
                );
                if closed {
                    return;
                }
                conn.seq += 1;
                if leave {
                    self.close(key);
                    return;
                }
                self.read(key);
                self.send_datagram(key);
            }
            (NetOp::SendTo(len), Ok(n)) => assert_eq!(n, len, "a datagram goes whole"),
            (op, result) => panic!("#{key} UDP client {op:?}: {result:?}"),
        }
    }

    /// Handles what completed at once, forgets closed sockets with nothing pending, and
    /// replaces clients that left (which may complete more at once).
    fn run_ready(&mut self) {
        for _ in 0..100_000 {
            if let Some((key, op, done)) = self.ready.pop_front() {
                self.on_result(key, op, done, None);
                continue;
            }
            let gone: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, conn)| conn.closed && conn.pending == 0)
                .map(|(key, _)| *key)
                .collect();
            if gone.is_empty() {
                return;
            }
            for key in gone {
                match self.conns.remove(&key).map(|conn| conn.kind) {
                    Some(Kind::Client) => self.start_client(),
                    Some(Kind::UdpClient) => self.start_udp_client(),
                    _ => {}
                }
            }
        }
        panic!("requests kept completing at once without end");
    }

    fn clients_left(&self) -> usize {
        self.conns
            .values()
            .filter(|conn| matches!(conn.kind, Kind::Client | Kind::UdpClient))
            .count()
    }

    fn close_all(&mut self) {
        self.stopping = true;
        let keys: Vec<u64> = self.conns.keys().copied().collect();
        for key in keys {
            self.close(key);
        }
        self.run_ready();
    }

    fn is_idle(&self) -> bool {
        self.conns.is_empty()
            && self.open.is_empty()
            && self.open_ovl.is_empty()
            && self.ready.is_empty()
    }

    /// After the port was closed under the round: closes every socket, then finds the
    /// outcome of each request whose record the close discarded, once.
    fn abandon(&mut self) {
        self.close_all();
        let open: Vec<(u64, (u64, NetOp))> = self.open.drain().collect();
        for (ticket, (key, op)) in open {
            let conn = self.conn(key);
            conn.pending -= 1;
            let forged = Completion::new(key, 0, ticket as usize);
            let done = conn.socket.finish(&forged).unwrap_or_else(|err| {
                panic!("#{key} {op:?}: no outcome for a request whose record was discarded: {err}")
            });
            assert_eq!(
                errno(conn.socket.finish(&forged)),
                libc::EINVAL,
                "#{key} {op:?}: an outcome handed back twice"
            );
            add(&self.stats.discarded, 1);
            let cancel = self.cancels.remove(&Req::Ticket(ticket));
            self.on_result(key, op, done, cancel);
        }
        let open: Vec<(usize, (u64, NetOp, usize))> = self.open_ovl.drain().collect();
        for (at, (key, op, raw)) in open {
            // Its socket is closed, so the block is complete.
            self.conn(key).pending -= 1;
            let done = take_overlapped(raw);
            add(&self.stats.discarded, 1);
            let cancel = self.cancels.remove(&Req::At(at));
            self.on_result(key, op, done, cancel);
        }
        self.run_ready();
        assert!(
            self.is_idle(),
            "{} sockets left after the close",
            self.conns.len()
        );
    }
}

impl Drop for Net<'_> {
    /// Frees the round's overlapped requests, once every socket is closed (or leaks them,
    /// when the round failed with some still open).
    fn drop(&mut self) {
        if thread::panicking() || !self.conns.is_empty() {
            return;
        }
        for raw in self.ovl_all.drain(..) {
            // SAFETY: made by `Box::into_raw` in `submit_overlapped`; its socket is closed,
            // so its request is complete and the engine holds no pointer to it.
            let io = unsafe { Box::from_raw(raw as *mut OvlIo) };
            assert!(
                io.ovl.is_complete(),
                "an overlapped request outlived its socket"
            );
        }
    }
}

/// The outcome of a completed overlapped socket request, from its block, with its buffer.
fn take_overlapped(raw: usize) -> OpResult {
    // SAFETY: allocated this round and freed at its end; its request is done (its record
    // came, or its socket is closed), so the engine no longer touches it.
    let io = unsafe { &mut *(raw as *mut OvlIo) };
    assert!(io.ovl.is_complete(), "an overlapped request still pending");
    OpResult {
        result: io.ovl.get_result(false).map(|n| n as usize),
        buf: std::mem::take(&mut io.buf),
        peer: None,
        accepted: None,
    }
}

/// A fresh, unconnected TCP socket.
/// Datagram `seq` of UDP client `client`: both in the first 16 bytes, the rest (of a length
/// they decide) a pattern they decide.
fn datagram(client: u64, seq: u64) -> Vec<u8> {
    let tag = mix(client << 32 ^ seq);
    let len = 16 + tag as usize % (DATAGRAM_MAX - 16);
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&client.to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&pattern(tag, len - 16));
    bytes
}

/// The `(client, seq)` of an intact datagram.
fn check_datagram(bytes: &[u8]) -> (u64, u64) {
    assert!(bytes.len() >= 16, "a {}-byte datagram", bytes.len());
    let client = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let seq = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    assert!(
        bytes == datagram(client, seq),
        "datagram ({client}, {seq}) arrived altered"
    );
    (client, seq)
}

fn net_round(seed: u64, budget: Duration, stats: &Stats) -> String {
    let mut rng = Rng::new(seed);
    let (capacity, drive, concurrency) = (
        rng.pick(&CAPACITIES),
        rng.pick(&DRIVES),
        rng.pick(&CONCURRENCY),
    );
    let port = Port::builder()
        .capacity(capacity)
        .drive(drive)
        .concurrency(concurrency)
        .build()
        .unwrap();
    add(&stats.ports, 1);
    let start = Instant::now();
    let deadline = start + budget;
    let abrupt = ending(&mut rng, start, budget);
    let hard = deadline + 3 * BULK_PATIENCE;
    let posts = Posts::new(2);
    let closed_at = OnceLock::new();
    let net = Mutex::new(Net::new(port.clone(), stats, rng.fork()));
    thread::scope(|s| {
        let _guard = CloseOnPanic {
            port: &port,
            closed_at: &closed_at,
        };
        let (port, posts, closed_at, net) = (&port, &posts, &closed_at, &net);
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let rng = rng.fork();
                s.spawn(move || posts.produce(p, port, rng, deadline, stats))
            })
            .collect();
        let servers: Vec<_> = (0..2)
            .map(|_| {
                let rng = rng.fork();
                s.spawn(move || {
                    serve(port, posts, rng, stats, closed_at, hard, |record| {
                        lock(net).on_record(record)
                    })
                })
            })
            .collect();
        match abrupt {
            Some(at) => {
                sleep_until(at);
                {
                    let _net = lock(net);
                    close_port(port, closed_at, stats);
                }
                producers.into_iter().for_each(join);
                servers.into_iter().for_each(join);
                lock(net).abandon();
                add(&stats.posts_discarded, posts.unseen());
            }
            None => {
                sleep_until(deadline);
                lock(net).stopping = true;
                // Clients finish the message they are at, then everything is closed.
                wait_for(Duration::from_secs(1), || lock(net).clients_left() == 0);
                lock(net).close_all();
                producers.into_iter().for_each(join);
                let drained = wait_for(BULK_PATIENCE, || {
                    assert!(!port.is_closed(), "another thread of the round failed");
                    lock(net).is_idle() && posts.unseen() == 0
                });
                let net = lock(net);
                assert!(
                    drained,
                    "net round ({drive:?}, capacity {capacity}, concurrency {concurrency}): {} \
                     requests and {} posted records never came",
                    net.open.len(),
                    posts.unseen()
                );
                assert_eq!(port.queued(), 0, "records beyond every request and post");
                close_port(port, closed_at, stats);
                drop(net);
                servers.into_iter().for_each(join);
            }
        }
    });
    let end = ending_name(abrupt);
    format!("net {drive:?} capacity {capacity} concurrency {concurrency} {end}")
}

// ---------------------------------------------------------------------------------------
// Files: owned, lio and overlapped requests, a provider, on one port and pool
// ---------------------------------------------------------------------------------------

const BLOCK: usize = 512;
/// Blocks of the region that is only read (and checked against what was put there).
const STABLE_BLOCKS: usize = 256;
/// Blocks of the region written once each per round (zero until then).
const FRESH_BLOCKS: usize = 16 * 1024;
/// Requests in flight at most.
const FILE_WINDOW: usize = 256;
const FILE_BATCHES_MAX: usize = 1_000_000;
/// lio and overlapped requests a round makes at most. Each stays allocated until the round
/// ends, so that no address is reused while a second record for it could still come:
/// these bound that memory (about 600 bytes a request).
const LIO_MAX: usize = 16 * 1024;
const OVERLAPPED_MAX: usize = 8 * 1024;
/// lio records carry key 0 (AIX: `completion_key` is unused).
const LIO_KEY: u64 = 0;
const OVERLAPPED_KEY: u64 = 1;
const PROVIDER_KEY: u64 = 2;
const FIRST_FILE_KEY: u64 = 16;
/// Requests the provider accepts in a round at most.
const PROVIDER_MAX: usize = 32 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileOp {
    Read(usize),
    Write(usize),
    Sync,
}

impl FileOp {
    fn offset(self) -> u64 {
        let block = match self {
            FileOp::Read(b) => b,
            FileOp::Write(f) => STABLE_BLOCKS + f,
            FileOp::Sync => 0,
        };
        (block * BLOCK) as u64
    }
}

/// What a fresh block should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Untouched,
    Pending,
    Written,
    Cancelled,
    /// Its outcome went with its record (GMCS mode, or a dropped file, then a closed port).
    Unknown,
}

/// An lio request and its buffer, alive until the end of the round. The aiocb comes first,
/// so its address is the request's.
#[repr(C)]
struct LioReq {
    cb: Aiocb,
    op: FileOp,
    gmcs: bool,
    buf: [u8; BLOCK],
}

/// An overlapped request and its buffer, alive until the end of the round.
#[repr(C)]
struct OvlReq {
    ovl: Overlapped,
    op: FileOp,
    buf: [u8; BLOCK],
}

/// The file round's state; its serving threads and its submitter take turns at it. Every
/// submission happens under its lock, so a record cannot be handled before its request is
/// in the books.
struct Files<'a> {
    port: Port,
    stats: &'a Stats,
    rng: Rng,
    seed: u64,
    master: std::fs::File,
    lio_fd: std::fs::File,
    stable: Vec<u8>,
    blocks: Vec<Block>,
    next_fresh: usize,
    slots: Vec<(u64, File)>,
    /// Keys of files dropped this round.
    dropped: HashSet<u64>,
    next_key: u64,
    ovl_file: File,
    provider: ProviderSocket,
    /// Pending owned-buffer requests by ticket.
    open: HashMap<u64, (u64, FileOp)>,
    /// Pending lio requests: aiocb address to the `LioReq`.
    lio: HashMap<usize, usize>,
    /// Pending overlapped requests: block address to the `OvlReq`.
    ovl: HashMap<usize, usize>,
    /// Every lio and overlapped request of the round, freed once the pool is gone.
    lio_all: Vec<usize>,
    ovl_all: Vec<usize>,
    /// The provider's blocks (records carry their addresses, so they never move), the next
    /// unused one, started ones (by index) it has yet to complete, and completed ones whose
    /// record is due (by address: index, error, bytes).
    prov: Box<[Overlapped]>,
    prov_next: usize,
    prov_started: VecDeque<usize>,
    prov_open: HashMap<usize, (usize, u32, u32)>,
    /// Requests a cancel reached: `true` when it said it cancelled (then `ECANCELED` is due),
    /// `false` when it may have (a cancel of everything).
    cancels: HashMap<Req, bool>,
}

impl<'a> Files<'a> {
    fn new(port: Port, stats: &'a Stats, mut rng: Rng, pool: &FilePool) -> Files<'a> {
        let master = unlinked_file("soak");
        let seed = rng.next();
        let stable = pattern(seed, STABLE_BLOCKS * BLOCK);
        master.write_all_at(&stable, 0).unwrap();
        master
            .set_len(((STABLE_BLOCKS + FRESH_BLOCKS) * BLOCK) as u64)
            .unwrap();
        let ovl_file = port
            .associate_file(master.try_clone().unwrap(), OVERLAPPED_KEY, pool)
            .unwrap();
        let provider = ProviderSocket::new(7, 0).unwrap();
        provider.associate(&port, PROVIDER_KEY).unwrap();
        let mut files = Files {
            port,
            stats,
            rng,
            seed,
            lio_fd: master.try_clone().unwrap(),
            master,
            stable,
            blocks: vec![Block::Untouched; FRESH_BLOCKS],
            next_fresh: 0,
            slots: Vec::new(),
            dropped: HashSet::new(),
            next_key: FIRST_FILE_KEY,
            ovl_file,
            provider,
            open: HashMap::new(),
            lio: HashMap::new(),
            ovl: HashMap::new(),
            lio_all: Vec::new(),
            ovl_all: Vec::new(),
            prov: (0..PROVIDER_MAX).map(|_| Overlapped::new()).collect(),
            prov_next: 0,
            prov_started: VecDeque::new(),
            prov_open: HashMap::new(),
            cancels: HashMap::new(),
        };
        files.open_slot(pool);
        files.open_slot(pool);
        files
    }

    fn open_slot(&mut self, pool: &FilePool) {
        let key = self.next_key;
        self.next_key += 1;
        let fd = self.master.try_clone().unwrap();
        let file = self.port.associate_file(fd, key, pool).unwrap();
        self.slots.push((key, file));
    }

    fn fresh(&self, f: usize) -> Vec<u8> {
        pattern(self.seed ^ mix(f as u64 + 1), BLOCK)
    }

    fn in_flight(&self) -> usize {
        self.open.len() + self.lio.len() + self.ovl.len() + self.prov_open.len()
    }

    /// A read of a stable block, a write of the next fresh block, or (if `sync`) rarely a sync.
    fn pick(&mut self, sync: bool) -> FileOp {
        if sync && self.rng.one_in(64) {
            return FileOp::Sync;
        }
        if self.rng.one_in(2) && self.next_fresh < FRESH_BLOCKS {
            let f = self.next_fresh;
            self.next_fresh += 1;
            self.blocks[f] = Block::Pending;
            return FileOp::Write(f);
        }
        FileOp::Read(self.rng.below(STABLE_BLOCKS))
    }

    /// One batch of requests; `false` (and nothing submitted) while the window is full.
    fn submit_some(&mut self, pool: &FilePool) -> bool {
        if self.in_flight() >= FILE_WINDOW {
            return false;
        }
        match self.rng.below(64) {
            0..=29 => self.owned_batch(),
            30..=43 => self.lio_batch(pool),
            44..=53 => self.overlapped_batch(),
            54..=61 => self.provider_step(),
            62 => self.cancel_many(pool),
            _ => self.replace_file(pool),
        }
        true
    }

    fn owned_batch(&mut self) {
        let slot = self.rng.below(self.slots.len());
        let n = 1 + self.rng.below(16);
        let mut tickets = Vec::with_capacity(n);
        for _ in 0..n {
            let op = self.pick(true);
            let (key, file) = &self.slots[slot];
            let ticket = match op {
                FileOp::Read(_) => file.read_at(vec![0; BLOCK], op.offset()),
                FileOp::Write(f) => file.write_at(self.fresh(f), op.offset()),
                FileOp::Sync => file.sync_data(),
            }
            .unwrap_or_else(|err| panic!("{op:?} refused: {err}"));
            let fresh = self.open.insert(ticket, (*key, op)).is_none();
            assert!(fresh, "ticket {ticket} handed out twice");
            tickets.push(ticket);
        }
        add(&self.stats.file_ops, n as u64);
        for ticket in tickets {
            if self.rng.one_in(8) {
                let cancelled = self.slots[slot].1.cancel(ticket);
                self.note_cancel(Req::Ticket(ticket), cancelled);
            }
        }
    }

    fn note_cancel(&mut self, req: Req, cancelled: io::Result<()>) {
        add(&self.stats.cancel_calls, 1);
        match cancelled {
            Ok(()) => {
                self.cancels.insert(req, true);
            }
            // Running or done: a job is cancelled only while queued.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                add(&self.stats.cancel_misses, 1)
            }
            Err(err) => panic!("cancel {req:?}: {err}"),
        }
    }

    /// A new lio request: a read of a stable block or a write of the next fresh one, whose
    /// aiocb names the port unless it is for `LIO_WAIT` (`None` for `gmcs`).
    fn lio_request(&mut self, gmcs: Option<bool>) -> *mut LioReq {
        let op = self.pick(false);
        let mut req = Box::new(LioReq {
            cb: Aiocb::new(-1, LIO_READ, 0, std::ptr::null_mut(), 0),
            op,
            gmcs: gmcs == Some(true),
            buf: [0; BLOCK],
        });
        let opcode = match op {
            FileOp::Write(f) => {
                req.buf.copy_from_slice(&self.fresh(f));
                LIO_WRITE
            }
            _ => LIO_READ,
        };
        let fd = self.lio_fd.as_raw_fd();
        let cb = Aiocb::new(fd, opcode, op.offset() as i64, req.buf.as_mut_ptr(), BLOCK);
        req.cb = match gmcs {
            Some(_) => cb.with_port(&self.port),
            None => cb,
        };
        // The buffer stays where it is: the box's contents do not move.
        Box::into_raw(req)
    }

    fn lio_batch(&mut self, pool: &FilePool) {
        if self.lio_all.len() >= LIO_MAX {
            return self.owned_batch();
        }
        let gmcs = self.rng.one_in(2);
        let mode = if gmcs {
            LioMode::NoWaitGmcs
        } else {
            LioMode::NoWait
        };
        let n = 1 + self.rng.below(16);
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            let raw = self.lio_request(Some(gmcs));
            // The aiocb is the request's first field.
            let cb = raw.cast::<Aiocb>();
            self.lio.insert(cb as usize, raw as usize);
            self.lio_all.push(raw as usize);
            list.push(cb);
        }
        // SAFETY: every aiocb and buffer stays allocated and untouched until the end of the
        // round, after the pool that runs them has been dropped (`free_requests`).
        unsafe { pool.lio_listio(mode, &list) }.unwrap_or_else(|err| panic!("lio_listio: {err}"));
        add(&self.stats.lio_ops, n as u64);
        for cb in list {
            if self.rng.one_in(8) {
                add(&self.stats.cancel_calls, 1);
                match pool.aio_cancel(self.lio_fd.as_raw_fd(), Some(cb.cast_const())) {
                    Ok(AioCancel::Canceled) => {
                        self.cancels.insert(Req::At(cb as usize), true);
                    }
                    Ok(AioCancel::NotCanceled | AioCancel::AllDone) => {
                        add(&self.stats.cancel_misses, 1)
                    }
                    Err(err) => panic!("aio_cancel: {err}"),
                }
            }
        }
    }

    fn overlapped_batch(&mut self) {
        if self.ovl_all.len() >= OVERLAPPED_MAX {
            return self.owned_batch();
        }
        for _ in 0..1 + self.rng.below(8) {
            let op = self.pick(false);
            let raw = Box::into_raw(Box::new(OvlReq {
                ovl: Overlapped::new(),
                op,
                buf: [0; BLOCK],
            }));
            // SAFETY: a fresh allocation that nothing else refers to yet.
            let req = unsafe { &mut *raw };
            req.ovl.set_offset(op.offset());
            if let FileOp::Write(f) = op {
                req.buf.copy_from_slice(&self.fresh(f));
            }
            let (buf, ovl) = (req.buf.as_mut_ptr(), std::ptr::addr_of!(req.ovl));
            self.ovl.insert(ovl as usize, raw as usize);
            self.ovl_all.push(raw as usize);
            // SAFETY: the block and the buffer stay allocated, the buffer untouched, until
            // the end of the round, after the pool that runs them has been dropped.
            let submitted = unsafe {
                match op {
                    FileOp::Write(_) => self.ovl_file.write_overlapped(buf, BLOCK, ovl),
                    _ => self.ovl_file.read_overlapped(buf, BLOCK, ovl),
                }
            };
            submitted.unwrap_or_else(|err| panic!("overlapped {op:?} refused: {err}"));
            add(&self.stats.overlapped_ops, 1);
            if self.rng.one_in(8) {
                let cancelled = self.ovl_file.cancel_overlapped(ovl);
                self.note_cancel(Req::At(ovl as usize), cancelled);
            }
        }
    }

    /// The provider completes some requests it accepted earlier and accepts new ones.
    fn provider_step(&mut self) {
        for _ in 0..self.rng.below(self.prov_started.len() + 1) {
            self.provider_complete_next()
                .expect("completing into an open port");
        }
        for _ in 0..1 + self.rng.below(8) {
            if self.prov_next == PROVIDER_MAX {
                break;
            }
            self.prov[self.prov_next].start();
            self.prov_started.push_back(self.prov_next);
            self.prov_next += 1;
        }
    }

    /// The provider completes its oldest accepted request (`WPUCompleteOverlappedRequest`).
    fn provider_complete_next(&mut self) -> io::Result<()> {
        let index = self
            .prov_started
            .pop_front()
            .expect("a request to complete");
        let (error, bytes) = if self.rng.one_in(4) {
            (libc::ECONNRESET as u32, 0)
        } else {
            (0, self.rng.below(1 << 20) as u32)
        };
        let block = &self.prov[index];
        self.prov_open
            .insert(block as *const Overlapped as usize, (index, error, bytes));
        add(&self.stats.overlapped_ops, 1);
        self.provider.complete(block, error, bytes)
    }

    fn check_provider_block(&self, index: usize, error: u32, bytes: u32) {
        let result = self.prov[index].get_result(false);
        match error {
            0 => assert_eq!(result.unwrap(), bytes),
            error => assert_eq!(errno(result), error as i32),
        }
    }

    /// A cancel of everything: a file's queue, the overlapped file's, or the lio descriptor's.
    fn cancel_many(&mut self, pool: &FilePool) {
        add(&self.stats.cancel_calls, 1);
        let (reached, cancelled): (Vec<Req>, io::Result<usize>) = match self.rng.below(3) {
            0 => {
                let (key, file) = &self.slots[self.rng.below(self.slots.len())];
                let reached = self.open.iter().filter(|(_, (k, _))| k == key);
                let reached = reached.map(|(ticket, _)| Req::Ticket(*ticket)).collect();
                (reached, file.cancel_all())
            }
            1 => {
                let reached = self.ovl.keys().map(|at| Req::At(*at)).collect();
                (reached, self.ovl_file.cancel_all())
            }
            _ => {
                let reached = self.lio.keys().map(|at| Req::At(*at)).collect();
                let cancelled = pool.aio_cancel(self.lio_fd.as_raw_fd(), None);
                match cancelled.unwrap_or_else(|err| panic!("aio_cancel: {err}")) {
                    AioCancel::Canceled => (reached, Ok(1)),
                    // Some were running: those still complete normally.
                    AioCancel::NotCanceled => (reached, Ok(0)),
                    AioCancel::AllDone => {
                        (reached, Err(io::Error::from_raw_os_error(libc::ENOENT)))
                    }
                }
            }
        };
        match cancelled {
            Ok(_) => {
                for req in reached {
                    self.cancels.entry(req).or_insert(false);
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                add(&self.stats.cancel_misses, 1)
            }
            Err(err) => panic!("cancel everything: {err}"),
        }
    }

    /// Drops a file, with whatever it has queued (which completes `ECANCELED`), and opens
    /// another in its place.
    fn replace_file(&mut self, pool: &FilePool) {
        let (key, file) = self.slots.swap_remove(self.rng.below(self.slots.len()));
        add(&self.stats.closes, 1);
        if self.open.values().any(|(k, _)| *k == key) {
            add(&self.stats.closes_with_pending, 1);
        }
        self.dropped.insert(key);
        drop(file);
        self.open_slot(pool);
    }

    /// A record from the port.
    fn on_record(&mut self, record: &Completion) {
        match record.key() {
            LIO_KEY => {
                let at = record.overlapped();
                let raw = self.lio.remove(&at).unwrap_or_else(|| {
                    panic!("{record:?}: no lio request pending there (unknown, or a second record)")
                });
                // SAFETY: freed only after the round; its record is here, so the pool is done
                // with it.
                let req = unsafe { &*(raw as *const LioReq) };
                if req.gmcs {
                    let aiocb = (req.cb.error(), req.cb.result().ok());
                    assert_eq!(
                        aiocb,
                        (0, Some(0)),
                        "LIO_NOWAIT_GMCS leaves the aiocb alone"
                    );
                } else {
                    let expected = if record.error() == 0 {
                        record.bytes() as isize
                    } else {
                        -1
                    };
                    let aiocb = (req.cb.error() as u32, req.cb.result().unwrap());
                    assert_eq!(aiocb, (record.error(), expected), "{record:?}: the aiocb");
                }
                let result = record.result().map(|n| n as usize);
                self.outcome(Req::At(at), req.op, result, Some(&req.buf), false);
            }
            OVERLAPPED_KEY => {
                let at = record.overlapped();
                let raw = self
                    .ovl
                    .remove(&at)
                    .unwrap_or_else(|| panic!("{record:?}: no overlapped request pending there"));
                // SAFETY: as for lio requests.
                let req = unsafe { &*(raw as *const OvlReq) };
                let block = req.ovl.get_result(false).map_err(|err| err.raw_os_error());
                let carried = record.result().map_err(|err| err.raw_os_error());
                assert_eq!(block, carried, "{record:?}: the block disagrees");
                let result = record.result().map(|n| n as usize);
                self.outcome(Req::At(at), req.op, result, Some(&req.buf), false);
            }
            PROVIDER_KEY => {
                let (index, error, bytes) = self
                    .prov_open
                    .remove(&record.overlapped())
                    .unwrap_or_else(|| panic!("{record:?}: no provider request completed there"));
                let carried = (record.error(), record.bytes());
                assert_eq!(
                    carried,
                    (error, bytes),
                    "the record carries what was reported"
                );
                self.check_provider_block(index, error, bytes);
            }
            key => {
                let ticket = record.overlapped() as u64;
                let (owner, op) = self.open.remove(&ticket).unwrap_or_else(|| {
                    panic!("{record:?}: no request has this ticket pending (unknown, or a second record)")
                });
                assert_eq!(key, owner, "{record:?}: the key of another file");
                match self.slots.iter().find(|(k, _)| *k == key) {
                    Some((_, file)) => {
                        let done = file
                            .finish(record)
                            .unwrap_or_else(|err| panic!("{record:?}: finish: {err}"));
                        check_record(record, &done.result);
                        let req = Req::Ticket(ticket);
                        self.outcome(req, op, done.result, Some(&done.buf), false);
                    }
                    None => {
                        // Dropped with its file: the record is all there is.
                        assert!(self.dropped.contains(&key), "{record:?}: no such file");
                        let result = record.result().map(|n| n as usize);
                        self.outcome(Req::Ticket(ticket), op, result, None, true);
                    }
                }
            }
        }
    }

    /// Checks one request's outcome; `dropped` if its file was dropped (which cancels).
    fn outcome(
        &mut self,
        req: Req,
        op: FileOp,
        result: io::Result<usize>,
        buf: Option<&[u8]>,
        dropped: bool,
    ) {
        let cancel = self.cancels.remove(&req);
        if is_canceled(&result) {
            add(&self.stats.cancelled, 1);
            assert!(
                cancel.is_some() || dropped,
                "{req:?} {op:?}: ECANCELED, yet never cancelled"
            );
            if let FileOp::Write(f) = op {
                self.blocks[f] = Block::Cancelled;
            }
            return;
        }
        assert_ne!(
            cancel,
            Some(true),
            "{req:?} {op:?}: its cancel succeeded, yet it completed with {result:?}"
        );
        let n = result.unwrap_or_else(|err| panic!("{req:?} {op:?}: {err}"));
        match op {
            FileOp::Read(b) => {
                assert_eq!(n, BLOCK, "{req:?} {op:?}");
                if let Some(buf) = buf {
                    let expected = &self.stable[b * BLOCK..][..BLOCK];
                    assert!(
                        buf[..BLOCK] == *expected,
                        "{req:?}: stable block {b} read back wrong"
                    );
                }
            }
            FileOp::Write(f) => {
                assert_eq!(n, BLOCK, "{req:?} {op:?}");
                self.blocks[f] = Block::Written;
            }
            FileOp::Sync => assert_eq!(n, 0, "{req:?} {op:?}"),
        }
    }

    /// After the port was closed under the round and the pool dropped (so every request is
    /// done): finds the outcome of each request whose record the close discarded, once.
    fn abandon(&mut self) {
        while !self.prov_started.is_empty() {
            let completed = self.provider_complete_next();
            assert_eq!(
                errno(completed),
                libc::EBADF,
                "completing into a closed port"
            );
        }
        for (index, error, bytes) in std::mem::take(&mut self.prov_open).into_values() {
            add(&self.stats.discarded, 1);
            self.check_provider_block(index, error, bytes);
        }
        for (ticket, (key, op)) in std::mem::take(&mut self.open) {
            add(&self.stats.discarded, 1);
            let req = Req::Ticket(ticket);
            let Some((_, file)) = self.slots.iter().find(|(k, _)| *k == key) else {
                // Dropped with its file, and its record with the port: nothing is left.
                if let FileOp::Write(f) = op {
                    self.blocks[f] = Block::Unknown;
                }
                self.cancels.remove(&req);
                continue;
            };
            let forged = Completion::new(key, 0, ticket as usize);
            let done = file.finish(&forged).unwrap_or_else(|err| {
                panic!("{op:?}: no outcome for a request whose record was discarded: {err}")
            });
            assert_eq!(
                errno(file.finish(&forged)),
                libc::EINVAL,
                "handed back twice"
            );
            self.outcome(req, op, done.result, Some(&done.buf), false);
        }
        for (at, raw) in std::mem::take(&mut self.lio) {
            add(&self.stats.discarded, 1);
            // SAFETY: freed only after the round; the pool is gone, so nothing runs it.
            let req = unsafe { &*(raw as *const LioReq) };
            let status = req.cb.error();
            if req.gmcs {
                // GMCS reports through the record alone, which the close discarded.
                assert_eq!(status, 0, "LIO_NOWAIT_GMCS leaves the aiocb alone");
                if let FileOp::Write(f) = req.op {
                    self.blocks[f] = Block::Unknown;
                }
                self.cancels.remove(&Req::At(at));
                continue;
            }
            assert_ne!(status, libc::EINPROGRESS, "a request outlived its pool");
            let result = match status {
                0 => Ok(req.cb.result().unwrap() as usize),
                errno => Err(io::Error::from_raw_os_error(errno)),
            };
            self.outcome(Req::At(at), req.op, result, Some(&req.buf), false);
        }
        for (at, raw) in std::mem::take(&mut self.ovl) {
            add(&self.stats.discarded, 1);
            // SAFETY: as above.
            let req = unsafe { &*(raw as *const OvlReq) };
            assert!(req.ovl.is_complete(), "a request outlived its pool");
            let result = req.ovl.get_result(false).map(|n| n as usize);
            self.outcome(Req::At(at), req.op, result, Some(&req.buf), false);
        }
    }

    /// Reads the whole file back: the stable region as it was put there, each fresh block
    /// as its write's outcome says.
    fn verify_file(&self) {
        let mut stable = vec![0; self.stable.len()];
        self.master.read_exact_at(&mut stable, 0).unwrap();
        assert!(stable == self.stable, "the stable region changed");
        let mut got = [0; BLOCK];
        for (f, state) in self.blocks.iter().enumerate() {
            let offset = FileOp::Write(f).offset();
            self.master.read_exact_at(&mut got, offset).unwrap();
            let zero = got.iter().all(|&b| b == 0);
            let written = || got[..] == self.fresh(f)[..];
            match state {
                Block::Untouched | Block::Cancelled => {
                    assert!(zero, "fresh block {f} ({state:?}) was written")
                }
                Block::Written => assert!(written(), "fresh block {f}: its write is not there"),
                Block::Unknown => assert!(zero || written(), "fresh block {f}: torn"),
                Block::Pending => panic!("fresh block {f}: its write had no outcome"),
            }
        }
    }

    /// Frees the lio and overlapped requests: only once the pool that ran them is gone.
    fn free_requests(&mut self) {
        for raw in self.lio_all.drain(..) {
            // SAFETY: made by `Box::into_raw` in `lio_batch`; the pool is gone, nothing runs it.
            drop(unsafe { Box::from_raw(raw as *mut LioReq) });
        }
        for raw in self.ovl_all.drain(..) {
            // SAFETY: as above, from `overlapped_batch`.
            drop(unsafe { Box::from_raw(raw as *mut OvlReq) });
        }
    }
}

/// An `LIO_WAIT` list, submitted without the round's lock: the call returns with every
/// request done, and posts no record.
fn lio_wait(files: &Mutex<Files>, pool: &FilePool) {
    let mut list = Vec::new();
    {
        let mut files = lock(files);
        if files.port.is_closed() {
            return;
        }
        for _ in 0..1 + files.rng.below(8) {
            list.push(files.lio_request(None));
        }
    }
    let cbs: Vec<*mut Aiocb> = list.iter().map(|raw| raw.cast::<Aiocb>()).collect();
    // SAFETY: `LIO_WAIT` returns once every request is done; the aiocbs (each the first
    // field of its `repr(C)` request) and buffers are freed only after that.
    unsafe { pool.lio_listio(LioMode::Wait, &cbs) }.unwrap_or_else(|err| panic!("LIO_WAIT: {err}"));
    let mut files = lock(files);
    add(&files.stats.lio_ops, list.len() as u64);
    for raw in list {
        // SAFETY: made by `Box::into_raw` above; its request is done.
        let req = unsafe { Box::from_raw(raw) };
        let status = (req.cb.error(), req.cb.result().unwrap());
        assert_eq!(status, (0, BLOCK as isize), "LIO_WAIT {:?}", req.op);
        // Nothing cancels these: only this thread could, and it waits here.
        files.outcome(Req::At(0), req.op, Ok(BLOCK), Some(&req.buf), false);
    }
}

/// The file round's submitter: batches until the deadline (or the port's close), then the
/// provider completes what it accepted.
fn submit_files(files: &Mutex<Files>, pool: &FilePool, deadline: Instant, mut rng: Rng) {
    for _ in 0..FILE_BATCHES_MAX {
        if Instant::now() >= deadline {
            break;
        }
        if rng.one_in(32) {
            lio_wait(files, pool);
            continue;
        }
        let mut files = lock(files);
        if files.port.is_closed() {
            return;
        }
        if !files.submit_some(pool) {
            drop(files);
            thread::sleep(Duration::from_micros(200));
        }
    }
    let mut files = lock(files);
    if !files.port.is_closed() {
        while !files.prov_started.is_empty() {
            files
                .provider_complete_next()
                .expect("completing into an open port");
        }
    }
}

fn file_round(seed: u64, budget: Duration, stats: &Stats) -> String {
    let mut rng = Rng::new(seed);
    let (capacity, concurrency, threads) = (
        rng.pick(&CAPACITIES),
        rng.pick(&CONCURRENCY),
        1 + rng.below(3),
    );
    let port = Port::builder()
        .capacity(capacity)
        .concurrency(concurrency)
        .build()
        .unwrap();
    add(&stats.ports, 1);
    let pool = FilePool::builder().threads(threads).build().unwrap();
    let start = Instant::now();
    let deadline = start + budget;
    let abrupt = ending(&mut rng, start, budget);
    let hard = deadline + 3 * BULK_PATIENCE;
    let posts = Posts::new(1);
    let closed_at = OnceLock::new();
    let files = Mutex::new(Files::new(port.clone(), stats, rng.fork(), &pool));
    thread::scope(|s| {
        let _guard = CloseOnPanic {
            port: &port,
            closed_at: &closed_at,
        };
        let (port, posts, closed_at, files, pool) = (&port, &posts, &closed_at, &files, &pool);
        let producer = {
            let rng = rng.fork();
            s.spawn(move || posts.produce(0, port, rng, deadline, stats))
        };
        let submitter = {
            let rng = rng.fork();
            s.spawn(move || submit_files(files, pool, deadline, rng))
        };
        let servers: Vec<_> = (0..2)
            .map(|_| {
                let rng = rng.fork();
                s.spawn(move || {
                    serve(port, posts, rng, stats, closed_at, hard, |record| {
                        lock(files).on_record(record)
                    })
                })
            })
            .collect();
        match abrupt {
            Some(at) => {
                sleep_until(at);
                {
                    // Under the lock: no lio list names the port's handle number after its
                    // close (the number may already name another round's port).
                    let _files = lock(files);
                    close_port(port, closed_at, stats);
                }
                join(producer);
                join(submitter);
                servers.into_iter().for_each(join);
            }
            None => {
                join(submitter);
                if rng.one_in(2) {
                    let mut files = lock(files);
                    for _ in 0..3 {
                        files.cancel_many(pool);
                    }
                }
                join(producer);
                let drained = wait_for(BULK_PATIENCE, || {
                    assert!(!port.is_closed(), "another thread of the round failed");
                    lock(files).in_flight() == 0 && posts.unseen() == 0
                });
                let files = lock(files);
                assert!(
                    drained,
                    "file round (capacity {capacity}, concurrency {concurrency}): {} requests \
                     and {} posted records never came",
                    files.in_flight(),
                    posts.unseen()
                );
                assert_eq!(port.queued(), 0, "records beyond every request and post");
                close_port(port, closed_at, stats);
                drop(files);
                servers.into_iter().for_each(join);
            }
        }
    });
    // Dropping the pool runs what is still queued and joins its threads: every request is
    // done after this.
    drop(pool);
    let mut files = files
        .into_inner()
        .unwrap_or_else(|_| panic!("a thread of the round failed"));
    if abrupt.is_some() {
        files.abandon();
        add(&stats.posts_discarded, posts.unseen());
    }
    files.verify_file();
    let (_, file) = &files.slots[0];
    let late = file.read_at(vec![0; BLOCK], 0);
    assert_eq!(
        errno(late),
        libc::EAGAIN,
        "a request after the pool is gone"
    );
    files.provider.close().unwrap();
    let late = files.provider.complete(&Overlapped::new(), 0, 0);
    assert_eq!(
        errno(late),
        libc::EBADF,
        "a completion after the handle closed"
    );
    files.free_requests();
    let end = ending_name(abrupt);
    format!("files capacity {capacity} concurrency {concurrency} {threads} pool threads {end}")
}

// ---------------------------------------------------------------------------------------
// Churn: short-lived ports
// ---------------------------------------------------------------------------------------

const CHURN_PORTS_MAX: usize = 48;
const CHURN_KEY: u64 = 5;

fn churn_round(seed: u64, budget: Duration, stats: &Stats) -> String {
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + budget;
    let pace = budget / CHURN_PORTS_MAX as u32;
    let mut made = 0;
    for _ in 0..CHURN_PORTS_MAX {
        if Instant::now() >= deadline {
            break;
        }
        let port = Port::builder()
            .capacity(1 << rng.below(11))
            .drive(rng.pick(&DRIVES))
            .concurrency(rng.pick(&CONCURRENCY))
            .build()
            .unwrap();
        add(&stats.ports, 1);
        made += 1;
        match rng.below(4) {
            0 | 1 => close_under_waiters(&port, &mut rng, stats),
            2 => close_with_pending_recv(&port, &mut rng, stats),
            _ => drop_with_pending(port, &mut rng, stats),
        }
        thread::sleep(pace.mul_f64(rng.unit()));
    }
    format!("churn {made} ports")
}

/// Waiters (some batched) on a port that gets up to 64 records and is then closed under
/// them: each record is dequeued at most once, each waiter returns `EBADF` promptly.
fn close_under_waiters(port: &Port, rng: &mut Rng, stats: &Stats) {
    let posted = rng.below(65) as u32;
    let seen = AtomicU64::new(0);
    let closed_at = OnceLock::new();
    thread::scope(|s| {
        let waiters: Vec<_> = (0..1 + rng.below(3))
            .map(|_| {
                let batched = rng.one_in(3);
                let (seen, closed_at) = (&seen, &closed_at);
                s.spawn(move || wait_for_close(port, batched, posted, seen, closed_at, stats))
            })
            .collect();
        for i in 0..posted {
            port.post(Completion::new(CHURN_KEY, i, i as usize))
                .unwrap();
        }
        thread::sleep(rng.micros(3000));
        close_port(port, &closed_at, stats);
        waiters.into_iter().for_each(join);
    });
    let seen = seen.load(Ordering::Relaxed).count_ones();
    add(&stats.posts, u64::from(posted));
    add(&stats.posts_discarded, u64::from(posted - seen));
    // Every call fails with EBADF now, and the handle names nothing of this port's.
    assert_eq!(errno(port.post(Completion::default())), libc::EBADF);
    assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::EBADF);
    let mut out = [Completion::default(); 4];
    assert_eq!(errno(port.get_many(&mut out, 1, None)), libc::EBADF);
    assert_eq!(errno(port.drain(4, None)), libc::EBADF);
    assert_eq!(errno(port.close()), libc::EBADF);
    let found = Port::from_handle(port.handle());
    assert!(
        !matches!(found, Some(other) if other.same_port(port)),
        "a closed port is still found by its handle"
    );
}

fn wait_for_close(
    port: &Port,
    batched: bool,
    posted: u32,
    seen: &AtomicU64,
    closed_at: &OnceLock<Instant>,
    stats: &Stats,
) {
    let mut out = [Completion::default(); 8];
    for _ in 0..100_000 {
        let got = if batched {
            port.get_many(&mut out, 1, Some(BULK_PATIENCE))
                .map(|drained| {
                    assert_eq!(
                        drained.status,
                        DrainStatus::Complete,
                        "the close did not end the wait"
                    );
                    drained.count
                })
        } else {
            port.get(Some(BULK_PATIENCE)).map(|record| {
                out[0] = record;
                1
            })
        };
        match got {
            Ok(n) => {
                for record in &out[..n] {
                    let valid = record.key() == CHURN_KEY
                        && record.bytes() < posted
                        && record.overlapped() == record.bytes() as usize;
                    assert!(valid, "{record:?}: not a record of this port");
                    let bit = 1u64 << record.bytes();
                    let before = seen.fetch_or(bit, Ordering::Relaxed);
                    assert_eq!(before & bit, 0, "{record:?} dequeued twice");
                }
            }
            Err(err) => match err.raw_os_error() {
                Some(libc::EBADF) => {
                    let after = closed_at
                        .get()
                        .expect("EBADF only after the close")
                        .elapsed();
                    assert!(
                        after < WAKE_BOUND,
                        "a waiter returned {after:?} after the close"
                    );
                    add(&stats.woken, 1);
                    return;
                }
                // Another waiter holds the batched dequeue, or this one is batched.
                Some(libc::EBUSY) => thread::sleep(Duration::from_micros(100)),
                _ => panic!("waiting on a port about to close: {err}"),
            },
        }
    }
    panic!("a waiter never saw its port close");
}

/// A socket request pending while a thread waits (with the inline drive, as the leader in
/// `epoll_wait`), the port closed under both: the waiter returns `EBADF` (or the record, if
/// the data came first) and the request still has exactly one outcome.
fn close_with_pending_recv(port: &Port, rng: &mut Rng, stats: &Stats) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let socket = port.associate(a, CHURN_KEY).unwrap();
    add(&stats.socket_ops, 1);
    let ticket = match socket.recv(vec![0; 16]).unwrap() {
        Submitted::Pending(ticket) => ticket,
        Submitted::Done(done) => panic!("a recv with nothing sent completed at once: {done:?}"),
    };
    let early = rng.one_in(2);
    let closed_at = OnceLock::new();
    let taken = thread::scope(|s| {
        let waiter = s.spawn(|| port.get(Some(BULK_PATIENCE)));
        thread::sleep(rng.micros(3000));
        if early {
            b.write_all(b"early").unwrap();
            thread::sleep(rng.micros(1000));
        }
        close_port(port, &closed_at, stats);
        match join(waiter) {
            Ok(record) => Some(record),
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
                let after = closed_at.get().expect("set before the close").elapsed();
                assert!(
                    after < WAKE_BOUND,
                    "a waiter returned {after:?} after the close"
                );
                add(&stats.woken, 1);
                None
            }
        }
    });
    // After the close: no record can come of it.
    b.write_all(b"late").unwrap();
    add(&stats.closes, 1);
    socket.close().unwrap();
    let record = taken.unwrap_or_else(|| Completion::new(CHURN_KEY, 0, ticket as usize));
    assert_eq!(record.overlapped() as u64, ticket, "{record:?}");
    let done = socket
        .finish(&record)
        .unwrap_or_else(|err| panic!("the recv has no outcome: {err}"));
    assert_eq!(
        errno(socket.finish(&record)),
        libc::EINVAL,
        "an outcome handed back twice"
    );
    match taken {
        Some(record) => check_record(&record, &done.result),
        None => add(&stats.discarded, 1),
    }
    match done.result {
        Ok(n) => {
            let stream: &[u8] = if early { b"earlylate" } else { b"late" };
            assert!(
                n > 0 && stream.starts_with(&done.buf[..n]),
                "{:?}",
                &done.buf[..n]
            );
        }
        Err(err) => {
            assert_eq!(err.raw_os_error(), Some(libc::ECANCELED), "{err}");
            add(&stats.cancelled, 1);
        }
    }
}

/// A port dropped (not closed) with records queued and a socket request pending, in
/// either order with the socket: nothing may leak.
fn drop_with_pending(port: Port, rng: &mut Rng, stats: &Stats) {
    let posted = rng.below(65) as u32;
    for i in 0..posted {
        port.post(Completion::new(CHURN_KEY, i, i as usize))
            .unwrap();
    }
    let (a, b) = UnixStream::pair().unwrap();
    let socket = port.associate(a, CHURN_KEY + 1).unwrap();
    add(&stats.socket_ops, 1);
    assert!(matches!(
        socket.recv(vec![0; 16]).unwrap(),
        Submitted::Pending(_)
    ));
    let mut seen = 0;
    if rng.one_in(2) {
        // A short wait, which with the inline drive leads the reactor for a moment.
        for _ in 0..=posted {
            match port.get(Some(Duration::from_millis(1))) {
                Ok(record) => {
                    assert_eq!((record.key(), record.bytes()), (CHURN_KEY, seen));
                    seen += 1;
                }
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
                    break;
                }
            }
        }
    }
    add(&stats.posts, u64::from(posted));
    add(&stats.posts_discarded, u64::from(posted - seen));
    add(&stats.closes, 1);
    add(&stats.closes_with_pending, 1);
    if rng.one_in(2) {
        drop(port);
        drop(socket);
    } else {
        drop(socket);
        drop(port);
    }
    drop(b);
}
