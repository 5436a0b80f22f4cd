//! Handles: library objects named by the number of a descriptor the library owns.
//!
//! # The table
//!
//! One table, indexed by descriptor number, says which object (a port, an event, a provider
//! socket) each handle names, so that a number coming from C, or from an `OVERLAPPED`'s
//! `hEvent`, finds its object while it is open and nothing once it is gone. The lookup is
//! the C ABI's hot path (every `PostQueuedCompletionStatus` and dequeue makes one), so it
//! takes no lock, hashes nothing and writes no shared word:
//!
//! * The table is a fixed array of [`CHUNKS`] pointers to chunks of [`CHUNK_LEN`] slots,
//!   each chunk installed by the first handle that needs it (one compare-and-swap) and never
//!   freed, so a slot, once found, stays valid for the rest of the process. The layout is
//!   the one Linux's own descriptor table and crossbeam's `SegQueue` blocks use: a number is
//!   split into a chunk index and a slot index; nothing is ever moved.
//! * A slot holds a pointer to an [`Entry`]: the object's kind and one reference to it.
//!   Entries are replaced and removed with atomic pointer operations and reclaimed with
//!   crossbeam-epoch (epoch-based reclamation, Fraser's scheme): a reader pins the epoch,
//!   reads the entry, and may use it until it unpins; an entry taken out is dropped only
//!   once every thread pinned at that time has unpinned.
//! * An entry's reference is *weak* for an object that Rust code owns (it lives while
//!   someone holds it, as before), or *strong* for an object kept alive by its handle
//!   (`into_handle`: what the C ABI does with every object it creates, until
//!   `CloseHandle`). A strong entry lets [`Registry::with`] lend the object itself, built
//!   over the entry's own reference and never dropped, so the hot path does not touch the
//!   object's reference count; a weak entry costs an upgrade.
//!
//! Whoever uses a lent object must not sleep while pinned (that would hold back every
//! reclamation in the process): a call that may block takes its own reference (a clone)
//! first and sleeps outside [`Registry::with`].
//!
//! # Handles closed behind the library's back
//!
//! The descriptor stays open for the object's whole life, so its number cannot name
//! anything else meanwhile — unless the caller closes it (AIX programs `close(port)`).
//! [`HandleFd`] keeps the descriptor's identity to notice that, and can then be disowned:
//! the number may already belong to the caller's next file, so it must never be closed by
//! us again. Each kind's `check_handle` makes the check (one `fstat`) and closes a stale
//! object; and when the system hands a number out again for a new handle, whatever entry
//! the table still had under it is stale by definition, and is retired the same way.
//!
//! Only a number that has left the library can be closed that way: a program that never
//! asked for it (a Rust program's own port, say) cannot close it without closing a
//! descriptor it does not own, which Rust's I/O safety rules out. So the check costs its
//! `fstat` only once the number has been handed out ([`HandleFd::expose`]: the public
//! `handle()` getters and `into_handle`); before that the descriptor is intact by
//! construction.

use crate::sys::{self, Identity};
use crate::RawHandle;
use crossbeam_epoch::{self as epoch, Atomic, Owned};
use std::io;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Weak};

/// Slots per chunk (8 KiB of pointers).
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const CHUNK_BITS: u32 = 10;
/// Chunks in the table: handles up to 2^22 (Linux's default `fs.nr_open` is 2^20). A
/// handle descriptor numbered beyond is closed again and its creation fails with `EMFILE`.
const CHUNKS: usize = 1 << 12;

/// The descriptor behind a handle; closed on drop unless disowned.
pub(crate) struct HandleFd {
    fd: RawHandle,
    identity: Identity,
    owned: AtomicBool,
    /// Whether the number has been handed out of the library (see the module docs).
    exposed: AtomicBool,
}

