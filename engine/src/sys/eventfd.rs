//! An `eventfd(2)`: a counter one thread signals and another waits on, here through the
//! io_uring driver's ring (a poll of it ends the ring thread's wait).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec eventfd at zero.
pub(crate) fn new() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no memory; a non-negative result is a new descriptor.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one: the eventfd becomes readable. A failure means the counter is saturated, so it
/// is readable already.
pub(crate) fn signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: `one` is 8 readable bytes, what an eventfd write takes.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Takes the count back to zero (not readable). Reading a zero count fails with `EAGAIN`,
/// which leaves it as wanted.
pub(crate) fn drain(fd: &OwnedFd) {
    let mut count: u64 = 0;
    // SAFETY: `count` is 8 writable bytes, what an eventfd read fills.
    let _ = unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
}
