//! `lio_listio` in its three modes with `aio_error` and `aio_return`, and every kind of entry
//! it must refuse on its own.

use crate::common::errno;
use crate::common::files::TempDir;
use crate::common::ports::close_keeping_number;
use crate::common::rng::pattern;
use crate::common::timing::BULK_PATIENCE;
use crate::{
    aio_state, assert_quiet, collect, pool, pool_from, pool_threads_asleep, pool_threads_reads,
    pool_threads_sleeps, pools_alone, queued_pool, Busy, Entry, Lio, TestPool, Watchdog, BUSY, KIB,
};
use iocp::{
    AioCancel, Aiocb, Completion, Event, FileDriver, FilePool, LioMode, Port, AIO_EXTENDED,
    CALLER_READ_MAX, LIO_NOP, LIO_READ, MAX_TRANSFER,
};
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::os::fd::{AsRawFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

/// Reads of the data file's first half interleaved with writes past its end, all naming
/// `port`.
fn mixed_entries(fd: RawFd, data_len: usize, n: usize, port: &Port) -> Vec<Entry<'_>> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                Entry::read(fd, i * 2048, 4096, Some(port))
            } else {
                Entry::write(
                    fd,
                    data_len + i * 3000,
                    pattern(100 + i as u64, 3000),
                    Some(port),
                )
            }
        })
        .collect()
}

/// Entry `i` of `mixed_entries` did what it should: read the right bytes or wrote its own.
fn check_mixed(lio: &Lio, i: usize, data: &[u8], file: &[u8]) {
    let cb = lio.cb(i);
    let at = cb.aio_offset as usize;
    match cb.aio_lio_opcode {
        LIO_READ => assert!(lio.buf(i) == &data[at..at + 4096], "read {i}"),
        _ => assert!(file[at..at + 3000] == *lio.buf(i), "write {i}"),
    }
}

#[test]
fn lio_wait_returns_with_every_request_done_and_posts_no_record() {
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-wait");
    let data = pattern(31, 64 * KIB);
    let file = scratch.file("data", &data);
    let lio = Lio::new(mixed_entries(file.as_raw_fd(), data.len(), 16, &port));
    {
        let _watchdog = Watchdog::new("LIO_WAIT");
        // SAFETY: `lio` outlives the call, which returns once every request is done.
        unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) }.unwrap();
    }
    let contents = std::fs::read(scratch.path("data")).unwrap();
    for i in 0..lio.len() {
        let expected = if i % 2 == 0 { 4096 } else { 3000 };
        assert_eq!(aio_state(lio.cb(i)), (0, expected), "entry {i}");
        check_mixed(&lio, i, &data, &contents);
    }
    assert_quiet(&port);
}

#[test]
fn lio_nowait_returns_at_once_and_reports_through_aiocbs_and_records_keyed_zero() {
    let pool = queued_pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-nowait");
    let data = pattern(41, 64 * KIB);
    let file = scratch.file("data", &data);
    let lio = Lio::new(mixed_entries(file.as_raw_fd(), data.len(), 12, &port));

    busy.start(&pool, BUSY);
    // SAFETY: `lio` outlives every request: all records are dequeued below.
    unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
    let states: Vec<i32> = (0..lio.len()).map(|i| lio.cb(i).error()).collect();
    let last_result = lio.cb(lio.len() - 1).result();
    let busy_still_running = busy.running();
    for (i, &state) in states.iter().enumerate() {
        assert!(
            state == libc::EINPROGRESS || state == 0,
            "entry {i}: aio_error {state}"
        );
    }
    if busy_still_running {
        // The pool's only thread was still on the busy read, ahead of the whole list.
        assert!(
            states.iter().all(|&s| s == libc::EINPROGRESS),
            "requests reported done before they could run: {states:?}"
        );
        assert_eq!(
            errno(last_result),
            libc::EINVAL,
            "aio_return while in flight"
        );
    } else {
        eprintln!("note: the busy read ended before the list could be seen in progress");
    }

    let mut seen = HashSet::new();
    for record in collect(&port, lio.len()) {
        let i = lio.index_of(&record);
        assert!(seen.insert(i), "two records for entry {i}");
        let expected = if i % 2 == 0 { 4096 } else { 3000 };
        assert_eq!(record.key(), 0, "lio records carry key 0");
        assert_eq!(record.result().unwrap(), expected as u32);
        // The aiocb is updated before its record is posted.
        assert_eq!(aio_state(lio.cb(i)), (0, expected as isize), "entry {i}");
    }
    let contents = std::fs::read(scratch.path("data")).unwrap();
    for i in 0..lio.len() {
        check_mixed(&lio, i, &data, &contents);
    }
    busy.finish();
    assert_quiet(&port);
}

