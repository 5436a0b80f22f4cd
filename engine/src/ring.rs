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
//! `ArrayQueue`), writes its record into the slot, and *publishes* it with one release store
//! of the slot's tag byte: `tag(t) = lap(t) + 1` (mod 256). A slot's tag is either the tag of
//! its current lap (published) or of the lap before (not yet), and the two always differ, so
//! tags never need clearing. Producers read `head` only through a copy cached on their own
//! cache line, refreshed when the ring looks full, so a post does not pull the line the
//! consumer writes on every drain.
//!
//! The consumer finds the run of published records from `head` by comparing tags with the
//! expected one. The tags are dense bytes, so the search is vectorized: on x86_64 with AVX2
//! (detected at run time) one 32-byte load, compare and mask covers 32 slots; elsewhere, under
//! loom and under Miri (which cannot run inline assembly, so the scalar path is what Miri
//! checks), the scalar path compares one slot at a time ([`Consumer::ready_scalar`], also
//! kept for comparison). The run is then copied out as at most two contiguous slices (one
//! `memcpy` each; glibc picks its SIMD variant at run time) and freed with a single release
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
//! behind it. The consumer moves overflow records into free ring slots before it looks for
//! a run ([`Consumer::refill`]), claiming slots like a producer. Per-producer order holds:
//! a producer that finds the overflow count at zero (acquire) has seen the count fall for
//! each of its earlier overflowed records, and the consumer lowers the count (release) only
//! after claiming that record's ring position, so the producer's next claim comes later.
//! A record popped from the overflow that does not fit yet waits in a one-record stash
//! owned by the consumer claim, still counted as overflow.
//!
//! # Sleepers
//!
//! A tag is published with a plain store, which does not order the poster's later check
//! for sleeping waiters. The claim does: the compare-and-swap on `tail` is sequentially
//! consistent. So a waiter's last look before it sleeps is [`Ring::has_claimed`] (is `tail`
//! past `head`?) rather than the tag: either the poster sees the sleeper, or the sleeper
//! sees the claim and waits the few nanoseconds until the tag is published.

use crate::primitive::{AtomicBool, AtomicU8, AtomicUsize, Ordering, UnsafeCell};
use crate::Completion;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;

/// Capacity of a port's ring unless one is chosen.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Largest ring capacity accepted (96 MiB of records).
pub const MAX_CAPACITY: usize = 1 << 22;

/// Slots one vector compare covers.
const LANES: usize = 32;

pub(crate) struct Ring {
    /// First position not yet freed. Written only by the consumer-claim holder.
    head: CachePadded<AtomicUsize>,
    producers: CachePadded<Producers>,
    consumer: CachePadded<ConsumerSide>,
    /// Records in `overflow` plus the one in the stash, if any. Raised before a record is
    /// pushed to `overflow`, lowered once it has a ring position.
    overflow_len: CachePadded<AtomicUsize>,
    overflow: SegQueue<Completion>,
    /// One tag byte per slot (see the module docs), then `LANES - 1` bytes that are never
    /// written, so a vector load at the last slots stays inside the allocation.
    tags: Box<[AtomicU8]>,
    slots: Box<[UnsafeCell<MaybeUninit<Completion>>]>,
    mask: usize,
    lap_shift: u32,
    /// Whether the vector search can run here.
    #[cfg_attr(any(loom, miri, not(target_arch = "x86_64")), allow(dead_code))]
    simd: bool,
}

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
// read only by the consumer-claim holder after the slot's tag (release/acquire) says it is
// complete; a slot is reused only after `head` (release/acquire) has freed it. The stash is
// touched only under the consumer claim (acquire/release). Records are `Send`.
unsafe impl Sync for Ring {}
// SAFETY: see `Sync`; nothing in the ring is tied to a thread.
unsafe impl Send for Ring {}

