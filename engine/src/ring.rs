//! The per-port queue: bounded lanes of [`Completion`]s with an unbounded overflow behind
//! each, a single consumer at a time, and no record ever dropped.
//!
//! # Lanes
//!
//! A port's records travel through *lanes*. Each thread that posts to a port gets a private
//! lane of its own on its first post (a single-producer ring, up to [`MAX_LANES`] of them,
//! reused after their threads exit); a thread that finds none free, or posts while its
//! thread-locals are being torn down, uses the port's one shared lane (a multi-producer
//! ring). A thread keeps the lane it was given for as long as it lives, so its records come
//! out in the order it posted them. This is the structure of Seastar's cross-core queues
//! (one single-producer ring per sender): a post to a private lane is a few plain stores,
//! where a shared ring needs an atomic read-modify-write per claim, whose locked instruction
//! waits for the previous record's store to reach a cache line the consumer keeps reading.
//! On the 2-core Intel Xeon of the README's figures, a bare stamped ring moved 195 M
//! records/s between two cores with plain stores and 25–43 M/s with one locked claim per
//! record; that claim was this ring's limit before it had lanes. A thread finds its lanes
//! through a cache of its own, one entry per ring; a post to the ring it posted to last
//! finds the lane with one thread-local load.
//!
//! # One lane
//!
//! Positions are unbounded counters; position `p` lives in slot `p & mask`. `head` is the
//! first position the consumer has not freed, `tail` the next position a producer will
//! claim. A producer claims positions `t..t + k` (`k` records at once for a batch), allowed
//! while `t + k - head <= capacity`: in a private lane by a plain store of `tail`, in the
//! shared lane by one compare-and-swap (the claim of Vyukov's bounded queue, as in
//! crossbeam's `ArrayQueue`, widened to `k` slots as the Disruptor's claim is). It writes
//! each record into its slot and *publishes* it with one release store of the slot's stamp:
//! `stamp(p) = p + 1`. A slot's stamp is either its current position's stamp (published) or
//! that of the position one lap before (not yet), so stamps never need clearing. Producers
//! read `head` only through a copy cached on their own cache line, refreshed when the lane
//! looks full, so a post does not pull the line the consumer writes on every drain.
//!
//! Each slot is 32 bytes, the record and its stamp together, two to a cache line: with a
//! dense array of one-byte tags apart from the records, a consumer running right behind a
//! producer made two lines travel per record (the tag line and the record's); with the stamp
//! beside the record, one line per two records. The consumer checks each stamp and copies
//! the record it guards in the same pass, then frees the whole run with a single release
//! store of `head`.
//!
//! # Overflow
//!
//! When a lane is full a record goes to the lane's crossbeam `SegQueue` (the idea of
//! io_uring's no-drop overflow list), and while that queue holds anything, every new record
//! of the lane goes behind it; a batch that finds room for only some of its records puts
//! the rest there, in order. The consumer takes overflow records only once the lane's ring
//! part is empty (`head == tail`: nothing claimed is left unread), and lowers the count
//! after each; a producer goes back to the ring only when it sees the count at zero. So a
//! producer's records come out in its order: ring, then overflow, then ring again. On the
//! shared lane a producer may have read the count at zero just before another overflowed,
//! claim the ring during the overflow's turn, then overflow its next record: so the
//! consumer looks at `tail` again after taking each record from the queue, and a record
//! taken after such a claim waits in the stash until the ring's are read. A record
//! taken from the overflow for a zero-copy [`Batch`](crate::Batch) and not yielded waits in
//! a one-record stash at the overflow's front, still counted.
//!
//! # Sleepers
//!
//! A poster publishes and then looks for sleeping waiters; a waiter registers and then
//! takes a last look for records. The two form a Dekker pair. In the shared lane the claim's
//! compare-and-swap is sequentially consistent and orders the poster's side. A private
//! lane's post has no such instruction: its side is [`barrier::light`], free where the
//! kernel offers `membarrier`, and the waiter pays with [`barrier::heavy`] before its last
//! look ([`Ring::sync_with_posters`]) — only when some other thread owns a private lane of
//! the port, so a thread that both posts and waits (a server's loop on the inline drive)
//! never pays it. A waiter's last look is [`Ring::has_claimed`] (is any `tail` past its
//! `head`?) rather than the stamps: a record claimed but not yet published is nanoseconds
//! away.
//!
//! `membarrier` interrupts every CPU running a thread of the program, and under a hypervisor
//! each interrupt is an exit to it: on the 2-core Intel Xeon VM of the README's figures one
//! call took 13 µs while another thread ran. The engine's own posting threads (the reactor
//! of the thread drive, the file pool's workers, the io_uring thread) post in batches and
//! feed waiters that sleep between them, so they take the other side of the trade:
//! [`fence_own_posts`] marks the thread's token with [`FENCED`], each of its private-lane
//! posts ends with a sequentially consistent fence, and a waiter whose only other owners
//! are such threads skips `barrier::heavy`. The fence on the poster's side and the
//! waiter's sequentially consistent registration and last look make the classic Dekker
//! pair.

use crate::primitive::{AtomicBool, AtomicPtr, AtomicUsize, Ordering, UnsafeCell};
use crate::sys::{self, barrier};
use crate::Completion;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
#[cfg(not(loom))]
use std::cell::Cell;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
#[cfg(not(loom))]
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Capacity of a port's lanes unless one is chosen.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Largest lane capacity accepted (128 MiB of slots).
pub const MAX_CAPACITY: usize = 1 << 22;

/// The bit of a thread's lane token that says its private-lane posts each end with a full
/// fence (see [`fence_own_posts`]). Tokens count in steps of two, so the bit names no other
/// thread.
const FENCED: usize = 1;

/// Most private lanes a port gives out; later threads share the shared lane. (Under loom,
/// two: enough for every model, and fewer states to explore.)
pub(crate) const MAX_LANES: usize = if cfg!(loom) { 2 } else { 32 };

pub(crate) struct Ring {
    consumer: CachePadded<ConsumerSide>,
    shared: Lane,
    /// Private lanes, installed in order on demand, each holding one count of an `Arc`.
    private: Box<[AtomicPtr<Lane>]>,
    /// How many entries of `private` may be installed (only grows).
    installed: CachePadded<AtomicUsize>,
    /// Every post goes to the shared lane: one order for all (see [`Ring::new`]).
    fifo: bool,
    /// Distinguishes this ring from every other, ever, in the threads' lane caches.
    id: u64,
    /// Set when the ring is dropped; each entry of a thread's lane cache holds a count, so
    /// the cache can tell that its entry may go, whether it holds a private lane or keeps
    /// the thread on the shared one.
    dropped: Arc<AtomicBool>,
}

/// One lane: a bounded ring of slots, its overflow, and its stash.
pub(crate) struct Lane {
    /// First position not yet freed. Written only by the consumer-claim holder.
    head: CachePadded<AtomicUsize>,
    producers: CachePadded<Producers>,
    /// Records in `overflow` plus the one in the stash, if any. Raised before a record is
    /// pushed to `overflow`, lowered once the consumer has taken it.
    overflow_len: CachePadded<AtomicUsize>,
    overflow: SegQueue<Completion>,
    /// A record taken from `overflow` and not yet handed on (consumer claim only).
    stash: UnsafeCell<Option<Completion>>,
    slots: Box<[Slot]>,
    mask: usize,
    /// A private claim that leaves at most this many positions in use asks for the line
    /// [`PREFETCH_AHEAD`] slots past it; 0 where the processor cannot or the lane is small.
    prefetch_below: usize,
    /// Single producer: the thread whose token `owner` holds.
    private: bool,
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

/// How [`Slots::write_and_publish`] stores a record's words (see there).
#[derive(Clone, Copy)]
enum Stores {
    /// One 8-byte store per word: a single post.
    Words,
    /// One copy of all three, as the compiler makes it: a batch.
    Whole,
}

/// What producers write: the claim counter, their copy of `head`, and the owner.
struct Producers {
    tail: AtomicUsize,
    /// A value `head` had (never ahead of it): room is judged against it, and it is
    /// refreshed from `head` only when the lane looks full.
    head: AtomicUsize,
    /// The owning thread's token (private lanes; 0 while free).
    owner: AtomicUsize,
}

/// What only the consumer-claim holder touches, and the claim itself.
struct ConsumerSide {
    /// The consumer claim: `true` while a [`Consumer`] exists.
    consuming: AtomicBool,
    /// The lane the next drain starts at, so that no lane waits behind the others.
    next_lane: UnsafeCell<usize>,
}

/// Records [`Consumer::ready`] takes from the lane it looks at first before it looks at the
/// next lane first: a lane's records wait behind another lane's for at most this many, and
/// a `get` on a port whose one busy lane is a thread's private lane does not look at the
/// empty shared lane before every record.
const STAY: usize = 16;

/// How far past its claim a private lane's producer asks for a line it will write
/// ([`sys::prefetch::for_write`](crate::sys::prefetch)), in slots.
///
/// A consumer that keeps pace with a producer reads each line soon after the producer
/// wrote it, and its hardware prefetcher reads the lines after it, which the producer has
/// yet to write: then each store of the producer waits for its line to come back from the
/// consumer's cache, and as stores leave the core in order, those waits add up. A producer
/// whose `post` is a call (the C ABI's, or a Rust `post` not inlined into a loop) is slow
/// enough to be caught up with. On a 2-core Intel Xeon VM, one producer calling `post` out
/// of line and one, two or four threads in `get_up_to` took 27-35 M records/s; the same
/// program with `post` inlined, whose producer stayed a full ring ahead, 175-195 M/s; with
/// this request 96 slots ahead, 136-155 M/s.
///
/// The distance is a compromise measured in `iocp-bench drain`'s pool rows (two or three
/// runs of each, M records/s, `get_up_to` / `GetQueuedCompletionStatus` with two workers;
/// before: 29-31 / 44-45): 32 slots 150-154 / 30-34, 64 151 / 39, 80 137-148 / 40-41, 96
/// 136-138 / 43-44, 112 124 / 44, 128 (4 KiB) 69-77 / 44. Nearer, the request takes lines
/// from single-record takers just behind the producer; farther, the gain goes.
/// It is made only where the line is free (as far as the producer's copy of `head` tells):
/// in a full lane it would pull the line a consumer is about to read.
///
/// A second request for single posts, 16 slots ahead (to take back, just before the
/// stores, a line a consumer's prefetcher read after the first), did not pay: in two
/// alternated pairs of full `iocp-bench drain --pin` runs the C single-post producer rows
/// went from 83-98 to 91-99 M records/s and the same-thread batches of 16 from 223-229 to
/// 241-247, but the batches of 256 and 4096 fell 6-11% and the `get_up_to` pool rows 5-9%;
/// 8 and 32 slots ahead did no better in runs of the producer and pool rows.
const PREFETCH_AHEAD: usize = 96;

/// Slots a scan for published records ([`Lane::ready`]: the run a [`Batch`](crate::Batch)
/// lends, and a `get`'s) checks between two pauses (`PAUSE` on x86) on a lane another
/// thread may be posting to.
///
/// Such a scan is a loop of loads whose exit depends on each: the processor runs far ahead
/// of its retired checks, into lines the producer is still writing. We read what follows as
/// what `PAUSE` in a spin-wait loop is there to avoid (a write landing on a line loaded
/// ahead makes the processor discard the work after that load) together with the producer's
/// stores waiting for lines the scan keeps pulling; the machine's counters, which would
/// tell, are out of reach in its VM. Measured on a 2-core Intel Xeon VM: a standalone
/// program, one thread posting single records and one in `Port::drain`, moved 31-32 M
/// records/s, and 156-167 M/s with this pause (three runs of each build; 237-243 against
/// 176-192 M/s with the producer posting 32 at a time). In `iocp-bench drain` (two runs of
/// each build, alternated), the `iocp drain` rows went from 57-70 to 146-149 M/s with one
/// producer, from 50-56 to 143-144 with two, and from 147-156 to 160-165 with one producer
/// posting 32 at a time; the same-thread rows, whose lane the scanning thread owns and
/// which skip the pause, from 363-374 to 348-355 (the test in the loop).
///
/// The loop's shape matters as much as the pause: the same pauses between two tight loops
/// of `SCAN_STRETCH` checks each took the standalone program to only 60-66 M/s, against
/// 110-121 with the test in the loop (128 slots, three runs of each). Every 64 slots did as
/// well across threads and cost the same-thread rows 10% before they skipped it; every
/// 256, 92-95 M/s in the standalone program.
const SCAN_STRETCH: usize = 128;

// SAFETY: a slot's record is written only by the producer that claimed its position and
// read only by the consumer-claim holder after the slot's stamp (release/acquire) says it
// is complete; a slot is reused only after `head` (release/acquire) has freed it. The stash
// and `next_lane` are touched only under the consumer claim (acquire/release). A private
// lane has one producer at a time: ownership passes through `owner` (release/acquire).
// Records are plain data.
unsafe impl Sync for Lane {}
// SAFETY: a lane owns its records and slots outright and holds no thread-bound state.
unsafe impl Send for Lane {}
// SAFETY: the ring's own fields are atomics, or consumer-claim state (`next_lane`) that
// only the claim holder touches; its lanes are `Sync` (above) and reached through `Arc`s
// the ring holds a count of.
unsafe impl Sync for Ring {}
// SAFETY: the ring owns its lanes' counts and holds no thread-bound state.
unsafe impl Send for Ring {}

/// The stamp position `pos` publishes in its slot.
fn stamp(pos: usize) -> usize {
    pos.wrapping_add(1)
}

/// Where the calling thread posts on one ring, kept by a cache of the thread's own beside
/// the ring's port (the port cache behind `Port::with_handle`), so that a post through
/// that cache makes no second thread-local look-up: the thread's private lane on the ring,
/// once a post through it ([`Ring::push_at`]) has found one.
#[cfg(not(loom))]
#[derive(Default)]
pub(crate) struct Place {
    /// The lane and the token of the thread that owns it; `None` until found, and while
    /// the thread posts on the shared lane.
    private: Option<(Arc<Lane>, usize)>,
    /// Neither `Send` nor `Sync`: the lane is the finding thread's own.
    _thread: PhantomData<*const ()>,
}

/// A thread's lanes: for each port it posted to, the lane it was given (`None`: the
/// shared lane). Dropping an entry (at thread exit) frees the lane for another thread.
struct Held {
    ring: u64,
    lane: Option<Arc<Lane>>,
    /// The ring's [`Ring::dropped`].
    dropped: Arc<AtomicBool>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(lane) = &self.lane {
            // Release: pairs with the acquire claim of the next owner in `Ring::acquire_lane`,
            // which continues from this thread's `tail` and copy of `head`. Loom mismatches
            // a plain store with a racing read-modify-write of the same atomic
            // (tokio-rs/loom#252), so it gets a swap.
            #[cfg(loom)]
            lane.producers.owner.swap(0, Ordering::Release);
            #[cfg(not(loom))]
            lane.producers.owner.store(0, Ordering::Release);
        }
    }
}

