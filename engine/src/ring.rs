//! The per-port ring: a bounded multi-producer, single-consumer queue of [`Completion`]s,
//! with an unbounded overflow queue behind it so that no record is ever dropped.
//!
//! # Algorithm
//!
//! Positions are unbounded counters; position `p` lives in slot `p & mask`. `head` is the
//! first position the consumer has not freed, `tail` the next position a producer will
//! claim.
//!
//! A producer claims positions `t..t + k` by one compare-and-swap `tail: t → t + k`, allowed
//! while `t + k - head <= capacity` (the claim of Vyukov's bounded queue, as in crossbeam's
//! `ArrayQueue`, widened to `k` slots as the Disruptor's claim is, so a batch of records
//! costs one atomic read-modify-write). It writes each record into its slot and *publishes*
//! it with one release store of the slot's stamp: `stamp(p) = p + 1`. A slot's stamp is
//! either its current position's stamp (published) or that of the position one lap before
//! (not yet), and the two always differ, so stamps never need clearing. Producers read
//! `head` only through a copy cached on their own cache line, refreshed when the ring looks
//! full, so a post does not pull the line the consumer writes on every drain.
//!
//! Each slot is 32 bytes, the record and its stamp together, two to a cache line. This
//! layout was chosen by measurement (see the README's drain figures, with the CPU named):
//! with a dense array of one-byte tags apart from the records, a consumer running right
//! behind a producer made two lines travel per record (the tag line, read by every look of
//! the consumer and written by every post, and the record's); with the stamp beside the
//! record one line travels per two records, and a producer's locked claim waits for one
//! store to drain instead of two. The consumer's check of a stamp reads the line its copy of
//! the record reads next, so the run is found and copied in one pass over memory; a vector
//! search over the stamps would load the same lines and save nothing.
//!
//! The consumer finds the run of published records from `head` by comparing stamps with
//! the expected ones, hands the records on, and frees the whole run with a single release
//! store of `head`.
//!
//! Only one consumer works at a time: [`Ring::try_consume`] hands out the consumer claim,
//! and several threads waiting on one port take turns through it. Producers never touch
//! it. Head, the producers' side, the claim and the overflow count each sit on their own
//! cache line.
//!
//! # Overflow
//!
//! When the ring is full a record goes to a crossbeam `SegQueue` (the idea of io_uring's
//! no-drop overflow list), and while that queue holds anything, every new record goes
//! behind it. A batch that finds room for only some of its records puts the rest there, in
//! order. The consumer moves overflow records into free ring slots before it looks for
//! a run ([`Consumer::refill`]), claiming slots like a producer. Per-producer order holds:
//! a producer that finds the overflow count at zero (acquire) has seen the count fall for
//! each of its earlier overflowed records, and the consumer lowers the count (release) only
//! after claiming that record's ring position, so the producer's next claim comes later.
//! A record popped from the overflow that does not fit yet waits in a one-record stash
//! owned by the consumer claim, still counted as overflow.
//!
//! # Sleepers
//!
//! A stamp is published with a plain store, which does not order the poster's later check
//! for sleeping waiters. The claim does: the compare-and-swap on `tail` is sequentially
//! consistent. So a waiter's last look before it sleeps is [`Ring::has_claimed`] (is `tail`
//! past `head`?) rather than the stamp: either the poster sees the sleeper, or the sleeper
//! sees the claim and waits the few nanoseconds until the stamp is published.

use crate::primitive::{AtomicBool, AtomicUsize, Ordering, UnsafeCell};
use crate::Completion;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;

/// Capacity of a port's ring unless one is chosen.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Largest ring capacity accepted (128 MiB of slots).
pub const MAX_CAPACITY: usize = 1 << 22;

pub(crate) struct Ring {
    /// First position not yet freed. Written only by the consumer-claim holder.
    head: CachePadded<AtomicUsize>,
    producers: CachePadded<Producers>,
    consumer: CachePadded<ConsumerSide>,
    /// Records in `overflow` plus the one in the stash, if any. Raised before a record is
    /// pushed to `overflow`, lowered once it has a ring position.
    overflow_len: CachePadded<AtomicUsize>,
    overflow: SegQueue<Completion>,
    slots: Box<[Slot]>,
    mask: usize,
}

