//! The completion record, and the decision of who delivers an operation's one record.

use crate::primitive::{AtomicU8, Ordering};
use std::fmt;
use std::io;

/// One completion record: what `GetQueuedCompletionStatus` returns and what a
/// `struct gmcs` entry holds.
///
/// `overlapped` is an opaque address: for I/O it is the address of the request's
/// [`Overlapped`](crate::Overlapped), for a posted record whatever the poster chose.
/// `error` is 0 for success or the failed operation's `errno`.
///
/// # Layout
///
/// On 64-bit targets the record's memory is AIX's `struct gmcs`, with the key's high half
/// in that struct's padding: a 32-bit byte count, the key's low 32 bits, a 32-bit `errno`,
/// the key's high 32 bits, then the overlapped address, 24 bytes in all. The layout is
/// part of the type's contract: the C ABI fills a caller's array of `struct gmcs` by
/// copying records in whole words (capping the byte count at 2^31 - 1, as AIX reports
/// it), and makes records of the entries `iocp_post_many` is given the same way, with no
/// field moved on the way.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Completion {
    /// The byte count and the key's low half ([`join`]).
    count_and_key: u64,
    /// The error and the key's high half ([`join`]).
    error_and_key: u64,
    overlapped: usize,
}

// Kept as whole words, so that a record moved through memory (a post's record is, on its way
// into its slot) is stored and loaded in the same widths: built from 4-byte fields, a slot's
// 8-byte load of two of them waited for both stores to reach the cache, since a load is
// forwarded from one store and not from two (a C `PostQueuedCompletionStatus` a record
// after another went from 5.3 to 8.3 ns on an Intel Xeon VM that way).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Completion>() == 24);

/// A word of two 32-bit halves, `first` at the lower address.
const fn join(first: u32, second: u32) -> u64 {
    if cfg!(target_endian = "little") {
        first as u64 | (second as u64) << 32
    } else {
        (first as u64) << 32 | second as u64
    }
}

/// The halves of a word made by [`join`], in the same order.
const fn split(word: u64) -> (u32, u32) {
    if cfg!(target_endian = "little") {
        (word as u32, (word >> 32) as u32)
    } else {
        ((word >> 32) as u32, word as u32)
    }
}

impl Completion {
    /// The record as three 8-byte words, on 64-bit targets those of its memory: a ring slot
    /// takes it in three stores rather than one per field, and a post on the same thread as
    /// its drain is bound by its stores (on an AMD EPYC, joining two 4-byte fields into one
    /// store took 16 posts and a drain from 5.1 to 4.8 ns a record). A call that is not
    /// inlined takes a record as its words, which go in registers, where a record would go
    /// by reference to a copy built in memory.
    #[inline(always)]
    pub(crate) fn to_words(self) -> [u64; 3] {
        [
            self.count_and_key,
            self.error_and_key,
            self.overlapped as u64,
        ]
    }

    /// The record [`to_words`](Self::to_words) gave.
    #[inline(always)]
    pub(crate) fn from_words([count_and_key, error_and_key, overlapped]: [u64; 3]) -> Completion {
        Completion {
            count_and_key,
            error_and_key,
            overlapped: overlapped as usize,
        }
    }

    /// A successful record.
    pub const fn new(key: u64, bytes: u32, overlapped: usize) -> Completion {
        Completion {
            count_and_key: join(bytes, key as u32),
            error_and_key: join(0, (key >> 32) as u32),
            overlapped,
        }
    }

    /// The same record, marked as a failed operation with `errno` (0 means success).
    pub const fn with_error(self, errno: u32) -> Completion {
        Completion {
            error_and_key: join(errno, split(self.error_and_key).1),
            ..self
        }
    }

    /// The completion key the handle was associated (or the record posted) with.
    pub const fn key(&self) -> u64 {
        split(self.count_and_key).1 as u64 | (split(self.error_and_key).1 as u64) << 32
    }

    /// Bytes transferred.
    pub const fn bytes(&self) -> u32 {
        split(self.count_and_key).0
    }

    /// The overlapped address the record carries.
    pub const fn overlapped(&self) -> usize {
        self.overlapped
    }

    /// The operation's `errno`, 0 for success.
    pub const fn error(&self) -> u32 {
        split(self.error_and_key).0
    }

