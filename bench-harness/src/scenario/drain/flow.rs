//! Flow control shared by the cross-thread shapes: producers post at most a window of
//! records ahead of what the consumers have taken, as an I/O source is bounded by its
//! in-flight requests, and stop when told.

use super::{MAX_RECORDS, POST_BATCH};
use crate::libiocp::Gmcs;
use crate::scenario::{Backoff, Padded};
use iocp::Completion;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters a [`Flow`] has: one per producer (one consumer), or one per worker (pool).
pub(super) const MAX_COUNTERS: usize = 4;
/// Records a producer posts between two looks at the stop flag (a multiple of every batch
/// size, so that a batch boundary lands on it).
const POSTS_PER_STOP_CHECK: u64 = 64;

const _: () = assert!(POSTS_PER_STOP_CHECK.is_multiple_of(POST_BATCH as u64));

/// State the producers and the consumers share.
pub(super) struct Flow {
    /// Set when the measurement is done (or a consumer is gone); producers then stop.
    stop: Padded<AtomicBool>,
    /// Records taken, counted as [`Counting`] says, each published by the one consumer
    /// that writes it.
    pub taken: [Padded<AtomicU64>; MAX_COUNTERS],
    counting: Counting,
    /// Records a producer may have in flight.
    window: u64,
}

/// What the `taken` counters count.
#[derive(Clone, Copy)]
pub(super) enum Counting {
    /// One consumer counts what it took from each producer, in `taken[producer]`.
    PerProducer,
    /// One producer; each of `consumers` workers counts what it took, in `taken[worker]`.
    PerConsumer {
        /// Workers.
        consumers: usize,
    },
}

impl Flow {
    /// A flow where each producer may have `window` records in flight.
    pub fn new(counting: Counting, window: usize) -> Flow {
        Flow {
            stop: Padded::default(),
            taken: Default::default(),
            counting,
            window: window as u64,
        }
    }

    /// Whether producers (and pool workers) should stop.
    pub fn stopped(&self) -> bool {
        // Relaxed: a flag with no data behind it; a late look costs one more post or take.
        self.stop.load(Ordering::Relaxed)
    }

    /// Tells everyone to stop.
    pub fn stop(&self) {
        // Relaxed: as in `stopped`.
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Records the consumers have taken from `producer`.
    fn taken_from(&self, producer: usize) -> u64 {
        // Acquire (both arms): pairs with the consumers' release stores after they took the
        // records.
        match self.counting {
            Counting::PerProducer => self.taken[producer].load(Ordering::Acquire),
            Counting::PerConsumer { consumers } => self.taken[..consumers]
                .iter()
                .map(|taken| taken.load(Ordering::Acquire))
                .sum(),
        }
    }
}

/// Stops the flow when dropped, also when a consumer unwinds.
pub(super) struct StopOnDrop<'a>(pub &'a Flow);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The consumer's per-record work: counting records per producer (the record's key).
#[derive(Default)]
pub(super) struct Tally {
    pub counts: [u64; MAX_COUNTERS],
}

impl Tally {
    #[inline]
    pub fn take(&mut self, key: u64) {
        self.counts[key as usize % MAX_COUNTERS] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A record as a producer makes it: in the form its queue takes, so that no row pays for
/// a conversion its callers would not make.
pub(super) trait Record: Copy + Default {
    /// Record number `seq` of producer `producer`: keyed by the producer, with `seq` as its
    /// byte count and its overlapped value.
    fn sequenced(producer: usize, seq: u64) -> Self;
}

impl Record for Completion {
    #[inline]
    fn sequenced(producer: usize, seq: u64) -> Completion {
        Completion::new(producer as u64, seq as u32, seq as usize)
    }
}

impl Record for Gmcs {
    #[inline]
    fn sequenced(producer: usize, seq: u64) -> Gmcs {
        Gmcs {
            transfer_count: seq as u32,
            completion_key: producer as u32,
            errorno: 0,
            overlapped: seq as usize,
        }
    }
}

/// A producer: posts records keyed by its index, `batch` per call of `post`, at most
/// `flow`'s window ahead of the consumers, until told to stop. `post` returns `false` when
/// the producer should stop (the queue is gone or the flow says stop).
pub(super) fn produce<R: Record>(
    p: usize,
    batch: usize,
    flow: &Flow,
    post: &impl Fn(&[R], &Flow) -> bool,
) {
    assert!((1..=POST_BATCH).contains(&batch));
    let batch_len = batch as u64;
    let mut records = [R::default(); POST_BATCH];
    let mut sent: u64 = 0;
    // What the consumers had taken when last read: re-read only when the window looks
    // full, so the producer does not pull the consumers' cache lines on every post.
    let mut taken: u64 = 0;
    let mut backoff = Backoff::default();
    while sent < MAX_RECORDS {
        if sent + batch_len - taken > flow.window {
            taken = flow.taken_from(p);
            if sent + batch_len - taken > flow.window {
                if flow.stopped() {
                    return;
                }
                backoff.snooze();
                continue;
            }
            backoff.reset();
        }
        for (i, record) in records[..batch].iter_mut().enumerate() {
            let seq = sent + i as u64;
            *record = R::sequenced(p, seq);
        }
        if !post(&records[..batch], flow) {
            return;
        }
        sent += batch_len;
        if sent.is_multiple_of(POSTS_PER_STOP_CHECK) && flow.stopped() {
            return;
        }
    }
}

/// A polling consumer that found nothing backs off, as a blocking one would sleep.
pub(super) fn snooze_if_idle(idle: &mut Backoff, taken: usize) {
    if taken == 0 {
        idle.snooze();
    } else {
        idle.reset();
    }
}
