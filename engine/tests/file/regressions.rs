//! Regression tests, named after the bug.

use crate::common::errno;
use crate::common::files::TempDir;
use crate::common::pending;
use crate::common::rng::pattern;
use crate::common::timing::BULK_PATIENCE;
use crate::{
    aio_state, assert_quiet, finish_one, pool, uring_pool, Busy, Entry, File, Lio, Watchdog, BUSY,
    KIB,
};
use iocp::{Aiocb, LioMode, Opcode, Port, Submitted, Ticket};
use std::io::Write;
use std::os::fd::AsRawFd;

/// Guards 05007d4 ("association with a closed port succeeded (sockets, providers, files)"):
/// the socket and provider cases have tests of their own; a file took a closed port as its
/// association, and its requests then went to a port that discards every record.
#[test]
fn regression_associating_a_file_with_a_closed_port_succeeded() {
    let pool = pool(1);
    let scratch = TempDir::new("file-closed-port");
    let closed = Port::new().unwrap();
    closed.close().unwrap();
    let file = scratch.file("data", b"0123456789");
    assert_eq!(
        errno(File::associated(file, &pool, &closed, 1)),
        libc::EBADF,
        "File::associated"
    );
    let file = pool.open(scratch.open("data")).unwrap();
    assert_eq!(
        errno(file.associate(&closed, 2)),
        libc::EBADF,
        "File::associate"
    );
    // The refusal left the file unassociated: a live port takes it, and gets its records.
    assert_eq!(errno(file.read_at(vec![0; 4], 0)), libc::ENOTCONN);
    let live = Port::new().unwrap();
    file.associate(&live, 3).unwrap();
    let ticket = pending(file.read_at(vec![0; 4], 3));
    let (_, done) = finish_one(&live, &file, 3, ticket);
    assert_eq!(done.buf, b"3456");
}

/// Guards the rule 05007d4 restored ("a refused LIO_WAIT list returned before the entries
/// it had queued were done"): an `LIO_WAIT` call that fails must still have waited for
/// every entry it queued, since the caller may reuse their aiocbs and buffers as soon as it
/// returns. The good entries sit behind a busy read on the pool's only thread, so a call
/// that returned early would find them still `EINPROGRESS`.
///
/// The path 05007d4 fixed, a submission refused with `EAGAIN` because the pool is
/// stopping, cannot be reached from outside the crate (`lio_listio` borrows the pool, and
/// only its drop stops it); this test holds the `EIO` path, a list with a bad entry, to the
/// same rule. That path already waited before the fix: this test keeps it so, it does not
/// reproduce the bug.
#[test]
fn regression_refused_lio_wait_list_returned_before_its_good_entries_were_done() {
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-wait-refused");
    let data = pattern(67, 64 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let mut lio = Lio::new(vec![
        Entry::read(fd, 0, 4096, Some(&port)),
        Entry::write(fd, data.len(), pattern(68, 3000), Some(&port)),
        Entry::read(fd, 0, 16, Some(&port)), // refused: a negative offset (below)
        Entry::read(fd, 8192, 4096, None),
        Entry::read(fd, 20_000, 1000, Some(&port)),
    ]);
    lio.edit(2, |cb| cb.aio_offset = -1);
    let good = [(0, 4096), (1, 3000), (3, 4096), (4, 1000)];

    busy.start(&pool, BUSY);
    let returned = {
        let _watchdog = Watchdog::new("a refused LIO_WAIT list");
        // SAFETY: `lio` outlives every request: `Wait` returns once they are done, which
        // this test checks; were it to return early, `Lio` leaks its memory on the panic.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }
    };
    // Read at once, before the pool can catch up.
    let states: Vec<_> = good
        .iter()
        .map(|&(i, _)| (lio.cb(i).error(), lio.cb(i).result().ok()))
        .collect();
    let busy_still_running = busy.running();
    assert_eq!(errno(returned), libc::EIO);
    for (&(i, n), &state) in good.iter().zip(&states) {
        assert_eq!(
            state,
            (0, Some(n)),
            "entry {i}: (aio_error, aio_return) when LIO_WAIT returned, with the busy read \
             ahead of it still running: {busy_still_running}"
        );
    }
    assert_eq!(aio_state(lio.cb(2)), (libc::EINVAL, -1));
    let contents = std::fs::read(scratch.path("data")).unwrap();
    assert!(lio.buf(0) == &data[..4096]);
    assert!(contents[data.len()..] == *lio.buf(1));
    assert!(lio.buf(3) == &data[8192..12288]);
    assert!(lio.buf(4) == &data[20_000..21_000]);
    busy.finish();
    assert_quiet(&port);
}

/// Regression: the io_uring driver first submitted from the requesting thread. A request
/// the kernel finished later (here a direct read from the disk) then completed through task
/// work queued to that thread, and the kernel interrupted the thread's next sleep for it:
/// its `GetQueuedCompletionStatus`, leading the inline drive in `epoll_wait`, failed with
/// `EINTR` (the C suite's `faults` saw AIX's `EAGAIN`). Only the ring thread enters the
/// ring now. Needs a file system that takes `O_DIRECT` (not tmpfs); skipped elsewhere.
#[test]
fn regression_an_io_uring_request_interrupted_its_submitters_port_wait() {
    const BLOCKS: usize = 64;
    let Some(pool) = uring_pool() else {
        return;
    };
    let scratch = TempDir::new("file-uring-eintr");
    let data = pattern(29, BLOCKS * 4 * KIB);
    std::fs::write(scratch.path("direct"), &data).unwrap();
    let Some(direct) = scratch.open_direct("direct") else {
        return;
    };
    let port = Port::new().unwrap();
    // A socket with a receive pending, so that a wait on the port leads `epoll_wait`.
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let socket = iocp::Socket::associated(ours, &port, 1).unwrap();
    let Submitted::Pending(ticket) = socket.recv(vec![0; 8]).unwrap() else {
        panic!("nothing was sent yet");
    };
    // Direct reads need aligned memory: 4 KiB blocks of one aligned allocation.
    let layout = std::alloc::Layout::from_size_align(BLOCKS * 4 * KIB, 4 * KIB).unwrap();
    // SAFETY: the layout has a non-zero size.
    let memory = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!memory.is_null());
    let mut cbs: Vec<Aiocb> = (0..BLOCKS)
        .map(|i| {
            // SAFETY: block `i` lies inside the allocation.
            let at = unsafe { memory.add(i * 4 * KIB) };
            Aiocb::new(
                direct.as_raw_fd(),
                Opcode::Read,
                (i * 4 * KIB) as i64,
                at,
                4 * KIB,
            )
            .with_port(&port)
        })
        .collect();
    let list: Vec<*mut Aiocb> = cbs.iter_mut().map(|cb| cb as *mut Aiocb).collect();
    // SAFETY: the aiocbs and the memory outlive the requests, whose records are taken below.
    unsafe { pool.lio_listio(LioMode::NoWait, &list) }.unwrap();
    let feeder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        theirs.write_all(b"sock").unwrap();
    });
    let mut reads = 0;
    let mut socket_done = false;
    while reads < BLOCKS || !socket_done {
        let record = port.get(Some(BULK_PATIENCE)).expect("a record, not EINTR");
        if record.key() == 1 {
            assert_eq!(Ticket::of(&record), ticket);
            assert_eq!(socket.finish(&record).unwrap().buf[..4], *b"sock");
            socket_done = true;
        } else {
            assert_eq!(record.result().unwrap() as usize, 4 * KIB, "{record:?}");
            reads += 1;
        }
    }
    // SAFETY: every read is done; the memory was allocated above with `layout`.
    let read = unsafe { std::slice::from_raw_parts(memory, BLOCKS * 4 * KIB) }.to_vec();
    // SAFETY: `memory` came from `alloc` with this same `layout`, every read into it is
    // done and the copy above was the last use: nothing refers to it any more.
    unsafe { std::alloc::dealloc(memory, layout) };
    assert!(read == data);
    feeder.join().unwrap();
    assert_quiet(&port);
}

