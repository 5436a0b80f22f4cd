//! Cancellation: `File::cancel` and `aio_cancel` with nothing queued and racing completion,
//! what `aio_cancel` reports, dequeue waits that a cancel must not end, and a file's drop.

use crate::common::files::TempDir;
use crate::common::pending;
use crate::common::rng::{pattern, Rng};
use crate::common::timing::BULK_PATIENCE;
use crate::common::{block_of, errno};
use crate::{
    aio_state, assert_quiet, collect, finish_one, pool, threads_pool, uring_pool, Busy, Entry,
    File, Lent, Lio, BUSY, KIB, MIB,
};
use iocp::{AioCancel, Aiocb, Completion, DrainStatus, LioMode, Opcode, Overlapped, Port, Ticket};
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn cancel_with_nothing_queued_fails_with_enoent_and_aio_cancel_reports_all_done() {
    let pool = pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-cancel-idle");
    let file = File::associated(scratch.file("data", b"data"), &pool, &port, 1).unwrap();
    assert_eq!(errno(file.cancel(Ticket::from_raw(12345))), libc::ENOENT);
    assert_eq!(errno(file.cancel_all()), libc::ENOENT);
    let block = Overlapped::new();
    assert_eq!(errno(file.cancel_overlapped(&block)), libc::ENOENT);
    // A finished request is not cancellable either.
    let ticket = pending(file.read_at(vec![0; 4], 0));
    let (_, done) = finish_one(&port, &file, 1, ticket);
    assert_eq!(done.buf, b"data");
    assert_eq!(errno(file.cancel(ticket)), libc::ENOENT);
    assert_eq!(
        pool.aio_cancel(file.raw_fd(), None).unwrap(),
        AioCancel::AllDone
    );
    let cb = Aiocb::new(file.raw_fd(), Opcode::Read, 0, std::ptr::null_mut(), 0);
    assert_eq!(
        pool.aio_cancel(file.raw_fd(), Some(&cb)).unwrap(),
        AioCancel::AllDone
    );
    assert_eq!(errno(pool.aio_cancel(-1, None)), libc::EBADF);
    assert_eq!(errno(pool.aio_cancel(i32::MAX, None)), libc::EBADF);
    assert_quiet(&port);
}

/// On the io_uring driver a request belongs to the kernel from its submission on: a cancel
/// from the submitting thread finds nothing queued (`CancelIoEx`: `ENOENT`; `aio_cancel`:
/// not cancelled, or all done once reported), and every request completes exactly once,
/// with its result.
#[test]
fn on_io_uring_a_submitted_request_runs_and_completes_once_with_its_result() {
    let Some(pool) = uring_pool() else {
        return;
    };
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-cancel-uring");
    let data = pattern(5, 64 * KIB);
    let file = File::associated(scratch.file("data", &data), &pool, &port, 1).unwrap();
    let mut rng = Rng::new(0x51ab);
    for _ in 0..100 {
        let offsets: Vec<usize> = (0..8).map(|_| rng.below(60 * KIB)).collect();
        let mut tickets: HashMap<Ticket, usize> = offsets
            .iter()
            .map(|&at| (pending(file.read_at(vec![0; 4 * KIB], at as u64)), at))
            .collect();
        assert_eq!(errno(file.cancel_all()), libc::ENOENT);
        let answer = pool.aio_cancel(file.raw_fd(), None).unwrap();
        assert_ne!(answer, AioCancel::Canceled);
        for record in collect(&port, 8) {
            let at = tickets
                .remove(&Ticket::of(&record))
                .expect("one record per request");
            let done = file.finish(&record).unwrap();
            assert_eq!(done.result.unwrap(), 4 * KIB);
            assert!(done.buf == data[at..at + 4 * KIB]);
        }
    }
    assert_quiet(&port);
}

