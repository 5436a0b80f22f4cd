//! The C types and constants of `<sys/iocp.h>`, with AIX's widths.

#![allow(non_camel_case_types, non_snake_case)]

use std::os::raw::{c_int, c_uint};

/// A 32-bit unsigned value (`unsigned int`, as on AIX).
pub type DWORD = c_uint;
/// A pointer to a `DWORD`.
pub type LPDWORD = *mut DWORD;
/// A truth value: 0 is false, anything else true. Functions return 1 for true.
pub type BOOL = c_int;
/// A handle: the number of a descriptor (a port, an event, or the caller's file or socket).
pub type HANDLE = c_int;
/// A socket descriptor (a provider's socket handle, for the `WPU` calls).
pub type SOCKET = c_int;

/// The status block of an overlapped request (`struct _OVERLAPPED`): `Internal` holds
/// `WSS_OPERATION_IN_PROGRESS` while the request runs, then 0 or its `errno`;
/// `InternalHigh` the byte count; `Offset`/`OffsetHigh` a file request's 64-bit offset;
/// `hEvent` an event to set on completion when the handle has no port (0 for none).
/// It must stay valid, and unmoved, until the request completes.
pub type OVERLAPPED = iocp::Overlapped;
/// A pointer to an `OVERLAPPED`.
pub type LPOVERLAPPED = *mut OVERLAPPED;
/// Winsock's name for `OVERLAPPED` (the provider calls).
pub type WSAOVERLAPPED = OVERLAPPED;
/// A pointer to a `WSAOVERLAPPED`.
pub type LPWSAOVERLAPPED = *mut WSAOVERLAPPED;

/// One record of `GetMultipleCompletionStatus`, its fields in the order of AIX's
/// documentation (`DWORD transfer_count, completion_key, errorno; LPOVERLAPPED
/// overlapped;`), so that positional initializers and layouts match AIX code.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gmcs {
    /// Bytes transferred, capped at 2^31 - 1.
    pub transfer_count: DWORD,
    /// The key the handle was associated (or the record posted) with; 0 for
    /// `LIO_NOWAIT_GMCS` records.
    pub completion_key: DWORD,
    /// 0 for success, else the request's `errno`.
    pub errorno: DWORD,
    /// The request's `OVERLAPPED`, the posted pointer, or for `LIO_NOWAIT_GMCS` the
    /// `struct iocp_aiocb`.
    pub overlapped: LPOVERLAPPED,
}

impl gmcs {
    /// The entry for one completion record: on 64-bit targets a copy of the record, which
    /// has this struct's layout (the key's high half lands in the padding), made in whole
    /// words, with the byte count capped on the way.
    #[inline(always)]
    pub(crate) fn from_record(record: &iocp::Completion) -> gmcs {
        #[cfg(target_pointer_width = "64")]
        {
            // The byte count's place in the first word.
            const SHIFT: u32 = if cfg!(target_endian = "little") {
                0
            } else {
                32
            };
            // SAFETY: a record is 24 bytes, all initialized (no padding), so its memory
            // reads as three words.
            let [first, second, third] =
                unsafe { std::mem::transmute::<iocp::Completion, [u64; 3]>(*record) };
            let count = (first >> SHIFT) as DWORD;
            let excess = count - count.min(MAX_TRANSFER_COUNT);
            let first = first - (u64::from(excess) << SHIFT);
            // SAFETY: on 64-bit targets a record has this struct's layout (its doc's
            // `# Layout`; `layout::tests` checks it field by field), so these words are
            // its fields in their places, the byte count capped; any bits are a valid
            // `gmcs` (integers, and an address C gets back as it was posted).
            unsafe { std::mem::transmute::<[u64; 3], gmcs>([first, second, third]) }
        }
        #[cfg(not(target_pointer_width = "64"))]
        gmcs {
            transfer_count: record.bytes().min(MAX_TRANSFER_COUNT),
            completion_key: record.key() as DWORD,
            errorno: record.error(),
            overlapped: record.overlapped() as LPOVERLAPPED,
        }
    }

    /// The completion record this entry describes, for `iocp_post_many`.
    pub(crate) fn completion(&self) -> iocp::Completion {
        iocp::Completion::new(
            self.completion_key.into(),
            self.transfer_count,
            self.overlapped as usize,
        )
        .with_error(self.errorno)
    }
}

/// One record of `GetQueuedCompletionStatusEx` (Windows' `OVERLAPPED_ENTRY`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct _OVERLAPPED_ENTRY {
    /// The key the handle was associated (or the record posted) with.
    pub lpCompletionKey: libc::uintptr_t,
    /// The request's `OVERLAPPED`, or the posted pointer.
    pub lpOverlapped: LPOVERLAPPED,
    /// 0 for success, else the request's `errno`.
    pub Internal: libc::uintptr_t,
    /// Bytes transferred.
    pub dwNumberOfBytesTransferred: DWORD,
}

