//! The pool's end and its size: a dropped pool completes what it had queued and joins its
//! threads, later requests fail with `EAGAIN`; queues drain in linear time; one thread per CPU
//! by default.

use crate::common::files::TempDir;
use crate::common::pending;
use crate::common::process::{in_forked_child, CHILD_PATIENCE};
use crate::common::rng::pattern;
use crate::common::{block_of, errno};
use crate::{
    aio_state, assert_quiet, collect, pool, pool_from, pool_threads_become, pools_alone, Busy,
    Entry, File, Lent, Lio, Watchdog, BUSY,
};
use iocp::{Aiocb, Event, FileDriver, FilePool, LioMode, Opcode, Overlapped, Port, Ticket};
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn dropping_the_pool_completes_every_queued_request_and_joins_its_threads() {
    const OWNED: usize = 1000;
    const BLOCKED: usize = 300;
    const LISTED: usize = 300;
    const BLOCK: usize = 256;
    let _exclusive = pools_alone();
    let pool = FilePool::builder()
        .driver(FileDriver::Threads)
        .threads(2)
        .build()
        .unwrap();
    assert_eq!(pool.threads(), 2);
    assert!(
        pool_threads_become(2),
        "the pool did not start two named threads"
    );
    let port = Port::builder().capacity(4096).build().unwrap();
    let scratch = TempDir::new("file-drop-pool");
    let data = pattern(71, BLOCK * 64);
    let file = File::associated(scratch.file("data", &data), &pool, &port, 1).unwrap();
    let blocked = File::associated(scratch.open("data"), &pool, &port, 2).unwrap();
    // Both threads busy, so what follows queues up.
    let mut busy = [Busy::new(), Busy::new()];
    for b in &mut busy {
        b.start(&pool, BUSY);
    }
    let mut tickets = HashMap::new();
    for i in 0..OWNED {
        let offset = (i % 64) * BLOCK;
        let ticket = pending(if i % 2 == 0 {
            file.read_at(vec![0; BLOCK], offset as u64)
        } else {
            file.write_at(data[offset..offset + BLOCK].to_vec(), offset as u64)
        });
        tickets.insert(ticket, offset);
    }
    let blocks = Lent::new(
        (0..BLOCKED)
            .map(|_| Overlapped::new())
            .collect::<Box<[_]>>(),
    );
    let bufs: Vec<Lent<[u8]>> = (0..BLOCKED).map(|_| Lent::zeroed(BLOCK)).collect();
    for (i, buf) in bufs.iter().enumerate() {
        blocks.get()[i].set_offset(((i % 64) * BLOCK) as u64);
        // SAFETY: buffers and blocks stay allocated until their records are dequeued below.
        unsafe { blocked.read_overlapped(buf.buf(), BLOCK, blocks.at(i)) }.unwrap();
    }
    let lio = Lio::new(
        (0..LISTED)
            .map(|i| Entry::read(file.raw_fd(), (i % 64) * BLOCK, BLOCK, Some(&port)))
            .collect(),
    );
    // SAFETY: `lio` outlives every request: all records are dequeued below.
    unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
    let queued_at_drop = busy.iter().filter(|b| b.running()).count();

    {
        let _watchdog = Watchdog::new("dropping a pool with queued requests");
        drop(pool);
    }
    // Every record was posted before the drop returned.
    let total = OWNED + BLOCKED + LISTED;
    assert_eq!(port.queued(), total, "records missing right after the drop");
    assert!(busy.iter().all(|b| !b.running()));
    assert!(
        pool_threads_become(0),
        "the pool's threads outlived its drop"
    );

    let mut blocks_seen = HashSet::new();
    let mut listed_seen = HashSet::new();
    for record in collect(&port, total) {
        match record.key() {
            1 if tickets.contains_key(&Ticket::of(&record)) => {
                let offset = tickets.remove(&Ticket::of(&record)).unwrap();
                let done = file.finish(&record).unwrap();
                assert_eq!(done.result.unwrap(), BLOCK);
                assert!(done.buf == data[offset..offset + BLOCK]);
            }
            2 => {
                let i = block_of(&blocks.get()[..BLOCKED], &record);
                assert!(blocks_seen.insert(i));
                assert_eq!(record.result().unwrap(), BLOCK as u32);
                let at = (i % 64) * BLOCK;
                assert!(bufs[i].get() == &data[at..at + BLOCK]);
            }
            0 => {
                let i = lio.index_of(&record);
                assert!(listed_seen.insert(i));
                assert_eq!(aio_state(lio.cb(i)), (0, BLOCK as isize));
            }
            _ => panic!("unexpected record {record:?}"),
        }
    }
    assert!(tickets.is_empty());
    for b in &busy {
        b.finish();
    }
    eprintln!("{queued_at_drop} of 2 threads were still busy when the queue was filled");
    assert_quiet(&port);
}

