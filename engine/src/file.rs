//! Regular files through ports: a pool of threads runs positioned reads, writes and syncs
//! and posts their records.
//!
//! Requests on a [`File`] are always asynchronous (Windows semantics for files): each
//! becomes a job on the pool's lock-free submission queue (a crossbeam `SegQueue`), idle
//! threads sleep on the same LIFO futex stack ports use, and a submission wakes one only
//! when one sleeps. Short reads at end of file complete with the bytes read; errors complete
//! with their `errno`. Owned-buffer requests come back through [`File::finish`] as sockets'
//! do; overlapped requests take their offset from the block's `Offset`/`OffsetHigh`.
//!
//! [`FilePool::lio_listio`] submits a list of AIX `aiocb`s in one call, in the modes
//! `LIO_WAIT`, `LIO_NOWAIT` and `LIO_NOWAIT_GMCS` (see [`LioMode`]), with `aio_error`,
//! `aio_return` and `aio_cancel` companions.
//!
//! Every job completes exactly once: by a pool thread, or with `ECANCELED` by whoever
//! cancels it while it is still queued (a compare-and-swap on the job's [`Delivery`] state
//! decides; loom models race the two). A job already running is not cancelled. Dropping
//! the [`FilePool`] stops new submissions, lets the threads finish every queued job, and
//! joins them: no request is lost.

use crate::buffer::{Buf, MAX_TRANSFER};
use crate::completion::{Cancel, Delivery};
use crate::error::{self, canceled, to_record};
use crate::overlapped::Overlapped;
use crate::parker::{Parker, Spin, WaitStack};
use crate::primitive::{lock, Mutex};
use crate::sys::{self, file as sysfile};
use crate::{Completion, OpResult, Port};
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicIsize, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};

/// `aio_lio_opcode`: read.
pub const LIO_READ: i32 = 0;
/// `aio_lio_opcode`: write.
pub const LIO_WRITE: i32 = 1;
/// `aio_lio_opcode`: no operation (the entry is skipped).
pub const LIO_NOP: i32 = 2;
/// `aio_flag` bit: the aiocb names a completion port in `aio_iocpfd`.
pub const AIO_EXTENDED: i32 = 0x004;

/// How [`FilePool::lio_listio`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LioMode {
    /// `LIO_WAIT` (1): returns when every request is done; aiocbs are updated, no records
    /// are posted.
    Wait,
    /// `LIO_NOWAIT` (0): returns at once; each aiocb is updated when its request is done,
    /// and a record goes to its port if it names one.
    NoWait,
    /// `LIO_NOWAIT_GMCS` (5): returns at once; aiocbs are not touched, the only report is
    /// the record on the port (its `overlapped` is the aiocb, its key is unused, 0).
    NoWaitGmcs,
}

impl LioMode {
    /// The mode for AIX's `LIO_*` value.
    pub fn from_raw(mode: i32) -> Option<LioMode> {
        match mode {
            0 => Some(LioMode::NoWait),
            1 => Some(LioMode::Wait),
            5 => Some(LioMode::NoWaitGmcs),
            _ => None,
        }
    }
}

/// What `aio_cancel` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AioCancel {
    /// `AIO_CANCELED` (0): every matching request was cancelled.
    Canceled,
    /// `AIO_NOTCANCELED` (1): at least one was already running.
    NotCanceled,
    /// `AIO_ALLDONE` (2): nothing was in flight.
    AllDone,
}

/// AIX's extended `aiocb` (`struct iocp_aiocb` in C): the request, then private state.
#[repr(C)]
#[derive(Debug)]
pub struct Aiocb {
    /// The file.
    pub aio_fildes: i32,
    /// Where in the file (must not be negative).
    pub aio_offset: i64,
    /// The data.
    pub aio_buf: *mut u8,
    /// How many bytes (at most 2^31 - 1).
    pub aio_nbytes: usize,
    /// [`LIO_READ`], [`LIO_WRITE`] or [`LIO_NOP`].
    pub aio_lio_opcode: i32,
    /// [`AIO_EXTENDED`] when `aio_iocpfd` names a port.
    pub aio_flag: i32,
    /// The port's handle.
    pub aio_iocpfd: i32,
    /// `EINPROGRESS` while in flight, then 0 or the `errno`.
    status: AtomicI32,
    /// Bytes transferred, or -1.
    result: AtomicIsize,
}

impl Aiocb {
    /// A request for `nbytes` at `buf`, at `offset` of `fd`.
    pub fn new(fd: RawFd, opcode: i32, offset: i64, buf: *mut u8, nbytes: usize) -> Aiocb {
        Aiocb {
            aio_fildes: fd,
            aio_offset: offset,
            aio_buf: buf,
            aio_nbytes: nbytes,
            aio_lio_opcode: opcode,
            aio_flag: 0,
            aio_iocpfd: -1,
            status: AtomicI32::new(0),
            result: AtomicIsize::new(0),
        }
    }

