//! The io_uring driver of the file pool: requests go to the kernel's submission queue and
//! come back through its completion queue, both handled by one ring thread.
//!
//! A submitting thread only pushes entries into the submission queue (shared memory) and,
//! if the ring thread sleeps, signals its eventfd; it never enters the kernel for the ring.
//! A `lio_listio` list's entries are pushed one after another, with at most one signal
//! after the last. The ring thread submits what was pushed, one entry per
//! `io_uring_enter` (see `submit_each`: on a virtual disk a batch in one call is served as
//! one burst), reaps the completions and posts their records; reads of cached pages
//! complete during its submission. Between batches, when the kernel holds none of its
//! requests or it has just posted completions, it spins for a while, learnt as a port's
//! waiters learn it, so that a submitter that keeps the pool busy makes no system call at
//! all; then it sleeps in `io_uring_enter` until a completion arrives or the eventfd, whose
//! poll it keeps in the ring, is signalled. Between rounds it also takes part in the cached
//! reads a `lio_listio` caller offers (see `share`): when it sleeps, a signal of the eventfd
//! brings it to a run of 64 KiB or more.
//!
//! Only the ring thread enters the ring, and so only it runs the ring's task work: the
//! kernel finishing a request for the program's own threads (as it does when the submitter
//! enters the ring) would interrupt their sleeps — an `epoll_wait` would fail with `EINTR`.
//!
//! A request is claimed for the kernel (its [`Delivery`](crate::completion::Delivery)
//! started) before its entry is pushed, so from then on a cancel finds it running: as with
//! a request a pool thread has begun, its one completion is its result. Each entry's user
//! data is a strong count of its job, taken back exactly once when its completion is reaped.
//!
//! For the same reason the ring is set up on a thread of its own that ends at once: the
//! kernel records the thread that sets a ring up as one of its users, and when the ring is
//! closed it sends that thread task work to forget it, which ends an `epoll_wait` in
//! progress there with `EINTR`. A thread that builds a pool and drops it would see its next
//! port wait fail; a thread that has ended is forgotten at its exit instead.
//!
//! The fault seam covers this driver too: a fault armed for `pread`, `pwrite`, `fsync` or
//! `fdatasync` on a request's descriptor fails the request as that call would (`EINTR` is
//! retried).