#[test]
fn cancellation_racing_completion_yields_exactly_one_record_per_request() {
    const BLOCK: usize = 512;
    const BLOCKS: usize = 64;
    const OWNED: usize = 24;
    const BLOCKED: usize = 8;
    let iterations = if cfg!(debug_assertions) { 120 } else { 500 };
    let pool = threads_pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-cancel-race");
    let data = pattern(51, BLOCK * BLOCKS);
    let owned = File::associated(scratch.file("data", &data), &pool, &port, 1).unwrap();
    let overlapped = File::associated(scratch.open("data"), &pool, &port, 2).unwrap();
    let blocks = Lent::new(
        (0..BLOCKED)
            .map(|_| Overlapped::new())
            .collect::<Box<[_]>>(),
    );
    let bufs: Vec<Lent<[u8]>> = (0..BLOCKED).map(|_| Lent::zeroed(BLOCK)).collect();
    let mut rng = Rng::new(52);
    let (mut cancelled, mut too_late, mut swept) = (0, 0, 0);
    for iteration in 0..iterations {
        // Sometimes a long busy read (the requests wait in the queue), sometimes none.
        busy.start(&pool, rng.below(8 * MIB + 1) * rng.below(2));
        let mut tickets: HashMap<Ticket, (usize, bool)> = HashMap::new();
        let mut order = Vec::new();
        let mut offsets = [0; BLOCKED];
        let mut block_cancelled = [false; BLOCKED];
        for i in 0..OWNED {
            let offset = rng.below(BLOCKS) * BLOCK;
            let ticket = pending(owned.read_at(vec![0; BLOCK], offset as u64));
            tickets.insert(ticket, (offset, false));
            order.push(ticket);
            if i < BLOCKED {
                offsets[i] = rng.below(BLOCKS) * BLOCK;
                bufs[i].fill(0);
                blocks.get()[i].set_offset(offsets[i] as u64);
                // SAFETY: buffer and block stay allocated and unused until their record is
                // dequeued below.
                unsafe { overlapped.read_overlapped(bufs[i].buf(), BLOCK, blocks.at(i)) }.unwrap();
            }
            if rng.below(2) == 0 {
                let victim = order[rng.below(order.len())];
                match owned.cancel(victim) {
                    Ok(()) => {
                        let entry = tickets.get_mut(&victim).unwrap();
                        assert!(!entry.1, "ticket {victim} cancelled twice");
                        entry.1 = true;
                        cancelled += 1;
                    }
                    Err(err) => {
                        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
                        too_late += 1;
                    }
                }
            }
            if i < BLOCKED && rng.below(2) == 0 {
                let victim = rng.below(i + 1);
                match overlapped.cancel_overlapped(blocks.at(victim)) {
                    Ok(()) => {
                        assert!(!block_cancelled[victim], "block {victim} cancelled twice");
                        block_cancelled[victim] = true;
                        cancelled += 1;
                    }
                    Err(err) => {
                        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
                        too_late += 1;
                    }
                }
            }
        }
        // Now and then cancel whatever of the owned requests is still queued.
        let sweep = if iteration % 8 == 7 {
            match owned.cancel_all() {
                Ok(n) => n,
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
                    0
                }
            }
        } else {
            0
        };
        swept += sweep;
        let mut swept_seen = 0;
        let mut block_seen = [false; BLOCKED];
        for record in collect(&port, OWNED + BLOCKED) {
            match record.key() {
                1 => {
                    let ticket = Ticket::of(&record);
                    let (offset, was_cancelled) = tickets
                        .remove(&ticket)
                        .unwrap_or_else(|| panic!("unknown or repeated ticket: {record:?}"));
                    let done = owned.finish(&record).unwrap();
                    assert_eq!(done.buf.len(), BLOCK);
                    if record.error() == libc::ECANCELED as u32 && !was_cancelled {
                        assert!(sweep > 0, "ticket {ticket} cancelled by nobody");
                        swept_seen += 1;
                    } else if was_cancelled {
                        assert_eq!(record.error(), libc::ECANCELED as u32, "{record:?}");
                    }
                    if record.error() == libc::ECANCELED as u32 {
                        assert_eq!(errno(done.result), libc::ECANCELED);
                        assert!(done.buf.iter().all(|&b| b == 0), "cancelled, yet read");
                    } else {
                        assert_eq!(record.result().unwrap(), BLOCK as u32, "{record:?}");
                        assert_eq!(done.result.unwrap(), BLOCK);
                        assert!(done.buf == data[offset..offset + BLOCK]);
                    }
                }
                2 => {
                    let i = block_of(&blocks.get()[..BLOCKED], &record);
                    assert!(!block_seen[i], "two records for block {i}");
                    block_seen[i] = true;
                    let block = &blocks.get()[i];
                    if block_cancelled[i] {
                        assert_eq!(record.error(), libc::ECANCELED as u32, "{record:?}");
                        assert_eq!(errno(block.get_result(false)), libc::ECANCELED);
                        assert!(bufs[i].get().iter().all(|&b| b == 0));
                    } else {
                        assert_eq!(record.result().unwrap(), BLOCK as u32, "{record:?}");
                        assert_eq!(block.get_result(false).unwrap(), BLOCK as u32);
                        assert!(bufs[i].get() == &data[offsets[i]..offsets[i] + BLOCK]);
                    }
                }
                _ => panic!("record with an unknown key: {record:?}"),
            }
        }
        assert!(tickets.is_empty());
        assert_eq!(
            swept_seen, sweep,
            "cancel_all's count and the ECANCELED records"
        );
        busy.finish();
    }
    assert_eq!(errno(owned.cancel_all()), libc::ENOENT);
    assert_eq!(errno(overlapped.cancel_all()), libc::ENOENT);
    assert_quiet(&port);
    eprintln!("{cancelled} cancelled, {swept} swept by cancel_all, {too_late} too late");
    assert!(
        cancelled > 0,
        "no cancellation ever won: the race was not exercised"
    );
}

