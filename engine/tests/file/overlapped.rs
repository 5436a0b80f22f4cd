//! Overlapped requests on files: the block's address under the file's key, offsets from
//! `Offset`/`OffsetHigh` above 4 GiB, completion through the `hEvent` event without a port.

use crate::common::files::TempDir;
use crate::common::rng::pattern;
use crate::common::timing::BULK_PATIENCE;
use crate::common::{address, block_of, errno};
use crate::{aio_state, assert_quiet, collect, pool, words, Entry, File, Lent, Lio, Watchdog, KIB};
use iocp::{Event, LioMode, Overlapped, Port, STATUS_PENDING};
use std::collections::HashSet;
use std::sync::atomic::Ordering;

#[test]
fn overlapped_requests_post_their_block_address_under_the_file_key() {
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-overlapped");
    let data = pattern(23, 16 * KIB);
    let file = File::associated(scratch.file("data", &data), &pool, &port, 42).unwrap();
    // With a port the record is the report; the event (if any) is left alone.
    let event = Event::new(true, false).unwrap();
    let blocks = Lent::new(
        (0..4)
            .map(|_| Overlapped::with_event(&event))
            .collect::<Box<[_]>>(),
    );
    let bufs: Vec<Lent<[u8]>> = (0..4).map(|_| Lent::zeroed(3000)).collect();
    let written = pattern(24, 3000);
    for (i, buf) in bufs.iter().enumerate() {
        let block = &blocks.get()[i];
        block.set_offset(i as u64 * 4000);
        if i == 3 {
            // SAFETY: nothing else uses the buffer before its request.
            unsafe { std::ptr::copy_nonoverlapping(written.as_ptr(), buf.buf(), 3000) };
            block.set_offset(16 * KIB as u64);
            // SAFETY: buffer and block stay allocated until the records are dequeued below.
            unsafe { file.write_overlapped(buf.buf(), 3000, blocks.at(i)) }.unwrap();
        } else {
            // SAFETY: `buf` is writable for 3000 bytes and untouched, and block `i` live,
            // until the records are dequeued below.
            unsafe { file.read_overlapped(buf.buf(), 3000, blocks.at(i)) }.unwrap();
        }
        assert_eq!(
            words(block)[4].load(Ordering::Relaxed),
            event.handle() as u32
        );
    }
    let mut seen = HashSet::new();
    for record in collect(&port, 4) {
        let i = block_of(&blocks.get()[..4], &record);
        assert!(seen.insert(i), "two records for block {i}");
        assert_eq!((record.key(), record.result().unwrap()), (42, 3000));
        let block = &blocks.get()[i];
        assert!(block.is_complete());
        assert_eq!(block.get_result(false).unwrap(), 3000);
        assert_eq!(block.bytes(), 3000);
        assert_eq!(
            words(block)[0].load(Ordering::Acquire),
            0,
            "Internal = success"
        );
        assert_eq!(
            words(block)[1].load(Ordering::Acquire),
            3000,
            "InternalHigh"
        );
        if i < 3 {
            let at = i * 4000;
            assert!(bufs[i].get() == &data[at..at + 3000]);
        }
    }
    assert!(
        !event.is_set(),
        "a file with a port reports through the port only"
    );
    let mut back = vec![0u8; 3000];
    file.read_at_blocking(&mut back, 16 * KIB as u64).unwrap();
    assert_eq!(back, written);

    // An offset beyond `off_t` is refused at once and the block is not left pending.
    let block = Lent::new(Box::new(Overlapped::new()));
    block.get().set_offset(u64::MAX);
    // SAFETY: the request is refused synchronously; nothing keeps the pointers.
    let refused = unsafe { file.read_overlapped(bufs[0].buf(), 16, block.ptr()) };
    assert_eq!(errno(refused), libc::EINVAL);
    assert_ne!(
        words(block.get())[0].load(Ordering::Acquire),
        STATUS_PENDING
    );
    assert_eq!(
        errno(file.cancel_overlapped(block.ptr())),
        libc::ENOENT,
        "nothing is queued"
    );
    assert_quiet(&port);
}

