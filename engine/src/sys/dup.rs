//! The library's own duplicates of a caller's descriptors, and whether the caller's number
//! still names the same open file.
//!
//! The C ABI's requests run on a duplicate the library owns, never on the caller's number:
//! once the caller closes the number and the kernel hands it out again, a request still in
//! flight keeps working on the file or socket it was made for. Whether the caller still
//! holds that file under its number is asked with `kcmp(KCMP_FILE)`, which compares open file
//! descriptions exactly. Where the kernel refuses `kcmp` (built without it, or a seccomp
//! filter), the engine compares identities (`st_dev`, `st_ino`) instead: then the number
//! reopened onto the *same* file counts as the same.

use super::{cvt, fault::Call};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
#[cfg(feature = "c-abi")]
use {
    super::identify,
    std::os::fd::{AsRawFd, BorrowedFd},
};

/// A close-on-exec duplicate of `fd`, above the standard streams. `EBADF` for a closed
/// descriptor, `EMFILE` when the process has no number left.
pub(crate) fn duplicate(fd: RawFd) -> io::Result<OwnedFd> {
    let new = cvt(Call::Fcntl, fd, || {
        // SAFETY: F_DUPFD_CLOEXEC takes an integer argument and no memory.
        unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) as isize }
    })?;
    // SAFETY: fcntl returned a new descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new as RawFd) })
}

/// Whether the caller's `theirs` still names the open file description `ours` (a
/// [`duplicate`] of it) refers to. `EBADF` when `theirs` is closed.
#[cfg(feature = "c-abi")]
pub(crate) fn same_open_file(theirs: RawFd, ours: BorrowedFd<'_>) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    if let Some(same) = kcmp::same_file(theirs, ours.as_raw_fd())? {
        return Ok(same);
    }
    Ok(identify(theirs)? == identify(ours.as_raw_fd())?)
}

#[cfg(all(target_os = "linux", feature = "c-abi"))]
mod kcmp {
    use super::{cvt, Call};
    use std::io;
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    use std::sync::Once;

    /// `KCMP_FILE` from `<linux/kcmp.h>`.
    const KCMP_FILE: libc::c_long = 0;

    /// Cleared once the kernel refuses `kcmp`; never set again.
    static AVAILABLE: AtomicBool = AtomicBool::new(true);

    /// This process's id, 0 until first needed and again in a child of `fork`: `getpid` is
    /// a system call, and the watcher asks for each descriptor it looks at.
    static PID: AtomicI32 = AtomicI32::new(0);
    static AT_FORK: Once = Once::new();

    fn pid() -> libc::c_long {
        // Relaxed: every thread that finds 0 asks the kernel and stores the same answer.
        let mut pid = PID.load(Ordering::Relaxed);
        if pid == 0 {
            AT_FORK.call_once(|| {
                // SAFETY: the handler is an `extern "C" fn()` that only stores to a static
                // atomic, which is async-signal-safe as a child handler must be.
                unsafe { libc::pthread_atfork(None, None, Some(forgotten_in_child)) };
            });
            // SAFETY: getpid takes nothing and cannot fail.
            pid = unsafe { libc::getpid() };
            PID.store(pid, Ordering::Relaxed);
        }
        libc::c_long::from(pid)
    }

    /// In a child of `fork`: the id was the parent's.
    extern "C" fn forgotten_in_child() {
        // Relaxed: the child has one thread.
        PID.store(0, Ordering::Relaxed);
    }

    /// `Some(same)` from `kcmp`, `None` where the kernel refuses it.
    pub(super) fn same_file(theirs: RawFd, ours: RawFd) -> io::Result<Option<bool>> {
        // Relaxed: a cache of the kernel's answer; every thread that reads `true` asks the
        // kernel and learns the same.
        if !AVAILABLE.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let pid = pid();
        let result = cvt(Call::Kcmp, theirs, || {
            // SAFETY: kcmp compares two of this process's descriptors; it takes no memory.
            unsafe {
                libc::syscall(
                    libc::SYS_kcmp,
                    pid,
                    pid,
                    KCMP_FILE,
                    libc::c_long::from(theirs),
                    libc::c_long::from(ours),
                ) as isize
            }
        });
        match result {
            Ok(order) => Ok(Some(order == 0)),
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                AVAILABLE.store(false, Ordering::Relaxed);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "c-abi")]
    fn a_duplicate_is_the_same_open_file_until_the_number_is_closed_or_reused() {
        use std::os::fd::{AsFd, AsRawFd};
        use std::os::unix::net::UnixStream;

        let (a, _peer) = UnixStream::pair().unwrap();
        let ours = duplicate(a.as_raw_fd()).unwrap();
        assert_ne!(ours.as_raw_fd(), a.as_raw_fd());
        assert!(same_open_file(a.as_raw_fd(), ours.as_fd()).unwrap());

        // The number now names another socket.
        let (b, _other) = UnixStream::pair().unwrap();
        // SAFETY: both descriptors are this test's; dup2 replaces `a`'s number in one step.
        let rc = unsafe { libc::dup2(b.as_raw_fd(), a.as_raw_fd()) };
        assert_eq!(rc, a.as_raw_fd());
        assert!(!same_open_file(a.as_raw_fd(), ours.as_fd()).unwrap());

        // Closed, the number is no longer that file either (a test running alongside may
        // take the number at once, so the answer is "not the same" or `EBADF`).
        let number = a.as_raw_fd();
        drop(a);
        assert!(!matches!(same_open_file(number, ours.as_fd()), Ok(true)));
        // A number that no descriptor can have: `EBADF`.
        let err = same_open_file(-1, ours.as_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    /// Regression: this test closed a socket and asked for a duplicate of its number, which
    /// a test running alongside could take in between (CI saw the duplicate succeed).
    #[test]
    fn a_closed_descriptor_has_no_duplicate() {
        for number in [-1, i32::MAX] {
            let err = duplicate(number).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{number}");
        }
    }
}