#[test]
fn lio_nowait_gmcs_leaves_aiocbs_untouched_and_reports_through_records_only() {
    let pool = pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-gmcs");
    let data = pattern(43, 64 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let short = scratch.file("short", &data[..1000]);
    let mut entries = mixed_entries(fd, data.len(), 12, &port);
    // And a read at the end of a file: its record carries the short count.
    entries.push(Entry::read(short.as_raw_fd(), 900, 4096, Some(&port)));
    let lio = Lio::new(entries);
    let untouched: Vec<_> = (0..lio.len()).map(|i| aio_state(lio.cb(i))).collect();
    assert!(untouched.iter().all(|&state| state == (0, 0)));

    busy.start(&pool, BUSY);
    // SAFETY: `lio` outlives every request: all records are dequeued below.
    unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &lio.list()) }.unwrap();
    for i in 0..lio.len() {
        assert_eq!(
            lio.cb(i).error(),
            0,
            "entry {i}: GMCS mode never marks EINPROGRESS"
        );
    }
    let mut seen = HashSet::new();
    for record in collect(&port, lio.len()) {
        let i = lio.index_of(&record);
        assert!(seen.insert(i), "two records for entry {i}");
        let expected = match i {
            12 => 100,
            _ if i % 2 == 0 => 4096,
            _ => 3000,
        };
        assert_eq!(record.key(), 0, "the key is unused in GMCS mode");
        assert_eq!(record.result().unwrap(), expected, "entry {i}");
    }
    for (i, &before) in untouched.iter().enumerate() {
        assert_eq!(
            aio_state(lio.cb(i)),
            before,
            "entry {i}: the aiocb was touched"
        );
    }
    let contents = std::fs::read(scratch.path("data")).unwrap();
    for i in 0..12 {
        check_mixed(&lio, i, &data, &contents);
    }
    assert!(lio.buf(12)[..100] == data[900..1000]);
    busy.finish();
    assert_quiet(&port);
}

/// What one entry of [`bad_list`] must come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// A good request: reads or writes its bytes.
    Good(usize),
    /// A good request naming no port.
    GoodNoPort(usize),
    /// Refused with this errno; the entry names a live port.
    Refused(i32),
    /// Refused with this errno for its port (bad or missing), so in every mode only the
    /// aiocb can say so.
    BadPort(i32),
    /// `LIO_NOP`: skipped.
    Nop,
}

/// A list mixing good requests with every kind of entry `lio_listio` must refuse on its
/// own, and NULL entries.
struct BadList {
    lio: Lio,
    fates: Vec<Fate>,
    list: Vec<*mut Aiocb>,
    _event: Event,
}

fn bad_list(fd: RawFd, data_len: usize, port: &Port) -> BadList {
    let event = Event::new(true, false).unwrap();
    let p = Some(port);
    let mut entries = Vec::new();
    let mut fates = Vec::new();
    let mut add = |entry, fate| {
        entries.push(entry);
        fates.push(fate);
    };
    add(Entry::read(fd, 0, 4096, p), Fate::Good(4096));
    add(Entry::read(-1, 0, 16, p), Fate::Refused(libc::EBADF));
    add(
        Entry::write(fd, data_len, pattern(61, 2000), p),
        Fate::Good(2000),
    );
    add(Entry::read(i32::MAX, 0, 16, p), Fate::Refused(libc::EBADF));
    add(Entry::read(fd, 0, 16, p), Fate::Refused(libc::EINVAL)); // negative offset (below)
    add(Entry::read(fd, 5000, 1000, p), Fate::Good(1000));
    add(Entry::read(fd, 0, 16, p), Fate::Refused(libc::EINVAL)); // nbytes > 2^31 - 1
    add(Entry::read(fd, 0, 16, p), Fate::Refused(libc::EINVAL)); // unknown opcode
    add(Entry::read(fd, 0, 16, p), Fate::Refused(libc::EINVAL)); // NULL buffer
    add(Entry::read(fd, 0, 16, None), Fate::BadPort(libc::EBADF)); // aio_iocpfd -1
    add(Entry::read(fd, 0, 16, None), Fate::BadPort(libc::EBADF)); // an event's handle
    add(Entry::read(fd, 0, 16, p), Fate::Nop);
    add(Entry::read(fd, 100, 512, None), Fate::GoodNoPort(512));
    add(
        Entry::write(fd, data_len + 4096, pattern(62, 777), p),
        Fate::Good(777),
    );
    let mut lio = Lio::new(entries);
    lio.edit(4, |cb| cb.aio_offset = -4096);
    lio.edit(6, |cb| cb.aio_nbytes = MAX_TRANSFER + 1);
    lio.edit(7, |cb| cb.aio_lio_opcode = 7);
    lio.edit(8, |cb| cb.aio_buf = std::ptr::null_mut());
    lio.edit(9, |cb| {
        cb.aio_flag = AIO_EXTENDED;
        cb.aio_iocpfd = -1;
    });
    lio.edit(10, |cb| {
        cb.aio_flag = AIO_EXTENDED;
        cb.aio_iocpfd = event.handle();
    });
    lio.edit(11, |cb| cb.aio_lio_opcode = LIO_NOP);
    // NULL entries between the others.
    let mut list = Vec::new();
    for i in 0..lio.len() {
        if i % 4 == 0 {
            list.push(std::ptr::null_mut());
        }
        list.push(lio.ptr(i));
    }
    list.push(std::ptr::null_mut());
    BadList {
        lio,
        fates,
        list,
        _event: event,
    }
}

