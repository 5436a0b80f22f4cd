//! Descriptors the caller owns: the C ABI's `CreateIoCompletionPort(fd, ...)`, `ReadFile`,
//! `WriteFile` and `CancelIoEx` take plain descriptor numbers that the caller opens and
//! closes itself.
//!
//! The engine never runs a request on the caller's number. The first time it meets a
//! descriptor (at association or at an overlapped request) it takes a duplicate of it
//! (close-on-exec) and makes its socket or file over that; the table maps the caller's
//! number to it. Requests read and write the open file the caller had when it made them,
//! whatever the number names later.
//!
//! The caller's `close` is noticed in two places: at the next association or request under
//! that number (which no longer names the same open file: `kcmp`, see `sys::dup`), and by a
//! watcher thread that looks at every entry each [`WATCH_PERIOD`]. Either way the entry is
//! dropped: its queued requests complete once, with `ECANCELED`, and the engine closes its
//! duplicate, so that a socket closes (its peer sees it) unless the program holds it under
//! another number. A file request already running in the kernel finishes on the file it
//! was made for, as POSIX has it. So a request ends within [`CLOSE_NOTICED`] of the close.

use crate::error;
use crate::file::{File, FilePool};
use crate::net::Socket;
use crate::overlapped::Overlapped;
use crate::sys::{self, dup, Kind};
use crate::Port;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};
use std::thread::{self, Thread};
use std::time::Duration;

/// How often the watcher looks for numbers the caller closed.
pub const WATCH_PERIOD: Duration = Duration::from_millis(50);

/// The documented bound: a request in flight on a descriptor the caller closes completes
/// (with `ECANCELED`, or with its result if it was running) at most this long after the
/// `close`. The watcher's period with room for its scan and a busy machine.
pub const CLOSE_NOTICED: Duration = Duration::from_millis(100);

/// The caller's descriptors the engine has seen, by number.
static TABLE: LazyLock<RwLock<HashMap<RawFd, Arc<Entry>>>> = LazyLock::new(Default::default);

/// The watcher thread and the process it runs in (a `fork` child starts its own).
static WATCHER: Mutex<Option<(u32, Thread)>> = Mutex::new(None);

/// The engine's socket or file over its duplicate of a caller's descriptor.
enum Entry {
    Socket(Socket),
    File(File),
}

impl Entry {
    /// An entry over a fresh duplicate of `fd`: `EINVAL` for a closed descriptor or one
    /// that is neither a socket nor a regular file, `EMFILE` without a number for the
    /// duplicate.
    fn new(fd: RawFd) -> io::Result<Entry> {
        let kind = sys::identify(fd).map_err(|_| error::invalid())?.kind;
        if kind == Kind::Other {
            return Err(error::invalid());
        }
        crate::sys::fault::allocation()?;
        let ours = dup::duplicate(fd)?;
        Ok(match kind {
            Kind::Socket => Entry::Socket(Socket::duplicate(ours)),
            _ => Entry::File(FilePool::global()?.open(ours)?),
        })
    }

    /// Whether the caller's `fd` still names the open file this entry was made for.
    fn is_current(&self, fd: RawFd) -> bool {
        let same = match self {
            Entry::Socket(socket) => dup::same_open_file(fd, socket.as_fd()),
            Entry::File(file) => dup::same_open_file(fd, file.as_fd()),
        };
        matches!(same, Ok(true))
    }

