//! Files: owned, lio and overlapped requests, a provider, on one port and pool, with cancels
//! and files replaced while requests are pending.

use crate::common::errno;
use crate::common::files::unlinked_file;
use crate::common::rng::{mix, pattern, Rng};
use crate::common::timing::BULK_PATIENCE;
use crate::posts::{serve, Posts};
use crate::{
    add, check_record, close_port, ending, ending_name, is_canceled, join, lock, sleep_until,
    wait_for, CloseOnPanic, Req, Stats, CAPACITIES, CONCURRENCY,
};
use iocp::{
    AioCancel, Aiocb, Completion, File, FileDriver, FilePool, LioMode, Opcode, Overlapped, Port,
    ProviderSocket, Submitted, Ticket,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const BLOCK: usize = 512;
/// Blocks of the region that is only read (and checked against what was put there).
const STABLE_BLOCKS: usize = 256;
/// Blocks of the region written once each per round (zero until then).
const FRESH_BLOCKS: usize = 16 * 1024;
/// Requests in flight at most.
const FILE_WINDOW: usize = 256;
const FILE_BATCHES_MAX: usize = 1_000_000;
/// lio and overlapped requests a round makes at most. Each stays allocated until the round
/// ends, so that no address is reused while a second record for it could still come:
/// these bound that memory (about 600 bytes a request).
const LIO_MAX: usize = 16 * 1024;
const OVERLAPPED_MAX: usize = 8 * 1024;
/// lio records carry key 0 (AIX: `completion_key` is unused).
const LIO_KEY: u64 = 0;
const OVERLAPPED_KEY: u64 = 1;
const PROVIDER_KEY: u64 = 2;
const FIRST_FILE_KEY: u64 = 16;
/// Requests the provider accepts in a round at most.
const PROVIDER_MAX: usize = 32 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileOp {
    Read(usize),
    Write(usize),
    Sync,
}

impl FileOp {
    fn offset(self) -> u64 {
        let block = match self {
            FileOp::Read(b) => b,
            FileOp::Write(f) => STABLE_BLOCKS + f,
            FileOp::Sync => 0,
        };
        (block * BLOCK) as u64
    }
}

/// What a fresh block should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Untouched,
    Pending,
    Written,
    Cancelled,
    /// Its outcome went with its record (GMCS mode, or a dropped file, then a closed port).
    Unknown,
}

/// An lio request and its buffer, alive until the end of the round. The aiocb comes first,
/// so its address is the request's.
#[repr(C)]
struct LioReq {
    cb: Aiocb,
    op: FileOp,
    gmcs: bool,
    buf: [u8; BLOCK],
}

/// An overlapped request and its buffer, alive until the end of the round.
#[repr(C)]
struct OvlReq {
    ovl: Overlapped,
    op: FileOp,
    buf: [u8; BLOCK],
}

/// The file round's state; its serving threads and its submitter take turns at it. Every
/// submission happens under its lock, so a record cannot be handled before its request is
/// in the books.
struct Files<'a> {
    port: Port,
    stats: &'a Stats,
    rng: Rng,
    seed: u64,
    master: std::fs::File,
    lio_fd: std::fs::File,
    stable: Vec<u8>,
    blocks: Vec<Block>,
    next_fresh: usize,
    slots: Vec<(u64, File)>,
    /// Keys of files dropped this round.
    dropped: HashSet<u64>,
    next_key: u64,
    ovl_file: File,
    provider: ProviderSocket,
    /// Pending owned-buffer requests by ticket.
    open: HashMap<Ticket, (u64, FileOp)>,
    /// Pending lio requests: aiocb address to the `LioReq`.
    lio: HashMap<usize, usize>,
    /// Pending overlapped requests: block address to the `OvlReq`.
    ovl: HashMap<usize, usize>,
    /// Every lio and overlapped request of the round, freed once the pool is gone.
    lio_all: Vec<usize>,
    ovl_all: Vec<usize>,
    /// The provider's blocks (records carry their addresses, so they never move), the next
    /// unused one, started ones (by index) it has yet to complete, and completed ones whose
    /// record is due (by address: index, error, bytes).
    prov: Box<[Overlapped]>,
    prov_next: usize,
    prov_started: VecDeque<usize>,
    prov_open: HashMap<usize, (usize, u32, u32)>,
    /// Requests a cancel reached: `true` when it said it cancelled (then `ECANCELED` is due),
    /// `false` when it may have (a cancel of everything).
    cancels: HashMap<Req, bool>,
}