/// A thread's lane cache and the token that names the thread as a lane's owner.
struct Lanes {
    /// Unique among all threads ever (a count, not an address: a stale owner value read
    /// by a waiter must never name another thread), with [`FENCED`] set for a thread that
    /// fences its posts. Until first needed, 0, or [`FENCED`] alone after
    /// [`fence_own_posts`].
    token: usize,
    /// The entries of the rings posted to last, most recent first: a post to the same ring
    /// as the last one finds its lane at the front, others after a short search.
    held: Vec<Held>,
    /// The other entries, by ring, so that a thread posting to thousands of ports finds
    /// each entry in logarithmic time.
    rest: BTreeMap<u64, Held>,
    /// `rest` is pruned of dropped rings when it reaches this size, which then doubles
    /// what is left: pruning costs amortized constant time per new entry.
    prune_at: usize,
}

impl Lanes {
    const fn new() -> Lanes {
        Lanes {
            token: 0,
            held: Vec::new(),
            rest: BTreeMap::new(),
            prune_at: PRUNE_AT,
        }
    }

    /// Takes the entry for ring `ring` out of the cache, from the front or the rest.
    fn take(&mut self, ring: u64) -> Option<Held> {
        match self.held.iter().position(|h| h.ring == ring) {
            Some(i) => Some(self.held.remove(i)),
            None => self.rest.remove(&ring),
        }
    }

    fn token(&mut self) -> usize {
        if self.token & !FENCED == 0 {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(2);
            // Relaxed: tokens only need to be distinct.
            let count = NEXT.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
            self.token |= count;
        }
        self.token
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static HELD: RefCell<Lanes> = const { RefCell::new(Lanes::new()) };
    /// The ring the thread last posted to through `HELD` and its private lane there (ring
    /// id 0, which no ring has, when none): a post to that ring again skips the cache's
    /// lazy set-up check, its borrow flag and its search (see [`Ring::last_lane`]).
    static LAST_LANE: Cell<(u64, *const Lane)> = const { Cell::new((0, std::ptr::null())) };
}

#[cfg(not(loom))]
impl Drop for Lanes {
    fn drop(&mut self) {
        // Before the entries (and the counts of lanes they hold) go.
        LAST_LANE.set((0, std::ptr::null()));
    }
}

// Loom's `thread_local!` has no `const` initializer form.
#[cfg(loom)]
loom::thread_local! {
    static HELD: RefCell<Lanes> = RefCell::new(Lanes::new());
}

/// The calling thread's token as a lane's owner stores it; 0, which names no thread, for
/// a thread that has none yet or whose cache is gone (exiting: it owns nothing any more).
fn caller_token() -> usize {
    HELD.try_with(|lanes| lanes.try_borrow().map_or(0, |lanes| lanes.token))
        .unwrap_or(0)
}

/// Entries at the front of a thread's lane cache, searched in order.
const FRONT: usize = 8;

/// The least size at which the rest of a thread's lane cache is pruned of dropped rings.
const PRUNE_AT: usize = 8;

impl Ring {
    /// A ring whose lanes have `capacity` slots; `capacity` is a power of two in
    /// `1..=MAX_CAPACITY`. With `fifo`, every post goes to the shared lane, so records come
    /// out in one order consistent with the order the posts happened in, across threads too
    /// (a post that happens after another, say after joining its thread, comes out after
    /// it); without, order holds per posting thread only.
    /// `ENOMEM` when the shared lane's slots cannot be allocated.
    pub(crate) fn new(capacity: usize, fifo: bool) -> io::Result<Ring> {
        assert!(capacity.is_power_of_two() && capacity <= MAX_CAPACITY);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let ring = Ring {
            consumer: CachePadded::new(ConsumerSide {
                consuming: AtomicBool::new(false),
                next_lane: UnsafeCell::new(0),
            }),
            shared: Lane::new(capacity, None)?,
            private: (0..MAX_LANES)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            installed: CachePadded::new(AtomicUsize::new(0)),
            fifo,
            // Relaxed: ids only need to be distinct.
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            dropped: Arc::new(AtomicBool::new(false)),
        };
        // Under loom the lanes exist from the start, free: loom mistakes a thread's first
        // store to an atomic it has just created for a second store of the same moment
        // (its "TODO: this sometimes fails" assertion), so the models take lanes made by
        // the constructing thread. They check taking and handing back a lane and the posts;
        // the one-time installation is checked by the std tests.
        #[cfg(loom)]
        {
            for entry in ring.private.iter() {
                let lane = Arc::into_raw(Arc::new(Lane::new(capacity, Some(0))?));
                // Relaxed: the ring is not shared yet.
                entry.store(lane.cast_mut(), Ordering::Relaxed);
            }
            // Relaxed: as above.
            ring.installed.store(MAX_LANES, Ordering::Relaxed);
        }
        Ok(ring)
    }

    /// Slots per lane.
    pub(crate) fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Queues `record`, as [`push_many_with`](Self::push_many_with) does. The record goes
    /// from the caller's registers straight into its slot.
    #[inline(always)]
    pub(crate) fn push(&self, record: Completion) {
        #[cfg(not(loom))]
        if let Some(lane) = self.last_lane() {
            lane.push_private(record);
            // The poster's side of the sleeper Dekker pair (see the module docs); `LAST_LANE`
            // never names the lane of a thread that fences its posts.
            return barrier::light();
        }
        // The record goes by its words (see `Completion::to_words`).
        let [first, second, third] = record.to_words();
        self.push_found(first, second, third);
    }

    /// [`push`](Self::push) through the thread's lane cache: when the thread's last post
    /// went to another ring, or it posts here on the shared lane (no private lane left, a
    /// `fifo` ring). Kept out of `push`, which its callers inline, so that what they inline
    /// is the repeat post to a private lane alone.
    #[cold]
    #[inline(never)]
    fn push_found(&self, first: u64, second: u64, third: u64) {
        let record = Completion::from_words([first, second, third]);
        self.push_through_cache(move |lane| lane.push(record), |_, _| ());
    }

    /// [`push_many_with`](Self::push_many_with) of records as they are.
    #[cfg(all(test, not(loom)))]
    fn push_many(&self, records: &[Completion]) {
        self.push_many_with(records, |record| *record);
    }

    /// Queues one record per item of `items`, in order, on the calling thread's lane, each
    /// made by `record` as it is written: as many as fit into slots claimed together, the
    /// rest into the lane's overflow. Never fails, never drops.
    ///
    /// A panic in `record` aborts the process: the slots claimed for the batch can be
    /// neither handed back nor left empty (the consumer would wait on them for ever).
    pub(crate) fn push_many_with<T>(&self, items: &[T], record: impl Fn(&T) -> Completion) {
        let filling = AbortOnUnwind;
        #[cfg(not(loom))]
        if let Some(lane) = self.last_lane() {
            lane.push_many_with(items, &record);
            std::mem::forget(filling);
            // As in `push`.
            return barrier::light();
        }
        self.push_through_cache(|lane| lane.push_many_with(items, &record), |_, _| ());
        std::mem::forget(filling);
    }

