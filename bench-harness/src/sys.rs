//! The few system calls the harness makes itself: the raw futex of the `wake` peer, the
//! thread CPU clock of the idle-waiter measurement, and `uname` for the machine record.

use std::ffi::CStr;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected` (`FUTEX_WAIT`, no timeout). Returns on a wake, a
/// signal, or at once if the word already differs: callers re-check the word in a loop.
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a live, aligned u32 for the whole call; a NULL timeout means no
    // timeout. The kernel only reads the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes one thread sleeping on `word` (`FUTEX_WAKE`).
pub fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only hashes the address to find sleepers; `word` is live anyway.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; this clock exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `uname -srvm`: kernel name, release, version and machine, or `None` if it fails.
pub fn uname() -> Option<String> {
    // SAFETY: `utsname` is plain old data; all-zero bytes are a valid value.
    let mut names: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `names` is a valid, writable utsname.
    if unsafe { libc::uname(&mut names) } != 0 {
        return None;
    }
    let field = |chars: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates every field within its array.
        unsafe { CStr::from_ptr(chars.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Some(format!(
        "{} {} {} {}",
        field(&names.sysname),
        field(&names.release),
        field(&names.version),
        field(&names.machine)
    ))
}