impl<'a> Files<'a> {
    fn new(port: Port, stats: &'a Stats, mut rng: Rng, pool: &FilePool) -> Files<'a> {
        let master = unlinked_file("soak");
        let seed = rng.next();
        let stable = pattern(seed, STABLE_BLOCKS * BLOCK);
        master.write_all_at(&stable, 0).unwrap();
        master
            .set_len(((STABLE_BLOCKS + FRESH_BLOCKS) * BLOCK) as u64)
            .unwrap();
        let ovl_file =
            File::associated(master.try_clone().unwrap(), pool, &port, OVERLAPPED_KEY).unwrap();
        let provider = ProviderSocket::new(7, 0).unwrap();
        provider.associate(&port, PROVIDER_KEY).unwrap();
        let mut files = Files {
            port,
            stats,
            rng,
            seed,
            lio_fd: master.try_clone().unwrap(),
            master,
            stable,
            blocks: vec![Block::Untouched; FRESH_BLOCKS],
            next_fresh: 0,
            slots: Vec::new(),
            dropped: HashSet::new(),
            next_key: FIRST_FILE_KEY,
            ovl_file,
            provider,
            open: HashMap::new(),
            lio: HashMap::new(),
            ovl: HashMap::new(),
            lio_all: Vec::new(),
            ovl_all: Vec::new(),
            prov: (0..PROVIDER_MAX).map(|_| Overlapped::new()).collect(),
            prov_next: 0,
            prov_started: VecDeque::new(),
            prov_open: HashMap::new(),
            cancels: HashMap::new(),
        };
        files.open_slot(pool);
        files.open_slot(pool);
        files
    }

    fn open_slot(&mut self, pool: &FilePool) {
        let key = self.next_key;
        self.next_key += 1;
        let fd = self.master.try_clone().unwrap();
        let file = File::associated(fd, pool, &self.port, key).unwrap();
        self.slots.push((key, file));
    }

    fn fresh(&self, f: usize) -> Vec<u8> {
        pattern(self.seed ^ mix(f as u64 + 1), BLOCK)
    }

    fn in_flight(&self) -> usize {
        self.open.len() + self.lio.len() + self.ovl.len() + self.prov_open.len()
    }

    /// A read of a stable block, a write of the next fresh block, or (if `sync`) rarely a sync.
    fn pick(&mut self, sync: bool) -> FileOp {
        if sync && self.rng.one_in(64) {
            return FileOp::Sync;
        }
        if self.rng.one_in(2) && self.next_fresh < FRESH_BLOCKS {
            let f = self.next_fresh;
            self.next_fresh += 1;
            self.blocks[f] = Block::Pending;
            return FileOp::Write(f);
        }
        FileOp::Read(self.rng.below(STABLE_BLOCKS))
    }

    /// One batch of requests; `false` (and nothing submitted) while the window is full.
    fn submit_some(&mut self, pool: &FilePool) -> bool {
        if self.in_flight() >= FILE_WINDOW {
            return false;
        }
        match self.rng.below(64) {
            0..=29 => self.owned_batch(),
            30..=43 => self.lio_batch(pool),
            44..=53 => self.overlapped_batch(),
            54..=61 => self.provider_step(),
            62 => self.cancel_many(pool),
            _ => self.replace_file(pool),
        }
        true
    }

    fn owned_batch(&mut self) {
        let slot = self.rng.below(self.slots.len());
        let n = 1 + self.rng.below(16);
        let mut tickets = Vec::with_capacity(n);
        for _ in 0..n {
            let op = self.pick(true);
            let (key, file) = &self.slots[slot];
            let submitted = match op {
                FileOp::Read(_) => file.read_at(vec![0; BLOCK], op.offset()),
                FileOp::Write(f) => file.write_at(self.fresh(f), op.offset()),
                FileOp::Sync => file.sync_data(),
            };
            let ticket = match submitted.unwrap_or_else(|err| panic!("{op:?} refused: {err}")) {
                Submitted::Pending(ticket) => ticket,
                Submitted::Done(done) => panic!("{op:?} completed at once: {done:?}"),
            };
            let fresh = self.open.insert(ticket, (*key, op)).is_none();
            assert!(fresh, "ticket {ticket} handed out twice");
            tickets.push(ticket);
        }
        add(&self.stats.file_ops, n as u64);
        for ticket in tickets {
            if self.rng.one_in(8) {
                let cancelled = self.slots[slot].1.cancel(ticket);
                self.note_cancel(Req::Ticket(ticket), cancelled);
            }
        }
    }

    fn note_cancel(&mut self, req: Req, cancelled: io::Result<()>) {
        add(&self.stats.cancel_calls, 1);
        match cancelled {
            Ok(()) => {
                self.cancels.insert(req, true);
            }
            // Running or done: a job is cancelled only while queued.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                add(&self.stats.cancel_misses, 1)
            }
            Err(err) => panic!("cancel {req:?}: {err}"),
        }
    }