/// One ring position's record and its publication stamp, on one half of a cache line.
#[cfg_attr(not(loom), repr(C, align(32)))]
struct Slot {
    record: UnsafeCell<MaybeUninit<Completion>>,
    /// [`stamp`] of the last position published here (0 before the first).
    stamp: AtomicUsize,
}

#[cfg(all(not(loom), target_pointer_width = "64"))]
const _: () = assert!(std::mem::size_of::<Slot>() == 32);

/// What producers write: the claim counter, and their copy of `head`.
struct Producers {
    tail: AtomicUsize,
    /// A value `head` had (never ahead of it): room is judged against it, and it is
    /// refreshed from `head` only when the ring looks full.
    head: AtomicUsize,
}

/// What only the consumer-claim holder touches.
struct ConsumerSide {
    /// The consumer claim: `true` while a [`Consumer`] exists.
    consuming: AtomicBool,
    /// An overflow record that found the ring full during a refill.
    stash: UnsafeCell<Option<Completion>>,
}

// SAFETY: a slot's record is written only by the producer that claimed its position and
// read only by the consumer-claim holder after the slot's stamp (release/acquire) says it
// is complete; a slot is reused only after `head` (release/acquire) has freed it. The stash
// is touched only under the consumer claim (acquire/release). Records are `Send`.
unsafe impl Sync for Ring {}
// SAFETY: the ring owns its records and slots outright, holds no thread-bound state (no
// references into thread-locals, no thread ids), and `Completion` is plain data.
unsafe impl Send for Ring {}

/// The stamp position `pos` publishes in its slot.
fn stamp(pos: usize) -> usize {
    pos.wrapping_add(1)
}

