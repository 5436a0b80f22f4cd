//! The per-port ring: a bounded multi-producer, single-consumer queue of [`Completion`]s,
//! with an unbounded overflow queue behind it so that no record is ever dropped.
//!
//! # Algorithm
//!
//! Positions are unbounded counters; position `p` lives in slot `p & mask`, in lap
//! `p >> log2(capacity)`. `head` is the first position the consumer has not freed, `tail`
//! the next position a producer will claim.
//!
//! A producer claims position `t` by a compare-and-swap `tail: t → t + 1`, allowed while
//! `t - head < capacity` (the claim of Vyukov's bounded queue, as in crossbeam's
//! `ArrayQueue`), writes its record into the slot, and *publishes* it by flipping the slot's
//! bit in a publication bitmap with one release `fetch_xor`.
//!
//! The bitmap is never cleared. Every slot's bit flips exactly once per lap, so in lap `L`
//! a slot holds a published record exactly when its bit differs from `L & 1`. That lets the
//! consumer find the run of published records from `head` a word at a time: one acquire
//! load covers 64 slots and `trailing_ones` measures the run, instead of one load and
//! compare per slot (the scalar path, [`Consumer::ready_scalar`], kept for comparison).
//! The run is then copied out as at most two contiguous slices (one `memcpy` each; glibc's
//! picks its SIMD variant at run time) and freed with a single release store of `head`.
//!
//! Only one consumer works at a time: [`Ring::try_consume`] hands out the consumer claim,
//! and several threads waiting on one port take turns through it. Producers never touch
//! it. Head, tail, the claim and the overflow count each sit on their own cache line.
//!
//! # Overflow
//!
//! When the ring is full a record goes to a crossbeam `SegQueue` (the idea of io_uring's
//! no-drop overflow list), and while that queue holds anything, every new record goes
//! behind it. The consumer moves overflow records into free ring slots before it looks for
//! a run ([`Consumer::refill`]), claiming slots like a producer. Per-producer order holds:
//! a producer that finds the overflow count at zero (acquire) has seen the count fall for
//! each of its earlier overflowed records, and the consumer lowers the count (release) only
//! after claiming that record's ring position, so the producer's next claim comes later.
//! A record popped from the overflow that does not fit yet waits in a one-record stash
//! owned by the consumer claim, still counted as overflow.

use crate::primitive::{AtomicBool, AtomicU64, AtomicUsize, Ordering, UnsafeCell};
use crate::Completion;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;

/// Capacity of a port's ring unless one is chosen.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Largest ring capacity accepted (96 MiB of records).
pub const MAX_CAPACITY: usize = 1 << 22;

pub(crate) struct Ring {
    /// First position not yet freed. Written only by the consumer-claim holder.
    head: CachePadded<AtomicUsize>,
    /// Next position to claim.
    tail: CachePadded<AtomicUsize>,
    /// The consumer claim: `true` while a [`Consumer`] exists.
    consuming: CachePadded<AtomicBool>,
    /// Records in `overflow` plus the one in `stash`, if any. Raised before a record is
    /// pushed to `overflow`, lowered once it has a ring position.
    overflow_len: CachePadded<AtomicUsize>,
    overflow: SegQueue<Completion>,
    /// An overflow record that found the ring full during a refill. Consumer-claim only.
    stash: UnsafeCell<Option<Completion>>,
    /// Bit `s % 64` of word `s / 64` is slot `s`'s publication bit (see the module docs).
    published: Box<[AtomicU64]>,
    slots: Box<[UnsafeCell<MaybeUninit<Completion>>]>,
    mask: usize,
    lap_shift: u32,
}

// SAFETY: a slot's record is written only by the producer that claimed its position and
// read only by the consumer-claim holder after the publication bit (release/acquire) says
// it is complete; a slot is reused only after `head` (release/acquire) has freed it. The
// stash is touched only under the consumer claim (acquire/release). Records are `Send`.
unsafe impl Sync for Ring {}
// SAFETY: see `Sync`; nothing in the ring is tied to a thread.
unsafe impl Send for Ring {}