#[test]
fn overlapped_offsets_above_4_gib_are_split_across_offset_and_offset_high() {
    const FAR: u64 = 5 << 30;
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-far");
    let file = File::associated(scratch.file("sparse", &[]), &pool, &port, 8).unwrap();
    match file.write_at_blocking(b"far away", FAR) {
        Ok(8) => {}
        other => {
            eprintln!("skipped: the filesystem refuses a sparse file reaching 5 GiB: {other:?}");
            return;
        }
    }

    // Offset and OffsetHigh written in place, as a C caller fills its OVERLAPPED.
    let block = Lent::new(Box::new(Overlapped::new()));
    let w = words(block.get());
    w[2].store(FAR as u32, Ordering::Relaxed);
    w[3].store((FAR >> 32) as u32, Ordering::Relaxed);
    assert_eq!(block.get().offset(), FAR);
    let buf = Lent::zeroed(8);
    // SAFETY: buffer and block stay allocated until the record is dequeued below.
    unsafe { file.read_overlapped(buf.buf(), 8, block.ptr()) }.unwrap();
    let record = collect(&port, 1)[0];
    assert_eq!(record.overlapped(), address(block.get()));
    assert_eq!(record.result().unwrap(), 8);
    assert_eq!(buf.get(), b"far away");

    // `set_offset` fills both words; a write lands at the full 64-bit offset.
    let target = FAR + 4096 + 3;
    block.get().set_offset(target);
    assert_eq!(w[2].load(Ordering::Relaxed), target as u32);
    assert_eq!(w[3].load(Ordering::Relaxed), (target >> 32) as u32);
    let source = Lent::bytes(b"beyond 4 GiB");
    // SAFETY: `source` is readable for its length, and `block` (its read done) stays
    // allocated until the record is collected on the next line.
    unsafe { file.write_overlapped(source.buf(), source.len(), block.ptr()) }.unwrap();
    assert_eq!(collect(&port, 1)[0].result().unwrap(), 12);
    let mut back = [0u8; 12];
    assert_eq!(file.read_at_blocking(&mut back, target).unwrap(), 12);
    assert_eq!(&back, b"beyond 4 GiB");
    // Not at the offset truncated to its low word (a hole, all zeros).
    assert_eq!(
        file.read_at_blocking(&mut back, target as u32 as u64)
            .unwrap(),
        12
    );
    assert_eq!(
        back, [0; 12],
        "the write went to Offset alone, OffsetHigh ignored"
    );

    // OffsetHigh alone (Offset 0): exactly 4 GiB, a hole.
    block.get().set_offset(1 << 32);
    let zeros = Lent::bytes(&[0xff; 8]);
    // SAFETY: `zeros` is writable for 8 bytes, and `block` (its write done) stays allocated
    // until the record is collected on the next line.
    unsafe { file.read_overlapped(zeros.buf(), 8, block.ptr()) }.unwrap();
    assert_eq!(collect(&port, 1)[0].result().unwrap(), 8);
    assert_eq!(zeros.get(), &[0; 8]);

    // lio_listio takes a 64-bit aio_offset.
    let lio = Lio::new(vec![Entry::read(file.raw_fd(), FAR as usize, 8, None)]);
    {
        let _watchdog = Watchdog::new("LIO_WAIT above 4 GiB");
        // SAFETY: `lio` outlives the call, which returns once the request is done.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }.unwrap();
    }
    assert_eq!(aio_state(lio.cb(0)), (0, 8));
    assert_eq!(lio.buf(0), b"far away");
    assert_quiet(&port);
}

#[test]
fn overlapped_requests_on_an_unassociated_file_complete_through_their_event() {
    let pool = pool(2);
    let scratch = TempDir::new("file-event");
    let data = pattern(21, 6000);
    let file = pool.open(scratch.file("data", &data)).unwrap();

    // A manual-reset event, a read.
    let manual = Event::new(true, false).unwrap();
    let block = Lent::new(Box::new(Overlapped::with_event(&manual)));
    block.get().set_offset(1000);
    let buf = Lent::zeroed(3000);
    // SAFETY: buffer and block stay allocated until the event says the request is done.
    unsafe { file.read_overlapped(buf.buf(), 3000, block.ptr()) }.unwrap();
    manual.wait(Some(BULK_PATIENCE)).unwrap();
    assert!(manual.is_set(), "a manual-reset event stays set");
    assert!(block.get().is_complete());
    assert_eq!(block.get().get_result(false).unwrap(), 3000);
    assert!(buf.get() == &data[1000..4000]);

    // An auto-reset event, a write at the end.
    let auto = Event::new(false, false).unwrap();
    let block = Lent::new(Box::new(Overlapped::with_event(&auto)));
    block.get().set_offset(6000);
    let more = pattern(22, 500);
    let source = Lent::bytes(&more);
    // SAFETY: `source` holds 500 readable bytes; it and the new `block` stay allocated
    // until the event says the request is done.
    unsafe { file.write_overlapped(source.buf(), 500, block.ptr()) }.unwrap();
    auto.wait(Some(BULK_PATIENCE)).unwrap();
    assert!(!auto.is_set(), "the wait consumed the auto-reset signal");
    assert_eq!(block.get().get_result(false).unwrap(), 500);
    let mut back = vec![0u8; 500];
    file.read_at_blocking(&mut back, 6000).unwrap();
    assert_eq!(back, more);

    // A failure is reported through the event too.
    let read_only = pool.open(scratch.read_only("ro", b"read only")).unwrap();
    let failing = Event::new(true, false).unwrap();
    let block = Lent::new(Box::new(Overlapped::with_event(&failing)));
    // SAFETY: `source` (500 bytes, its last write done) and the new `block` stay allocated
    // until the event reports the failure below.
    unsafe { read_only.write_overlapped(source.buf(), 500, block.ptr()) }.unwrap();
    failing.wait(Some(BULK_PATIENCE)).unwrap();
    assert_eq!(errno(block.get().get_result(false)), libc::EBADF);

    // No event at all: GetOverlappedResult waits on the block itself.
    let block = Lent::new(Box::new(Overlapped::new()));
    block.get().set_offset(10);
    let buf = Lent::zeroed(20);
    // SAFETY: `buf` is writable for 20 bytes; it and `block` stay allocated until
    // `get_result(true)` returns, once the request is done.
    unsafe { file.read_overlapped(buf.buf(), 20, block.ptr()) }.unwrap();
    let bytes = {
        let _watchdog = Watchdog::new("GetOverlappedResult with wait");
        block.get().get_result(true).unwrap()
    };
    assert_eq!(bytes, 20);
    assert!(buf.get() == &data[10..30]);
}
