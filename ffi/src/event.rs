//! Events, what an `OVERLAPPED`'s `hEvent` names: `iocp_event_create`, `iocp_event_set`,
//! `iocp_event_reset`, `iocp_event_wait` (`CloseHandle` closes them).

use crate::boundary::{run, Errno};
use crate::port::timeout;
use crate::types::{BOOL, DWORD, FALSE, HANDLE, TRUE};
use iocp::Event;

/// Makes an event: manual-reset (stays signalled until reset, releases every waiter) or
/// auto-reset (releases one waiter and resets), signalled at once or not. Returns its
/// handle, a descriptor the library owns, to put in `hEvent`; 0 with `errno` (`EMFILE`,
/// ...) on failure. Close it with `CloseHandle`.
#[no_mangle]
pub extern "C" fn iocp_event_create(manual_reset: BOOL, initial: BOOL) -> HANDLE {
    run(0, || {
        let event = Event::new(manual_reset != FALSE, initial != FALSE)?;
        Ok(event.into_handle())
    })
}

/// Signals the event. FALSE with `EBADF` for a handle that is not a live event.
#[no_mangle]
pub extern "C" fn iocp_event_set(event_handle: HANDLE) -> BOOL {
    run(FALSE, || {
        Event::with_handle(event_handle, Event::set).ok_or(Errno::BADF)?;
        Ok(TRUE)
    })
}

/// Clears the event's signal. FALSE with `EBADF` for a handle that is not a live event.
#[no_mangle]
pub extern "C" fn iocp_event_reset(event_handle: HANDLE) -> BOOL {
    run(FALSE, || {
        Event::with_handle(event_handle, Event::reset).ok_or(Errno::BADF)?;
        Ok(TRUE)
    })
}

/// Waits up to `timeout_ms` (`INFINITE`: forever) for the event to be signalled, taking
/// the signal of an auto-reset event. TRUE when signalled; FALSE with `ETIMEDOUT` when
/// the time passed, `EBADF` for a handle that is not a live event (or that the program
/// closed with plain `close`). Signal handlers neither end nor stretch the wait.
#[no_mangle]
pub extern "C" fn iocp_event_wait(event_handle: HANDLE, timeout_ms: DWORD) -> BOOL {
    run(FALSE, || {
        // A reference of its own: the wait may sleep.
        let event = Event::from_handle(event_handle).ok_or(Errno::BADF)?;
        // About to sleep: the moment to notice a plain `close` of the handle.
        event.check_handle()?;
        event.wait(timeout(timeout_ms))?;
        Ok(TRUE)
    })
}