    /// The byte count, or the operation's error.
    pub fn result(&self) -> io::Result<u32> {
        match self.error() {
            0 => Ok(self.bytes()),
            errno => Err(io::Error::from_raw_os_error(errno as i32)),
        }
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("key", &self.key())
            .field("overlapped", &self.overlapped)
            .field("bytes", &self.bytes())
            .field("error", &self.error())
            .finish()
    }
}

/// Not started: the next claim, by its runner or a canceller, wins.
const QUEUED: u8 = 0;
/// Claimed: the winner is running the operation, or cancelling it.
const RUNNING: u8 = 1;
/// The operation is over and its report being made: what the report fills in may show
/// already.
const REPORTING: u8 = 2;
/// The completion has been reported (its record may still be on its way to the port).
const DONE: u8 = 3;

/// Decides who delivers a queued operation's one completion: the thread that runs it, or a
/// canceller that gets there first (the file pool's jobs). One compare-and-swap
/// `QUEUED → RUNNING` decides, so exactly one of them delivers; the winner delivers
/// through [`deliver`](Self::deliver), which marks the operation done once its report is
/// made and before its record is posted: a canceller told [`Cancel::Done`] sees the report,
/// and one told [`Cancel::Running`] is never looking at an operation whose record was
/// already dequeued, nor at one whose report it could already read (an aiocb's status).
///
/// The loom models `cancel_races_complete`, `two_cancels_race_complete` and
/// `cancel_told_done_sees_the_record` race a runner against cancellers on this type.
#[derive(Debug)]
pub struct Delivery {
    /// `QUEUED`, `RUNNING`, `REPORTING` or `DONE`; only ever moves forward.
    state: AtomicU8,
    /// Under loom, one canceller at a time waits out a report: loom cannot finish a model
    /// in which two waiters yield to each other while the reporter stays preempted (as in
    /// the port's `pause_for_publication`).
    #[cfg(loom)]
    pausing: crate::primitive::Mutex<()>,
}

/// What a [`Delivery::cancel`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancel {
    /// Cancelled before it started: the caller must deliver it, with `ECANCELED`.
    Cancelled,
    /// Started (or being cancelled by another caller), its I/O not yet over: its
    /// completion is on its way.
    Running,
    /// Reported: the aiocb or result is filled in; its record is queued or on its way.
    Done,
}

impl Delivery {
    /// A queued operation.
    #[allow(clippy::new_without_default)] // only jobs make one, each with `new`
    pub fn new() -> Delivery {
        Delivery {
            state: AtomicU8::new(QUEUED),
            #[cfg(loom)]
            pausing: crate::primitive::Mutex::new(()),
        }
    }