    /// Reports to `port` (sets [`AIO_EXTENDED`] and `aio_iocpfd`).
    pub fn with_port(mut self, port: &Port) -> Aiocb {
        self.aio_flag |= AIO_EXTENDED;
        self.aio_iocpfd = port.handle();
        self
    }

    /// `aio_error`: `EINPROGRESS` while in flight, then 0 or the request's `errno`.
    pub fn error(&self) -> i32 {
        // Acquire: pairs with the release store in `report`, so `result` is visible.
        self.status.load(Ordering::Acquire)
    }

    /// `aio_return`: the byte count, or -1 for a failed request (`EINPROGRESS` and `EINVAL`
    /// while it is in flight).
    pub fn result(&self) -> io::Result<isize> {
        match self.error() {
            libc::EINPROGRESS => Err(error::invalid()),
            // Relaxed: ordered by the acquire in `error`.
            _ => Ok(self.result.load(Ordering::Relaxed)),
        }
    }

    fn report(&self, result: &io::Result<usize>) {
        let (bytes, errno) = to_record(result);
        let value = if errno == 0 { bytes as isize } else { -1 };
        // Relaxed: published by the release store of the status below.
        self.result.store(value, Ordering::Relaxed);
        // Release: pairs with the acquire in `error`.
        self.status.store(errno as i32, Ordering::Release);
    }
}

/// Settings for a [`FilePool`].
#[derive(Clone, Debug, Default)]
pub struct FilePoolBuilder {
    threads: usize,
    pin: bool,
}

impl FilePoolBuilder {
    /// Number of threads (0, the default: one per CPU).
    pub fn threads(mut self, threads: usize) -> FilePoolBuilder {
        self.threads = threads;
        self
    }

    /// Pins thread `i` to core `i` (modulo the cores the process may use).
    pub fn pin(mut self, pin: bool) -> FilePoolBuilder {
        self.pin = pin;
        self
    }

    /// Starts the threads.
    pub fn build(self) -> io::Result<FilePool> {
        sys::fault::allocation()?;
        let threads = match self.threads {
            0 => thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let shared = Arc::new(PoolShared {
            queue: SegQueue::new(),
            queued: AtomicUsize::new(0),
            idle: WaitStack::new(),
            spin: CachePadded::new(Spin::new()),
            stopping: AtomicBool::new(false),
            submitting: AtomicUsize::new(0),
            inflight: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(0),
        });
        let cores = if self.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let worker_shared = Arc::clone(&shared);
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let spawned = thread::Builder::new()
                .name(format!("iocp-file-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    worker_shared.work();
                });
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(err) => {
                    shared.stop(&mut workers);
                    return Err(err);
                }
            }
        }
        Ok(FilePool { shared, workers })
    }
}

/// The file-I/O threads. Dropping it lets them finish every queued request and joins them;
/// later requests on its files fail with `EAGAIN`.
pub struct FilePool {
    shared: Arc<PoolShared>,
    workers: Vec<JoinHandle<()>>,
}

struct PoolShared {
    queue: SegQueue<Arc<Job>>,
    /// Jobs pushed and not yet popped (the idle threads' Dekker partner).
    queued: AtomicUsize,
    idle: WaitStack,
    /// How long idle threads spin before they park, learnt as a port's is.
    spin: CachePadded<Spin>,
    stopping: AtomicBool,
    /// Submissions between their check of `stopping` and their push.
    submitting: AtomicUsize,
    /// Jobs not yet completed, by descriptor and id, for cancellation.
    inflight: Mutex<HashMap<RawFd, HashMap<u64, Arc<Job>>>>,
    next_job: AtomicU64,
}

struct Job {
    /// Set at submission, unique in the pool.
    id: u64,
    /// The number the job is filed under for cancellation: the file's descriptor, or the
    /// caller's number in an aiocb.
    fd: RawFd,
    /// For an aiocb, the engine's duplicate of the caller's descriptor, which the job runs
    /// on: a caller closing its number, and the kernel handing the number out again, cannot
    /// send the job to another file.
    dup: Option<Arc<OwnedFd>>,
    op: Op,
    offset: u64,
    buf: Mutex<Buf>,
    /// Whether a pool thread or a canceller completes the job.
    delivery: Delivery,
    notify: Notify,
    port: Option<(Port, u64)>,
    /// Keeps a [`File`]'s descriptor open while its job runs.
    file: Option<Arc<FileInner>>,
    /// The `LIO_WAIT` call waiting for this job.
    list: Option<Arc<ListWait>>,
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
    Sync,
    SyncData,
}

enum Notify {
    Ticket(u64),
    Overlapped(*const Overlapped),
    Aiocb { aiocb: *const Aiocb, update: bool },
}

// SAFETY: the raw pointers in `Buf` and `Notify` come from callers of the `unsafe`
// overlapped and lio functions, who keep the memory valid until the job completes, on
// whichever thread completes it; everything else in a job is `Send + Sync`.
unsafe impl Send for Job {}
// SAFETY: a shared job is only read, except for its buffer, which is behind a mutex, and
// its delivery state, which is atomic; the raw pointers it reads are valid from any
// thread for the reason given for `Send`.
unsafe impl Sync for Job {}

