//! Ports: `CreateIoCompletionPort`, `iocp_port_create`, `GetQueuedCompletionStatus`,
//! `GetQueuedCompletionStatusEx`, `GetMultipleCompletionStatus`,
//! `PostQueuedCompletionStatus`, `iocp_post_many`.
//!
//! Posting and the dequeues find their port through the engine's handle table without
//! taking a reference of their own ([`Port::with_handle`], [`Port::post_to_handle`]): no
//! lock, no hash, no shared reference-count write, and one thread-local look-up per post.

#![allow(non_snake_case)]

use crate::boundary::{array, array_mut, checked, run, set_errno, Errno, Outcome};
use crate::handles;
use crate::types::{gmcs, BOOL, DWORD, GMCS_NMAX, HANDLE, INFINITE, INVALID_HANDLE_VALUE};
use crate::types::{
    FALSE, IOCP_PORT_FIFO, IOCP_PORT_NO_SPIN, LPOVERLAPPED, OVERLAPPED_ENTRY, TRUE,
};
use iocp::{descriptor, Completion, DrainStatus, FastPost, Port, PortBuilder, ProviderSocket};
use std::io;
use std::os::raw::c_int;
use std::ptr;
use std::time::Duration;

/// Creates a port, or associates a descriptor with one.
///
/// `CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, threads)` makes a new port and
/// returns its handle, a descriptor the library owns. `threads` is the concurrency value:
/// how many threads that dequeued from the port with `GetQueuedCompletionStatus` run at
/// once (0: the number of CPUs; `INFINITE`: no limit). Records come out in the order each
/// thread posted them, not in one order across threads as on Windows and AIX:
/// `iocp_port_create` with `IOCP_PORT_FIFO` makes a port that keeps that order.
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
                0 => create(threads, Port::builder()),
                _ => Err(Errno::INVAL),
            };
        }
        let port_handle = port;
        // The association keeps a reference to the port. (A port being closed may still be
        // found for a moment.)
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
            descriptor::associate(fd, &port, key.into())?;
        }
        Ok(port_handle)
    })
}

/// Creates a port, as `CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, threads)` does,
/// with the options named in `flags` (0, or `IOCP_PORT_FIFO` and `IOCP_PORT_NO_SPIN`
/// or-ed).
///
/// `threads` is the concurrency value, as for `CreateIoCompletionPort`: how many threads
/// that dequeued from the port with `GetQueuedCompletionStatus` run at once (0: the number
/// of CPUs; `INFINITE`: no limit).
///
/// Without `IOCP_PORT_FIFO` the port is the one `CreateIoCompletionPort` makes: records
/// come out in the order each thread posted them, but records posted by different threads
/// (the library's own socket and file threads included) may come out in any order, even
/// when one post happened after the other — a record the main thread posts after joining
/// a producer thread may come out before records that thread posted. Each post then costs
/// a few plain stores.
///
/// With `IOCP_PORT_FIFO` the port is one first-in first-out queue, as on Windows and AIX:
/// records come out in the order the posts happened, across threads too. Every post then
/// costs an atomic compare-and-swap on a line all posting threads share, so posting from
/// several threads at once is slower. See "Ordering" in ffi/README.md.
///
/// A thread that finds the port empty (in `GetQueuedCompletionStatus` and the other
/// dequeues, or waiting for socket readiness on the port's behalf) looks again for up to
/// 100 µs, learnt from the waits that happen, before it sleeps in the kernel: a record
/// posted meanwhile is taken at once, where a sleep and its wake cost microseconds. With
/// `IOCP_PORT_NO_SPIN` it sleeps as soon as it finds nothing, which spares that CPU time
/// and makes every record that finds it asleep pay for a wake. See "Spinning" in
/// ffi/README.md.
///
/// Returns the port's handle, a descriptor the library owns (close it with
/// `CloseHandle`); 0 with `errno` on failure: `EINVAL` when `flags` has a bit that is
/// neither `IOCP_PORT_FIFO` nor `IOCP_PORT_NO_SPIN`, `EMFILE`, `ENFILE` or `ENOMEM` when no
/// handle can be made.
#[no_mangle]
pub extern "C" fn iocp_port_create(threads: DWORD, flags: DWORD) -> HANDLE {
    run(0, || {
        if flags & !(IOCP_PORT_FIFO | IOCP_PORT_NO_SPIN) != 0 {
            return Err(Errno::INVAL);
        }
        let builder = Port::builder().fifo(flags & IOCP_PORT_FIFO != 0);
        create(
            threads,
            match flags & IOCP_PORT_NO_SPIN {
                0 => builder,
                _ => builder.spin_limit(Duration::ZERO),
            },
        )
    })
}

