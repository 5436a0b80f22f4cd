//! Completion ports: posting, the two dequeue calls, the waiter rules, and close.
//!
//! Semantics follow Windows and AIX:
//!
//! * [`Port::get`] is `GetQueuedCompletionStatus`: one record; several threads may wait,
//!   and they wake last-in first-out. It honours the port's concurrency value.
//! * [`Port::get_many`] / [`Port::fill`] are `GetMultipleCompletionStatus`: up to `out.len()`
//!   records copied in one pass, waiting up to the timeout for `min` of them; fewer than
//!   `min` is not an error but is reported in [`Drained::status`]. `min == 0` polls.
//! * [`Port::drain`] is the zero-copy form: a borrowed [`Batch`] of the records ready now.
//! * The batched dequeues are exclusive: while one runs (or a [`Batch`] is held) every
//!   other dequeue fails with `EBUSY`, and while `get` callers wait a batched dequeue fails
//!   with `EBUSY`.
//! * [`Port::close`] wakes every waiter, which fails with `EBADF`; queued records are
//!   discarded with the port.

#[cfg(loom)]
use crate::drive::Driven;
use crate::drive::Driving;
use crate::error;
use crate::parker::{Parker, Spin, WaitStack, MAX_SPIN, MIN_SPIN, SPIN_LIMIT_MAX};
#[cfg(not(loom))]
use crate::primitive::AtomicU64;
use crate::primitive::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
#[cfg(not(loom))]
use crate::ring::Place;
use crate::ring::{Consumer, Ring, DEFAULT_CAPACITY, MAX_CAPACITY};
use crate::sys::fork::PerProcess;
use crate::sys::{Deadline, WaitStatus};
use crate::Completion;
use crossbeam_utils::CachePadded;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Most records one batched dequeue returns (AIX's `GMCS_NMAX`).
pub const GMCS_NMAX: usize = 4096;

/// The longest single sleep of an endless wait (see `Shared::wait`).
const NAP: Duration = Duration::from_secs(24 * 60 * 60);

/// Looks at a held consumer claim before a `get` yields the CPU to its holder.
const CLAIM_SPINS: u32 = 12;
/// Between two looks at a held claim a `get` pauses 2^n times after its n-th look, up to
/// 2^`CLAIM_BACKOFF` (about 2,000 pauses before it first yields).
const CLAIM_BACKOFF: u32 = 9;

/// `dequeuers` bit held by a batched dequeue; the bits below count waiting `get` calls.
const EXCLUSIVE: u32 = 1 << 31;

/// An I/O completion port: a queue of [`Completion`]s that producers fill and threads
/// drain, one record or a batch at a time.
///
/// `Port` is a handle: clones refer to the same port, which lives until the last clone is
/// dropped. Posting never blocks and never drops a record; when the ring is full records
/// wait in an overflow queue, in order.
///
/// ```
/// use iocp::{Completion, Port};
/// use std::time::Duration;
///
/// let port = Port::new()?;
/// port.post(Completion::new(7, 512, 0))?;
/// let record = port.get(Some(Duration::from_millis(100)))?;
/// assert_eq!((record.key(), record.result()?), (7, 512));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Port {
    shared: Arc<Shared>,
}

/// Settings for a new [`Port`].
#[derive(Clone, Debug)]
pub struct PortBuilder {
    capacity: usize,
    fifo: bool,
    concurrency: usize,
    scalar_drain: bool,
    drive: Drive,
    spin_limit: Duration,
}

/// How a port's socket readiness is collected (see the `reactor` module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Drive {
    /// Waiting threads take turns polling (leader/follower).
    #[default]
    Inline,
    /// A dedicated reactor thread polls. Woken by readiness, it does not preempt a thread
    /// running on its CPU (Linux `SCHED_BATCH`): it runs at once on an idle CPU, else when
    /// that thread blocks or its time slice ends.
    Thread,
}

/// What a batched dequeue returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Records written to the front of the output.
    pub count: usize,
    /// Whether `min` records were had, and if not, why not.
    pub status: DrainStatus,
}

/// How a batched dequeue ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainStatus {
    /// At least `min` records were returned.
    Complete,
    /// The timeout passed with fewer than `min` (AIX: `errno` = `ETIMEDOUT`).
    TimedOut,
    /// A signal handler interrupted the wait with fewer than `min` (AIX: `EINTR`).
    Interrupted,
}

pub(crate) struct Shared {
    /// The descriptor whose number names the port (`HANDLE` in C).
    #[cfg(not(loom))]
    handle: crate::handle::HandleFd,
    ring: Ring,
    // Posters read `closed`, the sleeper count and `reactor` on every post; waiters write
    // the wait stack, the spin budget and `wanted`. Each written part gets its own cache
    // line so that a waiting consumer does not slow every post from another core.
    waiters: CachePadded<WaitStack>,
    spin: CachePadded<Spin>,
    closed: AtomicBool,
    /// [`EXCLUSIVE`] while a batched dequeue runs, else the number of waiting `get` calls.
    dequeuers: CachePadded<AtomicU32>,
    /// While an exclusive (batched) dequeue waits, how many more records it needs: posters
    /// do not wake it for fewer. Zero while none waits.
    wanted: CachePadded<AtomicUsize>,
    /// Threads released by `get` and not yet back (the concurrency value).
    active: CachePadded<AtomicUsize>,
    /// Most threads released at once; `usize::MAX` turns the accounting off.
    concurrency: usize,
    scalar_drain: bool,
    drive: Drive,
    /// Socket readiness, created with the first socket request that has to wait, in each
    /// process: a forked child's requests do not use the parent's epoll instance (shared
    /// with it) or wait for its reactor thread (see `sys::fork`).
    reactor: PerProcess<Driving>,
    /// When a dequeue last gave the inline reactor a look while the port was not empty, and
    /// records taken since; written only by the consumer-claim holder (see
    /// `Shared::due_for_a_look`).
    #[cfg(not(loom))]
    looks: CachePadded<Looks>,
    /// Held by the one waiter at a time that pauses on a claimed record under loom (see
    /// `Shared::pause_for_publication`).
    #[cfg(loom)]
    pausing: crate::primitive::Mutex<()>,
}

impl Default for PortBuilder {
    fn default() -> PortBuilder {
        PortBuilder {
            capacity: DEFAULT_CAPACITY,
            fifo: false,
            concurrency: 0,
            scalar_drain: false,
            drive: Drive::default(),
            spin_limit: MAX_SPIN,
        }
    }
}

impl PortBuilder {
    /// Ring slots: a power of two from 1 to 2^22 (default 4096). Records beyond it wait in
    /// the overflow queue, so this bounds memory for the common case, not the queue.
    pub fn capacity(mut self, capacity: usize) -> PortBuilder {
        self.capacity = capacity;
        self
    }

    /// Whether records come out in one order for all posting threads (Windows' and AIX's
    /// FIFO queue), rather than in order per posting thread (the default).
    ///
    /// By default each thread posts into a lane of its own (see the crate's docs on
    /// ordering), so a post costs a few plain stores and no atomic read-modify-write;
    /// records from one thread come out in the order it posted them, but a record posted
    /// after another thread's (say a shutdown record posted after joining the threads
    /// whose records are still queued) may come out first. With `fifo(true)` every post
    /// claims its slot in one shared ring with an atomic compare-and-swap, and records come
    /// out in the order the posts happened, across threads too.
    pub fn fifo(mut self, fifo: bool) -> PortBuilder {
        self.fifo = fifo;
        self
    }

    /// Most threads released by [`Port::get`] at once (Windows' `NumberOfConcurrentThreads`;
    /// 0, the default, means the number of CPUs; `usize::MAX` means no limit). A thread
    /// counts as released from the return of `get` until it calls `get` again (on any port)
    /// or exits. The batched dequeues ignore it, as AIX does.
    pub fn concurrency(mut self, threads: usize) -> PortBuilder {
        self.concurrency = threads;
        self
    }

    /// Drains one record at a time, each take a pass of its own that frees its one slot,
    /// instead of copying a lane's whole run in one pass and freeing it with one store.
    /// Slower; it exists so benchmarks can measure what the batched path buys.
    pub fn scalar_drain(mut self, scalar: bool) -> PortBuilder {
        self.scalar_drain = scalar;
        self
    }

    /// How socket readiness is collected: by the waiting threads in turn (the default,
    /// [`Drive::Inline`]) or by a reactor thread of the port's own ([`Drive::Thread`]).
    pub fn drive(mut self, drive: Drive) -> PortBuilder {
        self.drive = drive;
        self
    }

    /// The longest a waiter spins before it sleeps: zero, or 1 µs to 1 s (default 100 µs).
    ///
    /// A waiter that finds the port empty looks again for a while before it sleeps in the
    /// kernel, and so does the inline drive's leader before it blocks waiting for socket
    /// readiness (the thread drive's reactor thread never spins): a record posted
    /// meanwhile is taken in the time of a cache-line transfer, where a sleep and its wake
    /// cost microseconds (tens on a virtual machine). How long is learnt from the waits
    /// that happen, up to this limit; a port whose waits are all long stops spinning by
    /// itself. The spin takes CPU time, which a server keeps busy under load: in
    /// `iocp-bench echo` at half of its peak rate, the inline drive's server used 6.1 µs of
    /// CPU a message where tokio used 3.9 µs, for a median latency of 7.8 µs against 19 µs.
    /// Zero turns the spin off: a waiter sleeps as soon as it finds nothing, and every
    /// record that finds it asleep costs a wake.
    pub fn spin_limit(mut self, limit: Duration) -> PortBuilder {
        self.spin_limit = limit;
        self
    }

    /// Creates the port; `EINVAL` for a capacity that is not a power of two in range or a
    /// spin limit out of range, `ENOMEM` when its ring cannot be allocated, `EMFILE`
    /// without a descriptor for its handle.
    pub fn build(self) -> io::Result<Port> {
        if !self.capacity.is_power_of_two() || self.capacity > MAX_CAPACITY {
            return Err(error::invalid());
        }
        let limit = self.spin_limit;
        if !(limit.is_zero() || (MIN_SPIN..=SPIN_LIMIT_MAX).contains(&limit)) {
            return Err(error::invalid());
        }
        let spin = Spin::stoppable();
        spin.limit_to(limit);
        let concurrency = match self.concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let ring = Ring::new(self.capacity, self.fifo)?;
        let make = |#[cfg(not(loom))] handle| Shared {
            #[cfg(not(loom))]
            handle,
            ring,
            waiters: CachePadded::new(WaitStack::new()),
            spin: CachePadded::new(spin),
            closed: AtomicBool::new(false),
            dequeuers: CachePadded::new(AtomicU32::new(0)),
            wanted: CachePadded::new(AtomicUsize::new(0)),
            active: CachePadded::new(AtomicUsize::new(0)),
            concurrency,
            scalar_drain: self.scalar_drain,
            drive: self.drive,
            reactor: PerProcess::new(),
            #[cfg(not(loom))]
            looks: CachePadded::new(Looks {
                taken: AtomicU32::new(0),
                at_ns: AtomicU64::new(0),
            }),
            #[cfg(loom)]
            pausing: crate::primitive::Mutex::new(()),
        };
        #[cfg(not(loom))]
        let shared = PORTS.create(make)?;
        #[cfg(loom)]
        let shared = Arc::new(make());
        Ok(Port { shared })
    }
}

