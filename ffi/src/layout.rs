//! How `iocp.h` declares the engine's structs, and the proof that it is right.
//!
//! `OVERLAPPED` and `struct iocp_aiocb` *are* the engine's [`iocp::Overlapped`] and
//! [`iocp::Aiocb`]: the exports take and hand out pointers to those very types. Their
//! fields are atomic or private there, which cbindgen cannot spell in C, so this module
//! declares each once more with C's field names and types, under the engine type's own name
//! (cbindgen resolves a path such as `iocp::Overlapped` by its last segment, and finds these;
//! `cbindgen.toml` renames them to `_OVERLAPPED` and `iocp_aiocb`). Nothing constructs them.
//! The assertions at the bottom make the build fail if a declaration and its engine type
//! ever differ in size, alignment, or the offset of a field C may touch; `tests/c/layout.c`
//! checks the same numbers from the C side.

#![allow(non_snake_case, dead_code)]

use crate::types::{DWORD, HANDLE};
use std::mem::{align_of, offset_of, size_of};
use std::os::raw::{c_int, c_void};

/// The status block of an overlapped request.
#[repr(C)]
pub struct Overlapped {
    /// `WSS_OPERATION_IN_PROGRESS` while the request runs, then 0 or its `errno`.
    pub Internal: DWORD,
    /// Bytes transferred, written before `Internal`.
    pub InternalHigh: DWORD,
    /// Low 32 bits of a file request's offset (a provider's flags).
    pub Offset: DWORD,
    /// High 32 bits of a file request's offset (a provider's error).
    pub OffsetHigh: DWORD,
    /// An event (`iocp_event_create`) set on completion when the handle has no port; 0 for
    /// none.
    pub hEvent: HANDLE,
}

/// C's `volatile void` (`[export.rename]` in `cbindgen.toml`); POSIX declares `aio_buf`
/// with it.
type VolatileVoid = c_void;

/// AIX's extended aiocb: one request of `iocp_lio_listio`.
#[repr(C)]
pub struct Aiocb {
    /// The file.
    pub aio_fildes: c_int,
    /// Where in the file (not negative). 64 bits on every target, whatever
    /// `_FILE_OFFSET_BITS` makes of `off_t` in the program that includes the header.
    pub aio_offset: i64,
    /// The data; valid until the request is done.
    pub aio_buf: *mut VolatileVoid,
    /// How many bytes (at most 2^31 - 1).
    pub aio_nbytes: libc::size_t,
    /// `IOCP_LIO_READ`, `IOCP_LIO_WRITE` or `IOCP_LIO_NOP`.
    pub aio_lio_opcode: c_int,
    /// `AIO_EXTENDED` when `aio_iocpfd` names a port.
    pub aio_flag: c_int,
    /// The port to report to.
    pub aio_iocpfd: c_int,
    /// Private: the request's status (read it with `iocp_aio_error`).
    pub _iocp_status: c_int,
    /// Private: the request's result (read it with `iocp_aio_return`).
    pub _iocp_result: libc::ssize_t,
}

macro_rules! same_layout {
    ($c:ty, $engine:ty) => {
        const _: () = assert!(size_of::<$c>() == size_of::<$engine>());
        const _: () = assert!(align_of::<$c>() == align_of::<$engine>());
    };
}

same_layout!(Overlapped, iocp::Overlapped);
same_layout!(Aiocb, iocp::Aiocb);

// The engine's aiocb fields that C sets are public: their offsets must agree one by one.
macro_rules! same_offset {
    ($field:ident) => {
        const _: () = assert!(offset_of!(Aiocb, $field) == offset_of!(iocp::Aiocb, $field));
    };
}
same_offset!(aio_fildes);
same_offset!(aio_offset);
same_offset!(aio_buf);
same_offset!(aio_nbytes);
same_offset!(aio_lio_opcode);
same_offset!(aio_flag);
same_offset!(aio_iocpfd);

