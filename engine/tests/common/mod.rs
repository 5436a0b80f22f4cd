//! Helpers shared by the engine's integration tests; each test binary uses a part. A test
//! directory's `main.rs` takes them in with `#[path = "../common/mod.rs"] mod common;`.
//!
//! - [`timing`]: how long tests wait before they declare something lost;
//! - [`rng`]: the reproducible generator and byte patterns;
//! - [`files`]: temporary directories and files;
//! - [`heap`]: a global allocator that counts live bytes;
//! - [`ports`]: making ports, each drive mode, reading records;
//! - [`process`]: a forked child that runs a closure;
//! - [`sockets`]: sockets for the tests' peers;
//! - [`threads`]: threads that wait while the test acts.
#![allow(dead_code)]

pub mod files;
pub mod heap;
pub mod ports;
pub mod process;
pub mod rng;
pub mod sockets;
pub mod threads;
pub mod timing;

use iocp::{Overlapped, Submitted, Ticket};
use std::fmt::Debug;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The ticket of a request that must be pending.
pub fn pending(submitted: io::Result<Submitted>) -> Ticket {
    match submitted.expect("submitted") {
        Submitted::Pending(ticket) => ticket,
        Submitted::Done(done) => panic!("expected a pending request, got {done:?}"),
    }
}

/// The errno of a call that must fail.
pub fn errno<T: Debug>(result: io::Result<T>) -> i32 {
    match result {
        Ok(value) => panic!("expected an error, got Ok({value:?})"),
        Err(error) => error
            .raw_os_error()
            .unwrap_or_else(|| panic!("expected an errno, got {error:?}")),
    }
}

/// Holds the binary's handle numbers still: handles are descriptor numbers, reused as soon
/// as a handle's object dies. A test that looks a number up after its object is gone, or
/// checks which handle names what, holds this lock, and so does every test of its binary
/// that makes handles, so that no other test takes a number over in the middle.
pub fn handle_numbers() -> MutexGuard<'static, ()> {
    static NUMBERS: Mutex<()> = Mutex::new(());
    NUMBERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The address a record carries for `overlapped`.
pub fn address(overlapped: &Overlapped) -> usize {
    overlapped as *const Overlapped as usize
}

/// Which of `blocks` `record` completes; panics if none.
pub fn block_of(blocks: &[Overlapped], record: &iocp::Completion) -> usize {
    blocks
        .iter()
        .position(|block| address(block) == record.overlapped())
        .unwrap_or_else(|| panic!("record names no block: {record:?}"))
}
