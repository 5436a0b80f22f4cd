//! AIX's asynchronous I/O on the file pool: `lio_listio` in the modes `LIO_WAIT`,
//! `LIO_NOWAIT` and `LIO_NOWAIT_GMCS`, and `aio_cancel`; the public entry points are
//! [`FilePool::lio_listio`](crate::FilePool::lio_listio) and
//! [`FilePool::aio_cancel`](crate::FilePool::aio_cancel).

use crate::aiocb::{AioCancel, Aiocb, LioMode, Opcode, AIO_EXTENDED};
use crate::buffer::{Buf, MAX_TRANSFER};
use crate::completion::Delivery;
use crate::error::{self, to_record};
use crate::job::{aiocb_done, Job, ListWait, Op, Reply};
use crate::pool::{self, Pool};
use crate::port::Posts;
use crate::primitive::Mutex;
use crate::request::Association;
use crate::sys::{self, file as sysfile};
use crate::{Completion, Port};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// AIX `lio_listio`: submits every request of `list` in one call.
///
/// A read whose pages are all in the page cache is done before the call returns
/// ([`ReadAt::read`]), on the calling thread and, in a list of four or more such reads, on
/// an idle pool thread too ([`Pool::share`]): its aiocb is filled in (except in
/// `LIO_NOWAIT_GMCS`) and its record posted with the others the call completes, in one
/// batched post. Every other
/// request goes to the pool. Either way it completes once, as it would have on the pool.
///
/// NULL entries and [`LIO_NOP`] entries are skipped. An entry that cannot be queued — a
/// closed descriptor (`EBADF`), a negative offset, more than 2^31 - 1 bytes, a NULL
/// buffer, an unknown opcode (`EINVAL`), an `aio_iocpfd` that is no live port
/// (`EBADF`), or no port at all in [`LioMode::NoWaitGmcs`] (`EINVAL`) — does not
/// disturb the others: its aiocb gets the error (in `NoWaitGmcs`, a record with the
/// error goes to its port when it has one) and the call returns `EIO` after queuing the
/// rest. In [`LioMode::Wait`] it also returns `EIO` when a request failed as it ran (its
/// aiocb holds the error), as POSIX has it. `EAGAIN` once the pool is stopping, or in the
/// child of a `fork` made after the pool started (nothing is done then).
///
/// # Safety
///
/// Every non-NULL entry must point to an [`Aiocb`] that, with its `aio_buf` memory,
/// stays valid and untouched until its request is done (its record is dequeued, or its
/// `aio_error` is no longer `EINPROGRESS`; in `Wait` mode, until this returns).
pub unsafe fn lio_listio(pool: &Pool, mode: LioMode, list: &[*mut Aiocb]) -> io::Result<()> {
    if !pool.here() {
        // Not even the reads the caller would do itself: their offers go to the pool.
        return Err(pool::stopped());
    }
    let mut call = ListCall {
        pool,
        mode,
        wait: (mode == LioMode::Wait).then(|| Arc::new(ListWait::new())),
        failed: false,
        refused: false,
        queued: false,
        last_dup: None,
        posts: Posts::new(),
    };
    // The port of the last entry looked up, by what names it (`aio_flag`'s extended bit
    // and `aio_iocpfd`).
    let mut last_port: Option<((i32, i32), Association)> = None;
    // Whether the last descriptor looked at was opened with `O_DIRECT`: one look per file.
    let mut last_direct: Option<(RawFd, bool)> = None;
    for chunk in list.chunks(GATHER) {
        // The chunk's reads the caller may do itself, done together below.
        let mut reads = [ReadAt::NONE; GATHER];
        let mut gathered: [Gathered<'_>; GATHER] = std::array::from_fn(|_| None);
        let mut n = 0;
        // What names the port of the chunk's last gathered read.
        let mut last_gathered = None;
        for &entry in chunk {
            // SAFETY: the caller guarantees non-NULL entries point to live aiocbs.
            let Some(aiocb) = (unsafe { entry.as_ref() }) else {
                continue;
            };
            if aiocb.opcode().ok() == Some(Opcode::Nop) {
                continue;
            }
            // A list nearly always names one port: look each handle up once per call.
            let named = (aiocb.aio_flag & AIO_EXTENDED, aiocb.aio_iocpfd);
            if !matches!(&last_port, Some((known, _)) if *known == named) {
                match lio_port(aiocb, mode) {
                    Ok(port) => last_port = Some((named, port)),
                    Err(err) => {
                        call.failed = true;
                        aiocb.report(&Err(err));
                        continue;
                    }
                }
            }
            let (_, port) = last_port.as_ref().expect("looked up above");
            if pool.caller_reads {
                if let Some(read) = cached_candidate(aiocb, &mut last_direct) {
                    // The port goes with the first of a run of reads that name it.
                    let new = last_gathered != Some(named);
                    last_gathered = Some(named);
                    reads[n] = read;
                    gathered[n] = Some((aiocb, new.then(|| port.clone())));
                    n += 1;
                    continue;
                }
            }
            if !call.queue(aiocb, port.clone()) {
                break;
            }
        }
        let done = call.read_cached(&reads[..n]);
        let mut port: Association = None;
        for (read, gathered) in done.iter().zip(&mut gathered[..n]) {
            let (aiocb, named) = gathered.take().expect("gathered with its read");
            if let Some(named) = named {
                port = named;
            }
            match read.load(Ordering::Relaxed) {
                // Also once the pool refused a later entry: this one came first, and gets
                // its answer (`EAGAIN` then) as it would have in list order.
                NOT_CACHED => {
                    call.queue(aiocb, port.clone());
                }
                bytes => call.report_cached(aiocb, &port, bytes),
            }
        }
        if call.refused {
            break;
        }
    }
    call.finish(list)
}

/// Entries of a list looked at together: their cached reads are done in one go, shared
/// with an idle pool thread when there are [`SHARE_MIN`] or more.
const GATHER: usize = 32;
/// Fewest cached reads of a chunk offered to an idle pool thread: fewer take about as long
/// as a thread takes to come.
const SHARE_MIN: usize = 4;
/// Fewest bytes of cached reads in a chunk for which a sleeping pool thread is woken to help
/// (a futex wake, paid by the caller up front): 64 KiB take a core some ten microseconds to
/// copy, several times the wake. A shorter run goes only to a thread already awake.
const WAKE_FOR: usize = 64 * 1024;
/// A read's result in [`ListCall::read_cached`]'s answer when it must go to the pool.
const NOT_CACHED: usize = usize::MAX;

/// An entry whose read the caller may do itself, with the port it reports to when that
/// differs from the chunk's previous such entry's (one reference per run, not per read).
type Gathered<'a> = Option<(&'a Aiocb, Option<Association>)>;