    /// A new lio request: a read of a stable block or a write of the next fresh one, whose
    /// aiocb names the port unless it is for `LIO_WAIT` (`None` for `gmcs`).
    fn lio_request(&mut self, gmcs: Option<bool>) -> *mut LioReq {
        let op = self.pick(false);
        let mut req = Box::new(LioReq {
            cb: Aiocb::new(-1, Opcode::Read, 0, std::ptr::null_mut(), 0),
            op,
            gmcs: gmcs == Some(true),
            buf: [0; BLOCK],
        });
        let opcode = match op {
            FileOp::Write(f) => {
                req.buf.copy_from_slice(&self.fresh(f));
                Opcode::Write
            }
            _ => Opcode::Read,
        };
        let fd = self.lio_fd.as_raw_fd();
        let cb = Aiocb::new(fd, opcode, op.offset() as i64, req.buf.as_mut_ptr(), BLOCK);
        req.cb = match gmcs {
            Some(_) => cb.with_port(&self.port),
            None => cb,
        };
        // The buffer stays where it is: the box's contents do not move.
        Box::into_raw(req)
    }

    fn lio_batch(&mut self, pool: &FilePool) {
        if self.lio_all.len() >= LIO_MAX {
            return self.owned_batch();
        }
        let gmcs = self.rng.one_in(2);
        let mode = if gmcs {
            LioMode::NoWaitGmcs
        } else {
            LioMode::NoWait
        };
        let n = 1 + self.rng.below(16);
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            let raw = self.lio_request(Some(gmcs));
            // The aiocb is the request's first field.
            let cb = raw.cast::<Aiocb>();
            self.lio.insert(cb as usize, raw as usize);
            self.lio_all.push(raw as usize);
            list.push(cb);
        }
        // SAFETY: every aiocb and buffer stays allocated and untouched until the end of the
        // round, after the pool that runs them has been dropped (`free_requests`).
        unsafe { pool.lio_listio(mode, &list) }.unwrap_or_else(|err| panic!("lio_listio: {err}"));
        add(&self.stats.lio_ops, n as u64);
        for cb in list {
            if self.rng.one_in(8) {
                add(&self.stats.cancel_calls, 1);
                match pool.aio_cancel(self.lio_fd.as_raw_fd(), Some(cb.cast_const())) {
                    Ok(AioCancel::Canceled) => {
                        self.cancels.insert(Req::At(cb as usize), true);
                    }
                    Ok(AioCancel::NotCanceled | AioCancel::AllDone) => {
                        add(&self.stats.cancel_misses, 1)
                    }
                    Err(err) => panic!("aio_cancel: {err}"),
                }
            }
        }
    }

    fn overlapped_batch(&mut self) {
        if self.ovl_all.len() >= OVERLAPPED_MAX {
            return self.owned_batch();
        }
        for _ in 0..1 + self.rng.below(8) {
            let op = self.pick(false);
            let raw = Box::into_raw(Box::new(OvlReq {
                ovl: Overlapped::new(),
                op,
                buf: [0; BLOCK],
            }));
            // SAFETY: a fresh allocation that nothing else refers to yet.
            let req = unsafe { &mut *raw };
            req.ovl.set_offset(op.offset());
            if let FileOp::Write(f) = op {
                req.buf.copy_from_slice(&self.fresh(f));
            }
            let (buf, ovl) = (req.buf.as_mut_ptr(), std::ptr::addr_of!(req.ovl));
            self.ovl.insert(ovl as usize, raw as usize);
            self.ovl_all.push(raw as usize);
            // SAFETY: the block and the buffer stay allocated, the buffer untouched, until
            // the end of the round, after the pool that runs them has been dropped.
            let submitted = unsafe {
                match op {
                    FileOp::Write(_) => self.ovl_file.write_overlapped(buf, BLOCK, ovl),
                    _ => self.ovl_file.read_overlapped(buf, BLOCK, ovl),
                }
            };
            submitted.unwrap_or_else(|err| panic!("overlapped {op:?} refused: {err}"));
            add(&self.stats.overlapped_ops, 1);
            if self.rng.one_in(8) {
                let cancelled = self.ovl_file.cancel_overlapped(ovl);
                self.note_cancel(Req::At(ovl as usize), cancelled);
            }
        }
    }

    /// The provider completes some requests it accepted earlier and accepts new ones.
    fn provider_step(&mut self) {
        for _ in 0..self.rng.below(self.prov_started.len() + 1) {
            self.provider_complete_next()
                .expect("completing into an open port");
        }
        for _ in 0..1 + self.rng.below(8) {
            if self.prov_next == PROVIDER_MAX {
                break;
            }
            self.prov[self.prov_next].start();
            self.prov_started.push_back(self.prov_next);
            self.prov_next += 1;
        }
    }

    /// The provider completes its oldest accepted request (`WPUCompleteOverlappedRequest`).
    fn provider_complete_next(&mut self) -> io::Result<()> {
        let index = self
            .prov_started
            .pop_front()
            .expect("a request to complete");
        let (error, bytes) = if self.rng.one_in(4) {
            (libc::ECONNRESET as u32, 0)
        } else {
            (0, self.rng.below(1 << 20) as u32)
        };
        let block = &self.prov[index];
        self.prov_open
            .insert(block as *const Overlapped as usize, (index, error, bytes));
        add(&self.stats.overlapped_ops, 1);
        self.provider.complete(block, error, bytes)
    }

    fn check_provider_block(&self, index: usize, error: u32, bytes: u32) {
        let result = self.prov[index].get_result(false);
        match error {
            0 => assert_eq!(result.unwrap(), bytes),
            error => assert_eq!(errno(result), error as i32),
        }
    }

    /// A cancel of everything: a file's queue, the overlapped file's, or the lio descriptor's.
    fn cancel_many(&mut self, pool: &FilePool) {
        add(&self.stats.cancel_calls, 1);
        let (reached, cancelled): (Vec<Req>, io::Result<usize>) = match self.rng.below(3) {
            0 => {
                let (key, file) = &self.slots[self.rng.below(self.slots.len())];
                let reached = self.open.iter().filter(|(_, (k, _))| k == key);
                let reached = reached.map(|(ticket, _)| Req::Ticket(*ticket)).collect();
                (reached, file.cancel_all())
            }
            1 => {
                let reached = self.ovl.keys().map(|at| Req::At(*at)).collect();
                (reached, self.ovl_file.cancel_all())
            }
            _ => {
                let reached = self.lio.keys().map(|at| Req::At(*at)).collect();
                let cancelled = pool.aio_cancel(self.lio_fd.as_raw_fd(), None);
                match cancelled.unwrap_or_else(|err| panic!("aio_cancel: {err}")) {
                    AioCancel::Canceled => (reached, Ok(1)),
                    // Some were running: those still complete normally.
                    AioCancel::NotCanceled => (reached, Ok(0)),
                    AioCancel::AllDone => {
                        (reached, Err(io::Error::from_raw_os_error(libc::ENOENT)))
                    }
                }
            }
        };
        match cancelled {
            Ok(_) => {
                for req in reached {
                    self.cancels.entry(req).or_insert(false);
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                add(&self.stats.cancel_misses, 1)
            }
            Err(err) => panic!("cancel everything: {err}"),
        }
    }

    /// Drops a file, with whatever it has queued (which completes `ECANCELED`), and opens
    /// another in its place.
    fn replace_file(&mut self, pool: &FilePool) {
        let (key, file) = self.slots.swap_remove(self.rng.below(self.slots.len()));
        add(&self.stats.closes, 1);
        if self.open.values().any(|(k, _)| *k == key) {
            add(&self.stats.closes_with_pending, 1);
        }
        self.dropped.insert(key);
        drop(file);
        self.open_slot(pool);
    }

    /// A record from the port.
    fn on_record(&mut self, record: &Completion) {
        match record.key() {
            LIO_KEY => {
                let at = record.overlapped();
                let raw = self.lio.remove(&at).unwrap_or_else(|| {
                    panic!("{record:?}: no lio request pending there (unknown, or a second record)")
                });
                // SAFETY: freed only after the round; its record is here, so the pool is done
                // with it.
                let req = unsafe { &*(raw as *const LioReq) };
                if req.gmcs {
                    let aiocb = (req.cb.error(), req.cb.result().ok());
                    assert_eq!(
                        aiocb,
                        (0, Some(0)),
                        "LIO_NOWAIT_GMCS leaves the aiocb alone"
                    );
                } else {
                    let expected = if record.error() == 0 {
                        record.bytes() as isize
                    } else {
                        -1
                    };
                    let aiocb = (req.cb.error() as u32, req.cb.result().unwrap());
                    assert_eq!(aiocb, (record.error(), expected), "{record:?}: the aiocb");
                }
                let result = record.result().map(|n| n as usize);
                self.outcome(Req::At(at), req.op, result, Some(&req.buf), false);
            }
            OVERLAPPED_KEY => {
                let at = record.overlapped();
                let raw = self
                    .ovl
                    .remove(&at)
                    .unwrap_or_else(|| panic!("{record:?}: no overlapped request pending there"));
                // SAFETY: made by `overlapped_batch`, freed only after the round; its
                // record is here, so the pool is done with it.
                let req = unsafe { &*(raw as *const OvlReq) };
                let block = req.ovl.get_result(false).map_err(|err| err.raw_os_error());
                let carried = record.result().map_err(|err| err.raw_os_error());
                assert_eq!(block, carried, "{record:?}: the block disagrees");
                let result = record.result().map(|n| n as usize);
                self.outcome(Req::At(at), req.op, result, Some(&req.buf), false);
            }
            PROVIDER_KEY => {
                let (index, error, bytes) = self
                    .prov_open
                    .remove(&record.overlapped())
                    .unwrap_or_else(|| panic!("{record:?}: no provider request completed there"));
                let carried = (record.error(), record.bytes());
                assert_eq!(
                    carried,
                    (error, bytes),
                    "the record carries what was reported"
                );
                self.check_provider_block(index, error, bytes);
            }
            key => {
                let ticket = Ticket::of(record);
                let (owner, op) = self.open.remove(&ticket).unwrap_or_else(|| {
                    panic!("{record:?}: no request has this ticket pending (unknown, or a second record)")
                });
                assert_eq!(key, owner, "{record:?}: the key of another file");
                match self.slots.iter().find(|(k, _)| *k == key) {
                    Some((_, file)) => {
                        let done = file
                            .finish(record)
                            .unwrap_or_else(|err| panic!("{record:?}: finish: {err}"));
                        check_record(record, &done.result);
                        let req = Req::Ticket(ticket);
                        self.outcome(req, op, done.result, Some(&done.buf), false);
                    }
                    None => {
                        // Dropped with its file: the record is all there is.
                        assert!(self.dropped.contains(&key), "{record:?}: no such file");
                        let result = record.result().map(|n| n as usize);
                        self.outcome(Req::Ticket(ticket), op, result, None, true);
                    }
                }
            }
        }
    }

    /// Checks one request's outcome; `dropped` if its file was dropped (which cancels).
    fn outcome(
        &mut self,
        req: Req,
        op: FileOp,
        result: io::Result<usize>,
        buf: Option<&[u8]>,
        dropped: bool,
    ) {
        let cancel = self.cancels.remove(&req);
        if is_canceled(&result) {
            add(&self.stats.cancelled, 1);
            assert!(
                cancel.is_some() || dropped,
                "{req:?} {op:?}: ECANCELED, yet never cancelled"
            );
            if let FileOp::Write(f) = op {
                self.blocks[f] = Block::Cancelled;
            }
            return;
        }
        assert_ne!(
            cancel,
            Some(true),
            "{req:?} {op:?}: its cancel succeeded, yet it completed with {result:?}"
        );
        let n = result.unwrap_or_else(|err| panic!("{req:?} {op:?}: {err}"));
        match op {
            FileOp::Read(b) => {
                assert_eq!(n, BLOCK, "{req:?} {op:?}");
                if let Some(buf) = buf {
                    let expected = &self.stable[b * BLOCK..][..BLOCK];
                    assert!(
                        buf[..BLOCK] == *expected,
                        "{req:?}: stable block {b} read back wrong"
                    );
                }
            }
            FileOp::Write(f) => {
                assert_eq!(n, BLOCK, "{req:?} {op:?}");
                self.blocks[f] = Block::Written;
            }
            FileOp::Sync => assert_eq!(n, 0, "{req:?} {op:?}"),
        }
    }

    /// After the port was closed under the round and the pool dropped (so every request is
    /// done): finds the outcome of each request whose record the close discarded, once.
    fn abandon(&mut self) {
        while !self.prov_started.is_empty() {
            let completed = self.provider_complete_next();
            assert_eq!(
                errno(completed),
                libc::EBADF,
                "completing into a closed port"
            );
        }
        for (index, error, bytes) in std::mem::take(&mut self.prov_open).into_values() {
            add(&self.stats.discarded, 1);
            self.check_provider_block(index, error, bytes);
        }
        for (ticket, (key, op)) in std::mem::take(&mut self.open) {
            add(&self.stats.discarded, 1);
            let req = Req::Ticket(ticket);
            let Some((_, file)) = self.slots.iter().find(|(k, _)| *k == key) else {
                // Dropped with its file, and its record with the port: nothing is left.
                if let FileOp::Write(f) = op {
                    self.blocks[f] = Block::Unknown;
                }
                self.cancels.remove(&req);
                continue;
            };
            let forged = Completion::new(key, 0, ticket.get() as usize);
            let done = file.finish(&forged).unwrap_or_else(|err| {
                panic!("{op:?}: no outcome for a request whose record was discarded: {err}")
            });
            assert_eq!(
                errno(file.finish(&forged)),
                libc::EINVAL,
                "handed back twice"
            );
            self.outcome(req, op, done.result, Some(&done.buf), false);
        }
        for (at, raw) in std::mem::take(&mut self.lio) {
            add(&self.stats.discarded, 1);
            // SAFETY: freed only after the round; the pool is gone, so nothing runs it.
            let req = unsafe { &*(raw as *const LioReq) };
            let status = req.cb.error();
            if req.gmcs {
                // GMCS reports through the record alone, which the close discarded.
                assert_eq!(status, 0, "LIO_NOWAIT_GMCS leaves the aiocb alone");
                if let FileOp::Write(f) = req.op {
                    self.blocks[f] = Block::Unknown;
                }
                self.cancels.remove(&Req::At(at));
                continue;
            }
            assert_ne!(status, libc::EINPROGRESS, "a request outlived its pool");
            let result = match status {
                0 => Ok(req.cb.result().unwrap() as usize),
                errno => Err(io::Error::from_raw_os_error(errno)),
            };
            self.outcome(Req::At(at), req.op, result, Some(&req.buf), false);
        }
        for (at, raw) in std::mem::take(&mut self.ovl) {
            add(&self.stats.discarded, 1);
            // SAFETY: made by `overlapped_batch`, freed only after the round; the pool is
            // gone, so no request still writes it.
            let req = unsafe { &*(raw as *const OvlReq) };
            assert!(req.ovl.is_complete(), "a request outlived its pool");
            let result = req.ovl.get_result(false).map(|n| n as usize);
            self.outcome(Req::At(at), req.op, result, Some(&req.buf), false);
        }
    }

    /// Reads the whole file back: the stable region as it was put there, each fresh block
    /// as its write's outcome says.
    fn verify_file(&self) {
        let mut stable = vec![0; self.stable.len()];
        self.master.read_exact_at(&mut stable, 0).unwrap();
        assert!(stable == self.stable, "the stable region changed");
        let mut got = [0; BLOCK];
        for (f, state) in self.blocks.iter().enumerate() {
            let offset = FileOp::Write(f).offset();
            self.master.read_exact_at(&mut got, offset).unwrap();
            let zero = got.iter().all(|&b| b == 0);
            let written = || got[..] == self.fresh(f)[..];
            match state {
                Block::Untouched | Block::Cancelled => {
                    assert!(zero, "fresh block {f} ({state:?}) was written")
                }
                Block::Written => assert!(written(), "fresh block {f}: its write is not there"),
                Block::Unknown => assert!(zero || written(), "fresh block {f}: torn"),
                Block::Pending => panic!("fresh block {f}: its write had no outcome"),
            }
        }
    }

    /// Frees the lio and overlapped requests: only once the pool that ran them is gone.
    fn free_requests(&mut self) {
        for raw in self.lio_all.drain(..) {
            // SAFETY: made by `Box::into_raw` in `lio_batch`; the pool is gone, nothing runs it.
            drop(unsafe { Box::from_raw(raw as *mut LioReq) });
        }
        for raw in self.ovl_all.drain(..) {
            // SAFETY: made by `Box::into_raw` in `overlapped_batch`, freed only here; the
            // pool is gone, nothing runs it.
            drop(unsafe { Box::from_raw(raw as *mut OvlReq) });
        }
    }
}