use crate::job::{Job, Op};
use crate::parker::Spin;
use crate::primitive::{lock, Mutex};
use crate::share::Offers;
use crate::sys::{
    self, eventfd,
    fault::{self, Call},
};
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Submission queue entries (the completion queue has twice as many; the kernel keeps any
/// overflow, `IORING_FEAT_NODROP`).
const ENTRIES: u32 = 1024;
/// User data of the eventfd's poll; no job lives at address 0.
const WAKER: u64 = 0;

/// One io_uring instance, its ring thread's state, and the eventfd that wakes it.
pub(crate) struct Ring {
    ring: IoUring,
    /// Held while pushing to the submission queue: one pusher at a time.
    pushing: Mutex<()>,
    /// Entries pushed and not yet taken into account by the ring thread (the ring thread's
    /// Dekker partner, with `asleep`).
    pushed: AtomicUsize,
    /// Set while the ring thread is, or is about to be, asleep in `io_uring_enter`.
    asleep: AtomicBool,
    /// Signalled to end the ring thread's sleep: a poll of it is always in the ring.
    waker: OwnedFd,
    /// How long the ring thread spins for work before it sleeps.
    spin: Spin,
}

impl Ring {
    /// A ring, if the kernel allows one (`ENOSYS` without io_uring, `EPERM` where it is
    /// disabled, `ENOMEM` without locked memory for it, `EMFILE`).
    pub(crate) fn new() -> io::Result<Ring> {
        sys::fault::allocation()?;
        // On a thread that ends at once (see the module's documentation), so that closing
        // the ring interrupts none of the program's own threads.
        thread::Builder::new()
            .name("iocp-file-setup".to_string())
            .spawn(Ring::set_up)?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// The ring itself, on the calling thread.
    fn set_up() -> io::Result<Ring> {
        Ok(Ring {
            ring: IoUring::new(ENTRIES)?,
            pushing: Mutex::new(()),
            pushed: AtomicUsize::new(0),
            asleep: AtomicBool::new(false),
            waker: eventfd::new()?,
            spin: Spin::new(),
        })
    }

    /// Hands `job` to the kernel — with `kick`, waking the ring thread at once if it
    /// sleeps; without, leaving that to [`kick`](Self::kick) after the rest of a list. A
    /// job a canceller claimed first is left to it.
    /// A job that fails before it reaches the ring is completed through `complete`.
    pub(crate) fn submit(
        &self,
        job: Arc<Job>,
        kick: bool,
        complete: impl FnOnce(&Arc<Job>, io::Result<usize>),
    ) {
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
        let fault = std::iter::repeat_with(|| fault::take(call, job.fd))
            .find(|&fault| fault != Some(libc::EINTR))
            .flatten();
        // A pipe, socket or terminal: `pread` fails with ESPIPE, and so does the request.
        let fault = fault
            .or((!job.seekable && matches!(job.op, Op::Read | Op::Write)).then_some(libc::ESPIPE));
        if let Some(errno) = fault {
            complete(&job, Err(io::Error::from_raw_os_error(errno)));
            return;
        }
        let job = Arc::into_raw(job);
        // The job reaches the ring thread through the kernel, which ThreadSanitizer cannot
        // see: name the edge (the other end is in `reap`).
        #[cfg(iocp_tsan)]
        crate::sys::tsan::release(job);
        // SAFETY: `job` came from `Arc::into_raw` just above and is still counted.
        let entry = entry(unsafe { &*job }).user_data(job as u64);
        self.push(&entry);
        // SeqCst: the submitter half of the Dekker pair with the ring thread's `asleep`.
        self.pushed.fetch_add(1, Ordering::SeqCst);
        if kick {
            self.kick();
        }
    }

    /// Wakes the ring thread if it sleeps (after a list's entries, at a pool's stop).
    pub(crate) fn kick(&self) {
        // SeqCst: read after `pushed` was raised (see `submit`).
        if self.asleep.load(Ordering::SeqCst) {
            eventfd::signal(&self.waker);
        }
    }

    /// Wakes the ring thread whether or not it sleeps (a pool's stop: it exits once the
    /// kernel holds nothing more of the pool).
    pub(crate) fn wake(&self) {
        eventfd::signal(&self.waker);
    }

    /// The ring thread: submits, reaps and hands each job to `complete`, until `stopping`
    /// holds and the kernel has nothing more of the pool. Between rounds it helps with the
    /// runs put on `offers`.
    pub(crate) fn run(
        &self,
        complete: impl Fn(&Arc<Job>, io::Result<usize>),
        stopping: impl Fn() -> bool,
        offers: &Offers,
    ) {
        // Job entries submitted and not yet reaped (it may dip below zero for a moment: an
        // entry can be submitted and reaped before its push is counted).
        let mut in_kernel: isize = 0;
        // Entries counted in the submission queue that the kernel has not taken yet.
        let mut queued: usize = 0;
        let mut armed = false;
        let mut posted = false;
        loop {
            if !armed {
                let poll =
                    opcode::PollAdd::new(types::Fd(self.waker.as_raw_fd()), libc::POLLIN as _)
                        .build()
                        .user_data(WAKER);
                // The ring thread makes room itself when the queue is full: it is the one
                // that submits.
                while !self.try_push(&poll) {
                    let _ = self.ring.submit();
                }
                queued += 1;
                armed = true;
            }
            // Acquire: pairs with the pushers' increment, after their entries are published.
            let pushed = self.pushed.swap(0, Ordering::Acquire);
            in_kernel += pushed as isize;
            queued = self.submit_each(queued + pushed);
            let (reaped, woken) = self.reap(&complete);
            in_kernel -= reaped as isize;
            posted |= reaped > 0;
            if woken {
                eventfd::drain(&self.waker);
                armed = false;
            }
            let helped = offers.help();
            // A wake goes round again too: the eventfd's poll is armed at the top, and must
            // be before the ring thread sleeps.
            if pushed > 0 || reaped > 0 || woken || helped {
                continue;
            }
            if stopping() && in_kernel <= 0 && self.pushed.load(Ordering::SeqCst) == 0 {
                return;
            }
            // With requests in the kernel their completions end the sleep below (the kernel
            // runs the ring's task work in this thread's `io_uring_enter`), so spinning for
            // them alone would only take a core from the device's interrupts and the task
            // work. But once completions were just posted, their submitter is likely to send
            // the next requests within microseconds: a spin catches them without the eventfd
            // signal and the sleep and wake it costs (O_DIRECT reads at queue depth 1 on a
            // 2-core Xeon VM: 14.0k / 13.7k / 15.8k IOPS against 11.4k / 9.6k / 7.9k without,
            // fio io_uring 12.0k-14.7k; queue depth 32 unchanged, 0.78x-0.87x fio io_uring).
            // Taken in every round that gets here, so that a post seen before an idle spin
            // does not make a later round, with requests in the kernel, spin for nothing.
            let just_posted = std::mem::take(&mut posted);
            let spun = (in_kernel <= 0 || just_posted).then(|| {
                // Relaxed: a hint; whether to sleep is decided with SeqCst below.
                self.spin.spin(None, || {
                    self.pushed.load(Ordering::Relaxed) > 0
                        || self.has_completions()
                        || offers.pending()
                })
            });
            if let Some((true, _)) = spun {
                continue;
            }
            // SeqCst: the ring thread half of the Dekker pair with `submit`: either a
            // pusher sees it asleep and signals the eventfd, or it sees their entry.
            self.asleep.store(true, Ordering::SeqCst);
            let done = stopping() && in_kernel <= 0;
            if self.pushed.load(Ordering::SeqCst) == 0 && !done {
                // Ends at a completion: a job's, or the eventfd's poll. A failure (a
                // signal, the ring's own task work) only means another round.
                let _ = self.ring.submit_and_wait(1);
            }
            // Relaxed: pushers that still see it asleep only signal the eventfd once more.
            self.asleep.store(false, Ordering::Relaxed);
            if let Some((_, start)) = spun {
                self.spin.learn(start, true);
            }
        }
    }

    /// Hands the kernel `queued` entries of the submission queue, one `io_uring_enter` each,
    /// as fio submits by default (`iodepth_batch_submit=1`). Returns how many are left: a
    /// failure (`EAGAIN`, `EBUSY` with the completion queue full) leaves them for the next
    /// round, after its reaping makes room.
    ///
    /// One entry per call, not the whole queue in one: on a virtual disk the device starts
    /// on requests as each notification reaches it, and a batch submitted together reaches
    /// it as one notification, is served as one run and completes as one burst, so that
    /// the device idles while the burst's submitter turns it around. O_DIRECT 4 KiB random
    /// reads at queue depth 32 (AMD EPYC VM, virtio disk; `iocp-bench file`, three pairs of
    /// runs in turn): 0.79x / 0.79x / 0.81x fio io_uring with the queue in one call, 0.86x /
    /// 0.90x / 0.98x one entry per call. Submitting only the first entry alone gained
    /// nothing (0.77x-0.81x).
    fn submit_each(&self, mut queued: usize) -> usize {
        while queued > 0 {
            // SAFETY: no argument is passed (`None`, with no flag asking for one), so the
            // call reads no memory of ours; the entry it submits was published by its
            // pusher, with the same guarantees as in `try_push`.
            match unsafe { self.ring.submitter().enter::<libc::sigset_t>(1, 0, 0, None) } {
                // Nothing left: the submission before a sleep took what was counted since.
                Ok(0) => return 0,
                Ok(_) => queued -= 1,
                Err(_) => break,
            }
        }
        queued
    }

    /// Pushes `entry` into the submission queue, waiting for the ring thread to make room if
    /// it is full.
    fn push(&self, entry: &squeue::Entry) {
        while !self.try_push(entry) {
            // Full: the ring thread submits what is queued (it is awake, or woken here).
            self.wake();
            thread::yield_now();
        }
    }

    /// Pushes `entry` into the submission queue; `false` if it is full.
    fn try_push(&self, entry: &squeue::Entry) -> bool {
        let _one = lock(&self.pushing);
        // SAFETY: `pushing` is held, so this thread alone writes the submission queue (the
        // ring thread's `io_uring_enter` only reads its published tail).
        let mut queue = unsafe { self.ring.submission_shared() };
        // SAFETY: the entry's buffer is owned by its job (or is caller memory kept valid
        // until completion) and the job lives, through the count in the user data, until
        // its completion is reaped; the poll entry names only the eventfd, which lives as
        // long as the ring. Dropping `queue` publishes the tail for the kernel.
        unsafe { queue.push(entry) }.is_ok()
    }

    /// Whether the kernel has posted completions not yet reaped.
    fn has_completions(&self) -> bool {
        // SAFETY: only the ring thread reads the completion queue, and this is the ring
        // thread; the snapshot is dropped at once, consuming nothing.
        !unsafe { self.ring.completion_shared() }.is_empty()
    }

    /// Takes every completion the kernel has posted and completes its job. Returns how many
    /// jobs it completed, and whether the eventfd's poll completed.
    fn reap(&self, complete: impl Fn(&Arc<Job>, io::Result<usize>)) -> (usize, bool) {
        let (mut reaped, mut woken) = (0, false);
        // SAFETY: only the ring thread reads the completion queue, and this is the ring
        // thread.
        let completions = unsafe { self.ring.completion_shared() };
        for completion in completions {
            if completion.user_data() == WAKER {
                woken = true;
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
            complete(&job, result);
            reaped += 1;
        }
        (reaped, woken)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring, or `None` (with a note) where the kernel refuses io_uring.
    fn ring() -> Option<Ring> {
        match Ring::new() {
            Ok(ring) => Some(ring),
            Err(e) => {
                eprintln!("skipped: no io_uring here ({e})");
                None
            }
        }
    }

    /// Pushes `n` no-ops (user data [`WAKER`], so that `reap` only counts them).
    fn push_nops(ring: &Ring, n: usize) {
        for _ in 0..n {
            assert!(ring.try_push(&opcode::Nop::new().build().user_data(WAKER)));
        }
    }

    /// Completions the kernel has posted, taken.
    fn completions(ring: &Ring) -> usize {
        // SAFETY: no ring thread runs in this test: this thread alone reads the queue.
        unsafe { ring.ring.completion_shared() }.count()
    }

    // (Miri has no io_uring.)
    #[test]
    #[cfg_attr(miri, ignore)]
    fn every_counted_entry_is_submitted() {
        let Some(ring) = ring() else { return };
        push_nops(&ring, 5);
        assert_eq!(ring.submit_each(5), 0);
        // A no-op completes during its submission.
        assert_eq!(completions(&ring), 5);
        // Counted entries that are already gone (a sleep's submission took them): nothing
        // to do, nothing left.
        assert_eq!(ring.submit_each(3), 0);
        assert_eq!(completions(&ring), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn entries_published_but_not_yet_counted_wait_for_their_count() {
        let Some(ring) = ring() else { return };
        push_nops(&ring, 4);
        // Only two of them counted so far: the other two stay queued for the next round.
        assert_eq!(ring.submit_each(2), 0);
        assert_eq!(completions(&ring), 2);
        assert_eq!(ring.submit_each(2), 0);
        assert_eq!(completions(&ring), 2);
    }
}
