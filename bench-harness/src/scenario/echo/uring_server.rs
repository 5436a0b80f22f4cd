//! The echo server on io_uring: a plain completion-based loop per worker thread, each with
//! its own ring. An `Accept` is kept posted on the shared listener (the kernel gives each
//! connection to one of the waiting accepts); each connection alternates a `Recv` of up to
//! [`READ_SIZE`] bytes with `Send`s of what arrived, resubmitting the rest of a short send.
//! Every SQE of a turn goes in with the one `io_uring_enter` that also waits for the next
//! completion. No registered buffers, no multishot, no SQ polling: the simple form, as
//! the other servers are their simple form too.
//!
//! It stops when its eventfd is written (a `Read` of it is kept posted), or by itself when
//! a `Timeout` set at the deadline fires. Before it frees the buffers it cancels every
//! request and waits for them all, since the kernel may write into a buffer until then.

use super::{pin_set, set_nodelay, Launch, Running, READ_SIZE};
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Submission queue entries per ring (the completion queue is twice that): more than the
/// requests one worker has in flight (one per connection, plus three).
const ENTRIES: u32 = 1024;
/// Upper bound on `io_uring_enter` calls of one worker.
const MAX_TURNS: u64 = 1 << 40;
/// How long the shutdown waits for cancelled requests before it gives up on freeing.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// What a request was, in the low bits of its `user_data`; the connection's slot above.
const OP_BITS: u32 = 3;
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const STOP: u64 = 3;
const DEADLINE: u64 = 4;
const CANCEL: u64 = 5;
const GUARD: u64 = 6;

/// Whether io_uring can run this server here: a ring, and the opcodes it uses. Returns the
/// reason to print when it cannot.
pub(super) fn probe() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("IORING_REGISTER_PROBE: {e}"))?;
    let needed = [
        ("ACCEPT", opcode::Accept::CODE),
        ("RECV", opcode::Recv::CODE),
        ("SEND", opcode::Send::CODE),
        ("READ", opcode::Read::CODE),
        ("TIMEOUT", opcode::Timeout::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ];
    match needed.iter().find(|(_, code)| !probe.is_supported(*code)) {
        Some((name, _)) => Err(format!("the kernel lacks IORING_OP_{name}")),
        None => Ok(()),
    }
}

