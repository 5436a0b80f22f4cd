//! The provider path (Winsock SPI's `WPU*` calls): code outside the engine — a user-space
//! TCP stack, a device queue, a test double — completes overlapped requests into ports.
//!
//! A provider makes a socket handle for each of its sockets ([`ProviderSocket::new`],
//! `WPUCreateSocketHandle`); applications associate it with a port like any socket and
//! issue overlapped requests that the provider accepts ([`Overlapped::start`]). When one is
//! done, [`ProviderSocket::complete`] (`WPUCompleteOverlappedRequest`) fills in the block —
//! the byte count, then the status with release ordering — and queues a record to the
//! handle's port, or sets the block's event when the handle has none.

use crate::error;
use crate::handle::{HandleFd, Handled, Kind, Named, Registry};
use crate::overlapped::Overlapped;
use crate::primitive::{lock, Mutex};
use crate::request::Association;
use crate::{Port, RawHandle};
use std::fmt;
use std::io;
use std::sync::Arc;

static PROVIDERS: Registry<ProviderSocket> = Registry::new();

/// A provider's socket handle. Clones name the same handle, which stays valid until
/// [`close`](Self::close) or until the last clone is dropped (once given to the handle with
/// [`into_handle`](Self::into_handle), until `close`).
#[derive(Clone)]
pub struct ProviderSocket {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    catalog_id: u32,
    context: usize,
    handle: HandleFd,
    /// The port and key once associated (the request model's [`Association`]); the outer
    /// `None` after close.
    state: Mutex<Option<Association>>,
}

/// What `WSPGetOverlappedResult` reports of a finished request: the words a provider
/// leaves in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderStatus {
    /// `InternalHigh`: bytes transferred.
    pub bytes: u32,
    /// `Offset`: the request's flags.
    pub flags: u32,
    /// `OffsetHigh`: 0 for success, else the provider's error code.
    pub error: u32,
}

impl ProviderSocket {
    /// Creates a handle for the provider `catalog_id`, carrying the provider's `context`.
    pub fn new(catalog_id: u32, context: usize) -> io::Result<ProviderSocket> {
        let inner = PROVIDERS.create(|handle| Inner {
            catalog_id,
            context,
            handle,
            state: Mutex::new(Some(None)),
        })?;
        Ok(ProviderSocket { inner })
    }

    /// The open provider handle named `handle`: a new reference to it; `None` for anything
    /// else.
    pub fn from_handle(handle: RawHandle) -> Option<ProviderSocket> {
        PROVIDERS.get(handle)
    }

    /// Runs `f` on the open provider handle named `handle`; `None` if there is none. As
    /// [`Port::with_handle`]: no lock, and no reference-count write for a handle kept by
    /// [`into_handle`](Self::into_handle); `f` must not block (clone the socket to wait).
    pub fn with_handle<R>(handle: RawHandle, f: impl FnOnce(&ProviderSocket) -> R) -> Option<R> {
        PROVIDERS.with(handle, f)
    }

    /// Hands the socket to its handle, which keeps it alive until [`close`](Self::close)
    /// (what `WPUCloseSocketHandle` expects of `WPUCreateSocketHandle`'s handles). Returns
    /// the handle.
    pub fn into_handle(self) -> RawHandle {
        PROVIDERS.keep(self)
    }

    /// Checks that the handle's descriptor is still ours. A caller that closed it with
    /// plain `close` has closed the handle: this closes it here too (completing into it
    /// fails from then on), forgets the number without closing it again (it may already
    /// name the caller's next file) and fails with `EBADF`, as it does once closed. One
    /// `fstat` once the number has been handed out ([`handle`](Self::handle),
    /// [`into_handle`](Self::into_handle)); none before.
    pub fn check_handle(&self) -> io::Result<()> {
        self.check_intact()
    }

    /// The handle's number.
    pub fn handle(&self) -> RawHandle {
        self.inner.handle.expose()
    }

    /// The provider's catalog entry.
    pub fn catalog_id(&self) -> u32 {
        self.inner.catalog_id
    }

    /// The context given at creation.
    pub fn context(&self) -> usize {
        self.inner.context
    }

    /// Associates the handle with `port` under `key`. `EALREADY` if it has a port, `EBADF`
    /// once closed.
    pub fn associate(&self, port: &Port, key: u64) -> io::Result<()> {
        let mut state = lock(&self.inner.state);
        let association = state.as_mut().ok_or_else(error::closed)?;
        if association.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EALREADY));
        }
        if port.is_closed() {
            return Err(error::closed());
        }
        *association = Some((port.clone(), key));
        Ok(())
    }

    /// Completes an overlapped request on this handle (`WPUCompleteOverlappedRequest`):
    /// `InternalHigh = bytes`, then `Internal = error` (0 for success) with release
    /// ordering, then a record with `errorno = error` to the port, or the block's event.
    /// `EINVAL` when `error` is the in-progress status, `EBADF` once closed.
    pub fn complete(&self, overlapped: &Overlapped, error: u32, bytes: u32) -> io::Result<()> {
        let port = lock(&self.inner.state).clone().ok_or_else(error::closed)?;
        overlapped.complete(bytes, error, port.as_ref().map(|(port, key)| (port, *key)))
    }

    /// `WSPGetOverlappedResult`: the words of a finished request; `None` while it runs and
    /// `wait` is false. With `wait` it blocks until the request is done.
    pub fn overlapped_result(&self, overlapped: &Overlapped, wait: bool) -> Option<ProviderStatus> {
        if !overlapped.is_complete() {
            if !wait {
                return None;
            }
            // Only the wait matters here; the status words are read below.
            let _ = overlapped.get_result(true);
        }
        let offset = overlapped.offset();
        Some(ProviderStatus {
            bytes: overlapped.bytes(),
            flags: offset as u32,
            error: (offset >> 32) as u32,
        })
    }

    /// Closes the handle (`WPUCloseSocketHandle`): it no longer names anything, and
    /// completing into it fails with `EBADF`. `EBADF` if already closed.
    pub fn close(&self) -> io::Result<()> {
        let association = lock(&self.inner.state).take().ok_or_else(error::closed)?;
        PROVIDERS.remove(&self.inner);
        self.inner.handle.release();
        drop(association);
        Ok(())
    }
}

impl Named for Inner {
    fn handle_fd(&self) -> &HandleFd {
        &self.handle
    }
}

// SAFETY: `from_arc` and `arc` only wrap and unwrap `inner`, a `ProviderSocket`'s only
// field.
unsafe impl Handled for ProviderSocket {
    const KIND: Kind = Kind::Provider;
    type Inner = Inner;

    fn from_arc(inner: Arc<Inner>) -> ProviderSocket {
        ProviderSocket { inner }
    }

    fn arc(&self) -> &Arc<Inner> {
        &self.inner
    }

    fn retire(&self) {
        self.inner.handle.disown();
        // Closed already is fine: either way completions into it fail now.
        let _ = self.close();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        PROVIDERS.remove(self);
    }
}

impl fmt::Debug for ProviderSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSocket")
            .field("handle", &self.inner.handle())
            .field("catalog_id", &self.catalog_id())
            .finish()
    }
}