impl HandleFd {
    fn new() -> io::Result<HandleFd> {
        let fd = sys::handle_fd()?;
        let identity = sys::identify(fd.as_raw_fd())?;
        Ok(HandleFd {
            fd: fd.into_raw_fd(),
            identity,
            owned: AtomicBool::new(true),
            exposed: AtomicBool::new(false),
        })
    }

    /// The handle's number, for the library's own bookkeeping (its table): this hands
    /// nothing out.
    pub(crate) fn raw(&self) -> RawHandle {
        self.fd
    }

    /// The handle's number, handed out of the library: from now on someone else knows it
    /// and may close it, so [`is_intact`](Self::is_intact) looks.
    pub(crate) fn expose(&self) -> RawHandle {
        // Relaxed: whoever closes the number learnt it after this store, so a close that
        // happens before a check (through any chain of synchronisation: a post the closer
        // made after it, say) has this store happen before the check's load as well, and
        // coherence shows it there. A close racing a check is missed by the `fstat` too,
        // and met by the next check. The load first keeps repeated calls from writing.
        if !self.exposed.load(Ordering::Relaxed) {
            self.exposed.store(true, Ordering::Relaxed);
        }
        self.fd
    }

    /// Whether the number still names our descriptor: `false` once the caller closed it
    /// (whether or not the number has been reused since), or once it was released. One
    /// `fstat` once the number has been handed out; none before.
    pub(crate) fn is_intact(&self) -> bool {
        // Relaxed: `owned` only ever goes from true to false, on this object's own path;
        // `exposed`: see `expose`.
        self.owned.load(Ordering::Relaxed)
            && (!self.exposed.load(Ordering::Relaxed)
                || sys::identify(self.fd).is_ok_and(|id| id == self.identity))
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

/// An object that owns its handle descriptor.
pub(crate) trait Named {
    fn handle_fd(&self) -> &HandleFd;

    fn handle(&self) -> RawHandle {
        self.handle_fd().raw()
    }
}

/// The kinds of object a handle names: a number names one object of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Port,
    Event,
    Provider,
}

/// A public handle type ([`Port`](crate::Port), [`Event`](crate::Event),
/// [`ProviderSocket`](crate::ProviderSocket)): a wrapper around one `Arc` of the object it
/// names.
///
/// # Safety
///
/// `from_arc` must do nothing but wrap its `Arc`, and the wrapper must hold nothing else:
/// [`Registry::with`] builds a wrapper over the table's own reference and never drops it,
/// which leaves the count as it was only if the wrapper did not keep, clone or drop the
/// `Arc` on the way in.
pub(crate) unsafe trait Handled: Sized {
    /// What the table records for this type.
    const KIND: Kind;
    /// The object the `Arc` points to.
    type Inner: Named + Send + Sync + 'static;

    fn from_arc(inner: Arc<Self::Inner>) -> Self;

    fn arc(&self) -> &Arc<Self::Inner>;

    /// Closes the object, whose handle was closed behind the library's back: the number is
    /// already disowned, so closing it releases nothing.
    fn retire(&self);

    /// `Ok` while the handle's number still names the object's descriptor; once the caller
    /// closed it behind the library's back, retires the object and fails with `EBADF`. One
    /// `fstat` once the number has been handed out; none before.
    fn check_intact(&self) -> io::Result<()> {
        if self.arc().handle_fd().is_intact() {
            return Ok(());
        }
        self.retire();
        Err(crate::error::closed())
    }
}

/// One chunk of slots.
struct Chunk([Atomic<Entry>; CHUNK_LEN]);

/// The top level of the table: chunk pointers, null until installed.
static CHUNK_TABLE: [AtomicPtr<Chunk>; CHUNKS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS];

/// What a slot points to: one reference to the object a handle names.
struct Entry {
    kind: Kind,
    held: Held,
    /// `Arc::into_raw` (strong) or `Weak::into_raw` (weak) of the object, typed by `kind`.
    object: *const (),
    /// Gives the reference up (the entry's drop).
    release: unsafe fn(*const (), Held),
    /// [`Handled::retire`] for the object, if it still lives.
    retire: unsafe fn(*const (), Held),
}

/// How an entry holds its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Strong,
    Weak,
}

