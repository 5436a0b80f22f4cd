//! Requests on the caller's descriptors: `ReadFile`, `WriteFile`, `CancelIoEx`,
//! `GetOverlappedResult`.

#![allow(non_snake_case)]

use crate::boundary::{checked, object, run, Errno, Outcome};
use crate::handles;
use crate::types::{BOOL, DWORD, FALSE, HANDLE, LPOVERLAPPED, TRUE};
use iocp::descriptor::{self, Started};
use std::os::raw::c_void;
use std::ptr::NonNull;

/// Reads up to `n` bytes of `fd` into `buf`.
///
/// Without `ovl` (NULL) the read is synchronous, on the calling thread (from the file
/// position, for a file): TRUE with `*done` bytes.
///
/// With `ovl`, a socket is tried at once: TRUE with `*done` (if `done` is not NULL) when
/// the read completes now — the block is filled in and no record is queued. Otherwise
/// FALSE with `errno` = `EINPROGRESS`: the request completes later, as a record on `fd`'s
/// port carrying `ovl`, or by setting `ovl->hEvent` when `fd` has no port. After a read of
/// a stream socket came back short (fewer bytes than asked), its next read is not tried: it
/// is `EINPROGRESS` until the socket's next readable event, even with bytes already there
/// (the readiness cache; see `ffi/README.md`). A read of 0 bytes of a stream socket (`buf`
/// may be NULL) is a zero-byte read: it completes with 0 bytes once the socket is
/// readable and takes no byte (on a datagram socket it takes the next datagram and keeps
/// none of it, as `recv(2)` does). A regular file
/// (a Windows extension) reads at the block's `Offset`/`OffsetHigh` and always completes
/// later, on the library's file threads.
///
/// Other failures are FALSE with `errno`: `EINVAL` for a descriptor that is closed,
/// negative or one of the library's handles, a NULL `buf` with `n > 0`, a NULL `done`
/// without `ovl`, or a misaligned `done` or `ovl`; `EAGAIN` when the request cannot be
/// queued; or the read's own error.
///
/// # Safety
///
/// `buf` must be valid for writes of `n` bytes and an aligned, non-NULL `done` valid for a
/// write. With an aligned `ovl`, `ovl` must point to an `OVERLAPPED`, and it and `buf` must
/// stay valid and unmoved (and `buf` untouched) until the request completes:
/// `HasOverlappedIoCompleted`, its record dequeued, or its event set.
#[no_mangle]
pub unsafe extern "C" fn ReadFile(
    fd: HANDLE,
    buf: *mut c_void,
    n: DWORD,
    done: *mut DWORD,
    ovl: LPOVERLAPPED,
) -> BOOL {
    run(FALSE, || {
        // SAFETY: the caller's contract for `done`, forwarded.
        let done = unsafe { prepare(fd, buf.is_null(), n, done, ovl) }?;
        // SAFETY: the caller's contract for `buf` and an aligned `ovl`, forwarded.
        let started = unsafe {
            match ovl.is_null() {
                true => Started::Done(descriptor::read_now(fd, buf.cast(), n as usize)? as DWORD),
                false => descriptor::read(fd, buf.cast(), n as usize, ovl)?,
            }
        };
        // SAFETY: the caller's contract for `done`, forwarded.
        unsafe { finish(started, done) }
    })
}

/// Writes up to `n` bytes of `buf` to `fd`. Everything as `ReadFile`, the other way
/// (a synchronous write to a socket never raises `SIGPIPE`: it fails with `EPIPE`).
///
/// # Safety
///
/// As `ReadFile`, with `buf` valid for reads of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn WriteFile(
    fd: HANDLE,
    buf: *const c_void,
    n: DWORD,
    done: *mut DWORD,
    ovl: LPOVERLAPPED,
) -> BOOL {
    run(FALSE, || {
        // SAFETY: the caller's contract for `done`, forwarded.
        let done = unsafe { prepare(fd, buf.is_null(), n, done, ovl) }?;
        // SAFETY: the caller's contract for `buf` and an aligned `ovl`, forwarded.
        let started = unsafe {
            match ovl.is_null() {
                true => Started::Done(descriptor::write_now(fd, buf.cast(), n as usize)? as DWORD),
                false => descriptor::write(fd, buf.cast(), n as usize, ovl)?,
            }
        };
        // SAFETY: the caller's contract for `done`, forwarded.
        unsafe { finish(started, done) }
    })
}