/// A port of `builder`'s with the concurrency value `threads`, kept by its handle.
fn create(threads: DWORD, builder: PortBuilder) -> Outcome<HANDLE> {
    let concurrency = match threads {
        INFINITE => usize::MAX,
        n => n as usize,
    };
    // The handle keeps the port until `CloseHandle` (or a plain `close` noticed).
    Ok(builder.concurrency(concurrency).build()?.into_handle())
}

/// Dequeues one record, waiting up to `timeout_ms` (`INFINITE`: forever; 0: poll).
///
/// TRUE on success: `*bytes`, `*key` and `*ovl` are the record's. FALSE with `*ovl` set
/// to the request's `OVERLAPPED` and `errno` = the request's error when the record is a
/// failed I/O (`*bytes` and `*key` are set too). Otherwise FALSE with `*ovl` = NULL and
/// `errno`: `ETIMEDOUT`; `EAGAIN` when a signal handler ran during the wait (AIX);
/// `EBADF` for a handle that is not a live port, a port closed meanwhile (waiters wake)
/// or closed by the program with plain `close` (noticed before the wait sleeps); `EBUSY`
/// while a `GetMultipleCompletionStatus` runs on the port; `EINVAL` for a NULL or
/// misaligned pointer (`*ovl` is left alone when `ovl` is that pointer).
///
/// Several threads may wait on one port; they wake last-in first-out, and the port's
/// concurrency value bounds how many run at once.
///
/// # Safety
///
/// Each of `bytes`, `key` and `ovl` that is aligned and not NULL must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn GetQueuedCompletionStatus(
    port: HANDLE,
    bytes: *mut DWORD,
    key: *mut DWORD,
    ovl: *mut LPOVERLAPPED,
    timeout_ms: DWORD,
) -> BOOL {
    run(FALSE, || {
        let ovl = checked(ovl)?.ok_or(Errno::INVAL)?;
        // SAFETY: non-NULL and aligned, so valid for writes (the caller's contract).
        unsafe { ovl.write(ptr::null_mut()) };
        let (Some(bytes), Some(key)) = (checked(bytes)?, checked(key)?) else {
            return Err(Errno::INVAL);
        };
        let record = dequeue(port, timeout_ms, |port, timeout| port.get(timeout))?;
        // SAFETY: the three pointers are non-NULL and aligned, so valid for writes (they
        // may name one place: raw writes, no references).
        unsafe {
            bytes.write(record.bytes());
            key.write(record.key() as DWORD);
            ovl.write(record.overlapped() as LPOVERLAPPED);
        }
        match record.error() {
            0 => Ok(TRUE),
            errno => Err(Errno(errno as c_int)),
        }
    })
}