/// A countdown an `LIO_WAIT` call sleeps on.
struct ListWait {
    remaining: AtomicU32,
}

impl ListWait {
    fn done(&self) {
        // Release: pairs with the acquire in `wait`, so the aiocb updates are visible.
        if self.remaining.fetch_sub(1, Ordering::Release) == 1 {
            sys::futex_wake_all(&self.remaining);
        }
    }

    fn wait(&self) {
        loop {
            // Acquire: pairs with the release decrement in `done`.
            let left = self.remaining.load(Ordering::Acquire);
            if left == 0 {
                return;
            }
            sys::futex_wait(&self.remaining, left, None);
        }
    }
}

impl FilePool {
    /// A pool with one thread per CPU.
    pub fn new() -> io::Result<FilePool> {
        FilePool::builder().build()
    }

    /// Settings for a pool.
    pub fn builder() -> FilePoolBuilder {
        FilePoolBuilder::default()
    }

    /// The process-wide pool the C ABI uses, started on first use and never stopped.
    pub fn global() -> io::Result<&'static FilePool> {
        static GLOBAL: OnceLock<FilePool> = OnceLock::new();
        if let Some(pool) = GLOBAL.get() {
            return Ok(pool);
        }
        let pool = FilePool::new()?;
        // A racing thread's pool is dropped (and its threads joined) if it loses.
        let _ = GLOBAL.set(pool);
        Ok(GLOBAL.get().expect("set"))
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Takes over a regular file: requests on it run on this pool. Use
    /// [`File::associate`] (or [`Port::associate_file`]) to have them report to a port.
    pub fn open(&self, file: impl Into<OwnedFd>) -> io::Result<File> {
        Ok(self.file(file.into()))
    }

