//! Loom models of the port: the ring, the parker and the waiter rules, checked through the
//! public API ([`Port`], [`Completion`], [`PortBuilder`](iocp::PortBuilder),
//! [`DrainStatus`]) on the very code that ships (`src/primitive.rs` swaps std's atomics,
//! mutexes, condition variables and cells for loom's, and the futex is the emulated one).
//!
//! What the models check:
//!
//! * **Ring publish/consume** and **overflow hand-over**: records posted concurrently,
//!   into a ring with room and into a full one (the overflow queue), are delivered exactly
//!   once, in per-producer order, and never torn (each record carries the same value in its
//!   key, byte count and overlapped address).
//! * **No lost wakeup**: a consumer blocked in `get(None)` or in `get_many` waiting for
//!   `min` records always receives what is posted (a lost wake shows up as a loom
//!   deadlock), also with two blocked consumers and two producers, and with the batched
//!   waiter's `wanted` threshold.
//! * **Timeouts**: a timed wait that ends (under loom a timed futex wait is one whose
//!   deadline has already come) loses nothing: the record is either returned or still
//!   queued for the next poll, exactly once; a wake that races the timeout is handed on.
//! * **Close**: closing a port wakes every blocked waiter with `EBADF`, also when a post
//!   races the close.
//! * **EBUSY rule**: a batched dequeue and a `get` exclude each other, and a `get` never
//!   takes a record while a batched dequeue holds the port.
//! * **LIFO wake**: with two waiters asleep, a post wakes the one that fell asleep last,
//!   and a second post reaches the other.
//! * **Concurrency value**: with a value of 1, a second thread is not released while the
//!   first runs, and is released once the first calls `get` again, on the same port or
//!   on another one, also one without a limit.
//! * **Cancel versus complete**: an operation's runner and its cancellers race on the
//!   engine's [`Delivery`] (the state the file pool's jobs use): exactly one record is
//!   delivered, `ECANCELED` exactly when a canceller was told it cancelled, and a
//!   canceller told the operation is done finds its record queued. (Sockets decide the
//!   same race under their state mutex, by removing the request from its queue.)
//! * **A socket's word** ([`Gate`], what a submission reads without the socket's mutex):
//!   a `recv` that tried without the lock and found nothing never waits for an event
//!   that was handled before it queued; a short read never marks the socket drained over
//!   a readable event handled since its try; two threads' sends, made without the lock or
//!   under it, never overlap in the kernel, and neither is left waiting for an event that
//!   came and went. The socket's kernel side is a model (bytes waiting, room to send) and
//!   the steps around the word are `net.rs`'s, step for step (`submit`, `hand_over`,
//!   `run_writes`, `State::run`, `SocketInner::on_ready`).
//! * **Inline drive hand-over** (leader/follower): with [`Scripted`] readiness in the
//!   reactor's place (the port's hand-over code, `src/drive.rs`, runs unchanged; only the
//!   poll is the model's), a post reaches a leader blocked polling; one thread polls at a
//!   time; when the leader leaves with work, or by timing out, a follower takes the lead
//!   and collects the readiness that comes next; a waiter asleep before the port had a
//!   reactor is woken to lead.
//! * **Shared cached reads**: a run of tasks a `lio_listio` caller offers to an idle pool
//!   thread ([`Offers`]) has every task run exactly once, by one or the other, and the
//!   caller sees what the helper's tasks wrote (the pages it read) when it returns.
//!
//! The models live by concern in the modules below; this file holds what they share.
//!
//! Each model prints how many executions it explored and how long it took. The preemption
//! bound is set per model (2 or 3); `LOOM_MAX_PREEMPTIONS` overrides it.
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p iocp-engine --test loom --release \
//!     --target-dir target/loom -- --nocapture
//! ```
//!
//! # What the engine must give loom
//!
//! Loom 0.7 mis-models three patterns the engine uses, has no clock, and needs every busy
//! wait to yield. The engine accounts for these under `cfg(loom)`; without them the
//! models that block fail with loom artifacts (false deadlocks, or "exceeded maximum
//! number of branches"):
//!
//! 1. **`SeqCst` accesses are modelled as `AcqRel`** (loom's README, "Limitations"): a
//!    `SeqCst` load may still read an older value, here the initial one, after another
//!    thread's `SeqCst` write. The Dekker pairs between a poster (claim, then look for
//!    sleepers) and a waiter (register, then look for claims) rely on the single total
//!    order of `SeqCst` accesses, so loom would report lost wakeups that cannot happen: a
//!    `fence(SeqCst)` under `cfg(loom)` at each side's turn gives loom that order.
//! 2. **A plain store racing a read-modify-write** can be ordered between the RMW's read
//!    and write (tokio-rs/loom#254): `Parker::notify` against the swap in `Parker::park`,
//!    and `Consumer::drop` against the swap in `Ring::try_consume`, must be swaps too.
//! 3. **No clock**: a timed futex wait returns at once, so an endless wait must park
//!    without a deadline (no periodic naps), or loom never sees a lost wakeup.
//! 4. **Busy waits must yield**: a waiter that re-checks instead of sleeping (a record
//!    claimed but not yet published) must call `primitive::spin_loop` (a yield under loom)
//!    before it looks again, or loom keeps scheduling it and the model never ends.
//! 5. **`Mutex::try_lock` can block**: loom blocks a thread about to try a mutex when
//!    another takes it, a false deadlock if the taker then waits for that thread. The
//!    leader's try-lock of the poller is a flag under loom (`Turns::try_hold`).
//! 6. **No clock for a poll either**: a model's timed poll never waits and, finding
//!    nothing, reports its deadline as come (`Scripted`); the port's wait then times out.
//!
//! Loom also cannot finish a model in which two threads busy-wait on a third: it explores
//! schedules where the two yield to each other forever while the third, preempted, never
//! runs again (a switch away from a yield spends no preemption). Waiters that find a
//! record claimed but not yet published busy-wait so, and the engine lets one at a time
//! pause under loom (`Shared::pause_for_publication`: the others block on a mutex), so
//! that a pause has to let the poster run; `two_blocking_gets_two_producers` runs thanks
//! to it. Models that need two waiters asleep before a post wait for [`Port::sleeping`]
//! (under loom only), which counts the waiters past their last look, which only a wake
//! can end.
//!
//! And loom drops a thread's thread-locals only after its `join` has returned (std's
//! `join` waits for them), outside its scheduler: a destructor that blocks on a loom
//! mutex another thread holds deadlocks the process for real. The concurrency value counts
//! a released thread out from such a destructor when it exits (`Released::drop`), so in
//! the models a released thread that exits while others still run counts itself out with
//! a `get` first; the exit itself is left to the std tests in `tests/port/`.

