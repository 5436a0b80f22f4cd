//! Owned-buffer requests ([`File::read_at`](iocp::File::read_at) and friends, finished with
//! `File::finish`): exactly-once completion from several threads, short reads at end of file,
//! transfers past a mebibyte, association errors, the synchronous form, kernel errors.

use crate::common::files::TempDir;
use crate::common::pending;
use crate::common::rng::{pattern, Rng};
use crate::common::{address, errno};
use crate::{aio_state, assert_quiet, collect, finish_one, pool, Entry, Lent, Lio, Watchdog, MIB};
use iocp::{File, LioMode, Overlapped, Port, Ticket};
use std::collections::HashMap;
use std::fmt::Debug;
use std::thread;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Write,
    Read,
}

#[derive(Clone, Copy, Debug)]
struct Region {
    file: usize,
    offset: u64,
    len: usize,
    seed: u64,
}

const PARALLEL_FILES: usize = 2;
const PARALLEL_SUBMITTERS: usize = 4;
const PARALLEL_KEY: u64 = 100;

/// Several threads submit `phase` for every region (in a shuffled order) while one thread
/// drains the port with `get_many`; each request must come back exactly once, whole.
fn run_phase(files: &[File], port: &Port, regions: &[Region], phase: Phase, seed: u64) {
    let mut order: Vec<usize> = (0..regions.len()).collect();
    Rng::new(seed).shuffle(&mut order);
    let syncs = if phase == Phase::Write {
        2 * PARALLEL_SUBMITTERS
    } else {
        0
    };
    let expected = regions.len() + syncs;
    let (done, submitted) = thread::scope(|s| {
        let drainer = s.spawn(|| {
            let mut done = HashMap::new();
            for record in collect(port, expected) {
                let f = record.key().wrapping_sub(PARALLEL_KEY) as usize;
                assert!(f < files.len(), "record with an unknown key: {record:?}");
                let result = files[f].finish(&record).unwrap_or_else(|err| {
                    panic!("{record:?} is no unfinished request of its file: {err}")
                });
                let id = (record.key(), Ticket::of(&record));
                assert!(
                    done.insert(id, (record, result)).is_none(),
                    "two records for {id:?}"
                );
            }
            done
        });
        let submitters: Vec<_> = (0..PARALLEL_SUBMITTERS)
            .map(|t| {
                let order = &order;
                s.spawn(move || {
                    let mut tickets = Vec::new();
                    for &i in order.iter().skip(t).step_by(PARALLEL_SUBMITTERS) {
                        let region = regions[i];
                        let file = &files[region.file];
                        let ticket = pending(match phase {
                            Phase::Write => {
                                file.write_at(pattern(region.seed, region.len), region.offset)
                            }
                            Phase::Read => file.read_at(vec![0; region.len], region.offset),
                        });
                        tickets.push((region.file, ticket, Some(i)));
                    }
                    if phase == Phase::Write {
                        let f = t % files.len();
                        tickets.push((f, pending(files[f].sync_all()), None));
                        tickets.push((f, pending(files[f].sync_data()), None));
                    }
                    tickets
                })
            })
            .collect();
        let submitted: Vec<_> = submitters
            .into_iter()
            .flat_map(|submitter| submitter.join().unwrap())
            .collect();
        (drainer.join().unwrap(), submitted)
    });
    let mut done = done;
    assert_eq!(submitted.len(), expected);
    for (f, ticket, region) in submitted {
        let key = PARALLEL_KEY + f as u64;
        let (record, result) = done
            .remove(&(key, ticket))
            .unwrap_or_else(|| panic!("no record for ticket {ticket} of file {f}"));
        match region {
            None => {
                assert_eq!(record.result().unwrap(), 0, "a sync carries no bytes");
                assert_eq!(result.result.unwrap(), 0);
                assert!(result.buf.is_empty());
            }
            Some(i) => {
                let region = regions[i];
                assert_eq!(record.result().unwrap(), region.len as u32, "{region:?}");
                assert_eq!(result.result.unwrap(), region.len, "{region:?}");
                assert!(
                    result.buf == pattern(region.seed, region.len),
                    "{phase:?} of {region:?}: the buffer that came back holds other bytes"
                );
            }
        }
    }
    assert!(done.is_empty(), "records for no request: {:?}", done.keys());
}

