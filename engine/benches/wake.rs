//! Wake latency: how fast a record posted to a port reaches a thread waiting on it.
//!
//! Group `wake` measures one round trip of a ping-pong between the bench thread and an
//! echo thread that stays alive for the whole benchmark:
//!
//! * `iocp`: the bench thread posts to port 1 and waits in [`Port::get`] on port 2; the
//!   echo thread waits on port 1 and posts what it got to port 2;
//! * `futex`: the same over two raw futex words, with no spinning: the floor a plain
//!   sleep/wake pays, and the peer of the design target;
//! * `mpsc`: `std::sync::mpsc` channels, for reference.
//!
//! After the group, outside criterion's measurement, it prints to stderr the distribution
//! of single round trips (p50, p90, p99, p99.9) for each, the headline ratio
//! p50(iocp) / p50(futex) (design target ≤ 0.5: the port's adaptive spin should catch the
//! wake that the futex peer sleeps through), and the CPU an idle waiter burns (target under
//! 1% of a core), read from `CLOCK_THREAD_CPUTIME_ID`.
//!
//! Run it with `cargo bench -p iocp-engine --bench wake`. Each ping-pong needs both threads
//! on a core of their own; figures from a loaded or 2-core machine are only indicative, and
//! the port's most of all: when the two threads share a core, each wait spins out its budget
//! before the other thread can run to answer it (compare `taskset -c 0` with `-c 0,1`).
//! Under `cargo test --benches` the report runs with tiny counts, as a smoke test.

use criterion::Criterion;
use iocp::{Completion, Port};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A ping-pong between the calling thread and an echo thread it owns; dropping it stops
/// and joins the echo thread.
trait PingPong: Sized {
    const NAME: &'static str;

    fn start() -> Self;

    /// Wakes the echo thread and waits for its answer.
    fn round_trip(&mut self);
}

/// The record that tells an iocp echo thread to exit.
const STOP_KEY: u64 = u64::MAX;

struct IocpPingPong {
    ping: Port,
    pong: Port,
    echo: Option<JoinHandle<()>>,
}

fn unlimited_port() -> Port {
    // No concurrency limit: its accounting is a separate feature, and with two threads on
    // their own ports it would never hold either back.
    Port::builder()
        .concurrency(usize::MAX)
        .build()
        .expect("port")
}

impl PingPong for IocpPingPong {
    const NAME: &'static str = "iocp";

    fn start() -> IocpPingPong {
        let (ping, pong) = (unlimited_port(), unlimited_port());
        let echo = {
            let (ping, pong) = (ping.clone(), pong.clone());
            thread::spawn(move || loop {
                let record = ping.get(None).expect("echo get");
                if record.key() == STOP_KEY {
                    break;
                }
                pong.post(record).expect("echo post");
            })
        };
        IocpPingPong {
            ping,
            pong,
            echo: Some(echo),
        }
    }

    fn round_trip(&mut self) {
        self.ping.post(Completion::new(1, 0, 0)).expect("post");
        black_box(self.pong.get(None).expect("get"));
    }
}

impl Drop for IocpPingPong {
    fn drop(&mut self) {
        self.ping
            .post(Completion::new(STOP_KEY, 0, 0))
            .expect("post stop");
        if let Some(echo) = self.echo.take() {
            echo.join().expect("echo thread panicked");
        }
    }
}

/// A one-way signal on a futex word: `EMPTY`, `FULL` (signalled, not yet taken), or
/// `SLEEPING` (the receiver is, or is about to be, in `FUTEX_WAIT`). The three states are
/// the textbook ones (Drepper, "Futexes Are Tricky"): the receiver sleeps only when the word
/// says nothing came, and the sender calls `FUTEX_WAKE` only when the word says someone
/// sleeps. There is deliberately no spin: this is what a plain sleep and wake cost.
struct Signal(AtomicU32);

const EMPTY: u32 = 0;
const FULL: u32 = 1;
const SLEEPING: u32 = 2;

impl Signal {
    fn new() -> Signal {
        Signal(AtomicU32::new(EMPTY))
    }

