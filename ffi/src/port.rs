//! Ports: `CreateIoCompletionPort`, `GetQueuedCompletionStatus`,
//! `GetMultipleCompletionStatus`, `PostQueuedCompletionStatus`.

#![allow(non_snake_case)]

use crate::boundary::{run, set_errno, Errno, Outcome};
use crate::handles::{self, Object};
use crate::types::{gmcs, BOOL, DWORD, GMCS_NMAX, HANDLE, INFINITE, INVALID_HANDLE_VALUE};
use crate::types::{FALSE, LPOVERLAPPED, TRUE};
use iocp::{descriptor, Completion, DrainStatus, Port, ProviderSocket};
use std::mem::MaybeUninit;
use std::os::raw::c_int;
use std::ptr;
use std::time::Duration;

/// Creates a port, or associates a descriptor with one.
///
/// `CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, threads)` makes a new port and
/// returns its handle, a descriptor the library owns. `threads` is the concurrency value:
/// how many threads that dequeued from the port with `GetQueuedCompletionStatus` run at
/// once (0: the number of CPUs; `INFINITE`: no limit).
///
/// `CreateIoCompletionPort(fd, port, key, threads)` associates `fd` — the caller's socket
/// or regular file, or a handle from `WPUCreateSocketHandle` — with `port` under `key`
/// and returns `port`; requests on `fd` that complete later become records on `port`.
/// `threads` is ignored.
///
/// Fails with 0 and `errno`: `EBADF` when `port` is not a live port (0 included, and a port
/// the program closed with plain `close`, which this call notices), `EINVAL` when `fd` is
/// neither a socket nor a regular file (or is a port or event handle), `EALREADY` when `fd`
/// is associated already, `EBUSY` when `fd` has requests in flight without a port.
///
/// # Safety
///
/// `fd` is the caller's and stays the caller's: keep it open while requests on it are in
/// flight. Closing it is allowed; the library notices when the number comes back for
/// another file and never carries an association over.
#[no_mangle]
pub unsafe extern "C" fn CreateIoCompletionPort(
    fd: HANDLE,
    port: HANDLE,
    key: DWORD,
    threads: DWORD,
) -> HANDLE {
    run(0, || {
        if fd == INVALID_HANDLE_VALUE {
            return match port {
                0 => create(threads),
                _ => Err(Errno::INVAL),
            };
        }
        let port_handle = port;
        // A closed port lingers in the registry while something still refers to it.
        let port = Port::from_handle(port)
            .filter(|port| !port.is_closed())
            .ok_or(Errno::BADF)?;
        // Associating binds to the port: the moment to notice a plain `close(port)`.
        port.check_handle()?;
        if let Some(provider) = ProviderSocket::from_handle(fd) {
            provider.associate(&port, key.into())?;
        } else if handles::is_library_handle(fd) {
            return Err(Errno::INVAL);
        } else {
            // SAFETY: the caller keeps `fd` open while requests on it are in flight.
            unsafe { descriptor::associate(fd, &port, key.into()) }?;
        }
        Ok(port_handle)
    })
}

fn create(threads: DWORD) -> Outcome<HANDLE> {
    let concurrency = match threads {
        INFINITE => usize::MAX,
        n => n as usize,
    };
    let port = Port::builder().concurrency(concurrency).build()?;
    Ok(handles::insert(Object::Port(port)))
}

/// Dequeues one record, waiting up to `timeout_ms` (`INFINITE`: forever; 0: poll).
///
/// TRUE on success: `*bytes`, `*key` and `*ovl` are the record's. FALSE with `*ovl` set
/// to the request's `OVERLAPPED` and `errno` = the request's error when the record is a
/// failed I/O (`*bytes` and `*key` are set too). Otherwise FALSE with `*ovl` = NULL and
/// `errno`: `ETIMEDOUT`; `EAGAIN` when a signal handler ran during the wait (AIX);
/// `EBADF` for a handle that is not a live port, a port closed meanwhile (waiters wake)
/// or closed by the program with plain `close` (noticed before a wait); `EBUSY` while a
/// `GetMultipleCompletionStatus` runs on the port; `EINVAL` for a NULL pointer.
///
/// Several threads may wait on one port; they wake last-in first-out, and the port's
/// concurrency value bounds how many run at once.
///
/// # Safety
///
/// `bytes`, `key` and `ovl` must each be NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn GetQueuedCompletionStatus(
    port: HANDLE,
    bytes: *mut DWORD,
    key: *mut DWORD,
    ovl: *mut LPOVERLAPPED,
    timeout_ms: DWORD,
) -> BOOL {
    run(FALSE, || {
        if ovl.is_null() {
            return Err(Errno::INVAL);
        }
        // SAFETY: `ovl` is non-NULL, so valid for writes (the caller's contract).
        unsafe { *ovl = ptr::null_mut() };
        if bytes.is_null() || key.is_null() {
            return Err(Errno::INVAL);
        }
        let port = Port::from_handle(port).ok_or(Errno::BADF)?;
        if timeout_ms != 0 && port.queued() == 0 {
            // About to sleep: the moment to notice a plain `close(port)`.
            port.check_handle()?;
        }
        let record = port
            .get(timeout(timeout_ms))
            .map_err(|err| match Errno::from(err) {
                Errno(libc::EINTR) => Errno(libc::EAGAIN),
                errno => errno,
            })?;
        // SAFETY: the three pointers are non-NULL, so valid for writes.
        unsafe {
            *bytes = record.bytes();
            *key = record.key() as DWORD;
            *ovl = record.overlapped() as LPOVERLAPPED;
        }
        match record.error() {
            0 => Ok(TRUE),
            errno => Err(Errno(errno as c_int)),
        }
    })
}

