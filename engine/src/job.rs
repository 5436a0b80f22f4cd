//! One request on the file pool, whichever driver runs it: what it does ([`Op`]), on which
//! descriptor, with which buffer, how it reports ([`Reply`]), and the countdown an
//! `LIO_WAIT` call sleeps on ([`ListWait`]).

use crate::aiocb::Aiocb;
use crate::buffer::Buf;
use crate::completion::Delivery;
use crate::primitive::{lock, Mutex};
use crate::request::{Association, Finished, Notify, OpResult};
use crate::sys;
use crate::Completion;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// One request on the pool.
pub(crate) struct Job {
    /// Set at submission, unique in the pool.
    pub(crate) id: u64,
    /// The number the job is filed under for cancellation: the file's descriptor, or the
    /// caller's number in an aiocb.
    pub(crate) fd: RawFd,
    /// The descriptor the job runs on, kept open while it runs: a `File`'s own, or for an
    /// aiocb the engine's duplicate of the caller's number (a caller closing its number,
    /// and the kernel handing the number out again, cannot send the job to another file).
    pub(crate) target: Arc<OwnedFd>,
    /// Whether `target` takes positioned I/O: the drivers keep `pread`'s `ESPIPE` for a
    /// descriptor that does not (io_uring would read a stream).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // read by io_uring alone
    pub(crate) seekable: bool,
    pub(crate) op: Op,
    pub(crate) offset: u64,
    pub(crate) buf: Mutex<Buf>,
    /// Whether a pool thread or a canceller completes the job.
    pub(crate) delivery: Delivery,
    pub(crate) reply: Reply,
    pub(crate) port: Association,
    /// The `LIO_WAIT` call waiting for this job.
    pub(crate) list: Option<Arc<ListWait>>,
}

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Write,
    Sync,
    SyncData,
}

/// How a job reports.
pub(crate) enum Reply {
    /// A `File`'s request, in the shared request model; an owned-buffer result is kept in
    /// the file's `finished`.
    Request {
        notify: Notify,
        finished: Arc<Mutex<Finished>>,
    },
    /// An aiocb of `lio_listio`: its status words are filled in (`update`, except in
    /// `LIO_NOWAIT_GMCS`) and a record carrying its address goes to its port, if any.
    Aiocb { aiocb: *const Aiocb, update: bool },
}

// SAFETY: the raw pointers in `Buf` and `Reply` come from callers of the `unsafe`
// overlapped and lio functions, who keep the memory valid until the job completes, on
// whichever thread completes it; everything else in a job is `Send + Sync`.
unsafe impl Send for Job {}
// SAFETY: a shared job is only read, except for its buffer, which is behind a mutex, and
// its delivery state, which is atomic; the raw pointers it reads are valid from any
// thread for the reason given for `Send`.
unsafe impl Sync for Job {}

/// A countdown an `LIO_WAIT` call sleeps on.
pub(crate) struct ListWait {
    remaining: AtomicU32,
}

impl ListWait {
    /// A countdown of one, which the waiter's own [`done`](Self::done) takes away once it
    /// has added every job ([`add`](Self::add)).
    pub(crate) fn new() -> ListWait {
        ListWait {
            remaining: AtomicU32::new(1),
        }
    }

    /// One more job to wait for.
    pub(crate) fn add(&self) {
        // Relaxed: the count is only read after the submitting loop's last change.
        self.remaining.fetch_add(1, Ordering::Relaxed);
    }

    /// A job added was not queued after all.
    pub(crate) fn take_back(&self) {
        // Relaxed: as in `add`.
        self.remaining.fetch_sub(1, Ordering::Relaxed);
    }

    /// One job is done.
    pub(crate) fn done(&self) {
        // Release: pairs with the acquire in `wait`, so the aiocb updates are visible.
        if self.remaining.fetch_sub(1, Ordering::Release) == 1 {
            sys::futex_wake_all(&self.remaining);
        }
    }

    /// Sleeps until every job is done.
    pub(crate) fn wait(&self) {
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

/// An aiocb's request is done with `result`: its status words are filled in when `update`
/// (every mode but `LIO_NOWAIT_GMCS`); returns the record for its port when it reports to
/// one under `key` (never in `LIO_WAIT`), carrying the aiocb's address.
pub(crate) fn aiocb_done(
    aiocb: &Aiocb,
    update: bool,
    key: Option<u64>,
    result: &io::Result<usize>,
) -> Option<Completion> {
    if update {
        aiocb.report(result);
    }
    let (bytes, errno) = crate::error::to_record(result);
    key.map(|key| Completion::new(key, bytes, aiocb as *const Aiocb as usize).with_error(errno))
}

impl Job {
    /// Fills in the job's aiocb, overlapped or kept result; returns the record still to
    /// post to its port (an overlapped block posts its own, as it completes).
    pub(crate) fn report(&self, result: io::Result<usize>) -> Option<Completion> {
        let key = self.port.as_ref().map(|(_, key)| *key);
        match &self.reply {
            Reply::Request { notify, finished } => {
                let buf = std::mem::replace(&mut *lock(&self.buf), Buf::None);
                let outcome = |result| OpResult::of_buffer(result, buf.into_vec());
                notify.deliver(result, outcome, key, &mut lock(finished))
            }
            Reply::Aiocb { aiocb, update } => {
                // SAFETY: the lio caller guaranteed the aiocb lives until completion.
                aiocb_done(unsafe { &**aiocb }, *update, key, &result)
            }
        }
    }

    /// Posts the record [`report`](Self::report) returned.
    pub(crate) fn post(&self, record: Option<Completion>) {
        if let (Some(record), Some((port, _))) = (record, &self.port) {
            // A closed port discards its records, this one with them.
            let _ = port.post(record);
        }
    }
}