    /// Lets go of the calling thread's entry for this ring in its lane cache, and the
    /// private lane it holds (handed back to the ring): the port's `close` and the ring's
    /// drop call it, so that the closing thread keeps none of a closed port's memory
    /// (other threads' entries go as their caches move on, and are pruned once the ring is
    /// dropped). The thread posts on this ring no more: every post to a closed port fails,
    /// so there is no order left to keep.
    #[cfg(not(loom))]
    pub(crate) fn forget_own_lane(&self) {
        let entry = HELD.try_with(|held| {
            // Busy only when a signal handler closes a port during a post of this thread's.
            let mut lanes = held.try_borrow_mut().ok()?;
            if LAST_LANE.get().0 == self.id {
                // Before the entry whose count keeps `LAST_LANE`'s lane goes.
                LAST_LANE.set((0, std::ptr::null()));
            }
            lanes.take(self.id)
        });
        // Dropped after the cache is given back: the drop hands the lane back.
        drop(entry);
    }

    /// The calling thread's private lane on this ring, if this is the ring it last posted
    /// to through its lane cache and it has one there: found with one thread-local load.
    #[cfg(not(loom))]
    #[inline(always)]
    fn last_lane(&self) -> Option<&Lane> {
        let (ring, lane) = LAST_LANE.with(Cell::get);
        // SAFETY: `LAST_LANE` names a lane that the thread's cache holds a count of, as the
        // owner, for as long as the entry of ring `ring` stays there; the entry goes only
        // when that ring is dropped (ring ids are never reused, and `self` is alive, so not
        // this one) or with the whole cache, whose drop clears `LAST_LANE` first.
        (ring == self.id).then(|| unsafe { &*lane })
    }

    /// Queues `record` as [`push`](Self::push) does, through `place`: once a post through
    /// it has found the thread's private lane, the next ones go straight to that lane
    /// without a look in the thread's lane cache (a thread-local: in a shared library, a
    /// call to `__tls_get_addr`).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn push_at(&self, place: &mut Place, record: Completion) {
        if let Some((lane, token)) = &place.private {
            if lane.owned_by(*token) {
                lane.push_private(record);
                // The poster's side of the sleeper Dekker pair (see the module docs); a place
                // never keeps the lane of a thread that fences its posts.
                barrier::light();
                return;
            }
            place.private = None;
        }
        // The record goes by its words (see `Completion::to_words`).
        let [first, second, third] = record.to_words();
        self.push_finding(place, first, second, third);
    }

    /// [`push_at`](Self::push_at) when that takes no more than a slot of the lane `place`
    /// knows: `false`, with nothing queued, when `place` knows no lane, the lane's overflow
    /// holds records or the lane is full. Makes no call, for the C ABI's
    /// `PostQueuedCompletionStatus`, whose other cases take another path.
    #[cfg(all(not(loom), feature = "c-abi"))]
    #[inline(always)]
    pub(crate) fn try_push_at(&self, place: &Place, record: Completion) -> bool {
        let Some((lane, token)) = &place.private else {
            return false;
        };
        if !lane.owned_by(*token) || !lane.try_push_claiming(record, |lane| lane.claim_private(1)) {
            return false;
        }
        // As in `push_at`.
        barrier::light();
        true
    }

    /// [`push_at`](Self::push_at) when `place` knows no lane of the thread's: through the
    /// thread's lane cache, which tells `place` the lane it finds. Kept out of `push_at`,
    /// which its caller inlines, so that what it inlines is the post to a known lane alone.
    #[cfg(not(loom))]
    #[inline(never)]
    fn push_finding(&self, place: &mut Place, first: u64, second: u64, third: u64) {
        let record = Completion::from_words([first, second, third]);
        self.push_through_cache(
            move |lane| lane.push(record),
            |lane, token| place.private = Some((Arc::clone(lane), token)),
        );
    }

    /// Runs `push` on the lane the thread's lane cache gives (the shared lane when there is
    /// none, or on a `fifo` ring); `found` learns a private lane with the thread's token.
    #[inline]
    fn push_through_cache(&self, push: impl Fn(&Lane), found: impl FnOnce(&Arc<Lane>, usize)) {
        if self.fifo {
            return push(&self.shared);
        }
        let pushed = HELD.try_with(|held| {
            let mut lanes = held.try_borrow_mut().ok()?;
            let lanes = &mut *lanes;
            if !matches!(lanes.held.first(), Some(first) if first.ring == self.id) {
                self.find_or_acquire(lanes);
            }
            // The thread's lane on this ring, taken on its first post; `None`: the shared one.
            let lane = lanes.held[0].lane.as_ref()?;
            push(lane);
            // The poster's side of the sleeper Dekker pair (see the module docs).
            after_private_post(lanes.token);
            // The shortcuts to the lane (`LAST_LANE`, a caller's `Place`) end their posts
            // with `barrier::light` alone: a thread that fences its posts comes this way.
            if lanes.token & FENCED == 0 {
                #[cfg(not(loom))]
                LAST_LANE.set((self.id, Arc::as_ptr(lane)));
                found(lane, lanes.token);
            }
            Some(())
        });
        if pushed.ok().flatten().is_none() {
            push(&self.shared);
        }
    }

    /// Moves this ring's entry to the front of the thread's cache, making one if needed.
    #[cold]
    fn find_or_acquire(&self, lanes: &mut Lanes) {
        // An entry taken from the front goes back to the front: the cache does not grow.
        let entry = match lanes.take(self.id) {
            Some(entry) => entry,
            None => {
                let token = lanes.token();
                Held {
                    ring: self.id,
                    lane: self.acquire_lane(token),
                    dropped: Arc::clone(&self.dropped),
                }
            }
        };
        lanes.held.insert(0, entry);
        if lanes.held.len() > FRONT {
            let evicted = lanes.held.pop().expect("longer than FRONT");
            lanes.rest.insert(evicted.ring, evicted);
            if lanes.rest.len() >= lanes.prune_at {
                // Only the entries of dropped rings go. An entry for the shared lane of a
                // live ring stays: it keeps the thread on that lane for good, or its next
                // post could take a private lane and overtake its records still queued in
                // the shared one.
                // Relaxed: a late look keeps a dead entry one prune longer.
                lanes.rest.retain(|_, h| !h.dropped.load(Ordering::Relaxed));
                lanes.prune_at = PRUNE_AT.max(2 * lanes.rest.len());
            }
        }
    }

    /// A free private lane for the thread with `token`, installing one if none is free.
    fn acquire_lane(&self, token: usize) -> Option<Arc<Lane>> {
        for (i, entry) in self.private.iter().enumerate() {
            // Acquire: pairs with the release of the installing compare-and-swap below.
            let mut lane = entry.load(Ordering::Acquire);
            if lane.is_null() {
                // Without memory for a lane of its own the thread posts on the shared lane,
                // for good (its cache keeps that): a post never fails.
                let new = Arc::new(Lane::new(self.capacity(), Some(token)).ok()?);
                let raw = Arc::into_raw(Arc::clone(&new)).cast_mut();
                // AcqRel: releases the new lane to the consumer and other producers;
                // acquires a lane another thread installed first.
                match entry.compare_exchange(
                    std::ptr::null_mut(),
                    raw,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        // SeqCst: announced before this thread's first post (see `owned`).
                        self.installed.fetch_max(i + 1, Ordering::SeqCst);
                        after_taking_a_lane();
                        return Some(new);
                    }
                    Err(other) => {
                        // SAFETY: `raw` came from `Arc::into_raw` above and was never
                        // shared: the compare-and-swap failed.
                        drop(unsafe { Arc::from_raw(raw) });
                        lane = other;
                    }
                }
            }
            // SAFETY: installed lanes stay until the ring drops, and `self` is borrowed.
            let lane_ref = unsafe { &*lane };
            // SeqCst: acquires the previous owner's release in `Held::drop`, and orders this
            // claim with waiters' looks in `foreign_owners` (see the module docs).
            if lane_ref
                .producers
                .owner
                .compare_exchange(0, token, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                after_taking_a_lane();
                // SAFETY: `lane` came from `Arc::into_raw` and the ring still holds that
                // count; this makes the thread's own.
                unsafe { Arc::increment_strong_count(lane) };
                // SAFETY: the count was just added for this `Arc`.
                return Some(unsafe { Arc::from_raw(lane) });
            }
        }
        None
    }

    /// The lanes a consumer visits: the shared one, then the installed private ones.
    fn lane(&self, i: usize) -> Option<&Lane> {
        match i {
            0 => Some(&self.shared),
            i => {
                // Acquire: pairs with the installing compare-and-swap in `acquire_lane`.
                let lane = self.private[i - 1].load(Ordering::Acquire);
                // SAFETY: installed lanes live until the ring drops, and `self` is borrowed.
                (!lane.is_null()).then(|| unsafe { &*lane })
            }
        }
    }

    /// How many lanes a scan visits (see [`lane`](Self::lane)).
    fn lanes(&self) -> usize {
        // SeqCst: a waiter's look at the lanes follows its registration in the single
        // order (see `acquire_lane`).
        1 + self.installed.load(Ordering::SeqCst)
    }

    /// The lanes a consumer visits, from the `start`th round to the one before it, with
    /// their index.
    fn lanes_from(&self, start: usize) -> impl Iterator<Item = (usize, &Lane)> {
        let lanes = self.lanes();
        // `start` is at most the number of lanes a consumer saw before (lanes never go), so
        // each index below is one subtraction away from `start + k`, where a remainder was
        // a division per lane looked at.
        let start = match start <= lanes {
            true => start,
            false => start % lanes,
        };
        (0..lanes)
            .map(move |k| match start + k < lanes {
                true => start + k,
                false => start + k - lanes,
            })
            .filter_map(|i| Some((i, self.lane(i)?)))
    }

    fn each_lane(&self) -> impl Iterator<Item = &Lane> {
        (0..self.lanes()).filter_map(|i| self.lane(i))
    }

    /// Whether some lane's record is published at its head, or an overflow holds some: a
    /// waiter's cheap look while it spins.
    pub(crate) fn has_ready(&self) -> bool {
        self.each_lane().any(Lane::has_ready)
    }

    /// The waiter's side of the sleeper Dekker pair, after it registered and before its
    /// last look ([`has_claimed`](Self::has_claimed)): a heavy barrier when a thread other
    /// than the caller owns a private lane (see the module docs).
    pub(crate) fn sync_with_posters(&self) {
        if self.foreign_owners() {
            barrier::heavy();
        }
    }

    /// Whether a thread other than the caller, and one that does not fence its posts, owns
    /// a private lane of this ring.
    fn foreign_owners(&self) -> bool {
        let mine = caller_token();
        (1..self.lanes()).filter_map(|i| self.lane(i)).any(|lane| {
            // SeqCst: pairs with the owner's claim in `acquire_lane` (see there).
            let owner = lane.producers.owner.load(Ordering::SeqCst);
            // A thread that fences its posts has made its side of the pair itself.
            owner != 0 && owner != mine && owner & FENCED == 0
        })
    }

    /// Whether any record is claimed past a lane's `head` or waits in an overflow: a
    /// waiter's last look before it sleeps (see the module docs).
    pub(crate) fn has_claimed(&self) -> bool {
        self.each_lane().any(Lane::has_claimed)
    }

    /// Records queued: claimed positions (published or about to be) and overflows.
    pub(crate) fn len(&self) -> usize {
        self.each_lane().map(Lane::len).sum()
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
        // Look before the swap: threads waiting for a holder then read the line instead of
        // taking it from each other. Relaxed: the swap below decides. (Not under loom: a
        // look that sees the claim held answers what a failed swap answers, and the extra
        // step in every claim multiplied the models' interleavings twentyfold.)
        #[cfg(not(loom))]
        if self.consumer.consuming.load(Ordering::Relaxed) {
            return None;
        }
        // Acquire: pairs with the release in `Consumer::drop`, so the previous holder's
        // `head`, stash and `next_lane` writes are visible.
        if self.consumer.consuming.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(Consumer {
            ring: self,
            run: None,
        })
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The dropping thread's entry goes now; other threads' go as their caches move on,
        // pruned once they see the ring dropped.
        #[cfg(not(loom))]
        self.forget_own_lane();
        // Relaxed: a hint for the caches of threads that still hold an entry.
        self.dropped.store(true, Ordering::Relaxed);
        for entry in self.private.iter() {
            // Relaxed: `&mut self`, nobody else looks.
            let lane = entry.load(Ordering::Relaxed);
            if !lane.is_null() {
                // SAFETY: the ring's own count, from `Arc::into_raw` in `acquire_lane`.
                drop(unsafe { Arc::from_raw(lane) });
            }
        }
    }
}