// SAFETY: an entry is one `Arc` or `Weak` of a `Handled::Inner`, which is `Send + Sync`,
// and two function pointers; moving or sharing it across threads moves or shares those.
unsafe impl Send for Entry {}
// SAFETY: shared, an entry is only read: its pointer is cloned from (an `Arc` or `Weak`
// of a `Send + Sync` object, whose counts are atomic) and its function pointers called.
unsafe impl Sync for Entry {}

impl Entry {
    /// An entry holding `object` (from `Arc::into_raw` or `Weak::into_raw`, as `held` says).
    fn new<H: Handled>(object: *const H::Inner, held: Held) -> Entry {
        Entry {
            kind: H::KIND,
            held,
            object: object.cast(),
            release: release::<H>,
            retire: retire::<H>,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // SAFETY: `object` is the reference `release` was made for, given up once, here.
        unsafe { (self.release)(self.object, self.held) }
    }
}

/// Drops the reference an entry holds.
///
/// # Safety
///
/// `object` is an `Arc::into_raw` (strong) or `Weak::into_raw` (weak) of `H::Inner`, not
/// given up before; it is given up now.
unsafe fn release<H: Handled>(object: *const (), held: Held) {
    let object = object.cast::<H::Inner>();
    match held {
        // SAFETY: an `Arc::into_raw` owned by the entry (the caller's contract).
        Held::Strong => drop(unsafe { Arc::from_raw(object) }),
        // SAFETY: a `Weak::into_raw` owned by the entry (the caller's contract).
        Held::Weak => drop(unsafe { Weak::from_raw(object) }),
    }
}

/// A new reference of the entry's object, if it still lives.
///
/// # Safety
///
/// As [`release`], except that the reference is only borrowed: it stays the entry's.
unsafe fn upgrade<H: Handled>(object: *const (), held: Held) -> Option<H> {
    let object = object.cast::<H::Inner>();
    let inner = match held {
        // SAFETY: the entry's `Arc`, borrowed: `ManuallyDrop` leaves its count alone.
        Held::Strong => Arc::clone(&ManuallyDrop::new(unsafe { Arc::from_raw(object) })),
        // SAFETY: the entry's `Weak`, borrowed the same way.
        Held::Weak => ManuallyDrop::new(unsafe { Weak::from_raw(object) }).upgrade()?,
    };
    Some(H::from_arc(inner))
}

/// Retires the entry's object, if it still lives (see [`Handled::retire`]).
///
/// # Safety
///
/// As [`upgrade`].
unsafe fn retire<H: Handled>(object: *const (), held: Held) {
    // SAFETY: the caller passes an entry's own pointer and kind, pinned, which is what
    // `upgrade` needs.
    if let Some(object) = unsafe { upgrade::<H>(object, held) } {
        object.retire();
    }
}

/// The slot for `handle`, installing its chunk if `install`; `None` for a number out of the
/// table's range, or (without `install`) in a chunk no handle ever used.
fn slot(handle: RawHandle, install: bool) -> Option<&'static Atomic<Entry>> {
    let index = usize::try_from(handle).ok()?;
    let top = CHUNK_TABLE.get(index >> CHUNK_BITS)?;
    // Acquire: pairs with the AcqRel CAS below that installed the chunk, so its slots are
    // seen initialized.
    let mut chunk = top.load(Ordering::Acquire);
    if chunk.is_null() {
        if !install {
            return None;
        }
        let fresh = Box::into_raw(Box::new(Chunk([const { Atomic::null() }; CHUNK_LEN])));
        // AcqRel: the release publishes the fresh chunk's slots to the acquire loads above;
        // the acquire (on failure too) reads the chunk another thread installed first.
        chunk =
            match top.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => fresh,
                Err(winner) => {
                    // SAFETY: `fresh` came from `Box::into_raw` above and was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    winner
                }
            };
    }
    // SAFETY: an installed chunk is never freed or moved, so it lives for `'static`.
    let chunk = unsafe { &*chunk };
    Some(&chunk.0[index & (CHUNK_LEN - 1)])
}