/// Submits [`bad_list`] in `mode` and checks every entry's fate.
fn lio_refuses_bad_entries_alone(mode: LioMode) {
    let pool = pool(2);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-bad");
    let data = pattern(63, 64 * KIB);
    let file = scratch.file("data", &data);
    let bad = bad_list(file.as_raw_fd(), data.len(), &port);
    let lio = &bad.lio;
    let returned = {
        let _watchdog = Watchdog::new("lio_listio with bad entries");
        // SAFETY: the aiocbs and buffers outlive every request: Wait returns once they are
        // done, and in the other modes every record is dequeued and every aiocb polled below.
        unsafe { pool.lio_listio(mode, &bad.list) }
    };
    assert_eq!(errno(returned), libc::EIO, "{mode:?}");

    // Which entries report through a record.
    let posts = |fate: Fate| match (mode, fate) {
        (LioMode::Wait, _) => false,
        (_, Fate::Good(_)) => true,
        (LioMode::NoWaitGmcs, Fate::Refused(_)) => true,
        _ => false,
    };
    let expected_records = bad.fates.iter().filter(|&&fate| posts(fate)).count();
    let mut recorded = HashMap::new();
    for record in collect(&port, expected_records) {
        let i = lio.index_of(&record);
        assert!(posts(bad.fates[i]), "{mode:?}: entry {i} posted {record:?}");
        assert_eq!(record.key(), 0);
        assert!(
            recorded.insert(i, record).is_none(),
            "two records for entry {i}"
        );
    }
    // Requests without a record (GoodNoPort in NoWait mode) report through their aiocb.
    let deadline = Instant::now() + BULK_PATIENCE;
    while (0..lio.len()).any(|i| lio.cb(i).error() == libc::EINPROGRESS) {
        assert!(
            Instant::now() < deadline,
            "{mode:?}: a request never completed"
        );
        thread::sleep(Duration::from_millis(1));
    }
    for (i, &fate) in bad.fates.iter().enumerate() {
        let state = aio_state(lio.cb(i));
        let gmcs = mode == LioMode::NoWaitGmcs;
        match fate {
            Fate::Good(n) => {
                if gmcs {
                    assert_eq!(state, (0, 0), "{mode:?}: entry {i} untouched");
                } else {
                    assert_eq!(state, (0, n as isize), "{mode:?}: entry {i}");
                }
                if let Some(record) = recorded.get(&i) {
                    assert_eq!(record.result().unwrap(), n as u32, "{mode:?}: entry {i}");
                }
            }
            Fate::GoodNoPort(_) if gmcs => {
                // GMCS needs a port: refused, and only the aiocb can say so.
                assert_eq!(state, (libc::EINVAL, -1), "{mode:?}: entry {i}");
            }
            Fate::GoodNoPort(n) => assert_eq!(state, (0, n as isize), "{mode:?}: entry {i}"),
            Fate::Refused(err) if gmcs => {
                assert_eq!(state, (0, 0), "{mode:?}: entry {i} untouched");
                let record = recorded[&i];
                assert_eq!(
                    (record.error(), record.bytes()),
                    (err as u32, 0),
                    "{mode:?}: entry {i}"
                );
            }
            Fate::Refused(err) | Fate::BadPort(err) => {
                assert_eq!(state, (err, -1), "{mode:?}: entry {i}");
            }
            Fate::Nop => assert_eq!(state, (0, 0), "{mode:?}: the NOP entry was touched"),
        }
    }
    // The good entries moved the right bytes.
    let contents = std::fs::read(scratch.path("data")).unwrap();
    assert!(lio.buf(0) == &data[..4096]);
    assert!(contents[data.len()..data.len() + 2000] == *lio.buf(2));
    assert!(lio.buf(5) == &data[5000..6000]);
    assert!(contents[data.len() + 4096..data.len() + 4096 + 777] == *lio.buf(13));
    if mode != LioMode::NoWaitGmcs {
        assert!(lio.buf(12) == &data[100..612]);
    }
    assert_quiet(&port);
}