/// Dequeues up to `nmax` records into `results` in one pass, waiting up to `timeout_ms`
/// until at least `nmin` have come (AIX's `GetMultipleCompletionStatus`).
///
/// Returns the number of records written, 0 to `nmax`. Fewer than `nmin` is not a failure:
/// `errno` is then `ETIMEDOUT`, or `EINTR` when a signal handler ran during the wait.
/// `nmin == 0` polls and ignores the timeout. `transfer_count` is capped at 2^31 - 1.
/// Returns -1 with `errno`: `EINVAL` for `nmax == 0`, `nmax > GMCS_NMAX`, `nmin > nmax`
/// or NULL `results`; `EBADF` for a handle that is not a live port, or a port closed
/// meanwhile or closed by the program with plain `close` (noticed before a wait); `EBUSY`
/// when another thread already waits on the port (this is an exclusive wait: while it runs,
/// other dequeues fail with `EBUSY`).
///
/// # Safety
///
/// `results` must be NULL or valid for writes of `nmax` entries.
#[no_mangle]
pub unsafe extern "C" fn GetMultipleCompletionStatus(
    port: HANDLE,
    nmin: DWORD,
    nmax: DWORD,
    timeout_ms: DWORD,
    results: *mut gmcs,
) -> c_int {
    run(-1, || {
        if results.is_null() || nmax == 0 || nmax > GMCS_NMAX || nmin > nmax {
            return Err(Errno::INVAL);
        }
        let port = Port::from_handle(port).ok_or(Errno::BADF)?;
        let (min, wait) = (nmin as usize, if nmin == 0 { 0 } else { timeout_ms });
        if wait != 0 && port.queued() < min {
            // About to sleep: the moment to notice a plain `close(port)`.
            port.check_handle()?;
        }
        // SAFETY: `results` is non-NULL, so valid for writes of `nmax` entries; they are
        // written before they are read.
        let out = unsafe {
            std::slice::from_raw_parts_mut(results.cast::<MaybeUninit<gmcs>>(), nmax as usize)
        };
        let drained = port.fill(out, min, timeout(wait), gmcs::from_record)?;
        match drained.status {
            DrainStatus::Complete => {}
            DrainStatus::TimedOut => set_errno(libc::ETIMEDOUT),
            DrainStatus::Interrupted => set_errno(libc::EINTR),
        }
        Ok(drained.count as c_int)
    })
}

/// Queues a record on `port` as given (nothing is validated or dereferenced) and wakes a
/// waiter. TRUE on success; FALSE with `errno`: `EBADF` for 0, a number that is not an
/// open descriptor, or a closed port; `EINVAL` for an open descriptor that is not a port.
/// Never blocks.
#[no_mangle]
pub extern "C" fn PostQueuedCompletionStatus(
    port: HANDLE,
    bytes: DWORD,
    key: DWORD,
    ovl: LPOVERLAPPED,
) -> BOOL {
    run(FALSE, || {
        let Some(target) = Port::from_handle(port) else {
            return Err(match port != 0 && handles::is_open(port) {
                true => Errno::INVAL,
                false => Errno::BADF,
            });
        };
        target.post(Completion::new(key.into(), bytes, ovl as usize))?;
        Ok(TRUE)
    })
}

/// A C timeout in milliseconds as the engine's.
pub(crate) fn timeout(ms: DWORD) -> Option<Duration> {
    (ms != INFINITE).then(|| Duration::from_millis(ms.into()))
}