    /// Ends the entry's requests (`ECANCELED` for those still queued) and lets its
    /// duplicate go: a socket's once the calls holding the entry return, a file's once its
    /// running requests are done too.
    fn close(&self) {
        match self {
            // Closed already is the only failure, and then there is nothing left to do.
            // The caller's socket may live on under another number: no shutdown.
            Entry::Socket(socket) => drop(socket.retire()),
            // Nothing queued is the only failure.
            Entry::File(file) => drop(file.cancel_all()),
        }
    }
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
/// port), `EMFILE` when the process has no descriptor left for the engine's duplicate.
///
/// The caller may close `fd` at any time: the association ends, and the requests in flight
/// on it complete with `ECANCELED` within [`CLOSE_NOTICED`].
pub fn associate(fd: RawFd, port: &Port, key: u64) -> io::Result<()> {
    match &*entry(fd)? {
        Entry::Socket(socket) => socket.associate(port, key),
        Entry::File(file) => file.associate(port, key),
    }
}

/// `ReadFile(fd, buf, len, &done, overlapped)` with an overlapped block: a socket is tried at
/// once, a regular file always goes to the file pool (its offset from the block). Without
/// a port the completion sets the block's event.
///
/// # Safety
///
/// As [`Socket::read_overlapped`]: `buf` and `overlapped` stay valid until the request
/// completes (closing `fd` completes it within [`CLOSE_NOTICED`]).
pub unsafe fn read(
    fd: RawFd,
    buf: *mut u8,
    len: usize,
    overlapped: *const Overlapped,
) -> io::Result<Started> {
    // SAFETY: the caller keeps `buf` writable for `len` bytes and `overlapped` live until
    // the request completes, which is what `start` asks for a read.
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
    // SAFETY: the caller keeps `buf` readable for `len` bytes and `overlapped` live until
    // the request completes; a write only reads `buf`, so that is all `start` needs.
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
    let entry = entry(fd)?;
    // Sockets and files take the same calls and answer alike.
    // SAFETY: the caller keeps `buf` writable (a read) or readable (a write) for `len` bytes
    // and `overlapped` live until the request completes, which is what each call asks.
    let done = unsafe {
        match (&*entry, write) {
            (Entry::Socket(socket), false) => socket.read_overlapped(buf, len, overlapped),
            (Entry::Socket(socket), true) => socket.write_overlapped(buf, len, overlapped),
            (Entry::File(file), false) => file.read_overlapped(buf, len, overlapped),
            (Entry::File(file), true) => file.write_overlapped(buf, len, overlapped),
        }
    }?;
    Ok(done.map_or(Started::Pending, Started::Done))
}

/// `ReadFile` without an overlapped block: a blocking read on the calling thread (from the
/// file position, for a file). `EINVAL` for a bad descriptor.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes.
pub unsafe fn read_now(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    sys::identify(fd).map_err(|_| error::invalid())?;
    // SAFETY: the caller guarantees `buf` writable for `len` bytes, and fewer are asked.
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
        // SAFETY: the caller guarantees `buf` readable for its length, at least `len`.
        unsafe { sys::socket::send_blocking(fd, buf, len) }
    } else {
        // SAFETY: the caller guarantees `buf` readable for its length, at least `len`.
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
    match (&*entry, overlapped) {
        (Entry::Socket(socket), Some(o)) => socket.cancel_overlapped(o).map(|()| 1),
        (Entry::Socket(socket), None) => socket.cancel_all(),
        (Entry::File(file), Some(o)) => file.cancel_overlapped(o).map(|()| 1),
        (Entry::File(file), None) => file.cancel_all(),
    }
}

/// The entry for `fd` if it still names the open file the entry was made for, else a fresh
/// one (replacing a stale entry, whose requests end).
fn entry(fd: RawFd) -> io::Result<Arc<Entry>> {
    {
        let table = TABLE.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.get(&fd).filter(|e| e.is_current(fd)) {
            return Ok(Arc::clone(entry));
        }
    }
    let fresh = Arc::new(Entry::new(fd)?);
    let mut table = TABLE.write().unwrap_or_else(PoisonError::into_inner);
    // Another thread may have made a current entry meanwhile: keep the first one.
    if let Some(entry) = table.get(&fd).filter(|e| e.is_current(fd)) {
        return Ok(Arc::clone(entry));
    }
    let stale = table.insert(fd, Arc::clone(&fresh));
    drop(table);
    if let Some(stale) = stale {
        stale.close();
    }
    // After the insert: a watcher that found the table empty and parked is woken to see it.
    if let Err(err) = watch() {
        forget(fd, &fresh);
        return Err(err);
    }
    Ok(fresh)
}

/// Drops `entry`, found stale under `fd`, unless the table has moved on already.
fn forget(fd: RawFd, entry: &Arc<Entry>) {
    let mut table = TABLE.write().unwrap_or_else(PoisonError::into_inner);
    if table.get(&fd).is_some_and(|e| Arc::ptr_eq(e, entry)) {
        table.remove(&fd);
    }
    drop(table);
    entry.close();
}

/// Starts the watcher in this process unless it runs, and wakes it to see a new entry.
fn watch() -> io::Result<()> {
    let mut watcher = WATCHER.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    match &*watcher {
        Some((owner, thread)) if *owner == pid => thread.unpark(),
        _ => {
            let handle = thread::Builder::new()
                .name("iocp-descriptors".into())
                .spawn(watcher_loop)?;
            *watcher = Some((pid, handle.thread().clone()));
        }
    }
    Ok(())
}

/// The watcher: every [`WATCH_PERIOD`], drops the entries whose number the caller closed or
/// reused; sleeps while the table is empty.
fn watcher_loop() {
    loop {
        let entries: Vec<(RawFd, Arc<Entry>)> = TABLE
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(fd, entry)| (*fd, Arc::clone(entry)))
            .collect();
        if entries.is_empty() {
            // An entry inserted after the look above is followed by an unpark (`watch`),
            // which makes this return at once if it comes first.
            thread::park();
            continue;
        }
        for (fd, entry) in &entries {
            if !entry.is_current(*fd) {
                forget(*fd, entry);
            }
        }
        drop(entries);
        thread::sleep(WATCH_PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn a_reused_descriptor_number_does_not_inherit_the_old_association() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let fd = ours.into_raw_fd();
        let (first, second) = (Port::new().unwrap(), Port::new().unwrap());
        associate(fd, &first, 1).unwrap();
        let again = associate(fd, &second, 2).unwrap_err();
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
        associate(fd, &second, 2).expect("the stale association is gone");
        // SAFETY: `fd` is ours.
        unsafe { libc::close(fd) };
    }
}
