//! Regular files through ports: a [`File`] taken over by a [`FilePool`], whose requests run
//! on the pool's threads (`pool`) and come back in the shared request model (`request`).
//!
//! Requests on a [`File`] are always asynchronous (Windows semantics for files): each one
//! completes as a record, never at once. Owned-buffer requests come back through
//! [`File::finish`] as sockets' do; overlapped requests take their offset from the block's
//! `Offset`/`OffsetHigh`. [`FilePool::lio_listio`] submits a list of AIX `aiocb`s in one
//! call (see `aio`). Dropping the [`FilePool`] stops new submissions, lets the threads
//! finish every queued request, and joins them: no request is lost.
//!
//! A pool's threads (and its io_uring instance's rings, shared with the process that made
//! them) belong to the process that started it. In the child of a later `fork`, the pool
//! is stopped: its requests fail with `EAGAIN`, it holds none of the parent's, and
//! dropping it joins nothing. The C ABI's process-wide pool ([`FilePool::global`]) is
//! started again in the child on first use, and requests on the files it took over go
//! there.

use crate::aio;
use crate::aiocb::{AioCancel, Aiocb, LioMode};
use crate::buffer::{Buf, MAX_TRANSFER};
use crate::completion::Delivery;
use crate::error;
use crate::job::{Job, Op, Reply};
use crate::overlapped::Overlapped;
use crate::pool::{FileDriver, Pool};
use crate::primitive::{lock, Mutex};
use crate::request::{self, Association, Finished, Notify, OpResult, Submitted, Ticket, Which};
use crate::sys::fork::PerProcess;
use crate::sys::{self, file as sysfile};
use crate::{Completion, Port};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Settings for a [`FilePool`].
#[derive(Clone, Debug)]
pub struct FilePoolBuilder {
    driver: FileDriver,
    threads: usize,
    pin: bool,
    caller_reads: bool,
    /// Set by [`FilePool::global`] alone.
    process_wide: bool,
}

impl Default for FilePoolBuilder {
    fn default() -> FilePoolBuilder {
        FilePoolBuilder {
            driver: FileDriver::Auto,
            threads: 0,
            pin: false,
            caller_reads: true,
            process_wide: false,
        }
    }
}

impl FilePoolBuilder {
    /// How requests run: [`FileDriver::Auto`] (the default) is io_uring where the kernel
    /// allows it, unless the environment variable `IOCP_FILE_DRIVER=threads` asks for
    /// threads.
    pub fn driver(mut self, driver: FileDriver) -> FilePoolBuilder {
        self.driver = driver;
        self
    }

    /// Number of threads of the thread driver (0, the default: one per CPU).
    pub fn threads(mut self, threads: usize) -> FilePoolBuilder {
        self.threads = threads;
        self
    }

    /// Pins thread `i` to core `i` (modulo the cores the process may use).
    pub fn pin(mut self, pin: bool) -> FilePoolBuilder {
        self.pin = pin;
        self
    }

    /// Whether a `lio_listio` read of at most [`CALLER_READ_MAX`](crate::CALLER_READ_MAX)
    /// bytes whose pages are all in the page cache is done before the call returns (`true`,
    /// the default), or goes to the pool like every other request (`false`: the caller
    /// never spends time copying, and every request can be cancelled while it waits in the
    /// queue). When on, the calling thread does such reads itself, with no hand-off to the
    /// pool and back, and a list of four or more is offered meanwhile to an idle pool
    /// thread (woken if it sleeps and the reads come to 64 KiB or more), which takes some
    /// of them: the copies run on two cores.
    pub fn cached_reads_on_caller(mut self, on_caller: bool) -> FilePoolBuilder {
        self.caller_reads = on_caller;
        self
    }

    /// Starts the pool: its threads, or its io_uring instance and reaper thread.
    pub fn build(self) -> io::Result<FilePool> {
        sys::fault::allocation()?;
        let threads = match self.threads {
            0 => thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let (shared, workers, driver) = Pool::start(
            self.driver,
            threads,
            self.pin,
            self.caller_reads,
            self.process_wide,
        )?;
        Ok(FilePool {
            shared,
            workers,
            driver,
        })
    }
}

/// The file-I/O threads. Dropping it lets them finish every queued request and joins them;
/// later requests on its files fail with `EAGAIN`.
pub struct FilePool {
    shared: Arc<Pool>,
    workers: Vec<JoinHandle<()>>,
    /// The driver that runs (never `Auto`).
    driver: FileDriver,
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

    /// The process-wide pool the C ABI uses, started on first use and never stopped. The
    /// child of a `fork` starts its own on first use (the parent's stays, stopped, in the
    /// child's memory).
    pub fn global() -> io::Result<&'static FilePool> {
        // A racing thread's pool is dropped (and its threads joined) if it loses.
        let (pool, _) = GLOBAL.get_or_make(|| {
            FilePoolBuilder {
                process_wide: true,
                ..FilePoolBuilder::default()
            }
            .build()
        })?;
        Ok(pool)
    }