#[test]
fn lio_wait_fails_bad_entries_alone_with_their_errno_and_returns_eio() {
    lio_refuses_bad_entries_alone(LioMode::Wait);
}

/// POSIX: `LIO_WAIT` returns `EIO` when any request failed, also one that was queued and
/// failed as it ran (here a read of a file opened for writing only: `EBADF` from `pread`),
/// while the others complete.
#[test]
fn lio_wait_returns_eio_when_a_request_fails_as_it_runs() {
    let pool = pool(1);
    let scratch = TempDir::new("file-lio-wait-run-error");
    let data = pattern(66, 8 * KIB);
    let readable = scratch.file("data", &data);
    let write_only = std::fs::OpenOptions::new()
        .write(true)
        .open(scratch.path("data"))
        .unwrap();
    let lio = Lio::new(vec![
        Entry::read(readable.as_raw_fd(), 0, 512, None),
        Entry::read(write_only.as_raw_fd(), 512, 512, None),
    ]);
    // SAFETY: `lio` outlives both requests, which are done when the call returns.
    let returned = unsafe { pool.lio_listio(LioMode::Wait, &lio.list()) };
    assert_eq!(errno(returned), libc::EIO);
    assert_eq!(aio_state(lio.cb(0)), (0, 512));
    assert!(lio.buf(0) == &data[..512]);
    assert_eq!(aio_state(lio.cb(1)), (libc::EBADF, -1));
    // Every request done and fine: 0.
    let good = Lio::new(vec![Entry::read(readable.as_raw_fd(), 0, 512, None)]);
    // SAFETY: `good` outlives its request, which is done when the call returns.
    unsafe { pool.lio_listio(LioMode::Wait, &good.list()) }.unwrap();
}

#[test]
fn lio_nowait_fails_bad_entries_alone_with_their_errno_and_returns_eio() {
    lio_refuses_bad_entries_alone(LioMode::NoWait);
}

#[test]
fn lio_nowait_gmcs_fails_bad_entries_alone_with_error_records_and_returns_eio() {
    lio_refuses_bad_entries_alone(LioMode::NoWaitGmcs);
}