    fn file(&self, fd: OwnedFd) -> File {
        File {
            inner: Arc::new(FileInner {
                fd,
                pool: Arc::clone(&self.shared),
                port: Mutex::new(None),
                finished: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// AIX `lio_listio`: submits every request of `list` in one call.
    ///
    /// NULL entries and [`LIO_NOP`] entries are skipped. An entry that cannot be queued — a
    /// closed descriptor (`EBADF`), a negative offset, more than 2^31 - 1 bytes, a NULL
    /// buffer, an unknown opcode (`EINVAL`), an `aio_iocpfd` that is no live port
    /// (`EBADF`), or no port at all in [`LioMode::NoWaitGmcs`] (`EINVAL`) — does not
    /// disturb the others: its aiocb gets the error (in `NoWaitGmcs`, a record with the
    /// error goes to its port when it has one) and the call returns `EIO` after queuing the
    /// rest. `EAGAIN` once the pool is stopping.
    ///
    /// # Safety
    ///
    /// Every non-NULL entry must point to an [`Aiocb`] that, with its `aio_buf` memory,
    /// stays valid and untouched until its request is done (its record is dequeued, or its
    /// `aio_error` is no longer `EINPROGRESS`; in `Wait` mode, until this returns).
    pub unsafe fn lio_listio(&self, mode: LioMode, list: &[*mut Aiocb]) -> io::Result<()> {
        let wait = (mode == LioMode::Wait).then(|| {
            Arc::new(ListWait {
                remaining: AtomicU32::new(1),
            })
        });
        let (mut failed, mut refused) = (false, false);
        let mut last_port: Option<(i32, i32, Association)> = None;
        // A list nearly always reads one file: one duplicate of it per call.
        let mut last_dup: Option<(RawFd, Arc<OwnedFd>)> = None;
        for &entry in list {
            // SAFETY: the caller guarantees non-NULL entries point to live aiocbs.
            let Some(aiocb) = (unsafe { entry.as_ref() }) else {
                continue;
            };
            if aiocb.aio_lio_opcode == LIO_NOP {
                continue;
            }
            // A list nearly always names one port: look each handle up once per call.
            let looked_up = match &last_port {
                Some((flag, handle, port))
                    if *flag == aiocb.aio_flag & AIO_EXTENDED && *handle == aiocb.aio_iocpfd =>
                {
                    Ok(port.clone())
                }
                _ => lio_port(aiocb, mode),
            };
            if let Ok(port) = &looked_up {
                last_port = Some((
                    aiocb.aio_flag & AIO_EXTENDED,
                    aiocb.aio_iocpfd,
                    port.clone(),
                ));
            }
            let port = match looked_up {
                Ok(port) => port,
                Err(err) => {
                    failed = true;
                    aiocb.report(&Err(err));
                    continue;
                }
            };
            let job = match lio_job(aiocb, mode, port.clone(), wait.clone(), &mut last_dup) {
                Ok(job) => job,
                Err(err) => {
                    failed = true;
                    match (&port, mode) {
                        (Some((port, _)), LioMode::NoWaitGmcs) => {
                            let (bytes, errno) = to_record(&Err(err));
                            let record =
                                Completion::new(0, bytes, entry as usize).with_error(errno);
                            // A closed port discards the record, as it would any other.
                            let _ = port.post(record);
                        }
                        _ => aiocb.report(&Err(err)),
                    }
                    continue;
                }
            };
            if mode != LioMode::NoWaitGmcs {
                // Relaxed: the job's queue push publishes it to the thread that runs it.
                aiocb.status.store(libc::EINPROGRESS, Ordering::Relaxed);
            }
            if let Some(wait) = &wait {
                // Relaxed: the count is only read after the submitting loop's last add.
                wait.remaining.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(err) = self.shared.submit(job) {
                if let Some(wait) = &wait {
                    wait.remaining.fetch_sub(1, Ordering::Relaxed);
                }
                aiocb.report(&Err(err));
                refused = true;
                break;
            }
        }
        if let Some(wait) = wait {
            // The initial count of one kept the waiter from finishing before the loop did.
            // Even a refused list waits for what it queued: its aiocbs are in use until then.
            wait.done();
            wait.wait();
        }
        if refused {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        if failed {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }

    /// AIX `aio_cancel`: cancels `aiocb`'s request, or every request on `fd` when `None`.
    /// A cancelled request still completes, with `ECANCELED` (a record, in the `NOWAIT`
    /// modes with a port).
    pub fn aio_cancel(&self, fd: RawFd, aiocb: Option<*const Aiocb>) -> io::Result<AioCancel> {
        if !sysfile::is_open(fd) {
            return Err(error::closed());
        }
        let (cancelled, running) = match aiocb {
            // Only aiocbs: a `File`'s requests (the C ABI's `ReadFile`) are filed under the
            // engine's own descriptor and cancelled with `CancelIoEx`.
            None => self.shared.cancel(fd, |job| job.file.is_none()),
            Some(wanted) => {
                // An aiocb may be submitted again once its request completed, and the old
                // job can still be in the table for a moment after its record is out: the
                // aiocb names its newest job only.
                let newest = self.shared.newest(
                    fd,
                    |job| matches!(job.notify, Notify::Aiocb { aiocb, .. } if aiocb == wanted),
                );
                match newest {
                    Some(id) => self.shared.cancel(fd, |job| job.id == id),
                    None => (0, 0),
                }
            }
        };
        Ok(if running > 0 {
            AioCancel::NotCanceled
        } else if cancelled > 0 {
            AioCancel::Canceled
        } else {
            AioCancel::AllDone
        })
    }
}

/// The port (and key) a request reports to, if any.
type Association = Option<(Port, u64)>;

/// The port an aiocb reports to, checked against the mode.
fn lio_port(aiocb: &Aiocb, mode: LioMode) -> io::Result<Association> {
    if aiocb.aio_flag & AIO_EXTENDED == 0 {
        return match mode {
            LioMode::NoWaitGmcs => Err(error::invalid()),
            _ => Ok(None),
        };
    }
    let port = Port::from_handle(aiocb.aio_iocpfd)
        .filter(|port| !port.is_closed())
        .ok_or_else(error::closed)?;
    Ok(Some((port, 0)))
}

fn lio_job(
    aiocb: &Aiocb,
    mode: LioMode,
    port: Option<(Port, u64)>,
    list: Option<Arc<ListWait>>,
    last_dup: &mut Option<(RawFd, Arc<OwnedFd>)>,
) -> io::Result<Job> {
    let op = match aiocb.aio_lio_opcode {
        LIO_READ => Op::Read,
        LIO_WRITE => Op::Write,
        _ => return Err(error::invalid()),
    };
    let offset = u64::try_from(aiocb.aio_offset).map_err(|_| error::invalid())?;
    if aiocb.aio_nbytes > MAX_TRANSFER || (aiocb.aio_buf.is_null() && aiocb.aio_nbytes > 0) {
        return Err(error::invalid());
    }
    let dup = match last_dup {
        Some((fd, dup)) if *fd == aiocb.aio_fildes => Arc::clone(dup),
        _ => {
            if aiocb.aio_fildes < 0 {
                return Err(error::closed());
            }
            let dup = Arc::new(sys::dup::duplicate(aiocb.aio_fildes)?);
            *last_dup = Some((aiocb.aio_fildes, Arc::clone(&dup)));
            dup
        }
    };
    Ok(Job {
        id: 0,
        fd: aiocb.aio_fildes,
        dup: Some(dup),
        op,
        offset,
        buf: Mutex::new(Buf::Raw {
            ptr: aiocb.aio_buf,
            len: aiocb.aio_nbytes,
        }),
        delivery: Delivery::new(),
        notify: Notify::Aiocb {
            aiocb,
            update: mode != LioMode::NoWaitGmcs,
        },
        port: port.filter(|_| mode != LioMode::Wait),
        file: None,
        list,
    })
}

impl Drop for FilePool {
    fn drop(&mut self) {
        self.shared.stop(&mut self.workers);
    }
}

impl fmt::Debug for FilePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Job {
    /// The descriptor the job's call runs on.
    fn target(&self) -> RawFd {
        self.dup.as_deref().map_or(self.fd, AsRawFd::as_raw_fd)
    }

    /// Fills in the job's aiocb, overlapped or kept result; returns the record still to
    /// post to its port (an overlapped block posts its own, as it completes).
    fn report(&self, result: io::Result<usize>) -> Option<Completion> {
        let (bytes, errno) = to_record(&result);
        let port = self.port.as_ref().map(|(port, key)| (port, *key));
        match self.notify {
            Notify::Ticket(ticket) => {
                let file = self
                    .file
                    .as_ref()
                    .expect("owned-buffer jobs belong to a file");
                let (_, key) = port.expect("owned-buffer requests need a port");
                let buf = std::mem::replace(&mut *lock(&self.buf), Buf::None);
                let result = OpResult {
                    result,
                    buf: buf.into_vec(),
                    peer: None,
                    accepted: None,
                };
                lock(&file.finished).insert(ticket, result);
                Some(Completion::new(key, bytes, ticket as usize).with_error(errno))
            }
            Notify::Overlapped(overlapped) => {
                // SAFETY: the submitter guaranteed the block lives until this completion.
                let block = unsafe { &*overlapped };
                // Fails only for a closed port, which discards its records anyway.
                let _ = block.complete(bytes, errno, port);
                None
            }
            Notify::Aiocb { aiocb, update } => {
                if update {
                    // SAFETY: the lio caller guaranteed the aiocb lives until completion.
                    unsafe { &*aiocb }.report(&result);
                }
                port.map(|(_, key)| Completion::new(key, bytes, aiocb as usize).with_error(errno))
            }
        }
    }

    /// Posts the record [`report`](Self::report) returned.
    fn post(&self, record: Option<Completion>) {
        if let (Some(record), Some((port, _))) = (record, &self.port) {
            // A closed port discards its records, this one with them.
            let _ = port.post(record);
        }
    }
}

impl PoolShared {
    fn submit(&self, mut job: Job) -> io::Result<()> {
        // SeqCst: the submitter half of the shutdown handshake in `stop`: either `stop`
        // waits for this submission or this submission sees `stopping`.
        self.submitting.fetch_add(1, Ordering::SeqCst);
        if self.stopping.load(Ordering::SeqCst) {
            self.submitting.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        // Relaxed: ids only need to be distinct.
        job.id = self.next_job.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(job);
        lock(&self.inflight)
            .entry(job.fd)
            .or_default()
            .insert(job.id, Arc::clone(&job));
        self.queue.push(job);
        // SeqCst: the submitter half of the Dekker pair with an idle thread's registration.
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.submitting.fetch_sub(1, Ordering::SeqCst);
        if self.idle.has_sleepers() {
            self.idle.wake_one();
        }
        Ok(())
    }

    /// A pool thread: runs jobs until the pool stops and the queue is empty.
    fn work(&self) {
        loop {
            if let Some(job) = self.queue.pop() {
                // Relaxed: a counter; the pop itself synchronized with the push.
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.run(&job);
                continue;
            }
            // SeqCst: pairs with the store in `stop`, after which nothing more is pushed.
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            // A submitter usually sends more soon: waking a parked thread costs a futex call
            // and a context switch per request, which is what a `pread` loop never pays.
            // Relaxed: a hint; the decision to sleep is made with SeqCst below.
            let (work, start) = self.spin.spin(None, || {
                self.queued.load(Ordering::Relaxed) > 0 || self.stopping.load(Ordering::Relaxed)
            });
            if work {
                continue;
            }
            let parker = Parker::current();
            self.idle.register(&parker);
            // SeqCst: the idle half of the Dekker pair with `submit`.
            if self.queued.load(Ordering::SeqCst) > 0 || self.stopping.load(Ordering::SeqCst) {
                self.idle.unregister(&parker);
                continue;
            }
            let woken = self.idle.park(&parker, None) == sys::WaitStatus::Woken;
            self.spin.learn(start, woken);
            if !woken {
                self.idle.unregister(&parker);
            }
        }
    }

    fn run(&self, job: &Arc<Job>) {
        if !job.delivery.start() {
            // Cancelled: the canceller completes it.
            return;
        }
        let fd = job.target();
        let result = {
            let mut buf = lock(&job.buf);
            let (ptr, len) = buf.raw();
            // SAFETY (both arms): `ptr..ptr + len` is the job's owned vector, or caller memory
            // that the overlapped and lio functions' callers keep valid until completion.
            match job.op {
                // SAFETY: `ptr..ptr + len` is writable until the job completes (above), and
                // nothing else reads or writes it meanwhile: the buffer's mutex is held.
                Op::Read => unsafe { sysfile::pread(fd, job.fd, ptr, len, job.offset) },
                // SAFETY: `ptr..ptr + len` is readable until the job completes (above).
                Op::Write => unsafe { sysfile::pwrite(fd, job.fd, ptr, len, job.offset) },
                Op::Sync => sysfile::fsync(fd, job.fd),
                Op::SyncData => sysfile::fdatasync(fd, job.fd),
            }
        };
        self.complete(job, result);
    }

    /// The id of the most recently submitted in-flight job of `fd` that `matches`.
    fn newest(&self, fd: RawFd, matches: impl Fn(&Job) -> bool) -> Option<u64> {
        let inflight = lock(&self.inflight);
        let jobs = inflight.get(&fd)?;
        jobs.values()
            .filter(|job| matches(job))
            .map(|job| job.id)
            .max()
    }

    /// Cancels queued jobs of `fd` that `matches`; returns (cancelled, still running).
    fn cancel(&self, fd: RawFd, matches: impl Fn(&Job) -> bool) -> (usize, usize) {
        let mut cancelled = Vec::new();
        let mut running = 0;
        if let Some(jobs) = lock(&self.inflight).get(&fd) {
            for job in jobs.values().filter(|job| matches(job)) {
                // Whoever wins the claim completes the job. A second canceller finds it
                // running, and says "not cancelled" rather than "all done" until the job
                // is reported.
                match job.delivery.cancel() {
                    Cancel::Cancelled => cancelled.push(Arc::clone(job)),
                    Cancel::Running => running += 1,
                    Cancel::Done => {}
                }
            }
        }
        for job in &cancelled {
            self.complete(job, Err(canceled()));
        }
        (cancelled.len(), running)
    }

    /// Completes a job, exactly once (its [`Delivery`] decided who): reports it, marks it
    /// done, forgets it, counts down an `LIO_WAIT` call.
    fn complete(&self, job: &Arc<Job>, result: io::Result<usize>) {
        // Done only once reported: `aio_cancel` says "all done" for done jobs.
        job.delivery
            .deliver(|| job.report(result), |record| job.post(record));
        {
            let mut inflight = lock(&self.inflight);
            if let Some(jobs) = inflight.get_mut(&job.fd) {
                jobs.remove(&job.id);
                if jobs.is_empty() {
                    inflight.remove(&job.fd);
                }
            }
        }
        if let Some(list) = &job.list {
            list.done();
        }
    }

    /// Stops taking jobs, lets the threads finish the queue, joins them.
    fn stop(&self, workers: &mut Vec<JoinHandle<()>>) {
        // SeqCst: see `submit`.
        self.stopping.store(true, Ordering::SeqCst);
        while self.submitting.load(Ordering::SeqCst) != 0 {
            thread::yield_now();
        }
        self.idle.wake_all();
        for worker in workers.drain(..) {
            // A worker panics only if a job's completion did; the pool still shuts down.
            let _ = worker.join();
        }
    }
}

/// A regular file whose requests run on a [`FilePool`]. Dropping it cancels what is still
/// queued; requests already running finish (the descriptor stays open until they do).
pub struct File {
    inner: Arc<FileInner>,
}

struct FileInner {
    fd: OwnedFd,
    pool: Arc<PoolShared>,
    port: Mutex<Option<(Port, u64)>>,
    /// Results of owned-buffer requests, by ticket, until [`File::finish`].
    finished: Mutex<HashMap<u64, OpResult>>,
}

impl Port {
    /// Takes over a regular file on `pool` and associates it with this port under `key`.
    pub fn associate_file(
        &self,
        file: impl Into<OwnedFd>,
        key: u64,
        pool: &FilePool,
    ) -> io::Result<File> {
        let file = pool.open(file)?;
        file.associate(self, key)?;
        Ok(file)
    }
}

impl File {
    /// Associates the file with `port` under `key`; `EALREADY` if it has a port.
    pub fn associate(&self, port: &Port, key: u64) -> io::Result<()> {
        let mut slot = lock(&self.inner.port);
        if slot.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EALREADY));
        }
        if port.is_closed() {
            return Err(error::closed());
        }
        *slot = Some((port.clone(), key));
        Ok(())
    }

    /// Reads into `buf` (up to its length) at `offset`; always completes as a record.
    /// Returns the ticket the record will carry.
    pub fn read_at(&self, buf: Vec<u8>, offset: u64) -> io::Result<u64> {
        self.submit_owned(Op::Read, Buf::Owned(buf), offset)
    }

    /// Writes `buf` at `offset`; completes as a record.
    pub fn write_at(&self, buf: Vec<u8>, offset: u64) -> io::Result<u64> {
        self.submit_owned(Op::Write, Buf::Owned(buf), offset)
    }

    /// `fsync`; completes as a record.
    pub fn sync_all(&self) -> io::Result<u64> {
        self.submit_owned(Op::Sync, Buf::None, 0)
    }

    /// `fdatasync`; completes as a record.
    pub fn sync_data(&self) -> io::Result<u64> {
        self.submit_owned(Op::SyncData, Buf::None, 0)
    }

    /// The result and buffer of an owned-buffer request's record; `EINVAL` for a record
    /// that is not one (or was finished already).
    pub fn finish(&self, record: &Completion) -> io::Result<OpResult> {
        lock(&self.inner.finished)
            .remove(&(record.overlapped() as u64))
            .ok_or_else(error::invalid)
    }

    /// Reads at `offset` and waits for the result (the synchronous form, run on the
    /// calling thread).
    pub fn read_at_blocking(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        check_offset(offset)?;
        let len = buf.len().min(MAX_TRANSFER);
        let fd = self.raw_fd();
        // SAFETY: `buf` is a live, writable slice of at least `len` bytes.
        unsafe { sysfile::pread(fd, fd, buf.as_mut_ptr(), len, offset) }
    }

    /// Writes at `offset` and waits for the result (the synchronous form).
    pub fn write_at_blocking(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        check_offset(offset)?;
        let len = buf.len().min(MAX_TRANSFER);
        let fd = self.raw_fd();
        // SAFETY: `buf` is a live slice of at least `len` bytes.
        unsafe { sysfile::pwrite(fd, fd, buf.as_ptr(), len, offset) }
    }

    /// Reads into caller memory at the block's offset (`ReadFile` on a file): completes
    /// through `overlapped` — a record to the port, or the block's event when the file has
    /// no port.
    ///
    /// # Safety
    ///
    /// `buf` must be valid for writes of `len` bytes and `overlapped` must point to a live
    /// [`Overlapped`]; both must stay valid, and `buf` untouched, until the request
    /// completes.
    pub unsafe fn read_overlapped(
        &self,
        buf: *mut u8,
        len: usize,
        overlapped: *const Overlapped,
    ) -> io::Result<()> {
        self.submit_overlapped(Op::Read, Buf::Raw { ptr: buf, len }, overlapped)
    }

    /// Writes caller memory at the block's offset (`WriteFile` on a file).
    ///
    /// # Safety
    ///
    /// As [`read_overlapped`](Self::read_overlapped), with `buf` valid for reads.
    pub unsafe fn write_overlapped(
        &self,
        buf: *const u8,
        len: usize,
        overlapped: *const Overlapped,
    ) -> io::Result<()> {
        let buf = Buf::Raw {
            ptr: buf.cast_mut(),
            len,
        };
        self.submit_overlapped(Op::Write, buf, overlapped)
    }

    /// Cancels the queued request with `ticket` (`ECANCELED` record); `ENOENT` if it is not
    /// queued (running or done).
    pub fn cancel(&self, ticket: u64) -> io::Result<()> {
        self.cancel_where(|notify| matches!(notify, Notify::Ticket(t) if *t == ticket))
            .map(drop)
    }

    /// Cancels the queued overlapped request `overlapped` (`CancelIoEx`).
    pub fn cancel_overlapped(&self, overlapped: *const Overlapped) -> io::Result<()> {
        self.cancel_where(|notify| matches!(notify, Notify::Overlapped(o) if *o == overlapped))
            .map(drop)
    }

    /// Cancels every queued request of the file; how many, `ENOENT` if none.
    pub fn cancel_all(&self) -> io::Result<usize> {
        self.cancel_where(|_| true)
    }

    /// The descriptor.
    pub fn raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }

    fn cancel_where(&self, matches: impl Fn(&Notify) -> bool) -> io::Result<usize> {
        let fd = self.raw_fd();
        let (cancelled, _) = self
            .inner
            .pool
            .cancel(fd, |job| job.file.is_some() && matches(&job.notify));
        if cancelled == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(cancelled)
    }

    fn submit_owned(&self, op: Op, buf: Buf, offset: u64) -> io::Result<u64> {
        check_offset(offset)?;
        let port = lock(&self.inner.port).clone();
        if port.is_none() {
            // An owned buffer can only come back through a port's record.
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        }
        let ticket = crate::completion::next_ticket();
        self.submit(op, buf, offset, Notify::Ticket(ticket), port)?;
        Ok(ticket)
    }

    fn submit_overlapped(&self, op: Op, buf: Buf, overlapped: *const Overlapped) -> io::Result<()> {
        // SAFETY: the caller guarantees `overlapped` is live until completion.
        let block = unsafe { &*overlapped };
        let offset = block.offset();
        check_offset(offset)?;
        block.start();
        let port = lock(&self.inner.port).clone();
        self.submit(op, buf, offset, Notify::Overlapped(overlapped), port)
            .inspect_err(|err| {
                // Never queued: complete the block with the error so no one waits on it.
                let _ = block.publish(0, err.raw_os_error().unwrap_or(libc::EIO) as u32);
            })
    }

    fn submit(
        &self,
        op: Op,
        buf: Buf,
        offset: u64,
        notify: Notify,
        port: Option<(Port, u64)>,
    ) -> io::Result<()> {
        let job = Job {
            id: 0,
            fd: self.raw_fd(),
            dup: None,
            op,
            offset,
            buf: Mutex::new(buf),
            delivery: Delivery::new(),
            notify,
            port,
            file: Some(Arc::clone(&self.inner)),
            list: None,
        };
        self.inner.pool.submit(job)
    }
}

fn check_offset(offset: u64) -> io::Result<()> {
    if i64::try_from(offset).is_err() {
        return Err(error::invalid());
    }
    Ok(())
}

impl Drop for File {
    fn drop(&mut self) {
        // Nothing queued is the only failure, and then there is nothing to do.
        let _ = self.cancel_all();
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("fd", &self.raw_fd())
            .field("key", &lock(&self.inner.port).as_ref().map(|(_, key)| *key))
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// A read-write file holding `contents`, already unlinked, so nothing is left behind.
    /// The crate's other unit tests use it too.
    pub(crate) fn scratch_file(contents: &[u8]) -> std::fs::File {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "iocp-unit-{}-{}",
            std::process::id(),
            // Relaxed: names only need to be distinct.
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    fn scratch(len: usize) -> (std::fs::File, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        (scratch_file(&data), data)
    }

    #[test]
    fn owned_read_comes_back_through_the_port_with_a_short_count_at_eof() {
        let pool = FilePool::builder().threads(2).build().unwrap();
        let port = Port::new().unwrap();
        let (file, data) = scratch(10_000);
        let file = port.associate_file(file, 9, &pool).unwrap();
        let ticket = file.read_at(vec![0; 4096], 8192).unwrap();
        let record = port.get(Some(Duration::from_secs(5))).unwrap();
        assert_eq!((record.key(), record.overlapped() as u64), (9, ticket));
        let done = file.finish(&record).unwrap();
        assert_eq!(done.result.unwrap(), 10_000 - 8192);
        assert_eq!(&done.buf[..10_000 - 8192], &data[8192..]);
        assert!(file.finish(&record).is_err());
    }

    #[test]
    fn lio_listio_gmcs_reports_only_through_records() {
        let pool = FilePool::builder().threads(2).build().unwrap();
        let port = Port::new().unwrap();
        let (file, data) = scratch(64 * 1024);
        let mut bufs = vec![vec![0u8; 4096]; 16];
        let mut cbs: Vec<Aiocb> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| {
                Aiocb::new(
                    file.as_raw_fd(),
                    LIO_READ,
                    (i * 4096) as i64,
                    buf.as_mut_ptr(),
                    4096,
                )
                .with_port(&port)
            })
            .collect();
        let list: Vec<*mut Aiocb> = cbs.iter_mut().map(|cb| cb as *mut Aiocb).collect();
        // SAFETY: the aiocbs and buffers outlive the drain below, which sees every record.
        unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &list) }.unwrap();
        let mut seen = 0;
        let mut out = [Completion::default(); 16];
        while seen < 16 {
            let drained = port
                .get_many(&mut out, 1, Some(Duration::from_secs(5)))
                .unwrap();
            for record in &out[..drained.count] {
                assert_eq!((record.key(), record.result().unwrap()), (0, 4096));
                let i = list
                    .iter()
                    .position(|&cb| cb as usize == record.overlapped())
                    .unwrap();
                assert_eq!(cbs[i].error(), 0, "GMCS mode leaves the aiocb untouched");
                seen += 1;
            }
        }
        for (i, buf) in bufs.iter().enumerate() {
            assert_eq!(&buf[..], &data[i * 4096..(i + 1) * 4096]);
        }
    }

    /// Regression: after an aiocb's request reported its record, its job stayed in the
    /// in-flight table (running) for a moment. A program that had dequeued the record,
    /// submitted the aiocb again and cancelled it was told `AIO_NOTCANCELED` although the
    /// new request was cancelled. The soak-era ThreadSanitizer runs caught it in
    /// `aio_cancel_racing_completion_reports_what_it_did_and_each_request_completes_once`;
    /// this sets the window up directly: the old job claimed by a runner and not yet done,
    /// the new one queued.
    #[test]
    fn regression_aio_cancel_of_a_reused_aiocb_counted_its_previous_request() {
        let pool = FilePool::builder().threads(1).build().unwrap();
        let (file, _) = scratch(4096);
        let fd = file.as_raw_fd();
        let mut buf = vec![0u8; 512];
        let aiocb = Aiocb::new(fd, LIO_READ, 0, buf.as_mut_ptr(), buf.len());
        let job = |id| {
            let mut job = lio_job(&aiocb, LioMode::NoWait, None, None, &mut None).unwrap();
            job.id = id;
            Arc::new(job)
        };
        let (old, new) = (job(u64::MAX - 1), job(u64::MAX));
        assert!(old.delivery.start(), "the old job is its runner's");
        {
            let mut inflight = lock(&pool.shared.inflight);
            let jobs = inflight.entry(fd).or_default();
            jobs.insert(old.id, Arc::clone(&old));
            jobs.insert(new.id, Arc::clone(&new));
        }
        let answer = pool.aio_cancel(fd, Some(&aiocb as *const Aiocb)).unwrap();
        assert_eq!(answer, AioCancel::Canceled);
        assert_eq!(aiocb.error(), libc::ECANCELED);
        // The old job's runner would finish it; here it is dropped from the table by hand.
        let left = lock(&pool.shared.inflight).remove(&fd).unwrap();
        assert_eq!(left.keys().copied().collect::<Vec<_>>(), [old.id]);
    }
}