/// Gets the entry just handed to the epoch under `guard` (`defer_destroy`) dropped soon.
///
/// Left alone, a deferred entry waits in this thread's bag until 63 more join it or the
/// thread exits, and a strong entry holds its whole object: a C program that closes ports
/// kept dozens of them allocated (some 270 KiB each, the ring most of it), with nothing
/// open. Flushing moves the bag to the global queue and collects, which advances the
/// global epoch a step if every pinned thread is pinned in the current one; repinning lets
/// the next flush advance it again, and a bag is dropped two steps after it was sealed. So
/// the entry goes before this returns unless another thread is pinned in an older epoch or
/// this one holds an outer pin (then at a later collection: any thread's flush, or every
/// 128th pin).
fn let_go(mut guard: epoch::Guard) {
    guard.flush();
    for _ in 0..ADVANCES {
        guard.repin();
        guard.flush();
    }
}

/// Epoch steps [`let_go`] tries for: two from the epoch the bag is sealed in, and one more
/// in case another thread moved the epoch on between this thread's pin and the seal.
const ADVANCES: usize = 3;

/// The objects of one kind, by handle: a typed view of the one table.
pub(crate) struct Registry<H> {
    kind: PhantomData<fn() -> H>,
}

impl<H> Registry<H> {
    pub(crate) const fn new() -> Registry<H> {
        Registry { kind: PhantomData }
    }
}

impl<H: Handled> Registry<H> {
    /// A fresh handle descriptor and `make`'s object, registered (weakly) under its number.
    /// Whatever the table still had under that number lost its descriptor to a `close`
    /// behind the library's back: it is retired.
    pub(crate) fn create(
        &self,
        make: impl FnOnce(HandleFd) -> H::Inner,
    ) -> io::Result<Arc<H::Inner>> {
        let handle = HandleFd::new()?;
        let slot =
            slot(handle.raw(), true).ok_or_else(|| io::Error::from_raw_os_error(libc::EMFILE))?;
        let object = Arc::new(make(handle));
        let entry = Owned::new(Entry::new::<H>(
            Weak::into_raw(Arc::downgrade(&object)),
            Held::Weak,
        ));
        let guard = epoch::pin();
        // AcqRel: the release publishes the entry to the lookups' acquire loads; the acquire
        // reads the stale entry (if any) that an earlier store published.
        let stale = slot.swap(entry, Ordering::AcqRel, &guard);
        // SAFETY: a non-null slot value points to a live entry while we stay pinned: it is
        // only destroyed through the epoch, as here.
        if let Some(entry) = unsafe { stale.as_ref() } {
            // SAFETY: the entry's own reference, borrowed while pinned.
            unsafe { (entry.retire)(entry.object, entry.held) };
            // SAFETY: the swap unlinked the entry, so no new reader can reach it; readers
            // pinned now are waited for by the epoch.
            unsafe { guard.defer_destroy(stale) };
            let_go(guard);
        }
        Ok(object)
    }

