//! The echo server on raw mio: the iocp server's shape without completion ports. One
//! event loop (`Poll`, epoll edge-triggered) per worker thread; worker 0 owns the listener
//! and hands accepted connections round-robin to the workers (a queue and a `Waker` per
//! worker; its own share it registers directly). On readiness a connection is read until
//! `WouldBlock` and everything read is written straight back; what the socket does not
//! take waits for writability, and reading pauses meanwhile, so the echo keeps its order.
//!
//! It stops when its stop flag is set and its `Waker` woken, or by itself at the deadline.

use super::{pin_set, Launch, Running, READ_SIZE};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

/// The listener's token.
const LISTENER: Token = Token(usize::MAX - 1);
/// The waker's token (stop, or connections handed over).
const WAKE: Token = Token(usize::MAX);
/// Upper bound on polls of one worker.
const MAX_TURNS: u64 = 1 << 40;
/// Upper bound on reads of one connection in one readiness event: far above what a
/// 64-byte echo ever needs, it only guarantees the loop ends.
const MAX_READS: usize = 1 << 20;

/// What the workers share: the stop flag, and each worker's inbox and waker.
struct Shared {
    stop: AtomicBool,
    inboxes: Vec<Mutex<Vec<TcpStream>>>,
    wakers: Vec<Waker>,
}

/// Starts the server: `launch.workers` threads, each with its own `Poll`.
pub(super) fn start(launch: Launch) -> Result<Running, String> {
    let Launch {
        listener,
        workers,
        cores,
        deadline,
    } = launch;
    let mio_error = |e: io::Error| format!("mio: {e}");
    let polls = (0..workers)
        .map(|_| Poll::new())
        .collect::<io::Result<Vec<Poll>>>()
        .map_err(mio_error)?;
    let wakers = polls
        .iter()
        .map(|poll| Waker::new(poll.registry(), WAKE))
        .collect::<io::Result<Vec<Waker>>>()
        .map_err(mio_error)?;
    listener.set_nonblocking(true).map_err(mio_error)?;
    let mut listener = TcpListener::from_std(listener);
    polls[0]
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(mio_error)?;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        inboxes: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
        wakers,
    });
    let mut listener = Some(listener);
    let mut threads = Vec::with_capacity(workers);
    for (i, poll) in polls.into_iter().enumerate() {
        let (worker_shared, listener, cores) =
            (Arc::clone(&shared), listener.take(), cores.clone());
        let spawned = thread::Builder::new()
            .name(format!("mio-echo-{i}"))
            .spawn(move || {
                pin_set(cores.as_deref());
                Worker {
                    index: i,
                    poll,
                    shared: worker_shared,
                    conns: Vec::new(),
                    free: Vec::new(),
                    next: 0,
                }
                .run(listener, deadline)
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                stop(&shared);
                return Err(format!("spawning a worker: {e}"));
            }
        }
    }
    Ok(Running {
        threads,
        stop: Box::new(move || stop(&shared)),
    })
}

/// Tells every worker to return.
fn stop(shared: &Shared) {
    // Release: pairs with the acquire load after the worker's wake event.
    shared.stop.store(true, Ordering::Release);
    for waker in &shared.wakers {
        // A failed wake means the eventfd counter is saturated: a wake is pending anyway.
        let _ = waker.wake();
    }
}

/// A connection: its stream, and the bytes read that the socket has not taken back yet.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// One worker thread.
struct Worker {
    index: usize,
    poll: Poll,
    shared: Arc<Shared>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// The worker the next accepted connection goes to (worker 0 only).
    next: usize,
}

impl Worker {
    fn run(mut self, listener: Option<TcpListener>, deadline: Instant) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0; READ_SIZE];
        for _ in 0..MAX_TURNS {
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            match self.poll.poll(&mut events, Some(deadline - now)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
            for event in events.iter() {
                match event.token() {
                    WAKE => {
                        // Acquire: pairs with the release store in `stop`.
                        if self.shared.stop.load(Ordering::Acquire) {
                            return Ok(());
                        }
                        let arrived = std::mem::take(
                            &mut *self.shared.inboxes[self.index]
                                .lock()
                                .map_err(|_| "an inbox lock is poisoned")?,
                        );
                        for stream in arrived {
                            self.adopt(stream);
                        }
                    }
                    LISTENER => {
                        if let Some(listener) = &listener {
                            self.accept(listener)?;
                        }
                    }
                    Token(key) => {
                        let keep = match self.conns.get_mut(key).and_then(Option::as_mut) {
                            Some(conn) => conn.ready(&mut buf, event.is_writable()),
                            None => true,
                        };
                        if !keep {
                            self.drop_conn(key);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Accepts until `WouldBlock` (edge-triggered), handing connections round-robin.
    fn accept(&mut self, listener: &TcpListener) -> Result<(), String> {
        for _ in 0..super::BACKLOG * 4 {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A failed accept (EMFILE, say) drops that connection; the client sees it.
                Err(_) => return Ok(()),
            };
            let workers = self.shared.wakers.len();
            let target = self.next % workers;
            self.next += 1;
            if target == self.index {
                self.adopt(stream);
            } else {
                self.shared.inboxes[target]
                    .lock()
                    .map_err(|_| "an inbox lock is poisoned")?
                    .push(stream);
                // A failed wake means one is pending anyway.
                let _ = self.shared.wakers[target].wake();
            }
        }
        Ok(())
    }

    fn adopt(&mut self, mut stream: TcpStream) {
        // As every server does: 64-byte echoes leave at once.
        if stream.set_nodelay(true).is_err() {
            return;
        }
        let key = self.free.pop().unwrap_or(self.conns.len());
        let registry: &Registry = self.poll.registry();
        if registry
            .register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.free.push(key);
            return;
        }
        let conn = Conn {
            stream,
            pending: Vec::new(),
        };
        if key == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[key] = Some(conn);
        }
        // Data may have arrived before the registration: an edge already past is not
        // reported again, so look now.
        let mut buf = [0; READ_SIZE];
        let keep = self.conns[key]
            .as_mut()
            .is_some_and(|conn| conn.ready(&mut buf, false));
        if !keep {
            self.drop_conn(key);
        }
    }

    fn drop_conn(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.get_mut(key).and_then(Option::take) {
            // Closing the descriptor would remove it from the poll set anyway.
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.free.push(key);
        }
    }
}

impl Conn {
    /// Handles readiness: flushes what is pending, then reads until `WouldBlock`, writing
    /// back each read. `false` when the connection is finished (EOF or error).
    fn ready(&mut self, buf: &mut [u8], writable: bool) -> bool {
        if !self.pending.is_empty() {
            if !writable {
                // Still waiting for room: the read resumes after the flush.
                return true;
            }
            match write_some(&mut self.stream, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                    if !self.pending.is_empty() {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        for _ in 0..MAX_READS {
            match self.stream.read(buf) {
                Ok(0) => return false,
                Ok(n) => match write_some(&mut self.stream, &buf[..n]) {
                    Ok(written) if written == n => {}
                    Ok(written) => {
                        // The socket is full: keep the rest, stop reading until writable.
                        self.pending.extend_from_slice(&buf[written..n]);
                        return true;
                    }
                    Err(_) => return false,
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// Writes as much of `data` as the socket takes now.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