#[test]
fn aio_cancel_racing_completion_reports_what_it_did_and_each_request_completes_once() {
    const BLOCK: usize = 512;
    const BLOCKS: usize = 64;
    const N: usize = 16;
    let iterations = if cfg!(debug_assertions) { 120 } else { 500 };
    let pool = threads_pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-aio-cancel-race");
    let data = pattern(53, BLOCK * BLOCKS);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let lio = Lio::new((0..N).map(|_| Entry::read(fd, 0, BLOCK, None)).collect());
    let mut rng = Rng::new(54);
    // Canceled, NotCanceled, AllDone.
    let mut outcomes = [0usize; 3];
    for iteration in 0..iterations {
        busy.start(&pool, rng.below(8 * MIB + 1) * rng.below(2));
        let offsets: Vec<usize> = (0..N).map(|_| rng.below(BLOCKS) * BLOCK).collect();
        for (i, &offset) in offsets.iter().enumerate() {
            lio.reset(i, fd, Opcode::Read, offset, &port);
        }
        // SAFETY: `lio` outlives every request: all records are dequeued below.
        unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
        let mut cancelled = [false; N];
        for _ in 0..N / 2 {
            let i = rng.below(N);
            let outcome = pool.aio_cancel(fd, Some(lio.ptr(i))).unwrap();
            match outcome {
                AioCancel::Canceled => {
                    outcomes[0] += 1;
                    assert!(!cancelled[i], "entry {i} cancelled twice");
                    cancelled[i] = true;
                    // The canceller completes the request before returning.
                    assert_eq!(aio_state(lio.cb(i)), (libc::ECANCELED, -1));
                }
                AioCancel::NotCanceled => outcomes[1] += 1,
                AioCancel::AllDone => outcomes[2] += 1,
            }
        }
        // Now and then cancel whatever is still queued on the descriptor.
        let sweep = (iteration % 8 == 7).then(|| pool.aio_cancel(fd, None).unwrap());
        let mut swept = 0;
        let mut seen = [false; N];
        for record in collect(&port, N) {
            let i = lio.index_of(&record);
            assert!(!seen[i], "two records for entry {i}");
            seen[i] = true;
            assert_eq!(record.key(), 0);
            let state = aio_state(lio.cb(i));
            if record.error() == libc::ECANCELED as u32 {
                assert_eq!(state, (libc::ECANCELED, -1), "entry {i}");
                assert!(lio.buf(i).iter().all(|&b| b == 0), "cancelled, yet read");
                if !cancelled[i] {
                    assert!(sweep.is_some(), "entry {i} cancelled by nobody");
                    swept += 1;
                }
            } else {
                assert!(!cancelled[i], "entry {i}: Canceled, yet it ran: {record:?}");
                assert_eq!(record.result().unwrap(), BLOCK as u32);
                assert_eq!(state, (0, BLOCK as isize), "entry {i}");
                assert!(lio.buf(i) == &data[offsets[i]..offsets[i] + BLOCK]);
            }
        }
        match sweep {
            Some(AioCancel::AllDone) => assert_eq!(swept, 0),
            Some(AioCancel::Canceled) => assert!(swept > 0),
            _ => {}
        }
        busy.finish();
    }
    assert_eq!(pool.aio_cancel(fd, None).unwrap(), AioCancel::AllDone);
    assert_eq!(
        pool.aio_cancel(fd, Some(lio.ptr(0))).unwrap(),
        AioCancel::AllDone
    );
    assert_quiet(&port);
    eprintln!("aio_cancel outcomes (Canceled, NotCanceled, AllDone): {outcomes:?}");
    assert!(
        outcomes[0] > 0,
        "no cancellation ever won: the race was not exercised"
    );
}

