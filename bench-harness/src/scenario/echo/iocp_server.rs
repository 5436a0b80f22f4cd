//! The iocp-rs echo server, built as `engine/examples/echo_server.rs` is: one port per
//! worker thread, drained with the batched `get_many`; worker 0 owns the listener and hands
//! each accepted connection to a worker (round-robin) by posting a record that carries the
//! descriptor; from then on a connection lives on one thread and its state needs no lock.
//!
//! A connection's cycle: a `recv` of up to [`READ_SIZE`] bytes; what arrives is copied into
//! the connection's write buffer and sent back (a send completes only once all of it is
//! out); then the next `recv`. Requests that complete at once are handled on the spot,
//! with no record. As in the example, the read buffer keeps its length between reads, so
//! no read re-zeroes it; unlike the example, connections live in a slab instead of a hash
//! map: the mio, tokio and io_uring servers get the same conveniences.
//!
//! With [`Reads::ZeroByte`] (the scale row's third iocp server) a connection waits with a
//! zero-byte `recv`, Winsock's idiom for many idle connections: it holds no read buffer,
//! and once the socket is readable the worker reads into the one buffer it lends to reads
//! that complete at once. A read with a buffer that has to wait after all keeps it, and
//! the worker makes itself another.
//!
//! It stops on a `STOP` record posted to every port, or by itself at the deadline.

use super::{pin_set, set_nodelay, Launch, Running, READ_SIZE};
use iocp::{Completion, Drive, OpResult, Port, Socket, Submitted, Ticket};
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

/// Key of the listener's records.
const LISTENER: u64 = u64::MAX;
/// Key of a record handing a new connection (its descriptor in `overlapped`) to a worker.
const HANDOFF: u64 = u64::MAX - 1;
/// Key of the record that ends a worker.
const STOP: u64 = u64::MAX - 2;
/// `overlapped` of a record a worker posts to itself to resume a connection later (tickets
/// start at 1, so it is never a request's).
const RESUME: usize = 0;
/// Records taken per `get_many`.
const BATCH: usize = 256;
/// Read/write cycles one connection may run back to back on requests that complete at
/// once before it yields to the others (it resumes through a posted record).
const MAX_IMMEDIATE: usize = 64;
/// Accepts that complete at once one turn may run before the worker takes its records
/// (the listener's queue may hold thousands of connections).
const MAX_ACCEPTS: usize = 4 * super::BACKLOG;
/// Upper bound on `get_many` calls of one worker.
const MAX_TURNS: u64 = 1 << 40;

/// How a connection waits for bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reads {
    /// With a `recv` of its own buffer in flight.
    Owned,
    /// With a zero-byte `recv` in flight, holding no buffer.
    ZeroByte,
}

/// Starts the server: `launch.workers` threads with a port each, driven as `drive` says,
/// their spin limited to `spin_limit` where it is given, their connections waiting for
/// bytes as `reads` says.
pub(super) fn start(
    launch: Launch,
    drive: Drive,
    spin_limit: Option<Duration>,
    reads: Reads,
) -> Result<Running, String> {
    let Launch {
        listener,
        workers,
        cores,
        deadline,
    } = launch;
    let ports = (0..workers)
        .map(|_| {
            let builder = Port::builder().drive(drive);
            match spin_limit {
                Some(limit) => builder.spin_limit(limit),
                None => builder,
            }
            .build()
        })
        .collect::<io::Result<Vec<Port>>>()
        .map_err(|e| format!("creating a port: {e}"))?;
    let listener = Socket::associated(listener, &ports[0], LISTENER)
        .map_err(|e| format!("associating the listener: {e}"))?;
    let mut listener = Some(listener);
    let mut threads = Vec::with_capacity(workers);
    for (i, port) in ports.iter().enumerate() {
        let (port, all, listener, cores) =
            (port.clone(), ports.clone(), listener.take(), cores.clone());
        let spawned = thread::Builder::new()
            .name(format!("iocp-echo-{i}"))
            .spawn(move || {
                // Before the first request: the reactor thread (thread drive) inherits it.
                pin_set(cores.as_deref());
                work(port, all, listener, reads, deadline)
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                stop(&ports);
                return Err(format!("spawning a worker: {e}"));
            }
        }
    }
    Ok(Running {
        threads,
        stop: Box::new(move || stop(&ports)),
    })
}

