//! Helpers shared by the engine's integration tests (each test binary uses a part).
#![allow(dead_code)]

use iocp::Overlapped;
use std::fmt::Debug;
use std::io;

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