#[test]
fn requests_after_the_pool_is_dropped_fail_with_eagain() {
    let pool = pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-after-drop");
    let file = File::associated(scratch.file("data", b"still here"), &pool, &port, 1).unwrap();
    let unassociated = pool.open(scratch.open("data")).unwrap();
    drop(pool);
    assert_eq!(errno(file.read_at(vec![0; 4], 0)), libc::EAGAIN);
    assert_eq!(errno(file.write_at(vec![0; 4], 0)), libc::EAGAIN);
    assert_eq!(errno(file.sync_all()), libc::EAGAIN);
    assert_eq!(errno(file.sync_data()), libc::EAGAIN);
    // An overlapped request is refused too, its block completed with the error rather
    // than left pending.
    let event = Event::new(true, false).unwrap();
    let block = Lent::new(Box::new(Overlapped::with_event(&event)));
    let buf = Lent::zeroed(4);
    for target in [&file, &unassociated] {
        // SAFETY: the request is refused synchronously; nothing keeps the pointers.
        let refused = unsafe { target.read_overlapped(buf.buf(), 4, block.ptr()) };
        assert_eq!(errno(refused), libc::EAGAIN);
        assert!(
            block.get().is_complete(),
            "a refused request left its block pending"
        );
        assert_eq!(errno(block.get().get_result(false)), libc::EAGAIN);
        // SAFETY: `buf` and `block` are `Lent`, allocated to the end of the test, and this
        // write is refused synchronously too, so nothing keeps the pointers.
        let refused = unsafe { target.write_overlapped(buf.buf(), 4, block.ptr()) };
        assert_eq!(errno(refused), libc::EAGAIN);
    }
    assert_eq!(errno(file.cancel_all()), libc::ENOENT);
    // The synchronous form does not need the pool.
    let mut back = [0u8; 10];
    assert_eq!(file.read_at_blocking(&mut back, 0).unwrap(), 10);
    assert_eq!(&back, b"still here");
    assert_quiet(&port);
}

/// Queues `n` owned-buffer requests on one file behind a busy read and drains them; returns
/// the time from the first submission to the last record (submission is linear, so a
/// quadratic completion path still dominates, and the figure does not depend on when the
/// busy read happens to end).
fn drain_queued_on_one_file(n: usize) -> Duration {
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::builder().capacity(1 << 17).build().unwrap();
    let scratch = TempDir::new("file-queued-on-one-file");
    let file = File::associated(scratch.file("data", &[0; 64]), &pool, &port, 1).unwrap();
    busy.start(&pool, BUSY);
    let start = Instant::now();
    for _ in 0..n {
        pending(file.read_at(Vec::new(), 0));
    }
    busy.finish();
    let records = collect(&port, n);
    let took = start.elapsed();
    for record in records {
        file.finish(&record).unwrap();
    }
    took
}

#[test]
fn many_requests_queued_on_one_file_complete_in_linear_time() {
    // The median of three runs per size: one run of a few milliseconds on a loaded machine
    // can be an outlier either way.
    let median = |n| {
        let mut runs: Vec<Duration> = (0..3).map(|_| drain_queued_on_one_file(n)).collect();
        runs.sort();
        runs[1]
    };
    let small = median(4_000);
    let large = median(32_000);
    let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
    eprintln!("4k queued: {small:?}, 32k queued: {large:?}, ratio {ratio:.1} (linear: 8)");
    assert!(
        ratio < 24.0,
        "8 times the requests took {ratio:.1} times as long"
    );
}

