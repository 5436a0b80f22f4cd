//! The objects C created, kept alive until C closes them.
//!
//! The engine's registries map a handle to its object through *weak* references, so an
//! object lives only while someone holds it. For C, that someone is this table: a port, an
//! event or a provider handle made through the C API stays here until `CloseHandle` (or
//! `WPUCloseSocketHandle`). Ports and provider handles are found through the engine's
//! registries (a port's is the hot path); events through this table, which also tells the
//! library's own handles from the caller's descriptors.
//!
//! # Handles closed behind the library's back
//!
//! A handle is a descriptor the library owns. An AIX program closes a port with plain
//! `close(port)`, and the number may then come back from the program's next `open` or
//! `socket`, or as the library's next handle. Such an entry is *stale*: the object must
//! be closed without ever closing the number again. A port does this itself
//! ([`Port::check_handle`]); the engine's events and provider sockets have no such call,
//! so a stale one is moved to [`ORPHANS`], which keeps it (and so its descriptor slot, which
//! it would close on drop) alive for the rest of the process: a few bytes per misuse,
//! instead of closing a descriptor the program now owns. Each entry remembers its
//! descriptor's identity (`st_dev`, `st_ino`) to recognise staleness.

use crate::boundary::{Errno, Outcome};
use crate::types::HANDLE;
use iocp::{Event, Port, ProviderSocket};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError, RwLock};

/// A library object made through the C API.
pub(crate) enum Object {
    Port(Port),
    Event(Event),
    Provider(ProviderSocket),
}

struct Entry {
    object: Object,
    /// The handle descriptor's identity when the object was made.
    identity: Option<Identity>,
}

type Identity = (u64, u64);

static TABLE: LazyLock<RwLock<HashMap<HANDLE, Entry>>> = LazyLock::new(Default::default);

/// Stale events and provider handles, kept so that dropping them never closes a number
/// the program owns now.
static ORPHANS: Mutex<Vec<Object>> = Mutex::new(Vec::new());

impl Object {
    fn handle(&self) -> HANDLE {
        match self {
            Object::Port(port) => port.handle(),
            Object::Event(event) => event.handle(),
            Object::Provider(provider) => provider.handle(),
        }
    }
}

impl Entry {
    /// Whether the handle descriptor is still the one the object was made with. For a port
    /// this asks the engine, which closes a stale port and disowns its number.
    fn is_intact(&self, handle: HANDLE) -> bool {
        match &self.object {
            Object::Port(port) => port.check_handle().is_ok(),
            _ => self.identity.is_some() && identify(handle) == self.identity,
        }
    }

    /// Disposes of a stale entry without closing its number.
    fn retire(self) {
        match self.object {
            Object::Port(port) => {
                // A failed check has closed the port and disowned the number (and says so
                // again if asked twice): dropping it is then safe.
                if port.check_handle().is_ok() {
                    orphan(Object::Port(port));
                }
            }
            Object::Provider(provider) => {
                // Closed already is fine: either way completions into it now fail.
                let _ = provider.close();
                orphan(Object::Provider(provider));
            }
            object @ Object::Event(_) => orphan(object),
        }
    }
}

fn orphan(object: Object) {
    ORPHANS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(object);
}

/// The descriptor's identity, if it is open.
fn identify(fd: HANDLE) -> Option<Identity> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable and large enough for a `stat`; fstat checks `fd` itself.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // the widths vary by OS
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// Whether `fd` is an open descriptor (of any kind).
pub(crate) fn is_open(fd: HANDLE) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; a bad number fails with EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}

/// Keeps a new object until it is closed; returns its handle.
pub(crate) fn insert(object: Object) -> HANDLE {
    let handle = object.handle();
    let entry = Entry {
        identity: identify(handle),
        object,
    };
    let stale = write().insert(handle, entry);
    // The number was free for the new object, so an entry under it had lost its
    // descriptor to a plain `close`: dispose of it (outside the lock: dropping a port takes
    // the engine's registry lock).
    if let Some(stale) = stale {
        stale.retire();
    }
    handle
}

