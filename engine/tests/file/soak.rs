//! A soak of owned, overlapped and listed requests from several threads: every completion
//! arrives exactly once.

use crate::common::files::TempDir;
use crate::common::pending;
use crate::common::rng::{pattern, Rng};
use crate::{aio_state, assert_quiet, pool, File};
use iocp::{Aiocb, Completion, LioMode, OpResult, Opcode, Overlapped, Port, Ticket};
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// An overlapped request of the soak, block first so that its address is the request's.
#[repr(C)]
struct SoakBlock {
    overlapped: Overlapped,
    block: usize,
    buf: [u8; SOAK_BLOCK],
}

/// An lio request of the soak, aiocb first so that its address is the request's.
#[repr(C)]
struct SoakCb {
    cb: Aiocb,
    block: usize,
    gmcs: bool,
    buf: [u8; SOAK_BLOCK],
}

const SOAK_BLOCK: usize = 256;
const SOAK_BLOCKS: usize = 1024;
/// Requests each submitter keeps in flight at most.
const SOAK_WINDOW: usize = 256;
const SOAK_OWNED_KEY: u64 = 1;
const SOAK_OVERLAPPED_KEY: u64 = 2;

/// Waits while `inflight` is at the window; the drainer lowers it.
fn soak_admit(inflight: &AtomicUsize, deadline: Instant) {
    while inflight.load(Ordering::Acquire) >= SOAK_WINDOW {
        assert!(
            Instant::now() < deadline,
            "the soak's records stopped coming"
        );
        thread::yield_now();
    }
    inflight.fetch_add(1, Ordering::AcqRel);
}