/// Dequeues between 1 and `count` records into `entries` in one pass, waiting up to
/// `timeout_ms` (`INFINITE`: forever; 0: poll) for the first (Windows'
/// `GetQueuedCompletionStatusEx`, an extension: AIX has only
/// `GetMultipleCompletionStatus`).
///
/// Not an exclusive wait: several threads may call it (and `GetQueuedCompletionStatus`) on
/// one port at once, each taking the run ready when its turn comes; they wait and wake as
/// `GetQueuedCompletionStatus` callers do (last-in first-out, within the concurrency value).
///
/// TRUE with `*removed` = the number of entries written. Each entry's `Internal` is the
/// record's `errno` (0 for success): a failed I/O does not fail the call. Otherwise FALSE
/// with `*removed` = 0 (when `removed` is not NULL) and `errno`: `ETIMEDOUT`; `EAGAIN` when
/// a signal handler ran during the wait; `EBADF` for a handle that is not a live port, or a
/// port closed meanwhile or closed by the program with plain `close` (noticed before the
/// wait sleeps); `EBUSY` while a `GetMultipleCompletionStatus` runs on the port; `EINVAL`
/// for a NULL or misaligned `removed` or `entries`, `count` 0, or `alertable` TRUE (there
/// are no APCs).
///
/// # Safety
///
/// An aligned, non-NULL `entries` must be valid for writes of `count` entries, and an
/// aligned, non-NULL `removed` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn GetQueuedCompletionStatusEx(
    port: HANDLE,
    entries: *mut OVERLAPPED_ENTRY,
    count: DWORD,
    removed: *mut DWORD,
    timeout_ms: DWORD,
    alertable: BOOL,
) -> BOOL {
    run(FALSE, || {
        let removed = checked(removed)?.ok_or(Errno::INVAL)?;
        // SAFETY: non-NULL and aligned, so valid for a write (the caller's contract).
        unsafe { removed.write(0) };
        if count == 0 || alertable != FALSE {
            return Err(Errno::INVAL);
        }
        // SAFETY: a non-NULL `entries` is valid for writes of `count` entries (the caller's
        // contract).
        let out = unsafe { array_mut(entries, count as usize) }?;
        let taken = dequeue(port, timeout_ms, |port, timeout| {
            port.fill_up_to(&mut *out, timeout, OVERLAPPED_ENTRY::from_record)
        })?;
        // SAFETY: `removed` is non-NULL and aligned, so valid for a write (the caller's
        // contract); `taken` is at most `count`, a `DWORD`.
        unsafe { removed.write(taken as DWORD) };
        Ok(TRUE)
    })
}

/// The non-exclusive dequeues (`GetQueuedCompletionStatus`, `GetQueuedCompletionStatusEx`):
/// `take` runs on the port named `handle`, waiting up to the timeout (the loan may block).
/// `EBADF` for no port; a signal (`EINTR`) is AIX's `EAGAIN`.
fn dequeue<T>(
    handle: HANDLE,
    timeout_ms: DWORD,
    take: impl FnOnce(&Port, Option<Duration>) -> io::Result<T>,
) -> Outcome<T> {
    let result =
        Port::with_handle(handle, |port| take(port, timeout(timeout_ms))).ok_or(Errno::BADF)?;
    result.map_err(|err| match Errno::from(err) {
        Errno(libc::EINTR) => Errno(libc::EAGAIN),
        errno => errno,
    })
}

