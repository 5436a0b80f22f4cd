//! Making ports, running a test under each way of driving one, and reading their records.

use super::timing::PATIENCE;
use iocp::{Completion, Drive, Port};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Every way a port's socket readiness is collected; tests whose outcome depends on it run
/// once per drive (see [`each_drive`]).
pub const DRIVES: [Drive; 2] = [Drive::Inline, Drive::Thread];

/// A port driven by `drive`, with the default capacity and concurrency value.
pub fn port(drive: Drive) -> Port {
    Port::builder().drive(drive).build().unwrap()
}

/// Runs `test` once per drive mode; the drive is printed so a failure names it.
pub fn each_drive(test: impl Fn(Drive)) {
    for drive in DRIVES {
        eprintln!("--- drive {drive:?}");
        test(drive);
    }
}

/// A port whose concurrency value holds no thread back.
pub fn unlimited() -> Port {
    Port::builder().concurrency(usize::MAX).build().unwrap()
}

/// The `i`-th record of a test: every field derived from `i`, the address a multiple of 8
/// as a real block's is.
pub fn record(i: usize) -> Completion {
    Completion::new(i as u64, i as u32, i * 8)
}

/// The next record, which must come within [`PATIENCE`].
pub fn next(port: &Port) -> Completion {
    port.get(Some(PATIENCE))
        .unwrap_or_else(|err| panic!("no record within {PATIENCE:?}: {err}"))
}

/// Nothing is queued now, and nothing arrives within `wait`.
pub fn assert_no_record(port: &Port, wait: Duration) {
    match port.get(Some(wait)) {
        Err(err) => assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}"),
        Ok(record) => panic!("unexpected record {record:?}"),
    }
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