/// Makes the calling thread fence each of its posts to a private lane (see the module docs),
/// so that a waiter need not make every CPU of the program execute a barrier for it. For
/// threads that post in batches to waiters that sleep between them: the engine's reactor,
/// file-pool and io_uring threads call it first thing. It takes effect only on a thread
/// that has not posted yet (one whose lanes are held under its token already keeps it);
/// either way every post is ordered with every waiter.
pub fn fence_own_posts() {
    // A thread being torn down posts on the shared lane, whose claim is a fence already.
    let _ = HELD.try_with(|held| {
        if let Ok(mut lanes) = held.try_borrow_mut() {
            if lanes.token == 0 {
                lanes.token = FENCED;
            }
        }
    });
}

/// The poster's side of the sleeper Dekker pair after a post to a private lane whose owner
/// token is `owner` (see the module docs): a full fence for a thread that fences its posts,
/// else [`barrier::light`].
#[inline(always)]
fn after_private_post(owner: usize) {
    if owner & FENCED != 0 {
        // SeqCst: the poster's half of the symmetric pair with the waiter's SeqCst
        // registration and last look; it stands in for the waiter's `barrier::heavy`.
        crate::primitive::fence(Ordering::SeqCst);
    } else {
        barrier::light();
    }
}

/// After a thread takes a lane, before its first post there: a full fence. A waiter that
/// saw no other owner (and so made no heavy barrier) read the owners before this claim in
/// the single order of sequentially consistent operations, so after this fence the thread's
/// look for sleepers sees that waiter's registration.
fn after_taking_a_lane() {
    // SeqCst: see above; pairs with the waiter's SeqCst registration and owner loads.
    crate::primitive::fence(Ordering::SeqCst);
}

/// Aborts the process when dropped: alive while a caller's closure makes the records of
/// slots already claimed, and forgotten once they are all written, so that only an unwind
/// out of that closure drops it.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        std::process::abort();
    }
}

/// A lane's slot array and mask, read once before a loop over records. Read through the
/// lane at every record, they were loaded again after each stamp's acquire load or release
/// store, which the compiler may not move them across.
#[derive(Clone, Copy)]
struct Slots<'a> {
    slots: &'a [Slot],
    mask: usize,
}

impl<'a> Slots<'a> {
    /// The slot of position `pos`.
    #[inline(always)]
    fn slot(self, pos: usize) -> &'a Slot {
        // SAFETY: `slots` has `mask + 1` entries (see `Lane::new`), so `pos & mask` is in
        // bounds; the check the index operator would make is one compare and branch per
        // record on the drain's and the post's paths.
        unsafe { self.slots.get_unchecked(pos & self.mask) }
    }

    /// Whether position `pos` is published: after `true`, its record may be read
    /// ([`record`](Self::record)).
    #[inline(always)]
    fn is_published(self, pos: usize) -> bool {
        // Acquire: pairs with the release store of the stamp in `write_and_publish`.
        self.slot(pos).stamp.load(Ordering::Acquire) == stamp(pos)
    }

    /// The record at position `pos`, found published (acquire) under the consumer claim.
    #[inline(always)]
    fn record(self, pos: usize) -> Completion {
        self.slot(pos).record.with(|cell| {
            // SAFETY: the caller found position `pos` published (acquire), so the record is
            // initialized, and no producer writes it before the consumer frees it.
            unsafe { (*cell).assume_init() }
        })
    }

    /// Writes `record` into the slot of `pos`, claimed by this thread, and publishes it.
    /// Always inlined: a call would take the record by reference, so every post would
    /// build it in memory (see `Completion::to_words`).
    ///
    /// `Stores::Words` writes the record as three 8-byte stores, each fed by an 8-byte load,
    /// for a single post: its record mostly comes from memory its caller has just written
    /// word by word (a `Completion` built, then passed on). Copied whole, the record's first
    /// two words are one 16-byte load, which the processor cannot forward from the two
    /// stores that wrote them: it waits until both reach the cache, and stores reach it in
    /// order, behind the earlier posts' slot stores, each of which may be waiting for its
    /// line from a consumer's core. A producer then paid a line transfer per post: on the
    /// 2-core Intel Xeon VM, one thread posting single records to two or four workers in
    /// `get_up_to` moved 31-65 M records/s that way and 192-206 M/s by words
    /// (`iocp-bench drain`'s pool rows, eight runs of each build). The stores are volatile
    /// so that the compiler does not merge them back into one copy. `Stores::Whole` leaves
    /// the copy to the compiler, for a batch: a same-thread batched post is bound by its
    /// stores, and the copy makes one fewer per record (`post_many` of 32, then a drain:
    /// 421-455 M/s with every record by words, 477-523 with batches copied whole).
    #[inline(always)]
    fn write_and_publish(self, pos: usize, record: Completion, stores: Stores) {
        let slot = self.slot(pos);
        slot.record.with_mut(|cell| {
            // SAFETY: this thread claimed `pos`; the slot's previous record was freed
            // (the claim saw `head` past it), and the consumer reads it only after the stamp.
            // The words are the record's memory exactly (see `Completion::to_words`).
            #[cfg(target_pointer_width = "64")]
            unsafe {
                let words = cell.cast::<u64>();
                match stores {
                    Stores::Words => {
                        let [first, second, third] = record.to_words();
                        words.write_volatile(first);
                        words.add(1).write_volatile(second);
                        words.add(2).write_volatile(third);
                    }
                    Stores::Whole => words.cast::<[u64; 3]>().write(record.to_words()),
                }
            };
            // SAFETY: this thread claimed `pos` and the slot's previous record was freed
            // (the claim saw `head` past it); the consumer reads it only after the stamp.
            #[cfg(not(target_pointer_width = "64"))]
            unsafe {
                let _ = stores;
                (*cell).write(record)
            };
        });
        // Release: pairs with the consumer's acquire load in `is_published`.
        slot.stamp.store(stamp(pos), Ordering::Release);
    }
}