#[test]
fn aio_cancel_reports_canceled_for_queued_not_canceled_for_running_all_done_for_finished() {
    const BIG: usize = BUSY;
    let pool = threads_pool(1);
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-aio-cancel-outcomes");
    let data = pattern(55, 8 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let zfd = zero.as_raw_fd();
    let big = Lent::zeroed(BIG);
    big.fill(1);
    let mut observed_running = false;
    for attempt in 0..20 {
        // A marker with a record, then a long read, then two queued requests.
        let mut lio = Lio::new(vec![
            Entry::read(fd, 0, 16, Some(&port)),
            Entry::read(zfd, 0, 0, None),
            Entry::read(fd, 512, 512, Some(&port)),
            Entry::read(fd, 1024, 512, Some(&port)),
            Entry::read(zfd, 0, 4096, None),
        ]);
        lio.edit(1, |cb| {
            cb.aio_buf = big.buf();
            cb.aio_nbytes = BIG;
        });
        // SAFETY: `lio` and `big` outlive every request: records are dequeued and the
        // portless entries polled until done below.
        unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
        // Once the marker's record is in, the only thread moves on to the long read.
        assert_eq!(lio.index_of(&collect(&port, 1)[0]), 0);
        // Long enough for the thread to begin the read, short enough to find it running.
        // How long the read takes depends on the machine (on a 2-core AMD EPYC VM it was
        // done within 2 ms in every attempt), so the pause varies from 100 µs to 1.6 ms.
        thread::sleep(Duration::from_micros(100 << (attempt % 5)));
        let long = pool.aio_cancel(zfd, Some(lio.ptr(1))).unwrap();
        // The two queued reads on the data file: one by one, then the rest of the fd.
        let first = pool.aio_cancel(fd, Some(lio.ptr(2))).unwrap();
        let again = pool.aio_cancel(fd, Some(lio.ptr(2))).unwrap();
        let rest = pool.aio_cancel(fd, None).unwrap();
        let zero_rest = pool.aio_cancel(zfd, None).unwrap();
        let long_running = lio.cb(1).error() == libc::EINPROGRESS;
        // Wait for everything, then judge.
        let records = collect(&port, 2);
        let deadline = Instant::now() + BULK_PATIENCE;
        while (0..lio.len()).any(|i| lio.cb(i).error() == libc::EINPROGRESS) {
            assert!(Instant::now() < deadline, "a request never completed");
            thread::sleep(Duration::from_millis(1));
        }
        if long != AioCancel::NotCanceled || !long_running {
            eprintln!("attempt {attempt}: the long read was not caught running ({long:?})");
            continue;
        }
        observed_running = true;
        assert_eq!(first, AioCancel::Canceled, "a queued request");
        assert_eq!(
            again,
            AioCancel::AllDone,
            "the same request, already cancelled"
        );
        assert_eq!(rest, AioCancel::Canceled, "the other queued request");
        // The running read is not cancelled, the one queued behind it on the fd is.
        assert_eq!(zero_rest, AioCancel::NotCanceled);
        assert_eq!(aio_state(lio.cb(1)), (0, BIG as isize));
        assert_eq!(aio_state(lio.cb(2)), (libc::ECANCELED, -1));
        assert_eq!(aio_state(lio.cb(3)), (libc::ECANCELED, -1));
        assert_eq!(aio_state(lio.cb(4)), (libc::ECANCELED, -1));
        for record in records {
            let i = lio.index_of(&record);
            assert!(i == 2 || i == 3, "{record:?}");
            assert_eq!(
                (record.error(), record.bytes()),
                (libc::ECANCELED as u32, 0)
            );
        }
        assert_eq!(
            pool.aio_cancel(zfd, Some(lio.ptr(1))).unwrap(),
            AioCancel::AllDone
        );
        break;
    }
    assert!(observed_running, "the long read was never caught running");
    assert_quiet(&port);
}

#[test]
fn aio_cancel_says_all_done_only_once_aio_error_has_the_result() {
    let rounds = if cfg!(debug_assertions) { 200 } else { 1000 };
    let pool = pool(1);
    let mut busy = Busy::new();
    let scratch = TempDir::new("file-aio-all-done");
    let data = pattern(69, 4 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    // A request queued behind a busy read, cancelled by two threads at once: one wins
    // (AIO_CANCELED), the other finds it no longer queued and says AIO_ALLDONE, then reads
    // aio_error at once.
    let target = AtomicUsize::new(0);
    let armed = AtomicUsize::new(0);
    let arrived = AtomicUsize::new(0);
    let partner_done = AtomicUsize::new(0);
    let partner_result = std::sync::Mutex::new(None);
    let spin_until = |done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + BULK_PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "the other canceller never came");
            std::hint::spin_loop();
        }
    };
    let cancel = |round: usize| {
        arrived.fetch_add(1, Ordering::SeqCst);
        spin_until(&|| arrived.load(Ordering::SeqCst) >= 2 * round);
        let cb = target.load(Ordering::SeqCst) as *const Aiocb;
        let outcome = pool.aio_cancel(fd, Some(cb)).unwrap();
        // SAFETY: the aiocb lives until both cancellers are done and the request is done.
        (outcome, unsafe { &*cb }.error())
    };
    // (AIO_ALLDONE seen, of which with aio_error still EINPROGRESS)
    let (mut all_done, mut early) = (0, 0);
    thread::scope(|s| {
        s.spawn(|| {
            for round in 1..=rounds {
                spin_until(&|| armed.load(Ordering::SeqCst) >= round);
                let result = cancel(round);
                *partner_result.lock().unwrap() = Some(result);
                partner_done.store(round, Ordering::SeqCst);
            }
        });
        for round in 1..=rounds {
            busy.start(&pool, 32 * MIB);
            let lio = Lio::new(vec![Entry::read(fd, 0, 512, None)]);
            // SAFETY: `lio` outlives the request, which is polled until done below.
            unsafe { pool.lio_listio(LioMode::NoWait, &lio.list()) }.unwrap();
            target.store(lio.ptr(0) as usize, Ordering::SeqCst);
            armed.store(round, Ordering::SeqCst);
            let mine = cancel(round);
            spin_until(&|| partner_done.load(Ordering::SeqCst) >= round);
            let theirs = partner_result.lock().unwrap().take().unwrap();
            for (outcome, state) in [mine, theirs] {
                match outcome {
                    AioCancel::Canceled => assert_eq!(state, libc::ECANCELED),
                    AioCancel::AllDone => {
                        all_done += 1;
                        if state == libc::EINPROGRESS {
                            early += 1;
                        }
                    }
                    AioCancel::NotCanceled => {}
                }
            }
            let deadline = Instant::now() + BULK_PATIENCE;
            while lio.cb(0).error() == libc::EINPROGRESS {
                assert!(Instant::now() < deadline, "the request never completed");
                thread::yield_now();
            }
            busy.finish();
        }
    });
    eprintln!("AIO_ALLDONE {all_done} times, {early} of them while aio_error said EINPROGRESS");
    assert_eq!(
        early, 0,
        "aio_cancel said AIO_ALLDONE while aio_error still said EINPROGRESS"
    );
}