#![cfg(loom)]

mod cancel;
mod close;
mod concurrency;
mod drive;
mod ebusy;
mod gate;
mod lifo;
mod offers;
mod ring;
mod wake;

use iocp::{Completion, DrainStatus, Port};
use loom::thread;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A poll: `Some(0)`.
pub(crate) const POLL: Option<Duration> = Some(Duration::ZERO);
/// A timed wait that cannot expire by the clock while a model runs: under loom the futex
/// wait with a deadline returns at once as timed out, so this exercises the timeout path.
pub(crate) const TIMED: Option<Duration> = Some(Duration::from_secs(3600));

/// Runs `f` under loom with `preemption_bound` (unless `LOOM_MAX_PREEMPTIONS` is set) and
/// reports the executions explored and the time taken.
pub(crate) fn model<F>(name: &str, preemption_bound: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemption_bound);
    }
    let bound = builder.preemption_bound;
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    let start = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    eprintln!(
        "loom model {name}: {} executions in {:.2?} (preemption bound {bound:?})",
        executions.load(Ordering::Relaxed),
        start.elapsed()
    );
}

pub(crate) fn port(capacity: usize) -> Port {
    Port::builder()
        .capacity(capacity)
        .concurrency(usize::MAX)
        .build()
        .unwrap()
}

/// Record `seq` of `producer`: the same value in key, bytes and overlapped, so that a
/// torn record (fields from two different posts) is caught.
pub(crate) fn record(producer: usize, seq: u32) -> Completion {
    let value = value(producer, seq);
    Completion::new(value, value as u32, value as usize)
}

pub(crate) fn value(producer: usize, seq: u32) -> u64 {
    ((producer as u64 + 1) << 4) | u64::from(seq)
}

/// Expected next sequence number of each producer: checks exactly-once, per-producer
/// order and untorn records as they are dequeued.
pub(crate) struct Tally {
    next: Vec<u32>,
}

impl Tally {
    fn new(producers: usize) -> Tally {
        Tally {
            next: vec![0; producers],
        }
    }

    fn see(&mut self, record: &Completion) {
        let value = record.key();
        assert!(value >= 1 << 4, "phantom record {record:?}");
        assert_eq!(u64::from(record.bytes()), value, "torn record {record:?}");
        assert_eq!(record.overlapped() as u64, value, "torn record {record:?}");
        assert_eq!(record.error(), 0, "torn record {record:?}");
        let producer = (value >> 4) as usize - 1;
        let seq = (value & 0xf) as u32;
        assert_eq!(
            seq, self.next[producer],
            "producer {producer}: record {seq} out of order or duplicated"
        );
        self.next[producer] += 1;
    }

    fn seen(&self) -> usize {
        self.next.iter().map(|&n| n as usize).sum()
    }

    fn assert_all(&self, posted: &[u32]) {
        assert_eq!(self.next, posted, "records lost");
    }
}

pub(crate) fn errno(err: &io::Error) -> i32 {
    err.raw_os_error()
        .unwrap_or_else(|| panic!("not an OS error: {err}"))
}

pub(crate) fn spawn_producer(port: &Port, producer: usize, count: u32) -> thread::JoinHandle<()> {
    let port = port.clone();
    thread::spawn(move || {
        for seq in 0..count {
            port.post(record(producer, seq)).unwrap();
        }
    })
}

/// Polls with `get_many(min 0)` until `total` records are seen.
pub(crate) fn drain_polling(port: &Port, tally: &mut Tally, total: usize) {
    let mut out = [Completion::default(); 4];
    while tally.seen() < total {
        let drained = port.get_many(&mut out, 0, POLL).unwrap();
        assert_eq!(drained.status, DrainStatus::Complete);
        for record in &out[..drained.count] {
            tally.see(record);
        }
        if drained.count == 0 {
            thread::yield_now();
        }
    }
}

/// Polls with `get(Some(0))` until `total` records are seen.
pub(crate) fn get_polling(port: &Port, tally: &mut Tally, total: usize) {
    while tally.seen() < total {
        match port.get(POLL) {
            Ok(record) => tally.see(&record),
            Err(err) => {
                assert_eq!(errno(&err), libc::ETIMEDOUT, "{err}");
                thread::yield_now();
            }
        }
    }
}

/// After every producer is joined: nothing is left (no duplicate, no phantom record).
pub(crate) fn assert_empty(port: &Port) {
    assert_eq!(port.queued(), 0);
    let mut out = [Completion::default(); 4];
    let drained = port.get_many(&mut out, 0, POLL).unwrap();
    assert_eq!(drained.count, 0, "extra record {:?}", out[0]);
    let err = port.get(POLL).unwrap_err();
    assert_eq!(errno(&err), libc::ETIMEDOUT, "{err}");
}
