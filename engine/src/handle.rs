//! Handles: library objects named by the number of a descriptor the library owns.
//!
//! Each kind of object (ports, events, provider sockets) keeps a registry from handle to a
//! weak reference, so that a number coming from C, or from an `OVERLAPPED`'s `hEvent`,
//! finds its object while it lives and nothing once it is gone. The descriptor stays open
//! for the object's whole life, so its number cannot name anything else meanwhile — unless
//! the caller closes it behind our back (AIX programs `close(port)`). [`HandleFd`] keeps the
//! descriptor's identity to notice that, and can then be disowned: the number may already
//! belong to the caller's next file, so it must never be closed by us again.

use crate::sys::{self, Identity};
use crate::RawHandle;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};

/// The descriptor behind a handle; closed on drop unless disowned.
pub(crate) struct HandleFd {
    fd: RawHandle,
    identity: Identity,
    owned: AtomicBool,
}

impl HandleFd {
    fn new() -> io::Result<HandleFd> {
        let fd = sys::handle_fd()?;
        let identity = sys::identify(fd.as_raw_fd())?;
        Ok(HandleFd {
            fd: fd.into_raw_fd(),
            identity,
            owned: AtomicBool::new(true),
        })
    }

    /// The handle's number.
    pub(crate) fn raw(&self) -> RawHandle {
        self.fd
    }

    /// Whether the number still names our descriptor: `false` once the caller closed it
    /// (whether or not the number has been reused since).
    pub(crate) fn is_intact(&self) -> bool {
        // Relaxed: `owned` only ever goes from true to false, on this object's own path.
        self.owned.load(Ordering::Relaxed)
            && sys::identify(self.fd).is_ok_and(|id| id == self.identity)
    }

    /// Gives the number up without closing it.
    pub(crate) fn disown(&self) {
        // Relaxed: see `is_intact`.
        self.owned.store(false, Ordering::Relaxed);
    }

    /// Closes the descriptor now (the object it names is closed, though it may live on a
    /// while), unless it was closed behind our back; idempotent.
    pub(crate) fn release(&self) {
        let intact = self.is_intact();
        // Relaxed: see `is_intact`; the swap makes the close happen once.
        if self.owned.swap(false, Ordering::Relaxed) && intact {
            // SAFETY: we owned `fd` until the swap above, which only one caller wins, and
            // its identity shows it is still ours; nothing uses the number after this.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(self.fd) });
        }
    }
}

impl Drop for HandleFd {
    fn drop(&mut self) {
        self.release();
    }
}

/// Live objects of one kind, by handle.
pub(crate) struct Registry<T> {
    live: RwLock<Option<HashMap<RawHandle, Weak<T>>>>,
}

impl<T: Named> Registry<T> {
    pub(crate) const fn new() -> Registry<T> {
        Registry {
            live: RwLock::new(None),
        }
    }

    /// A fresh handle descriptor and `make`'s object, registered under its number.
    pub(crate) fn create(&self, make: impl FnOnce(HandleFd) -> T) -> io::Result<Arc<T>> {
        let object = Arc::new(make(HandleFd::new()?));
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        live.get_or_insert_with(HashMap::new)
            .insert(object.handle(), Arc::downgrade(&object));
        Ok(object)
    }

    /// The live object named `handle`.
    pub(crate) fn get(&self, handle: RawHandle) -> Option<Arc<T>> {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        live.as_ref()?.get(&handle)?.upgrade()
    }

    /// Forgets `object` (from its `Drop`, or when its handle was closed behind our back);
    /// an entry the number has meanwhile been given to is left alone.
    pub(crate) fn remove(&self, object: &T) {
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = live.as_mut() {
            let handle = object.handle();
            if live
                .get(&handle)
                .is_some_and(|weak| std::ptr::eq(weak.as_ptr(), object))
            {
                live.remove(&handle);
            }
        }
    }
}

/// An object that owns its handle descriptor.
pub(crate) trait Named {
    fn handle_fd(&self) -> &HandleFd;

    fn handle(&self) -> RawHandle {
        self.handle_fd().raw()
    }
}