/// The tag position `pos` publishes in its slot.
fn tag(pos: usize, lap_shift: u32) -> u8 {
    ((pos >> lap_shift) as u8).wrapping_add(1)
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
            tags: (0..capacity + LANES - 1)
                .map(|_| AtomicU8::new(0))
                .collect(),
            slots: (0..capacity)
                .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                .collect(),
            mask: capacity - 1,
            lap_shift: capacity.trailing_zeros(),
            simd: simd_available(),
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
        // SeqCst: like the claim's, this increment is the poster's half of the sleeper
        // Dekker pair (see the module docs and `has_claimed`).
        self.overflow_len.fetch_add(1, Ordering::SeqCst);
        crate::primitive::loom_seqcst_fence();
        self.overflow.push(record);
    }

    /// Claims the next position if the ring has room.
    fn claim(&self) -> Option<usize> {
        let producers = &*self.producers;
        let mut tail = producers.tail.load(Ordering::Relaxed);
        loop {
            // Acquire: pairs with the release store that cached it, itself made after an
            // acquire load of `head` (which pairs with `Consumer::release`): the slot's old
            // record has been read before we overwrite it.
            let mut head = producers.head.load(Ordering::Acquire);
            if tail.wrapping_sub(head) >= self.capacity() {
                // Looks full: refresh the copy. Acquire: pairs with `Consumer::release`.
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
            }
            // SeqCst: the poster's half of the sleeper Dekker pair (see the module docs);
            // room was established by the acquire loads above. On x86_64 a `lock cmpxchg`
            // whatever the ordering.
            match producers.tail.compare_exchange_weak(
                tail,
                tail.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    crate::primitive::loom_seqcst_fence();
                    return Some(tail);
                }
                Err(now) => tail = now,
            }
        }
    }

    fn write_and_publish(&self, pos: usize, record: Completion) {
        let slot = pos & self.mask;
        self.slots[slot].with_mut(|cell| {
            // SAFETY: this thread claimed `pos`; the slot's previous record was freed
            // (`claim` saw `head` past it), and the consumer reads it only after the tag.
            unsafe { (*cell).write(record) };
        });
        // Release: pairs with the consumer's acquire (load or fence) after it reads the tag.
        self.tags[slot].store(tag(pos, self.lap_shift), Ordering::Release);
    }

    /// Whether the record at `head` is published or the overflow holds some: a waiter's
    /// cheap look while it spins.
    pub(crate) fn has_ready(&self) -> bool {
        // Acquire: pairs with `Consumer::release`, so the tag read below is for this lap.
        let head = self.head.load(Ordering::Acquire);
        // Relaxed: a hint; whoever acts on it reads the tag again under the claim.
        self.tags[head & self.mask].load(Ordering::Relaxed) == tag(head, self.lap_shift)
            || self.overflow_len.load(Ordering::Relaxed) > 0
    }

    /// Whether any record is claimed past `head` or waits in the overflow: a waiter's last
    /// look before it sleeps (see the module docs).
    pub(crate) fn has_claimed(&self) -> bool {
        // SeqCst: the waiter's half of the Dekker pair with the SeqCst claim in `claim`
        // and increment in `push`.
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

/// Whether the vector tag search can run on this CPU. Never under loom or Miri: neither can
/// run the inline assembly of [`match_tags`].
fn simd_available() -> bool {
    #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
    false
}

/// Bit `i` set when tag `i` of the 32 at `tags` equals `expected`.
///
/// # Safety
///
/// The CPU has AVX2, and `tags..tags + 32` lies inside one live `[AtomicU8]` allocation.
#[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
#[target_feature(enable = "avx2")]
unsafe fn match_tags(tags: *const AtomicU8, expected: u8) -> u32 {
    use std::arch::x86_64::{__m256i, _mm256_cmpeq_epi8, _mm256_movemask_epi8, _mm256_set1_epi8};
    let loaded: __m256i;
    // SAFETY: the caller guarantees the 32 bytes are in bounds. Producers store these bytes
    // atomically; the load is inline assembly because Rust has no vector atomic load. It is
    // 32 single-byte reads, each atomic on x86_64, so it acts as 32 relaxed loads — what the
    // scalar path does — and the caller's acquire fence orders the records after it.
    unsafe {
        std::arch::asm!(
            "vmovdqu {v}, ymmword ptr [{p}]",
            p = in(reg) tags,
            v = out(ymm_reg) loaded,
            options(nostack, preserves_flags, readonly),
        );
    }
    let equal = _mm256_cmpeq_epi8(loaded, _mm256_set1_epi8(expected as i8));
    _mm256_movemask_epi8(equal) as u32
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

    /// Length of the run of published records from `head`, at most `max`: 32 slots per
    /// compare where the CPU allows, else one at a time.
    pub(crate) fn ready(&self, max: usize) -> usize {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        if self.ring.simd {
            return self.ready_simd(max);
        }
        self.ready_scalar(max)
    }

    #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
    fn ready_simd(&self, max: usize) -> usize {
        let ring = self.ring;
        let max = max.min(ring.capacity());
        let mut n = 0;
        while n < max {
            let pos = self.head.wrapping_add(n);
            let slot = pos & ring.mask;
            // One lap and one contiguous stretch of slots per compare.
            let span = LANES.min(ring.capacity() - slot).min(max - n);
            // SAFETY: `ring.simd` says the CPU has AVX2, and `tags` has `LANES - 1` bytes
            // past the last slot, so the 32 bytes from `slot` are in bounds.
            let equal =
                unsafe { match_tags(ring.tags.as_ptr().add(slot), tag(pos, ring.lap_shift)) };
            let run = (equal.trailing_ones() as usize).min(span);
            n += run;
            if run < span {
                break;
            }
        }
        // Acquire: pairs with the release stores of the tags the search read, so the
        // records of the run are visible.
        std::sync::atomic::fence(Ordering::Acquire);
        // ThreadSanitizer sees neither the vector load nor a standalone fence, so it would
        // take the reads of this run for races with the producers' writes. The fence rule
        // orders them: each tag of the run was read from the release store that published
        // it (`write_and_publish`), and the fence above synchronizes with those stores.
        // Acquiring each tag's address is TSan's model of that edge (the scalar path's
        // acquire load of the tag makes the same); it hides no race: a record written after
        // its tag is published, or a slot reused before `head` freed it, still shows.
        #[cfg(iocp_tsan)]
        for i in 0..n {
            crate::sys::tsan::acquire(&ring.tags[self.head.wrapping_add(i) & ring.mask]);
        }
        n
    }

    /// [`ready`](Self::ready) one slot at a time, as a classic bounded-queue consumer
    /// checks each slot's stamp; kept to measure what the vector search buys.
    pub(crate) fn ready_scalar(&self, max: usize) -> usize {
        let ring = self.ring;
        let max = max.min(ring.capacity());
        let mut n = 0;
        while n < max {
            let pos = self.head.wrapping_add(n);
            // Acquire: pairs with the release store of the tag in `write_and_publish`.
            if ring.tags[pos & ring.mask].load(Ordering::Acquire) != tag(pos, ring.lap_shift) {
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
    fn the_vector_search_agrees_with_the_scalar_one() {
        // Random publication patterns over several laps (tags of both parities, the wrap of
        // the tag byte is covered by `tag`'s arithmetic) at every interesting capacity.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for cap in [1, 2, 8, 32, 64, 256] {
            let ring = Ring::new(cap);
            for _lap in 0..6 {
                let positions: Vec<usize> = (0..cap).map(|_| ring.claim().unwrap()).collect();
                let mut published = vec![false; cap];
                for (i, &pos) in positions.iter().enumerate() {
                    if random() % 4 != 0 {
                        ring.write_and_publish(pos, rec(pos));
                        published[i] = true;
                    }
                }
                let c = ring.try_consume().unwrap();
                let expected = published.iter().take_while(|&&p| p).count();
                for max in [0, 1, 3, 31, 32, 33, cap, usize::MAX] {
                    assert_eq!(
                        c.ready(max),
                        expected.min(max).min(cap),
                        "cap {cap} max {max}"
                    );
                    assert_eq!(c.ready(max), c.ready_scalar(max), "cap {cap} max {max}");
                }
                drop(c);
                for (i, &pos) in positions.iter().enumerate() {
                    if !published[i] {
                        ring.write_and_publish(pos, rec(pos));
                    }
                }
                let mut c = ring.try_consume().unwrap();
                assert_eq!(c.ready(usize::MAX), cap);
                c.take(cap, |_, _| ());
            }
        }
    }

    /// Producers race one consumer, through rings small enough that most records take the
    /// overflow path and through one that holds them all (every record published by its
    /// producer's tag store, found by the vector search where there is one). The consumer
    /// must see every record once, in per-producer order. This is the ring's concurrency
    /// test for Miri (its data-race detector and weak-memory emulation check the orderings
    /// of the scalar path) and for ThreadSanitizer, where the large ring is the regression
    /// test for the vector search's fence, which TSan cannot see (see `Consumer::ready_simd`):
    /// without the annotation it reports each record read as a race.
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
                        for seq in 0..per_producer {
                            ring.push(Completion::new(p as u64, seq as u32, p ^ seq));
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
                consumer.take(n, |a, b| {
                    for record in a.iter().chain(b) {
                        let p = record.key() as usize;
                        assert_eq!(record.bytes(), next[p], "cap {cap} producer {p}");
                        assert_eq!(record.overlapped(), p ^ next[p] as usize, "torn record");
                        next[p] += 1;
                    }
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