#[test]
fn writes_then_reads_at_random_offsets_from_several_threads_each_complete_exactly_once() {
    const REGIONS: usize = 160;
    const SLOT: u64 = 8192;
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-parallel");
    let files: Vec<File> = (0..PARALLEL_FILES)
        .map(|f| {
            let file = scratch.file(&format!("data{f}"), &[]);
            File::associated(file, &pool, &port, PARALLEL_KEY + f as u64).unwrap()
        })
        .collect();
    // Non-overlapping regions at random offsets (random gaps and lengths, unaligned).
    let mut rng = Rng::new(1);
    let mut regions = Vec::new();
    for file in 0..PARALLEL_FILES {
        for r in 0..REGIONS {
            let jitter = rng.below(4096) as u64;
            regions.push(Region {
                file,
                offset: r as u64 * SLOT + jitter,
                len: 1 + rng.below(4096),
                seed: (file * REGIONS + r) as u64 + 1,
            });
        }
    }
    run_phase(&files, &port, &regions, Phase::Write, 2);
    run_phase(&files, &port, &regions, Phase::Read, 3);
    assert_quiet(&port);
    // The bytes are where they belong, as a plain read of the files sees them.
    let contents: Vec<Vec<u8>> = (0..PARALLEL_FILES)
        .map(|f| std::fs::read(scratch.path(&format!("data{f}"))).unwrap())
        .collect();
    for region in &regions {
        let at = region.offset as usize;
        assert!(contents[region.file][at..at + region.len] == pattern(region.seed, region.len));
    }
}

#[test]
fn reads_at_end_of_file_complete_short_with_the_bytes_read() {
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-eof");
    let data = pattern(7, 10_000);
    let file = File::associated(scratch.file("data", &data), &pool, &port, 5).unwrap();
    // (offset, buffer, bytes that exist there)
    let cases = [
        (8192, 4096, 1808),
        (9_999, 10, 1),
        (10_000, 4096, 0),
        (1 << 40, 16, 0),
        (0, 20_000, 10_000),
    ];
    for (offset, len, available) in cases {
        let ticket = pending(file.read_at(vec![0xaa; len], offset));
        let (record, done) = finish_one(&port, &file, 5, ticket);
        assert_eq!(record.result().unwrap(), available as u32, "at {offset}");
        assert_eq!(done.result.unwrap(), available, "at {offset}");
        assert_eq!(done.buf.len(), len, "the whole buffer comes back");
        let at = offset as usize;
        if available > 0 {
            assert!(done.buf[..available] == data[at..at + available]);
        }
        assert!(
            done.buf[available..].iter().all(|&b| b == 0xaa),
            "bytes past the end are left alone"
        );
    }

    // The overlapped form: `InternalHigh` and the record say how much came.
    let overlapped = Lent::new(Box::new(Overlapped::new()));
    overlapped.get().set_offset(9_000);
    let buf = Lent::zeroed(4096);
    // SAFETY: the buffer and block stay allocated until the record is dequeued below.
    unsafe { file.read_overlapped(buf.buf(), buf.len(), overlapped.ptr()) }.unwrap();
    let record = collect(&port, 1)[0];
    assert_eq!(record.overlapped(), address(overlapped.get()));
    assert_eq!(record.result().unwrap(), 1000);
    assert_eq!(overlapped.get().get_result(false).unwrap(), 1000);
    assert!(buf.get()[..1000] == data[9_000..]);

    // lio_listio: aio_return is the short count.
    let lio = Lio::new(vec![
        Entry::read(file.raw_fd(), 9_990, 100, None),
        Entry::read(file.raw_fd(), 10_000, 100, None),
    ]);
    {
        let _watchdog = Watchdog::new("LIO_WAIT at end of file");
        // SAFETY: `lio` outlives the call, which returns once both requests are done.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }.unwrap();
    }
    assert_eq!(aio_state(lio.cb(0)), (0, 10));
    assert_eq!(aio_state(lio.cb(1)), (0, 0));
    assert!(lio.buf(0)[..10] == data[9_990..]);

    // The synchronous form.
    let mut buf = [0u8; 4096];
    assert_eq!(file.read_at_blocking(&mut buf, 9_500).unwrap(), 500);
    assert!(buf[..500] == data[9_500..]);
    assert_eq!(file.read_at_blocking(&mut buf, 10_000).unwrap(), 0);
    assert_quiet(&port);
}

