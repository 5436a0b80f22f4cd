//! The futex system call.
//!
//! Waits use `FUTEX_WAIT_BITSET` because, unlike `FUTEX_WAIT`, it takes an *absolute*
//! timeout, on CLOCK_MONOTONIC unless `FUTEX_CLOCK_REALTIME` is given. Every word the
//! engine waits on lives in this process, so the private variants are used.

use super::{Deadline, WaitStatus};
use std::ptr;
use std::sync::atomic::AtomicU32;

pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Deadline>,
) -> WaitStatus {
    let ts = deadline.map(Deadline::as_timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(ptr::null(), |ts| ts as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the whole call; `ts_ptr` is NULL or points
    // at `ts`, which outlives the call. The kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
            ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if rc == 0 {
        return WaitStatus::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => WaitStatus::TimedOut,
        Some(libc::EINTR) => WaitStatus::Interrupted,
        // EAGAIN: the word no longer held `expected` when the kernel looked.
        errno => {
            debug_assert_eq!(errno, Some(libc::EAGAIN), "unexpected futex wait error");
            WaitStatus::Woken
        }
    }
}

fn futex_wake(word: *const AtomicU32, count: i32) {
    // SAFETY: FUTEX_WAKE only hashes the address to find sleepers; it never dereferences
    // it, so even an address whose memory was freed meanwhile is harmless.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            count,
        )
    };
    debug_assert!(
        rc >= 0,
        "futex wake failed: {}",
        std::io::Error::last_os_error()
    );
}

pub(crate) fn futex_wake_one(word: *const AtomicU32) {
    futex_wake(word, 1);
}

pub(crate) fn futex_wake_all(word: *const AtomicU32) {
    futex_wake(word, i32::MAX);
}