impl Lane {
    /// A lane of `capacity` slots: private to the thread with `owner`'s token, or shared.
    /// `ENOMEM` when its slots cannot be allocated (the fault seam's `Alloc` too).
    fn new(capacity: usize, owner: Option<usize>) -> io::Result<Lane> {
        let no_memory = || io::Error::from_raw_os_error(libc::ENOMEM);
        #[cfg(not(loom))]
        crate::sys::fault::allocation()?;
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity).map_err(|_| no_memory())?;
        slots.extend((0..capacity).map(|_| Slot {
            record: UnsafeCell::new(MaybeUninit::uninit()),
            stamp: AtomicUsize::new(0),
        }));
        Ok(Lane {
            head: CachePadded::new(AtomicUsize::new(0)),
            producers: CachePadded::new(Producers {
                tail: AtomicUsize::new(0),
                head: AtomicUsize::new(0),
                owner: AtomicUsize::new(owner.unwrap_or(0)),
            }),
            overflow_len: CachePadded::new(AtomicUsize::new(0)),
            overflow: SegQueue::new(),
            stash: UnsafeCell::new(None),
            slots: slots.into_boxed_slice(),
            mask: capacity - 1,
            prefetch_below: match sys::prefetch::available() {
                true => capacity.saturating_sub(PREFETCH_AHEAD),
                false => 0,
            },
            private: owner.is_some(),
        })
    }

    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// The slot array and its mask, to read once before a loop over records.
    #[inline(always)]
    fn slots(&self) -> Slots<'_> {
        Slots {
            slots: &self.slots,
            mask: self.mask,
        }
    }

    /// The slot of position `pos`.
    #[inline(always)]
    fn slot(&self, pos: usize) -> &Slot {
        self.slots().slot(pos)
    }

    /// Queues `record` (see [`Ring::push`]); in a private lane, only its owner calls this.
    #[inline]
    fn push(&self, record: Completion) {
        self.push_claiming(record, |lane| match lane.private {
            true => lane.claim_private(1),
            false => lane.claim_shared(1),
        });
    }

    /// Whether the thread whose token is `token` still owns this private lane.
    #[cfg(not(loom))]
    #[inline(always)]
    fn owned_by(&self, token: usize) -> bool {
        // Relaxed: only this thread stores its own token in `owner` (its claim in
        // `acquire_lane`), and only its `Held::drop` clears it. A thread reads its own
        // latest store of `owner` or a later one, and tokens are never reused, so the token
        // seen here means the thread still owns the lane; after letting the lane go (its
        // lane cache torn down at thread exit) it never sees the token again.
        self.producers.owner.load(Ordering::Relaxed) == token
    }

    /// [`push`](Self::push) on a private lane, by its owner: the same steps without the
    /// look at which kind of lane this is.
    #[cfg(not(loom))]
    #[inline(always)]
    fn push_private(&self, record: Completion) {
        debug_assert!(self.private);
        self.push_claiming(record, |lane| lane.claim_private(1));
    }

    /// Queues `record` in the slot `claim` gets, or in the overflow when the overflow holds
    /// records already or `claim` finds no room.
    #[inline(always)]
    fn push_claiming(
        &self,
        record: Completion,
        claim: impl FnOnce(&Lane) -> Option<(usize, usize)>,
    ) {
        if !self.try_push_claiming(record, claim) {
            let [first, second, third] = record.to_words();
            self.spill_one(first, second, third);
        }
    }

    /// Queues `record` in the slot `claim` gets; `false`, with nothing queued, when the
    /// overflow holds records already or `claim` finds no room.
    #[inline(always)]
    fn try_push_claiming(
        &self,
        record: Completion,
        claim: impl FnOnce(&Lane) -> Option<(usize, usize)>,
    ) -> bool {
        // Acquire: as in `push_many_with`.
        if self.overflow_len.load(Ordering::Acquire) == 0 {
            if let Some((pos, _)) = claim(self) {
                self.write_and_publish(pos, record);
                return true;
            }
        }
        false
    }

    /// [`spill`](Self::spill) of one record, which it takes by its words (see
    /// `Completion::to_words`): a record passed by reference (as `spill` takes it, or by
    /// value, which passes the caller's copy) would be built in memory by every post.
    #[cold]
    fn spill_one(&self, first: u64, second: u64, third: u64) {
        let record = Completion::from_words([first, second, third]);
        self.spill(std::slice::from_ref(&record), |record| *record);
    }

    /// Queues a record made by `record` for each of `items`, in order (see
    /// [`Ring::push_many_with`]); in a private lane, only its owner calls this.
    fn push_many_with<T>(&self, items: &[T], record: impl Fn(&T) -> Completion) {
        let mut rest = items;
        // Acquire: pairs with the release decrement in `Lane::take_overflow` (per-producer
        // order, see the module docs).
        if self.overflow_len.load(Ordering::Acquire) == 0 {
            let claimed = match self.private {
                true => self.claim_private(rest.len()),
                false => self.claim_shared(rest.len()),
            };
            if let Some((pos, claimed)) = claimed {
                let slots = self.slots();
                for (i, item) in rest[..claimed].iter().enumerate() {
                    slots.write_and_publish(pos.wrapping_add(i), record(item), Stores::Whole);
                }
                rest = &rest[claimed..];
            }
        }
        if !rest.is_empty() {
            self.spill(rest, record);
        }
    }

    /// Queues a record made by `record` for each of `items`, for which the ring has no room
    /// or behind records already there, in the overflow, in order.
    #[cold]
    fn spill<T>(&self, items: &[T], record: impl Fn(&T) -> Completion) {
        // SeqCst: like the shared claim's, this increment is the poster's half of the
        // sleeper Dekker pair (see the module docs and `has_claimed`); release, it also
        // makes the ring claims before it visible to a consumer that sees the count.
        self.overflow_len.fetch_add(items.len(), Ordering::SeqCst);
        crate::primitive::loom_seqcst_fence();
        for item in items {
            self.overflow.push(record(item));
        }
    }

    /// The owner's claim on a private lane: the next `1..=want` positions, as many as
    /// there is room for; `None` when there is none.
    #[inline(always)]
    fn claim_private(&self, want: usize) -> Option<(usize, usize)> {
        let producers = &*self.producers;
        // Relaxed (both): only the owner writes them, and a new owner acquired the last
        // owner's values through `owner`.
        let tail = producers.tail.load(Ordering::Relaxed);
        let mut used = tail.wrapping_sub(producers.head.load(Ordering::Relaxed));
        if self.capacity() - used < want {
            // Looks too full: refresh the copy. Acquire: pairs with `Consumer::release`:
            // the slots' old records have been read before we overwrite them.
            let head = self.head.load(Ordering::Acquire);
            // Relaxed: the owner's own copy.
            producers.head.store(head, Ordering::Relaxed);
            used = tail.wrapping_sub(head);
            if used >= self.capacity() {
                return None;
            }
        }
        let claimed = want.min(self.capacity() - used);
        // Release: with the overflow count's increment after it, lets a consumer that sees
        // the count see this claim (the overflow rule, see the module docs).
        producers
            .tail
            .store(tail.wrapping_add(claimed), Ordering::Release);
        // Once a line (two slots) for single posts; the position asked for is free: no
        // consumer reads its line before the producer writes it.
        if used + claimed <= self.prefetch_below && (claimed > 1 || tail & 1 == 0) {
            let ahead = tail.wrapping_add(claimed - 1 + PREFETCH_AHEAD);
            sys::prefetch::for_write(self.slot(ahead));
        }
        Some((tail, claimed))
    }

    /// A claim on the shared lane: the next `1..=want` positions, as many as there is
    /// room for; `None` when there is none.
    fn claim_shared(&self, want: usize) -> Option<(usize, usize)> {
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
            // room was established by the acquire loads above.
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

    /// Writes a single post's record into the slot of `pos` and publishes it. Always
    /// inlined: see `Slots::write_and_publish`.
    #[inline(always)]
    fn write_and_publish(&self, pos: usize, record: Completion) {
        self.slots().write_and_publish(pos, record, Stores::Words);
    }

    fn has_ready(&self) -> bool {
        // Acquire: pairs with `Consumer::release`, so the stamp read below is for this lap.
        let head = self.head.load(Ordering::Acquire);
        // Relaxed: a hint; whoever acts on it reads the stamp again under the claim.
        self.slot(head).stamp.load(Ordering::Relaxed) == stamp(head)
            || self.overflow_len.load(Ordering::Relaxed) > 0
    }

    fn has_claimed(&self) -> bool {
        // SeqCst: the waiter's half of the Dekker pair with the SeqCst claim in
        // `claim_shared` and increment in `push_many_with` (for private lanes, after
        // `Ring::sync_with_posters`).
        let tail = self.producers.tail.load(Ordering::SeqCst);
        tail != self.head.load(Ordering::SeqCst) || self.overflow_len.load(Ordering::SeqCst) > 0
    }

    fn len(&self) -> usize {
        // SeqCst: read after a poster's claim, like `has_claimed`.
        let head = self.head.load(Ordering::SeqCst);
        let tail = self.producers.tail.load(Ordering::SeqCst);
        tail.wrapping_sub(head) + self.overflow_len.load(Ordering::SeqCst)
    }

    /// Length of the run of published records from `head` (a value of the lane's `head`
    /// read under the consumer claim), at most `max`. On a lane another thread may be
    /// posting to, the scan pauses after each [`SCAN_STRETCH`] slots (see there).
    fn ready(&self, head: usize, max: usize) -> usize {
        let max = max.min(self.capacity());
        let slots = self.slots();
        let mut n = 0;
        let mut paced = None;
        while n < max && slots.is_published(head.wrapping_add(n)) {
            n += 1;
            // A test in the loop, not loops of `SCAN_STRETCH` checks (see there).
            if n % SCAN_STRETCH == 0 && *paced.get_or_insert_with(|| !self.owned_by_caller()) {
                crate::primitive::spin_loop();
            }
        }
        n
    }

    /// Whether the calling thread owns this private lane, so that no other thread posts to
    /// it meanwhile.
    fn owned_by_caller(&self) -> bool {
        let mine = caller_token();
        // Relaxed: only the owner itself stores its token, so a load by the owner sees it;
        // any other value says another thread (or none) owns the lane.
        mine != 0 && self.producers.owner.load(Ordering::Relaxed) == mine
    }

    /// The record at position `pos`, found published (acquire) under the consumer claim.
    fn record(&self, pos: usize) -> Completion {
        self.slots().record(pos)
    }

    /// Whether the overflow's turn has come: it holds records and nothing claimed in the
    /// ring is left to read (see the module docs). Under the consumer claim.
    fn overflow_turn(&self, head: usize) -> bool {
        // Acquire (both): pairs with the increment in `push_many_with`, and through it with
        // the claims made before it.
        self.overflow_len.load(Ordering::Acquire) > 0
            && self.producers.tail.load(Ordering::Acquire) == head
    }

    /// The overflow's front record, moved into the stash, if it may go now; `None` when a
    /// record counted is not pushed yet, or a ring claim came meanwhile (see
    /// [`claimed_since`](Self::claimed_since)). Under the consumer claim, on the overflow's
    /// turn, with the ring empty at `head`.
    fn overflow_front(&self, head: usize) -> Option<Completion> {
        self.stash.with_mut(|stash| {
            // SAFETY: the stash is only accessed by the consumer-claim holder, which we are.
            let stash = unsafe { &mut *stash };
            if stash.is_none() {
                *stash = self.overflow.pop();
            }
            stash.filter(|_| !self.claimed_since(head))
        })
    }

    /// The record [`overflow_front`](Self::overflow_front) stashed. Under the consumer claim.
    fn stashed(&self) -> Option<Completion> {
        self.stash.with(|stash| {
            // SAFETY: the stash is only accessed by the consumer-claim holder, which we are.
            unsafe { *stash }
        })
    }

    /// Whether a producer has claimed ring positions from `head` on since the overflow's
    /// turn began, with the ring empty at `head`: then the overflow record just taken (into
    /// the stash) must wait for the ring. On a shared lane a producer that read the count
    /// at zero before the turn began may claim the ring during it, then overflow its next
    /// record: taken from the queue, that record comes after its push, which comes after
    /// the claim, so this load (acquire, after the queue's own acquire) sees the claim.
    fn claimed_since(&self, head: usize) -> bool {
        // Acquire: orders this load after the queue's pop that precedes it (see above).
        self.producers.tail.load(Ordering::Acquire) != head
    }

    /// Hands up to `max` overflow records to `f`, the stashed one first, numbered from
    /// `first`, and takes them with one decrement of the count; stops at a record that must
    /// wait for a ring claim ([`claimed_since`](Self::claimed_since)), which stays in the
    /// stash. Under the consumer claim, on the overflow's turn, with the ring empty at `head`.
    fn drain_overflow(
        &self,
        head: usize,
        max: usize,
        first: usize,
        f: &mut impl FnMut(usize, &Completion),
    ) -> usize {
        let mut taken = 0;
        self.stash.with_mut(|stash| {
            // SAFETY: the stash is only touched by the consumer-claim holder, which the
            // caller is.
            let stash = unsafe { &mut *stash };
            while taken < max {
                let Some(record) = stash.take().or_else(|| self.overflow.pop()) else {
                    break;
                };
                if self.claimed_since(head) {
                    *stash = Some(record);
                    break;
                }
                f(first + taken, &record);
                taken += 1;
            }
        });
        if taken > 0 {
            // Release: as in `take_overflow`.
            self.overflow_len.fetch_sub(taken, Ordering::Release);
        }
        taken
    }

    /// Takes the stashed front record (see [`overflow_front`](Self::overflow_front)).
    fn take_overflow(&self) {
        self.stash.with_mut(|stash| {
            // SAFETY: the stash is only touched by the consumer-claim holder, and only the
            // holder calls this.
            unsafe { *stash = None };
        });
        // Release: pairs with the acquire load in `push_many_with`; a producer that sees
        // the count at zero goes back to the ring after every record it overflowed was
        // taken.
        self.overflow_len.fetch_sub(1, Ordering::Release);
    }
}