#[test]
fn cancelling_a_request_never_ends_a_dequeue_wait() {
    let pool = threads_pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-cancel-wait");
    let data = pattern(57, 4 * KIB);
    let file = File::associated(scratch.file("data", &data), &pool, &port, 9).unwrap();
    let mut cancelled_once = false;
    for attempt in 0..5 {
        let (tx, rx) = mpsc::channel();
        thread::scope(|s| {
            s.spawn(|| {
                let mut out = [Completion::default(); 8];
                let drained = port.get_many(&mut out, 3, Some(BULK_PATIENCE)).unwrap();
                tx.send((drained, out)).unwrap();
            });
            // Let the waiter park (not needed for correctness), then queue two requests
            // behind a busy read and cancel the first at once.
            thread::sleep(Duration::from_millis(30));
            busy.start(&pool, BUSY);
            let t1 = pending(file.read_at(vec![0; 512], 0));
            let t2 = pending(file.read_at(vec![0; 512], 512));
            let cancel = file.cancel(t1);
            // Only two records can come (the cancelled one and t2): the wait goes on.
            assert!(
                rx.recv_timeout(Duration::from_millis(150)).is_err(),
                "a dequeue wait for 3 records ended with at most 2 available"
            );
            port.post(Completion::new(77, 0, 0xfeed)).unwrap();
            let (drained, out) = rx
                .recv_timeout(BULK_PATIENCE)
                .expect("the waiter never returned");
            assert_eq!(drained.status, DrainStatus::Complete);
            assert_eq!(drained.count, 3);
            let records = &out[..3];
            let of = |ticket: Ticket| {
                *records
                    .iter()
                    .find(|r| r.key() == 9 && Ticket::of(r) == ticket)
                    .unwrap_or_else(|| panic!("no record for ticket {ticket}: {records:?}"))
            };
            let (r1, r2) = (of(t1), of(t2));
            assert!(records.iter().any(|r| r.key() == 77));
            assert_eq!(r2.result().unwrap(), 512);
            match cancel {
                Ok(()) => {
                    assert_eq!(r1.error(), libc::ECANCELED as u32);
                    cancelled_once = true;
                }
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
                    assert_eq!(r1.result().unwrap(), 512);
                    eprintln!("attempt {attempt}: the request ran before it was cancelled");
                }
            }
            file.finish(&r1).unwrap();
            file.finish(&r2).unwrap();
        });
        busy.finish();
        if cancelled_once {
            break;
        }
    }
    assert!(cancelled_once, "never cancelled a queued request");
    assert_quiet(&port);
}