#[cfg(not(loom))]
static PORTS: crate::handle::Registry<Port> = crate::handle::Registry::new();

/// Ports kept alive by their handles that a thread looked up most recently, most recent
/// first (see [`Port::with_handle`]).
#[cfg(not(loom))]
struct Recent {
    ports: [Option<Kept>; RECENT_PORTS],
}

/// A port in a thread's [`Recent`].
#[cfg(not(loom))]
struct Kept {
    handle: crate::RawHandle,
    port: Port,
    /// Where the thread's posts to the port go (see [`Port::post_to_handle`]).
    place: Place,
}

/// How many ports a thread keeps in [`Recent`]: a port another thread closed stays
/// allocated until this one looks its number up again, meets it in a lookup, or exits (the
/// closing thread lets go at once: [`forget_closed_ports`]).
#[cfg(not(loom))]
const RECENT_PORTS: usize = 4;

#[cfg(not(loom))]
impl Recent {
    /// The open port its handle `handle` keeps alive, moved or added to the front: from the
    /// cache, or else from the handle table with a reference kept for next time (one
    /// reference-count increment). `None` if there is none.
    #[inline]
    fn find(&mut self, handle: crate::RawHandle) -> Option<&mut Kept> {
        if self.front(handle).is_none() {
            self.find_further(handle)?;
        }
        self.ports[0].as_mut()
    }

    /// The port at the front if `handle` names it and it is open.
    #[inline(always)]
    fn front(&mut self, handle: crate::RawHandle) -> Option<&mut Kept> {
        // Relaxed: as in `bring_to_front`.
        self.ports[0].as_mut().filter(|kept| {
            kept.handle == handle && !kept.port.shared.closed.load(Ordering::Relaxed)
        })
    }

    /// [`find`](Self::find) when the port is not the front one, or is closed there.
    #[cold]
    fn find_further(&mut self, handle: crate::RawHandle) -> Option<()> {
        if !self.bring_to_front(handle) {
            // Only a port its handle keeps alive (the C ABI's): a reference kept to a port
            // that Rust code owns would outlive the owner's last clone.
            let port = PORTS.get_kept(handle)?;
            self.keep(handle, port);
        }
        Some(())
    }

    /// Whether an open port is kept under `handle`, moving it to the front. A closed one
    /// is let go.
    fn bring_to_front(&mut self, handle: crate::RawHandle) -> bool {
        let Some(i) = self
            .ports
            .iter()
            .position(|entry| entry.as_ref().is_some_and(|kept| kept.handle == handle))
        else {
            return false;
        };
        self.ports[..=i].rotate_right(1);
        // Relaxed: a port closed meanwhile is one whose close races this call, which
        // `post` and the waits then settle as they do for any caller.
        let open = self.ports[0]
            .as_ref()
            .is_some_and(|kept| !kept.port.shared.closed.load(Ordering::Relaxed));
        if !open {
            self.ports[0] = None;
        }
        open
    }

    /// Takes out the ports that are closed.
    fn take_closed(&mut self) -> [Option<Kept>; RECENT_PORTS] {
        std::array::from_fn(|i| self.ports[i].take_if(|kept| kept.port.is_closed()))
    }

    /// Keeps `port` under `handle` at the front, letting the least recent one go.
    fn keep(&mut self, handle: crate::RawHandle, port: Port) {
        self.ports.rotate_right(1);
        self.ports[0] = Some(Kept {
            handle,
            port,
            place: Place::default(),
        });
    }
}

/// What a thread keeps for the ports it uses: the ports it looked up by handle, and the
/// port that last released it.
#[cfg(not(loom))]
struct Locals {
    recent: RefCell<Recent>,
    released: RefCell<Option<Released>>,
}

#[cfg(not(loom))]
std::thread_local! {
    static LOCALS: Locals = const {
        Locals {
            recent: RefCell::new(Recent { ports: [const { None }; RECENT_PORTS] }),
            released: RefCell::new(None),
        }
    };
}

/// Lets go of the closed ports in this thread's [`Recent`]: `close` calls it, so that the
/// closing thread keeps no reference to the port it closed, and the port's memory goes
/// with the last one (other threads' caches let go of it at their next look-up by handle).
/// They are dropped after the cache is given back: a port's drop may run anything the
/// epoch had deferred. A thread that has made no call by handle has no cache to look at.
#[cfg(not(loom))]
fn forget_closed_ports() {
    let closed = with_set_locals(|locals| {
        // Busy only when a signal handler closes a port during a call of this thread's.
        let mut recent = locals.recent.try_borrow_mut().ok()?;
        Some(recent.take_closed())
    });
    drop(closed);
}

/// Runs `f` on the thread's [`Locals`], reached through the thread's fast slot (see
/// [`crate::sys::fast_tls`]): the slot holds the address of `LOCALS` from the thread's
/// first call until `LOCALS` is dropped at thread exit. `None` once it is gone.
#[cfg(not(loom))]
#[inline]
fn with_locals<R>(f: impl FnOnce(&Locals) -> R) -> Option<R> {
    let f = match with_set_locals(f) {
        Ok(result) => return Some(result),
        Err(f) => f,
    };
    LOCALS
        .try_with(|locals| {
            crate::sys::fast_tls::set(std::ptr::from_ref(locals).cast());
            f(locals)
        })
        .ok()
}

/// [`with_locals`] once this thread's first call has set them up (`Err(f)` before, and
/// once they are gone): one thread-local load, and no call.
#[cfg(not(loom))]
#[inline(always)]
fn with_set_locals<R, F: FnOnce(&Locals) -> R>(f: F) -> Result<R, F> {
    let locals = crate::sys::fast_tls::get().cast::<Locals>();
    // SAFETY: only `with_locals` stores a non-null pointer in the slot: the address of
    // this thread's `LOCALS`, which stays valid until the thread exits; `Locals::drop`
    // clears the slot before the fields are dropped, and a thread's slot is its own.
    match unsafe { locals.as_ref() } {
        Some(locals) => Ok(f(locals)),
        None => Err(f),
    }
}

#[cfg(not(loom))]
impl Drop for Locals {
    fn drop(&mut self) {
        // `LOCALS` is being destroyed: calls on this thread from other thread-locals'
        // destructors find it gone, as `try_with` then says.
        crate::sys::fast_tls::set(std::ptr::null());
    }
}

// SAFETY: `from_arc` and `arc` only wrap and unwrap `shared`, a `Port`'s only field.
#[cfg(not(loom))]
unsafe impl crate::handle::Handled for Port {
    const KIND: crate::handle::Kind = crate::handle::Kind::Port;
    type Inner = Shared;

    fn from_arc(shared: Arc<Shared>) -> Port {
        Port { shared }
    }

    fn arc(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn retire(&self) {
        use crate::handle::Named;
        self.shared.handle_fd().disown();
        // Closed already is fine: either way the port is closed now.
        let _ = self.close();
    }
}

#[cfg(not(loom))]
impl crate::handle::Named for Shared {
    fn handle_fd(&self) -> &crate::handle::HandleFd {
        &self.handle
    }
}

#[cfg(not(loom))]
impl Drop for Shared {
    fn drop(&mut self) {
        PORTS.remove(self);
        if let Some(reactor) = self.reactor.get() {
            // Ends a reactor thread (which holds the reactor, not the port).
            reactor.stop();
        }
    }
}

impl Port {
    /// A port with the default settings.
    pub fn new() -> io::Result<Port> {
        PortBuilder::default().build()
    }

    /// Settings for a port.
    pub fn builder() -> PortBuilder {
        PortBuilder::default()
    }

    /// Queues `record` (`PostQueuedCompletionStatus`) and wakes one waiter if one sleeps.
    /// Never blocks, allocates nothing while the ring has room. `EBADF` once closed.
    // Always inlined, with the first post to a ring out of line (`Ring::push_found`): as a
    // call of its own, a repeat post cost about as much again (the harness's same-thread
    // row, batches of 16 on an AMD EPYC: 149 M/s as a call, 208 M/s inlined).
    #[inline(always)]
    pub fn post(&self, record: Completion) -> io::Result<()> {
        let shared = &*self.shared;
        // Relaxed: a post that races `close` is simply discarded with the port.
        if shared.closed.load(Ordering::Relaxed) {
            return Err(error::closed());
        }
        shared.ring.push(record);
        shared.notify();
        Ok(())
    }

    /// Queues every record of `records` in order, as if by one [`post`](Self::post) each,
    /// but claiming their ring slots together: one atomic operation for the whole slice
    /// while the ring has room, and one wake check at the end. Never blocks, never drops.
    /// `EBADF` once closed (then nothing is queued).
    pub fn post_many(&self, records: &[Completion]) -> io::Result<()> {
        self.post_many_with(records, |record| *record)
    }

    /// [`post_many`](Self::post_many) of one record per item of `items`, each made by
    /// `record` as it is written into its ring slot: records kept in another form (the C
    /// ABI's `struct gmcs`) are queued in one pass, with no slice of [`Completion`]s built
    /// first. `record` runs once per item, in order.
    ///
    /// # Panics
    ///
    /// A panic in `record` aborts the process: the ring slots claimed for the batch can be
    /// neither handed back nor left empty.
    pub fn post_many_with<T>(
        &self,
        items: &[T],
        record: impl Fn(&T) -> Completion,
    ) -> io::Result<()> {
        let shared = &*self.shared;
        // Relaxed: as in `post`.
        if shared.closed.load(Ordering::Relaxed) {
            return Err(error::closed());
        }
        if items.is_empty() {
            return Ok(());
        }
        shared.ring.push_many_with(items, record);
        shared.notify();
        Ok(())
    }

    /// Dequeues one record (`GetQueuedCompletionStatus`), waiting up to `timeout` (`None`:
    /// forever; zero: poll). A failed I/O is a record too: see [`Completion::result`].
    ///
    /// Errors: `ETIMEDOUT`; `EINTR` when a signal handler runs while the wait sleeps
    /// (`SA_RESTART` or not: the kernel restarts neither `epoll_wait` nor a timed futex
    /// wait, so no port wait restarts); `EBADF` when the port is closed, also while waiting;
    /// `EBUSY` while a batched dequeue runs.
    pub fn get(&self, timeout: Option<Duration>) -> io::Result<Completion> {
        let mut record = Completion::default();
        self.shared
            .dequeue_some(1, timeout, |_, taken| record = *taken)?;
        Ok(record)
    }

    /// Dequeues between one and `out.len()` records into `out`, waiting up to `timeout` for
    /// the first (`GetQueuedCompletionStatusEx`). Returns how many it wrote.
    ///
    /// Unlike [`get_many`](Self::get_many) this is not an exclusive wait: several threads
    /// may call it (and [`get`](Self::get)) on one port at once, each taking the run ready
    /// when its turn comes, as a worker pool does. It waits and wakes like `get`: LIFO,
    /// within the concurrency value (a thread counts once, whatever the run's length).
    ///
    /// Errors: as [`get`](Self::get), and `EINVAL` for an empty `out`.
    pub fn get_up_to(
        &self,
        out: &mut [Completion],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        self.shared
            .dequeue_some(out.len(), timeout, |i, record| out[i] = *record)
    }