    fn raise(&self) {
        // Release: pairs with the acquire in `wait`, so whatever was written before the
        // signal is seen by the receiver (as a real hand-off needs).
        if self.0.swap(FULL, Ordering::Release) == SLEEPING {
            // SAFETY: FUTEX_WAKE on a live, aligned u32 of this process; it only uses the
            // address to find sleepers.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.0.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    1,
                );
            }
        }
    }

    fn wait(&self) {
        loop {
            // Acquire: pairs with the release swap in `raise`.
            match self
                .0
                .compare_exchange(FULL, EMPTY, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(EMPTY) => {
                    // Relaxed: only the word's value matters; the data comes with FULL.
                    if self
                        .0
                        .compare_exchange(EMPTY, SLEEPING, Ordering::Relaxed, Ordering::Relaxed)
                        .is_err()
                    {
                        continue;
                    }
                }
                Err(_) => {}
            }
            // SAFETY: FUTEX_WAIT on a live, aligned u32 of this process, no timeout (NULL).
            // It returns at once if the word is no longer SLEEPING; a spurious or
            // interrupted return just goes round the loop.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.0.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    SLEEPING,
                    std::ptr::null::<libc::timespec>(),
                );
            }
        }
    }
}

struct FutexWords {
    ping: Signal,
    pong: Signal,
    stop: AtomicBool,
}

struct FutexPingPong {
    words: Arc<FutexWords>,
    echo: Option<JoinHandle<()>>,
}

impl PingPong for FutexPingPong {
    const NAME: &'static str = "futex";

    fn start() -> FutexPingPong {
        let words = Arc::new(FutexWords {
            ping: Signal::new(),
            pong: Signal::new(),
            stop: AtomicBool::new(false),
        });
        let echo = {
            let words = Arc::clone(&words);
            thread::spawn(move || loop {
                words.ping.wait();
                // Relaxed: the flag is written before the ping that delivers it.
                if words.stop.load(Ordering::Relaxed) {
                    break;
                }
                words.pong.raise();
            })
        };
        FutexPingPong {
            words,
            echo: Some(echo),
        }
    }

    fn round_trip(&mut self) {
        self.words.ping.raise();
        self.words.pong.wait();
    }
}

impl Drop for FutexPingPong {
    fn drop(&mut self) {
        // Relaxed: published by the release in `raise`.
        self.words.stop.store(true, Ordering::Relaxed);
        self.words.ping.raise();
        if let Some(echo) = self.echo.take() {
            echo.join().expect("echo thread panicked");
        }
    }
}

struct MpscPingPong {
    /// `None` once dropped, which is what tells the echo thread to exit.
    ping: Option<mpsc::Sender<u64>>,
    pong: mpsc::Receiver<u64>,
    echo: Option<JoinHandle<()>>,
}

impl PingPong for MpscPingPong {
    const NAME: &'static str = "mpsc";

    fn start() -> MpscPingPong {
        let (ping, ping_rx) = mpsc::channel();
        let (pong_tx, pong) = mpsc::channel();
        let echo = thread::spawn(move || {
            while let Ok(value) = ping_rx.recv() {
                if pong_tx.send(value).is_err() {
                    break;
                }
            }
        });
        MpscPingPong {
            ping: Some(ping),
            pong,
            echo: Some(echo),
        }
    }

    fn round_trip(&mut self) {
        self.ping.as_ref().expect("running").send(1).expect("send");
        black_box(self.pong.recv().expect("recv"));
    }
}

impl Drop for MpscPingPong {
    fn drop(&mut self) {
        self.ping = None;
        if let Some(echo) = self.echo.take() {
            echo.join().expect("echo thread panicked");
        }
    }
}

fn bench<P: PingPong>(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let mut pp = P::start();
    group.bench_function(P::NAME, |b| {
        // iter_custom: one clock read around the whole batch of round trips, and the echo
        // thread survives from one sample to the next.
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                pp.round_trip();
            }
            start.elapsed()
        })
    });
}

fn wake(c: &mut Criterion) {
    let mut group = c.benchmark_group("wake");
    bench::<IocpPingPong>(&mut group);
    bench::<FutexPingPong>(&mut group);
    bench::<MpscPingPong>(&mut group);
    group.finish();
}

/// Single round-trip durations, sorted, after `warm_up` unrecorded ones (which also let
/// the port's spin budget settle).
fn round_trips<P: PingPong>(warm_up: usize, trips: usize) -> Vec<Duration> {
    let mut pp = P::start();
    for _ in 0..warm_up {
        pp.round_trip();
    }
    let mut times = Vec::with_capacity(trips);
    for _ in 0..trips {
        let start = Instant::now();
        pp.round_trip();
        times.push(start.elapsed());
    }
    times.sort_unstable();
    times
}

