//! AIX's list I/O on ports: `iocp_lio_listio` and its `iocp_aio_error`,
//! `iocp_aio_return`, `iocp_aio_cancel` companions.
//!
//! Prefixed so as not to interpose glibc's `lio_listio`, `aio_error`, ... of `<aio.h>`.

use crate::boundary::{array, checked, object, run, Errno};
use crate::types::{IOCP_AIO_ALLDONE, IOCP_AIO_CANCELED, IOCP_AIO_NOTCANCELED};
use iocp::{AioCancel, Aiocb, FilePool, LioMode};
use std::os::raw::{c_int, c_void};

/// Submits the `n` requests of `list` in one call (AIX `lio_listio`) to the library's file
/// threads. NULL entries and `IOCP_LIO_NOP` entries are skipped.
///
/// `mode` is `IOCP_LIO_WAIT` (returns when every request is done; each aiocb is updated,
/// no records are queued), `IOCP_LIO_NOWAIT` (returns at once; each aiocb is updated when
/// its request is done, and a record goes to its port if `aio_flag & AIO_EXTENDED` names
/// one in `aio_iocpfd`) or `LIO_NOWAIT_GMCS` (returns at once; the aiocbs are not touched:
/// each request reports only as a record on its port, whose `overlapped` is the aiocb and
/// whose `completion_key` is 0 — every entry must name a port). These are AIX's values:
/// glibc's `LIO_WAIT` and `LIO_NOWAIT` are swapped, never pass them here.
///
/// Returns 0, or -1 with `errno`: `EINVAL` for an unknown `mode`, a negative `n`, a NULL or
/// misaligned `list` with `n > 0`, or a misaligned entry (nothing is submitted then);
/// `EAGAIN` when the file threads cannot be started or are stopping; `EIO` when some entry
/// could not be queued — the others were, and that entry carries its own error (`EBADF` for
/// a closed file or port, `EINVAL` for a bad opcode, offset, length or buffer), in its
/// aiocb, or for `LIO_NOWAIT_GMCS` as a record on its port; with `IOCP_LIO_WAIT`, also
/// `EIO` when a request failed as it ran (its aiocb holds the error), as POSIX has it.
/// `sig` is accepted for compatibility and ignored: no signal is sent.
///
/// # Safety
///
/// An aligned, non-NULL `list` must point to `n` entries, each NULL, misaligned or pointing
/// to a `struct iocp_aiocb`. Each aiocb and its `aio_buf` memory must stay valid and
/// untouched until its request is done: its record dequeued, `iocp_aio_error` no longer
/// `EINPROGRESS`, or for `IOCP_LIO_WAIT` this call's return.
#[no_mangle]
pub unsafe extern "C" fn iocp_lio_listio(
    mode: c_int,
    list: *const *mut Aiocb,
    n: c_int,
    sig: *mut c_void,
) -> c_int {
    let _ = sig;
    run(-1, || {
        let mode = LioMode::from_raw(mode).ok_or(Errno::INVAL)?;
        let len = usize::try_from(n).map_err(|_| Errno::INVAL)?;
        if len == 0 {
            return Ok(0);
        }
        // SAFETY: a non-NULL `list` points to `n` entries (the caller's contract).
        let list = unsafe { array(list, len) }?;
        for &entry in list {
            checked(entry)?;
        }
        let pool = FilePool::global().map_err(|_| Errno(libc::EAGAIN))?;
        // SAFETY: every entry is NULL or a live aiocb that outlives its request (the
        // caller's contract).
        unsafe { pool.lio_listio(mode, list) }?;
        Ok(0)
    })
}

/// The status of `aiocb`'s request: `EINPROGRESS` while it runs, then 0 or its `errno`.
/// -1 with `EINVAL` for NULL or a misaligned `aiocb`. (Requests of `LIO_NOWAIT_GMCS` never
/// update their aiocb.)
///
/// # Safety
///
/// An aligned, non-NULL `aiocb` must point to a `struct iocp_aiocb`.
#[no_mangle]
pub unsafe extern "C" fn iocp_aio_error(aiocb: *const Aiocb) -> c_int {
    run(-1, || {
        // SAFETY: an aligned, non-NULL `aiocb` is a live aiocb (the caller's contract).
        let aiocb = unsafe { object(aiocb) }?.ok_or(Errno::INVAL)?;
        Ok(aiocb.error())
    })
}

/// The byte count of `aiocb`'s finished request, or -1 for a failed one (its error is
/// `iocp_aio_error`'s). -1 with `EINVAL` for NULL, a misaligned `aiocb` or a request still
/// in progress.
///
/// # Safety
///
/// An aligned, non-NULL `aiocb` must point to a `struct iocp_aiocb`.
#[no_mangle]
pub unsafe extern "C" fn iocp_aio_return(aiocb: *mut Aiocb) -> libc::ssize_t {
    run(-1, || {
        // SAFETY: an aligned, non-NULL `aiocb` is a live aiocb (the caller's contract).
        let aiocb = unsafe { object(aiocb) }?.ok_or(Errno::INVAL)?;
        Ok(aiocb.result()?)
    })
}

/// Cancels `aiocb`'s request on `fd`, or every queued request on `fd` when `aiocb` is NULL.
/// A cancelled request still completes, with `ECANCELED` (its aiocb, its record). Returns
/// `IOCP_AIO_CANCELED`, `IOCP_AIO_NOTCANCELED` (one was already running) or
/// `IOCP_AIO_ALLDONE` (nothing was in flight) — glibc's `AIO_*` values, the same numbers;
/// -1 with `EBADF` for a closed `fd`, `EINVAL` for a misaligned `aiocb` or when
/// `aiocb->aio_fildes` is not `fd`.
/// Cancelling never ends a `GetMultipleCompletionStatus` wait.
///
/// # Safety
///
/// An aligned, non-NULL `aiocb` must point to a `struct iocp_aiocb`.
#[no_mangle]
pub unsafe extern "C" fn iocp_aio_cancel(fd: c_int, aiocb: *mut Aiocb) -> c_int {
    run(-1, || {
        // SAFETY: an aligned, non-NULL `aiocb` is a live aiocb (the caller's contract).
        if let Some(cb) = unsafe { object(aiocb) }? {
            if cb.aio_fildes != fd {
                return Err(Errno::INVAL);
            }
        }
        let pool = FilePool::global().map_err(|_| Errno(libc::EAGAIN))?;
        let which = (!aiocb.is_null()).then_some(aiocb.cast_const());
        Ok(match pool.aio_cancel(fd, which)? {
            AioCancel::Canceled => IOCP_AIO_CANCELED,
            AioCancel::NotCanceled => IOCP_AIO_NOTCANCELED,
            AioCancel::AllDone => IOCP_AIO_ALLDONE,
        })
    })
}
