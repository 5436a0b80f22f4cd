//! The AIX asynchronous-I/O types: the extended `aiocb` (`struct iocp_aiocb` in C), its
//! opcodes, the modes of `lio_listio` and the answers of `aio_cancel`. The calls themselves
//! are in `aio`; the requests run on the file pool (`pool`).

use crate::error::{self, to_record};
use crate::Port;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicIsize, Ordering};

/// `aio_lio_opcode`: read ([`Opcode::Read`]).
pub const LIO_READ: i32 = Opcode::Read as i32;
/// `aio_lio_opcode`: write ([`Opcode::Write`]).
pub const LIO_WRITE: i32 = Opcode::Write as i32;
/// `aio_lio_opcode`: no operation ([`Opcode::Nop`]).
pub const LIO_NOP: i32 = Opcode::Nop as i32;
/// `aio_flag` bit: the aiocb names a completion port in `aio_iocpfd`.
pub const AIO_EXTENDED: i32 = 0x004;

/// What an aiocb asks for (`aio_lio_opcode`, whose C values are [`LIO_READ`], [`LIO_WRITE`]
/// and [`LIO_NOP`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Opcode {
    /// Read `aio_nbytes` at `aio_offset` into `aio_buf`.
    Read = 0,
    /// Write `aio_nbytes` of `aio_buf` at `aio_offset`.
    Write = 1,
    /// Nothing: `lio_listio` skips the entry.
    Nop = 2,
}

impl Opcode {
    /// The opcode of AIX's `LIO_*` value; `None` for an unknown one.
    pub fn from_raw(opcode: i32) -> Option<Opcode> {
        [Opcode::Read, Opcode::Write, Opcode::Nop]
            .into_iter()
            .find(|known| *known as i32 == opcode)
    }
}

/// How [`FilePool::lio_listio`](crate::FilePool::lio_listio) reports.
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
    pub fn new(fd: RawFd, opcode: Opcode, offset: i64, buf: *mut u8, nbytes: usize) -> Aiocb {
        Aiocb {
            aio_fildes: fd,
            aio_offset: offset,
            aio_buf: buf,
            aio_nbytes: nbytes,
            aio_lio_opcode: opcode as i32,
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

    /// The opcode; `EINVAL` for a value that is none.
    pub(crate) fn opcode(&self) -> io::Result<Opcode> {
        Opcode::from_raw(self.aio_lio_opcode).ok_or_else(error::invalid)
    }

    /// Marks the request in flight (`aio_error` reads `EINPROGRESS`).
    pub(crate) fn set_in_progress(&self) {
        // Relaxed: the job's queue push publishes it to the thread that runs it.
        self.status.store(libc::EINPROGRESS, Ordering::Relaxed);
    }

    /// Fills in `aio_error` and `aio_return` for a finished request.
    pub(crate) fn report(&self, result: &io::Result<usize>) {
        let (bytes, errno) = to_record(result);
        let value = if errno == 0 { bytes as isize } else { -1 };
        // Relaxed: published by the release store of the status below.
        self.result.store(value, Ordering::Relaxed);
        // Release: pairs with the acquire in `error`.
        self.status.store(errno as i32, Ordering::Release);
    }
}