    /// Runs `f` on the object named `handle`, if it is of this kind and open; `None` if not.
    ///
    /// The object is lent, not cloned: for an object kept alive by its handle this touches
    /// no reference count. `f` runs pinned, so it must not block: to wait on the object,
    /// clone it in `f` and wait after.
    pub(crate) fn with<R>(&self, handle: RawHandle, f: impl FnOnce(&H) -> R) -> Option<R> {
        let slot = slot(handle, false)?;
        let guard = epoch::pin();
        // Acquire: pairs with the AcqRel swap or CAS that published the entry.
        let entry = slot.load(Ordering::Acquire, &guard);
        // SAFETY: a non-null slot value is a live entry while we stay pinned (see `create`).
        let entry = unsafe { entry.as_ref() }?;
        if entry.kind != H::KIND {
            return None;
        }
        match entry.held {
            Held::Strong => {
                // SAFETY: `entry.object` is the entry's `Arc::into_raw` of an `H::Inner` (its
                // kind says so). The `Arc` is rebuilt only to be lent: `ManuallyDrop` never
                // drops it, and `from_arc` only wraps it (the `Handled` contract), so its count
                // is untouched. The object lives while the entry does, and the entry is
                // destroyed only after this pin ends, which is after `f` and the loan.
                let object = ManuallyDrop::new(H::from_arc(unsafe {
                    Arc::from_raw(entry.object.cast::<H::Inner>())
                }));
                Some(f(&object))
            }
            Held::Weak => {
                // SAFETY: the entry's `Weak`, borrowed while pinned, of an `H::Inner`.
                let object = unsafe { upgrade::<H>(entry.object, entry.held) }?;
                Some(f(&object))
            }
        }
    }

    /// The object named `handle`, if it is of this kind and open: a new reference to it.
    pub(crate) fn get(&self, handle: RawHandle) -> Option<H> {
        self.with(handle, |object| H::from_arc(Arc::clone(object.arc())))
    }

    /// As [`get`](Self::get), for an object its handle keeps alive (`into_handle`) only: a
    /// reference to it may be kept as long as the object is open without changing when it
    /// is dropped, where keeping one to an object that Rust code owns would outlive the
    /// owner's last clone.
    pub(crate) fn get_kept(&self, handle: RawHandle) -> Option<H> {
        let slot = slot(handle, false)?;
        let guard = epoch::pin();
        // Acquire: pairs with the AcqRel swap or CAS that published the entry.
        let entry = slot.load(Ordering::Acquire, &guard);
        // SAFETY: a non-null slot value is a live entry while we stay pinned (see `create`).
        let entry = unsafe { entry.as_ref() }?;
        if entry.kind != H::KIND || entry.held != Held::Strong {
            return None;
        }
        let object = entry.object.cast::<H::Inner>();
        // SAFETY: a strong entry's `object` is its `Arc::into_raw` of an `H::Inner` (its
        // kind says so), alive while the entry is, which is until after this pin ends; the
        // increment makes a count of our own for the `Arc` built next.
        unsafe { Arc::increment_strong_count(object) };
        // SAFETY: the count was just added for this `Arc`.
        Some(H::from_arc(unsafe { Arc::from_raw(object) }))
    }

    /// Makes the handle keep its object alive (a strong entry) until the object is closed;
    /// returns the handle. An object closed already, or retired, is simply dropped.
    pub(crate) fn keep(&self, object: H) -> RawHandle {
        let inner = Arc::clone(object.arc());
        drop(object);
        let handle = inner.handle_fd().expose();
        let Some(slot) = slot(handle, false) else {
            return handle;
        };
        let guard = epoch::pin();
        let mut strong = Owned::new(Entry::new::<H>(Arc::into_raw(inner), Held::Strong));
        // Acquire: pairs with the AcqRel swap or CAS that published the entry.
        let mut current = slot.load(Ordering::Acquire, &guard);
        loop {
            // SAFETY: a non-null slot value is a live entry while we stay pinned.
            match unsafe { current.as_ref() } {
                Some(entry) if entry.object == strong.object && entry.held == Held::Weak => {}
                // Kept already, or closed: dropping `strong` gives up the reference.
                _ => return handle,
            }
            // AcqRel: the release publishes the new entry to lookups; the acquire (on
            // failure) reads what replaced the weak entry meanwhile.
            match slot.compare_exchange(
                current,
                strong,
                Ordering::AcqRel,
                Ordering::Acquire,
                &guard,
            ) {
                Ok(_) => {
                    // SAFETY: unlinked by the CAS; readers pinned now are waited for.
                    unsafe { guard.defer_destroy(current) };
                    return handle;
                }
                Err(failed) => {
                    current = failed.current;
                    strong = failed.new;
                }
            }
        }
    }