/// `CloseHandle`: closes a port, an event or a provider handle made through the C API.
/// `EBADF` for anything else, for a second close, and for a handle whose descriptor the
/// program closed itself (the object is closed then too, but its number left alone).
pub(crate) fn close(handle: HANDLE) -> Outcome<()> {
    let entry = take(handle, |_| true)?;
    close_entry(handle, entry)
}

/// `WPUCloseSocketHandle`: as [`close`], for provider handles only (`EBADF` for others,
/// which stay open).
pub(crate) fn close_provider(handle: HANDLE) -> Outcome<()> {
    let entry = take(handle, |object| matches!(object, Object::Provider(_)))?;
    close_entry(handle, entry)
}

fn take(handle: HANDLE, wanted: impl Fn(&Object) -> bool) -> Outcome<Entry> {
    let mut table = write();
    match table.get(&handle) {
        Some(entry) if wanted(&entry.object) => Ok(table.remove(&handle).expect("present")),
        _ => Err(Errno::BADF),
    }
}

fn close_entry(handle: HANDLE, entry: Entry) -> Outcome<()> {
    if !entry.is_intact(handle) {
        entry.retire();
        return Err(Errno::BADF);
    }
    match entry.object {
        Object::Port(port) => port.close()?,
        Object::Event(event) => drop(event),
        Object::Provider(provider) => provider.close()?,
    }
    Ok(())
}

/// The event made through the C API under `handle` (not an orphan the engine's registry
/// may still know by that number); `EBADF` for anything else.
pub(crate) fn event(handle: HANDLE) -> Outcome<Event> {
    match read().get(&handle).map(|entry| &entry.object) {
        Some(Object::Event(event)) => Ok(event.clone()),
        _ => Err(Errno::BADF),
    }
}

/// Whether `fd` is one of the library's handle descriptors (a port, an event or a provider
/// handle), as opposed to one of the caller's descriptors, which the library may read or
/// write. A port's descriptor outlives `CloseHandle` while requests or associations still
/// refer to the port, so ports are asked of the engine's registry; events and provider
/// handles release theirs at `CloseHandle`, so this table knows them. A number whose
/// handle the program closed itself (and perhaps reused) is the program's.
pub(crate) fn is_library_handle(fd: HANDLE) -> bool {
    if let Some(port) = Port::from_handle(fd) {
        return port.check_handle().is_ok();
    }
    read().contains_key(&fd) && check(fd).is_ok()
}

/// Checks that `handle`'s entry, if it has one, still owns its descriptor: `EBADF` (and the
/// entry disposed of) if the program closed it. Costs an `fstat`; called where a call is
/// about to sleep on the object.
pub(crate) fn check(handle: HANDLE) -> Outcome<()> {
    if read()
        .get(&handle)
        .map_or(true, |entry| entry.is_intact(handle))
    {
        return Ok(());
    }
    // Decided again under the write lock: the number may name a new object by now.
    let stale = {
        let mut table = write();
        match table.get(&handle) {
            Some(entry) if !entry.is_intact(handle) => table.remove(&handle),
            _ => None,
        }
    };
    if let Some(stale) = stale {
        stale.retire();
    }
    Err(Errno::BADF)
}

fn read() -> std::sync::RwLockReadGuard<'static, HashMap<HANDLE, Entry>> {
    TABLE.read().unwrap_or_else(PoisonError::into_inner)
}

fn write() -> std::sync::RwLockWriteGuard<'static, HashMap<HANDLE, Entry>> {
    TABLE.write().unwrap_or_else(PoisonError::into_inner)
}

/// Closes a port, an event or a provider handle made through the C API: TRUE, or FALSE
/// with `EBADF` for anything else (the caller's own descriptors are never closed here),
/// for a second close, and for a handle the program already closed with plain `close`.
///
/// Closing a port wakes every thread waiting on it, which fails with `EBADF`; records still
/// queued are discarded. Requests in flight on descriptors associated with it complete
/// into nothing. A closed event is no longer set by completions naming it.
#[no_mangle]
#[allow(non_snake_case)]
pub extern "C" fn CloseHandle(handle: HANDLE) -> crate::types::BOOL {
    crate::boundary::run(crate::types::FALSE, || {
        close(handle)?;
        Ok(crate::types::TRUE)
    })
}
