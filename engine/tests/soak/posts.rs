//! Posted records: producers post in bursts to a round's ports, the serving threads check
//! each record arrives once, in per-producer order, never torn.

use crate::common::rng::{mix, Rng};
use crate::common::timing::BULK_PATIENCE;
use crate::{add, woken_by_close, CloseOnPanic, Stats};
use iocp::{Completion, DrainStatus, Port};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

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
pub(crate) struct Posts {
    producers: Vec<Producer>,
}

struct Producer {
    accepted: AtomicUsize,
    /// A bit per sequence number.
    seen: Vec<AtomicU64>,
    seen_count: AtomicUsize,
}

impl Posts {
    pub(crate) fn new(producers: usize) -> Posts {
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
    pub(crate) fn produce(
        &self,
        p: usize,
        port: &Port,
        mut rng: Rng,
        until: Instant,
        stats: &Stats,
    ) {
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
    pub(crate) fn unseen(&self) -> u64 {
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
pub(crate) fn serve(
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
                    woken_by_close(closed_at, stats, "a serving thread");
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