/// An `LIO_WAIT` list, submitted without the round's lock: the call returns with every
/// request done, and posts no record.
fn lio_wait(files: &Mutex<Files>, pool: &FilePool) {
    let mut list = Vec::new();
    {
        let mut files = lock(files);
        if files.port.is_closed() {
            return;
        }
        for _ in 0..1 + files.rng.below(8) {
            list.push(files.lio_request(None));
        }
    }
    let cbs: Vec<*mut Aiocb> = list.iter().map(|raw| raw.cast::<Aiocb>()).collect();
    // SAFETY: `LIO_WAIT` returns once every request is done; the aiocbs (each the first
    // field of its `repr(C)` request) and buffers are freed only after that.
    unsafe { pool.lio_listio(LioMode::Wait, &cbs) }.unwrap_or_else(|err| panic!("LIO_WAIT: {err}"));
    let mut files = lock(files);
    add(&files.stats.lio_ops, list.len() as u64);
    for raw in list {
        // SAFETY: made by `Box::into_raw` above; its request is done.
        let req = unsafe { Box::from_raw(raw) };
        let status = (req.cb.error(), req.cb.result().unwrap());
        assert_eq!(status, (0, BLOCK as isize), "LIO_WAIT {:?}", req.op);
        // Nothing cancels these: only this thread could, and it waits here.
        files.outcome(Req::At(0), req.op, Ok(BLOCK), Some(&req.buf), false);
    }
}