/// The `p`-quantile of sorted `times` (nearest rank).
fn quantile(times: &[Duration], p: f64) -> Duration {
    let rank = (p * times.len() as f64).ceil() as usize;
    times[rank.clamp(1, times.len()) - 1]
}

fn print_distribution(name: &str, times: &[Duration]) {
    let us = |p| quantile(times, p).as_secs_f64() * 1e6;
    eprintln!(
        "  {name:<6} p50 {:>8.2} µs  p90 {:>8.2} µs  p99 {:>8.2} µs  p99.9 {:>8.2} µs  max {:>9.2} µs",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        us(1.0),
    );
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the calling thread's CPU clock exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `wait` `waits` times on a thread of its own: that thread's CPU time over the wall
/// time, in percent of one core.
fn idle_cpu(waits: u32, wait: impl Fn() + Send + 'static) -> f64 {
    thread::spawn(move || {
        let (cpu, wall) = (thread_cpu_time(), Instant::now());
        for _ in 0..waits {
            wait();
        }
        (thread_cpu_time() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0
    })
    .join()
    .expect("idle waiter panicked")
}

/// A waiter on an empty port: `waits` waits of `timeout`, in percent of a core.
fn idle_port(waits: u32, timeout: Duration) -> f64 {
    let port = unlimited_port();
    idle_cpu(waits, move || {
        let err = port.get(Some(timeout)).expect_err("the port is empty");
        assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
    })
}

/// The same on a bare futex word nobody wakes: what the sleeping itself costs, so that the
/// port's figure can be read as spin plus this.
fn idle_futex(waits: u32, timeout: Duration) -> f64 {
    let word = AtomicU32::new(0);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    idle_cpu(waits, move || {
        // SAFETY: FUTEX_WAIT on a live, aligned u32 of this closure, with a relative
        // timeout in `ts`, which outlives the call; the kernel only reads both. A spurious
        // or interrupted return only shortens this one wait.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                &ts as *const libc::timespec,
            );
        }
    })
}

/// The report printed after the criterion group. `full` is false under `cargo test`.
fn report(full: bool) {
    let (warm_up, trips) = if full { (2_000, 20_000) } else { (10, 100) };
    eprintln!();
    if full {
        eprintln!("wake: {trips} single round trips each (after {warm_up} unrecorded)");
    } else {
        eprintln!("wake: smoke run ({trips} round trips; figures meaningless)");
    }
    let iocp = round_trips::<IocpPingPong>(warm_up, trips);
    let futex = round_trips::<FutexPingPong>(warm_up, trips);
    let channel = round_trips::<MpscPingPong>(warm_up, trips);
    print_distribution(IocpPingPong::NAME, &iocp);
    print_distribution(FutexPingPong::NAME, &futex);
    print_distribution(MpscPingPong::NAME, &channel);
    let ratio = quantile(&iocp, 0.5).as_secs_f64() / quantile(&futex, 0.5).as_secs_f64();
    eprintln!("  p50(iocp) / p50(futex) = {ratio:.3}  (target <= 0.5)");

    // One long wait shows the idle cost proper; many short ones show the spin each wait
    // pays before it sleeps.
    let (long, short, shorts) = if full {
        (Duration::from_secs(1), Duration::from_millis(1), 1000)
    } else {
        (Duration::from_millis(10), Duration::from_millis(1), 10)
    };
    eprintln!(
        "  idle waiter, 1 wait of {long:?}: {:.4}% of a core  (target < 1%)",
        idle_port(1, long)
    );
    eprintln!(
        "  idle waiter, {shorts} waits of {short:?}: {:.4}% of a core  (raw futex: {:.4}%)",
        idle_port(shorts, short),
        idle_futex(shorts, short)
    );
}

fn main() {
    // Criterion runs the group once per benchmark under `cargo test --benches` (no
    // `--bench` flag, or `--test`), and only lists it under `--list`; the report follows
    // suit.
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|arg| arg == flag);
    let listing = has("--list");
    let full =
        has("--bench") && !has("--test") && !args.iter().any(|a| a.starts_with("--profile-time"));

    // Set before `configure_from_args` so that the command line can override them.
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    wake(&mut criterion);
    criterion.final_summary();
    if !listing {
        report(full);
    }
}