/// Dequeues up to `nmax` records into `results` in one pass, waiting up to `timeout_ms`
/// until at least `nmin` have come (AIX's `GetMultipleCompletionStatus`).
///
/// Returns the number of records written, 0 to `nmax`. Fewer than `nmin` is not a failure:
/// `errno` is then `ETIMEDOUT`, or `EINTR` when a signal handler ran during the wait.
/// `nmin == 0` polls and ignores the timeout. `transfer_count` is capped at 2^31 - 1.
/// Returns -1 with `errno`: `EINVAL` for `nmax == 0`, `nmax > GMCS_NMAX`, `nmin > nmax`,
/// or NULL or misaligned `results`; `EBADF` for a handle that is not a live port, or a port
/// closed meanwhile or closed by the program with plain `close` (noticed before the wait
/// sleeps); `EBUSY` when another thread already waits on the port (this is an exclusive
/// wait: while it runs, other dequeues fail with `EBUSY`).
///
/// # Safety
///
/// An aligned, non-NULL `results` must be valid for writes of `nmax` entries.
#[no_mangle]
pub unsafe extern "C" fn GetMultipleCompletionStatus(
    port: HANDLE,
    nmin: DWORD,
    nmax: DWORD,
    timeout_ms: DWORD,
    results: *mut gmcs,
) -> c_int {
    run(-1, || {
        if nmax == 0 || nmax > GMCS_NMAX || nmin > nmax {
            return Err(Errno::INVAL);
        }
        // SAFETY: a non-NULL `results` is valid for writes of `nmax` entries (the caller's
        // contract).
        let out = unsafe { array_mut(results, nmax as usize) }?;
        let (min, wait) = (nmin as usize, if nmin == 0 { 0 } else { timeout_ms });
        // The loan may block: the wait runs on it.
        let drained = Port::with_handle(port, |port| {
            port.fill(out, min, timeout(wait), gmcs::from_record)
        })
        .ok_or(Errno::BADF)??;
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
    // The common case makes no call of its own, and the others go to functions of their
    // own, so the function saves two registers (for the barrier's first-time registration)
    // where inlining every case made it save six.
    match Port::post_to_handle_fast(port, Completion::new(key.into(), bytes, ovl as usize)) {
        FastPost::Posted => TRUE,
        FastPost::Wake(port) => wake_for_post(port),
        FastPost::Missed => post_slowly(port, bytes, key, ovl),
    }
}

/// `PostQueuedCompletionStatus` once its record is queued and a waiter is to be woken.
#[cold]
#[inline(never)]
fn wake_for_post(port: Port) -> BOOL {
    port.wake_for_post();
    TRUE
}

/// `PostQueuedCompletionStatus` in every case but the common one: the port not the one the
/// thread named last, or its lane full or overflowing, or a bad handle.
#[cold]
#[inline(never)]
fn post_slowly(port: HANDLE, bytes: DWORD, key: DWORD, ovl: LPOVERLAPPED) -> BOOL {
    run(FALSE, || {
        let record = Completion::new(key.into(), bytes, ovl as usize);
        let posted = Port::post_to_handle(port, record).ok_or_else(|| not_a_port(port))?;
        posted?;
        Ok(TRUE)
    })
}

/// Queues the `n` records of `records` on `port` in order, as `n` calls of
/// `PostQueuedCompletionStatus` would (an extension, `Port::post_many` in Rust), but with
/// their ring slots claimed together, each entry written straight into its slot, and one
/// look for a waiter to wake. Each record is queued as given (nothing is validated or
/// dereferenced), `errorno` included: a record with a nonzero `errorno` dequeues as a
/// failed I/O, as a `GetQueuedCompletionStatus` FALSE with that `errno`.
///
/// TRUE on success, `n == 0` included; FALSE with `errno`: `EBADF` for 0, a number that is
/// not an open descriptor, or a closed port; `EINVAL` for an open descriptor that is not a
/// port, or for NULL or misaligned `records` with `n > 0`. Never blocks.
///
/// # Safety
///
/// An aligned, non-NULL `records` must be valid for reads of `n` entries.
#[no_mangle]
pub unsafe extern "C" fn iocp_post_many(port: HANDLE, records: *const gmcs, n: DWORD) -> BOOL {
    run(FALSE, || {
        let records: &[gmcs] = match n {
            0 => &[],
            // SAFETY: a non-NULL `records` is valid for reads of `n` entries (the caller's
            // contract), which nothing writes while the call runs.
            _ => unsafe { array(records, n as usize) }?,
        };
        let posted = Port::with_handle(port, |port| port.post_many_with(records, gmcs::completion))
            .ok_or_else(|| not_a_port(port))?;
        posted?;
        Ok(TRUE)
    })
}

/// A post's error for a handle that names no open port: `EINVAL` for an open descriptor of
/// another kind, `EBADF` for 0, a number that is not open, or a closed port.
#[cold]
fn not_a_port(port: HANDLE) -> Errno {
    match port != 0 && handles::is_open(port) {
        true => Errno::INVAL,
        false => Errno::BADF,
    }
}

/// A C timeout in milliseconds as the engine's.
pub(crate) fn timeout(ms: DWORD) -> Option<Duration> {
    (ms != INFINITE).then(|| Duration::from_millis(ms.into()))
}
