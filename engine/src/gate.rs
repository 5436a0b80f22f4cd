//! The part of a socket's state that a submission reads without the socket's mutex: one
//! word, so that a request that completes at once (a `send` with room in the buffer, a
//! `recv` with bytes waiting) takes no lock. A read tries after one load of the word; a
//! write first claims the word's write token (under the mutex too, when it tries there),
//! so that two threads' sends never interleave their bytes. Everything that queues, runs
//! or cancels requests still holds the mutex, and mirrors what it leaves queued into the
//! word before it lets go.
//!
//! The word also counts readiness events (its tick). A submission that tried without the
//! lock and found the socket not ready compares the tick it started from with the tick
//! under the lock: unchanged, no event was handled since its try, so the request can wait
//! for the next one; changed, an event came and went meanwhile (it found no request to run),
//! so the request tries again before it waits. That is what keeps an edge-triggered event
//! from being lost between a try and the queueing that follows it.

use crate::primitive::{AtomicU64, Ordering};

/// The socket is closed: no call is made on it any more.
const CLOSED: u64 = 1;
/// The socket has a port.
const PORTED: u64 = 1 << 1;
/// Reads are queued: a new one queues behind them.
const READS_QUEUED: u64 = 1 << 2;
/// Writes are queued: a new one queues behind them.
const WRITES_QUEUED: u64 = 1 << 3;
/// A connect is under way: a read would take its error (`SO_ERROR`) for itself.
const CONNECTING: u64 = 1 << 4;
/// The readiness cache: a stream read came back short and no readable event has come
/// since, so a `recv` waits for one rather than trying (see the `net` module doc).
const DRAINED: u64 = 1 << 5;
/// The readiness cache is off for good: the read side closed or urgent data came.
const CACHE_OFF: u64 = 1 << 6;
/// Whether the socket is a stream is known (asked at its first short read)...
const STREAM_KNOWN: u64 = 1 << 7;
/// ... and it is one.
const STREAM: u64 = 1 << 8;
/// A thread is writing without the lock: nobody else tries a write until it gives the
/// token back, and whoever queued a write meanwhile is run by it then.
const WRITING: u64 = 1 << 9;
/// One readiness event handled, in the bits above the flags.
const TICK: u64 = 1 << 16;

/// The word (see the module doc); its default is an open socket's with no port, nothing
/// queued and no event yet.
#[derive(Default)]
pub struct Gate {
    word: AtomicU64,
}

/// The word as one load or update found it.
#[derive(Clone, Copy, Debug)]
pub struct Seen(u64);

/// What a socket's mutex holds that the word mirrors (see [`Gate::mirror`]).
pub struct Queues {
    /// Reads are queued.
    pub reads: bool,
    /// Writes are queued.
    pub writes: bool,
    /// A connect is under way (at the front of the writes).
    pub connecting: bool,
}

impl Seen {
    /// The socket is closed.
    pub fn closed(self) -> bool {
        self.0 & CLOSED != 0
    }

    /// The socket has a port.
    pub fn ported(self) -> bool {
        self.0 & PORTED != 0
    }

    /// A write is being made without the lock.
    pub fn writing(self) -> bool {
        self.0 & WRITING != 0
    }

    /// Whether the readiness cache has a `recv` wait for a readable event.
    pub fn waits_for_readiness(self) -> bool {
        self.0 & (DRAINED | CACHE_OFF) == DRAINED
    }

    /// Whether a read (a `recv` if `recv`) may be tried without the lock: nothing queued
    /// before it, no connect under way, and no readable event to wait for.
    pub fn may_try_read(self, recv: bool) -> bool {
        self.0 & (CLOSED | READS_QUEUED | CONNECTING) == 0 && !(recv && self.waits_for_readiness())
    }

    /// Whether a readiness event was handled between `self` and `later`.
    pub fn event_since(self, later: Seen) -> bool {
        self.0 / TICK != later.0 / TICK
    }
}

