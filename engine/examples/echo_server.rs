//! A TCP echo server on completion ports, drained with the batched dequeue.
//!
//! ```text
//! cargo run --release -p iocp-engine --example echo_server -- [--addr 127.0.0.1:7000]
//!     [--workers 1] [--drive inline|thread] [--seconds N]
//! ```
//!
//! Each worker thread owns one port and drains it with `get_many` (the batched dequeue is
//! an exclusive wait, so the AIX shape is one port per draining thread). Worker 0 also owns
//! the listener; it hands each accepted connection to a worker's port by posting a record
//! that carries the descriptor, and that worker associates it with its own port. From then
//! on a connection lives on one thread: its state needs no lock.
//!
//! Every read is a request for up to 16 KiB; what arrives is written back, the remainder
//! of a short write is written again, then the next read is requested. A read or write that
//! completes at once is handled on the spot, with no record.

use iocp::{Completion, Drive, OpResult, Port, Socket, Submitted};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

/// Key of the listener's records.
const LISTENER: u64 = u64::MAX;
/// Key of a record handing a new connection (its descriptor in `overlapped`) to a worker.
const HANDOFF: u64 = u64::MAX - 1;
const READ_SIZE: usize = 16 * 1024;

struct Options {
    addr: SocketAddr,
    workers: usize,
    drive: Drive,
    seconds: Option<u64>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        addr: "127.0.0.1:7000".parse().expect("valid address"),
        workers: 1,
        drive: Drive::Inline,
        seconds: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => options.addr = value.parse().map_err(|e| format!("--addr: {e}"))?,
            "--workers" => {
                options.workers = value.parse().map_err(|e| format!("--workers: {e}"))?
            }
            "--seconds" => {
                options.seconds = Some(value.parse().map_err(|e| format!("--seconds: {e}"))?)
            }
            "--drive" => {
                options.drive = match value.as_str() {
                    "inline" => Drive::Inline,
                    "thread" => Drive::Thread,
                    other => return Err(format!("--drive: inline or thread, not {other}")),
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    Ok(options)
}

/// A connection's state between completions.
struct Conn {
    socket: Socket,
    /// The ticket of the read in flight, to tell its record from a write's.
    read_ticket: u64,
}

/// One worker: its port and the connections associated with it.
struct Worker {
    port: Port,
    conns: HashMap<u64, Conn>,
    next_key: u64,
}

impl Worker {
    fn adopt(&mut self, fd: RawFd) {
        // SAFETY: the accepting worker gave up ownership of `fd` when it posted it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let key = self.next_key;
        self.next_key += 1;
        match self.port.associate(fd, key) {
            Ok(socket) => {
                self.conns.insert(
                    key,
                    Conn {
                        socket,
                        read_ticket: 0,
                    },
                );
                self.read(key, vec![0; READ_SIZE]);
            }
            Err(err) => eprintln!("echo: associate: {err}"),
        }
    }

    /// Requests the next read, handling completions that happen at once.
    fn read(&mut self, key: u64, mut buf: Vec<u8>) {
        buf.resize(READ_SIZE, 0);
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        match conn.socket.recv(buf) {
            Ok(Submitted::Pending(ticket)) => conn.read_ticket = ticket,
            Ok(Submitted::Done(done)) => self.on_read(key, done),
            Err(_) => self.drop_conn(key),
        }
    }

    fn on_read(&mut self, key: u64, done: OpResult) {
        match done.result {
            Ok(0) | Err(_) => self.drop_conn(key),
            Ok(n) => {
                let mut buf = done.buf;
                buf.truncate(n);
                self.write(key, buf);
            }
        }
    }

    /// Writes `buf` back, handling completions that happen at once.
    fn write(&mut self, key: u64, buf: Vec<u8>) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        match conn.socket.send(buf) {
            Ok(Submitted::Pending(_)) => {}
            Ok(Submitted::Done(done)) => self.on_write(key, done),
            Err(_) => self.drop_conn(key),
        }
    }

    fn on_write(&mut self, key: u64, done: OpResult) {
        match done.result {
            Err(_) => self.drop_conn(key),
            Ok(n) if n < done.buf.len() => {
                let mut rest = done.buf;
                rest.drain(..n);
                self.write(key, rest);
            }
            Ok(_) => self.read(key, done.buf),
        }
    }

    fn drop_conn(&mut self, key: u64) {
        // Dropping the socket closes it; its pending requests are cancelled.
        self.conns.remove(&key);
    }

    fn on_record(&mut self, record: &Completion) {
        let key = record.key();
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        let is_read = record.overlapped() as u64 == conn.read_ticket;
        let Ok(done) = conn.socket.finish(record) else {
            return;
        };
        if is_read {
            self.on_read(key, done);
        } else {
            self.on_write(key, done);
        }
    }
}

fn accept(listener: &Socket, ports: &[Port], next: &mut usize) {
    loop {
        let done = match listener.accept() {
            Ok(Submitted::Done(done)) => done,
            Ok(Submitted::Pending(_)) => return,
            Err(err) => {
                eprintln!("echo: accept: {err}");
                return;
            }
        };
        hand_off(done, ports, next);
    }
}

fn hand_off(done: OpResult, ports: &[Port], next: &mut usize) {
    let Some(stream) = done.accepted else { return };
    let port = &ports[*next % ports.len()];
    *next += 1;
    let fd = stream.into_raw_fd();
    if port.post(Completion::new(HANDOFF, 0, fd as usize)).is_err() {
        // SAFETY: the post failed, so ownership of `fd` was not passed on.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

fn run_worker(
    port: Port,
    ports: Vec<Port>,
    listener: Option<Socket>,
    deadline: Option<Instant>,
) -> io::Result<()> {
    let mut worker = Worker {
        port: port.clone(),
        conns: HashMap::new(),
        next_key: 0,
    };
    let mut next = 0;
    if let Some(listener) = &listener {
        accept(listener, &ports, &mut next);
    }
    let mut records = vec![Completion::default(); 256];
    loop {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let drained = port.get_many(&mut records, 1, timeout)?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        for record in &records[..drained.count] {
            match record.key() {
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
}

fn main() -> io::Result<()> {
    let options = options().unwrap_or_else(|err| {
        eprintln!("echo_server: {err}");
        std::process::exit(2);
    });
    let ports = (0..options.workers)
        .map(|_| Port::builder().drive(options.drive).build())
        .collect::<io::Result<Vec<_>>>()?;
    let listener = TcpListener::bind(options.addr)?;
    println!("listening on {}", listener.local_addr()?);
    let listener = ports[0].associate(listener, LISTENER)?;
    let deadline = options
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut listener = Some(listener);
    let workers: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let (port, ports, listener) = (port.clone(), ports.clone(), listener.take());
            thread::Builder::new()
                .name(format!("echo-worker-{i}"))
                .spawn(move || run_worker(port, ports, listener, deadline))
        })
        .collect::<io::Result<_>>()?;
    for worker in workers {
        worker.join().expect("worker panicked")?;
    }
    Ok(())
}