    /// [`get_up_to`](Self::get_up_to) into uninitialized memory, converting each record
    /// with `map` as it is copied (the C ABI's `OVERLAPPED_ENTRY` array). The first `n`
    /// entries of the returned `n` are initialized.
    pub fn fill_up_to<T>(
        &self,
        out: &mut [MaybeUninit<T>],
        timeout: Option<Duration>,
        mut map: impl FnMut(&Completion) -> T,
    ) -> io::Result<usize> {
        self.shared.dequeue_some(out.len(), timeout, |i, record| {
            out[i].write(map(record));
        })
    }

    /// Dequeues up to `out.len()` records (at most [`GMCS_NMAX`]) into `out`, waiting up to
    /// `timeout` until at least `min` have come (`GetMultipleCompletionStatus`).
    ///
    /// Errors: `EINVAL` for an empty `out`, more than `GMCS_NMAX`, or `min > out.len()`;
    /// `EBADF` for a closed port; `EBUSY` when another dequeue already waits on the port.
    pub fn get_many(
        &self,
        out: &mut [Completion],
        min: usize,
        timeout: Option<Duration>,
    ) -> io::Result<Drained> {
        self.shared
            .dequeue_many(out.len(), min, timeout, |i, record| out[i] = *record)
    }

    /// [`get_many`](Self::get_many) into uninitialized memory, converting each record with
    /// `map` as it is copied: the C ABI writes `struct gmcs` entries straight into the
    /// caller's array this way. The first [`Drained::count`] entries are initialized.
    pub fn fill<T>(
        &self,
        out: &mut [MaybeUninit<T>],
        min: usize,
        timeout: Option<Duration>,
        mut map: impl FnMut(&Completion) -> T,
    ) -> io::Result<Drained> {
        self.shared
            .dequeue_many(out.len(), min, timeout, |i, record| {
                out[i].write(map(record));
            })
    }

    /// Waits up to `timeout` for a record and returns a borrowed view of the run ready now,
    /// at most `max` records, without copying. Records the batch yields are freed when it
    /// is dropped, those it does not stay queued. While the batch lives, other dequeues on
    /// the port fail with `EBUSY`, so keep it short.
    ///
    /// Errors: as [`get_many`](Self::get_many) with `min == 1`, and `ETIMEDOUT` or `EINTR`
    /// when no record came.
    pub fn drain(&self, max: usize, timeout: Option<Duration>) -> io::Result<Batch<'_>> {
        let shared = &*self.shared;
        if max == 0 || max > GMCS_NMAX {
            return Err(error::invalid());
        }
        shared.check_open()?;
        shared.enter_exclusive()?;
        let exclusive = Exclusive(shared);
        // Built in place on each path: a `Result` with the run inside, carried from several
        // arms to one exit, was moved through the stack piecewise (the error's one byte
        // overlaid on the run), and the loads of those moves stalled on the stores just
        // before them. Batches of 16 on one thread (AMD EPYC): 125 M/s, 160 M/s with the
        // run's origin a word (`ring::Origin`), 205 M/s with this too, as `get_many` does.
        let (consumer, len) = match shared.ready_run(max) {
            Some(found) => found,
            None => shared.wait_run(max, timeout)?,
        };
        Ok(Batch {
            consumer,
            len,
            next: 0,
            _exclusive: exclusive,
        })
    }

    /// Closes the port (`CloseHandle`): every waiter wakes and fails with `EBADF`, as does
    /// every later call; queued records are discarded, and the handle's number is released
    /// at once. `EBADF` if already closed.
    pub fn close(&self) -> io::Result<()> {
        if self.shared.shut() {
            Ok(())
        } else {
            Err(error::closed())
        }
    }

    /// Whether [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Records queued now (a snapshot).
    pub fn queued(&self) -> usize {
        self.shared.ring.len()
    }

    /// The ring's capacity.
    pub fn capacity(&self) -> usize {
        self.shared.ring.capacity()
    }

    /// The concurrency value in force (the number of CPUs when 0 was given).
    pub fn concurrency(&self) -> usize {
        self.shared.concurrency
    }

    /// Waiters asleep on the port: past their last look for work and parked, or about to
    /// park. For the loom models, which wait for it to know that a waiter sleeps.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn sleeping(&self) -> usize {
        self.shared.waiters.asleep()
    }

    /// The handle naming the port: the number of a descriptor the library owns. Once it
    /// has been asked for, the port's waits look before they sleep whether the number was
    /// closed behind the library's back (see [`check_handle`](Self::check_handle)).
    #[cfg(not(loom))]
    pub fn handle(&self) -> crate::RawHandle {
        use crate::handle::Named;
        self.shared.handle_fd().expose()
    }

    /// Checks that the port's handle descriptor is still ours. A caller that closed it
    /// with plain `close` (as AIX programs do) has closed the port: this closes it here too
    /// (waking its waiters with `EBADF`), forgets the number without closing it again (it
    /// may already name the caller's next file) and fails with `EBADF`. One `fstat`, once
    /// the number has been handed out ([`handle`](Self::handle),
    /// [`into_handle`](Self::into_handle)); a number nobody was given cannot have been
    /// closed, and is not looked at. Every wait makes this check itself before it sleeps,
    /// so the calls that find records at once make no system call; the C ABI calls it
    /// where a call binds to the port.
    #[cfg(not(loom))]
    pub fn check_handle(&self) -> io::Result<()> {
        match self.shared.handle_is_stale() {
            false => Ok(()),
            true => Err(error::closed()),
        }
    }

    /// The open port named `handle`: a new reference to it (one reference-count increment;
    /// see [`with_handle`](Self::with_handle) for a lookup without).
    #[cfg(not(loom))]
    pub fn from_handle(handle: crate::RawHandle) -> Option<Port> {
        PORTS.get(handle)
    }

    /// Runs `f` on the open port named `handle`; `None` if there is none. `f` may block
    /// (wait on the port).
    ///
    /// The calling thread keeps references to the last few ports kept alive by their
    /// handles ([`into_handle`](Self::into_handle), as the C ABI's are) that it looked up,
    /// so a lookup of one of them takes no lock, makes no fence and writes no shared word:
    /// it checks that the number is the same and the port not closed (a port's handle
    /// names it until it is closed; `CloseHandle` and the retirement of a handle closed
    /// behind the library's back both close it). Another lookup goes through the handle
    /// table under an epoch pin and keeps a reference for next time: one reference-count
    /// increment.
    #[cfg(not(loom))]
    pub fn with_handle<R>(handle: crate::RawHandle, f: impl FnOnce(&Port) -> R) -> Option<R> {
        let mut f = Some(f);
        let cached = with_locals(|locals| {
            // Busy only when a signal handler calls in during a call of this thread's.
            let mut recent = locals.recent.try_borrow_mut().ok()?;
            let kept = recent.find(handle)?;
            // The cache stays borrowed while `f` runs (it may block), which keeps the port.
            f.take().map(|f| f(&kept.port))
        });
        match (cached, f) {
            (Some(Some(result)), _) => Some(result),
            // No port by that number, or the cache is busy or gone (thread exit): a
            // reference of its own, which `f` may block on too.
            (_, Some(f)) => PORTS.get(handle).map(|port| f(&port)),
            (_, None) => None,
        }
    }

    /// Queues `record` on the open port named `handle` (`PostQueuedCompletionStatus`), as
    /// [`with_handle`](Self::with_handle) running [`post`](Self::post) does; `None` if
    /// there is no such port.
    ///
    /// The thread's port cache keeps, beside each port, the lane the thread's posts to it
    /// go to, found by its first post through here: later posts go straight to that lane,
    /// with one thread-local look-up (the cache's) where `with_handle` and `post` make two.
    #[cfg(not(loom))]
    #[inline]
    pub fn post_to_handle(handle: crate::RawHandle, record: Completion) -> Option<io::Result<()>> {
        let cached = with_locals(move |locals| {
            // Busy only when a signal handler calls in during a call of this thread's.
            let mut recent = locals.recent.try_borrow_mut().ok()?;
            let kept = recent.find(handle)?;
            // `find` saw the port open, which is all `post` checks: a post that races
            // `close` is discarded with the port.
            let shared = &*kept.port.shared;
            shared.ring.push_at(&mut kept.place, record);
            shared.notify();
            Some(())
        });
        match cached {
            Some(Some(())) => Some(Ok(())),
            // As in `with_handle`. The record goes by its words (see
            // `Completion::to_words`).
            _ => {
                let [first, second, third] = record.to_words();
                Self::post_uncached(handle, first, second, third)
            }
        }
    }

    /// [`post_to_handle`](Self::post_to_handle)'s common case alone, with no call on the
    /// way, so that a caller that takes the other cases elsewhere (the C ABI's
    /// `PostQueuedCompletionStatus`) keeps its own common case free of saving registers:
    /// the port `handle` names is the one the thread's last call by handle named, open, and
    /// the thread's lane in it has room. Then the record is queued, and [`FastPost::Wake`]
    /// holds the port when a waiter or a leader blocked in `epoll_wait` must be woken
    /// ([`Port::wake_for_post`]); else nothing is done ([`FastPost::Missed`]).
    #[cfg(all(not(loom), feature = "c-abi"))]
    #[inline(always)]
    pub fn post_to_handle_fast(handle: crate::RawHandle, record: Completion) -> FastPost {
        let posted = with_set_locals(|locals| {
            // Busy only when a signal handler calls in during a call of this thread's.
            let mut recent = locals.recent.try_borrow_mut().ok()?;
            let kept = recent.front(handle)?;
            // `front` saw the port open, which is all `post` checks (as in `post_to_handle`).
            let shared = &*kept.port.shared;
            if !shared.ring.try_push_at(&kept.place, record) {
                return None;
            }
            Some(match shared.wants_notify() {
                // A reference of its own: the wake comes after the cache is let go.
                true => FastPost::Wake(kept.port.clone()),
                false => FastPost::Posted,
            })
        });
        match posted {
            Ok(Some(posted)) => posted,
            _ => FastPost::Missed,
        }
    }

    /// After [`Port::post_to_handle_fast`] said [`FastPost::Wake`]: wakes the waiter (or
    /// the leader) the record is for.
    #[cfg(all(not(loom), feature = "c-abi"))]
    pub fn wake_for_post(&self) {
        self.shared.notify();
    }

    /// [`post_to_handle`](Self::post_to_handle) without the thread's port cache.
    #[cfg(not(loom))]
    #[cold]
    fn post_uncached(
        handle: crate::RawHandle,
        first: u64,
        second: u64,
        third: u64,
    ) -> Option<io::Result<()>> {
        let record = Completion::from_words([first, second, third]);
        PORTS.get(handle).map(|port| port.post(record))
    }

    /// Hands the port to its handle, which keeps it alive until it is closed
    /// ([`close`](Self::close), or [`check_handle`](Self::check_handle) finding the handle
    /// closed behind the library's back), as `CloseHandle` expects of a port made by
    /// `CreateIoCompletionPort`. Returns the handle.
    #[cfg(not(loom))]
    pub fn into_handle(self) -> crate::RawHandle {
        PORTS.keep(self)
    }

    /// Whether `self` and `other` are handles to the same port.
    pub fn same_port(&self, other: &Port) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The port's socket readiness, made by `make` (and given its thread, for
    /// [`Drive::Thread`]) on first use. Every caller passes the same type: the socket code's
    /// reactor.
    #[cfg(not(loom))]
    pub(crate) fn readiness<R: crate::drive::Readiness>(
        &self,
        make: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<Arc<R>> {
        let shared = &*self.shared;
        let (driving, made) = shared.reactor.get_or_make(|| {
            let made = make()?;
            // The port's spin limit holds for the inline drive's leader too.
            #[cfg(not(loom))]
            made.turns().limit_spin(shared.spin.limit());
            Ok(Driving::new(Arc::new(made)))
        })?;
        if made {
            match shared.drive {
                Drive::Thread => Arc::clone(driving.driven()).spawn_thread("iocp-reactor")?,
                Drive::Inline => shared.wake_a_leader(),
            }
        }
        Ok(Arc::clone(driving.driven())
            .into_any()
            .downcast()
            .unwrap_or_else(|_| unreachable!("a port's readiness has one type")))
    }

    /// Gives the port `readiness` in place of a reactor (a loom model's, through
    /// `Scripted::drive`): a waiter already asleep is woken to lead. Panics if the port has
    /// readiness already.
    #[cfg(loom)]
    pub(crate) fn install(&self, readiness: Arc<dyn Driven>) {
        let shared = &*self.shared;
        let installed = shared.reactor.get_or_make(|| Ok(Driving::new(readiness)));
        assert!(
            installed.is_ok_and(|(_, made)| made),
            "readiness given twice"
        );
        shared.wake_a_leader();
    }
}