    /// Takes `object` out of the table (it is closed, or dropping): its handle names nothing
    /// from now on. `false` if it was not there (closed or retired already); an entry the
    /// number has meanwhile been given to is left alone.
    pub(crate) fn remove(&self, object: &H::Inner) -> bool {
        let Some(slot) = slot(object.handle(), false) else {
            return false;
        };
        let object = (object as *const H::Inner).cast::<()>();
        let guard = epoch::pin();
        // Acquire: pairs with the AcqRel swap or CAS that published the entry.
        let mut current = slot.load(Ordering::Acquire, &guard);
        loop {
            // SAFETY: a non-null slot value is a live entry while we stay pinned.
            match unsafe { current.as_ref() } {
                Some(entry) if entry.object == object => {}
                _ => return false,
            }
            // AcqRel: as in `keep` (a concurrent `keep` may replace the entry with a strong
            // one for the same object: then the loop takes that one out).
            match slot.compare_exchange(
                current,
                epoch::Shared::null(),
                Ordering::AcqRel,
                Ordering::Acquire,
                &guard,
            ) {
                Ok(_) => {
                    // SAFETY: unlinked by the CAS; readers pinned now are waited for. A
                    // strong entry's reference is given up then, perhaps the last one.
                    unsafe { guard.defer_destroy(current) };
                    let_go(guard);
                    return true;
                }
                Err(failed) => current = failed.current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Handled;
    use crate::{Completion, Event, Port, ProviderSocket};
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    use std::sync::{Arc, Weak};
    use std::time::Duration;

    /// Whether what a lookup found (`found`, the object's address) is the object `gone`
    /// points to. Once a handle is closed its number is free, and the tests run in
    /// parallel: another test's next object may already have it, so a closed handle's
    /// lookup is checked for not finding *this* object, not for finding nothing. (`gone`,
    /// a weak reference, keeps the address from being reused meanwhile.)
    fn is<T>(found: Option<*const T>, gone: &Weak<T>) -> bool {
        found == Some(gone.as_ptr())
    }

    #[test]
    fn a_port_kept_by_its_handle_lives_until_closed_and_is_lent_without_a_new_reference() {
        let port = Port::new().unwrap();
        let handle = port.clone().into_handle();
        let gone = Arc::downgrade(port.arc());
        let count = Arc::strong_count(port.arc());
        // The thread's first lookup keeps one reference for the next ones (see
        // `Port::with_handle`); those take none.
        let first = Port::with_handle(handle, |lent| {
            assert!(lent.same_port(&port));
            Arc::strong_count(lent.arc())
        });
        assert_eq!(
            first,
            Some(count + 1),
            "the first lookup keeps one reference"
        );
        for _ in 0..3 {
            let lent = Port::with_handle(handle, |lent| Arc::strong_count(lent.arc()));
            assert_eq!(lent, Some(count + 1), "a loan took a reference");
        }
        drop(port);

        // Only the handle holds the port now.
        let posted = Port::with_handle(handle, |port| port.post(Completion::new(7, 512, 0)));
        assert!(matches!(posted, Some(Ok(()))));
        let record = Port::with_handle(handle, |port| port.get(Some(Duration::ZERO)));
        assert_eq!(record.unwrap().unwrap().key(), 7);
        assert!(
            Event::with_handle(handle, |_| ()).is_none(),
            "a port is not an event"
        );

        let closed = Port::with_handle(handle, Port::close);
        assert!(matches!(closed, Some(Ok(()))));
        assert!(!is(
            Port::with_handle(handle, |p| Arc::as_ptr(p.arc())),
            &gone
        ));
        assert!(!is(
            Port::from_handle(handle).map(|p| Arc::as_ptr(p.arc())),
            &gone
        ));
    }

    #[test]
    fn events_and_provider_sockets_kept_by_their_handles_live_until_closed() {
        let event = Event::new(true, false).unwrap().into_handle();
        let gone = Event::with_handle(event, |e| Arc::downgrade(e.arc())).unwrap();
        assert_eq!(Event::with_handle(event, Event::set), Some(()));
        assert_eq!(Event::with_handle(event, Event::is_set), Some(true));
        assert!(Event::with_handle(event, Event::close).unwrap().is_ok());
        assert!(!is(
            Event::from_handle(event).map(|e| Arc::as_ptr(e.arc())),
            &gone
        ));

        let socket = ProviderSocket::new(3, 4).unwrap().into_handle();
        let gone = ProviderSocket::with_handle(socket, |s| Arc::downgrade(s.arc())).unwrap();
        assert_eq!(
            ProviderSocket::with_handle(socket, |s| s.context()),
            Some(4)
        );
        assert!(ProviderSocket::with_handle(socket, ProviderSocket::close)
            .unwrap()
            .is_ok());
        let found = ProviderSocket::with_handle(socket, |s| Arc::as_ptr(s.arc()));
        assert!(!is(found, &gone));
    }

    #[test]
    fn a_handle_closed_behind_the_librarys_back_is_checked_and_retired_for_every_kind() {
        let (file, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let reuse = |handle| {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 atomically closes the handle's descriptor and reuses its number,
            // as a plain `close` followed by the program's next `socket` would.
            assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), handle) }, handle);
        };
        let forget = |handle| {
            // SAFETY: the number is the program's again (a duplicate of `file`), closed once.
            let closed = unsafe { libc::close(handle) };
            assert_eq!(closed, 0, "the number stayed the program's");
        };

        let event = Event::new(false, false).unwrap().into_handle();
        reuse(event);
        let err = Event::with_handle(event, Event::check_handle)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert!(Event::with_handle(event, |_| ()).is_none(), "retired");
        forget(event);

        let socket = ProviderSocket::new(1, 0).unwrap().into_handle();
        reuse(socket);
        let err = ProviderSocket::with_handle(socket, ProviderSocket::check_handle).unwrap();
        assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert!(
            ProviderSocket::with_handle(socket, |_| ()).is_none(),
            "retired"
        );
        forget(socket);

        let port = Port::new().unwrap();
        let handle = port.clone().into_handle();
        reuse(handle);
        let err = Port::with_handle(handle, Port::check_handle)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert!(port.is_closed());
        assert!(Port::with_handle(handle, |_| ()).is_none(), "retired");
        drop(port);
        forget(handle);
    }

