//! Descriptors that name library objects.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

/// A fresh descriptor, owned by the library, whose number names an object (an event, a
/// port). An unbound Unix datagram socket: one descriptor, its own inode, close-on-exec,
/// on every Unix.
pub(crate) fn handle_fd() -> io::Result<OwnedFd> {
    if let Some(errno) = super::fault::take(super::fault::Call::HandleFd, -1) {
        return Err(io::Error::from_raw_os_error(errno));
    }
    let fd = OwnedFd::from(UnixDatagram::unbound()?);
    if fd.as_raw_fd() == 0 {
        // Handle 0 reads as "none" in an OVERLAPPED; `try_clone` duplicates to 3 or above.
        return fd.try_clone();
    }
    Ok(fd)
}