#[test]
fn lio_naming_a_closed_port_fails_that_entry_with_ebadf() {
    let pool = pool(1);
    let live = Port::new().unwrap();
    let closed = Port::new().unwrap();
    // Keep the number from a port of a test running alongside, which would take the entry.
    let _number = close_keeping_number(&closed);
    let scratch = TempDir::new("file-lio-closed-port");
    let data = pattern(65, 8 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    for mode in [LioMode::NoWaitGmcs, LioMode::NoWait] {
        let lio = Lio::new(vec![
            Entry::read(fd, 0, 512, Some(&live)),
            Entry::read(fd, 512, 512, Some(&closed)),
        ]);
        // SAFETY: `lio` outlives both requests: the marker below runs after them on the
        // pool's only thread, and its record is dequeued before `lio` is dropped.
        let returned = unsafe { pool.lio_listio(mode, &lio.list()) };
        let marker = Lio::new(vec![Entry::read(fd, 0, 1, Some(&live))]);
        // SAFETY: `marker` outlives its request, whose record is dequeued below.
        unsafe { pool.lio_listio(LioMode::NoWait, &marker.list()) }.unwrap();
        let records = collect(&live, 2);
        assert_eq!(lio.index_of(&records[0]), 0);
        assert_eq!(marker.index_of(&records[1]), 0);
        assert_eq!(
            aio_state(lio.cb(1)),
            (libc::EBADF, -1),
            "{mode:?}: an entry naming a closed port was accepted; its report is lost"
        );
        assert_eq!(errno(returned), libc::EIO, "{mode:?}");
    }
}

/// A list's cached reads are shared with an idle pool thread (the thread driver's, or
/// io_uring's ring thread): the kernel's count of the bytes each thread reads shows it did
/// some of them, every buffer holds its own bytes, and every record is in the port when
/// `lio_listio` returns. Repeats lists until the thread has taken a read (it may come late
/// to the first ones), within a bound.
#[test]
fn an_idle_pool_thread_does_part_of_a_lists_cached_reads() {
    const READS: usize = 32;
    const LEN: usize = 16 * KIB;
    // Alone, so that every pool thread in the process is this test's.
    let _exclusive = pools_alone();
    let pool = FilePool::builder().threads(1).build().unwrap();
    let Some(start) = pool_threads_reads() else {
        eprintln!("skipped: the kernel keeps no per-thread read counts here");
        return;
    };
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-shared-reads");
    let data = pattern(73, READS * LEN);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let deadline = Instant::now() + BULK_PATIENCE;
    for lists in 1.. {
        let lio = Lio::new(
            (0..READS)
                .map(|i| Entry::read(fd, i * LEN, LEN, Some(&port)))
                .collect(),
        );
        // SAFETY: `lio` outlives its requests: all are done when the call returns (checked
        // below: every record is in the port).
        unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &lio.list()) }.unwrap();
        let mut out = [Completion::default(); READS];
        let at_once = port.get_many(&mut out, 0, None).unwrap().count;
        assert_eq!(at_once, READS, "list {lists}: a read was left to the pool");
        let mut seen = HashSet::new();
        for record in &out {
            let i = lio.index_of(record);
            assert!(seen.insert(i), "two records for entry {i}");
            assert_eq!((record.error(), record.bytes()), (0, LEN as u32));
            assert!(lio.buf(i) == &data[i * LEN..(i + 1) * LEN], "entry {i}");
        }
        // Reads of `LEN` bytes, told apart from the ring thread's 8-byte reads of its
        // eventfd: bytes = LEN * shared + 8 * other, calls = shared + other.
        let (bytes, calls) = pool_threads_reads().expect("counted at the start");
        let (bytes, calls) = (bytes - start.0, calls - start.1);
        let shared = bytes.saturating_sub(8 * calls) / (LEN as u64 - 8);
        if shared > 0 {
            assert_eq!(
                shared * LEN as u64 + (calls - shared) * 8,
                bytes,
                "the pool thread read something else"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool thread took none of {lists} lists' reads"
        );
    }
    assert_quiet(&port);
    let _watchdog = Watchdog::new("dropping a file pool");
    drop(pool);
}