    #[test]
    fn lookups_racing_close_and_reuse_of_the_number_stay_sound() {
        let current = Arc::new(AtomicI32::new(-1));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (current, stop) = (Arc::clone(&current), Arc::clone(&stop));
                std::thread::spawn(move || {
                    // Relaxed: the flag and the number are hints; the table decides.
                    while !stop.load(Ordering::Relaxed) {
                        let handle = current.load(Ordering::Relaxed);
                        // Only looks: the number may name another test's port or event by
                        // now (tests run in parallel in one process), which a post, a get
                        // or a set would disturb. Closed meanwhile is fine: the object is
                        // still sound memory.
                        Port::with_handle(handle, |port| {
                            std::hint::black_box((port.queued(), port.is_closed()));
                        });
                        Event::with_handle(handle, |event| {
                            std::hint::black_box(event.handle());
                        });
                    }
                })
            })
            .collect();
        for round in 0..300 {
            let handle = match round % 2 {
                0 => Port::new().unwrap().into_handle(),
                _ => Event::new(true, false).unwrap().into_handle(),
            };
            // Relaxed: see the readers.
            current.store(handle, Ordering::Relaxed);
            std::thread::yield_now();
            let closed = Port::with_handle(handle, Port::close)
                .or_else(|| Event::with_handle(handle, Event::close))
                .expect("the handle names what was made");
            closed.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().unwrap();
        }
    }
}
