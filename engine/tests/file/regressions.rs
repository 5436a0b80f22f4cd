//! Regression tests, named after the bug.

use crate::common::errno;
use crate::common::files::TempDir;
use crate::common::rng::pattern;
use crate::{
    aio_state, assert_quiet, finish_one, pool, Busy, Entry, File, Lio, Watchdog, BUSY, KIB,
};
use iocp::{LioMode, Port};
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
    let ticket = file.read_at(vec![0; 4], 3).unwrap();
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