/// What [`Port::post_to_handle_fast`] did.
#[cfg(all(not(loom), feature = "c-abi"))]
#[derive(Debug)]
pub enum FastPost {
    /// The record is queued, and nobody needs waking.
    Posted,
    /// The record is queued; [`Port::wake_for_post`] on this port wakes whoever it is for.
    Wake(Port),
    /// Nothing was done: post with [`Port::post_to_handle`].
    Missed,
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("capacity", &self.capacity())
            .field("queued", &self.queued())
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn deadline(timeout: Option<Duration>) -> Option<Deadline> {
    // A timeout too long for the clock is no timeout.
    timeout.and_then(Deadline::after)
}

impl Shared {
    /// The run of up to `max` records ready now, for a [`Batch`], if there is one. Under the
    /// exclusive dequeue, which keeps other dequeuers off the claim but for a `get` that was
    /// already taking its one record.
    fn ready_run(&self, max: usize) -> Option<(Consumer<'_>, usize)> {
        let mut consumer = self.ring.consume();
        let n = consumer.ready(max);
        (n > 0).then_some((consumer, n))
    }

    /// [`ready_run`](Self::ready_run) once a record comes, waiting up to `timeout` (a poll of
    /// the port's readiness when zero).
    #[cold]
    fn wait_run(&self, max: usize, timeout: Option<Duration>) -> io::Result<(Consumer<'_>, usize)> {
        if timeout == Some(Duration::ZERO) {
            return match self.poll_reactor() {
                true => self.ready_run(max).ok_or_else(error::timed_out),
                false => Err(error::timed_out()),
            };
        }
        // SeqCst: published before this waiter registers, read by posters.
        self.wanted.store(1, Ordering::SeqCst);
        let found = self.wait(
            deadline(timeout),
            || self.ring.has_ready(),
            || self.ring.has_claimed(),
            || self.ready_run(max),
        );
        // Relaxed: nobody sleeps on this port's exclusive wait any more.
        self.wanted.store(0, Ordering::Relaxed);
        Ok(found?)
    }

    /// Closes the port (see [`Port::close`]); `false` if it was closed already.
    fn shut(&self) -> bool {
        // SeqCst: pairs with the waiters' SeqCst registration and check (see `parker`).
        if self.closed.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.waiters.wake_all();
        if let Some(reactor) = self.reactor.get() {
            // Ends a reactor thread, or wakes a leader blocked in `epoll_wait`.
            reactor.stop();
        }
        #[cfg(not(loom))]
        {
            // The handle is gone with the port, as `CloseHandle` makes it on Windows, even
            // while sockets still refer to the port's memory.
            use crate::handle::Named;
            PORTS.remove(self);
            self.handle_fd().release();
            // The closing thread keeps nothing of the port (other threads let go as their
            // caches move on).
            forget_closed_ports();
            self.ring.forget_own_lane();
        }
        true
    }

    fn check_open(&self) -> io::Result<()> {
        // Acquire: pairs with the swap in `close` (a later call sees the port closed).
        if self.closed.load(Ordering::Acquire) {
            Err(error::closed())
        } else {
            Ok(())
        }
    }

    /// Whether [`notify`](Self::notify) has anyone to wake: a sleeper, or a leader blocked
    /// in `epoll_wait`.
    #[cfg(all(not(loom), feature = "c-abi"))]
    #[inline(always)]
    fn wants_notify(&self) -> bool {
        // (The same loads as `notify`'s and `wake_blocked_leader`'s, in the same order.)
        self.waiters.has_sleepers() || self.reactor.get().is_some_and(Driving::is_blocked)
    }

    /// After a record is queued: wakes the most recent sleeper, if there is one it helps.
    #[inline]
    fn notify(&self) {
        // (Under loom the claim's fence, in `Ring::claim` and `Ring::push`, stands for the
        // SeqCst order this check relies on.)
        if !self.waiters.has_sleepers() {
            self.wake_blocked_leader();
            return;
        }
        self.notify_sleeper();
    }

    /// [`notify`](Self::notify) when a waiter sleeps.
    #[cold]
    fn notify_sleeper(&self) {
        // SeqCst: read after `has_sleepers` saw the exclusive waiter, which stored it first.
        let wanted = self.wanted.load(Ordering::SeqCst);
        let helps = if wanted > 0 {
            // The exclusive waiter ignores the concurrency value but wants `wanted` records.
            self.ring.len() >= wanted
        } else {
            // `get` sleepers held back by the concurrency value are woken by `withdraw`.
            self.has_room()
        };
        if helps {
            self.waiters.wake_one();
        }
    }

    /// Wakes the most recent sleeper, or else a leader blocked in `epoll_wait`.
    fn wake_someone(&self) {
        crate::primitive::loom_seqcst_fence();
        if !self.waiters.wake_one() {
            self.wake_blocked_leader();
        }
    }

    /// Interrupts a leader blocked in `epoll_wait`, if one is.
    #[inline]
    fn wake_blocked_leader(&self) {
        if let Some(reactor) = self.reactor.get() {
            reactor.wake_if_blocked();
        }
    }

    /// One non-blocking look at socket readiness, if waiters drive the reactor and none
    /// is polling; whether it looked.
    fn poll_reactor(&self) -> bool {
        self.inline_reactor().is_some_and(|reactor| {
            reactor
                .driven()
                .lead(Some(Duration::ZERO), &|| false, &|| ())
                .is_some()
        })
    }

    /// The reactor when waiters drive it themselves.
    fn inline_reactor(&self) -> Option<&Driving> {
        match self.drive {
            Drive::Inline => self.reactor.get(),
            Drive::Thread => None,
        }
    }

    /// The shared wait loop: `attempt` until it yields; meanwhile lead the reactor if
    /// nobody does (inline drive), else spin while `ready` says it might, then sleep on the
    /// wait stack until `deadline` unless `pending` (the sequentially consistent last look,
    /// see `ring`) says a record is on its way.
    fn wait<R>(
        &self,
        deadline: Option<Deadline>,
        ready: impl Fn() -> bool,
        pending: impl Fn() -> bool,
        attempt: impl FnMut() -> Option<R>,
    ) -> Result<R, Ended> {
        let (mut led, mut slept) = (false, false);
        let result = self.wait_leading(deadline, ready, pending, attempt, &mut led, &mut slept);
        crate::primitive::loom_seqcst_fence();
        if self.waiters.has_sleepers() && (led || (slept && self.ring.has_claimed())) {
            // Leaving the lead, however the wait ended: a follower takes over polling. And a
            // waiter that slept may have spent a wake meant for a record it did not take
            // (one behind a slot claimed but not yet published, say): if records remain,
            // it passes a wake on, so no record waits while a waiter sleeps.
            self.waiters.wake_one();
        }
        result
    }

    fn wait_leading<R>(
        &self,
        deadline: Option<Deadline>,
        ready: impl Fn() -> bool,
        pending: impl Fn() -> bool,
        mut attempt: impl FnMut() -> Option<R>,
        led: &mut bool,
        slept: &mut bool,
    ) -> Result<R, Ended> {
        // A look for work that takes no barrier: the leader's spin and the waiter's.
        let look = || ready() || self.is_closed_relaxed();
        loop {
            if let Some(found) = attempt() {
                return Ok(found);
            }
            self.check_open().map_err(|_| Ended::Closed)?;
            if deadline.is_some_and(Deadline::has_passed) {
                return Err(Ended::TimedOut);
            }
            if let Some(reactor) = self.inline_reactor() {
                let timeout = deadline.map(Deadline::remaining);
                // The leader's last look before `epoll_wait` pairs with posters as a
                // sleeper's does (see `ring`).
                let sync = || self.ring.sync_with_posters();
                if let Some(polled) = reactor.driven().lead(timeout, &look, &sync) {
                    *led = true;
                    match polled {
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {
                            return Err(Ended::Interrupted)
                        }
                        // Loom has no clock: a model's timed turn that found nothing is one
                        // whose deadline has come (see `scripted`). One more look,
                        // as after any poll, and the wait times out.
                        #[cfg(loom)]
                        Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                            return attempt().ok_or(Ended::TimedOut);
                        }
                        // Other poll failures are transient (ENOMEM); the loop tries again.
                        _ => continue,
                    }
                }
            }
            let (spun_ready, start) = self.spin.spin(deadline, look);
            if spun_ready {
                continue;
            }
            // A record claimed and not yet published is a poster between its claim and its
            // stamp, nanoseconds from done: no reason to sleep, so none to pay for the last
            // look's barrier (a `membarrier` that interrupts every core running the
            // program). A waiter that has just emptied the ring finds one often when the
            // poster posts without a pause: in a pool of 4 `get` workers behind one such
            // producer (AMD EPYC), 42,000 of 43,000 last looks found only that, and the
            // workers' `membarrier` calls went from 46,000-63,000 to 1,800 with this.
            if pending() {
                self.pause_for_publication();
                continue;
            }
            // About to sleep, which costs a system call anyway: the moment to notice that a
            // C program closed the port's handle with plain `close` (see `check_handle`).
            #[cfg(not(loom))]
            if self.handle_is_stale() {
                return Err(Ended::Closed);
            }
            let parker = Parker::current();
            self.waiters.register(&parker);
            crate::primitive::loom_seqcst_fence();
            // The waiter's side of the Dekker pair with posters to private lanes (`ring`).
            self.ring.sync_with_posters();
            // SeqCst (inside `pending`, `is_led`, and here): the waiter half of the Dekker
            // pairs described in `ring`, `parker` and `reactor`.
            if pending() || self.closed.load(Ordering::SeqCst) || self.unled() {
                if !self.waiters.unregister(&parker) {
                    // A waker took this waiter meanwhile: its wake is spent here.
                    *slept = true;
                }
                self.pause_for_publication();
                continue;
            }
            // Even an endless wait sleeps in day-long timed naps: Linux restarts neither
            // `epoll_wait` nor a timed futex wait after a signal handler, so this way every
            // port wait ends on a handler, `SA_RESTART` or not, however it sleeps.
            // (Loom has no clock: there, an endless wait sleeps without a deadline.)
            let nap = deadline.or_else(|| Deadline::after(NAP).filter(|_| !cfg!(loom)));
            *slept = true;
            let ended = self.waiters.park(&parker, nap);
            if ended == WaitStatus::Woken {
                self.spin.learn(start, true);
                continue;
            }
            if ended == WaitStatus::TimedOut && deadline.is_none() {
                self.waiters.unregister(&parker);
                continue;
            }
            self.spin.learn(start, false);
            if !self.waiters.unregister(&parker) {
                // A wake raced the timeout. It was meant for this waiter: use it, or hand
                // it on if something is ready that this waiter could not take.
                if let Some(found) = attempt() {
                    return Ok(found);
                }
                if ready() {
                    self.waiters.wake_one();
                }
            }
            return Err(match ended {
                WaitStatus::Interrupted => Ended::Interrupted,
                _ => Ended::TimedOut,
            });
        }
    }