impl Ring {
    /// A ring of `capacity` slots; `capacity` is a power of two in `1..=MAX_CAPACITY`.
    pub(crate) fn new(capacity: usize) -> Ring {
        assert!(capacity.is_power_of_two() && capacity <= MAX_CAPACITY);
        Ring {
            head: CachePadded::new(AtomicUsize::new(0)),
            producers: CachePadded::new(Producers {
                tail: AtomicUsize::new(0),
                head: AtomicUsize::new(0),
            }),
            consumer: CachePadded::new(ConsumerSide {
                consuming: AtomicBool::new(false),
                stash: UnsafeCell::new(None),
            }),
            overflow_len: CachePadded::new(AtomicUsize::new(0)),
            overflow: SegQueue::new(),
            slots: (0..capacity)
                .map(|_| Slot {
                    record: UnsafeCell::new(MaybeUninit::uninit()),
                    stamp: AtomicUsize::new(0),
                })
                .collect(),
            mask: capacity - 1,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Queues `record`, in the ring if it has room and the overflow is empty, else in the
    /// overflow. Never fails, never drops.
    pub(crate) fn push(&self, record: Completion) {
        self.push_many(std::slice::from_ref(&record));
    }

    /// Queues `records` in order: as many as fit into ring slots claimed together, the
    /// rest into the overflow. Never fails, never drops.
    pub(crate) fn push_many(&self, records: &[Completion]) {
        let mut rest = records;
        // Acquire: pairs with the release decrement in `Consumer::refill` (per-producer
        // order, see the module docs).
        if self.overflow_len.load(Ordering::Acquire) == 0 {
            if let Some((pos, claimed)) = self.claim(rest.len()) {
                for (i, record) in rest[..claimed].iter().enumerate() {
                    self.write_and_publish(pos.wrapping_add(i), *record);
                }
                rest = &rest[claimed..];
            }
        }
        if rest.is_empty() {
            return;
        }
        // SeqCst: like the claim's, this increment is the poster's half of the sleeper
        // Dekker pair (see the module docs and `has_claimed`).
        self.overflow_len.fetch_add(rest.len(), Ordering::SeqCst);
        crate::primitive::loom_seqcst_fence();
        for record in rest {
            self.overflow.push(*record);
        }
    }

    /// Claims the next `1..=want` positions, as many as the ring has room for; `None` when
    /// it has none. Returns the first position and the count.
    fn claim(&self, want: usize) -> Option<(usize, usize)> {
        let producers = &*self.producers;
        let mut tail = producers.tail.load(Ordering::Relaxed);
        loop {
            // Acquire: pairs with the release store that cached it, itself made after an
            // acquire load of `head` (which pairs with `Consumer::release`): the slots' old
            // records have been read before we overwrite them.
            let mut head = producers.head.load(Ordering::Acquire);
            let mut room = self.capacity().wrapping_sub(tail.wrapping_sub(head));
            if room < want || room > self.capacity() {
                // Looks too full: refresh the copy. Acquire: pairs with `Consumer::release`.
                head = self.head.load(Ordering::Acquire);
                // Release: hands what the acquire above saw to the other producers. A racing
                // producer may store an older value; an old copy only looks fuller.
                producers.head.store(head, Ordering::Release);
                let used = tail.wrapping_sub(head);
                if (used as isize) < 0 {
                    // `tail` is older than `head`: reload it.
                    tail = producers.tail.load(Ordering::Relaxed);
                    continue;
                }
                if used >= self.capacity() {
                    return None;
                }
                room = self.capacity() - used;
            }
            let claimed = want.min(room);
            // SeqCst: the poster's half of the sleeper Dekker pair (see the module docs);
            // room was established by the acquire loads above. On x86_64 a `lock cmpxchg`
            // whatever the ordering.
            match producers.tail.compare_exchange_weak(
                tail,
                tail.wrapping_add(claimed),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    crate::primitive::loom_seqcst_fence();
                    return Some((tail, claimed));
                }
                Err(now) => tail = now,
            }
        }
    }

    fn write_and_publish(&self, pos: usize, record: Completion) {
        let slot = &self.slots[pos & self.mask];
        slot.record.with_mut(|cell| {
            // SAFETY: this thread claimed `pos`; the slot's previous record was freed
            // (`claim` saw `head` past it), and the consumer reads it only after the stamp.
            unsafe { (*cell).write(record) };
        });
        // Release: pairs with the consumer's acquire load of the stamp in `Consumer::ready`.
        slot.stamp.store(stamp(pos), Ordering::Release);
    }

    /// Whether the record at `head` is published or the overflow holds some: a waiter's
    /// cheap look while it spins.
    pub(crate) fn has_ready(&self) -> bool {
        // Acquire: pairs with `Consumer::release`, so the stamp read below is for this lap.
        let head = self.head.load(Ordering::Acquire);
        // Relaxed: a hint; whoever acts on it reads the stamp again under the claim.
        self.slots[head & self.mask].stamp.load(Ordering::Relaxed) == stamp(head)
            || self.overflow_len.load(Ordering::Relaxed) > 0
    }

    /// Whether any record is claimed past `head` or waits in the overflow: a waiter's last
    /// look before it sleeps (see the module docs).
    pub(crate) fn has_claimed(&self) -> bool {
        // SeqCst: the waiter's half of the Dekker pair with the SeqCst claim in `claim`
        // and increment in `push_many`.
        let tail = self.producers.tail.load(Ordering::SeqCst);
        tail != self.head.load(Ordering::SeqCst) || self.overflow_len.load(Ordering::SeqCst) > 0
    }

    /// Records queued: claimed ring positions (published or about to be) and the overflow.
    pub(crate) fn len(&self) -> usize {
        // SeqCst: read after a poster's SeqCst claim, like `has_claimed`.
        let head = self.head.load(Ordering::SeqCst);
        let tail = self.producers.tail.load(Ordering::SeqCst);
        tail.wrapping_sub(head) + self.overflow_len.load(Ordering::SeqCst)
    }

    /// The consumer claim, waiting out a holder: claims are held for one copy pass (the
    /// long-lived [`Batch`](crate::Batch) holds the port's exclusive dequeue, which keeps
    /// other dequeuers from getting here).
    pub(crate) fn consume(&self) -> Consumer<'_> {
        loop {
            if let Some(consumer) = self.try_consume() {
                return consumer;
            }
            crate::primitive::spin_loop();
        }
    }