/// Starts the server: `launch.workers` threads with a ring each, accepting on one listener.
pub(super) fn start(launch: Launch) -> Result<Running, String> {
    let Launch {
        listener,
        workers,
        cores,
        deadline,
    } = launch;
    // The listener stays blocking: io_uring waits for it (and for the connections) itself.
    let listener = Arc::new(listener);
    let mut stops = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            wake_all(&stops);
            return Err(format!("eventfd: {}", io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let stop = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        stops.push(Arc::clone(&stop));
        let (listener, cores) = (Arc::clone(&listener), cores.clone());
        let spawned = thread::Builder::new()
            .name(format!("uring-echo-{i}"))
            .spawn(move || {
                pin_set(cores.as_deref());
                Worker::new(listener.as_raw_fd(), stop.as_raw_fd())?.run(deadline)
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                wake_all(&stops);
                return Err(format!("spawning a worker: {e}"));
            }
        }
    }
    Ok(Running {
        threads,
        stop: Box::new(move || {
            // Keeps the listener open until the server is stopped for good.
            let _listener = &listener;
            wake_all(&stops);
        }),
    })
}

/// Writes every stop eventfd.
fn wake_all(stops: &[Arc<OwnedFd>]) {
    for stop in stops {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. A failure means the
        // counter is saturated, so the worker has a wake pending anyway.
        unsafe {
            libc::write(stop.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }
}

/// A connection: its socket, its buffer, and how much of the buffer is being sent back.
struct Conn {
    fd: OwnedFd,
    buf: Box<[u8]>,
    len: usize,
    sent: usize,
    /// A request naming `buf` is in flight (its `user_data`).
    busy: Option<u64>,
}

/// One worker's ring and connections.
struct Worker {
    ring: IoUring,
    listener: RawFd,
    stop: RawFd,
    /// Where the stop eventfd's `Read` writes (boxed: its address is in a request).
    stop_buf: Box<u64>,
    stop_pending: bool,
    accept_pending: bool,
    deadline_pending: bool,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Completions of a turn, copied out before they are handled.
    reaped: Vec<(u64, i32)>,
}

fn user_data(slot: usize, op: u64) -> u64 {
    ((slot as u64) << OP_BITS) | op
}

impl Worker {
    fn new(listener: RawFd, stop: RawFd) -> Result<Worker, String> {
        let ring = IoUring::new(ENTRIES).map_err(|e| format!("io_uring_setup: {e}"))?;
        Ok(Worker {
            ring,
            listener,
            stop,
            stop_buf: Box::new(0),
            stop_pending: false,
            accept_pending: false,
            deadline_pending: false,
            conns: Vec::new(),
            free: Vec::new(),
            reaped: Vec::with_capacity(ENTRIES as usize * 2),
        })
    }

    /// Queues one SQE, submitting first if the queue is full.
    ///
    /// # Safety
    ///
    /// Whatever memory and descriptors `entry` names must stay valid until its completion.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<(), String> {
        for _ in 0..2 {
            // SAFETY: the caller keeps what the entry names valid until it completes.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring
                .submit()
                .map_err(|e| format!("io_uring_enter: {e}"))?;
        }
        Err("the submission queue stays full".into())
    }

    fn post_accept(&mut self) -> Result<(), String> {
        let entry = opcode::Accept::new(
            types::Fd(self.listener),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ACCEPT);
        // SAFETY: no memory is named; the listener outlives the worker (the `Running`
        // holds it until every worker has returned).
        unsafe { self.push(&entry) }?;
        self.accept_pending = true;
        Ok(())
    }

    fn post_stop_read(&mut self) -> Result<(), String> {
        let buf: *mut u64 = &mut *self.stop_buf;
        let entry = opcode::Read::new(types::Fd(self.stop), buf.cast(), 8)
            .build()
            .user_data(STOP);
        // SAFETY: `stop_buf` is boxed and freed only after this request completes (see
        // `shutdown`); the eventfd outlives the worker.
        unsafe { self.push(&entry) }?;
        self.stop_pending = true;
        Ok(())
    }

    fn post_recv(&mut self, slot: usize) -> Result<(), String> {
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        let ud = user_data(slot, RECV);
        let entry = opcode::Recv::new(
            types::Fd(conn.fd.as_raw_fd()),
            conn.buf.as_mut_ptr(),
            conn.buf.len() as u32,
        )
        .build()
        .user_data(ud);
        conn.busy = Some(ud);
        // SAFETY: the boxed buffer and the descriptor stay with the connection, which is
        // dropped only when no request names them (`busy` is `None`), or after shutdown
        // has waited for every request.
        unsafe { self.push(&entry) }
    }

    fn post_send(&mut self, slot: usize) -> Result<(), String> {
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        let ud = user_data(slot, SEND);
        let rest = &conn.buf[conn.sent..conn.len];
        let entry = opcode::Send::new(
            types::Fd(conn.fd.as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .build()
        .user_data(ud);
        conn.busy = Some(ud);
        // SAFETY: `rest` is in the connection's boxed buffer, which with the descriptor is
        // dropped only when `busy` is `None`, or after shutdown waited for every request.
        unsafe { self.push(&entry) }
    }

    fn run(mut self, deadline: Instant) -> Result<(), String> {
        self.post_accept()?;
        self.post_stop_read()?;
        let left = deadline.saturating_duration_since(Instant::now());
        let timespec = types::Timespec::new()
            .sec(left.as_secs())
            .nsec(left.subsec_nanos());
        let entry = opcode::Timeout::new(&timespec).build().user_data(DEADLINE);
        // SAFETY: the kernel copies the timespec when it takes the SQE, which the push or
        // the next submit does while `timespec` lives.
        unsafe { self.push(&entry) }?;
        self.deadline_pending = true;
        let served = self.serve();
        let shut = self.shutdown();
        served.and(shut)
    }

    /// The event loop, until the stop eventfd or the deadline fires.
    fn serve(&mut self) -> Result<(), String> {
        for _ in 0..MAX_TURNS {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The completion queue is full: reaping below makes room.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(format!("io_uring_enter: {e}")),
            }
            self.reap();
            let mut stopping = false;
            for i in 0..self.reaped.len() {
                let (ud, res) = self.reaped[i];
                if stopping {
                    // The rest of the turn's completions: only note what is back.
                    self.account(ud, res);
                    continue;
                }
                let slot = (ud >> OP_BITS) as usize;
                match ud & ((1 << OP_BITS) - 1) {
                    ACCEPT => {
                        self.accept_pending = false;
                        if res >= 0 {
                            // SAFETY: a successful accept's result is a new descriptor.
                            let fd = unsafe { OwnedFd::from_raw_fd(res) };
                            self.adopt(fd)?;
                        }
                        // A failed accept (EMFILE, say) drops that connection only.
                        self.post_accept()?;
                    }
                    RECV => {
                        self.idle(slot);
                        if res <= 0 {
                            self.close(slot);
                        } else if let Some(conn) = self.conns[slot].as_mut() {
                            conn.len = res as usize;
                            conn.sent = 0;
                            self.post_send(slot)?;
                        }
                    }
                    SEND => {
                        self.idle(slot);
                        let Some(conn) = self.conns[slot].as_mut() else {
                            continue;
                        };
                        if res < 0 {
                            self.close(slot);
                            continue;
                        }
                        conn.sent += res as usize;
                        if conn.sent < conn.len {
                            self.post_send(slot)?;
                        } else {
                            self.post_recv(slot)?;
                        }
                    }
                    STOP | DEADLINE => {
                        self.account(ud, res);
                        stopping = true;
                    }
                    _ => {}
                }
            }
            if stopping {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Notes that the request `ud` is back, without acting on it (while stopping). An
    /// accepted connection is closed at once. Returns whether it was the shutdown guard.
    fn account(&mut self, ud: u64, res: i32) -> bool {
        let slot = (ud >> OP_BITS) as usize;
        match ud & ((1 << OP_BITS) - 1) {
            RECV | SEND => self.idle(slot),
            ACCEPT => {
                self.accept_pending = false;
                if res >= 0 {
                    // SAFETY: a successful accept's result is a new descriptor; dropping
                    // it closes the connection.
                    drop(unsafe { OwnedFd::from_raw_fd(res) });
                }
            }
            STOP => self.stop_pending = false,
            DEADLINE => self.deadline_pending = false,
            GUARD => return true,
            _ => {}
        }
        false
    }

    /// Copies the completions out of the ring.
    fn reap(&mut self) {
        self.reaped.clear();
        self.reaped.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result())),
        );
    }

    fn adopt(&mut self, fd: OwnedFd) -> Result<(), String> {
        // As every server does: 64-byte echoes leave at once.
        set_nodelay(&fd);
        let slot = self.free.pop().unwrap_or(self.conns.len());
        let conn = Conn {
            fd,
            buf: vec![0; READ_SIZE].into_boxed_slice(),
            len: 0,
            sent: 0,
            busy: None,
        };
        if slot == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[slot] = Some(conn);
        }
        self.post_recv(slot)
    }

    /// The connection's request completed: no request names its buffer now.
    fn idle(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            conn.busy = None;
        }
    }

    /// Closes an idle connection.
    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if conn.as_ref().is_some_and(|c| c.busy.is_none()) {
                *conn = None;
                self.free.push(slot);
            }
        }
    }

    /// Cancels every request still in flight and waits (bounded) for them all, so that no
    /// buffer is freed while the kernel may still write into it. If they do not all come
    /// back in time the buffers are leaked rather than freed.
    fn shutdown(&mut self) -> Result<(), String> {
        let mut targets: Vec<u64> = self.conns.iter().flatten().filter_map(|c| c.busy).collect();
        for (pending, ud) in [
            (self.accept_pending, ACCEPT),
            (self.stop_pending, STOP),
            (self.deadline_pending, DEADLINE),
        ] {
            if pending {
                targets.push(ud);
            }
        }
        let mut cancels = 0;
        for target in targets {
            let entry = opcode::AsyncCancel::new(target).build().user_data(CANCEL);
            // SAFETY: a cancel names no memory.
            unsafe { self.push(&entry) }?;
            cancels += 1;
        }
        let timespec = types::Timespec::new()
            .sec(CANCEL_WAIT.as_secs())
            .nsec(CANCEL_WAIT.subsec_nanos());
        let guard = opcode::Timeout::new(&timespec).build().user_data(GUARD);
        // SAFETY: the kernel copies the timespec when it takes the SQE, below.
        unsafe { self.push(&guard) }?;
        let mut guard_fired = false;
        let bound = cancels + self.conns.len() + 8;
        for _ in 0..bound * 4 {
            if self.in_flight() == 0 || guard_fired {
                break;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    self.leak();
                    return Err(format!("io_uring_enter while stopping: {e}"));
                }
            }
            self.reap();
            for i in 0..self.reaped.len() {
                let (ud, res) = self.reaped[i];
                guard_fired |= self.account(ud, res);
            }
        }
        if self.in_flight() > 0 {
            self.leak();
            return Err("io_uring requests outlived their cancellation".into());
        }
        Ok(())
    }

    /// Requests that still name this worker's memory.
    fn in_flight(&self) -> usize {
        let conns = self.conns.iter().flatten().filter(|c| c.busy.is_some());
        conns.count() + usize::from(self.stop_pending)
    }

    /// Gives up the memory requests may still name, rather than free it under them.
    fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.conns));
        std::mem::forget(std::mem::replace(&mut self.stop_buf, Box::new(0)));
    }
}