/// The consumer claim on a ring, released on drop.
pub(crate) struct Consumer<'a> {
    ring: &'a Ring,
    /// The run [`ready`](Self::ready) found last.
    run: Option<Run<'a>>,
}

/// A run of records in one lane: published ring positions from `head`, or the overflow's
/// front record.
#[derive(Clone, Copy)]
struct Run<'a> {
    lane: &'a Lane,
    head: usize,
    from: Origin,
}

/// Where a [`Run`]'s records are. A whole word, not a `bool`: a `bool` leaves niche values
/// that `Option<Run>`, and the `Result`s a [`Consumer`] travels in, pack their tags into,
/// and the moves of such a value through the stack became single-byte stores read back by
/// wider loads, which the store buffer cannot forward (stalls of a dozen cycles each).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Origin {
    Ring,
    Overflow,
}

impl<'a> Consumer<'a> {
    fn next_lane(&self) -> usize {
        self.ring.consumer.next_lane.with(|next| {
            // SAFETY: only the consumer-claim holder touches `next_lane`.
            unsafe { *next }
        })
    }

    fn set_next_lane(&self, lane: usize) {
        self.ring.consumer.next_lane.with_mut(|next| {
            // SAFETY: only the consumer-claim holder touches `next_lane`, and a `Consumer`
            // exists only while its claim is held.
            unsafe { *next = lane };
        });
    }

    /// Finds a run of up to `max` ready records, in the first lane that has one from where
    /// the last drain stopped, for [`get`](Self::get), [`take`](Self::take) and
    /// [`release`](Self::release). Returns its length, 0 if no lane has one.
    ///
    /// Always inlined: in `libiocp.so`, whose dequeues instantiate `try_take` several times
    /// over, the compiler left it a function of its own (`#[inline]` did not change that).
    /// One thread taking back 4,000 queued records one `GetQueuedCompletionStatus` at a
    /// time, AMD EPYC: 17.9 -> 15.7 ns a record (Rust's `get`: 10.0-10.5 -> 9.4-10.1 ns).
    #[inline(always)]
    pub(crate) fn ready(&mut self, max: usize) -> usize {
        let start = self.next_lane();
        for (i, lane) in self.ring.lanes_from(start) {
            // Relaxed: only the consumer-claim holder writes `head`.
            let head = lane.head.load(Ordering::Relaxed);
            let n = lane.ready(head, max);
            if n > 0 {
                self.run = Some(Run {
                    lane,
                    head,
                    from: Origin::Ring,
                });
                // The next look starts at this lane again unless the run reaches past a
                // multiple of `STAY` positions. One thread posting 16 records and taking
                // them back with `get`, on a 2-core AMD EPYC: 23.0 ns a record with a look
                // at the other lane first every time, 21.6 ns with one every `STAY`.
                let next = match head / STAY == head.wrapping_add(n) / STAY {
                    true => i,
                    false => i + 1,
                };
                if next != start {
                    self.set_next_lane(next);
                }
                return n;
            }
            if lane.overflow_turn(head) && lane.overflow_front(head).is_some() {
                self.run = Some(Run {
                    lane,
                    head,
                    from: Origin::Overflow,
                });
                self.set_next_lane(i + 1);
                return 1;
            }
        }
        0
    }