#[test]
fn transfers_larger_than_a_mebibyte_complete_whole_in_one_request() {
    const LEN: usize = 3 * MIB + 123;
    const MORE: usize = 2 * MIB + 7;
    const LIO: usize = 3 * MIB / 2;
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-large");
    let file = File::associated(scratch.file("data", &[]), &pool, &port, 3).unwrap();

    // Owned buffers.
    let data = pattern(11, LEN);
    let ticket = pending(file.write_at(data.clone(), 0));
    let (record, done) = finish_one(&port, &file, 3, ticket);
    assert_eq!(record.result().unwrap(), LEN as u32);
    assert_eq!(done.result.unwrap(), LEN);
    let ticket = pending(file.read_at(vec![0; 4 * MIB], 0));
    let (record, done) = finish_one(&port, &file, 3, ticket);
    assert_eq!(record.result().unwrap(), LEN as u32);
    assert!(done.buf[..LEN] == data[..], "3 MiB read back");

    // Overlapped: append 2 MiB, read it back.
    let more = pattern(12, MORE);
    let source = Lent::bytes(&more);
    let sink = Lent::zeroed(MORE);
    let block = Lent::new(Box::new(Overlapped::new()));
    block.get().set_offset(LEN as u64);
    // SAFETY: buffer and block stay allocated until the record is dequeued below.
    unsafe { file.write_overlapped(source.buf(), MORE, block.ptr()) }.unwrap();
    assert_eq!(collect(&port, 1)[0].result().unwrap(), MORE as u32);
    // SAFETY: `sink` is writable for `MORE` bytes, and `block` (its write done) stays
    // allocated until the record is collected on the next line.
    unsafe { file.read_overlapped(sink.buf(), MORE, block.ptr()) }.unwrap();
    assert_eq!(collect(&port, 1)[0].result().unwrap(), MORE as u32);
    assert!(sink.get() == &more[..], "2 MiB overlapped read back");

    // lio_listio: a 1.5 MiB read and a 1.5 MiB write in one list.
    let tail = pattern(13, LIO);
    let fd = file.raw_fd();
    let lio = Lio::new(vec![
        Entry::read(fd, 1000, LIO, None),
        Entry::write(fd, LEN + MORE, tail.clone(), None),
    ]);
    {
        let _watchdog = Watchdog::new("LIO_WAIT of large transfers");
        // SAFETY: `lio` outlives the call, which returns once both requests are done.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }.unwrap();
    }
    assert_eq!(aio_state(lio.cb(0)), (0, LIO as isize));
    assert_eq!(aio_state(lio.cb(1)), (0, LIO as isize));
    assert!(lio.buf(0) == &data[1000..1000 + LIO]);

    let all = std::fs::read(scratch.path("data")).unwrap();
    assert_eq!(all.len(), LEN + MORE + LIO);
    assert!(all[..LEN] == data[..]);
    assert!(all[LEN..LEN + MORE] == more[..]);
    assert!(all[LEN + MORE..] == tail[..]);
    assert_quiet(&port);
}

#[test]
fn owned_requests_on_an_unassociated_file_fail_with_enotconn() {
    let pool = pool(1);
    let scratch = TempDir::new("file-enotconn");
    let file = pool.open(scratch.file("data", b"hello world")).unwrap();
    assert_eq!(errno(file.read_at(vec![0; 5], 0)), libc::ENOTCONN);
    assert_eq!(errno(file.write_at(b"HELLO".to_vec(), 0)), libc::ENOTCONN);
    assert_eq!(errno(file.sync_all()), libc::ENOTCONN);
    assert_eq!(errno(file.sync_data()), libc::ENOTCONN);
    // Nothing was queued, and nothing was written.
    assert_eq!(errno(file.cancel_all()), libc::ENOENT);
    assert_eq!(std::fs::read(scratch.path("data")).unwrap(), b"hello world");
    // The synchronous form needs no port.
    let mut buf = [0u8; 5];
    assert_eq!(file.read_at_blocking(&mut buf, 6).unwrap(), 5);
    assert_eq!(&buf, b"world");

    // Once associated, the same requests work.
    let port = Port::new().unwrap();
    file.associate(&port, 3).unwrap();
    let ticket = pending(file.read_at(vec![0; 5], 0));
    let (_, done) = finish_one(&port, &file, 3, ticket);
    assert_eq!(done.result.unwrap(), 5);
    assert_eq!(done.buf, b"hello");
}

