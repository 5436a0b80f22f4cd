//! Handles: library objects named by the number of a descriptor the library owns.
//!
//! Each kind of object (events, provider sockets) keeps a registry from handle to a weak
//! reference, so that a number coming from C, or from an `OVERLAPPED`'s `hEvent`, finds its
//! object while it lives and nothing once it is gone. The descriptor itself stays open
//! for the object's whole life, so its number cannot be handed to anything else meanwhile.

use crate::sys;
use crate::RawHandle;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, PoisonError, RwLock, Weak};

/// Live objects of one kind, by handle.
pub(crate) struct Registry<T> {
    live: RwLock<Option<HashMap<RawHandle, Weak<T>>>>,
}

impl<T> Registry<T> {
    pub(crate) const fn new() -> Registry<T> {
        Registry {
            live: RwLock::new(None),
        }
    }

    /// A fresh handle descriptor and `make`'s object, registered under its number.
    pub(crate) fn create(&self, make: impl FnOnce(OwnedFd) -> T) -> io::Result<Arc<T>>
    where
        T: Named,
    {
        let object = Arc::new(make(sys::handle_fd()?));
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

    /// Forgets `handle`; called from the object's `Drop`, while its descriptor is open.
    pub(crate) fn remove(&self, handle: RawHandle) {
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = live.as_mut() {
            live.remove(&handle);
        }
    }
}

/// An object that owns its handle descriptor.
pub(crate) trait Named {
    fn handle_fd(&self) -> &OwnedFd;

    fn handle(&self) -> RawHandle {
        self.handle_fd().as_raw_fd()
    }
}