/// A pool thread asleep is left asleep by lists of cached reads too short to be worth a
/// wake (under 64 KiB: the caller does them alone, with no system call for the pool), and
/// woken by a long one, which it then helps with.
#[test]
fn a_sleeping_pool_thread_is_woken_for_a_long_list_of_cached_reads_only() {
    let _exclusive = pools_alone();
    let pool = FilePool::builder().threads(1).build().unwrap();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-wake-for-long");
    let data = pattern(83, 512 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let run = |reads: usize, len: usize| {
        let lio = Lio::new(
            (0..reads)
                .map(|i| Entry::read(fd, i * len, len, Some(&port)))
                .collect(),
        );
        // SAFETY: `lio` outlives its requests: all are done when the call returns (every
        // record is in the port, checked below).
        unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &lio.list()) }.unwrap();
        let mut out = vec![Completion::default(); reads];
        let at_once = port.get_many(&mut out, 0, None).unwrap().count;
        assert_eq!(at_once, reads, "a read was left to the pool");
        for record in &out {
            let i = lio.index_of(record);
            assert!(lio.buf(i) == &data[i * len..(i + 1) * len], "entry {i}");
        }
    };
    // The thread spins for at most 100 µs after its start, then sleeps. A thread seen
    // asleep may only be blocked for a moment on its way there (its count then grew once
    // more after the look, and the check below failed once here): the sleep counted from
    // is one that lasted 10 ms with the count unchanged.
    let deadline = Instant::now() + BULK_PATIENCE;
    let sleeps = loop {
        assert!(
            Instant::now() < deadline,
            "the pool thread never went to sleep"
        );
        if pool_threads_asleep() {
            let sleeps = pool_threads_sleeps();
            thread::sleep(Duration::from_millis(10));
            if pool_threads_asleep() && pool_threads_sleeps() == sleeps {
                break sleeps;
            }
        } else {
            thread::sleep(Duration::from_millis(1));
        }
    };
    for _ in 0..50 {
        run(4, 4 * KIB);
    }
    assert_eq!(
        pool_threads_sleeps(),
        sleeps,
        "short lists woke the sleeping pool thread"
    );
    run(16, 16 * KIB);
    while pool_threads_sleeps() == sleeps {
        assert!(
            Instant::now() < deadline,
            "a long list did not wake the sleeping pool thread"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert_quiet(&port);
    let _watchdog = Watchdog::new("dropping a file pool");
    drop(pool);
}

/// A list longer than the chunks `lio_listio` gathers cached reads in (32 entries), whose
/// entries name two ports in runs of five (so the port changes within a chunk and across
/// chunks) and mix cached reads, done before the call returns and shared with the pool's
/// idle thread, with reads too large for that, which go to the pool: every record reaches
/// the port its entry names, once, with its byte count, and every buffer holds its bytes.
#[test]
fn a_long_list_naming_two_ports_in_runs_reports_each_read_to_its_own() {
    const ENTRIES: usize = 70;
    let pool = pool(1);
    let ports = [Port::new().unwrap(), Port::new().unwrap()];
    let scratch = TempDir::new("file-lio-two-ports");
    let data = pattern(79, 512 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let port_of = |i: usize| (i / 5) % 2;
    let large = CALLER_READ_MAX + 4 * KIB;
    let span = |i: usize| match i % 7 {
        3 => (0, large),
        _ => (i * 4 * KIB, 4 * KIB),
    };
    for mode in [LioMode::NoWaitGmcs, LioMode::NoWait] {
        let lio = Lio::new(
            (0..ENTRIES)
                .map(|i| {
                    let (at, len) = span(i);
                    Entry::read(fd, at, len, Some(&ports[port_of(i)]))
                })
                .collect(),
        );
        // SAFETY: `lio` outlives its requests: every record is dequeued below.
        unsafe { pool.lio_listio(mode, &lio.list()) }.unwrap();
        let mut seen = HashSet::new();
        for (p, port) in ports.iter().enumerate() {
            let named = (0..ENTRIES).filter(|&i| port_of(i) == p).count();
            for record in collect(port, named) {
                let i = lio.index_of(&record);
                assert!(seen.insert(i), "{mode:?}: two records for entry {i}");
                assert_eq!(
                    port_of(i),
                    p,
                    "{mode:?}: entry {i}'s record went to port {p}"
                );
                let (at, len) = span(i);
                assert_eq!(
                    (record.error(), record.bytes()),
                    (0, len as u32),
                    "entry {i}"
                );
                assert!(lio.buf(i) == &data[at..at + len], "{mode:?}: entry {i}");
                if mode == LioMode::NoWait {
                    assert_eq!(aio_state(lio.cb(i)), (0, len as isize), "entry {i}");
                }
            }
        }
        assert_eq!(seen.len(), ENTRIES);
        ports.iter().for_each(assert_quiet);
    }
}

/// One list three times as long as the io_uring driver's submission queue (1,024
/// entries), every entry going to the pool: the submitter waits for the ring thread to make
/// room, and neither loses nor refuses an entry. Each read completes once, with its bytes:
/// with `LIO_NOWAIT_GMCS` through one record each, with `LIO_WAIT` through its aiocb before
/// the call returns. On both drivers (the thread driver queues the whole list).
#[test]
fn a_list_longer_than_the_submission_queue_completes_every_entry_once() {
    const ENTRIES: usize = 3 * 1024;
    const LEN: usize = 512;
    let scratch = TempDir::new("file-lio-past-the-queue");
    let data = pattern(83, ENTRIES * LEN);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    for driver in [FileDriver::Uring, FileDriver::Threads] {
        let pool = pool_from(
            FilePool::builder()
                .driver(driver)
                .threads(2)
                .cached_reads_on_caller(false),
        );
        let port = Port::new().unwrap();
        for mode in [LioMode::NoWaitGmcs, LioMode::Wait] {
            let lio = Lio::new(
                (0..ENTRIES)
                    .map(|i| Entry::read(fd, i * LEN, LEN, Some(&port)))
                    .collect(),
            );
            {
                let _watchdog = Watchdog::new("a list past the submission queue");
                // SAFETY: `lio` outlives its requests: `Wait` returns once they are done,
                // and with `NoWaitGmcs` every record is dequeued below.
                unsafe { pool.lio_listio(mode, &lio.list()) }.unwrap();
            }
            let what = format!("{:?}, {mode:?}", pool.driver());
            if mode == LioMode::NoWaitGmcs {
                let mut seen = HashSet::new();
                for record in collect(&port, ENTRIES) {
                    let i = lio.index_of(&record);
                    assert!(seen.insert(i), "{what}: two records for entry {i}");
                    assert_eq!(
                        (record.error(), record.bytes()),
                        (0, LEN as u32),
                        "{what}: entry {i}"
                    );
                }
            }
            for i in 0..ENTRIES {
                if mode == LioMode::Wait {
                    assert_eq!(aio_state(lio.cb(i)), (0, LEN as isize), "{what}: entry {i}");
                }
                assert!(
                    lio.buf(i) == &data[i * LEN..(i + 1) * LEN],
                    "{what}: entry {i}'s bytes"
                );
            }
            assert_quiet(&port);
        }
    }
}

/// A pool whose only thread is on a long read, where cached reads are done by the caller
/// (the default).
fn busy_caller_reads_pool() -> (TestPool, Busy) {
    let pool = pool_from(FilePool::builder().driver(FileDriver::Threads).threads(1));
    let mut busy = Busy::new();
    busy.start(&pool, BUSY);
    (pool, busy)
}

#[test]
fn cached_reads_are_done_by_the_caller_before_lio_listio_returns() {
    let (pool, mut busy) = busy_caller_reads_pool();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-caller-reads");
    let data = pattern(71, 64 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let offsets = [0, 4 * KIB, 60 * KIB, 12 * KIB];
    // What is seen right after the calls proves the caller read the pages only while the
    // pool's only thread is still on its long read; on a slow machine (a sanitizer build)
    // that read may end first, and the attempt proves nothing: again.
    for attempt in 0..20 {
        if attempt > 0 {
            busy.finish();
            busy.start(&pool, BUSY);
        }
        let gmcs = Lio::new(
            offsets
                .iter()
                .map(|&at| Entry::read(fd, at, 4 * KIB, Some(&port)))
                .collect(),
        );
        let plain = Lio::new(
            offsets
                .iter()
                .map(|&at| Entry::read(fd, at, 4 * KIB, None))
                .collect(),
        );
        // SAFETY: both lists outlive their requests: the records are dequeued and the
        // aiocbs polled until done below.
        unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &gmcs.list()) }.unwrap();
        // SAFETY: `plain` outlives its requests: its aiocbs are polled until done below.
        unsafe { pool.lio_listio(LioMode::NoWait, &plain.list()) }.unwrap();
        let mut out = [Completion::default(); 8];
        let at_once = port.get_many(&mut out, 0, None).unwrap().count;
        let states: Vec<(i32, isize)> =
            (0..offsets.len()).map(|i| aio_state(plain.cb(i))).collect();
        if !busy.running() {
            eprintln!("attempt {attempt}: the long read ended before the look");
            let rest = collect(&port, offsets.len() - at_once);
            assert_eq!(rest.len(), offsets.len() - at_once);
            let deadline = Instant::now() + BULK_PATIENCE;
            while (0..offsets.len()).any(|i| plain.cb(i).error() == libc::EINPROGRESS) {
                assert!(Instant::now() < deadline, "a read never completed");
                thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        // The records were in the port already, and the aiocbs done, though the pool's
        // only thread was busy all along.
        assert_eq!(at_once, offsets.len(), "{:?}", &out[..at_once]);
        let mut seen = HashSet::new();
        for record in &out[..at_once] {
            let i = gmcs.index_of(record);
            assert!(seen.insert(i), "two records for entry {i}");
            assert_eq!(
                (record.key(), record.error(), record.bytes()),
                (0, 0, 4 * KIB as u32)
            );
        }
        for (i, &at) in offsets.iter().enumerate() {
            assert_eq!(states[i], (0, 4 * KIB as isize), "entry {i}");
            assert!(gmcs.buf(i) == &data[at..at + 4 * KIB], "entry {i}");
            assert!(plain.buf(i) == &data[at..at + 4 * KIB], "entry {i}");
            // Done before the call returned: nothing to cancel.
            let cancel = pool.aio_cancel(fd, Some(plain.ptr(i))).unwrap();
            assert_eq!(cancel, AioCancel::AllDone);
        }
        busy.finish();
        assert_quiet(&port);
        return;
    }
    panic!("the pool's thread finished its long read before every look");
}

#[test]
fn writes_large_reads_and_reads_of_streams_go_to_the_pool() {
    let (pool, busy) = busy_caller_reads_pool();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-lio-pool-reads");
    let large = CALLER_READ_MAX + 4 * KIB;
    let data = pattern(72, large);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let (stream, _writer) = std::os::unix::net::UnixStream::pair().unwrap();
    let lio = Lio::new(vec![
        Entry::read(fd, 0, large, Some(&port)),
        Entry::read(stream.as_raw_fd(), 0, 4 * KIB, Some(&port)),
        Entry::write(fd, 0, b"abcd".to_vec(), Some(&port)),
    ]);
    // SAFETY: `lio` outlives its requests: every record is dequeued below.
    unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
    let states: Vec<i32> = (0..lio.len()).map(|i| lio.cb(i).error()).collect();
    let still_busy = busy.running();
    busy.finish();
    if still_busy {
        assert!(
            states.iter().all(|&state| state == libc::EINPROGRESS),
            "done before the pool's only thread was free: {states:?}"
        );
    }
    let records = collect(&port, lio.len());
    assert_eq!(records.len(), lio.len());
    assert_eq!(aio_state(lio.cb(0)), (0, large as isize));
    assert!(lio.buf(0) == &data[..]);
    // Positioned I/O on a stream: the pool's `pread` says so.
    assert_eq!(aio_state(lio.cb(1)), (libc::ESPIPE, -1));
    assert_eq!(aio_state(lio.cb(2)), (0, 4));
    assert_quiet(&port);
}

/// Regression: `preadv2(RWF_NOWAIT)` on an `O_DIRECT` descriptor does not refuse device
/// I/O (on ext4 it reads the device and waits), so the caller read every such list entry
/// itself, one after the other: a queue depth of 32 behaved like 1. An `O_DIRECT` read now
/// goes to the pool, and here waits behind its only, busy thread.
#[test]
fn regression_an_o_direct_read_was_done_by_the_caller() {
    let (pool, busy) = busy_caller_reads_pool();
    let scratch = TempDir::new("file-lio-direct");
    let data = pattern(73, 64 * KIB);
    // Written back and out of the page cache, as a database's file is: a dirty cached page
    // would make the direct read wait for writeback, which `RWF_NOWAIT` does refuse.
    let written = scratch.file("data", &data);
    written.sync_all().unwrap();
    // SAFETY: posix_fadvise takes the descriptor and plain numbers; no memory.
    unsafe { libc::posix_fadvise(written.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    drop(written);
    let Some(direct) = scratch.open_direct("data") else {
        return;
    };
    let layout = std::alloc::Layout::from_size_align(4 * KIB, 4 * KIB).unwrap();
    // SAFETY: the layout has a non-zero size.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!buf.is_null());
    let mut aiocb = Aiocb::new(direct.as_raw_fd(), iocp::Opcode::Read, 0, buf, 4 * KIB);
    let cb: *mut Aiocb = &mut aiocb;
    // SAFETY: `aiocb` and `buf` outlive the request: it is waited for below.
    unsafe { pool.lio_listio(LioMode::NoWait, &[cb]) }.unwrap();
    // SAFETY: `cb` points at `aiocb`, which only the pool writes meanwhile (atomically).
    let state = unsafe { &*cb }.error();
    let still_busy = busy.running();
    busy.finish();
    if still_busy {
        assert_eq!(state, libc::EINPROGRESS, "done by the caller");
    }
    let deadline = Instant::now() + BULK_PATIENCE;
    // SAFETY: `cb` points at `aiocb`, which only the pool writes until the request is done
    // (atomically).
    while unsafe { &*cb }.error() == libc::EINPROGRESS {
        assert!(
            Instant::now() < deadline,
            "the O_DIRECT read never completed"
        );
        thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: `cb` points at `aiocb`, and the request is done: nothing writes it now.
    assert_eq!(aio_state(unsafe { &*cb }), (0, 4 * KIB as isize));
    // SAFETY: the read is done; `buf` holds 4 KiB written by it.
    assert!(unsafe { std::slice::from_raw_parts(buf, 4 * KIB) } == &data[..4 * KIB]);
    // SAFETY: allocated above with `layout`; nothing uses it any more.
    unsafe { std::alloc::dealloc(buf, layout) };
}