impl _OVERLAPPED_ENTRY {
    /// The entry for one completion record.
    pub(crate) fn from_record(record: &iocp::Completion) -> _OVERLAPPED_ENTRY {
        _OVERLAPPED_ENTRY {
            lpCompletionKey: record.key() as libc::uintptr_t,
            lpOverlapped: record.overlapped() as LPOVERLAPPED,
            Internal: record.error() as libc::uintptr_t,
            dwNumberOfBytesTransferred: record.bytes(),
        }
    }
}

/// One record of `GetQueuedCompletionStatusEx`.
pub type OVERLAPPED_ENTRY = _OVERLAPPED_ENTRY;
/// A pointer to an `OVERLAPPED_ENTRY`.
pub type LPOVERLAPPED_ENTRY = *mut OVERLAPPED_ENTRY;

/// Most `transfer_count` a `struct gmcs` reports (2^31 - 1, as on AIX).
const MAX_TRANSFER_COUNT: DWORD = i32::MAX as DWORD;

/// False. (The header defines `TRUE` and `FALSE` only where nothing else has.)
pub(crate) const FALSE: BOOL = 0;
/// True.
pub(crate) const TRUE: BOOL = 1;

/// A timeout that never expires.
pub const INFINITE: DWORD = -1i32 as DWORD;
/// No handle: `CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, n)` makes a new port.
pub const INVALID_HANDLE_VALUE: HANDLE = -1 as HANDLE;
/// Most records one `GetMultipleCompletionStatus` returns.
pub const GMCS_NMAX: DWORD = 4096;
/// `iocp_port_create` flag: one first-in first-out order across all posting threads, as
/// on Windows and AIX (see `iocp_port_create`).
pub const IOCP_PORT_FIFO: DWORD = 0x1;
/// `iocp_port_create` flag: waiters never spin; a thread that finds the port empty sleeps
/// at once (see `iocp_port_create`).
pub const IOCP_PORT_NO_SPIN: DWORD = 0x2;
/// `Internal` of a request in progress (`STATUS_PENDING` on Windows).
pub const WSS_OPERATION_IN_PROGRESS: DWORD = 0x103;

/// `aio_lio_opcode`: read (`LIO_READ` on AIX and in glibc).
pub const IOCP_LIO_READ: c_int = 0;
/// `aio_lio_opcode`: write (`LIO_WRITE` on AIX and in glibc).
pub const IOCP_LIO_WRITE: c_int = 1;
/// `aio_lio_opcode`: skip the entry (`LIO_NOP` on AIX and in glibc).
pub const IOCP_LIO_NOP: c_int = 2;
/// `iocp_lio_listio` mode: return at once, update each aiocb when done (AIX `LIO_NOWAIT`;
/// glibc's `LIO_NOWAIT` is 1: never pass it here).
pub const IOCP_LIO_NOWAIT: c_int = 0;
/// `iocp_lio_listio` mode: return when every request is done (AIX `LIO_WAIT`; glibc's
/// `LIO_WAIT` is 0: never pass it here).
pub const IOCP_LIO_WAIT: c_int = 1;
/// `iocp_lio_listio` mode: return at once; report only through `struct gmcs` records.
pub const LIO_NOWAIT_GMCS: c_int = 5;
/// `aio_flag` bit: `aio_iocpfd` names the port to report to.
pub const AIO_EXTENDED: c_int = 0x004;
/// `iocp_aio_cancel`: every request was cancelled (glibc's `AIO_CANCELED` has this value).
pub const IOCP_AIO_CANCELED: c_int = 0;
/// `iocp_aio_cancel`: some request was already running (glibc's `AIO_NOTCANCELED`).
pub const IOCP_AIO_NOTCANCELED: c_int = 1;
/// `iocp_aio_cancel`: nothing was in flight (glibc's `AIO_ALLDONE`).
pub const IOCP_AIO_ALLDONE: c_int = 2;

/// A `WPU` call's failure return.
pub const SOCKET_ERROR: c_int = -1 as c_int;
/// `WPUCreateSocketHandle`'s failure return.
pub const INVALID_SOCKET: SOCKET = -1 as SOCKET;
/// Winsock error: an argument or handle is not valid.
pub const WSAEINVAL: c_int = 10022;
/// Winsock error: no resources for a new socket handle.
pub const WSAENOBUFS: c_int = 10055;
/// Winsock error: the overlapped request has not completed.
pub const WSA_IO_INCOMPLETE: c_int = 996;
/// Winsock error: the overlapped request will complete later.
pub const WSA_IO_PENDING: c_int = 997;