impl Ring {
    /// A ring of `capacity` slots; `capacity` is a power of two in `1..=MAX_CAPACITY`.
    pub(crate) fn new(capacity: usize) -> Ring {
        assert!(capacity.is_power_of_two() && capacity <= MAX_CAPACITY);
        Ring {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            consuming: CachePadded::new(AtomicBool::new(false)),
            overflow_len: CachePadded::new(AtomicUsize::new(0)),
            overflow: SegQueue::new(),
            stash: UnsafeCell::new(None),
            published: (0..capacity.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            slots: (0..capacity)
                .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                .collect(),
            mask: capacity - 1,
            lap_shift: capacity.trailing_zeros(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Queues `record`, in the ring if it has room and the overflow is empty, else in the
    /// overflow. Never fails, never drops.
    pub(crate) fn push(&self, record: Completion) {
        // Acquire: pairs with the release decrement in `Consumer::refill` (per-producer
        // order, see the module docs).
        if self.overflow_len.load(Ordering::Acquire) == 0 {
            if let Some(pos) = self.claim() {
                self.write_and_publish(pos, record);
                return;
            }
        }
        // SeqCst: pairs with a waiter's SeqCst registration and its check of `has_ready`
        // (see `port`): either the waiter sees this count or the poster sees the waiter.
        self.overflow_len.fetch_add(1, Ordering::SeqCst);
        self.overflow.push(record);
    }

    /// Claims the next position if the ring has room.
    fn claim(&self) -> Option<usize> {
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            // Acquire: pairs with the consumer's release store of `head` in
            // `Consumer::release`: the freed slot's old record has been read.
            let head = self.head.load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            if (used as isize) < 0 {
                // `tail` is older than `head`: reload it.
                tail = self.tail.load(Ordering::Relaxed);
                continue;
            }
            if used >= self.capacity() {
                return None;
            }
            // Relaxed: the claim orders nothing by itself; the record is published by the
            // bitmap flip, and room was established by the acquire load of `head`.
            match self.tail.compare_exchange_weak(
                tail,
                tail.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(tail),
                Err(now) => tail = now,
            }
        }
    }

    fn write_and_publish(&self, pos: usize, record: Completion) {
        let slot = pos & self.mask;
        self.slots[slot].with_mut(|cell| {
            // SAFETY: this thread claimed `pos`; the slot's previous record was freed
            // (`claim` saw `head` past it), and the consumer reads it only after the flip.
            unsafe { (*cell).write(record) };
        });
        // SeqCst: the release half pairs with the consumer's acquire load of this word
        // (`Consumer::ready`); sequential consistency orders it before the poster's check
        // for sleeping waiters (see `port`). On x86_64 it is the same `lock xor` either way.
        self.published[slot >> 6].fetch_xor(1 << (slot & 63), Ordering::SeqCst);
    }

    fn lap_parity(&self, pos: usize) -> u64 {
        ((pos >> self.lap_shift) & 1) as u64
    }

    /// Whether a record is ready for the consumer: the one at `head` is published or the
    /// overflow holds some. A snapshot, used by waiters before they sleep.
    pub(crate) fn has_ready(&self) -> bool {
        // Acquire: pairs with `Consumer::release`, so the bit read below is for this lap.
        let head = self.head.load(Ordering::Acquire);
        let slot = head & self.mask;
        // SeqCst: pairs with the SeqCst flip in `write_and_publish` (waiter/poster Dekker).
        let word = self.published[slot >> 6].load(Ordering::SeqCst);
        ((word >> (slot & 63)) & 1) != self.lap_parity(head)
            || self.overflow_len.load(Ordering::SeqCst) > 0
    }

    /// Records queued: claimed ring positions (published or about to be) and the overflow.
    pub(crate) fn len(&self) -> usize {
        // SeqCst: read after a waiter's SeqCst registration, like `has_ready`.
        let head = self.head.load(Ordering::SeqCst);
        let tail = self.tail.load(Ordering::SeqCst);
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
        // `head` and `stash` writes are visible.
        if self.consuming.swap(true, Ordering::Acquire) {
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
        ring.stash.with_mut(|stash| {
            // SAFETY: the stash is only accessed by the consumer-claim holder, which we are.
            let stash = unsafe { &mut *stash };
            while let Some(record) = stash.take().or_else(|| ring.overflow.pop()) {
                let Some(pos) = ring.claim() else {
                    *stash = Some(record);
                    return;
                };
                ring.write_and_publish(pos, record);
                // Release: pairs with the acquire load in `Ring::push`; a producer that sees
                // the count fall claims after this record's position.
                ring.overflow_len.fetch_sub(1, Ordering::Release);
            }
        });
    }

    /// Length of the run of published records from `head`, at most `max`: one bitmap
    /// word (64 slots) per step.
    pub(crate) fn ready(&self, max: usize) -> usize {
        let ring = self.ring;
        let max = max.min(ring.capacity());
        let mut n = 0;
        while n < max {
            let pos = self.head.wrapping_add(n);
            let slot = pos & ring.mask;
            let bit = slot & 63;
            // Acquire: pairs with the producers' release flips in `write_and_publish`.
            // Each flip is a read-modify-write, so this one load sees every earlier flip
            // of the word and synchronizes with each of them.
            let word = ring.published[slot >> 6].load(Ordering::Acquire);
            let published = if ring.lap_parity(pos) == 0 {
                word
            } else {
                !word
            };
            let span = (64 - bit).min(ring.capacity() - slot).min(max - n);
            let run = ((published >> bit).trailing_ones() as usize).min(span);
            n += run;
            if run < span {
                break;
            }
        }
        n
    }

    /// [`ready`](Self::ready) one slot at a time, as a classic bounded-queue consumer
    /// checks each slot's stamp; kept to measure what the word-wide search buys.
    pub(crate) fn ready_scalar(&self, max: usize) -> usize {
        let ring = self.ring;
        let max = max.min(ring.capacity());
        let mut n = 0;
        while n < max {
            let pos = self.head.wrapping_add(n);
            let slot = pos & ring.mask;
            // Acquire: as in `ready`.
            let word = ring.published[slot >> 6].load(Ordering::Acquire);
            if ((word >> (slot & 63)) & 1) == ring.lap_parity(pos) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Record `i` of the ready run (`i < ready(..)`).
    pub(crate) fn get(&self, i: usize) -> Completion {
        let slot = self.head.wrapping_add(i) & self.ring.mask;
        self.ring.slots[slot].with(|cell| {
            // SAFETY: the caller found position `head + i` published (acquire), so the
            // record is initialized, and it stays until we free it.
            unsafe { (*cell).assume_init() }
        })
    }

    /// Hands the first `n` ready records to `f` as at most two contiguous slices (the run
    /// may wrap around the end of the ring), then frees them with one store.
    pub(crate) fn take<R>(
        &mut self,
        n: usize,
        f: impl FnOnce(&[Completion], &[Completion]) -> R,
    ) -> R {
        let start = self.head & self.ring.mask;
        let first = n.min(self.ring.capacity() - start);
        #[cfg(not(loom))]
        let result = {
            let base = self.ring.slots.as_ptr().cast::<Completion>();
            // SAFETY: `UnsafeCell<MaybeUninit<Completion>>` has `Completion`'s layout (both
            // wrappers are transparent); positions `head..head + n` are published
            // (acquired by `ready`), hence initialized, and no producer writes them until
            // `release` below frees them. `first <= capacity - start` and
            // `n - first <= start` keep both slices inside the slot array.
            let (a, b) = unsafe {
                (
                    std::slice::from_raw_parts(base.add(start), first),
                    std::slice::from_raw_parts(base, n - first),
                )
            };
            f(a, b)
        };
        // Loom's cells cannot be viewed as a slice: copy them one by one.
        #[cfg(loom)]
        let result = {
            let run: Vec<Completion> = (0..n).map(|i| self.get(i)).collect();
            f(&run[..first], &run[first..])
        };
        self.release(n);
        result
    }

    /// Frees the first `n` ready records.
    pub(crate) fn release(&mut self, n: usize) {
        self.head = self.head.wrapping_add(n);
        // Release: pairs with the acquire load of `head` in `Ring::claim`: our reads of the
        // freed slots happen before any producer overwrites them.
        self.ring.head.store(self.head, Ordering::Release);
    }
}

impl Drop for Consumer<'_> {
    fn drop(&mut self) {
        // Release: pairs with the acquire swap in `Ring::try_consume`.
        self.ring.consuming.store(false, Ordering::Release);
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
            c.take(n, |a, b| {
                out.extend_from_slice(a);
                out.extend_from_slice(b);
            });
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
        for cap in [1, 2, 4, 64, 128] {
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
            // Advance into a later lap so both parities are exercised.
            for lap in 0..3 {
                let positions: Vec<usize> = (0..cap).map(|_| ring.claim().unwrap()).collect();
                assert!(ring.claim().is_none(), "ring of {cap} must be full");
                let hole = (lap * 7 + 1) % cap;
                for (i, &pos) in positions.iter().enumerate() {
                    if i != hole {
                        ring.write_and_publish(pos, rec(pos));
                    }
                }
                let mut c = ring.try_consume().unwrap();
                assert_eq!(c.ready(usize::MAX), hole);
                assert_eq!(c.ready_scalar(usize::MAX), hole);
                assert_eq!(c.ready(hole.saturating_sub(1)), hole.saturating_sub(1));
                ring.write_and_publish(positions[hole], rec(positions[hole]));
                assert_eq!(c.ready(usize::MAX), cap);
                assert_eq!(c.ready_scalar(usize::MAX), cap);
                let got = c.take(cap, |a, b| [a, b].concat());
                assert_eq!(got, positions.iter().map(|&p| rec(p)).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn take_splits_a_wrapped_run_in_two() {
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
        let (a, b) = c.take(7, |a, b| (a.to_vec(), b.to_vec()));
        assert_eq!(a, (6..8).map(rec).collect::<Vec<_>>());
        assert_eq!(b, (8..13).map(rec).collect::<Vec<_>>());
    }
}