    /// Record `i` of the run [`ready`](Self::ready) found (`i` below its length).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Completion {
        let run = self.run.expect("a run was found");
        if run.from == Origin::Overflow {
            run.lane
                .stashed()
                .expect("the stash holds the front record")
        } else {
            run.lane.record(run.head.wrapping_add(i))
        }
    }

    /// Hands the first `n` records of the run found to `f` with their index, then frees
    /// them with one store.
    pub(crate) fn take(&mut self, n: usize, mut f: impl FnMut(usize, &Completion)) {
        match self.run {
            Some(run) if run.from == Origin::Ring => {
                let slots = run.lane.slots();
                for i in 0..n {
                    f(i, &slots.record(run.head.wrapping_add(i)));
                }
            }
            _ => {
                for i in 0..n {
                    f(i, &self.get(i));
                }
            }
        }
        self.release(n);
    }

    /// Frees the first `n` records of the run found.
    pub(crate) fn release(&mut self, n: usize) {
        let Some(run) = self.run.take() else {
            return;
        };
        if n == 0 {
            return;
        }
        if run.from == Origin::Overflow {
            run.lane.take_overflow();
        } else {
            // Release: pairs with the acquire loads of `head` in the claims: our reads of
            // the freed slots happen before any producer overwrites them.
            run.lane
                .head
                .store(run.head.wrapping_add(n), Ordering::Release);
        }
    }

    /// Hands on up to `max` ready records from every lane in turn, each with its index
    /// (0, 1, ...) as soon as its stamp is checked (one pass over the slots: the check and
    /// the copy read the same line), freeing each lane's run with one store. Returns how
    /// many. (The index spares a sink that fills an array a count of its own: kept in
    /// memory behind the closure, its increment made a store-to-load chain through every
    /// record of a drain.)
    pub(crate) fn take_ready(
        &mut self,
        max: usize,
        mut f: impl FnMut(usize, &Completion),
    ) -> usize {
        let mut total = 0;
        for (i, lane) in self.ring.lanes_from(self.next_lane()) {
            total += Self::take_lane(lane, max - total, total, &mut f);
            if total == max {
                // The next drain starts after the lane that filled this one.
                self.set_next_lane(i + 1);
                break;
            }
        }
        total
    }

    /// [`take_ready`](Self::take_ready) on one lane: its ring run, then, on the overflow's
    /// turn, overflow records, then the ring again, while they come; numbered from `first`.
    fn take_lane(
        lane: &Lane,
        max: usize,
        first: usize,
        f: &mut impl FnMut(usize, &Completion),
    ) -> usize {
        let mut total = 0;
        // Relaxed: only the consumer-claim holder writes `head`.
        let mut head = lane.head.load(Ordering::Relaxed);
        while total < max {
            let limit = (max - total).min(lane.capacity());
            let slots = lane.slots();
            let mut n = 0;
            while n < limit {
                let pos = head.wrapping_add(n);
                if !slots.is_published(pos) {
                    break;
                }
                f(first + total + n, &slots.record(pos));
                n += 1;
            }
            if n > 0 {
                head = head.wrapping_add(n);
                total += n;
                // Release: pairs with the acquire loads of `head` in the claims.
                lane.head.store(head, Ordering::Release);
                continue;
            }
            if !lane.overflow_turn(head) {
                break;
            }
            // The overflow's turn lasts until it is empty: producers keep adding to it, not
            // to the ring, until the count taken below reaches zero.
            let taken = lane.drain_overflow(head, max - total, first + total, &mut *f);
            if taken == 0 {
                break;
            }
            total += taken;
        }
        total
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
            let start = out.len();
            let taken = c.take_ready(usize::MAX, |i, record| {
                assert_eq!(
                    i,
                    out.len() - start,
                    "a drain numbers its records 0, 1, ..."
                );
                out.push(*record);
            });
            if taken == 0 {
                break;
            }
        }
        out
    }

    /// Drains through `ready`/`take`, the path of `get` and of the zero-copy batch.
    fn drain_by_runs(ring: &Ring) -> Vec<Completion> {
        let mut out = Vec::new();
        let mut c = ring.try_consume().unwrap();
        loop {
            let n = c.ready(usize::MAX);
            if n == 0 {
                return out;
            }
            c.take(n, |_, record| out.push(*record));
        }
    }

    #[test]
    fn fifo_through_wraparound() {
        let ring = Ring::new(8, false).unwrap();
        let mut next = 0;
        let mut seen = Vec::new();
        for round in 0..20 {
            for _ in 0..(round % 8) + 1 {
                ring.push(rec(next));
                next += 1;
            }
            seen.extend(if round % 2 == 0 {
                drain_all(&ring)
            } else {
                drain_by_runs(&ring)
            });
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
            for by_runs in [false, true] {
                let ring = Ring::new(cap, false).unwrap();
                for i in 0..cap * 5 + 3 {
                    ring.push(rec(i));
                }
                assert_eq!(ring.len(), cap * 5 + 3);
                assert!(ring.has_ready() && ring.has_claimed());
                let got = if by_runs {
                    drain_by_runs(&ring)
                } else {
                    drain_all(&ring)
                };
                assert_eq!(
                    got,
                    (0..cap * 5 + 3).map(rec).collect::<Vec<_>>(),
                    "cap {cap}"
                );
                assert_eq!(ring.len(), 0);
                assert!(!ring.has_ready() && !ring.has_claimed());
            }
        }
    }

    #[test]
    fn a_second_consumer_is_refused() {
        let ring = Ring::new(4, false).unwrap();
        let first = ring.try_consume().unwrap();
        assert!(ring.try_consume().is_none());
        drop(first);
        assert!(ring.try_consume().is_some());
    }

    #[test]
    fn run_stops_at_an_unpublished_slot() {
        for cap in [2, 16, 64, 256] {
            let ring = Ring::new(cap, false).unwrap();
            let lane = &ring.shared;
            // Several laps, so that stale stamps of the lap before are in every slot.
            for lap in 0..3 {
                let positions: Vec<usize> =
                    (0..cap).map(|_| lane.claim_shared(1).unwrap().0).collect();
                assert!(lane.claim_shared(1).is_none(), "ring of {cap} must be full");
                let hole = (lap * 7 + 1) % cap;
                for (i, &pos) in positions.iter().enumerate() {
                    if i != hole {
                        lane.write_and_publish(pos, rec(pos));
                    }
                }
                let mut c = ring.try_consume().unwrap();
                assert_eq!(c.ready(usize::MAX), hole);
                assert_eq!(c.ready(hole.saturating_sub(1)), hole.saturating_sub(1));
                // Claimed but unpublished: no overflow turn, and a copying drain stops too.
                assert_eq!(c.take_ready(usize::MAX, |_, _| ()), hole);
                drop(c);
                lane.write_and_publish(positions[hole], rec(positions[hole]));
                let got = drain_by_runs(&ring);
                let want: Vec<Completion> = positions.iter().map(|&p| rec(p)).collect();
                // The copying drain above took the run before the hole.
                assert_eq!(got, want[hole..], "cap {cap}");
            }
        }
    }

    /// A consumer's look visits every lane once, in turn from the one it starts at, for
    /// every start a consumer can store (up to the number of lanes) and past it.
    #[test]
    fn a_look_visits_every_lane_once_from_any_start() {
        let ring = Ring::new(4, false).unwrap();
        // Three threads holding a private lane each at once, beside the shared one.
        let posted = std::sync::Barrier::new(3);
        std::thread::scope(|s| {
            for i in 0..3 {
                let (ring, posted) = (&ring, &posted);
                s.spawn(move || {
                    ring.push(rec(i));
                    posted.wait();
                });
            }
        });
        let lanes = ring.lanes();
        assert_eq!(lanes, 4);
        for start in 0..3 * lanes {
            let visited: Vec<usize> = ring.lanes_from(start).map(|(i, _)| i).collect();
            let want: Vec<usize> = (0..lanes).map(|k| (start + k) % lanes).collect();
            assert_eq!(visited, want, "start {start}");
        }
    }

    /// A scan pauses every `SCAN_STRETCH` slots on a lane other threads may post to, and
    /// not on the caller's own: either way it counts the run exactly, across stretches.
    #[test]
    fn a_run_longer_than_a_scan_stretch_is_counted_exactly() {
        let cap = 4 * SCAN_STRETCH;
        let around = [
            SCAN_STRETCH - 1,
            SCAN_STRETCH,
            SCAN_STRETCH + 1,
            2 * SCAN_STRETCH,
        ];
        // The shared lane, which no thread owns: a hole at and around the boundaries.
        for hole in around.into_iter().chain([cap - 1]) {
            let ring = Ring::new(cap, false).unwrap();
            let lane = &ring.shared;
            let positions: Vec<usize> = (0..cap).map(|_| lane.claim_shared(1).unwrap().0).collect();
            for (i, &pos) in positions.iter().enumerate() {
                if i != hole {
                    lane.write_and_publish(pos, rec(pos));
                }
            }
            assert!(!lane.owned_by_caller());
            let mut c = ring.try_consume().unwrap();
            assert_eq!(c.ready(usize::MAX), hole);
            for max in around {
                assert_eq!(c.ready(max), max.min(hole), "hole {hole}, max {max}");
            }
        }
        // The caller's own lane: runs of each length around the boundaries.
        for len in around.into_iter().chain([cap]) {
            let ring = Ring::new(cap, false).unwrap();
            for i in 0..len {
                ring.push(rec(i));
            }
            assert!(ring.each_lane().any(Lane::owned_by_caller));
            let mut c = ring.try_consume().unwrap();
            assert_eq!(c.ready(usize::MAX), len);
            for max in around {
                assert_eq!(c.ready(max), max.min(len), "len {len}, max {max}");
            }
            drop(c);
            assert_eq!(drain_by_runs(&ring), (0..len).map(rec).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_batch_claims_what_fits_and_overflows_the_rest_in_order() {
        for cap in [1, 4, 64] {
            let ring = Ring::new(cap, false).unwrap();
            // Fill part of the lane, then post a batch larger than the room left.
            ring.push(rec(0));
            let batch: Vec<Completion> = (1..cap * 3).map(rec).collect();
            ring.push_many(&batch);
            assert_eq!(ring.len(), cap * 3);
            let mut c = ring.try_consume().unwrap();
            let n = c.ready(usize::MAX);
            assert_eq!(n, cap);
            c.take(n, |_, _| ());
            drop(c);
            // While the overflow holds records, a later batch goes behind it, even with room.
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
        for private in [false, true] {
            let lane = Lane::new(16, private.then_some(1)).unwrap();
            let claim = |want| match private {
                true => lane.claim_private(want),
                false => lane.claim_shared(want),
            };
            assert_eq!(claim(5), Some((0, 5)));
            assert_eq!(claim(20), Some((5, 11)), "a claim takes the room there is");
            assert_eq!(claim(1), None);
            assert_eq!(lane.ready(0, usize::MAX), 0, "claimed is not published");
            for pos in 0..16 {
                lane.write_and_publish(pos, rec(pos));
            }
            assert_eq!(lane.ready(0, usize::MAX), 16);
            lane.head.store(6, Ordering::Release);
            assert_eq!(claim(8), Some((16, 6)));
        }
    }

    #[test]
    fn a_private_lane_asks_ahead_only_where_it_has_room_and_keeps_every_record() {
        let cap = (PREFETCH_AHEAD * 2).next_power_of_two();
        let lane = Lane::new(cap, Some(1)).unwrap();
        let below = match sys::prefetch::available() {
            true => cap - PREFETCH_AHEAD,
            false => 0,
        };
        assert_eq!(lane.prefetch_below, below);
        let small = Lane::new(PREFETCH_AHEAD.next_power_of_two() / 2, Some(1)).unwrap();
        assert_eq!(small.prefetch_below, 0, "a lane shorter than the distance");
        // Single posts and batches over many laps, taken in runs of other lengths, so
        // that claims are made with the lane near empty and near full.
        let (mut posted, mut taken, mut head) = (0, 0, 0);
        for round in 0..2000 {
            if let Some((pos, n)) = lane.claim_private(round % 7 + 1) {
                for i in 0..n {
                    lane.write_and_publish(pos + i, rec(posted));
                    posted += 1;
                }
            }
            let n = lane.ready(head, round % 5 + 1);
            for i in 0..n {
                assert_eq!(lane.record(head + i), rec(taken));
                taken += 1;
            }
            head += n;
            lane.head.store(head, Ordering::Release);
        }
        let n = lane.ready(head, usize::MAX);
        for i in 0..n {
            assert_eq!(lane.record(head + i), rec(taken));
            taken += 1;
        }
        assert_eq!(taken, posted);
        assert!(posted > cap * 10, "{posted} records: fewer laps than meant");
    }

    #[test]
    fn a_zero_copy_run_from_the_overflow_stays_queued_until_released() {
        let ring = Ring::new(1, false).unwrap();
        ring.push_many(&[rec(0), rec(1), rec(2)]);
        let mut c = ring.try_consume().unwrap();
        assert_eq!(c.ready(8), 1);
        c.take(1, |_, r| assert_eq!(*r, rec(0)));
        // The overflow's front is found, looked at, and left.
        assert_eq!(c.ready(8), 1);
        assert_eq!(c.get(0), rec(1));
        c.release(0);
        assert_eq!(ring.len(), 2);
        assert_eq!(c.ready(8), 1);
        assert_eq!(c.get(0), rec(1), "the stashed record is still first");
        c.release(1);
        drop(c);
        assert_eq!(drain_all(&ring), vec![rec(2)]);
    }

    #[test]
    fn each_thread_posts_on_a_lane_of_its_own_reused_after_it_exits() {
        let ring = Arc::new(Ring::new(8, false).unwrap());
        ring.push(rec(0));
        assert_eq!(ring.installed.load(Ordering::SeqCst), 1);
        assert!(
            !ring.foreign_owners(),
            "the caller's own lane is not foreign"
        );
        for round in 0..3 {
            let r = Arc::clone(&ring);
            std::thread::spawn(move || r.push(rec(round + 1)))
                .join()
                .unwrap();
            // The exited thread's lane went back to the pool and was taken again.
            assert_eq!(ring.installed.load(Ordering::SeqCst), 2, "round {round}");
            assert!(!ring.foreign_owners(), "an exited thread owns nothing");
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let r = Arc::clone(&ring);
        let live = std::thread::spawn(move || {
            r.push(rec(9));
            rx.recv().unwrap();
        });
        while ring.len() < 5 {
            std::thread::yield_now();
        }
        assert!(ring.foreign_owners(), "a live thread owns a lane");
        tx.send(()).unwrap();
        live.join().unwrap();
        let mut got: Vec<u64> = drain_all(&ring).iter().map(Completion::key).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3, 9]);
    }

    /// A live thread that fences its posts, marked before its first post, owns a lane a
    /// waiter need not make a barrier for; one marked only after posting keeps its token,
    /// and with it the waiter's barrier. Either way every record arrives, in order.
    #[test]
    fn a_thread_that_fences_its_posts_is_no_foreign_owner() {
        let ring = Arc::new(Ring::new(8, false).unwrap());
        // Posts `keys` from a thread that calls `fence_own_posts` before or after its
        // first post, and reports `foreign_owners` while that thread still lives.
        let owner_is_foreign = |fence_first: bool, keys: [usize; 3]| {
            let (posted, posted_rx) = std::sync::mpsc::channel::<()>();
            let (done, done_rx) = std::sync::mpsc::channel::<()>();
            let r = Arc::clone(&ring);
            let poster = std::thread::spawn(move || {
                if fence_first {
                    fence_own_posts();
                }
                r.push(rec(keys[0]));
                fence_own_posts();
                r.push_many(&[rec(keys[1]), rec(keys[2])]);
                // The shortcut ends a post with `barrier::light` alone: never to a lane
                // whose owner fences its posts.
                assert_eq!(r.last_lane().is_some(), !fence_first);
                posted.send(()).unwrap();
                done_rx.recv().unwrap();
            });
            posted_rx.recv().unwrap();
            let foreign = ring.foreign_owners();
            done.send(()).unwrap();
            poster.join().unwrap();
            assert_eq!(drain_all(&ring), keys.map(rec), "fence_first {fence_first}");
            foreign
        };
        assert!(!owner_is_foreign(true, [1, 2, 3]));
        assert!(owner_is_foreign(false, [4, 5, 6]));
        assert!(!ring.foreign_owners(), "both threads let their lanes go");
    }

    /// One record at a time (a worker pool's `get`), the consumer stays on a lane for up to
    /// `STAY` records before it looks at the next lane first: neither lane waits longer.
    #[test]
    fn a_get_stays_on_a_lane_for_stay_records_then_moves_on() {
        let ring = Arc::new(Ring::new(64, false).unwrap());
        for i in 0..40 {
            ring.push(rec(i));
        }
        let r = Arc::clone(&ring);
        std::thread::spawn(move || (100..140).for_each(|i| r.push(rec(i))))
            .join()
            .unwrap();
        let mut keys = Vec::new();
        let mut c = ring.try_consume().unwrap();
        while c.ready(1) == 1 {
            c.take(1, |_, record| keys.push(record.key()));
        }
        assert_eq!(keys.len(), 80);
        let (mine, theirs): (Vec<u64>, Vec<u64>) = keys.iter().partition(|&&k| k < 100);
        assert_eq!(mine, (0..40).collect::<Vec<u64>>(), "one lane's order");
        assert_eq!(theirs, (100..140).collect::<Vec<u64>>(), "the other's");
        let runs: Vec<usize> = keys
            .chunk_by(|a, b| (*a < 100) == (*b < 100))
            .map(<[u64]>::len)
            .collect();
        // 40 records a lane: two runs of `STAY` from each in turn, then the last 8 of each.
        assert_eq!(runs, [STAY, STAY, STAY, STAY, 8, 8], "{keys:?}");
    }

    /// A post through a [`Place`] made after the thread's lane cache is gone (a thread-local
    /// torn down after it) finds the lane let go, and posts on the shared lane rather than
    /// on a lane another thread may own by then.
    #[test]
    fn a_place_whose_lane_was_let_go_posts_on_the_shared_lane() {
        struct PostsAtExit(Arc<Ring>, Place);
        impl Drop for PostsAtExit {
            fn drop(&mut self) {
                self.0.push_at(&mut self.1, rec(2));
            }
        }
        std::thread_local! {
            static AT_EXIT: RefCell<Option<PostsAtExit>> = const { RefCell::new(None) };
        }
        let ring = Arc::new(Ring::new(8, false).unwrap());
        let r = Arc::clone(&ring);
        std::thread::spawn(move || {
            // Set before the thread's first post makes its lane cache, so torn down after it.
            AT_EXIT.with(|at_exit| *at_exit.borrow_mut() = Some(PostsAtExit(r, Place::default())));
            AT_EXIT.with(|at_exit| {
                let mut at_exit = at_exit.borrow_mut();
                let PostsAtExit(ring, place) = at_exit.as_mut().unwrap();
                ring.push_at(place, rec(0));
                assert!(place.private.is_some(), "the first post found the lane");
                ring.push_at(place, rec(1));
            });
        })
        .join()
        .unwrap();
        assert_eq!(
            ring.shared.len(),
            1,
            "the post at exit went to the shared lane"
        );
        let mut got: Vec<usize> = drain_all(&ring).iter().map(|r| r.overlapped()).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
    }

    /// A post that finds its lane through `LAST_LANE` (a repeat post to the same ring) and
    /// runs after the thread's lane cache is gone (in a thread-local torn down after it)
    /// posts on the shared lane: the lane was let go with the cache, and is free for the
    /// next thread.
    #[test]
    fn a_repeat_post_after_the_lane_cache_is_gone_posts_on_the_shared_lane() {
        struct PostsAtExit(Arc<Ring>);
        impl Drop for PostsAtExit {
            fn drop(&mut self) {
                self.0.push(rec(2));
            }
        }
        std::thread_local! {
            static AT_EXIT: RefCell<Option<PostsAtExit>> = const { RefCell::new(None) };
        }
        let ring = Arc::new(Ring::new(8, false).unwrap());
        let r = Arc::clone(&ring);
        std::thread::spawn(move || {
            // Set before the thread's first post makes its lane cache, so torn down after it.
            AT_EXIT.with(|at_exit| *at_exit.borrow_mut() = Some(PostsAtExit(Arc::clone(&r))));
            r.push(rec(0));
            assert!(
                r.last_lane().is_some(),
                "the first post remembered its lane"
            );
            r.push(rec(1));
        })
        .join()
        .unwrap();
        assert_eq!(
            ring.shared.len(),
            1,
            "the post at exit went to the shared lane"
        );
        assert!(!ring.foreign_owners(), "the exited thread let its lane go");
        let mut got: Vec<usize> = drain_all(&ring).iter().map(|r| r.overlapped()).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
    }

    /// A thread posting to many rings in turn keeps one lane on each (found again through
    /// the ordered part of its cache), and the entries of rings that were dropped go.
    #[test]
    fn a_thread_posting_to_many_rings_keeps_one_lane_on_each_and_forgets_dropped_rings() {
        let cached = || {
            HELD.with(|held| {
                let held = held.borrow();
                held.held.len() + held.rest.len()
            })
        };
        std::thread::spawn(move || {
            let rings: Vec<Ring> = (0..4 * FRONT)
                .map(|_| Ring::new(8, false).unwrap())
                .collect();
            for round in 0..3 {
                for ring in &rings {
                    ring.push(rec(round));
                }
            }
            for ring in &rings {
                assert_eq!(ring.lanes(), 2, "one private lane, taken once");
                let got: Vec<usize> = drain_all(ring).iter().map(|r| r.overlapped()).collect();
                assert_eq!(got, [0, 1, 2]);
            }
            assert_eq!(cached(), 4 * FRONT);
            drop(rings);
            // Posting to new rings prunes the dropped ones' entries as the cache grows.
            let fresh: Vec<Ring> = (0..4 * FRONT)
                .map(|_| Ring::new(8, false).unwrap())
                .collect();
            for ring in &fresh {
                ring.push(rec(0));
            }
            assert!(
                cached() < 8 * FRONT,
                "{} entries: the dropped rings' were kept",
                cached()
            );
        })
        .join()
        .unwrap();
    }

    /// Regression: the cache's prune dropped a thread's entry for the shared lane, so a
    /// thread that had found no private lane could take one later and overtake its own
    /// records still queued in the shared lane. And then, kept for good, such entries
    /// outlived their rings: a thread beyond the private lanes of ports made and dropped
    /// in turn kept one for each.
    #[test]
    #[cfg_attr(miri, ignore = "33 threads: the std runs cover it")]
    fn a_thread_on_the_shared_lane_stays_there_until_the_ring_is_dropped() {
        let ring = Arc::new(Ring::new(64, false).unwrap());
        // Every private lane taken by a live thread.
        let start = Arc::new(std::sync::Barrier::new(MAX_LANES + 1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let owners: Vec<_> = (0..MAX_LANES)
            .map(|i| {
                let (ring, start, rx) = (Arc::clone(&ring), Arc::clone(&start), Arc::clone(&rx));
                std::thread::spawn(move || {
                    ring.push(Completion::new(100 + i as u64, 0, 0));
                    start.wait();
                    let _ = rx.lock().unwrap().recv();
                })
            })
            .collect();
        start.wait();
        ring.push(rec(1));
        assert_eq!(ring.shared.len(), 1, "no private lane was free");
        // Enough other rings to prune this thread's cache.
        let others: Vec<Ring> = (0..PRUNE_AT + 1)
            .map(|_| Ring::new(4, false).unwrap())
            .collect();
        for other in &others {
            other.push(rec(0));
        }
        // The owners exit, freeing their lanes.
        drop(tx);
        for owner in owners {
            owner.join().unwrap();
        }
        ring.push(rec(2));
        assert_eq!(ring.shared.len(), 2, "the thread left the shared lane");

        // Once another thread drops the ring, the entry goes at this thread's next prune,
        // as one holding a private lane does (it was kept for good).
        let id = ring.id;
        std::thread::spawn(move || drop(ring)).join().unwrap();
        let fresh: Vec<Ring> = (0..8 * FRONT)
            .map(|_| Ring::new(4, false).unwrap())
            .collect();
        for other in &fresh {
            other.push(rec(0));
        }
        HELD.with(|held| {
            let held = held.borrow();
            assert!(
                held.held.iter().all(|h| h.ring != id) && !held.rest.contains_key(&id),
                "the dropped ring's entry for the shared lane was kept"
            );
        });
    }

    /// Regression (found by Miri, in the racing test below): on the shared lane, a producer
    /// that read the overflow count at zero just before another producer overflowed may
    /// claim the ring during the overflow's turn, then overflow its next record. The
    /// consumer, already draining the overflow, took that record before the ring's: the
    /// producer's two records came out in the wrong order. Here the producer's claim and
    /// overflow happen while the consumer hands on the first overflow record.
    #[test]
    fn regression_a_ring_claim_during_the_overflows_turn_kept_its_records_order() {
        let ring = Ring::new(2, true).unwrap();
        let (other, first, second) = (rec(7), rec(1), rec(2));
        // Another producer's record waits in the overflow; the ring part is empty.
        ring.shared.spill(&[other], |record| *record);
        let mut seen = Vec::new();
        let mut consumer = ring.try_consume().unwrap();
        consumer.take_ready(usize::MAX, |_, record| {
            seen.push(record.overlapped());
            if record.overlapped() == other.overlapped() {
                // The producer read the count at zero earlier: it claims the ring now…
                let (pos, _) = ring.shared.claim_shared(1).unwrap();
                ring.shared.write_and_publish(pos, first);
                // …and finds the count raised for its next record, which overflows.
                ring.shared.push(second);
            }
        });
        drop(consumer);
        seen.extend(drain_all(&ring).iter().map(Completion::overlapped));
        assert_eq!(seen, [7, 1, 2], "the producer's records out of order");
    }

    /// Producers race one consumer, through lanes small enough that most records take the
    /// overflow path and through ones that hold them all. More producers than the port has
    /// private lanes, so some post on the shared lane (its compare-and-swap claim), and
    /// again on a `fifo` ring, where all of them share that lane. They
    /// post singly and in batches of every length up to 8. The consumer must see every
    /// record once, in per-producer order, whether it copies runs or takes them by `ready`.
    /// This is the ring's concurrency test for Miri (its data-race detector and weak-memory
    /// emulation check the orderings) and for ThreadSanitizer.
    #[test]
    fn producers_racing_a_consumer_deliver_each_record_once_in_order() {
        let (caps, producers, per_producer): (&[usize], usize, usize) = if cfg!(miri) {
            (&[2, 128], 3, 30)
        } else {
            (&[1, 2, 8, 64, 1 << 16], MAX_LANES + 2, 3_000)
        };
        for (&cap, fifo) in caps.iter().flat_map(|cap| [(cap, false), (cap, true)]) {
            let ring = Arc::new(Ring::new(cap, fifo).unwrap());
            let start = Arc::new(std::sync::Barrier::new(producers));
            let threads: Vec<_> = (0..producers)
                .map(|p| {
                    let (ring, start) = (Arc::clone(&ring), Arc::clone(&start));
                    std::thread::spawn(move || {
                        let record = |seq: usize| Completion::new(p as u64, seq as u32, p ^ seq);
                        // Each takes its lane with its first post while all are alive, so the
                        // last ones find no private lane left.
                        ring.push(record(0));
                        start.wait();
                        let mut seq = 1;
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
            let mut next = vec![0u32; producers];
            let mut seen = 0;
            let mut check = |record: &Completion| {
                let p = record.key() as usize;
                assert_eq!(record.bytes(), next[p], "cap {cap} producer {p}");
                assert_eq!(record.overlapped(), p ^ next[p] as usize, "torn record");
                next[p] += 1;
            };
            let mut round = 0;
            while seen < producers * per_producer {
                let mut consumer = ring.consume();
                let n = if round % 2 == 0 {
                    consumer.take_ready(usize::MAX, |_, record| check(record))
                } else {
                    let n = consumer.ready(usize::MAX);
                    consumer.take(n, |_, record| check(record));
                    n
                };
                round += 1;
                drop(consumer);
                if n == 0 {
                    std::thread::yield_now();
                }
                seen += n;
            }
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(ring.len(), 0, "cap {cap}: records left behind");
            let lanes = if fifo || cfg!(miri) {
                producers.min(MAX_LANES) * usize::from(!fifo)
            } else {
                MAX_LANES
            };
            assert_eq!(ring.installed.load(Ordering::SeqCst), lanes, "fifo {fifo}");
        }
    }

    #[test]
    fn take_hands_on_a_wrapped_run_in_order() {
        let ring = Ring::new(8, false).unwrap();
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