/// Checks `ReadFile`/`WriteFile` arguments and zeroes `*done`, as Windows does: `done`
/// checked, to write the count through.
///
/// # Safety
///
/// An aligned, non-NULL `done` must be valid for a write.
unsafe fn prepare(
    fd: HANDLE,
    no_buf: bool,
    n: DWORD,
    done: *mut DWORD,
    ovl: LPOVERLAPPED,
) -> Outcome<Option<NonNull<DWORD>>> {
    let done = checked(done)?;
    if let Some(done) = done {
        // SAFETY: non-NULL and aligned, so valid for a write (the caller's contract).
        unsafe { done.write(0) };
    }
    // Nowhere to put the count of a synchronous request.
    let uncounted = checked(ovl)?.is_none() && done.is_none();
    if (no_buf && n > 0) || uncounted || handles::is_library_handle(fd) {
        return Err(Errno::INVAL);
    }
    Ok(done)
}

/// TRUE with the byte count for a request done now; `EINPROGRESS` for one that completes
/// later.
///
/// # Safety
///
/// A `done` given must be valid for a write.
unsafe fn finish(started: Started, done: Option<NonNull<DWORD>>) -> Outcome<BOOL> {
    match started {
        Started::Done(bytes) => {
            if let Some(done) = done {
                // SAFETY: given, so valid for a write (the caller's contract).
                unsafe { done.write(bytes) };
            }
            Ok(TRUE)
        }
        Started::Pending => Err(Errno(libc::EINPROGRESS)),
    }
}

/// Cancels `fd`'s pending request `ovl`, or all of `fd`'s pending requests when `ovl` is
/// NULL. Each cancelled request still completes exactly once, with `ECANCELED` (a record
/// on the port, or its event), unless it completed first. TRUE when something was
/// cancelled; FALSE with `ENOENT` when nothing was pending. `ovl` is only compared, never
/// dereferenced.
#[no_mangle]
pub extern "C" fn CancelIoEx(fd: HANDLE, ovl: LPOVERLAPPED) -> BOOL {
    run(FALSE, || {
        let which = (!ovl.is_null()).then_some(ovl.cast_const());
        descriptor::cancel(fd, which)?;
        Ok(TRUE)
    })
}

/// The result of the request `ovl`: TRUE with `*bytes` when it succeeded; FALSE with
/// `*bytes` and `errno` = its error when it failed. While it runs: with `wait`, blocks until
/// it is done (sleeping on `ovl->Internal` itself, no event needed; signals do not end the
/// wait); without, FALSE with `EINPROGRESS`. `EINVAL` for a NULL or misaligned pointer.
/// `fd` is not consulted (the block says everything).
///
/// # Safety
///
/// An aligned, non-NULL `ovl` must point to an `OVERLAPPED`, and an aligned, non-NULL
/// `bytes` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn GetOverlappedResult(
    fd: HANDLE,
    ovl: LPOVERLAPPED,
    bytes: *mut DWORD,
    wait: BOOL,
) -> BOOL {
    let _ = fd;
    run(FALSE, || {
        // SAFETY: an aligned, non-NULL `ovl` is a live block (the caller's contract).
        let (Some(block), Some(bytes)) = (unsafe { object(ovl) }?, checked(bytes)?) else {
            return Err(Errno::INVAL);
        };
        let result = block.get_result(wait != FALSE);
        let count = match &result {
            Ok(n) => *n,
            Err(_) if block.is_complete() => block.bytes(),
            Err(_) => 0,
        };
        // SAFETY: non-NULL and aligned, so valid for a write (the caller's contract).
        unsafe { bytes.write(count) };
        result?;
        Ok(TRUE)
    })
}