// The constants the header spells out are the engine's.
const _: () = assert!(crate::types::WSS_OPERATION_IN_PROGRESS == iocp::STATUS_PENDING);
const _: () = assert!(crate::types::GMCS_NMAX as usize == iocp::GMCS_NMAX);
const _: () = assert!(crate::types::IOCP_LIO_READ == iocp::LIO_READ);
const _: () = assert!(crate::types::IOCP_LIO_WRITE == iocp::LIO_WRITE);
const _: () = assert!(crate::types::IOCP_LIO_NOP == iocp::LIO_NOP);
const _: () = assert!(crate::types::AIO_EXTENDED == iocp::AIO_EXTENDED);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{gmcs, OVERLAPPED, OVERLAPPED_ENTRY};

    /// The numbers `tests/c/layout.c` asserts with `offsetof` and `sizeof` (LP64).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_c_structs_have_the_documented_sizes_and_offsets() {
        assert_eq!((size_of::<OVERLAPPED>(), align_of::<OVERLAPPED>()), (20, 4));
        let overlapped = [
            offset_of!(Overlapped, Internal),
            offset_of!(Overlapped, InternalHigh),
            offset_of!(Overlapped, Offset),
            offset_of!(Overlapped, OffsetHigh),
            offset_of!(Overlapped, hEvent),
        ];
        assert_eq!(overlapped, [0, 4, 8, 12, 16]);

        assert_eq!((size_of::<gmcs>(), align_of::<gmcs>()), (24, 8));
        // AIX's documented order: transfer_count, completion_key, errorno, overlapped.
        let gmcs = [
            offset_of!(gmcs, transfer_count),
            offset_of!(gmcs, completion_key),
            offset_of!(gmcs, errorno),
            offset_of!(gmcs, overlapped),
        ];
        assert_eq!(gmcs, [0, 4, 8, 16]);

        assert_eq!(
            (
                size_of::<OVERLAPPED_ENTRY>(),
                align_of::<OVERLAPPED_ENTRY>()
            ),
            (32, 8)
        );
        let entry = [
            offset_of!(OVERLAPPED_ENTRY, lpCompletionKey),
            offset_of!(OVERLAPPED_ENTRY, lpOverlapped),
            offset_of!(OVERLAPPED_ENTRY, Internal),
            offset_of!(OVERLAPPED_ENTRY, dwNumberOfBytesTransferred),
        ];
        assert_eq!(entry, [0, 8, 16, 24]);

        assert_eq!(
            (size_of::<iocp::Aiocb>(), align_of::<iocp::Aiocb>()),
            (56, 8)
        );
        let aiocb = [
            offset_of!(iocp::Aiocb, aio_fildes),
            offset_of!(iocp::Aiocb, aio_offset),
            offset_of!(iocp::Aiocb, aio_buf),
            offset_of!(iocp::Aiocb, aio_nbytes),
            offset_of!(iocp::Aiocb, aio_lio_opcode),
            offset_of!(iocp::Aiocb, aio_flag),
            offset_of!(iocp::Aiocb, aio_iocpfd),
            offset_of!(Aiocb, _iocp_status),
            offset_of!(Aiocb, _iocp_result),
        ];
        assert_eq!(aiocb, [0, 8, 16, 24, 32, 36, 40, 44, 48]);
    }

    /// The engine's private fields sit where the C declaration says: what C writes through
    /// `Offset`, `OffsetHigh` and `hEvent` is what the engine reads, and what the engine
    /// publishes is what C reads in `Internal` and `InternalHigh`.
    #[test]
    fn the_overlapped_words_are_the_engines() {
        let block = OVERLAPPED::new();
        let c = &block as *const OVERLAPPED as *mut Overlapped;
        // SAFETY: the two types have one layout (asserted above) and `block` is live; the
        // writes happen before any shared use, as a C caller fills a block before a request.
        unsafe {
            (*c).Offset = 0x9abc_def0;
            (*c).OffsetHigh = 0x1234_5678;
            (*c).hEvent = 42;
        }
        assert_eq!(block.offset(), 0x1234_5678_9abc_def0);
        assert_eq!(block.event_handle(), 42);
        block.start();
        // SAFETY: `c` is `block` under its C layout (one layout, asserted above), live;
        // a plain read of a word the engine wrote on this thread.
        let internal = unsafe { (*c).Internal };
        assert_eq!(internal, crate::types::WSS_OPERATION_IN_PROGRESS);
        block.publish(512, 0).unwrap();
        // SAFETY: `c` is `block` under its C layout, live; `publish` wrote these words on
        // this thread, so the plain reads race with nothing.
        assert_eq!(unsafe { ((*c).Internal, (*c).InternalHigh) }, (0, 512));
    }

    /// A record's memory is a `struct gmcs` entry (`Completion`'s `# Layout`), which
    /// `GetMultipleCompletionStatus` copies in whole words (`gmcs::from_record`): each field
    /// lands in its place, the key's high half in the padding, and a byte count past
    /// 2^31 - 1 is capped without touching the key beside it.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_record_is_a_gmcs_entry_field_for_field() {
        use crate::handles::CloseHandle;
        use crate::port::GetMultipleCompletionStatus;
        let record =
            iocp::Completion::new(0x1122_3344_5566_7788, 0x0102_0304, 0xdead_beef).with_error(0x6f);
        // SAFETY: a record is 24 bytes, all initialized, so it reads as six `u32`s.
        let words = unsafe { std::mem::transmute::<iocp::Completion, [u32; 6]>(record) };
        assert_eq!(words[..4], [0x0102_0304, 0x5566_7788, 0x6f, 0x1122_3344]);

        // Byte counts, each with what GMCS caps it to.
        let cases = [
            (i32::MAX as u32, i32::MAX as u32),
            (i32::MAX as u32 + 1, i32::MAX as u32),
            (u32::MAX, i32::MAX as u32),
            (0, 0),
        ];
        let port = iocp::Port::new().unwrap();
        port.post(record).unwrap();
        for &(bytes, _) in &cases {
            port.post(iocp::Completion::new(u64::MAX, bytes, 1).with_error(u32::MAX))
                .unwrap();
        }
        let handle = port.into_handle();
        let empty = gmcs {
            transfer_count: 7,
            completion_key: 7,
            errorno: 7,
            overlapped: std::ptr::null_mut(),
        };
        let mut entries = [empty; 8];
        // SAFETY: `entries` is valid for writes of 8 entries.
        let n = unsafe { GetMultipleCompletionStatus(handle, 5, 8, 0, entries.as_mut_ptr()) };
        assert_eq!(n, 5);
        let entry = entries[0];
        assert_eq!(
            (entry.transfer_count, entry.completion_key, entry.errorno),
            (0x0102_0304, 0x5566_7788, 0x6f)
        );
        assert_eq!(entry.overlapped as usize, 0xdead_beef);
        assert_eq!(
            entry.completion(),
            iocp::Completion::new(0x5566_7788, 0x0102_0304, 0xdead_beef).with_error(0x6f)
        );
        for (entry, &(bytes, capped)) in entries[1..5].iter().zip(&cases) {
            assert_eq!(
                (entry.transfer_count, entry.completion_key, entry.errorno),
                (capped, u32::MAX, u32::MAX),
                "{bytes}"
            );
            assert_eq!(entry.overlapped as usize, 1);
        }
        // The entries past the count are left as they were.
        assert_eq!(entries[5].transfer_count, 7);
        assert_ne!(CloseHandle(handle), 0);
    }

    /// The same for the aiocb's private status: `_iocp_status` is what `aio_error` reads.
    #[test]
    fn the_aiocb_private_words_are_the_engines() {
        let mut cb = iocp::Aiocb::new(-1, iocp::Opcode::Read, 0, std::ptr::null_mut(), 0);
        let c = &mut cb as *mut iocp::Aiocb as *mut Aiocb;
        // SAFETY: one layout (asserted above); `cb` is live and not shared.
        unsafe {
            (*c)._iocp_status = libc::EINPROGRESS;
            (*c)._iocp_result = 77;
        }
        assert_eq!(cb.error(), libc::EINPROGRESS);
        // SAFETY: `c` is `cb` under its C layout, live and not shared: a plain write.
        unsafe { (*c)._iocp_status = 0 };
        assert_eq!(cb.result().unwrap(), 77);
    }
}