    /// The consumer claim, or `None` while another thread holds it.
    pub(crate) fn try_consume(&self) -> Option<Consumer<'_>> {
        // Acquire: pairs with the release in `Consumer::drop`, so the previous holder's
        // `head` and stash writes are visible.
        if self.consumer.consuming.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(Consumer {
            ring: self,
            head: self.head.load(Ordering::Relaxed),
        })
    }
}

/// The consumer claim on a ring, released on drop.
pub(crate) struct Consumer<'a> {
    ring: &'a Ring,
    /// Private copy of `ring.head`; only the claim holder changes it.
    head: usize,
}

impl Consumer<'_> {
    /// Moves overflow records, oldest first, into free ring positions.
    pub(crate) fn refill(&mut self) {
        let ring = self.ring;
        // Relaxed: a stale zero only delays the move to the next drain.
        if ring.overflow_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        ring.consumer.stash.with_mut(|stash| {
            // SAFETY: the stash is only accessed by the consumer-claim holder, which we are.
            let stash = unsafe { &mut *stash };
            while let Some(record) = stash.take().or_else(|| ring.overflow.pop()) {
                let Some((pos, _)) = ring.claim(1) else {
                    *stash = Some(record);
                    return;
                };
                ring.write_and_publish(pos, record);
                // Release: pairs with the acquire load in `Ring::push_many`; a producer that
                // sees the count fall claims after this record's position.
                ring.overflow_len.fetch_sub(1, Ordering::Release);
            }
        });
    }

    /// `search`'s run of ready records; if it finds none, it moves overflow records into
    /// the ring first and searches again.
    pub(crate) fn refilled(&mut self, search: impl Fn(&Self) -> usize) -> usize {
        let n = search(self);
        if n > 0 {
            return n;
        }
        self.refill();
        search(self)
    }

    /// Length of the run of published records from `head`, at most `max`.
    pub(crate) fn ready(&self, max: usize) -> usize {
        let ring = self.ring;
        let max = max.min(ring.capacity());
        let mut n = 0;
        while n < max {
            let pos = self.head.wrapping_add(n);
            // Acquire: pairs with the release store of the stamp in `write_and_publish`.
            if ring.slots[pos & ring.mask].stamp.load(Ordering::Acquire) != stamp(pos) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Record `i` of the ready run (`i < ready(..)`).
    pub(crate) fn get(&self, i: usize) -> Completion {
        let slot = &self.ring.slots[self.head.wrapping_add(i) & self.ring.mask];
        slot.record.with(|cell| {
            // SAFETY: the caller found position `head + i` published (acquire), so the
            // record is initialized, and it stays until we free it.
            unsafe { (*cell).assume_init() }
        })
    }

    /// Hands the first `n` ready records to `f` with their index in the run, then frees
    /// them with one store.
    pub(crate) fn take(&mut self, n: usize, mut f: impl FnMut(usize, &Completion)) {
        for i in 0..n {
            f(i, &self.get(i));
        }
        self.release(n);
    }

    /// Frees the first `n` ready records.
    pub(crate) fn release(&mut self, n: usize) {
        self.head = self.head.wrapping_add(n);
        // Release: pairs with the acquire loads of `head` in `Ring::claim`: our reads of the
        // freed slots happen before any producer overwrites them.
        self.ring.head.store(self.head, Ordering::Release);
    }
}

impl Drop for Consumer<'_> {
    fn drop(&mut self) {
        // Release: pairs with the acquire swap in `Ring::try_consume`. Loom can order a
        // plain store inside a racing swap (tokio-rs/loom#254), so it gets a swap too.
        #[cfg(loom)]
        self.ring.consumer.consuming.swap(false, Ordering::Release);
        #[cfg(not(loom))]
        self.ring.consumer.consuming.store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn rec(i: usize) -> Completion {
        Completion::new(i as u64, i as u32, i)
    }

    fn drain_all(ring: &Ring) -> Vec<Completion> {
        let mut out = Vec::new();
        let mut c = ring.try_consume().unwrap();
        loop {
            c.refill();
            let n = c.ready(usize::MAX);
            if n == 0 {
                return out;
            }
            c.take(n, |_, record| out.push(*record));
        }
    }

    #[test]
    fn fifo_through_wraparound() {
        let ring = Ring::new(8);
        let mut next = 0;
        let mut seen = Vec::new();
        for round in 0..20 {
            for _ in 0..(round % 8) + 1 {
                ring.push(rec(next));
                next += 1;
            }
            seen.extend(drain_all(&ring));
        }
        assert_eq!(seen, (0..next).map(rec).collect::<Vec<_>>());
    }

    #[test]
    fn overflow_keeps_order_and_refills() {
        // Miri runs the overflow queue some thousand times slower: small rings suffice there.
        let caps: &[usize] = if cfg!(miri) {
            &[1, 2, 4, 16]
        } else {
            &[1, 2, 4, 64, 128]
        };
        for &cap in caps {
            let ring = Ring::new(cap);
            for i in 0..cap * 5 + 3 {
                ring.push(rec(i));
            }
            assert_eq!(ring.len(), cap * 5 + 3);
            assert!(ring.has_ready());
            let got = drain_all(&ring);
            assert_eq!(
                got,
                (0..cap * 5 + 3).map(rec).collect::<Vec<_>>(),
                "cap {cap}"
            );
            assert_eq!(ring.len(), 0);
            assert!(!ring.has_ready());
        }
    }

    #[test]
    fn a_second_consumer_is_refused() {
        let ring = Ring::new(4);
        let first = ring.try_consume().unwrap();
        assert!(ring.try_consume().is_none());
        drop(first);
        assert!(ring.try_consume().is_some());
    }

    #[test]
    fn run_stops_at_an_unpublished_slot() {
        for cap in [2, 16, 64, 256] {
            let ring = Ring::new(cap);
            // Several laps, so that stale stamps of the lap before are in every slot.
            for lap in 0..3 {
                let positions: Vec<usize> = (0..cap).map(|_| ring.claim(1).unwrap().0).collect();
                assert!(ring.claim(1).is_none(), "ring of {cap} must be full");
                let hole = (lap * 7 + 1) % cap;
                for (i, &pos) in positions.iter().enumerate() {
                    if i != hole {
                        ring.write_and_publish(pos, rec(pos));
                    }
                }
                let mut c = ring.try_consume().unwrap();
                assert_eq!(c.ready(usize::MAX), hole);
                assert_eq!(c.ready(hole.saturating_sub(1)), hole.saturating_sub(1));
                ring.write_and_publish(positions[hole], rec(positions[hole]));
                assert_eq!(c.ready(usize::MAX), cap);
                let mut got = Vec::new();
                c.take(cap, |i, record| {
                    assert_eq!(i, got.len());
                    got.push(*record);
                });
                assert_eq!(got, positions.iter().map(|&p| rec(p)).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_batch_claims_what_fits_and_overflows_the_rest_in_order() {
        for cap in [1, 4, 64] {
            let ring = Ring::new(cap);
            // Fill part of the ring, then post a batch larger than the room left.
            ring.push(rec(0));
            let batch: Vec<Completion> = (1..cap * 3).map(rec).collect();
            ring.push_many(&batch);
            assert_eq!(ring.len(), cap * 3);
            // While the overflow holds records, a later batch goes behind it, even with room.
            let mut c = ring.try_consume().unwrap();
            let n = c.ready(usize::MAX);
            assert_eq!(n, cap);
            c.take(n, |_, _| ());
            drop(c);
            ring.push_many(&[rec(cap * 3), rec(cap * 3 + 1)]);
            let mut got: Vec<Completion> = (0..cap).map(rec).collect();
            got.extend(drain_all(&ring));
            assert_eq!(
                got,
                (0..cap * 3 + 2).map(rec).collect::<Vec<_>>(),
                "cap {cap}"
            );
        }
    }

    #[test]
    fn one_claim_takes_a_whole_batch_when_it_fits() {
        let ring = Ring::new(16);
        assert_eq!(ring.claim(5), Some((0, 5)));
        assert_eq!(
            ring.claim(20),
            Some((5, 11)),
            "a claim takes the room there is"
        );
        assert_eq!(ring.claim(1), None);
        let mut c = ring.try_consume().unwrap();
        assert_eq!(c.ready(usize::MAX), 0, "claimed is not published");
        for pos in 0..16 {
            ring.write_and_publish(pos, rec(pos));
        }
        assert_eq!(c.ready(usize::MAX), 16);
        c.take(6, |_, _| ());
        drop(c);
        assert_eq!(ring.claim(8), Some((16, 6)));
    }

    /// Producers race one consumer, through rings small enough that most records take the
    /// overflow path and through one that holds them all (every record published by its
    /// producer's stamp store). Producers post singly and in batches of every length up to
    /// 8 (`push_many`). The consumer must see every record once, in per-producer order.
    /// This is the ring's concurrency test for Miri (its data-race detector and weak-memory
    /// emulation check the orderings) and for ThreadSanitizer.
    #[test]
    fn producers_racing_a_consumer_deliver_each_record_once_in_order() {
        const PRODUCERS: usize = 3;
        let (caps, per_producer): (&[usize], usize) = if cfg!(miri) {
            (&[2, 128], 30)
        } else {
            (&[1, 2, 8, 64, 1 << 16], 20_000)
        };
        for &cap in caps {
            let ring = std::sync::Arc::new(Ring::new(cap));
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let ring = std::sync::Arc::clone(&ring);
                    std::thread::spawn(move || {
                        let record = |seq: usize| Completion::new(p as u64, seq as u32, p ^ seq);
                        let mut seq = 0;
                        let mut batch = Vec::new();
                        while seq < per_producer {
                            let len = (seq % 9).min(per_producer - seq);
                            if len == 0 {
                                ring.push(record(seq));
                                seq += 1;
                                continue;
                            }
                            batch.clear();
                            batch.extend((seq..seq + len).map(record));
                            ring.push_many(&batch);
                            seq += len;
                        }
                    })
                })
                .collect();
            let mut next = [0u32; PRODUCERS];
            let mut seen = 0;
            while seen < PRODUCERS * per_producer {
                let mut consumer = ring.consume();
                let n = consumer.refilled(|c| c.ready(usize::MAX));
                if n == 0 {
                    drop(consumer);
                    std::thread::yield_now();
                    continue;
                }
                consumer.take(n, |_, record| {
                    let p = record.key() as usize;
                    assert_eq!(record.bytes(), next[p], "cap {cap} producer {p}");
                    assert_eq!(record.overlapped(), p ^ next[p] as usize, "torn record");
                    next[p] += 1;
                });
                seen += n;
            }
            for producer in producers {
                producer.join().unwrap();
            }
            assert_eq!(ring.len(), 0, "cap {cap}: records left behind");
        }
    }

    #[test]
    fn take_hands_on_a_wrapped_run_in_order() {
        let ring = Ring::new(8);
        for i in 0..6 {
            ring.push(rec(i));
        }
        assert_eq!(drain_all(&ring).len(), 6);
        for i in 6..13 {
            ring.push(rec(i));
        }
        let mut c = ring.try_consume().unwrap();
        assert_eq!(c.ready(64), 7);
        let mut got = Vec::new();
        c.take(7, |i, record| got.push((i, *record)));
        assert_eq!(
            got,
            (6..13)
                .enumerate()
                .map(|(i, r)| (i, rec(r)))
                .collect::<Vec<_>>()
        );
        assert_eq!(c.ready(64), 0);
    }
}