/// Tells every worker to return.
fn stop(ports: &[Port]) {
    for port in ports {
        // A port already gone has no worker left to stop.
        let _ = port.post(Completion::new(STOP, 0, 0));
    }
}

/// A connection's state between completions.
struct Conn {
    socket: Socket,
    /// The ticket of the read in flight, to tell its record from a write's.
    read_ticket: Option<Ticket>,
    /// The read buffer while no read is in flight (always [`READ_SIZE`] long); `None`
    /// throughout with [`Reads::ZeroByte`], whose reads borrow the worker's.
    read_buf: Option<Vec<u8>>,
    /// The write buffer while no write is in flight.
    write_buf: Option<Vec<u8>>,
}

/// One worker: its port and the connections associated with it, by key (slab index).
struct Worker {
    port: Port,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    reads: Reads,
    /// With [`Reads::ZeroByte`], the buffer lent to each read that completes at once
    /// ([`READ_SIZE`] long; empty while a read that had to wait keeps it).
    lent: Vec<u8>,
}

/// One worker thread's loop.
fn work(
    port: Port,
    ports: Vec<Port>,
    listener: Option<Socket>,
    reads: Reads,
    deadline: Instant,
) -> Result<(), String> {
    let mut worker = Worker {
        port: port.clone(),
        conns: Vec::new(),
        free: Vec::new(),
        reads,
        lent: Vec::new(),
    };
    let mut next = 0;
    if let Some(listener) = &listener {
        accept(listener, &ports, &mut next);
    }
    let mut records = vec![Completion::default(); BATCH];
    for _ in 0..MAX_TURNS {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        let drained = port
            .get_many(&mut records, 1, Some(deadline - now))
            .map_err(|e| format!("get_many: {e}"))?;
        for record in &records[..drained.count] {
            match record.key() {
                STOP => return Ok(()),
                HANDOFF => worker.adopt(record.overlapped() as RawFd),
                LISTENER => {
                    if let Some(listener) = &listener {
                        if let Ok(done) = listener.finish(record) {
                            hand_off(done, &ports, &mut next);
                        }
                        accept(listener, &ports, &mut next);
                    }
                }
                _ => worker.on_record(record),
            }
        }
    }
    Ok(())
}

/// Accepts until an accept has to wait (its completion comes back as a record), or up to
/// [`MAX_ACCEPTS`] at a time.
fn accept(listener: &Socket, ports: &[Port], next: &mut usize) {
    for _ in 0..MAX_ACCEPTS {
        match listener.accept() {
            Ok(Submitted::Done(done)) => hand_off(done, ports, next),
            Ok(Submitted::Pending(_)) => return,
            // A failed accept (EMFILE, say) drops that connection; the client sees it.
            Err(_) => return,
        }
    }
    // Still completing at once, and no accept pending: no record would ever come for the
    // listener, so post one (it finishes no request) to accept again after the records
    // already queued. Worker 0, the one with the listener, owns the first port.
    let _ = ports[0].post(Completion::new(LISTENER, 0, RESUME));
}

