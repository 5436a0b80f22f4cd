//! Positioned file I/O on raw descriptors, as the file pool's threads run it.
//!
//! The pool's calls take the descriptor they run on and the number the caller knows the
//! file by (`name`: the same, or the caller's number when the engine runs the request on a
//! duplicate of it); the fault seam matches `name`.

use super::cvt;
use super::fault::Call;
use std::io;
use std::os::fd::RawFd;

/// `pread`: bytes read, short at end of file.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes for the duration of the call.
pub(crate) unsafe fn pread(
    fd: RawFd,
    name: RawFd,
    buf: *mut u8,
    len: usize,
    offset: u64,
) -> io::Result<usize> {
    // SAFETY: the caller guarantees the buffer; the offset was checked to fit `off_t`.
    cvt(Call::Pread, name, || unsafe {
        libc::pread(fd, buf.cast(), len, offset as libc::off_t)
    })
}

/// A read that completes only if it can without waiting (`preadv2` with `RWF_NOWAIT`: the
/// pages are in the page cache): `Some(n)` when all `len` bytes were read, `None` when the
/// read must go to the pool instead — some pages are not cached (`EAGAIN`), the file
/// system or kernel does not take the flag, the file is shorter (a short count could be
/// either), or any other error, which the pool's `pread` meets and reports itself. Never
/// tried while a test has armed a `pread` fault, so that the fault is met where it would be.
/// Not for an `O_DIRECT` descriptor ([`is_direct`]): there the read goes to the device.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes for the duration of the call.
pub(crate) unsafe fn pread_cached(
    fd: RawFd,
    buf: *mut u8,
    len: usize,
    offset: u64,
) -> Option<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if super::fault::armed(Call::Pread) {
            return None;
        }
        let iov = libc::iovec {
            iov_base: buf.cast(),
            iov_len: len,
        };
        // SAFETY: `iov` names the caller's buffer, writable for `len` bytes; the offset was
        // checked to fit `off_t`.
        let n = unsafe { libc::preadv2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) };
        (n >= 0 && n as usize == len).then_some(len)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (fd, buf, len, offset);
        None
    }
}

/// Whether `fd` was opened with `O_DIRECT`, whose reads reach the device even under
/// `RWF_NOWAIT` (which then only avoids waiting for locks): [`pread_cached`] must not be
/// tried on it. `false` where the system has no `O_DIRECT`, or the flags cannot be read.
pub(crate) fn is_direct(fd: RawFd) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: F_GETFL reads the file status flags; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        flags != -1 && flags & libc::O_DIRECT != 0
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = fd;
        false
    }
}

/// `pwrite`: bytes written.
///
/// # Safety
///
/// `buf` must be valid for reads of `len` bytes for the duration of the call.
pub(crate) unsafe fn pwrite(
    fd: RawFd,
    name: RawFd,
    buf: *const u8,
    len: usize,
    offset: u64,
) -> io::Result<usize> {
    // SAFETY: the caller guarantees `buf` is readable for `len` bytes; the offset was
    // checked to fit `off_t`.
    cvt(Call::Pwrite, name, || unsafe {
        libc::pwrite(fd, buf.cast(), len, offset as libc::off_t)
    })
}

/// `read` from the file position (or a socket, pipe, ...), blocking as the descriptor does.
///
/// # Safety
///
/// As for [`pread`].
#[cfg(feature = "c-abi")]
pub(crate) unsafe fn read(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees the buffer.
    cvt(Call::Read, fd, || unsafe {
        libc::read(fd, buf.cast(), len)
    })
}

/// `write` at the file position, blocking as the descriptor does.
///
/// # Safety
///
/// As for [`pwrite`].
#[cfg(feature = "c-abi")]
pub(crate) unsafe fn write(fd: RawFd, buf: *const u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees the buffer.
    cvt(Call::Write, fd, || unsafe {
        libc::write(fd, buf.cast(), len)
    })
}

/// `fsync`.
pub(crate) fn fsync(fd: RawFd, name: RawFd) -> io::Result<usize> {
    // SAFETY: no memory is passed.
    cvt(Call::Fsync, name, || unsafe { libc::fsync(fd) } as isize)
}

/// `fdatasync` (plain `fsync` where the system has none).
pub(crate) fn fdatasync(fd: RawFd, name: RawFd) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    // SAFETY: no memory is passed.
    return cvt(Call::Fdatasync, name, || unsafe { libc::fdatasync(fd) }
        as isize);
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    fsync(fd, name)
}

/// Whether `fd` is an open descriptor.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the descriptor flags; no memory is passed.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

/// Whether `fd` takes positioned reads and writes (`pread` fails with `ESPIPE` on a pipe,
/// a socket or a terminal, where io_uring would read the stream instead).
pub(crate) fn seekable(fd: RawFd) -> bool {
    // SAFETY: lseek takes no memory; SEEK_CUR with 0 moves nothing.
    unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) >= 0 }
}
