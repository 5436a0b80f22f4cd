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
//!
//! This file holds the knobs, the test and its rounds, the measures of the process and the
//! pieces every workload uses; each workload has a module: [`posts`], [`net`], [`files`],
//! [`churn`].
#![cfg(not(loom))]

mod churn;
#[path = "../common/mod.rs"]
mod common;
mod files;
mod net;
mod posts;

use churn::churn_round;
use common::heap::{live_bytes, Counting};
use common::rng::Rng;
use files::file_round;
use iocp::{Completion, Port};
use net::net_round;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
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
/// stays within a few KiB in practice.) A leak per socket, file or port passes it within
/// seconds: each socket's state alone is a few hundred bytes, and a round closes thousands;
/// so do closed ports kept allocated (one of the default capacity has 128 KiB of slots in
/// each lane). Until closing let the handle table's entries go within the call, dozens of
/// closed ports waited in the epoch's bags: 60-170 KiB of growth here.
const HEAP_BOUND: i64 = 64 << 10;
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
    let heap = live_bytes();
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
    Ticket(iocp::Ticket),
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

/// A waiter's `EBADF` from the port closed at `closed_at`: it must come within
/// [`WAKE_BOUND`] of the close; counted as woken.
fn woken_by_close(closed_at: &OnceLock<Instant>, stats: &Stats, who: &str) {
    let after = closed_at
        .get()
        .expect("EBADF only after the close")
        .elapsed();
    assert!(
        after < WAKE_BOUND,
        "{who} returned {after:?} after the close"
    );
    add(&stats.woken, 1);
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