    /// Number of threads: the thread driver's, or 1 (the io_uring driver's reaper).
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// The driver that runs the pool's requests: [`FileDriver::Threads`] or
    /// [`FileDriver::Uring`].
    pub fn driver(&self) -> FileDriver {
        self.driver
    }

    /// Takes over a regular file: requests on it run on this pool. Use
    /// [`File::associate`] (or [`File::associated`]) to have them report to a port.
    pub fn open(&self, file: impl Into<OwnedFd>) -> io::Result<File> {
        Ok(self.file(file.into()))
    }

    fn file(&self, fd: OwnedFd) -> File {
        File {
            inner: Arc::new(FileInner {
                seekable: sysfile::seekable(fd.as_raw_fd()),
                fd: Arc::new(fd),
                pool: Arc::clone(&self.shared),
                port: Mutex::new(None),
                finished: Arc::new(Mutex::new(Finished::default())),
            }),
        }
    }

    /// AIX `lio_listio`: submits every request of `list` in one call.
    ///
    /// NULL entries and [`LIO_NOP`](crate::LIO_NOP) entries are skipped. An entry that
    /// cannot be queued — a closed descriptor (`EBADF`), a negative offset, more than
    /// 2^31 - 1 bytes, a NULL buffer, an unknown opcode (`EINVAL`), an `aio_iocpfd` that is
    /// no live port (`EBADF`), or no port at all in [`LioMode::NoWaitGmcs`] (`EINVAL`) —
    /// does not disturb the others: its aiocb gets the error (in `NoWaitGmcs`, a record
    /// with the error goes to its port when it has one) and the call returns `EIO` after
    /// queuing the rest. `EAGAIN` once the pool is stopping.
    ///
    /// # Safety
    ///
    /// Every non-NULL entry must point to an [`Aiocb`] that, with its `aio_buf` memory,
    /// stays valid and untouched until its request is done (its record is dequeued, or its
    /// `aio_error` is no longer `EINPROGRESS`; in `Wait` mode, until this returns).
    pub unsafe fn lio_listio(&self, mode: LioMode, list: &[*mut Aiocb]) -> io::Result<()> {
        // SAFETY: this function's caller keeps every non-NULL entry, with its buffer, valid
        // and untouched until its request is done: what `aio::lio_listio` requires.
        unsafe { aio::lio_listio(&self.shared, mode, list) }
    }

    /// AIX `aio_cancel`: cancels `aiocb`'s request, or every request on `fd` when `None`.
    /// A cancelled request still completes, with `ECANCELED` (a record, in the `NOWAIT`
    /// modes with a port).
    pub fn aio_cancel(&self, fd: RawFd, aiocb: Option<*const Aiocb>) -> io::Result<AioCancel> {
        aio::aio_cancel(&self.shared, fd, aiocb)
    }
}

/// [`FilePool::global`]'s pool.
static GLOBAL: PerProcess<FilePool> = PerProcess::new();

impl Drop for FilePool {
    fn drop(&mut self) {
        self.shared.stop(&mut self.workers);
    }
}

impl fmt::Debug for FilePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePool")
            .field("driver", &self.driver)
            .field("threads", &self.threads())
            .finish()
    }
}

/// A regular file whose requests run on a [`FilePool`]. Dropping it cancels what is still
/// queued; requests already running finish (the descriptor stays open until they do).
pub struct File {
    inner: Arc<FileInner>,
}

struct FileInner {
    /// Shared with the jobs, which keep it open while they run.
    fd: Arc<OwnedFd>,
    /// Whether it takes positioned I/O (see `Job::seekable`).
    seekable: bool,
    pool: Arc<Pool>,
    port: Mutex<Association>,
    /// Results of owned-buffer requests until [`File::finish`]; shared with their jobs.
    finished: Arc<Mutex<Finished>>,
}

impl File {
    /// Takes over a regular file on `pool` and associates it with `port` under `key`
    /// (`CreateIoCompletionPort`).
    pub fn associated(
        file: impl Into<OwnedFd>,
        pool: &FilePool,
        port: &Port,
        key: u64,
    ) -> io::Result<File> {
        let file = pool.open(file)?;
        file.associate(port, key)?;
        Ok(file)
    }

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

    /// Reads into `buf` (up to its length) at `offset`.
    ///
    /// Returns what a socket's request does: [`Submitted::Done`] with the result when it
    /// completed at once (no record), or [`Submitted::Pending`] with the [`Ticket`] its
    /// record will carry. Both file drivers run every request on the pool today, so a
    /// file's request is always pending.
    pub fn read_at(&self, buf: Vec<u8>, offset: u64) -> io::Result<Submitted> {
        self.submit_owned(Op::Read, Buf::Owned(buf), offset)
    }

    /// Writes `buf` at `offset` (as [`read_at`](Self::read_at)).
    pub fn write_at(&self, buf: Vec<u8>, offset: u64) -> io::Result<Submitted> {
        self.submit_owned(Op::Write, Buf::Owned(buf), offset)
    }

    /// `fsync` (as [`read_at`](Self::read_at)).
    pub fn sync_all(&self) -> io::Result<Submitted> {
        self.submit_owned(Op::Sync, Buf::None, 0)
    }

