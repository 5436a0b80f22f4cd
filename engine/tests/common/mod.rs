//! Helpers shared by the engine's integration tests (each test binary uses a part).
#![allow(dead_code)]

use iocp::{Overlapped, Port};
use std::fmt::Debug;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The errno of a call that must fail.
pub fn errno<T: Debug>(result: io::Result<T>) -> i32 {
    match result {
        Ok(value) => panic!("expected an error, got Ok({value:?})"),
        Err(error) => error
            .raw_os_error()
            .unwrap_or_else(|| panic!("expected an errno, got {error:?}")),
    }
}

/// The address a record carries for `overlapped`.
pub fn address(overlapped: &Overlapped) -> usize {
    overlapped as *const Overlapped as usize
}

/// Closes `port` and keeps its handle's number taken until the returned descriptor (a
/// duplicate of `/dev/null`) is dropped.
///
/// A closed port's number is free at once: a test running in parallel may get it for a
/// port of its own, and a request meant to name "a closed port" would then name that live
/// one. So the number is first pointed at `/dev/null` (`dup3` replaces the descriptor
/// behind it in one step, never leaving it free) and the port closed after: finding its
/// descriptor replaced, it leaves the number alone, as with any handle a program closes
/// behind the library's back, and drops it from the handle table all the same.
pub fn close_keeping_number(port: &Port) -> OwnedFd {
    let handle = port.handle();
    let null = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: dup3 takes no pointers; `handle` is the port's open descriptor, which the
    // library checks by identity before it closes it, so replacing it cannot make the
    // library close or use anyone else's descriptor.
    let rc = unsafe { libc::dup3(null.as_raw_fd(), handle, libc::O_CLOEXEC) };
    assert_eq!(rc, handle, "dup3: {}", io::Error::last_os_error());
    port.close().unwrap();
    assert!(
        Port::from_handle(handle).is_none(),
        "a closed port is still found"
    );
    // SAFETY: `handle` names the `/dev/null` duplicate made above, which nothing else owns:
    // the port left it open because it is not the port's descriptor.
    unsafe { OwnedFd::from_raw_fd(handle) }
}