impl Gate {
    /// The word now.
    pub fn load(&self) -> Seen {
        // Acquire: pairs with the release in every update below, so a submission that
        // finds no queue bit was made after the queue it mirrors emptied.
        Seen(self.word.load(Ordering::Acquire))
    }

    /// Claims the write token, if no write is queued or being made and the socket is open:
    /// the word as claimed.
    pub fn claim_write(&self) -> Option<Seen> {
        let mut seen = self.word.load(Ordering::Acquire);
        loop {
            if seen & (CLOSED | WRITES_QUEUED | WRITING) != 0 {
                return None;
            }
            // Acquire: pairs with the release of the last token given back, so this
            // write's bytes follow the last one's. Acquire on failure: the retry reads
            // the word as the load above does.
            match self.word.compare_exchange_weak(
                seen,
                seen | WRITING,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Seen(seen | WRITING)),
                Err(now) => seen = now,
            }
        }
    }

    /// Gives the write token back after a write that completed at once. `true` if writes
    /// were queued meanwhile: they wait for the giver to run them (see [`Gate::mirror`]).
    pub fn give_back_write(&self) -> bool {
        // Release: pairs with the acquire of the next claim; AcqRel, as the queueing
        // thread's mirror released what it queued.
        self.word.fetch_and(!WRITING, Ordering::AcqRel) & WRITES_QUEUED != 0
    }

    /// Records a short stream read tried from the word `seen`: the receive queue was
    /// empty, unless a readable event was handled since `seen` (bytes came after all).
    pub fn drained(&self, seen: Seen) {
        let mut now = self.word.load(Ordering::Acquire);
        while !seen.event_since(Seen(now)) && now & (DRAINED | CACHE_OFF) == 0 {
            // AcqRel: the word's updates form one chain (see `load`). Acquire on failure:
            // the retry reads the word as the load above does.
            match self.word.compare_exchange_weak(
                now,
                now | DRAINED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(later) => now = later,
            }
        }
    }

    /// Whether the socket is a stream, if known.
    pub fn stream(&self) -> Option<bool> {
        // Relaxed: the answer describes the descriptor, not memory.
        let word = self.word.load(Ordering::Relaxed);
        (word & STREAM_KNOWN != 0).then_some(word & STREAM != 0)
    }

    /// Records whether the socket is a stream.
    pub fn set_stream(&self, stream: bool) {
        let bits = STREAM_KNOWN | if stream { STREAM } else { 0 };
        // Relaxed: as in `stream`.
        self.word.fetch_or(bits, Ordering::Relaxed);
    }

    /// Gives the socket a port (under the socket's mutex, with nothing queued), unless a
    /// write is being made without the lock: `false` then (the socket is busy).
    pub fn port(&self) -> bool {
        // AcqRel: the word's updates form one chain (see `load`).
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word & WRITING == 0).then_some(word | PORTED)
            })
            .is_ok()
    }

    /// The socket is closed (under the socket's mutex, before its queues are emptied).
    pub fn close(&self) {
        // Release: pairs with the acquire in `load`.
        self.word.fetch_or(CLOSED, Ordering::Release);
    }

    /// A readiness event is being handled (under the socket's mutex, before its requests
    /// run): one more tick; a `readable` event ends the readiness cache's wait, and one
    /// that `ends_cache` (the read side closed, urgent data) turns the cache off for good.
    pub fn event(&self, readable: bool, ends_cache: bool) {
        let clear = if readable { DRAINED } else { 0 };
        let set = if readable && ends_cache { CACHE_OFF } else { 0 };
        let _ = self
            .word
            // AcqRel: the word's updates form one chain (see `load`).
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some((word & !clear | set).wrapping_add(TICK))
            });
    }

    /// Mirrors what the socket's mutex holds queued into the word, before the mutex is let
    /// go; `hand_over` also gives the write token back (its holder's write is queued now).
    /// Returns the word as it was: a caller that queued a write while the token was out
    /// and finds it given back since must run the writes itself (the giver did not see it).
    pub fn mirror(&self, queues: Queues, hand_over: bool) -> Seen {
        let mut set = 0;
        if queues.reads {
            set |= READS_QUEUED;
        }
        if queues.writes {
            set |= WRITES_QUEUED;
        }
        if queues.connecting {
            set |= CONNECTING;
        }
        let clear = READS_QUEUED | WRITES_QUEUED | CONNECTING | if hand_over { WRITING } else { 0 };
        let update = self
            .word
            // AcqRel: release pairs with the acquire in `load` and in `claim_write`; acquire
            // with the release of `give_back_write`.
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(word & !clear | set)
            });
        Seen(update.unwrap_or_else(|word| word))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn queues(reads: bool, writes: bool, connecting: bool) -> Queues {
        Queues {
            reads,
            writes,
            connecting,
        }
    }

    #[test]
    fn a_read_is_tried_only_with_nothing_queued_no_connect_and_no_wait_for_readiness() {
        let gate = Gate::default();
        assert!(gate.load().may_try_read(true));
        gate.mirror(queues(true, false, false), false);
        assert!(!gate.load().may_try_read(false));
        gate.mirror(queues(false, true, true), false);
        assert!(!gate.load().may_try_read(false));
        gate.mirror(queues(false, true, false), false);
        assert!(
            gate.load().may_try_read(true),
            "writes do not hold reads back"
        );
        gate.drained(gate.load());
        assert!(!gate.load().may_try_read(true), "drained: a recv waits");
        assert!(gate.load().may_try_read(false), "other reads do not");
        gate.close();
        assert!(gate.load().closed());
        assert!(!gate.load().may_try_read(false));
    }

    #[test]
    fn a_short_read_marks_the_socket_drained_only_if_no_readable_event_came_since_its_try() {
        let gate = Gate::default();
        let before = gate.load();
        gate.event(true, false);
        gate.drained(before);
        assert!(!gate.load().waits_for_readiness());
        gate.drained(gate.load());
        assert!(gate.load().waits_for_readiness());
        gate.event(false, false);
        assert!(
            gate.load().waits_for_readiness(),
            "a writable event changes nothing"
        );
        gate.event(true, false);
        assert!(!gate.load().waits_for_readiness());
    }

    #[test]
    fn the_end_of_the_stream_turns_the_readiness_cache_off_for_good() {
        let gate = Gate::default();
        gate.event(true, true);
        gate.drained(gate.load());
        assert!(!gate.load().waits_for_readiness());
    }

    #[test]
    fn the_write_token_goes_to_one_writer_and_tells_it_of_writes_queued_meanwhile() {
        let gate = Gate::default();
        let claimed = gate.claim_write().unwrap();
        assert!(claimed.writing());
        assert!(gate.claim_write().is_none());
        assert!(
            !gate.port(),
            "no port while a write is made without the lock"
        );
        assert!(!gate.give_back_write());
        gate.claim_write().unwrap();
        let before = gate.mirror(queues(false, true, false), false);
        assert!(before.writing(), "queued while the token was out");
        assert!(gate.give_back_write(), "so its holder runs the queue");
        assert!(gate.claim_write().is_none(), "a write is queued");
        gate.mirror(queues(false, false, false), false);
        gate.claim_write().unwrap();
        gate.mirror(queues(false, true, false), true);
        assert!(!gate.load().writing(), "handed over with its write queued");
        assert!(gate.port());
        assert!(gate.load().ported());
        gate.close();
        gate.mirror(queues(false, false, false), false);
        assert!(gate.claim_write().is_none(), "closed");
    }

    #[test]
    fn events_tick_and_a_try_tells_whether_one_came_since() {
        let gate = Gate::default();
        let before = gate.load();
        assert!(!before.event_since(gate.load()));
        gate.event(false, false);
        assert!(before.event_since(gate.load()));
        assert_eq!(gate.stream(), None);
        gate.set_stream(true);
        assert_eq!(gate.stream(), Some(true));
        assert!(!gate.load().event_since(gate.load()));
    }
}