#[test]
fn a_thread_pool_has_one_thread_per_cpu_by_default_and_pinned_pools_run_requests() {
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let threads = FilePool::builder().driver(FileDriver::Threads);
    assert_eq!(pool_from(threads.clone()).threads(), cpus);
    let pinned = pool_from(threads.threads(3).pin(true));
    assert_eq!(pinned.threads(), 3);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-pinned");
    let data = pattern(73, 30 * 100);
    let file = File::associated(scratch.file("data", &data), &pinned, &port, 6).unwrap();
    let tickets: HashMap<Ticket, usize> = (0..30)
        .map(|i| (pending(file.read_at(vec![0; 100], i as u64 * 100)), i))
        .collect();
    for record in collect(&port, tickets.len()) {
        let i = tickets[&Ticket::of(&record)];
        let done = file.finish(&record).unwrap();
        assert!(done.buf == data[i * 100..(i + 1) * 100]);
    }
    assert_quiet(&port);
}

/// A pool started before a `fork` is the parent's: in the child it takes no request
/// (`EAGAIN`, at once), holds nothing to cancel, and its drop joins nothing, while a pool
/// the child starts works; the parent's pool works on. Before the library told the
/// processes apart, the child's request waited for ever for threads only the parent has
/// (and on io_uring went into the rings the child shares with the parent, whose ring
/// thread then took the child's addresses for its own).
#[test]
#[cfg_attr(iocp_tsan, ignore)] // ThreadSanitizer ends a child that starts threads after a fork.
fn in_a_forked_child_the_parents_pool_is_stopped_and_a_new_one_works() {
    let scratch = TempDir::new("file-fork");
    let data = pattern(73, 4096);
    let pool = FilePool::builder().threads(2).build().unwrap();
    let port = Port::new().unwrap();
    let file = File::associated(scratch.file("data", &data), &pool, &port, 1).unwrap();
    let read_back = |file: &File, key: u64| -> Vec<u8> {
        let ticket = pending(file.read_at(vec![0; data.len()], 0));
        let record = port.get(Some(CHILD_PATIENCE)).unwrap();
        assert_eq!((record.key(), Ticket::of(&record)), (key, ticket));
        let done = file.finish(&record).unwrap();
        done.buf[..done.result.unwrap()].to_vec()
    };
    assert_eq!(read_back(&file, 1), data);
    let other = scratch.open("data");
    // Dropped in the child (the closure is dropped unused in the parent, which joins it).
    let doomed = FilePool::builder().threads(1).build().unwrap();
    let doomed_file = doomed.open(scratch.open("data")).unwrap();

    let code = in_forked_child(|| {
        if errno(file.read_at(vec![0; 16], 0)) != libc::EAGAIN {
            return 2;
        }
        let mut buf = vec![0u8; 16];
        let mut cb = Aiocb::new(other.as_raw_fd(), Opcode::Read, 0, buf.as_mut_ptr(), 16);
        // SAFETY: the aiocb and its buffer outlive the call, which queues nothing.
        let listed = unsafe { pool.lio_listio(LioMode::Wait, &[&mut cb as *mut Aiocb]) };
        if errno(listed) != libc::EAGAIN {
            return 3;
        }
        if errno(file.cancel_all()) != libc::ENOENT {
            return 4;
        }
        drop(doomed_file);
        drop(doomed);
        let fresh = FilePool::builder().threads(1).build().unwrap();
        let file = File::associated(other, &fresh, &port, 2).unwrap();
        if read_back(&file, 2) != data {
            return 5;
        }
        0
    });
    assert_eq!(
        code, 0,
        "in the child: 2, a request was not refused; 3, a list was not; 4, there was \
         something to cancel; 5, its own pool read wrong; 101, a panic (a pool's drop that \
         hung would show as the child taking too long)"
    );
    assert_eq!(
        read_back(&file, 1),
        data,
        "the parent's pool after the fork"
    );
}