    /// Pauses before a waiter looks again, when a record is claimed but not yet published
    /// (or the reactor needs a leader): the record is nanoseconds away, and a pause beats
    /// hammering its line.
    ///
    /// Under loom the pause is a yield, and one waiter at a time takes it, holding
    /// `pausing` across the yield while the others block on the mutex. Loom cannot finish a
    /// model in which two waiters yield to each other forever while the poster they wait
    /// for stays preempted (no preemption is spent on a switch away from a yield); with
    /// the others blocked, the yield has to let a thread that is not pausing run. The
    /// mutex adds no order that matters here: each waiter has just passed its SeqCst fence
    /// (see `wait_leading`), and posters never take it.
    fn pause_for_publication(&self) {
        #[cfg(loom)]
        let _one_at_a_time = crate::primitive::lock(&self.pausing);
        crate::primitive::spin_loop();
    }

    /// Whether the inline reactor has no leader: then a waiter must not sleep, but lead.
    fn unled(&self) -> bool {
        // SeqCst: the waiter half of the Dekker pair with `wake_a_leader`, after the
        // reactor is installed.
        crate::primitive::fence(Ordering::SeqCst);
        self.inline_reactor()
            .is_some_and(|reactor| !reactor.is_led())
    }

    /// The inline reactor was just installed: a waiter that went to sleep before it existed
    /// must come and lead.
    fn wake_a_leader(&self) {
        // SeqCst: pairs with the fence in `unled`.
        crate::primitive::fence(Ordering::SeqCst);
        if self.waiters.has_sleepers() {
            self.waiters.wake_one();
        }
    }

    /// Whether the handle descriptor was closed behind the library's back; if so the port
    /// is closed now (its waiters fail with `EBADF`) and the number forgotten unclosed.
    /// One `fstat` once the number has been handed out (see `check_handle`).
    #[cfg(not(loom))]
    fn handle_is_stale(&self) -> bool {
        use crate::handle::Named;
        let handle = self.handle_fd();
        if handle.is_intact() {
            return false;
        }
        handle.disown();
        self.shut();
        true
    }

    fn is_closed_relaxed(&self) -> bool {
        // Relaxed: a hint to stop spinning; the decision is re-made with SeqCst.
        self.closed.load(Ordering::Relaxed)
    }

    /// The non-exclusive dequeue behind `get` and `get_up_to`: takes a run of one to `max`
    /// records, handing each to `sink` with its index, waiting up to `timeout` for one.
    fn dequeue_some(
        self: &Arc<Self>,
        max: usize,
        timeout: Option<Duration>,
        mut sink: impl FnMut(usize, &Completion),
    ) -> io::Result<usize> {
        if max == 0 {
            return Err(error::invalid());
        }
        self.check_open()?;
        // Acquire: pairs with the release in `Exclusive::drop`.
        if self.dequeuers.load(Ordering::Acquire) & EXCLUSIVE != 0 {
            return Err(error::busy());
        }
        let kept = self.come_back();
        if let Some(n) = self.try_take(max, kept, &mut sink)? {
            return Ok(n);
        }
        if timeout == Some(Duration::ZERO) {
            // A poll does not wait, so it does not count as a waiter for the EBUSY rule;
            // it does give socket readiness one look.
            if self.poll_reactor() {
                if let Some(n) = self.try_take(max, false, &mut sink)? {
                    return Ok(n);
                }
            }
            return Err(error::timed_out());
        }
        let deadline = deadline(timeout);
        self.enter_wait()?;
        let result = self
            .wait(
                deadline,
                || self.ring.has_ready() && self.has_room(),
                || self.ring.has_claimed() && self.has_room(),
                || self.try_take(max, false, &mut sink).transpose(),
            )
            .map_err(io::Error::from)
            .and_then(|found| found);
        // Release: pairs with the acquire CAS in `enter_exclusive`.
        self.dequeuers.fetch_sub(1, Ordering::Release);
        result
    }

    /// Takes a run of up to `max` records if the concurrency value lets this thread go.
    /// `counted`: the thread still counts as running on this port (it was released by it
    /// and came straight back), so it needs no admission and keeps its place if it takes
    /// something.
    fn try_take(
        self: &Arc<Self>,
        max: usize,
        counted: bool,
        sink: &mut impl FnMut(usize, &Completion),
    ) -> io::Result<Option<usize>> {
        if !counted && !self.admit() {
            return Ok(None);
        }
        let mut tries = 0u32;
        let mut consumer = loop {
            if let Some(consumer) = self.ring.try_consume() {
                break consumer;
            }
            // A batched dequeue may hold the claim for as long as its `Batch` lives.
            // Acquire: pairs with the release in `Exclusive::drop`.
            if self.dequeuers.load(Ordering::Acquire) & EXCLUSIVE != 0 {
                self.give_up(counted);
                return Err(error::busy());
            }
            // Another `get` holds the claim for one copy. Each look pulls the claim's line
            // from its holder, which writes it again to release and to take its next record:
            // backing off exponentially (as crossbeam's `Backoff` does) lets a worker take a
            // run of records with the line staying in its cache, where looking after every
            // pause made the line travel for nearly every record. On a 2-core Xeon VM
            // (`iocp-bench drain`'s pool rows, one producer, builds alternated) the C GQCS
            // rows went from 7.0 / 5.8 M/s to 10.2 / 9.5 M/s with two workers and from
            // 7.4 / 6.2 to 8.2 / 7.4 with four; Rust's `get` stayed at 39-45 M/s. With more
            // threads than cores the holder may have been preempted holding the claim:
            // after a while, give it the CPU.
            tries += 1;
            if tries < CLAIM_SPINS {
                // (Under loom a pause is a scheduling point: one is enough.)
                let pauses = if cfg!(loom) {
                    1
                } else {
                    1u32 << tries.min(CLAIM_BACKOFF)
                };
                for _ in 0..pauses {
                    crate::primitive::spin_loop();
                }
            } else {
                crate::primitive::yield_now();
            }
        };
        let ready = consumer.ready(max);
        // A batched dequeue that began meanwhile owns what is queued from then on: a record
        // posted after it was seen holding the port must not go to this call.
        // Acquire: pairs with the release in `Exclusive::drop`.
        if ready > 0 && self.dequeuers.load(Ordering::Acquire) & EXCLUSIVE != 0 {
            drop(consumer);
            self.give_up(counted);
            return Err(error::busy());
        }
        if ready == 0 {
            drop(consumer);
            self.give_up(counted);
            return Ok(None);
        }
        consumer.take(ready, |i, record| sink(i, record));
        #[cfg(not(loom))]
        let look = self.due_for_a_look(ready);
        drop(consumer);
        if !counted {
            self.mark_released();
        }
        #[cfg(not(loom))]
        if look {
            self.poll_reactor();
        }
        Ok(Some(ready))
    }