#[test]
fn aio_cancel_never_ends_a_gmcs_wait_which_runs_to_its_timeout() {
    const WAIT: Duration = Duration::from_millis(300);
    let pool = threads_pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-aio-cancel-wait");
    let data = pattern(59, 4 * KIB);
    let file = scratch.file("data", &data);
    let fd = file.as_raw_fd();
    let mut cancelled_once = false;
    for attempt in 0..5 {
        let lio = Lio::new(vec![
            Entry::read(fd, 0, 512, Some(&port)),
            Entry::read(fd, 512, 512, Some(&port)),
        ]);
        let (drained, out, waited, cancel) = thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut out = [Completion::default(); 8];
                let start = Instant::now();
                let drained = port.get_many(&mut out, 3, Some(WAIT)).unwrap();
                (drained, out, start.elapsed())
            });
            // Let the waiter park, then queue both behind a busy read and cancel one.
            thread::sleep(Duration::from_millis(30));
            busy.start(&pool, BUSY);
            // SAFETY: `lio` outlives both requests: both records are dequeued below.
            unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &lio.list()) }.unwrap();
            let cancel = pool.aio_cancel(fd, Some(lio.ptr(0))).unwrap();
            let (drained, out, waited) = waiter.join().unwrap();
            (drained, out, waited, cancel)
        });
        // Never more than two records: the wait ran to its timeout.
        assert_eq!(drained.status, DrainStatus::TimedOut);
        assert!(waited >= WAIT, "the wait ended early, after {waited:?}");
        assert!(drained.count <= 2);
        let mut records = out[..drained.count].to_vec();
        records.extend(collect(&port, 2 - records.len()));
        let of = |i: usize| {
            *records
                .iter()
                .find(|r| lio.index_of(r) == i)
                .unwrap_or_else(|| panic!("no record for entry {i}: {records:?}"))
        };
        let (first, second) = (of(0), of(1));
        assert_eq!((first.key(), second.key()), (0, 0));
        assert_eq!(second.result().unwrap(), 512);
        for i in 0..2 {
            assert_eq!(
                aio_state(lio.cb(i)),
                (0, 0),
                "GMCS mode leaves the aiocb alone"
            );
        }
        busy.finish();
        match cancel {
            AioCancel::Canceled => {
                assert_eq!((first.error(), first.bytes()), (libc::ECANCELED as u32, 0));
                cancelled_once = true;
                break;
            }
            other => {
                assert_eq!(first.result().unwrap(), 512);
                eprintln!("attempt {attempt}: aio_cancel came too late ({other:?})");
            }
        }
    }
    assert!(cancelled_once, "never cancelled a queued request");
    assert_quiet(&port);
}

#[test]
fn dropping_a_file_cancels_its_queued_requests() {
    let pool = threads_pool(1);
    let mut busy = Busy::new();
    let port = Port::new().unwrap();
    let scratch = TempDir::new("file-drop-file");
    let data = pattern(67, 4 * KIB);
    let file = File::associated(scratch.file("data", &data), &pool, &port, 4).unwrap();
    busy.start(&pool, BUSY);
    let tickets: HashSet<Ticket> = (0..10)
        .map(|i| pending(file.read_at(vec![0; 256], i * 256)))
        .collect();
    drop(file);
    let all_queued = busy.running();
    let mut seen = HashSet::new();
    for record in collect(&port, tickets.len()) {
        let ticket = Ticket::of(&record);
        assert!(
            tickets.contains(&ticket) && seen.insert(ticket),
            "{record:?}"
        );
        assert_eq!(record.key(), 4);
        if all_queued {
            assert_eq!(record.error(), libc::ECANCELED as u32, "{record:?}");
        } else {
            assert!(record.error() == libc::ECANCELED as u32 || record.bytes() == 256);
        }
    }
    busy.finish();
    assert_quiet(&port);
}
