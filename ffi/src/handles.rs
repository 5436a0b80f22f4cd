//! The library's handles as C sees them: `CloseHandle`, and telling them from the caller's
//! descriptors.
//!
//! The engine's handle table keeps every object C creates alive (`into_handle`) until C
//! closes it, and owns every question of staleness: a handle the program closed with plain
//! `close` is noticed by the engine's `check_handle` (or when the number comes back as a
//! new handle), which closes the object and disowns the number so that it is never closed
//! again. This layer keeps no table and no state of its own.

use crate::boundary::{Errno, Outcome};
use crate::types::HANDLE;
use iocp::{Event, Port, ProviderSocket};

/// Whether `fd` is an open descriptor (of any kind).
pub(crate) fn is_open(fd: HANDLE) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; a bad number fails with EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

/// `CloseHandle`: closes a port, an event or a provider handle. `EBADF` for anything else,
/// for a second close, and for a handle whose descriptor the program closed itself (the
/// object is closed then too, but its number left alone).
///
/// Each kind is closed through a reference of its own (`from_handle`) rather than lent
/// under the table's pin (`with_handle`): the table's entry, and with it the object, can
/// then go within the call (see the engine's `handle::let_go`), where a pin held across
/// the close would keep them to a later collection.
pub(crate) fn close(handle: HANDLE) -> Outcome<()> {
    Port::from_handle(handle)
        .map(|port| port.check_handle().and_then(|()| port.close()))
        .or_else(|| {
            Event::from_handle(handle)
                .map(|event| event.check_handle().and_then(|()| event.close()))
        })
        .or_else(|| close_provider_handle(handle))
        .ok_or(Errno::BADF)??;
    Ok(())
}

/// `WPUCloseSocketHandle`: as [`close`], for provider handles only (`EBADF` for others,
/// which stay open).
pub(crate) fn close_provider(handle: HANDLE) -> Outcome<()> {
    close_provider_handle(handle).ok_or(Errno::BADF)??;
    Ok(())
}

fn close_provider_handle(handle: HANDLE) -> Option<std::io::Result<()>> {
    ProviderSocket::from_handle(handle)
        .map(|provider| provider.check_handle().and_then(|()| provider.close()))
}

/// Whether `fd` is one of the library's handle descriptors (a port, an event or a provider
/// handle), as opposed to one of the caller's descriptors, which the library may read or
/// write. A number whose handle the program closed itself (and perhaps reused) is the
/// program's: the check (an `fstat`) notices, and the stale object is closed.
pub(crate) fn is_library_handle(fd: HANDLE) -> bool {
    Port::with_handle(fd, |port| port.check_handle().is_ok())
        .or_else(|| Event::with_handle(fd, |event| event.check_handle().is_ok()))
        .or_else(|| ProviderSocket::with_handle(fd, |provider| provider.check_handle().is_ok()))
        .unwrap_or(false)
}

/// Closes a port, an event or a provider handle made through the C API: TRUE, or FALSE
/// with `EBADF` for anything else (the caller's own descriptors are never closed here),
/// for a second close, and for a handle the program already closed with plain `close`.
///
/// Closing a port wakes every thread waiting on it, which fails with `EBADF`; records still
/// queued are discarded. Requests in flight on descriptors associated with it complete
/// into nothing. A closed event is no longer set by completions naming it.
#[no_mangle]
#[allow(non_snake_case)]
pub extern "C" fn CloseHandle(handle: HANDLE) -> crate::types::BOOL {
    crate::boundary::run(crate::types::FALSE, || {
        close(handle)?;
        Ok(crate::types::TRUE)
    })
}
