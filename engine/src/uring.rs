//! The io_uring driver of the file pool: requests go to the kernel's submission queue
//! instead of a thread, and their completions come back through its completion queue.
//!
//! The submitting thread pushes each request's entry and enters the kernel once per call
//! (a `lio_listio` list is one submission); a read of cached pages usually completes during
//! that very call, and the submitter then reaps it at once, so the record is posted before
//! the submission returns and no other thread runs. What the kernel finishes later (a
//! disk read, a write-back) is reaped by the pool's one reaper thread, which sleeps in
//! `io_uring_enter` until a completion arrives.
//!
//! The fault seam covers this driver too: a fault armed for `pread`, `pwrite`, `fsync` or
//! `fdatasync` on a request's descriptor fails the request as that call would (`EINTR` is
//! retried).
//!
//! A request is claimed for the kernel (its [`Delivery`](crate::completion::Delivery)
//! started) before its entry is pushed, so from then on a cancel finds it running: as with
//! a request a pool thread has begun, its one completion is its result. Each entry's user
//! data is a strong count of its job, taken back exactly once when its completion is reaped.

use crate::pool::{Job, Op, Pool};
use crate::primitive::{lock, Mutex};
use crate::sys::{
    self,
    fault::{self, Call},
};
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Submission queue entries (the completion queue has twice as many; the kernel keeps any
/// overflow, `IORING_FEAT_NODROP`).
const ENTRIES: u32 = 256;
/// User data of the no-op that wakes the reaper; no job lives at address 0.
const WAKE: u64 = 0;

/// One io_uring instance and who may touch which of its queues.
pub(crate) struct Ring {
    ring: IoUring,
    /// Held while pushing to the submission queue: one submitter at a time.
    pushing: Mutex<()>,
    /// Held while reaping the completion queue: one reaper at a time.
    reaping: Mutex<()>,
    /// Requests handed to the kernel and not yet reaped.
    in_kernel: AtomicUsize,
}

impl Ring {
    /// A ring, if the kernel allows one (`ENOSYS` without io_uring, `EPERM` where it is
    /// disabled, `ENOMEM` without locked memory for it).
    pub(crate) fn new() -> io::Result<Ring> {
        sys::fault::allocation()?;
        Ok(Ring {
            ring: IoUring::new(ENTRIES)?,
            pushing: Mutex::new(()),
            reaping: Mutex::new(()),
            in_kernel: AtomicUsize::new(0),
        })
    }

    /// Hands `job` to the kernel, then reaps what is complete already. A job a canceller
    /// claimed first is left to it.
    pub(crate) fn submit(&self, pool: &Pool, job: Arc<Job>) {
        if !job.delivery.start() {
            return;
        }
        // The fault seam stands in for the kernel: the call the thread driver would make
        // fails, and so does the request, without reaching the ring.
        let call = match job.op {
            Op::Read => Call::Pread,
            Op::Write => Call::Pwrite,
            Op::Sync => Call::Fsync,
            Op::SyncData => Call::Fdatasync,
        };
        // `EINTR` is retried, as the thread driver retries it.
        let fault = std::iter::repeat_with(|| fault::take(call, job.fd))
            .find(|&fault| fault != Some(libc::EINTR))
            .flatten();
        if let Some(errno) = fault {
            pool.complete(&job, Err(io::Error::from_raw_os_error(errno)));
            return;
        }
        let job = Arc::into_raw(job);
        // The job reaches the reaper through the kernel, which ThreadSanitizer cannot see:
        // name the edge (the other end is in `reap`).
        #[cfg(iocp_tsan)]
        crate::sys::tsan::release(job);
        // SAFETY: `job` came from `Arc::into_raw` just above and is still counted.
        let entry = entry(unsafe { &*job }).user_data(job as u64);
        // Relaxed: a count the reaper reads after reaping, under `reaping`'s ordering.
        self.in_kernel.fetch_add(1, Ordering::Relaxed);
        self.push(&entry);
        self.reap(pool, false);
    }

    /// Wakes the reaper (at a pool's stop: it exits once nothing is in the kernel).
    pub(crate) fn wake(&self) {
        self.push(&opcode::Nop::new().build().user_data(WAKE));
    }

    /// The reaper thread: reaps completions until the pool stops and the kernel holds
    /// nothing more of it.
    pub(crate) fn reap_until_stopped(&self, pool: &Pool) {
        loop {
            // Also submits what a submitter pushed but could not submit. A failure (a
            // signal, `EAGAIN`) only means another look.
            if self.ring.submit_and_wait(1).is_err() {
                thread::yield_now();
            }
            self.reap(pool, true);
            // Relaxed: ordered after the reap above, which took `reaping`.
            if pool.is_stopping() && self.in_kernel.load(Ordering::Relaxed) == 0 {
                return;
            }
        }
    }

    /// Pushes `entry` and enters the kernel to submit it.
    fn push(&self, entry: &squeue::Entry) {
        let _one = lock(&self.pushing);
        loop {
            // SAFETY: `pushing` is held, so this thread alone touches the submission queue
            // (the reaper's `submit_and_wait` only reads its published tail).
            let mut queue = unsafe { self.ring.submission_shared() };
            // SAFETY: the entry's buffer is owned by its job (or is caller memory kept valid
            // until completion) and the job lives, through the count in the user data, until
            // its completion is reaped.
            let pushed = unsafe { queue.push(entry) }.is_ok();
            // Publishes the tail for the kernel.
            drop(queue);
            // A failure leaves the entry queued for the next `io_uring_enter` (the reaper's
            // at the latest): nothing is lost.
            let _ = self.ring.submit();
            if pushed {
                return;
            }
            // The queue was full; the submit above made room.
        }
    }

    /// Takes every completion the kernel has posted and completes its job. A submitter
    /// (`wait` false) leaves the reaping to whoever is at it already.
    fn reap(&self, pool: &Pool, wait: bool) {
        let _one = if wait {
            lock(&self.reaping)
        } else {
            match self.reaping.try_lock() {
                Ok(guard) => guard,
                Err(_) => return,
            }
        };
        // SAFETY: `reaping` is held, so this thread alone touches the completion queue.
        let completions = unsafe { self.ring.completion_shared() };
        for completion in completions {
            if completion.user_data() == WAKE {
                continue;
            }
            // SAFETY: every other user data is a count of a job taken in `submit` with
            // `Arc::into_raw`, and its one completion is reaped once, here.
            let job = unsafe { Arc::from_raw(completion.user_data() as *const Job) };
            #[cfg(iocp_tsan)]
            crate::sys::tsan::acquire(Arc::as_ptr(&job));
            let result = match completion.result() {
                n if n >= 0 => Ok(n as usize),
                errno => Err(io::Error::from_raw_os_error(-errno)),
            };
            // Relaxed: see `submit`.
            self.in_kernel.fetch_sub(1, Ordering::Relaxed);
            pool.complete(&job, result);
        }
    }
}

/// The submission entry of `job` (without its user data).
fn entry(job: &Job) -> squeue::Entry {
    let fd = types::Fd(job.target.as_raw_fd());
    let (ptr, len) = lock(&job.buf).raw();
    // `raw` caps `len` at MAX_TRANSFER, which fits 32 bits.
    let len = len as u32;
    match job.op {
        Op::Read => opcode::Read::new(fd, ptr, len).offset(job.offset).build(),
        Op::Write => opcode::Write::new(fd, ptr, len).offset(job.offset).build(),
        Op::Sync => opcode::Fsync::new(fd).build(),
        Op::SyncData => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
    }
}
