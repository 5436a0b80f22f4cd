//! The Winsock provider calls: `WPUCreateSocketHandle`, `WPUCloseSocketHandle`,
//! `WPUCompleteOverlappedRequest`, `WSPGetOverlappedResult`.
//!
//! They report failures through `*err` with Winsock's codes, and also set `errno`. A NULL
//! `err` is tolerated: the code then only reaches `errno`.

#![allow(non_snake_case)]

use crate::boundary::{catch, checked, object, set_errno, Errno};
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

/// Runs a provider call's `body` behind the panic boundary: its value, or `failure` with
/// the failure reported through `*err` and `errno`. A misaligned `err` fails the call
/// before `body` runs, with `errno` = `EINVAL` and nothing written through it.
///
/// # Safety
///
/// An aligned, non-NULL `err` must be valid for a write.
unsafe fn provide<T>(err: *mut c_int, failure: T, body: impl FnOnce() -> Result<T, Failure>) -> T {
    let err = match checked(err) {
        Ok(err) => err,
        Err(errno) => {
            set_errno(errno.0);
            return failure;
        }
    };
    catch(body).unwrap_or_else(|fail| {
        if let Some(err) = err {
            // SAFETY: non-NULL and aligned, so valid for a write (the caller's contract).
            unsafe { err.write(fail.code) };
        }
        set_errno(fail.errno.0);
        failure
    })
}

/// Makes a provider's socket handle for the provider `catalog_id`, carrying `context`:
/// a descriptor the library owns, associable with a port like any socket, valid until
/// `WPUCloseSocketHandle` (or `CloseHandle`). `INVALID_SOCKET` on failure, with `*err` =
/// `WSAENOBUFS` and `errno` the system's reason (`EMFILE`, ...).
///
/// # Safety
///
/// An aligned, non-NULL `err` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn WPUCreateSocketHandle(
    catalog_id: DWORD,
    context: libc::uintptr_t,
    err: *mut c_int,
) -> SOCKET {
    let call = || {
        let socket = ProviderSocket::new(catalog_id, context).map_err(|e| Failure {
            code: WSAENOBUFS,
            errno: e.into(),
        })?;
        Ok(socket.into_handle())
    };
    // SAFETY: the caller's contract for `err`.
    unsafe { provide(err, INVALID_SOCKET, call) }
}

/// Closes a provider's socket handle: completing into it fails afterwards, and its number
/// is released. 0, or `SOCKET_ERROR` with `*err` = `WSAEINVAL` and `errno` = `EBADF` for a
/// handle that is not an open provider handle made here (a second close included).
///
/// # Safety
///
/// An aligned, non-NULL `err` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn WPUCloseSocketHandle(s: SOCKET, err: *mut c_int) -> c_int {
    let call = || {
        handles::close_provider(s)?;
        Ok(0)
    };
    // SAFETY: the caller's contract for `err`.
    unsafe { provide(err, SOCKET_ERROR, call) }
}

/// Completes the overlapped request `ovl` on the provider handle `s`: sets `InternalHigh`
/// = `bytes`, then `Internal` = `error` (0 for success) with release ordering, so whoever
/// sees `Internal` done also sees the count; then queues a record (`errorno` = `error`)
/// to `s`'s port if it has one, else sets `ovl->hEvent`. After this returns the requester
/// may free `ovl`. 0, or `SOCKET_ERROR` with `*err` = `WSAEINVAL` for a handle not made by
/// `WPUCreateSocketHandle` (`errno` `EBADF`), a NULL or misaligned `ovl`, or `error` =
/// `WSS_OPERATION_IN_PROGRESS` (`errno` `EINVAL`).
///
/// # Safety
///
/// An aligned, non-NULL `ovl` must point to a `WSAOVERLAPPED`, and an aligned, non-NULL
/// `err` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn WPUCompleteOverlappedRequest(
    s: SOCKET,
    ovl: LPWSAOVERLAPPED,
    error: DWORD,
    bytes: DWORD,
    err: *mut c_int,
) -> c_int {
    let call = || {
        // SAFETY: an aligned, non-NULL `ovl` is a live block (the caller's contract).
        let block = unsafe { object(ovl) };
        ProviderSocket::with_handle(s, |provider| {
            let block = block?.ok_or(Errno::INVAL)?;
            provider.complete(block, error, bytes).map_err(Errno::from)
        })
        .ok_or(Errno::BADF)??;
        Ok(0)
    };
    // SAFETY: the caller's contract for `err`.
    unsafe { provide(err, SOCKET_ERROR, call) }
}

/// The result of the provider request `ovl` on `s`, as the seed's typical provider leaves
/// it: `*bytes` = `InternalHigh`, `*flags` = `Offset`. TRUE when done and `OffsetHigh` is
/// 0; FALSE with `*err` = `OffsetHigh` (`errno` `EIO`) when done with an error. While it
/// runs: with `wait`, blocks until it is done; without, FALSE with `*err` =
/// `WSA_IO_INCOMPLETE` (`errno` `EINPROGRESS`). FALSE with `*err` = `WSAEINVAL` for a
/// handle that is not a provider handle (`errno` `EBADF`) or a NULL or misaligned `ovl`,
/// `bytes` or `flags` (`errno` `EINVAL`).
///
/// # Safety
///
/// An aligned, non-NULL `ovl` must point to a `WSAOVERLAPPED`; each of `bytes`, `flags`
/// and `err` that is aligned and not NULL must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn WSPGetOverlappedResult(
    s: SOCKET,
    ovl: LPWSAOVERLAPPED,
    bytes: *mut DWORD,
    wait: BOOL,
    flags: *mut DWORD,
    err: *mut c_int,
) -> BOOL {
    let call = || {
        // A reference of its own: the call may sleep.
        let provider = ProviderSocket::from_handle(s).ok_or(Errno::BADF)?;
        // SAFETY: an aligned, non-NULL `ovl` is a live block (the caller's contract).
        let block = unsafe { object(ovl) }?.ok_or(Errno::INVAL)?;
        let (Some(bytes), Some(flags)) = (checked(bytes)?, checked(flags)?) else {
            return Err(Errno::INVAL.into());
        };
        let Some(status) = provider.overlapped_result(block, wait != FALSE) else {
            return Err(Failure {
                code: WSA_IO_INCOMPLETE,
                errno: Errno(libc::EINPROGRESS),
            });
        };
        // SAFETY: both non-NULL and aligned, so valid for writes (the caller's contract;
        // they may name one place: raw writes, no references).
        unsafe {
            bytes.write(status.bytes);
            flags.write(status.flags);
        }
        match status.error {
            0 => Ok(TRUE),
            code => Err(Failure {
                code: code as c_int,
                errno: Errno(libc::EIO),
            }),
        }
    };
    // SAFETY: the caller's contract for `err`.
    unsafe { provide(err, FALSE, call) }
}
