//! The file pool: where positioned reads, writes and syncs run, and how their records are
//! posted. Two drivers ([`FileDriver`]):
//!
//! * **io_uring** (`uring`), the default where the kernel allows it: the submitting thread
//!   pushes each request into the kernel's submission queue, and one ring thread submits
//!   them (one `io_uring_enter` each, woken once per list), reaps their completions and
//!   posts the records;
//! * **threads**, where the kernel refuses io_uring or when asked for
//!   (`IOCP_FILE_DRIVER=threads`, [`FileDriver::Threads`]): each request becomes a [`Job`]
//!   on a lock-free submission queue (a crossbeam `SegQueue`) that a fixed set of threads
//!   runs with `pread`, `pwrite` and `fsync`; idle threads sleep on the same LIFO futex
//!   stack ports use, and a submission wakes one only when one sleeps.
//!
//! Either driver's idle threads also help `lio_listio` callers with their cached reads
//! ([`Pool::share`]): a caller with a list of reads whose pages are in the page cache does
//! them itself, and offers them meanwhile to an idle thread, which takes some; no request is
//! handed over, and the call returns when all are done (see `share`).
//!
//! Short reads at end of file complete with the bytes read; errors complete with their
//! `errno`. Every job completes exactly once: by its driver, or with `ECANCELED` by whoever
//! cancels it while it is still queued (a compare-and-swap on the job's [`Delivery`] state
//! decides; loom models race the two). A job already running — on the thread driver, one a
//! thread has begun; on io_uring, any the kernel has — is not cancelled. Stopping the pool
//! refuses new submissions, lets every job already taken finish, and joins the threads: no
//! request is lost.

use crate::completion::Cancel;
use crate::error::canceled;
use crate::job::{Job, Op};
use crate::parker::{Parker, Spin, WaitStack};
use crate::primitive::{lock, Mutex};
use crate::share::Offers;
use crate::sys::{self, file as sysfile};
#[cfg(target_os = "linux")]
use crate::uring::Ring;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// How a pool runs its requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileDriver {
    /// The default: io_uring where the kernel allows it, threads elsewhere, unless the
    /// environment variable `IOCP_FILE_DRIVER` says `threads` (or `uring`).
    #[default]
    Auto,
    /// Threads that run `pread`, `pwrite` and `fsync`.
    Threads,
    /// The kernel's io_uring (threads where the kernel refuses it).
    Uring,
}

impl FileDriver {
    /// The driver `Auto` stands for here: threads if `IOCP_FILE_DRIVER` is `threads`, else
    /// io_uring (which falls back to threads where the kernel refuses it). io_uring keeps as
    /// many requests in the kernel as are submitted, where a pool of N threads keeps N: on
    /// the README's disk, O_DIRECT reads at queue depth 32 ran at 81.8k IOPS on io_uring
    /// against 21.4k on two threads. Reads of cached pages are done by the caller on either.
    fn resolve(self) -> FileDriver {
        match self {
            FileDriver::Auto => match std::env::var("IOCP_FILE_DRIVER").as_deref() {
                Ok("threads") => FileDriver::Threads,
                _ => FileDriver::Uring,
            },
            driver => driver,
        }
    }
}

/// What the pool's threads and its submitters share.
pub(crate) struct Pool {
    runner: Runner,
    /// Whether `lio_listio` does cached reads on the calling thread
    /// ([`FilePoolBuilder::cached_reads_on_caller`](crate::FilePoolBuilder::cached_reads_on_caller)).
    pub(crate) caller_reads: bool,
    /// Runs of cached reads a `lio_listio` caller offers to share with an idle thread.
    offers: Offers,
    stopping: AtomicBool,
    /// Submissions between their check of `stopping` and their push.
    submitting: AtomicUsize,
    /// Jobs not yet completed, by descriptor and id, for cancellation.
    pub(crate) inflight: Mutex<HashMap<RawFd, HashMap<u64, Arc<Job>>>>,
    next_job: AtomicU64,
    /// The process the pool started in (`sys::fork`), which its threads are in. In a
    /// forked child the pool is stopped.
    born: sys::fork::Born,
    /// Whether this is the C ABI's process-wide pool (`FilePool::global`): in a forked
    /// child, requests on its files go to the child's own process-wide pool.
    pub(crate) process_wide: bool,
}

/// Where jobs run.
#[allow(clippy::large_enum_variant)] // one per pool, never moved once built
enum Runner {
    Threads(Queue),
    #[cfg(target_os = "linux")]
    Uring(Ring),
}

/// The thread driver's queue of jobs.
struct Queue {
    jobs: SegQueue<Arc<Job>>,
    /// Jobs pushed and not yet popped (the idle threads' Dekker partner).
    queued: AtomicUsize,
    idle: WaitStack,
    /// How long idle threads spin before they park, learnt as a port's is.
    spin: CachePadded<Spin>,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            jobs: SegQueue::new(),
            queued: AtomicUsize::new(0),
            idle: WaitStack::new(),
            spin: CachePadded::new(Spin::new()),
        }
    }
}