#[test]
fn a_second_association_fails_with_ealready_and_the_first_stays() {
    let pool = pool(1);
    let scratch = TempDir::new("file-ealready");
    let first = Port::new().unwrap();
    let second = Port::new().unwrap();
    let file = File::associated(scratch.file("data", b"0123456789"), &pool, &first, 1).unwrap();
    assert_eq!(errno(file.associate(&second, 2)), libc::EALREADY);
    assert_eq!(errno(file.associate(&first, 1)), libc::EALREADY);
    assert_eq!(errno(file.associate(&first, 9)), libc::EALREADY);

    // A file opened on the pool and associated by hand follows the same rule.
    let other = pool.open(scratch.open("data")).unwrap();
    other.associate(&second, 7).unwrap();
    assert_eq!(errno(other.associate(&first, 8)), libc::EALREADY);

    // Records still go to the first association.
    let ticket = pending(file.read_at(vec![0; 4], 2));
    let (_, done) = finish_one(&first, &file, 1, ticket);
    assert_eq!(done.buf, b"2345");
    let ticket = pending(other.read_at(vec![0; 2], 8));
    let (_, done) = finish_one(&second, &other, 7, ticket);
    assert_eq!(done.buf, b"89");
    assert_quiet(&first);
    assert_quiet(&second);
}

#[test]
fn the_synchronous_form_transfers_on_the_calling_thread_and_posts_nothing() {
    let pool = pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-sync");
    let file = File::associated(scratch.file("data", &[]), &pool, &port, 4).unwrap();
    let data = pattern(17, 3 * MIB);
    assert_eq!(file.write_at_blocking(&data, 100).unwrap(), data.len());
    let mut back = vec![0u8; 4 * MIB];
    assert_eq!(
        file.read_at_blocking(&mut back, 100).unwrap(),
        data.len(),
        "a short read at the end of the file"
    );
    assert!(back[..data.len()] == data[..]);
    assert_eq!(file.read_at_blocking(&mut back[..10], 0).unwrap(), 10);
    assert!(
        back[..10].iter().all(|&b| b == 0),
        "the hole before offset 100"
    );
    assert_eq!(file.read_at_blocking(&mut back, 1 << 40).unwrap(), 0);
    // Offsets that do not fit `off_t` are refused.
    assert_eq!(
        errno(file.read_at_blocking(&mut back, u64::MAX)),
        libc::EINVAL
    );
    assert_eq!(
        errno(file.write_at_blocking(&data, i64::MAX as u64 + 1)),
        libc::EINVAL
    );
    // The kernel's errors come straight back.
    let read_only = pool.open(scratch.read_only("ro", b"read only")).unwrap();
    assert_eq!(errno(read_only.write_at_blocking(b"x", 0)), libc::EBADF);
    assert_quiet(&port);
}

#[test]
fn a_request_the_kernel_rejects_completes_with_its_errno_and_returns_the_buffer() {
    let pool = pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-kernel-errors");
    let read_only =
        File::associated(scratch.read_only("ro", b"read only"), &pool, &port, 1).unwrap();
    let data = pattern(19, 1000);
    let ticket = pending(read_only.write_at(data.clone(), 0));
    let (record, done) = finish_one(&port, &read_only, 1, ticket);
    assert_eq!(record.error(), libc::EBADF as u32);
    assert_eq!(errno(done.result), libc::EBADF);
    assert_eq!(done.buf, data, "the buffer comes back intact");

    let directory = std::fs::File::open(scratch.path("")).unwrap();
    let directory = File::associated(directory, &pool, &port, 2).unwrap();
    let ticket = pending(directory.read_at(vec![0; 16], 0));
    let (record, done) = finish_one(&port, &directory, 2, ticket);
    assert_eq!(record.error(), libc::EISDIR as u32);
    assert_eq!(errno(done.result), libc::EISDIR);
    assert_eq!(done.buf, vec![0; 16]);

    // Offsets beyond `off_t` are refused at submission, and nothing is queued.
    assert_eq!(errno(read_only.read_at(vec![0; 4], u64::MAX)), libc::EINVAL);
    assert_quiet(&port);
}
