//! The Winsock provider calls: `WPUCreateSocketHandle`, `WPUCloseSocketHandle`,
//! `WPUCompleteOverlappedRequest`, `WSPGetOverlappedResult`.
//!
//! They report failures through `*err` with Winsock's codes, and also set `errno`. A NULL
//! `err` is tolerated: the code then only reaches `errno`.

#![allow(non_snake_case)]

use crate::boundary::{catch, set_errno, Errno};
use crate::handles;
use crate::types::{BOOL, DWORD, FALSE, INVALID_SOCKET, LPWSAOVERLAPPED, SOCKET, TRUE};
use crate::types::{SOCKET_ERROR, WSAEINVAL, WSAENOBUFS, WSA_IO_INCOMPLETE};
use iocp::ProviderSocket;
use std::os::raw::c_int;

/// A failure of a provider call: the Winsock code for `*err` and the `errno`.
struct Failure {
    code: c_int,
    errno: Errno,
}

impl From<Errno> for Failure {
    /// A bad argument or handle, or the engine's error: `WSAEINVAL` (a panic's `EIO` too).
    fn from(errno: Errno) -> Failure {
        Failure {
            code: WSAEINVAL,
            errno,
        }
    }
}

/// A provider call's value, or `failure` with the failure reported through `*err` and
/// `errno`.
///
/// # Safety
///
/// `err` must be NULL or valid for a write.
unsafe fn reply<T>(err: *mut c_int, result: Result<T, Failure>, failure: T) -> T {
    result.unwrap_or_else(|fail| {
        // SAFETY: NULL or valid for a write (the caller's contract).
        unsafe { report(err, fail) };
        failure
    })
}

/// # Safety
///
/// `err` must be NULL or valid for a write.
unsafe fn report(err: *mut c_int, fail: Failure) {
    // SAFETY: NULL or valid for a write (the caller's contract).
    if let Some(err) = unsafe { err.as_mut() } {
        *err = fail.code;
    }
    set_errno(fail.errno.0);
}

/// Makes a provider's socket handle for the provider `catalog_id`, carrying `context`:
/// a descriptor the library owns, associable with a port like any socket, valid until
/// `WPUCloseSocketHandle` (or `CloseHandle`). `INVALID_SOCKET` on failure, with `*err` =
/// `WSAENOBUFS` and `errno` the system's reason (`EMFILE`, ...).
///
/// # Safety
///
/// `err` must be NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn WPUCreateSocketHandle(
    catalog_id: DWORD,
    context: libc::uintptr_t,
    err: *mut c_int,
) -> SOCKET {
    let result = catch(|| {
        let socket = ProviderSocket::new(catalog_id, context).map_err(|e| Failure {
            code: WSAENOBUFS,
            errno: e.into(),
        })?;
        Ok(socket.into_handle())
    });
    // SAFETY: the caller's contract for `err`.
    unsafe { reply(err, result, INVALID_SOCKET) }
}

/// Closes a provider's socket handle: completing into it fails afterwards, and its number
/// is released. 0, or `SOCKET_ERROR` with `*err` = `WSAEINVAL` and `errno` = `EBADF` for a
/// handle that is not an open provider handle made here (a second close included).
///
/// # Safety
///
/// `err` must be NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn WPUCloseSocketHandle(s: SOCKET, err: *mut c_int) -> c_int {
    let result = catch(|| {
        handles::close_provider(s)?;
        Ok(0)
    });
    // SAFETY: the caller's contract for `err`.
    unsafe { reply(err, result, SOCKET_ERROR) }
}

/// Completes the overlapped request `ovl` on the provider handle `s`: sets `InternalHigh`
/// = `bytes`, then `Internal` = `error` (0 for success) with release ordering, so whoever
/// sees `Internal` done also sees the count; then queues a record (`errorno` = `error`)
/// to `s`'s port if it has one, else sets `ovl->hEvent`. After this returns the requester
/// may free `ovl`. 0, or `SOCKET_ERROR` with `*err` = `WSAEINVAL` for a handle not made by
/// `WPUCreateSocketHandle` (`errno` `EBADF`), a NULL `ovl`, or `error` =
/// `WSS_OPERATION_IN_PROGRESS` (`errno` `EINVAL`).
///
/// # Safety
///
/// `ovl` must be NULL or point to a `WSAOVERLAPPED`, and `err` must be NULL or valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn WPUCompleteOverlappedRequest(
    s: SOCKET,
    ovl: LPWSAOVERLAPPED,
    error: DWORD,
    bytes: DWORD,
    err: *mut c_int,
) -> c_int {
    let result = catch(|| {
        // SAFETY: NULL or a live block (the caller's contract).
        let block = unsafe { ovl.as_ref() };
        ProviderSocket::with_handle(s, |provider| {
            let block = block.ok_or(Errno::INVAL)?;
            provider.complete(block, error, bytes).map_err(Errno::from)
        })
        .ok_or(Errno::BADF)??;
        Ok(0)
    });
    // SAFETY: the caller's contract for `err`.
    unsafe { reply(err, result, SOCKET_ERROR) }
}

/// The result of the provider request `ovl` on `s`, as the seed's typical provider leaves
/// it: `*bytes` = `InternalHigh`, `*flags` = `Offset`. TRUE when done and `OffsetHigh` is
/// 0; FALSE with `*err` = `OffsetHigh` (`errno` `EIO`) when done with an error. While it
/// runs: with `wait`, blocks until it is done; without, FALSE with `*err` =
/// `WSA_IO_INCOMPLETE` (`errno` `EINPROGRESS`). FALSE with `*err` = `WSAEINVAL` for a
/// handle that is not a provider handle (`errno` `EBADF`) or a NULL `ovl`, `bytes` or
/// `flags` (`errno` `EINVAL`).
///
/// # Safety
///
/// `ovl` must be NULL or point to a `WSAOVERLAPPED`; `bytes`, `flags` and `err` must each
/// be NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn WSPGetOverlappedResult(
    s: SOCKET,
    ovl: LPWSAOVERLAPPED,
    bytes: *mut DWORD,
    wait: BOOL,
    flags: *mut DWORD,
    err: *mut c_int,
) -> BOOL {
    let result = catch(|| {
        // A reference of its own: the call may sleep.
        let provider = ProviderSocket::from_handle(s).ok_or(Errno::BADF)?;
        // SAFETY: NULL or a live block (the caller's contract).
        let block = unsafe { ovl.as_ref() }.ok_or(Errno::INVAL)?;
        if bytes.is_null() || flags.is_null() {
            return Err(Errno::INVAL.into());
        }
        let Some(status) = provider.overlapped_result(block, wait != FALSE) else {
            return Err(Failure {
                code: WSA_IO_INCOMPLETE,
                errno: Errno(libc::EINPROGRESS),
            });
        };
        // SAFETY: both non-NULL, so valid for writes (the caller's contract).
        unsafe {
            *bytes = status.bytes;
            *flags = status.flags;
        }
        match status.error {
            0 => Ok(TRUE),
            code => Err(Failure {
                code: code as c_int,
                errno: Errno(libc::EIO),
            }),
        }
    });
    // SAFETY: the caller's contract for `err`.
    unsafe { reply(err, result, FALSE) }
}