/// The file round's submitter: batches until the deadline (or the port's close), then the
/// provider completes what it accepted.
fn submit_files(files: &Mutex<Files>, pool: &FilePool, deadline: Instant, mut rng: Rng) {
    for _ in 0..FILE_BATCHES_MAX {
        if Instant::now() >= deadline {
            break;
        }
        if rng.one_in(32) {
            lio_wait(files, pool);
            continue;
        }
        let mut files = lock(files);
        if files.port.is_closed() {
            return;
        }
        if !files.submit_some(pool) {
            drop(files);
            thread::sleep(Duration::from_micros(200));
        }
    }
    let mut files = lock(files);
    if !files.port.is_closed() {
        while !files.prov_started.is_empty() {
            files
                .provider_complete_next()
                .expect("completing into an open port");
        }
    }
}

pub(crate) fn file_round(seed: u64, budget: Duration, stats: &Stats) -> String {
    let mut rng = Rng::new(seed);
    let (capacity, concurrency, threads) = (
        rng.pick(&CAPACITIES),
        rng.pick(&CONCURRENCY),
        1 + rng.below(3),
    );
    let port = Port::builder()
        .capacity(capacity)
        .concurrency(concurrency)
        .build()
        .unwrap();
    add(&stats.ports, 1);
    // Each round picks its driver: the soak mixes io_uring and threads.
    let driver = rng.pick(&[FileDriver::Uring, FileDriver::Threads]);
    let pool = FilePool::builder()
        .driver(driver)
        .threads(threads)
        .build()
        .unwrap();
    let driver = match pool.driver() {
        FileDriver::Uring => "io_uring".to_string(),
        _ => format!("{threads} pool threads"),
    };
    let start = Instant::now();
    let deadline = start + budget;
    let abrupt = ending(&mut rng, start, budget);
    let hard = deadline + 3 * BULK_PATIENCE;
    let posts = Posts::new(1);
    let closed_at = OnceLock::new();
    let files = Mutex::new(Files::new(port.clone(), stats, rng.fork(), &pool));
    thread::scope(|s| {
        let _guard = CloseOnPanic {
            port: &port,
            closed_at: &closed_at,
        };
        let (port, posts, closed_at, files, pool) = (&port, &posts, &closed_at, &files, &pool);
        let producer = {
            let rng = rng.fork();
            s.spawn(move || posts.produce(0, port, rng, deadline, stats))
        };
        let submitter = {
            let rng = rng.fork();
            s.spawn(move || submit_files(files, pool, deadline, rng))
        };
        let servers: Vec<_> = (0..2)
            .map(|_| {
                let rng = rng.fork();
                s.spawn(move || {
                    serve(port, posts, rng, stats, closed_at, hard, |record| {
                        lock(files).on_record(record)
                    })
                })
            })
            .collect();
        match abrupt {
            Some(at) => {
                sleep_until(at);
                {
                    // Under the lock: no lio list names the port's handle number after its
                    // close (the number may already name another round's port).
                    let _files = lock(files);
                    close_port(port, closed_at, stats);
                }
                join(producer);
                join(submitter);
                servers.into_iter().for_each(join);
            }
            None => {
                join(submitter);
                if rng.one_in(2) {
                    let mut files = lock(files);
                    for _ in 0..3 {
                        files.cancel_many(pool);
                    }
                }
                join(producer);
                let drained = wait_for(BULK_PATIENCE, || {
                    assert!(!port.is_closed(), "another thread of the round failed");
                    lock(files).in_flight() == 0 && posts.unseen() == 0
                });
                let files = lock(files);
                assert!(
                    drained,
                    "file round (capacity {capacity}, concurrency {concurrency}): {} requests \
                     and {} posted records never came",
                    files.in_flight(),
                    posts.unseen()
                );
                assert_eq!(port.queued(), 0, "records beyond every request and post");
                close_port(port, closed_at, stats);
                drop(files);
                servers.into_iter().for_each(join);
            }
        }
    });
    // Dropping the pool runs what is still queued and joins its threads: every request is
    // done after this.
    drop(pool);
    let mut files = files
        .into_inner()
        .unwrap_or_else(|_| panic!("a thread of the round failed"));
    if abrupt.is_some() {
        files.abandon();
        add(&stats.posts_discarded, posts.unseen());
    }
    files.verify_file();
    let (_, file) = &files.slots[0];
    let late = file.read_at(vec![0; BLOCK], 0);
    assert_eq!(
        errno(late),
        libc::EAGAIN,
        "a request after the pool is gone"
    );
    files.provider.close().unwrap();
    let late = files.provider.complete(&Overlapped::new(), 0, 0);
    assert_eq!(
        errno(late),
        libc::EBADF,
        "a completion after the handle closed"
    );
    files.free_requests();
    let end = ending_name(abrupt);
    format!("files capacity {capacity} concurrency {concurrency} {driver} {end}")
}