impl Pool {
    /// A pool on `driver`: `threads` threads (pinned to the process's cores in turn with
    /// `pin`), or an io_uring instance and its reaper thread. Returns the driver that runs.
    pub(crate) fn start(
        driver: FileDriver,
        threads: usize,
        pin: bool,
        caller_reads: bool,
        process_wide: bool,
    ) -> io::Result<(Arc<Pool>, Vec<JoinHandle<()>>, FileDriver)> {
        let born = sys::fork::Born::now();
        let (runner, driver, threads) = match driver.resolve() {
            #[cfg(target_os = "linux")]
            FileDriver::Uring => match Ring::new() {
                Ok(ring) => (Runner::Uring(ring), FileDriver::Uring, 1),
                // The kernel refuses io_uring (or the fault seam says there is no memory for
                // it): threads instead.
                Err(_) => (Runner::Threads(Queue::new()), FileDriver::Threads, threads),
            },
            _ => (Runner::Threads(Queue::new()), FileDriver::Threads, threads),
        };
        let pool = Arc::new(Pool {
            runner,
            caller_reads,
            offers: Offers::new(),
            stopping: AtomicBool::new(false),
            submitting: AtomicUsize::new(0),
            inflight: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(0),
            born,
            process_wide,
        });
        let cores = if pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let worker_pool = Arc::clone(&pool);
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let name = match driver {
                FileDriver::Uring => "iocp-file-ring".to_string(),
                _ => format!("iocp-file-{i}"),
            };
            let spawned = thread::Builder::new().name(name).spawn(move || {
                // Its finished requests go out in batches, to waiters that sleep between
                // them: a fence per batch costs less than their `membarrier` (see `ring`).
                crate::ring::fence_own_posts();
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                match &worker_pool.runner {
                    Runner::Threads(queue) => worker_pool.work(queue),
                    #[cfg(target_os = "linux")]
                    Runner::Uring(ring) => ring.run(
                        |job, result| worker_pool.complete(job, result),
                        || worker_pool.is_stopping(),
                        &worker_pool.offers,
                    ),
                }
            });
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(err) => {
                    pool.stop(&mut workers);
                    return Err(err);
                }
            }
        }
        Ok((pool, workers, driver))
    }

    /// Queues `job`; `EAGAIN` once the pool is stopping.
    pub(crate) fn submit(&self, job: Job) -> io::Result<()> {
        self.queue_job(job, true)
    }

    /// Queues `job` as one of a list: on io_uring the ring thread is woken for the whole
    /// list at once, by [`flush`](Self::flush). `EAGAIN` once the pool is stopping.
    pub(crate) fn submit_listed(&self, job: Job) -> io::Result<()> {
        self.queue_job(job, false)
    }

    /// Hands the jobs [`submit_listed`](Self::submit_listed) queued to io_uring's ring
    /// thread, waking it if it sleeps (the thread driver's threads took them at once).
    pub(crate) fn flush(&self) {
        #[cfg(target_os = "linux")]
        if let Runner::Uring(ring) = &self.runner {
            ring.kick();
        }
    }

    /// Whether the pool's threads are in this process: not in the child of a `fork` made
    /// after the pool started, where it takes no request (`EAGAIN`) and holds none.
    #[inline]
    pub(crate) fn here(&self) -> bool {
        self.born.is_here()
    }

    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))] // `kick` is io_uring's
    fn queue_job(&self, mut job: Job, kick: bool) -> io::Result<()> {
        // In a forked child, before anything the parent's threads may have held at the fork
        // (`inflight`'s lock) and before the rings an io_uring pool shares with the parent.
        if !self.here() {
            return Err(stopped());
        }
        // SeqCst: the submitter half of the shutdown handshake in `stop`: either `stop`
        // waits for this submission or this submission sees `stopping`.
        self.submitting.fetch_add(1, Ordering::SeqCst);
        if self.stopping.load(Ordering::SeqCst) {
            self.submitting.fetch_sub(1, Ordering::SeqCst);
            return Err(stopped());
        }
        // Relaxed: ids only need to be distinct.
        job.id = self.next_job.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(job);
        lock(&self.inflight)
            .entry(job.fd)
            .or_default()
            .insert(job.id, Arc::clone(&job));
        match &self.runner {
            Runner::Threads(queue) => {
                queue.jobs.push(job);
                // SeqCst: the submitter half of the Dekker pair with an idle thread's
                // registration.
                queue.queued.fetch_add(1, Ordering::SeqCst);
                self.submitting.fetch_sub(1, Ordering::SeqCst);
                if queue.idle.has_sleepers() {
                    queue.idle.wake_one();
                }
            }
            #[cfg(target_os = "linux")]
            Runner::Uring(ring) => {
                ring.submit(job, kick, |job, result| self.complete(job, result));
                self.submitting.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Runs `task(i)` for every `i` in `0..len`, on this thread and on one of the pool's
    /// idle threads if one comes meanwhile (with `wake`, a sleeping one is woken: a system
    /// call, worth it only for a long run); returns when all have run (see
    /// [`Offers::run`]). For short calls on the caller's behalf, such as a list's cached
    /// reads: no request is handed over, and the caller never waits for a thread that does
    /// not come.
    pub(crate) fn share(&self, len: usize, task: &(dyn Fn(usize) + Sync), wake: bool) {
        self.offers.run(len, task, || match &self.runner {
            Runner::Threads(queue) => {
                if wake && queue.idle.has_sleepers() {
                    queue.idle.wake_one();
                }
            }
            #[cfg(target_os = "linux")]
            Runner::Uring(ring) => {
                if wake {
                    ring.kick();
                }
            }
        });
    }

    /// Whether the pool is stopping (no submission is taken any more).
    #[cfg(target_os = "linux")]
    pub(crate) fn is_stopping(&self) -> bool {
        // SeqCst: pairs with the store in `stop`.
        self.stopping.load(Ordering::SeqCst)
    }

    /// A pool thread: runs jobs until the pool stops and the queue is empty.
    fn work(&self, queue: &Queue) {
        loop {
            if let Some(job) = queue.jobs.pop() {
                // Relaxed: a counter; the pop itself synchronized with the push.
                queue.queued.fetch_sub(1, Ordering::Relaxed);
                self.run(&job);
                continue;
            }
            if self.offers.help() {
                continue;
            }
            // SeqCst: pairs with the store in `stop`, after which nothing more is pushed.
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            // A submitter usually sends more soon: waking a parked thread costs a futex call
            // and a context switch per request, which is what a `pread` loop never pays.
            // Relaxed: a hint; the decision to sleep is made with SeqCst below.
            let (work, start) = queue.spin.spin(None, || {
                queue.queued.load(Ordering::Relaxed) > 0
                    || self.offers.pending()
                    || self.stopping.load(Ordering::Relaxed)
            });
            if work {
                continue;
            }
            let parker = Parker::current();
            queue.idle.register(&parker);
            // SeqCst: the idle half of the Dekker pair with `submit`.
            if queue.queued.load(Ordering::SeqCst) > 0 || self.stopping.load(Ordering::SeqCst) {
                queue.idle.unregister(&parker);
                continue;
            }
            let woken = queue.idle.park(&parker, None) == sys::WaitStatus::Woken;
            queue.spin.learn(start, woken);
            if !woken {
                queue.idle.unregister(&parker);
            }
        }
    }

    fn run(&self, job: &Arc<Job>) {
        if !job.delivery.start() {
            // Cancelled: the canceller completes it.
            return;
        }
        let fd = job.target.as_raw_fd();
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
    pub(crate) fn newest(&self, fd: RawFd, matches: impl Fn(&Job) -> bool) -> Option<u64> {
        if !self.here() {
            // A forked child's copy: the jobs are the parent's.
            return None;
        }
        let inflight = lock(&self.inflight);
        let jobs = inflight.get(&fd)?;
        jobs.values()
            .filter(|job| matches(job))
            .map(|job| job.id)
            .max()
    }

    /// Cancels queued jobs of `fd` that `matches`; returns (cancelled, still running).
    pub(crate) fn cancel(&self, fd: RawFd, matches: impl Fn(&Job) -> bool) -> (usize, usize) {
        if !self.here() {
            // A forked child's copy: the jobs are the parent's, and so is `inflight`'s lock,
            // which a thread of the parent may have held at the fork.
            return (0, 0);
        }
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
    pub(crate) fn complete(&self, job: &Arc<Job>, result: io::Result<usize>) {
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
    ///
    /// In a forked child the threads are the parent's: nothing is stopped or joined there,
    /// and their handles are forgotten (joining or detaching a thread of another process
    /// is undefined).
    pub(crate) fn stop(&self, workers: &mut Vec<JoinHandle<()>>) {
        if !self.here() {
            std::mem::forget(std::mem::take(workers));
            return;
        }
        // SeqCst: see `submit`.
        self.stopping.store(true, Ordering::SeqCst);
        while self.submitting.load(Ordering::SeqCst) != 0 {
            thread::yield_now();
        }
        match &self.runner {
            Runner::Threads(queue) => queue.idle.wake_all(),
            #[cfg(target_os = "linux")]
            Runner::Uring(ring) => ring.wake(),
        }
        for worker in workers.drain(..) {
            // A worker panics only if a job's completion did; the pool still shuts down.
            let _ = worker.join();
        }
    }
}

/// The error of a request a pool does not take: it is stopping, or it is a forked child's
/// copy of its parent's pool.
pub(crate) fn stopped() -> io::Error {
    io::Error::from_raw_os_error(libc::EAGAIN)
}
