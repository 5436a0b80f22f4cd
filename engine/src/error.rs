//! The errors the engine reports, as `io::Error`s carrying the `errno` the C ABI returns.

use std::io;

/// The port (or handle) is closed or is not one.
pub(crate) fn closed() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// Another thread holds the port's exclusive dequeue.
pub(crate) fn busy() -> io::Error {
    io::Error::from_raw_os_error(libc::EBUSY)
}

/// The wait's deadline passed.
pub(crate) fn timed_out() -> io::Error {
    io::Error::from_raw_os_error(libc::ETIMEDOUT)
}

/// A signal handler interrupted the wait.
pub(crate) fn interrupted() -> io::Error {
    io::Error::from_raw_os_error(libc::EINTR)
}

/// An argument is out of range.
pub(crate) fn invalid() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// The operation has not completed.
#[cfg(not(loom))]
pub(crate) fn in_progress() -> io::Error {
    io::Error::from_raw_os_error(libc::EINPROGRESS)
}

/// A request's result as a record's byte count and `errno` (`EIO` for an error that has
/// none).
#[cfg(not(loom))]
pub(crate) fn to_record(result: &io::Result<usize>) -> (u32, u32) {
    match result {
        Ok(n) => ((*n).min(crate::MAX_TRANSFER) as u32, 0),
        Err(err) => (0, err.raw_os_error().unwrap_or(libc::EIO) as u32),
    }
}

/// The request was cancelled.
#[cfg(not(loom))]
pub(crate) fn canceled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}