#[test]
fn soak_every_completion_arrives_exactly_once() {
    let per_kind = if cfg!(debug_assertions) {
        3_400
    } else {
        34_000
    };
    let pool = pool(2);
    // A small ring: most records go through the overflow queue.
    let port = Port::builder().capacity(64).build().unwrap();
    let scratch = TempDir::new("file-soak");
    // Writes put back the bytes already there, so every read sees `data` whatever the order.
    let data = pattern(81, SOAK_BLOCK * SOAK_BLOCKS);
    let owned =
        File::associated(scratch.file("data", &data), &pool, &port, SOAK_OWNED_KEY).unwrap();
    let blocked =
        File::associated(scratch.open("data"), &pool, &port, SOAK_OVERLAPPED_KEY).unwrap();
    let listed = scratch.open("data");
    let lfd = listed.as_raw_fd();
    let deadline = Instant::now() + Duration::from_secs(60);
    let inflight = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    let (meta_tx, meta_rx) = mpsc::channel::<(Ticket, usize, bool)>();
    let started = Instant::now();

    let (allocations, received) = thread::scope(|s| {
        // Owned buffers: reads and writes by ticket.
        let owned_submitter = s.spawn({
            let (owned, data, inflight) = (&owned, &data, &inflight[0]);
            move || {
                let mut rng = Rng::new(82);
                for i in 0..per_kind {
                    soak_admit(inflight, deadline);
                    let block = rng.below(SOAK_BLOCKS);
                    let offset = block * SOAK_BLOCK;
                    let write = i % 2 == 1;
                    let ticket = pending(if write {
                        owned.write_at(data[offset..offset + SOAK_BLOCK].to_vec(), offset as u64)
                    } else {
                        owned.read_at(vec![0; SOAK_BLOCK], offset as u64)
                    });
                    meta_tx.send((ticket, block, write)).unwrap();
                }
            }
        });
        // Overlapped blocks, each its own allocation, freed after the drain.
        let overlapped_submitter = s.spawn({
            let (blocked, data, inflight) = (&blocked, &data, &inflight[1]);
            move || {
                let mut rng = Rng::new(83);
                let mut requests = Vec::with_capacity(per_kind);
                for i in 0..per_kind {
                    soak_admit(inflight, deadline);
                    let block = rng.below(SOAK_BLOCKS);
                    let offset = block * SOAK_BLOCK;
                    let write = i % 2 == 1;
                    let mut request = Box::new(SoakBlock {
                        overlapped: Overlapped::new(),
                        block,
                        buf: [0; SOAK_BLOCK],
                    });
                    if write {
                        request
                            .buf
                            .copy_from_slice(&data[offset..offset + SOAK_BLOCK]);
                    }
                    request.overlapped.set_offset(offset as u64);
                    let raw = Box::into_raw(request);
                    requests.push(raw as usize);
                    // SAFETY: the request is freed only after the drain saw every record.
                    let buf = unsafe { std::ptr::addr_of_mut!((*raw).buf) }.cast::<u8>();
                    // SAFETY: `raw` is freed only after the drain; the block, first in the
                    // `repr(C)` request, has the request's address.
                    let ovl = unsafe { std::ptr::addr_of!((*raw).overlapped) };
                    // SAFETY: `buf` and `ovl` point into the boxed request, which is freed
                    // only after the drain has seen this request's record.
                    unsafe {
                        if write {
                            blocked.write_overlapped(buf, SOAK_BLOCK, ovl)
                        } else {
                            blocked.read_overlapped(buf, SOAK_BLOCK, ovl)
                        }
                    }
                    .unwrap();
                }
                requests
            }
        });
        // lio_listio, 16 at a time, NoWait and NoWaitGmcs in turn.
        let lio_submitter = s.spawn({
            let (pool, port, data, inflight) = (&*pool, &port, &data, &inflight[2]);
            move || {
                let mut rng = Rng::new(84);
                let mut requests = Vec::with_capacity(per_kind);
                let mut batch = Vec::with_capacity(16);
                for i in 0..per_kind {
                    soak_admit(inflight, deadline);
                    let block = rng.below(SOAK_BLOCKS);
                    let offset = block * SOAK_BLOCK;
                    let write = i % 2 == 1;
                    let gmcs = (i / 16) % 2 == 1;
                    let op = if write { Opcode::Write } else { Opcode::Read };
                    let raw = Box::into_raw(Box::new(SoakCb {
                        cb: Aiocb::new(-1, Opcode::Nop, 0, std::ptr::null_mut(), 0),
                        block,
                        gmcs,
                        buf: [0; SOAK_BLOCK],
                    }));
                    // SAFETY: freshly allocated, not yet shared with anyone.
                    let request = unsafe { &mut *raw };
                    if write {
                        request
                            .buf
                            .copy_from_slice(&data[offset..offset + SOAK_BLOCK]);
                    }
                    let buf = request.buf.as_mut_ptr();
                    request.cb =
                        Aiocb::new(lfd, op, offset as i64, buf, SOAK_BLOCK).with_port(port);
                    requests.push(raw as usize);
                    batch.push(raw.cast::<Aiocb>());
                    if batch.len() == 16 || i + 1 == per_kind {
                        let mode = if gmcs {
                            LioMode::NoWaitGmcs
                        } else {
                            LioMode::NoWait
                        };
                        // SAFETY: the requests are freed only after the drain saw every
                        // record; a batch is all one mode (16 divides the mode's run).
                        unsafe { pool.lio_listio(mode, &batch) }.unwrap();
                        batch.clear();
                    }
                }
                requests
            }
        });

        // The drainer: every record once, with the right bytes.
        let total = 3 * per_kind;
        let mut out = vec![Completion::default(); 256];
        let mut received = 0;
        let mut early: HashMap<Ticket, OpResult> = HashMap::new();
        let mut meta: HashMap<Ticket, (usize, bool)> = HashMap::new();
        let mut tickets_seen = HashSet::new();
        let mut addresses_seen = HashSet::new();
        let check_owned = |result: OpResult, block: usize, write: bool| {
            let at = block * SOAK_BLOCK;
            assert_eq!(result.result.unwrap(), SOAK_BLOCK, "write {write}");
            assert!(result.buf == data[at..at + SOAK_BLOCK], "block {block}");
        };
        while received < total {
            assert!(
                Instant::now() < deadline,
                "{received} of {total} records after the deadline"
            );
            let drained = port
                .get_many(&mut out, 1, Some(Duration::from_millis(100)))
                .unwrap();
            for record in &out[..drained.count] {
                received += 1;
                match record.key() {
                    SOAK_OWNED_KEY => {
                        inflight[0].fetch_sub(1, Ordering::AcqRel);
                        let ticket = Ticket::of(record);
                        assert!(tickets_seen.insert(ticket), "ticket {ticket} twice");
                        assert_eq!(record.result().unwrap(), SOAK_BLOCK as u32);
                        let result = owned.finish(record).unwrap();
                        for (t, block, write) in meta_rx.try_iter() {
                            match early.remove(&t) {
                                Some(result) => check_owned(result, block, write),
                                None => {
                                    meta.insert(t, (block, write));
                                }
                            }
                        }
                        match meta.remove(&ticket) {
                            Some((block, write)) => check_owned(result, block, write),
                            None => {
                                early.insert(ticket, result);
                            }
                        }
                    }
                    SOAK_OVERLAPPED_KEY => {
                        inflight[1].fetch_sub(1, Ordering::AcqRel);
                        let at = record.overlapped();
                        assert!(addresses_seen.insert(at), "block {at:#x} twice");
                        // SAFETY: a live request of the overlapped submitter (freed after
                        // the drain), done: its record is here.
                        let request = unsafe { &*(at as *const SoakBlock) };
                        assert_eq!(record.result().unwrap(), SOAK_BLOCK as u32);
                        assert_eq!(
                            request.overlapped.get_result(false).unwrap(),
                            SOAK_BLOCK as u32
                        );
                        let offset = request.block * SOAK_BLOCK;
                        assert!(request.buf[..] == data[offset..offset + SOAK_BLOCK]);
                    }
                    0 => {
                        inflight[2].fetch_sub(1, Ordering::AcqRel);
                        let at = record.overlapped();
                        assert!(addresses_seen.insert(at), "aiocb {at:#x} twice");
                        // SAFETY: a lio submitter's aiocb, first in its `repr(C)` `SoakCb`,
                        // freed after the drain; done: its record is here.
                        let request = unsafe { &*(at as *const SoakCb) };
                        assert_eq!(record.result().unwrap(), SOAK_BLOCK as u32);
                        let expected = if request.gmcs {
                            (0, 0)
                        } else {
                            (0, SOAK_BLOCK as isize)
                        };
                        assert_eq!(aio_state(&request.cb), expected, "gmcs {}", request.gmcs);
                        let offset = request.block * SOAK_BLOCK;
                        assert!(request.buf[..] == data[offset..offset + SOAK_BLOCK]);
                    }
                    _ => panic!("record with an unknown key: {record:?}"),
                }
            }
        }
        owned_submitter.join().unwrap();
        for (ticket, block, write) in meta_rx.try_iter() {
            match early.remove(&ticket) {
                Some(result) => check_owned(result, block, write),
                None => {
                    meta.insert(ticket, (block, write));
                }
            }
        }
        assert!(early.is_empty(), "records for tickets never issued");
        assert!(meta.is_empty(), "tickets whose record never came: {meta:?}");
        let allocations = (
            overlapped_submitter.join().unwrap(),
            lio_submitter.join().unwrap(),
        );
        (allocations, received)
    });
    assert_eq!(received, 3 * per_kind);
    assert_quiet(&port);
    for at in allocations.0 {
        // SAFETY: allocated by `Box::into_raw` above; its request is done.
        drop(unsafe { Box::from_raw(at as *mut SoakBlock) });
    }
    for at in allocations.1 {
        // SAFETY: made by `Box::into_raw` in the lio submitter and freed only here, once;
        // its record was drained, so the pool is done with it.
        drop(unsafe { Box::from_raw(at as *mut SoakCb) });
    }
    eprintln!("soak: {received} requests in {:?}", started.elapsed());
}