/// The state of one `lio_listio` call.
struct ListCall<'p> {
    pool: &'p Pool,
    mode: LioMode,
    /// `LIO_WAIT`'s count of the requests queued to the pool.
    wait: Option<Arc<ListWait>>,
    /// An entry could not be queued (the call fails with `EIO`).
    failed: bool,
    /// The pool refused a request: it is stopping (the call fails with `EAGAIN`).
    refused: bool,
    /// A request went to the pool (io_uring's ring thread is to be told, once).
    queued: bool,
    /// A list nearly always reads one file: one duplicate of it per call.
    last_dup: Option<(RawFd, Arc<OwnedFd>, bool)>,
    /// Records of the reads done by the caller, posted together.
    posts: Posts,
}

impl ListCall<'_> {
    /// Hands `aiocb`'s request to the pool, or reports why it could not be queued. Returns
    /// `false` once the pool refuses requests.
    fn queue(&mut self, aiocb: &Aiocb, port: Association) -> bool {
        let mode = self.mode;
        let job = match lio_job(
            aiocb,
            mode,
            port.clone(),
            self.wait.clone(),
            &mut self.last_dup,
        ) {
            Ok(job) => job,
            Err(err) => {
                self.failed = true;
                match (&port, mode) {
                    (Some((port, _)), LioMode::NoWaitGmcs) => {
                        let (bytes, errno) = to_record(&Err(err));
                        let entry = aiocb as *const Aiocb as usize;
                        let record = Completion::new(0, bytes, entry).with_error(errno);
                        // A closed port discards the record, as it would any other.
                        let _ = port.post(record);
                    }
                    _ => aiocb.report(&Err(err)),
                }
                return true;
            }
        };
        if mode != LioMode::NoWaitGmcs {
            aiocb.set_in_progress();
        }
        if let Some(wait) = &self.wait {
            wait.add();
        }
        if let Err(err) = self.pool.submit_listed(job) {
            if let Some(wait) = &self.wait {
                wait.take_back();
            }
            aiocb.report(&Err(err));
            self.refused = true;
            return false;
        }
        self.queued = true;
        true
    }

    /// Does `reads` on this thread, and on an idle pool thread when there are enough of
    /// them: each one's byte count, or [`NOT_CACHED`] when it must go to the pool.
    fn read_cached(&self, reads: &[ReadAt]) -> [AtomicUsize; GATHER] {
        let done: [AtomicUsize; GATHER] = std::array::from_fn(|_| AtomicUsize::new(NOT_CACHED));
        let read = |i: usize| {
            // SAFETY: each read is of a caller's buffer that stays writable until its
            // request is done, which it is before `lio_listio` returns; `share` runs each
            // index once, so no two threads write one buffer.
            let bytes = unsafe { reads[i].read() };
            // Relaxed: `share` returns only once every read ran, with its effects visible.
            done[i].store(bytes.unwrap_or(NOT_CACHED), Ordering::Relaxed);
        };
        if reads.len() >= SHARE_MIN {
            let bytes: usize = reads.iter().map(|read| read.len).sum();
            self.pool.share(reads.len(), &read, bytes >= WAKE_FOR);
        } else {
            (0..reads.len()).for_each(read);
        }
        done
    }

    /// Reports a read the caller did, as the pool reports a job (see `lio_job`): the aiocb
    /// is filled in unless in `LIO_NOWAIT_GMCS`, and `LIO_WAIT` posts no record.
    fn report_cached(&mut self, aiocb: &Aiocb, port: &Association, bytes: usize) {
        let port = port.as_ref().filter(|_| self.mode != LioMode::Wait);
        let key = port.map(|(_, key)| *key);
        let update = self.mode != LioMode::NoWaitGmcs;
        if let Some(record) = aiocb_done(aiocb, update, key, &Ok(bytes)) {
            let (port, _) = port.expect("a key comes with its port");
            self.posts.push(port, record);
        }
    }

    /// Ends the call: the list is handed over as one (io_uring: one wake of the ring thread,
    /// and none for a list done entirely by reads of cached pages), the caller's reads one
    /// post per port; `LIO_WAIT` waits for every request it queued. The call's result.
    fn finish(mut self, list: &[*mut Aiocb]) -> io::Result<()> {
        if self.queued {
            self.pool.flush();
        }
        self.posts.flush();
        if let Some(wait) = self.wait {
            // The initial count of one kept the waiter from finishing before the loop did.
            // Even a refused list waits for what it queued: its aiocbs are in use until then.
            wait.done();
            wait.wait();
            // POSIX's `LIO_WAIT` fails with `EIO` when any request failed, also one that
            // failed as it ran (its aiocb holds its error), not only one that could not be
            // queued.
            self.failed |= list.iter().any(|&entry| {
                // SAFETY: non-NULL entries point to live aiocbs (the caller's contract),
                // whose requests are all done now.
                unsafe { entry.as_ref() }.is_some_and(|aiocb| {
                    aiocb.opcode().ok() != Some(Opcode::Nop) && aiocb.error() != 0
                })
            });
        }
        if self.refused {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        if self.failed {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }
}

/// AIX `aio_cancel`: cancels `aiocb`'s request, or every request on `fd` when `None`.
/// A cancelled request still completes, with `ECANCELED` (a record, in the `NOWAIT`
/// modes with a port).
pub fn aio_cancel(pool: &Pool, fd: RawFd, aiocb: Option<*const Aiocb>) -> io::Result<AioCancel> {
    if !sysfile::is_open(fd) {
        return Err(error::closed());
    }
    let (cancelled, running) = match aiocb {
        // Only aiocbs: a `File`'s requests (the C ABI's `ReadFile`) are filed under the
        // engine's own descriptor and cancelled with `CancelIoEx`.
        None => pool.cancel(fd, |job| matches!(job.reply, Reply::Aiocb { .. })),
        Some(wanted) => {
            // An aiocb may be submitted again once its request completed, and the old
            // job can still be in the table for a moment after its record is out: the
            // aiocb names its newest job only.
            let newest = pool.newest(
                fd,
                |job| matches!(job.reply, Reply::Aiocb { aiocb, .. } if aiocb == wanted),
            );
            match newest {
                Some(id) => pool.cancel(fd, |job| job.id == id),
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

/// The largest `lio_listio` read done on the calling thread when its pages are cached
/// (see [`FilePoolBuilder::cached_reads_on_caller`](crate::FilePoolBuilder)): a copy of a
/// few microseconds at most, so that a list of large reads does not hold its caller up.
pub const CALLER_READ_MAX: usize = 64 * 1024;

/// A read the caller may try to do itself: `aio_nbytes` bytes at `offset` of `fd` into `buf`.
#[derive(Clone, Copy)]
struct ReadAt {
    fd: RawFd,
    buf: *mut u8,
    len: usize,
    offset: u64,
}

// SAFETY: a `ReadAt` names a caller's buffer, which `ListCall::read_cached` has exactly
// one thread write (the one that claims its index), before `lio_listio` returns.
unsafe impl Sync for ReadAt {}

impl ReadAt {
    /// A placeholder for the unused part of an array.
    const NONE: ReadAt = ReadAt {
        fd: -1,
        buf: std::ptr::null_mut(),
        len: 0,
        offset: 0,
    };

    /// Reads the bytes if they are all in the page cache ([`sysfile::pread_cached`]),
    /// straight from the caller's descriptor (it is open for the length of the call: no
    /// duplicate is needed): the byte count, or `None` when the request must go to the pool
    /// (not cached, or an error, which the pool meets and reports itself).
    ///
    /// # Safety
    ///
    /// `buf` must be writable for `len` bytes for the duration of the call, by this thread
    /// alone.
    unsafe fn read(&self) -> Option<usize> {
        // SAFETY: the caller's guarantee.
        unsafe { sysfile::pread_cached(self.fd, self.buf, self.len, self.offset) }
    }
}

/// `aiocb`'s read if the caller may try it itself ([`ReadAt::read`]): a read of at most
/// [`CALLER_READ_MAX`] bytes into a buffer, at a valid offset of a descriptor not opened
/// with `O_DIRECT` (whose reads reach the device whatever the flag; `last_direct` keeps the
/// answer for the list's next entry on the same descriptor). What makes a list of cached
/// reads cost about what a `pread` loop does, with no hand-off to a pool thread and back.
fn cached_candidate(aiocb: &Aiocb, last_direct: &mut Option<(RawFd, bool)>) -> Option<ReadAt> {
    if aiocb.opcode().ok() != Some(Opcode::Read)
        || aiocb.aio_fildes < 0
        || aiocb.aio_buf.is_null()
        || aiocb.aio_nbytes > CALLER_READ_MAX
    {
        return None;
    }
    let offset = u64::try_from(aiocb.aio_offset).ok()?;
    let fd = aiocb.aio_fildes;
    let direct = match *last_direct {
        Some((known, direct)) if known == fd => direct,
        _ => {
            let direct = sysfile::is_direct(fd);
            *last_direct = Some((fd, direct));
            direct
        }
    };
    (!direct).then_some(ReadAt {
        fd,
        buf: aiocb.aio_buf,
        len: aiocb.aio_nbytes,
        offset,
    })
}

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
    port: Association,
    list: Option<Arc<ListWait>>,
    last_dup: &mut Option<(RawFd, Arc<OwnedFd>, bool)>,
) -> io::Result<Job> {
    let op = match aiocb.opcode()? {
        Opcode::Read => Op::Read,
        Opcode::Write => Op::Write,
        Opcode::Nop => return Err(error::invalid()),
    };
    let offset = u64::try_from(aiocb.aio_offset).map_err(|_| error::invalid())?;
    if aiocb.aio_nbytes > MAX_TRANSFER || (aiocb.aio_buf.is_null() && aiocb.aio_nbytes > 0) {
        return Err(error::invalid());
    }
    let (dup, seekable) = match last_dup {
        Some((fd, dup, seekable)) if *fd == aiocb.aio_fildes => (Arc::clone(dup), *seekable),
        _ => {
            if aiocb.aio_fildes < 0 {
                return Err(error::closed());
            }
            let dup = Arc::new(sys::dup::duplicate(aiocb.aio_fildes)?);
            let seekable = sysfile::seekable(dup.as_raw_fd());
            *last_dup = Some((aiocb.aio_fildes, Arc::clone(&dup), seekable));
            (dup, seekable)
        }
    };
    Ok(Job {
        id: 0,
        fd: aiocb.aio_fildes,
        target: dup,
        seekable,
        op,
        offset,
        buf: Mutex::new(Buf::Raw {
            ptr: aiocb.aio_buf,
            len: aiocb.aio_nbytes,
        }),
        delivery: Delivery::new(),
        reply: Reply::Aiocb {
            aiocb,
            update: mode != LioMode::NoWaitGmcs,
        },
        port: port.filter(|_| mode != LioMode::Wait),
        list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::tests::scratch_file;
    use crate::pool::FileDriver;
    use crate::primitive::lock;
    use std::os::fd::AsRawFd;

    /// Regression: after an aiocb's request reported its record, its job stayed in the
    /// in-flight table (running) for a moment. A program that had dequeued the record,
    /// submitted the aiocb again and cancelled it was told `AIO_NOTCANCELED` although the
    /// new request was cancelled. The soak-era ThreadSanitizer runs caught it in
    /// `aio_cancel_racing_completion_reports_what_it_did_and_each_request_completes_once`;
    /// this sets the window up directly: the old job claimed by a runner and not yet done,
    /// the new one queued.
    #[test]
    fn regression_aio_cancel_of_a_reused_aiocb_counted_its_previous_request() {
        let (pool, mut workers, _) =
            Pool::start(FileDriver::Threads, 1, false, true, false).unwrap();
        let pool = &*pool;
        let file = scratch_file(&[0; 4096]);
        let fd = file.as_raw_fd();
        let mut buf = vec![0u8; 512];
        let aiocb = Aiocb::new(fd, Opcode::Read, 0, buf.as_mut_ptr(), buf.len());
        let job = |id| {
            let mut job = lio_job(&aiocb, LioMode::NoWait, None, None, &mut None).unwrap();
            job.id = id;
            Arc::new(job)
        };
        let (old, new) = (job(u64::MAX - 1), job(u64::MAX));
        assert!(old.delivery.start(), "the old job is its runner's");
        {
            let mut inflight = lock(&pool.inflight);
            let jobs = inflight.entry(fd).or_default();
            jobs.insert(old.id, Arc::clone(&old));
            jobs.insert(new.id, Arc::clone(&new));
        }
        let answer = aio_cancel(pool, fd, Some(&aiocb as *const Aiocb)).unwrap();
        assert_eq!(answer, AioCancel::Canceled);
        assert_eq!(aiocb.error(), libc::ECANCELED);
        // The old job's runner would finish it; here it is dropped from the table by hand.
        let left = lock(&pool.inflight).remove(&fd).unwrap();
        assert_eq!(left.keys().copied().collect::<Vec<_>>(), [old.id]);
        pool.stop(&mut workers);
    }
}