    /// Counts `taken` records toward the next look at socket readiness; whether it is due.
    ///
    /// On an inline-driven port readiness is collected by a waiter that finds the port
    /// empty. While records keep coming (posts, or a server's own requests completing at
    /// once), no `get` finds it empty, and a socket that became ready would wait for as
    /// long: so the taker gives the reactor a non-blocking look (none if another thread is
    /// polling) once [`LOOK_EVERY`] records have been taken and [`LOOK_PERIOD`] has passed
    /// since the last look. The count spares all but one clock read in `LOOK_EVERY`
    /// records; the period, a look (an `epoll_wait`) for every `LOOK_EVERY` records where
    /// records go fast. Under the consumer claim.
    #[cfg(not(loom))]
    fn due_for_a_look(&self, taken: usize) -> bool {
        if self.inline_reactor().is_none() {
            return false;
        }
        let looks = &*self.looks;
        // Relaxed (all): only the consumer-claim holder writes these, and the claim's
        // acquire and release order one holder's stores before the next holder's loads.
        let count = looks.taken.load(Ordering::Relaxed);
        let count = count.saturating_add(u32::try_from(taken).unwrap_or(u32::MAX));
        if count < LOOK_EVERY {
            looks.taken.store(count, Ordering::Relaxed);
            return false;
        }
        looks.taken.store(0, Ordering::Relaxed);
        let now = Deadline::now().as_nanos();
        let last = looks.at_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) < LOOK_PERIOD.as_nanos() as u64 {
            return false;
        }
        looks.at_ns.store(now, Ordering::Relaxed);
        true
    }

    /// `GetMultipleCompletionStatus`: hands runs of records to `sink` with their index
    /// (0, 1, ...), at most `max` in all, until at least `min` have gone or the deadline
    /// passes.
    fn dequeue_many(
        &self,
        max: usize,
        min: usize,
        timeout: Option<Duration>,
        mut sink: impl FnMut(usize, &Completion),
    ) -> io::Result<Drained> {
        if max == 0 || max > GMCS_NMAX || min > max {
            return Err(error::invalid());
        }
        self.check_open()?;
        self.enter_exclusive()?;
        let _exclusive = Exclusive(self);
        let mut count = self.take_many(max, 0, &mut sink);
        if count == 0 && min == 0 && self.poll_reactor() {
            count = self.take_many(max, 0, &mut sink);
        }
        if count >= min {
            return Ok(Drained {
                count,
                status: DrainStatus::Complete,
            });
        }
        // SeqCst: published before this waiter registers, read by posters (see `notify`).
        self.wanted.store(min - count, Ordering::SeqCst);
        let result = self.wait(
            deadline(timeout),
            // Spin and re-check on the head slot alone: reading `tail` here would pull the
            // line every producer's claim writes. Partial runs are taken as they come; the
            // `wanted` threshold only spares posters from waking a sleeper too early.
            || self.ring.has_ready(),
            || self.ring.has_claimed(),
            || {
                let took = self.take_many(max - count, count, &mut sink);
                if took > 0 {
                    count += took;
                    if count >= min {
                        return Some(());
                    }
                    // SeqCst: as above.
                    self.wanted.store(min - count, Ordering::SeqCst);
                }
                None
            },
        );
        // Relaxed: nobody sleeps on this port's batched wait any more.
        self.wanted.store(0, Ordering::Relaxed);
        let status = match result {
            Ok(()) => DrainStatus::Complete,
            Err(Ended::TimedOut) => DrainStatus::TimedOut,
            Err(Ended::Interrupted) => DrainStatus::Interrupted,
            Err(Ended::Closed) => return Err(error::closed()),
        };
        Ok(Drained { count, status })
    }

    /// Copies out the runs ready now, at most `max` records, numbered from `first`.
    fn take_many(
        &self,
        max: usize,
        first: usize,
        sink: &mut impl FnMut(usize, &Completion),
    ) -> usize {
        // Under the exclusive dequeue the claim is free but for a `get` that slipped in
        // before it; that one is quick.
        let mut consumer = self.ring.consume();
        let total = if self.scalar_drain {
            // The scalar drain frees one record per pass.
            let mut total = 0;
            while total < max
                && consumer.take_ready(1, |_, record| sink(first + total, record)) == 1
            {
                total += 1;
            }
            total
        } else {
            consumer.take_ready(max, |i, record| sink(first + i, record))
        };
        #[cfg(not(loom))]
        if self.due_for_a_look(total) {
            drop(consumer);
            self.poll_reactor();
        }
        total
    }

    fn enter_exclusive(&self) -> io::Result<()> {
        // Acquire: pairs with the release decrements of waiting `get` calls and with
        // `Exclusive::drop`.
        self.dequeuers
            .compare_exchange(0, EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| error::busy())
    }

    fn enter_wait(&self) -> io::Result<()> {
        // Acquire: pairs with the release in `Exclusive::drop`.
        self.dequeuers
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n & EXCLUSIVE == 0).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| error::busy())
    }

    fn limited(&self) -> bool {
        self.concurrency != usize::MAX
    }

    fn has_room(&self) -> bool {
        // SeqCst: pairs with the SeqCst decrement in `withdraw` (waiter/releaser Dekker).
        !self.limited() || self.active.load(Ordering::SeqCst) < self.concurrency
    }

    /// Counts this thread in before it takes a record; `false` at the concurrency value.
    fn admit(&self) -> bool {
        !self.limited()
            || self
                .active
                // SeqCst: ordered with `has_room` as the decrement in `withdraw` is.
                .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| {
                    (n < self.concurrency).then_some(n + 1)
                })
                .is_ok()
    }

    /// Counts a thread out, waking a sleeper the limit held back if records are ready.
    fn withdraw(&self) {
        if !self.limited() {
            return;
        }
        // SeqCst: the releaser half of the Dekker pair with `has_room` in a waiter.
        let before = self.active.fetch_sub(1, Ordering::SeqCst);
        // (Loom reads SeqCst accesses as AcqRel; its fence stands for the order that the
        // decrement and the look at the lanes below have in the single SeqCst order.)
        crate::primitive::loom_seqcst_fence();
        if before >= self.concurrency && self.ring.has_claimed() {
            // The thread held back may be asleep, or leading the reactor.
            self.wake_someone();
        }
    }

    /// Remembers that this thread was released by this port.
    fn mark_released(self: &Arc<Self>) {
        if !self.limited() {
            return;
        }
        let remembered = with_released(|slot| {
            let mut slot = slot.borrow_mut();
            match &mut *slot {
                Some(released) if released.is(self) => released.counted = true,
                // Replacing an entry that is still counted counts it out.
                _ => {
                    *slot = Some(Released {
                        port: Arc::downgrade(self),
                        counted: true,
                    })
                }
            }
        });
        if remembered.is_none() {
            // A call from a thread-local's destructor after the thread's locals are gone:
            // nothing would count the thread out later, so it is counted out now.
            self.withdraw();
        }
    }

    /// A thread calling `get` is back from whatever it was released to do: it no longer
    /// counts against the port that released it, whichever port it calls now. (Also a port
    /// without a limit: such a port never counts a thread in, but it must count one out, or
    /// a thread that moved on to it would hold its old port's limit for as long as it waits
    /// there.)
    ///
    /// Returns `true` when that port is this one: the thread then keeps its place for the
    /// attempt it is about to make, which counts it out only if it finds nothing (Windows
    /// lets a thread that takes a packet at once go on running). A worker looping on one
    /// port thus pays no accounting while it finds work.
    ///
    /// Always inlined, like `Consumer::ready` and for the same reason: in `libiocp.so` it
    /// was a call before every dequeue (4,000 queued records taken back one
    /// `GetQueuedCompletionStatus` at a time: 15.7 -> 15.3 ns a record).
    #[inline(always)]
    fn come_back(&self) -> bool {
        with_released(|slot| {
            let mut slot = slot.borrow_mut();
            let Some(released) = slot.as_mut() else {
                return false;
            };
            if !released.counted {
                return false;
            }
            if released.is(self) {
                // Still counted until the attempt settles it (see `try_take`): a thread
                // that takes something then needs no second look at its mark.
                return true;
            }
            released.counted = false;
            if let Some(port) = released.port.upgrade() {
                port.withdraw();
            }
            false
        })
        .unwrap_or(false)
    }

    /// Counts this thread out after an attempt that took nothing; `counted`: the attempt
    /// was made on the thread's place from its last release (see `come_back`), which goes
    /// with it.
    fn give_up(&self, counted: bool) {
        if counted {
            with_released(|slot| {
                if let Some(released) = slot.borrow_mut().as_mut() {
                    released.counted = false;
                }
            });
        }
        self.withdraw();
    }
}

/// Records bound for a port, gathered to be posted together with [`Port::post_many`]: the
/// reactor gathers what one poll completes. They are posted when the buffer is full, when a
/// record for another port comes, and when it is dropped, in the order pushed.
#[cfg(not(loom))]
pub(crate) struct Posts {
    port: Option<Port>,
    records: [Completion; POSTS_BATCH],
    len: usize,
}

/// The periodic look at socket readiness of a port that is never found empty (see
/// `Shared::due_for_a_look`).
#[cfg(not(loom))]
struct Looks {
    /// Records taken since the last look, or since the last check for one.
    taken: AtomicU32,
    /// When the last look was, in nanoseconds on CLOCK_MONOTONIC.
    at_ns: AtomicU64,
}

/// Records taken from an inline-driven port, while it is never found empty, between two
/// looks at socket readiness, or at whether one is due (see `Shared::due_for_a_look`).
#[cfg(not(loom))]
const LOOK_EVERY: u32 = 128;

/// The shortest time between two looks at socket readiness on an inline-driven port that
/// is never found empty. A look is a non-blocking `epoll_wait`, some 0.3 µs on an AMD EPYC
/// VM: at most 1.5% of a busy taker's time, where one every 128 records cost about 2 ns a
/// record to a thread taking back its own posts (one thread posting 16 records and taking
/// them back with `get_many`, on a port with a socket: 7.6 ns a record, 5.75 with the
/// period; 4.7 on a port without).
#[cfg(not(loom))]
const LOOK_PERIOD: Duration = Duration::from_micros(20);

/// Records a [`Posts`] holds before it posts them.
#[cfg(not(loom))]
const POSTS_BATCH: usize = 64;

#[cfg(not(loom))]
impl Posts {
    pub(crate) const fn new() -> Posts {
        Posts {
            port: None,
            records: [Completion::new(0, 0, 0); POSTS_BATCH],
            len: 0,
        }
    }

    /// Queues `record` for `port`.
    pub(crate) fn push(&mut self, port: &Port, record: Completion) {
        let same = self.port.as_ref().is_some_and(|p| p.same_port(port));
        if !same || self.len == POSTS_BATCH {
            self.flush();
        }
        if !same {
            self.port = Some(port.clone());
        }
        self.records[self.len] = record;
        self.len += 1;
    }

    /// Posts what is gathered.
    pub(crate) fn flush(&mut self) {
        if let Some(port) = &self.port {
            if self.len > 0 {
                // A closed port discards its records, these with them.
                let _ = port.post_many(&self.records[..self.len]);
            }
        }
        self.len = 0;
    }
}

#[cfg(not(loom))]
impl Drop for Posts {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Why [`Shared::wait`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    TimedOut,
    Interrupted,
}

impl From<Ended> for io::Error {
    fn from(ended: Ended) -> io::Error {
        match ended {
            Ended::Closed => error::closed(),
            Ended::TimedOut => error::timed_out(),
            Ended::Interrupted => error::interrupted(),
        }
    }
}

/// The port a thread was last released by (the concurrency value's accounting). Weak, so
/// that a thread does not keep a port alive; the allocation it pins keeps the address from
/// being reused, so comparing addresses is sound.
struct Released {
    port: Weak<Shared>,
    /// Whether the thread still counts as running on `port`.
    counted: bool,
}

impl Released {
    fn is(&self, port: &Shared) -> bool {
        std::ptr::eq(self.port.as_ptr(), port)
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        if self.counted {
            if let Some(port) = self.port.upgrade() {
                port.withdraw();
            }
        }
    }
}

/// Runs `f` on the thread's [`Released`] slot; `None` once the thread's locals are gone.
#[cfg(not(loom))]
#[inline]
fn with_released<R>(f: impl FnOnce(&RefCell<Option<Released>>) -> R) -> Option<R> {
    with_locals(|locals| f(&locals.released))
}

// Loom's `thread_local!` has no `const` initializer form.
#[cfg(loom)]
loom::thread_local! {
    static RELEASED: RefCell<Option<Released>> = RefCell::new(None);
}

/// Runs `f` on the thread's [`Released`] slot.
#[cfg(loom)]
fn with_released<R>(f: impl FnOnce(&RefCell<Option<Released>>) -> R) -> Option<R> {
    Some(RELEASED.with(f))
}

/// Holds the port's exclusive dequeue; released on drop.
struct Exclusive<'a>(&'a Shared);

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        // Release: pairs with the acquire in `enter_exclusive`, `enter_wait` and `get`.
        self.0.dequeuers.store(0, Ordering::Release);
    }
}

/// A borrowed run of ready records (see [`Port::drain`]): an exact-size iterator that
/// reads them in place and frees the ones it yielded when dropped.
pub struct Batch<'a> {
    consumer: Consumer<'a>,
    len: usize,
    next: usize,
    _exclusive: Exclusive<'a>,
}