/// Regression (seen by the C suite's `fuzz_calls`): the io_uring ring thread woken with
/// nothing to do — an empty `lio_listio` list wakes it — went back to sleep without
/// arming its wake-up again, so the next request waited for ever.
#[test]
fn regression_an_empty_wake_left_the_io_uring_ring_thread_deaf() {
    let Some(pool) = uring_pool() else {
        return;
    };
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-uring-empty-wake");
    let file = File::associated(scratch.file("data", b"0123456789"), &pool, &port, 3).unwrap();
    for _ in 0..3 {
        // Long enough for the ring thread to stop spinning and sleep.
        std::thread::sleep(std::time::Duration::from_millis(150));
        // SAFETY: an empty list names no memory.
        unsafe { pool.lio_listio(LioMode::NoWait, &[]) }.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        let ticket = pending(file.read_at(vec![0; 4], 2));
        let (_, done) = finish_one(&port, &file, 3, ticket);
        assert_eq!(done.buf, b"2345");
    }
    assert_quiet(&port);
}

/// Regression (seen once in CI by `associating_a_callers_descriptor_meets_emfile`, where a
/// ring set up with one descriptor free was closed again when its eventfd found none): the
/// thread that set up an io_uring pool's ring got, when the ring was closed, the kernel's
/// task work to forget the ring, and its next port wait, leading the inline drive in
/// `epoll_wait`, failed with `EINTR` some milliseconds later. Rings are set up on a thread
/// that ends at once now.
#[test]
fn regression_dropping_an_io_uring_pool_interrupted_its_builders_port_wait() {
    let Some(pool) = uring_pool() else {
        return;
    };
    drop(pool);
    let port = Port::new().unwrap();
    // A socket with a receive pending, so that a wait on the port leads `epoll_wait`.
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let socket = iocp::Socket::associated(ours, &port, 1).unwrap();
    let Submitted::Pending(_ticket) = socket.recv(vec![0; 8]).unwrap() else {
        panic!("nothing was sent yet");
    };
    // The task work came within 20 ms of the drop here: a wait of 300 ms ended early.
    assert_eq!(
        errno(port.get(Some(std::time::Duration::from_millis(300)))),
        libc::ETIMEDOUT
    );
}
