//! The completion record.

use std::io;

/// A fresh ticket for an owned-buffer request: unique in the process, so a record can only
/// ever be finished by the socket or file that made it.
#[cfg(not(loom))]
pub(crate) fn next_ticket() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Relaxed: tickets only need to be distinct.
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One completion record: what `GetQueuedCompletionStatus` returns and what a
/// `struct gmcs` entry holds.
///
/// `overlapped` is an opaque address: for I/O it is the address of the request's
/// [`Overlapped`](crate::Overlapped), for a posted record whatever the poster chose.
/// `error` is 0 for success or the failed operation's `errno`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Completion {
    key: u64,
    overlapped: usize,
    bytes: u32,
    error: u32,
}

impl Completion {
    /// A successful record.
    pub const fn new(key: u64, bytes: u32, overlapped: usize) -> Completion {
        Completion {
            key,
            overlapped,
            bytes,
            error: 0,
        }
    }

    /// The same record, marked as a failed operation with `errno` (0 means success).
    pub const fn with_error(self, errno: u32) -> Completion {
        Completion {
            error: errno,
            ..self
        }
    }

    /// The completion key the handle was associated (or the record posted) with.
    pub const fn key(&self) -> u64 {
        self.key
    }

    /// Bytes transferred.
    pub const fn bytes(&self) -> u32 {
        self.bytes
    }

    /// The overlapped address the record carries.
    pub const fn overlapped(&self) -> usize {
        self.overlapped
    }

    /// The operation's `errno`, 0 for success.
    pub const fn error(&self) -> u32 {
        self.error
    }

    /// The byte count, or the operation's error.
    pub fn result(&self) -> io::Result<u32> {
        match self.error {
            0 => Ok(self.bytes),
            errno => Err(io::Error::from_raw_os_error(errno as i32)),
        }
    }
}
