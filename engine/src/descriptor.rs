//! Descriptors the caller owns: the C ABI's `CreateIoCompletionPort(fd, ...)`, `ReadFile`,
//! `WriteFile` and `CancelIoEx` take plain descriptor numbers that the caller opens and
//! closes itself.
//!
//! The engine keeps a table from descriptor number to the socket or file it made for it
//! (over the *borrowed* descriptor: never closed, its blocking mode left alone), together
//! with the descriptor's identity (`st_dev`, `st_ino`). A caller may `close` a descriptor
//! and get the same number for something else; the table notices by comparing identities
//! where a request binds to a port — at association and at each overlapped request — and
//! drops the stale entry (cancelling whatever it still had queued), so a new descriptor
//! never inherits an old association. A descriptor reopened onto the *same* file has the
//! same identity and keeps its association.

use crate::error;
use crate::file::{File, FilePool};
use crate::net::Socket;
use crate::overlapped::Overlapped;
use crate::sys::{self, Identity, Kind};
use crate::Port;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

/// A descriptor the engine owns (and closes), or one it borrows from a C caller.
pub(crate) enum Descriptor {
    Owned(OwnedFd),
    Borrowed(RawFd),
}

impl Descriptor {
    pub(crate) fn raw(&self) -> RawFd {
        match self {
            Descriptor::Owned(fd) => fd.as_raw_fd(),
            Descriptor::Borrowed(fd) => *fd,
        }
    }
}

/// The caller's descriptors the engine has seen, by number.
static TABLE: LazyLock<RwLock<HashMap<RawFd, Arc<Entry>>>> = LazyLock::new(Default::default);

struct Entry {
    identity: Identity,
    object: Object,
}

enum Object {
    Socket(Socket),
    File(File),
}

/// How a `ReadFile`/`WriteFile` ended at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// Done, with this byte count, and no record will be posted.
    Done(u32),
    /// It will complete through the port (or the block's event, without one).
    Pending,
}

/// `CreateIoCompletionPort(fd, port, key, _)`: associates the caller's socket or regular file
/// `fd` with `port` under `key`. `EINVAL` for a closed descriptor or one that is neither,
/// `EALREADY` if it is associated already (`EBUSY` if it has requests in flight without a
/// port).
///
/// # Safety
///
/// `fd` must stay open while it is used through this module; closing it is allowed, but
/// requests still in flight on it then fail.
pub unsafe fn associate(fd: RawFd, port: &Port, key: u64) -> io::Result<()> {
    let identity = sys::identify(fd).map_err(|_| error::invalid())?;
    // SAFETY: the caller keeps `fd` open while it is used.
    let entry = unsafe { entry(fd, identity)? };
    match &entry.object {
        Object::Socket(socket) => socket.associate(port, key),
        Object::File(file) => file.associate(port, key),
    }
}

/// `ReadFile(fd, buf, len, &done, overlapped)` with an overlapped block: a socket is tried at
/// once, a regular file always goes to the file pool (its offset from the block). Without
/// a port the completion sets the block's event.
///
/// # Safety
///
/// As [`Socket::read_overlapped`]: `buf` and `overlapped` stay valid until the request
/// completes; `fd` as for [`associate`].
pub unsafe fn read(
    fd: RawFd,
    buf: *mut u8,
    len: usize,
    overlapped: *const Overlapped,
) -> io::Result<Started> {
    // SAFETY: forwarded from the caller.
    unsafe { start(fd, buf, len, overlapped, false) }
}

/// `WriteFile` with an overlapped block; see [`read`].
///
/// # Safety
///
/// As [`read`], with `buf` valid for reads.
pub unsafe fn write(
    fd: RawFd,
    buf: *const u8,
    len: usize,
    overlapped: *const Overlapped,
) -> io::Result<Started> {
    // SAFETY: forwarded from the caller; a write only reads `buf`.
    unsafe { start(fd, buf.cast_mut(), len, overlapped, true) }
}

/// Starts an overlapped read or write on `fd`'s socket or file.
///
/// # Safety
///
/// As [`read`] (for a write, `buf` need only be valid for reads).
unsafe fn start(
    fd: RawFd,
    buf: *mut u8,
    len: usize,
    overlapped: *const Overlapped,
    write: bool,
) -> io::Result<Started> {
    // SAFETY: forwarded from the caller.
    let entry = unsafe { lookup(fd)? };
    // SAFETY (every arm): the caller keeps `buf` and `overlapped` valid until completion.
    match (&entry.object, write) {
        (Object::Socket(socket), false) => {
            // SAFETY: see above.
            let done = unsafe { socket.read_overlapped(buf, len, overlapped) }?;
            Ok(done.map_or(Started::Pending, Started::Done))
        }
        (Object::Socket(socket), true) => {
            // SAFETY: see above.
            let done = unsafe { socket.write_overlapped(buf, len, overlapped) }?;
            Ok(done.map_or(Started::Pending, Started::Done))
        }
        (Object::File(file), false) => {
            // SAFETY: see above.
            unsafe { file.read_overlapped(buf, len, overlapped) }?;
            Ok(Started::Pending)
        }
        (Object::File(file), true) => {
            // SAFETY: see above.
            unsafe { file.write_overlapped(buf, len, overlapped) }?;
            Ok(Started::Pending)
        }
    }
}