/// Posts an accepted connection's descriptor to the next worker's port.
fn hand_off(done: OpResult, ports: &[Port], next: &mut usize) {
    let Some(stream) = done.accepted else { return };
    let port = &ports[*next % ports.len()];
    *next += 1;
    let fd = stream.into_raw_fd();
    if port.post(Completion::new(HANDOFF, 0, fd as usize)).is_err() {
        // SAFETY: the post failed, so ownership of `fd` was not passed on: take it back.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

impl Worker {
    fn adopt(&mut self, fd: RawFd) {
        // SAFETY: the accepting worker gave up ownership of `fd` when it posted it, and
        // exactly one record carries it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_nodelay(&fd);
        let key = self.free.pop().unwrap_or(self.conns.len());
        let Ok(socket) = Socket::associated(fd, &self.port, key as u64) else {
            return;
        };
        let conn = Conn {
            socket,
            read_ticket: None,
            read_buf: (self.reads == Reads::Owned).then(|| vec![0; READ_SIZE]),
            // Grown by the first echo to the size of what comes back, and reused from
            // then on: a connection that never sends costs no write buffer.
            write_buf: Some(Vec::new()),
        };
        if key == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[key] = Some(conn);
        }
        self.read(key, false);
    }

    fn conn(&mut self, key: usize) -> Option<&mut Conn> {
        self.conns.get_mut(key).and_then(Option::as_mut)
    }

    fn drop_conn(&mut self, key: usize) {
        // Dropping the socket closes it; its pending requests complete as cancelled, and
        // their records are ignored (their tickets match nothing any more).
        if let Some(slot) = self.conns.get_mut(key) {
            if slot.take().is_some() {
                self.free.push(key);
            }
        }
    }

    /// Requests reads, echoing what completes at once, until a request has to wait.
    /// `readable`: a zero-byte read has just found the socket readable, so the next read
    /// is one with a buffer.
    fn read(&mut self, key: usize, mut readable: bool) {
        for _ in 0..MAX_IMMEDIATE {
            let zero = self.reads == Reads::ZeroByte && !readable;
            let Worker {
                conns, lent, reads, ..
            } = self;
            let Some(conn) = conns.get_mut(key).and_then(Option::as_mut) else {
                return;
            };
            let buf = match (*reads, conn.read_buf.take()) {
                (Reads::Owned, Some(buf)) => buf,
                // A read is in flight already.
                (Reads::Owned, None) => return,
                (Reads::ZeroByte, _) if zero => Vec::new(),
                (Reads::ZeroByte, _) if lent.is_empty() => vec![0; READ_SIZE],
                (Reads::ZeroByte, _) => std::mem::take(lent),
            };
            match conn.socket.recv(buf) {
                Ok(Submitted::Pending(ticket)) => {
                    conn.read_ticket = Some(ticket);
                    return;
                }
                // Readable now (bytes, or the end of the stream the next read finds).
                Ok(Submitted::Done(done)) if zero => match done.result {
                    Ok(_) => readable = true,
                    Err(_) => return self.drop_conn(key),
                },
                Ok(Submitted::Done(done)) => {
                    readable = false;
                    if !self.echo(key, done) {
                        return;
                    }
                }
                Err(_) => return self.drop_conn(key),
            }
        }
        // Still completing at once: come back to it after the records already queued.
        if self
            .port
            .post(Completion::new(key as u64, 0, RESUME))
            .is_err()
        {
            self.drop_conn(key);
        }
    }

    /// A read completed: sends the data back. `true` when the send completed at once (the
    /// caller reads next), `false` when it waits or the connection is gone.
    fn echo(&mut self, key: usize, done: OpResult) -> bool {
        let n = match done.result {
            Ok(0) | Err(_) => {
                self.drop_conn(key);
                return false;
            }
            Ok(n) => n,
        };
        let Worker {
            conns, lent, reads, ..
        } = self;
        let Some(conn) = conns.get_mut(key).and_then(Option::as_mut) else {
            return false;
        };
        let Some(mut out) = conn.write_buf.take() else {
            return false;
        };
        out.clear();
        out.extend_from_slice(&done.buf[..n]);
        match reads {
            Reads::Owned => conn.read_buf = Some(done.buf),
            // Back to the worker, unless it made itself another meanwhile.
            Reads::ZeroByte if lent.is_empty() => *lent = done.buf,
            Reads::ZeroByte => {}
        }
        match conn.socket.send(out) {
            Ok(Submitted::Pending(_)) => false,
            Ok(Submitted::Done(done)) => self.written(key, done),
            Err(_) => {
                self.drop_conn(key);
                false
            }
        }
    }

    /// A send completed: `true` when all of it went out.
    fn written(&mut self, key: usize, done: OpResult) -> bool {
        match done.result {
            Ok(n) if n == done.buf.len() => match self.conn(key) {
                Some(conn) => {
                    conn.write_buf = Some(done.buf);
                    true
                }
                None => false,
            },
            _ => {
                self.drop_conn(key);
                false
            }
        }
    }

    fn on_record(&mut self, record: &Completion) {
        let key = record.key() as usize;
        let Some(conn) = self.conn(key) else { return };
        if record.overlapped() == RESUME {
            return self.read(key, false);
        }
        let is_read = Some(Ticket::of(record)) == conn.read_ticket;
        let Ok(done) = conn.socket.finish(record) else {
            // A stale record of a closed connection whose key was reused.
            return;
        };
        // A zero-byte read's (a read with a buffer has a full-length one).
        if is_read && done.buf.is_empty() {
            return match done.result {
                Ok(_) => self.read(key, true),
                Err(_) => self.drop_conn(key),
            };
        }
        let read_next = if is_read {
            self.echo(key, done)
        } else {
            self.written(key, done)
        };
        if read_next {
            self.read(key, false);
        }
    }
}