    /// `fdatasync` (as [`read_at`](Self::read_at)).
    pub fn sync_data(&self) -> io::Result<Submitted> {
        self.submit_owned(Op::SyncData, Buf::None, 0)
    }

    /// The result and buffer of an owned-buffer request's record; `EINVAL` for a record
    /// that is not one (or was finished already).
    pub fn finish(&self, record: &Completion) -> io::Result<OpResult> {
        lock(&self.inner.finished).take(record)
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

    /// Reads into caller memory at the block's offset (`ReadFile` on a file), as
    /// [`Socket::read_overlapped`](crate::Socket::read_overlapped) does: `Ok(Some(n))` when
    /// done at once (the block is filled in, no record), `Ok(None)` when it completes later
    /// through `overlapped` — a record to the port, or the block's event when the file has
    /// no port. (Always `Ok(None)` today: see [`read_at`](Self::read_at).)
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
    ) -> io::Result<Option<u32>> {
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
    ) -> io::Result<Option<u32>> {
        let buf = Buf::Raw {
            ptr: buf.cast_mut(),
            len,
        };
        self.submit_overlapped(Op::Write, buf, overlapped)
    }

    /// Cancels the queued request with `ticket` (`ECANCELED` record); `ENOENT` if it is not
    /// queued (running or done).
    pub fn cancel(&self, ticket: Ticket) -> io::Result<()> {
        self.cancel_where(Which::Ticket(ticket)).map(drop)
    }

    /// Cancels the queued overlapped request `overlapped` (`CancelIoEx`).
    pub fn cancel_overlapped(&self, overlapped: *const Overlapped) -> io::Result<()> {
        self.cancel_where(Which::Overlapped(overlapped)).map(drop)
    }

    /// Cancels every queued request of the file; how many, `ENOENT` if none.
    pub fn cancel_all(&self) -> io::Result<usize> {
        self.cancel_where(Which::All)
    }

    /// The descriptor.
    pub fn raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }

    /// The file's pool, unless this is a forked child and the pool the process-wide one
    /// of the parent: the file's requests then go to the child's process-wide pool.
    fn own_pool(&self) -> Option<&Pool> {
        let pool = &*self.inner.pool;
        (pool.here() || !pool.process_wide).then_some(pool)
    }

    fn cancel_where(&self, which: Which) -> io::Result<usize> {
        let pool = match self.own_pool() {
            Some(pool) => pool,
            None => match GLOBAL.get() {
                Some(global) => &global.shared,
                // The child has not started its pool, so queued nothing there.
                None => return Which::outcome(0),
            },
        };
        let (cancelled, _) = pool.cancel(
            self.raw_fd(),
            |job| matches!(&job.reply, Reply::Request { notify, .. } if which.matches(notify)),
        );
        Which::outcome(cancelled)
    }

    fn submit_owned(&self, op: Op, buf: Buf, offset: u64) -> io::Result<Submitted> {
        check_offset(offset)?;
        let port = request::need_port(lock(&self.inner.port).clone())?;
        let ticket = Ticket::next();
        self.submit(op, buf, offset, Notify::Ticket(ticket), Some(port))?;
        Ok(Submitted::Pending(ticket))
    }

    fn submit_overlapped(
        &self,
        op: Op,
        buf: Buf,
        overlapped: *const Overlapped,
    ) -> io::Result<Option<u32>> {
        // SAFETY: the callers of `read_overlapped`/`write_overlapped` keep the block live
        // until the request completes, which is after this submission.
        let offset = unsafe { &*overlapped }.offset();
        check_offset(offset)?;
        // SAFETY: the block is live until the request completes (as for the read above).
        let started = unsafe { request::start(overlapped) };
        let port = lock(&self.inner.port).clone();
        match self.submit(op, buf, offset, Notify::Overlapped(overlapped), port) {
            Ok(()) => Ok(None),
            Err(err) => Err(started.refuse(err)),
        }
    }

    fn submit(
        &self,
        op: Op,
        buf: Buf,
        offset: u64,
        notify: Notify,
        port: Association,
    ) -> io::Result<()> {
        let job = Job {
            id: 0,
            fd: self.raw_fd(),
            target: Arc::clone(&self.inner.fd),
            seekable: self.inner.seekable,
            op,
            offset,
            buf: Mutex::new(buf),
            delivery: Delivery::new(),
            reply: Reply::Request {
                notify,
                finished: Arc::clone(&self.inner.finished),
            },
            port,
            list: None,
        };
        match self.own_pool() {
            Some(pool) => pool.submit(job),
            None => FilePool::global()?.shared.submit(job),
        }
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
    use crate::Opcode;
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
        let file = File::associated(file, &pool, &port, 9).unwrap();
        let submitted = file.read_at(vec![0; 4096], 8192).unwrap();
        let Submitted::Pending(ticket) = submitted else {
            panic!("a pool request completed at once: {submitted:?}");
        };
        let record = port.get(Some(Duration::from_secs(5))).unwrap();
        assert_eq!((record.key(), Ticket::of(&record)), (9, ticket));
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
                    Opcode::Read,
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
}
