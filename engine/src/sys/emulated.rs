//! A futex emulated with mutex/condvar buckets hashed by address, for systems without
//! one and for loom (which cannot see system calls).
//!
//! A waiter checks the word under its bucket's lock and sleeps on the bucket's condvar;
//! a waker changes the word *before* calling `futex_wake_*`, which takes the same lock, so
//! a wake can never fall between a waiter's check and its sleep. Buckets are shared by
//! unrelated words, hence wakes are broadcasts and sleepers tolerate spurious returns.

use super::{Deadline, WaitStatus};
use crate::primitive::{lock, AtomicU32, Condvar, Mutex, Ordering};

struct Bucket {
    lock: Mutex<()>,
    cond: Condvar,
}

#[cfg(not(loom))]
const BUCKETS: usize = 64;

#[cfg(not(loom))]
static TABLE: [Bucket; BUCKETS] = [const {
    Bucket {
        lock: Mutex::new(()),
        cond: Condvar::new(),
    }
}; BUCKETS];

#[cfg(not(loom))]
fn bucket(addr: usize) -> &'static Bucket {
    // Fibonacci hashing of the word's address (4-byte aligned, hence the shift).
    let h = (addr >> 2).wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize);
    &TABLE[h >> (usize::BITS - BUCKETS.trailing_zeros())]
}

#[cfg(loom)]
loom::lazy_static! {
    static ref TABLE: Bucket = Bucket { lock: Mutex::new(()), cond: Condvar::new() };
}

#[cfg(loom)]
fn bucket(_addr: usize) -> &'static Bucket {
    &TABLE
}

pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Deadline>,
) -> WaitStatus {
    let bucket = bucket(word as *const AtomicU32 as usize);
    let guard = lock(&bucket.lock);
    // SeqCst: the waker's store precedes its lock of this bucket; under the lock we see
    // either its new value or sleep before it can notify.
    if word.load(Ordering::SeqCst) != expected {
        return WaitStatus::Woken;
    }
    match deadline {
        None => {
            drop(bucket.cond.wait(guard));
            WaitStatus::Woken
        }
        // Loom has no clock: a timed wait is modelled as one whose deadline has come.
        #[cfg(loom)]
        Some(_) => WaitStatus::TimedOut,
        #[cfg(not(loom))]
        Some(deadline) => {
            let left = deadline.remaining();
            if left.is_zero() {
                return WaitStatus::TimedOut;
            }
            drop(bucket.cond.wait_timeout(guard, left));
            if deadline.has_passed() {
                WaitStatus::TimedOut
            } else {
                WaitStatus::Woken
            }
        }
    }
}

pub(crate) fn futex_wake_one(word: *const AtomicU32) {
    futex_wake_all(word);
}

pub(crate) fn futex_wake_all(word: *const AtomicU32) {
    let bucket = bucket(word as usize);
    let _guard = lock(&bucket.lock);
    bucket.cond.notify_all();
}
