//! Everything the engine asks of the operating system.
//!
//! Each backend supplies the same contract:
//!
//! * `futex_wait(word, expected, deadline)`: sleep while `word == expected`, until woken,
//!   until the absolute CLOCK_MONOTONIC `deadline`, or until a signal handler runs. It may
//!   return early for no reason (a spurious wake, reported as [`WaitStatus::Woken`]);
//!   callers re-check their condition and call again with the *same* deadline, so that
//!   restarts never stretch or shorten a timeout.
//! * `futex_wake_one(word)` / `futex_wake_all(word)`: wake sleepers of `word`. Calling
//!   them with no sleeper is harmless, as is calling them on a word nobody will read again.
//! * `handle_fd()`: a descriptor the library owns, whose number names an object.
//! * `barrier::{light, heavy}`: the two sides of an asymmetric store-load barrier (see
//!   `barrier`): `membarrier(2)` on Linux, sequentially consistent fences elsewhere.
//! * `prefetch::{available, for_write}`: whether the processor can be asked for a cache
//!   line ahead of a write, and the request (`PREFETCHW` on x86-64; nothing elsewhere).
//! * `sched::run_as_batch()`: a thread of the library's that should not preempt the
//!   program's threads when it wakes (`SCHED_BATCH` on Linux, nothing elsewhere).
//! * `fork::{Born, PerProcess}`: which process a thread of the library's belongs to, told
//!   apart by a count of `fork` calls (`pthread_atfork`, on every Unix).
//!
//! Backends:
//!
//! * `linux`: the `futex(2)` system call, `FUTEX_WAIT_BITSET` with an absolute deadline.
//! * `emulated`: a table of mutex/condvar buckets hashed by address. Used on other Unixes,
//!   under loom (built on loom's primitives), and on Linux with `--cfg iocp_force_fallback`
//!   so that CI exercises it.
//!
//! The clock (`clock`) is plain POSIX and shared by both.

pub(crate) mod barrier;
mod clock;
pub(crate) use clock::Deadline;
#[cfg(not(loom))]
pub(crate) mod dup;
#[cfg(all(not(loom), target_os = "linux"))]
pub(crate) mod eventfd;
#[cfg(not(loom))]
pub(crate) mod fast_tls;
#[cfg_attr(loom, allow(dead_code, unused_imports))] // loom builds make no system calls
pub(crate) mod fault;
#[cfg(not(loom))]
pub(crate) mod file;
pub(crate) mod fork;
#[cfg(not(loom))]
mod handle;
pub(crate) mod prefetch;
#[cfg(not(loom))]
pub(crate) mod sched;
#[cfg(not(loom))]
pub(crate) mod socket;
#[cfg(iocp_tsan)]
pub(crate) mod tsan;
#[cfg(not(loom))]
pub(crate) use handle::handle_fd;

#[cfg(all(target_os = "linux", not(loom), not(iocp_force_fallback)))]
mod linux;
#[cfg(all(target_os = "linux", not(loom), not(iocp_force_fallback)))]
use linux as futex;
#[cfg(all(target_os = "linux", not(loom), not(iocp_force_fallback)))]
pub(crate) use linux::{futex_wake_all, futex_wake_one};

#[cfg(any(not(target_os = "linux"), loom, iocp_force_fallback))]
mod emulated;
#[cfg(any(not(target_os = "linux"), loom, iocp_force_fallback))]
use emulated as futex;
#[cfg(any(not(target_os = "linux"), loom, iocp_force_fallback))]
#[cfg_attr(loom, allow(unused_imports))] // only the overlapped and event waits wake all
pub(crate) use emulated::{futex_wake_all, futex_wake_one};

/// Sleeps while `word == expected` (see the module docs), through the fault seam.
///
/// A wait never ends early: a timeout reported before `deadline` (by the fault seam, or by
/// a backend whose clock disagrees with ours) counts as a spurious return.
pub(crate) fn futex_wait(
    word: &crate::primitive::AtomicU32,
    expected: u32,
    deadline: Option<Deadline>,
) -> WaitStatus {
    let status = match fault::take(fault::Call::FutexWait, -1) {
        None => futex::futex_wait(word, expected, deadline),
        Some(libc::EINTR) => WaitStatus::Interrupted,
        Some(libc::ETIMEDOUT) => WaitStatus::TimedOut,
        Some(_) => WaitStatus::Woken,
    };
    match status {
        // (Loom has no clock: there, a timed wait times out at once, as the model wants.)
        WaitStatus::TimedOut if !cfg!(loom) && !deadline.is_some_and(Deadline::has_passed) => {
            WaitStatus::Woken
        }
        status => status,
    }
}

/// How a futex wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitStatus {
    /// Woken, the word no longer held the expected value, or a spurious return.
    Woken,
    /// The deadline passed.
    TimedOut,
    /// A signal handler ran (only for handlers installed without `SA_RESTART`; the
    /// emulation restarts instead, as condition variables do).
    #[cfg_attr(
        any(not(target_os = "linux"), loom, iocp_force_fallback),
        allow(dead_code)
    )]
    Interrupted,
}

/// Runs `syscall`, a libc call on `fd` that returns -1 on error, retrying on `EINTR`: the
/// engine's system calls are non-blocking or short, so an interrupted one is simply made
/// again. Each attempt goes through the fault seam as `call`.
#[cfg(not(loom))]
fn cvt(
    call: fault::Call,
    fd: std::os::fd::RawFd,
    mut syscall: impl FnMut() -> isize,
) -> std::io::Result<usize> {
    loop {
        let err = match fault::take(call, fd) {
            Some(errno) => std::io::Error::from_raw_os_error(errno),
            None => {
                let rc = syscall();
                if rc >= 0 {
                    return Ok(rc as usize);
                }
                std::io::Error::last_os_error()
            }
        };
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// What a descriptor is, and which object it is (`st_dev`, `st_ino`): two descriptors with
/// the same identity refer to the same socket or file.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) kind: Kind,
    dev: u64,
    ino: u64,
}

/// The kinds of descriptor the engine tells apart.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Socket,
    RegularFile,
    Other,
}

/// `fstat`s `fd`: `EBADF` for a closed descriptor.
#[cfg(not(loom))]
pub(crate) fn identify(fd: std::os::fd::RawFd) -> std::io::Result<Identity> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    cvt(fault::Call::Fstat, fd, || {
        // SAFETY: `st` is writable and large enough for a `stat`.
        unsafe { libc::fstat(fd, st.as_mut_ptr()) as isize }
    })?;
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => Kind::Socket,
        libc::S_IFREG => Kind::RegularFile,
        _ => Kind::Other,
    };
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // the widths vary by OS
    Ok(Identity {
        kind,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
    })
}