    /// The runner's claim, before it starts the operation: `false` when a canceller won
    /// (and delivers), so the runner must leave the operation alone.
    pub fn start(&self) -> bool {
        // Relaxed: the claim orders nothing else; the operation reached the runner through
        // its queue, and a runner that loses only drops its reference.
        self.state
            .compare_exchange(QUEUED, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// A canceller's claim. On [`Cancel::Cancelled`] the caller delivers the `ECANCELED`
    /// completion through [`deliver`](Self::deliver).
    pub fn cancel(&self) -> Cancel {
        // Relaxed on success: as in `start`, the canceller reached the operation through a
        // lock. Acquire on failure: pairs with the release store in `deliver`, so a
        // canceller told `Done` sees everything the delivery reported (the record in the
        // port, the aiocb's status).
        match self
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::Relaxed, Ordering::Acquire)
        {
            Ok(_) => Cancel::Cancelled,
            Err(RUNNING) => Cancel::Running,
            Err(_) => {
                // Being reported: the caller may have read part of the report (an aiocb's
                // status) and must not hear that the operation still runs, and `Done`
                // promises all of it, which takes the runner a few stores more.
                #[cfg(loom)]
                let _one_at_a_time = crate::primitive::lock(&self.pausing);
                // Acquire: as above.
                while self.state.load(Ordering::Acquire) != DONE {
                    crate::primitive::yield_now();
                }
                Cancel::Done
            }
        }
    }

    /// Delivers the completion: `report` fills in what the operation's owner reads (the
    /// aiocb, the result kept for `finish`), the operation is marked done, then `post` sends
    /// what `report` returned (the record). Only the winner of [`start`](Self::start) or
    /// [`cancel`](Self::cancel) calls it, once.
    ///
    /// Done comes before the post so that a program that dequeued the record and then
    /// cancels is told [`Cancel::Done`], never that the operation still runs; a canceller
    /// told `Done` sees the report, and the record follows.
    pub fn deliver<R>(&self, report: impl FnOnce() -> R, post: impl FnOnce(R)) {
        debug_assert_eq!(
            // Relaxed: this thread set RUNNING itself.
            self.state.load(Ordering::Relaxed),
            RUNNING,
            "delivered by a thread that did not win the claim"
        );
        // Relaxed: the report's own release stores (an aiocb's status) publish it, so a
        // thread that reads the report and then cancels finds the operation no longer
        // running.
        self.state.store(REPORTING, Ordering::Relaxed);
        let reported = report();
        // Release: pairs with the acquire of a failed claim in `cancel`.
        self.state.store(DONE, Ordering::Release);
        post(reported);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc};
    use std::thread;
    use std::time::Duration;

    /// Regression (the file tests under ThreadSanitizer, on the thread driver): a request
    /// whose `aio_error` already gave its result was still "not cancelled, in progress" to
    /// `aio_cancel`, because the result is filled in before the operation is marked done.
    /// A canceller that comes while the report is being made now waits for it and is told
    /// `Done`.
    #[test]
    fn a_cancel_during_the_report_is_told_done() {
        let op = Arc::new(Delivery::new());
        assert!(op.start());
        let (begun, reporting) = mpsc::channel();
        let (finish, finished) = mpsc::channel::<()>();
        let runner = {
            let op = Arc::clone(&op);
            thread::spawn(move || {
                op.deliver(
                    || {
                        begun.send(()).unwrap();
                        finished.recv().unwrap();
                    },
                    |()| (),
                )
            })
        };
        // The report is under way: part of it may be visible to the program now.
        reporting.recv().unwrap();
        let canceller = {
            let op = Arc::clone(&op);
            thread::spawn(move || op.cancel())
        };
        thread::sleep(Duration::from_millis(10));
        finish.send(()).unwrap();
        assert_eq!(canceller.join().unwrap(), Cancel::Done);
        runner.join().unwrap();
    }

    /// Keys beyond 32 bits, byte counts and errors at their limits: the halves a record
    /// keeps in its two words come back whole, and its words make the same record again.
    #[test]
    fn a_record_reads_back_every_field_as_made() {
        let keys = [
            0,
            1,
            u32::MAX as u64,
            1 << 32,
            0x1122_3344_5566_7788,
            u64::MAX,
        ];
        for key in keys {
            for (bytes, error) in [(0, 0), (1, 5), (u32::MAX, u32::MAX)] {
                let record = Completion::new(key, bytes, 0xdead_beef).with_error(error);
                let fields = (record.key(), record.bytes(), record.error());
                assert_eq!(fields, (key, bytes, error));
                assert_eq!(record.overlapped(), 0xdead_beef);
                assert_eq!(Completion::from_words(record.to_words()), record);
                let cleared = record.with_error(0);
                assert_eq!((cleared.key(), cleared.result().unwrap()), (key, bytes));
            }
        }
    }

    /// `Debug` shows the key as one number, not as the halves the record keeps.
    #[test]
    fn a_record_prints_its_key_whole() {
        let record = Completion::new(0x1_0000_0002, 3, 4).with_error(5);
        assert_eq!(
            format!("{record:?}"),
            "Completion { key: 4294967298, overlapped: 4, bytes: 3, error: 5 }"
        );
    }

    /// Regression: the operation was marked done only after its record was posted, so a
    /// program that dequeued the record and then cancelled could be told `Running`
    /// (`aio_cancel` → `AIO_NOTCANCELED`; seen as a flaky
    /// `cancel_with_nothing_queued_fails_with_enoent_and_aio_cancel_reports_all_done`).
    #[test]
    fn regression_cancel_after_the_record_was_posted_said_running() {
        let delivery = Arc::new(Delivery::new());
        assert!(delivery.start());
        let (posted, dequeued) = mpsc::channel();
        let canceller = {
            let delivery = Arc::clone(&delivery);
            thread::spawn(move || {
                dequeued.recv().unwrap();
                delivery.cancel()
            })
        };
        delivery.deliver(
            || (),
            |()| {
                posted.send(()).unwrap();
                // Long enough for the canceller to look before `deliver` returns.
                thread::sleep(Duration::from_millis(100));
            },
        );
        assert_eq!(canceller.join().unwrap(), Cancel::Done);
        assert_eq!(delivery.cancel(), Cancel::Done);
    }
}