/// `ReadFile` without an overlapped block: a blocking read on the calling thread (from the
/// file position, for a file). `EINVAL` for a bad descriptor.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes.
pub unsafe fn read_now(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    sys::identify(fd).map_err(|_| error::invalid())?;
    // SAFETY: forwarded from the caller.
    unsafe { sys::file::read(fd, buf, len.min(crate::MAX_TRANSFER)) }
}

/// `WriteFile` without an overlapped block: a blocking write (no `SIGPIPE` on sockets).
///
/// # Safety
///
/// `buf` must be valid for reads of `len` bytes.
pub unsafe fn write_now(fd: RawFd, buf: *const u8, len: usize) -> io::Result<usize> {
    let identity = sys::identify(fd).map_err(|_| error::invalid())?;
    let len = len.min(crate::MAX_TRANSFER);
    if identity.kind == Kind::Socket {
        // SAFETY: forwarded from the caller.
        unsafe { sys::socket::send_blocking(fd, buf, len) }
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { sys::file::write(fd, buf, len) }
    }
}

/// `CancelIoEx(fd, overlapped)`: cancels `overlapped`'s request on `fd`, or all of them for
/// `None`; each still completes once, with `ECANCELED`. `ENOENT` when nothing was pending.
pub fn cancel(fd: RawFd, overlapped: Option<*const Overlapped>) -> io::Result<usize> {
    let table = TABLE.read().unwrap_or_else(PoisonError::into_inner);
    let entry = table
        .get(&fd)
        .cloned()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
    drop(table);
    match (&entry.object, overlapped) {
        (Object::Socket(socket), Some(o)) => socket.cancel_overlapped(o).map(|()| 1),
        (Object::Socket(socket), None) => socket.cancel_all(),
        (Object::File(file), Some(o)) => file.cancel_overlapped(o).map(|()| 1),
        (Object::File(file), None) => file.cancel_all(),
    }
}

/// The entry for `fd`, checked against its identity now.
///
/// # Safety
///
/// As for [`associate`].
unsafe fn lookup(fd: RawFd) -> io::Result<Arc<Entry>> {
    let identity = sys::identify(fd).map_err(|_| error::invalid())?;
    // SAFETY: forwarded from the caller.
    unsafe { entry(fd, identity) }
}

/// The entry for `fd` if its identity still matches, else a fresh one (replacing a stale
/// entry, whose queued requests are cancelled as it drops).
///
/// # Safety
///
/// As for [`associate`].
unsafe fn entry(fd: RawFd, identity: Identity) -> io::Result<Arc<Entry>> {
    {
        let table = TABLE.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.get(&fd).filter(|e| e.identity == identity) {
            return Ok(Arc::clone(entry));
        }
    }
    let object = match identity.kind {
        // SAFETY: the caller keeps `fd` open while it is used.
        Kind::Socket => Object::Socket(unsafe { Socket::borrowed(fd) }),
        // SAFETY: as above.
        Kind::RegularFile => Object::File(unsafe { FilePool::global()?.borrowed(fd) }),
        Kind::Other => return Err(error::invalid()),
    };
    let fresh = Arc::new(Entry { identity, object });
    let mut table = TABLE.write().unwrap_or_else(PoisonError::into_inner);
    // Another thread may have made the entry meanwhile: keep the first one.
    let entry = table
        .entry(fd)
        .and_modify(|e| {
            if e.identity != identity {
                *e = Arc::clone(&fresh);
            }
        })
        .or_insert(fresh);
    Ok(Arc::clone(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn a_reused_descriptor_number_does_not_inherit_the_old_association() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let fd = ours.into_raw_fd();
        let (first, second) = (Port::new().unwrap(), Port::new().unwrap());
        // SAFETY: `fd` stays open until the explicit close below, and is not used after.
        unsafe { associate(fd, &first, 1) }.unwrap();
        // SAFETY: as above.
        let again = unsafe { associate(fd, &second, 2) }.unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EALREADY));

        let mut buf = [0u8; 8];
        let block = Overlapped::new();
        // SAFETY: `buf` and `block` outlive the request, which completes below.
        let started = unsafe { read(fd, buf.as_mut_ptr(), buf.len(), &block) }.unwrap();
        assert_eq!(started, Started::Pending);
        theirs.write_all(b"ping").unwrap();
        let record = first.get(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            (record.key(), record.bytes(), record.overlapped()),
            (1, 4, &block as *const _ as usize)
        );
        assert_eq!(&buf[..4], b"ping");

        // The caller closes the descriptor and the number comes back for another socket
        // (dup2 closes the old one and reuses the number, as a later socket() might).
        let (reused, _peer) = UnixStream::pair().unwrap();
        // SAFETY: both descriptors are ours; nothing of ours is in flight on `fd`.
        assert_eq!(unsafe { libc::dup2(reused.as_raw_fd(), fd) }, fd);
        // SAFETY: `fd` stays open until the close below.
        unsafe { associate(fd, &second, 2) }.expect("the stale association is gone");
        // SAFETY: `fd` is ours.
        unsafe { libc::close(fd) };
    }
}