impl Iterator for Batch<'_> {
    type Item = Completion;

    // Inline (and `Consumer::get`): one call per record otherwise, in a crate built
    // without LTO.
    #[inline]
    fn next(&mut self) -> Option<Completion> {
        (self.next < self.len).then(|| {
            self.next += 1;
            self.consumer.get(self.next - 1)
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batch<'_> {}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.consumer.release(self.next);
        // The exclusive dequeue is released next (field order); records left behind are
        // for the next dequeue, which nobody could start while the batch lived.
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.len)
            .field("yielded", &self.next)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_spin_limit_is_checked_and_holds_for_waiters_and_the_readiness_leader() {
        for bad in [Duration::from_nanos(500), Duration::from_secs(2)] {
            let err = Port::builder().spin_limit(bad).build().unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
        let limits = [
            (None, MAX_SPIN),
            (Some(Duration::ZERO), Duration::ZERO),
            (Some(MIN_SPIN), MIN_SPIN),
            (Some(SPIN_LIMIT_MAX), SPIN_LIMIT_MAX),
        ];
        for (limit, expected) in limits {
            for drive in [Drive::Inline, Drive::Thread] {
                let builder = Port::builder().drive(drive);
                let builder = match limit {
                    Some(limit) => builder.spin_limit(limit),
                    None => builder,
                };
                let port = builder.build().unwrap();
                assert_eq!(port.shared.spin.limit(), expected, "{limit:?} {drive:?}");
                assert_eq!(port.shared.spin.is_off(), expected.is_zero());
                let reactor = port.readiness(crate::net::Reactor::new).unwrap();
                let turns = crate::drive::Readiness::turns(&*reactor);
                assert_eq!(turns.spin_limit(), expected, "{limit:?} {drive:?}");
                port.close().unwrap();
            }
        }
    }

    #[test]
    fn ports_without_a_spin_hand_records_between_threads_that_sleep_for_each() {
        let no_spin = || Port::builder().spin_limit(Duration::ZERO).build().unwrap();
        let (ping, pong) = (no_spin(), no_spin());
        const ROUNDS: u64 = 2_000;
        let wait = Some(Duration::from_secs(10));
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    let record = ping.get(wait).unwrap();
                    pong.post(record).unwrap();
                }
            });
            for i in 0..ROUNDS {
                ping.post(Completion::new(i, 1, 0)).unwrap();
                assert_eq!(pong.get(wait).unwrap().key(), i);
            }
        });
        assert!(ping.shared.spin.is_off() && pong.shared.spin.is_off());
    }

    #[test]
    fn a_busy_inline_port_looks_at_readiness_after_enough_records_and_enough_time() {
        let port = Port::builder().drive(Drive::Inline).build().unwrap();
        let shared = &*port.shared;
        assert!(
            !shared.due_for_a_look(LOOK_EVERY as usize),
            "no reactor: no look"
        );
        port.readiness(crate::net::Reactor::new).unwrap();
        let looks = &*shared.looks;
        // Never looked yet: due once enough records have been taken.
        assert!(!shared.due_for_a_look(LOOK_EVERY as usize - 1));
        assert!(shared.due_for_a_look(1));
        assert_eq!(looks.taken.load(Ordering::Relaxed), 0);
        // The last look "an hour from now": enough records, but not enough time.
        let later = Deadline::now().plus(Duration::from_secs(3600)).as_nanos();
        looks.at_ns.store(later, Ordering::Relaxed);
        assert!(!shared.due_for_a_look(LOOK_EVERY as usize));
        assert_eq!(
            looks.taken.load(Ordering::Relaxed),
            0,
            "counting starts over"
        );
        assert_eq!(looks.at_ns.load(Ordering::Relaxed), later);
        // Long enough ago: due, and the time of this look is kept.
        looks.at_ns.store(0, Ordering::Relaxed);
        assert!(!shared.due_for_a_look(LOOK_EVERY as usize / 2));
        assert!(shared.due_for_a_look(LOOK_EVERY as usize / 2));
        let at = looks.at_ns.load(Ordering::Relaxed);
        assert!(at > 0 && at <= Deadline::now().as_nanos());
    }

    #[test]
    fn a_port_whose_handle_was_closed_behind_its_back_closes_and_never_closes_the_number_again() {
        let port = Port::new().unwrap();
        port.check_handle().unwrap();
        let handle = port.handle();
        // An AIX program's `close(port)`, then a new file of the program's gets the number.
        let (file, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: dup2 atomically closes the port's descriptor and reuses its number.
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), handle) }, handle);
        let err = port.check_handle().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert!(port.is_closed());
        assert!(Port::from_handle(handle).is_none());
        drop(port);
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(handle, libc::F_GETFD) };
        assert_ne!(flags, -1, "the caller's descriptor survived");
        // SAFETY: the number is the program's again; close it as the program would.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(handle) });
    }

    #[test]
    fn a_wait_looks_at_the_handle_only_once_its_number_was_handed_out() {
        use crate::sys::fault::{fail, Call};
        let port = Port::builder().spin_limit(Duration::ZERO).build().unwrap();
        // From here every `fstat` of this thread fails as one of a closed descriptor would.
        let closed = fail(Call::Fstat, libc::EBADF)
            .on_this_thread()
            .times(u32::MAX)
            .arm();
        // Nobody was given the number, so nobody can have closed it: the wait sleeps
        // without a look, and times out.
        let err = port.get(Some(Duration::from_millis(5))).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT));
        port.check_handle().unwrap();
        assert_eq!(closed.hits(), 0);
        assert!(!port.is_closed());
        // Handed out, it may have been closed: the next wait looks before it sleeps.
        let handle = port.handle();
        let err = port.get(Some(Duration::from_millis(5))).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert_eq!(closed.hits(), 1);
        assert!(port.is_closed());
        drop((closed, port));
        // SAFETY: only the fault said it was closed; the port forgot the number unclosed,
        // and nothing else has it.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(handle) });
    }

    #[test]
    fn a_wait_notices_a_handle_closed_behind_its_back_before_it_sleeps() {
        let port = Port::new().unwrap();
        let handle = port.handle();
        let (file, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: dup2 atomically closes the port's descriptor and reuses its number, as an
        // AIX program's `close(port)` followed by its next `socket` would.
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), handle) }, handle);
        let started = std::time::Instant::now();
        let err = port.get(Some(Duration::from_secs(5))).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert!(started.elapsed() < Duration::from_secs(1), "it slept first");
        assert!(port.is_closed());
        drop(port);
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(handle, libc::F_GETFD) };
        assert_ne!(flags, -1, "the number was closed");
        // SAFETY: the number is the program's again; close it as the program would.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(handle) });
    }

    #[test]
    fn a_worker_that_finds_work_keeps_its_place_and_one_that_finds_none_gives_it_up() {
        let port = Port::builder().concurrency(1).build().unwrap();
        for key in 0..3 {
            port.post(Completion::new(key, 0, 0)).unwrap();
        }
        // Coming straight back and finding a record, the thread stays the one running.
        assert_eq!(port.get(Some(Duration::ZERO)).unwrap().key(), 0);
        assert_eq!(port.get(Some(Duration::ZERO)).unwrap().key(), 1);
        // Another thread is held back by the concurrency value while this one runs.
        let other = port.clone();
        let held = std::thread::spawn(move || other.get(Some(Duration::ZERO)).map(|r| r.key()));
        assert_eq!(
            held.join().unwrap().unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        // Finding nothing, this thread gives its place up, and the other one runs.
        assert_eq!(port.get(Some(Duration::ZERO)).unwrap().key(), 2);
        assert!(port.get(Some(Duration::ZERO)).is_err());
        port.post(Completion::new(3, 0, 0)).unwrap();
        let other = port.clone();
        let runs = std::thread::spawn(move || other.get(Some(Duration::ZERO)).map(|r| r.key()));
        assert_eq!(runs.join().unwrap().unwrap(), 3);
    }

    #[test]
    fn get_up_to_takes_the_run_ready_and_post_many_queues_in_order() {
        let port = Port::builder().capacity(8).build().unwrap();
        let records: Vec<Completion> = (0..20).map(|i| Completion::new(i, i as u32, 0)).collect();
        port.post_many(&records).unwrap();
        assert_eq!(port.queued(), 20);
        let mut out = [Completion::default(); 6];
        let mut got = Vec::new();
        while got.len() < 20 {
            let n = port.get_up_to(&mut out, Some(Duration::ZERO)).unwrap();
            assert!((1..=6).contains(&n));
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(got, records);
        let err = port.get_up_to(&mut [], None).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        port.close().unwrap();
        assert_eq!(
            port.post_many(&records).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }

    #[test]
    fn post_many_with_makes_each_record_once_in_order_also_into_the_overflow() {
        let port = Port::builder().capacity(8).build().unwrap();
        let made = std::cell::Cell::new(0);
        let items: Vec<u32> = (0..20).collect();
        let record = |&i: &u32| {
            made.set(made.get() + 1);
            Completion::new(u64::from(i) * 3, i, 7).with_error(i % 2)
        };
        port.post_many_with(&items, record).unwrap();
        assert_eq!(made.get(), 20);
        let mut out = [Completion::default(); 20];
        let drained = port.get_many(&mut out, 20, Some(Duration::ZERO)).unwrap();
        assert_eq!(drained.count, 20);
        let expected: Vec<Completion> = (0..20)
            .map(|i| Completion::new(u64::from(i) * 3, i, 7).with_error(i % 2))
            .collect();
        assert_eq!(out.to_vec(), expected);
        port.close().unwrap();
        let err = port.post_many_with(&items, record).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert_eq!(made.get(), 20, "nothing is made for a closed port");
    }

    /// Set in the environment of the child process that runs the panicking batch.
    const PANIC_CHILD: &str = "IOCP_POST_MANY_PANIC_CHILD";

    #[test]
    fn a_panic_while_a_batch_is_made_aborts_rather_than_leave_claimed_slots_empty() {
        use std::os::unix::process::ExitStatusExt;
        if std::env::var_os(PANIC_CHILD).is_some() {
            let port = Port::new().unwrap();
            let _ = port.post_many_with(&[1, 2, 3], |&i: &u64| {
                assert!(i < 2, "no record for item {i}");
                Completion::new(i, 0, 0)
            });
            return;
        }
        let test = "port::tests::a_panic_while_a_batch_is_made_aborts_rather_than_leave_claimed_slots_empty";
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--test-threads=1", "--nocapture"])
            .env(PANIC_CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "the child ended with {}:\n{stderr}",
            output.status
        );
        assert!(stderr.contains("no record for item 2"), "{stderr}");
    }

    #[test]
    fn a_fifo_port_keeps_the_order_posts_happened_in_across_threads() {
        for fifo in [false, true] {
            let port = Port::builder().fifo(fifo).capacity(64).build().unwrap();
            let poster = port.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    poster.post(Completion::new(1, i, 0)).unwrap();
                }
            })
            .join()
            .unwrap();
            // Posted after the other thread's posts, by way of `join`.
            port.post(Completion::new(2, 0, 0)).unwrap();
            let mut out = [Completion::default(); 512];
            let drained = port
                .get_many(&mut out, 201, Some(Duration::from_secs(5)))
                .unwrap();
            assert_eq!(drained.count, 201);
            let keys: Vec<u64> = out[..201].iter().map(Completion::key).collect();
            // Each thread's records in its order, whatever the port.
            let ones: Vec<u32> = out[..201]
                .iter()
                .filter(|r| r.key() == 1)
                .map(|r| r.bytes())
                .collect();
            assert_eq!(ones, (0..200).collect::<Vec<_>>());
            if fifo {
                assert_eq!(keys[200], 2, "the later post came out last");
            }
        }
    }

    #[test]
    fn a_lookup_by_handle_never_finds_a_closed_port_through_the_thread_cache() {
        let port = Port::new().unwrap();
        let handle = port.into_handle();
        // Looked up twice: the second lookup uses this thread's cached reference.
        for key in [1, 2] {
            let posted = Port::with_handle(handle, |port| port.post(Completion::new(key, 0, 0)));
            assert!(posted.unwrap().is_ok());
        }
        let kept = Port::from_handle(handle).unwrap();
        assert_eq!(kept.queued(), 2);
        kept.close().unwrap();
        drop(kept);
        assert!(
            Port::with_handle(handle, |_| ()).is_none(),
            "a closed port was found"
        );
        // A new port may get the number at once; a lookup finds it, not the old one.
        let again = Port::new().unwrap();
        let new_handle = again.into_handle();
        let found = Port::with_handle(new_handle, |port| port.queued()).unwrap();
        assert_eq!(found, 0);
        Port::from_handle(new_handle).unwrap().close().unwrap();
    }

    #[test]
    fn a_thread_exiting_still_posts_and_takes_by_handle_after_its_port_cache_is_gone() {
        /// Posts to and takes from the port by its handle when dropped: registered before
        /// the thread's first look-up, it is destroyed after the thread's `LOCALS`.
        struct Late(Option<crate::RawHandle>);
        impl Drop for Late {
            fn drop(&mut self) {
                let Some(handle) = self.0 else { return };
                assert!(
                    crate::sys::fast_tls::get().is_null(),
                    "the slot outlived LOCALS"
                );
                assert!(LOCALS.try_with(|_| ()).is_err());
                Port::post_to_handle(handle, Completion::new(5, 0, 0))
                    .unwrap()
                    .unwrap();
                let got = Port::with_handle(handle, |port| port.get(Some(Duration::ZERO)));
                // Record 2 (left in the thread's lane) or 5 (on the shared lane): no order
                // holds between two lanes.
                LATE_TOOK.store(got.unwrap().unwrap().key(), Ordering::Relaxed);
            }
        }
        static LATE_TOOK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        std::thread_local! {
            static LATE: RefCell<Late> = const { RefCell::new(Late(None)) };
        }
        // One running thread at most: a thread counted in and never counted out would
        // hold every other `get` back.
        let handle = Port::builder()
            .concurrency(1)
            .build()
            .unwrap()
            .into_handle();
        std::thread::spawn(move || {
            LATE.with(|late| late.borrow_mut().0 = Some(handle));
            // The thread's first look-up, through `LOCALS` and then the fast slot.
            for key in [1, 2] {
                Port::post_to_handle(handle, Completion::new(key, 0, 0))
                    .unwrap()
                    .unwrap();
            }
            assert!(!crate::sys::fast_tls::get().is_null());
            let got = Port::with_handle(handle, |port| port.get(Some(Duration::ZERO)));
            assert_eq!(got.unwrap().unwrap().key(), 1);
        })
        .join()
        .unwrap();
        // Relaxed: the join orders the exited thread's store before this load.
        let late = LATE_TOOK.load(Ordering::Relaxed);
        assert!(late == 2 || late == 5, "the late get took {late}");
        let port = Port::from_handle(handle).unwrap();
        // The exited thread's late `get` counted it in with nowhere to remember it, so it
        // counted itself out at once: this thread is not held back.
        let left = port.get(Some(Duration::from_secs(5))).unwrap().key();
        assert_eq!(late + left, 2 + 5, "each record taken once");
        assert!(port.get(Some(Duration::ZERO)).is_err());
        port.close().unwrap();
    }

    /// The C ABI's `PostQueuedCompletionStatus` path: the fast half posts only when the
    /// port is the thread's front one, open, and its lane has room with no overflow, and
    /// says when a sleeper must be woken; every other case leaves nothing done, and the
    /// slow half then keeps the thread's order through the overflow.
    #[cfg(feature = "c-abi")]
    #[test]
    fn the_fast_post_by_handle_posts_only_in_the_common_case_and_keeps_the_order() {
        let handle = Port::builder().capacity(4).build().unwrap().into_handle();
        let port = Port::from_handle(handle).unwrap();
        let record = |i: u32| Completion::new(1, i, i as usize);
        std::thread::scope(|s| {
            s.spawn(|| {
                // The thread has no cache yet, so no lane: nothing is done.
                assert!(matches!(
                    Port::post_to_handle_fast(handle, record(0)),
                    FastPost::Missed
                ));
                Port::post_to_handle(handle, record(0)).unwrap().unwrap();
                for i in 1..4 {
                    let posted = Port::post_to_handle_fast(handle, record(i));
                    assert!(matches!(posted, FastPost::Posted), "{i}: {posted:?}");
                }
                // The lane is full: nothing is done, and the slow half spills.
                assert!(matches!(
                    Port::post_to_handle_fast(handle, record(4)),
                    FastPost::Missed
                ));
                Port::post_to_handle(handle, record(4)).unwrap().unwrap();
                assert_eq!(port.queued(), 5);
            });
        });
        let mut out = [Completion::default(); 8];
        let drained = port.get_many(&mut out, 5, Some(Duration::ZERO)).unwrap();
        let order: Vec<u32> = out[..drained.count].iter().map(|r| r.bytes()).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);

        // A sleeper: the fast half posts and hands the port back to wake it.
        std::thread::scope(|s| {
            let asleep = || {
                let since = std::time::Instant::now();
                while !port.shared.waiters.has_sleepers() {
                    assert!(since.elapsed() < Duration::from_secs(10), "no waiter slept");
                    std::thread::yield_now();
                }
            };
            let waiter = s.spawn(|| port.get(Some(Duration::from_secs(10))).map(|r| r.bytes()));
            asleep();
            // This thread's cache first learns the port (and its lane) the slow way.
            Port::post_to_handle(handle, record(7)).unwrap().unwrap();
            assert_eq!(waiter.join().unwrap().unwrap(), 7);
            let waiter = s.spawn(|| port.get(Some(Duration::from_secs(10))).map(|r| r.bytes()));
            asleep();
            match Port::post_to_handle_fast(handle, record(8)) {
                FastPost::Wake(woken) => {
                    assert!(woken.same_port(&port));
                    woken.wake_for_post();
                }
                other => panic!("a sleeper was not to be woken: {other:?}"),
            }
            assert_eq!(waiter.join().unwrap().unwrap(), 8);
        });
        // A closed port: nothing is done, and the slow half says there is no port.
        port.close().unwrap();
        assert!(matches!(
            Port::post_to_handle_fast(handle, record(9)),
            FastPost::Missed
        ));
        assert!(Port::post_to_handle(handle, record(9)).is_none());
    }

    #[test]
    fn posts_through_the_handle_and_through_the_port_keep_the_threads_order() {
        // A small ring: most records take the overflow, in order with the ring's.
        let handle = Port::builder().capacity(4).build().unwrap().into_handle();
        let port = Port::from_handle(handle).unwrap();
        let record = |i: u32| Completion::new(1, i, i as usize);
        for i in 0..40 {
            match i % 3 {
                0 => port.post(record(i)).unwrap(),
                _ => Port::post_to_handle(handle, record(i)).unwrap().unwrap(),
            }
        }
        let mut out = [Completion::default(); 64];
        let drained = port
            .get_many(&mut out, 40, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(drained.count, 40);
        assert_eq!(out[..40], (0..40).map(record).collect::<Vec<_>>());
        port.close().unwrap();
        // A port that Rust code owns is found by its handle too, without the thread cache.
        let owned = Port::new().unwrap();
        let posted = Port::post_to_handle(owned.handle(), record(7));
        assert!(posted.unwrap().is_ok());
        assert_eq!(owned.get(Some(Duration::ZERO)).unwrap(), record(7));
    }

    #[test]
    fn a_port_that_rust_code_owns_is_not_kept_alive_by_a_lookup() {
        let port = Port::new().unwrap();
        let handle = port.handle();
        let weak = Arc::downgrade(&port.shared);
        assert_eq!(Port::with_handle(handle, |port| port.queued()), Some(0));
        drop(port);
        // The number is free now, and the tests run in parallel: another test's lookup of a
        // number it closed may find this port before it drops, holding it for the length of
        // its call. A reference a lookup kept would hold it for good.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while weak.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a lookup kept the port alive"
            );
            std::thread::yield_now();
        }
        let found = Port::with_handle(handle, |port| Arc::as_ptr(&port.shared));
        assert_ne!(
            found,
            Some(weak.as_ptr()),
            "the closed number still names the port"
        );
    }

    #[test]
    fn a_lookup_may_block_on_the_port() {
        let port = Port::new().unwrap();
        let handle = port.into_handle();
        let poster = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            Port::with_handle(handle, |port| port.post(Completion::new(5, 0, 0))).unwrap()
        });
        let got = Port::with_handle(handle, |port| port.get(Some(Duration::from_secs(5))));
        assert_eq!(got.unwrap().unwrap().key(), 5);
        poster.join().unwrap().unwrap();
        Port::from_handle(handle).unwrap().close().unwrap();
    }

    /// Regression: `come_back` returned at once on a port without a concurrency limit, so
    /// a thread released by a limited port that went on to wait on an unlimited one kept
    /// its place on the first for as long as it waited, and held every other `get` back.
    #[test]
    fn a_thread_waiting_on_an_unlimited_port_no_longer_counts_on_the_port_that_released_it() {
        let limited = Port::builder().concurrency(1).build().unwrap();
        let unlimited = Port::builder().concurrency(usize::MAX).build().unwrap();
        limited.post(Completion::new(1, 0, 0)).unwrap();
        limited.post(Completion::new(2, 0, 0)).unwrap();
        let (got_tx, got_rx) = std::sync::mpsc::channel();
        let moves_on = {
            let (limited, unlimited) = (limited.clone(), unlimited.clone());
            std::thread::spawn(move || {
                got_tx
                    .send(limited.get(Some(Duration::from_secs(5))))
                    .unwrap();
                // Waits here, on the other port, until the end of the test.
                unlimited.get(Some(Duration::from_secs(10)))
            })
        };
        let first = got_rx.recv().unwrap().unwrap();
        assert_eq!(first.key(), 1);
        // Released as soon as the other thread waits on `unlimited`, which it does at once.
        let second = limited.get(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(second.key(), 2);
        unlimited.post(Completion::new(3, 0, 0)).unwrap();
        assert_eq!(moves_on.join().unwrap().unwrap().key(), 3);
    }
}
