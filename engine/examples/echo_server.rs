//! A TCP echo server on completion ports, drained with the batched dequeue.
//!
//! ```text
//! cargo run --release -p iocp-engine --example echo_server -- [--addr 127.0.0.1:7000]
//!     [--workers 1] [--drive inline|thread] [--no-spin] [--seconds N]
//! ```
//!
//! Each worker thread owns one port and drains it with `get_many` (the batched dequeue is
//! an exclusive wait, so the AIX shape is one port per draining thread). Worker 0 also owns
//! the listener. It sends each accepted connection to a worker over a channel and posts
//! that worker a record to say so; the worker associates the connection with its own port.
//! From then on a connection lives on one thread: its state needs no lock.
//!
//! Each connection has one request in flight: a read of up to 16 KiB, then the write of
//! what it read (a send completes once every byte is out), then the next read. A request
//! that completes at once is handled on the spot, with no record. A request owns its buffer
//! while in flight, so a connection keeps two and lends one at a time: the read buffer
//! keeps its full length from read to read (shrinking it to what came and growing it back
//! would zero 16 KiB a message), and what a read brought is copied into the write buffer.

use clap::{Parser, ValueEnum};
use iocp::{Completion, Drive, OpResult, Port, Socket, Submitted};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// Key of the listener's records.
const LISTENER: u64 = u64::MAX;
/// Key of the record that tells a worker a connection waits in its channel.
const ARRIVED: u64 = u64::MAX - 1;
const READ_SIZE: usize = 16 * 1024;

#[derive(Parser)]
#[command(about = "A TCP echo server on completion ports")]
struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Worker threads, each with a port of its own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Who polls socket readiness: the waiting threads, or a thread per port.
    #[arg(long, value_enum, default_value_t = DriveArg::Inline)]
    drive: DriveArg,
    /// Waiters sleep as soon as they find nothing, instead of spinning up to 100 µs first:
    /// less CPU under load, more latency (`PortBuilder::spin_limit`).
    #[arg(long)]
    no_spin: bool,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    seconds: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DriveArg {
    Inline,
    Thread,
}

/// A worker's way in: its port, and the channel that carries it new connections.
#[derive(Clone)]
struct Inbox {
    port: Port,
    connections: Sender<OwnedFd>,
}

impl Inbox {
    fn send(&self, connection: OwnedFd) {
        // A worker that is gone drops the connection, which closes it.
        if self.connections.send(connection).is_ok() {
            let _ = self.port.post(Completion::new(ARRIVED, 0, 0));
        }
    }
}

/// A connection, what its one request in flight is, and the buffer that request does not
/// hold: the write buffer while a read is in flight, the read buffer while a write is.
struct Connection {
    socket: Socket,
    reading: bool,
    idle: Vec<u8>,
}

/// One worker: its port and the connections associated with it, by key.
struct Worker {
    port: Port,
    arrivals: Receiver<OwnedFd>,
    connections: HashMap<u64, Connection>,
    next_key: u64,
}

impl Worker {
    /// Associates the connections waiting in the channel and starts reading each.
    fn adopt(&mut self) {
        while let Ok(connection) = self.arrivals.try_recv() {
            let key = self.next_key;
            self.next_key += 1;
            match associate(connection, &self.port, key) {
                Ok(socket) => {
                    let connection = Connection {
                        socket,
                        reading: true,
                        idle: vec![0; READ_SIZE],
                    };
                    self.connections.insert(key, connection);
                    self.read(key, Vec::new());
                }
                Err(err) => eprintln!("echo_server: associate: {err}"),
            }
        }
    }

    /// Requests the next read into the connection's read buffer, keeping `freed` (the write
    /// buffer a send gave back; none yet before the first read) in its place, and handles a
    /// completion that happens at once.
    fn read(&mut self, key: u64, freed: Vec<u8>) {
        let Some(connection) = self.connections.get_mut(&key) else {
            return;
        };
        let buf = std::mem::replace(&mut connection.idle, freed);
        connection.reading = true;
        let submitted = connection.socket.recv(buf);
        match submitted {
            Ok(Submitted::Pending(_)) => {}
            Ok(Submitted::Done(done)) => self.on_read(key, done),
            Err(_) => self.close(key),
        }
    }

    /// Writes back what a read brought; end of file or an error closes the connection.
    fn on_read(&mut self, key: u64, done: OpResult) {
        let Ok(n @ 1..) = done.result else {
            return self.close(key);
        };
        let Some(connection) = self.connections.get_mut(&key) else {
            return;
        };
        let mut out = std::mem::replace(&mut connection.idle, done.buf);
        out.clear();
        out.extend_from_slice(&connection.idle[..n]);
        connection.reading = false;
        let submitted = connection.socket.send(out);
        match submitted {
            Ok(Submitted::Pending(_)) => {}
            Ok(Submitted::Done(done)) => self.on_write(key, done),
            Err(_) => self.close(key),
        }
    }

    /// A write is done (all of it): read again.
    fn on_write(&mut self, key: u64, done: OpResult) {
        match done.result {
            Ok(_) => self.read(key, done.buf),
            Err(_) => self.close(key),
        }
    }

    /// Dropping the socket closes it; a request still in flight is cancelled.
    fn close(&mut self, key: u64) {
        self.connections.remove(&key);
    }

    /// A connection's record: the end of its one request in flight.
    fn on_record(&mut self, record: &Completion) {
        let key = record.key();
        let Some(connection) = self.connections.get(&key) else {
            return;
        };
        let reading = connection.reading;
        let Ok(done) = connection.socket.finish(record) else {
            return;
        };
        if reading {
            self.on_read(key, done);
        } else {
            self.on_write(key, done);
        }
    }
}

/// The listener, with worker 0: accepts what is waiting and deals it out in turn.
struct Acceptor {
    listener: Socket,
    inboxes: Vec<Inbox>,
    next: usize,
}

impl Acceptor {
    /// Hands on the connection a record brought, then accepts until one would wait.
    fn on_record(&mut self, record: &Completion) {
        if let Ok(done) = self.listener.finish(record) {
            self.deal(done);
        }
        self.accept();
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok(Submitted::Done(done)) => self.deal(done),
                Ok(Submitted::Pending(_)) => return,
                Err(err) => return eprintln!("echo_server: accept: {err}"),
            }
        }
    }

    fn deal(&mut self, done: OpResult) {
        if let Some(connection) = done.accepted {
            self.inboxes[self.next % self.inboxes.len()].send(connection);
            self.next += 1;
        }
    }
}

/// A connection on the worker's port, with Nagle's algorithm off: an echo is small and the
/// client waits for it, and with Nagle on, an echo sent while the previous one is not yet
/// acknowledged waits for the client's delayed acknowledgement (up to 40 ms on Linux).
fn associate(connection: OwnedFd, port: &Port, key: u64) -> io::Result<Socket> {
    let stream = TcpStream::from(connection);
    stream.set_nodelay(true)?;
    Socket::associated(stream, port, key)
}

fn run_worker(
    mut worker: Worker,
    mut acceptor: Option<Acceptor>,
    deadline: Option<Instant>,
) -> io::Result<()> {
    if let Some(acceptor) = &mut acceptor {
        acceptor.accept();
    }
    let mut records = vec![Completion::default(); 256];
    loop {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let drained = worker.port.get_many(&mut records, 1, timeout)?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        for record in &records[..drained.count] {
            match (record.key(), &mut acceptor) {
                (ARRIVED, _) => worker.adopt(),
                (LISTENER, Some(acceptor)) => acceptor.on_record(record),
                _ => worker.on_record(record),
            }
        }
    }
}

fn main() -> io::Result<()> {
    let options = Options::parse();
    let drive = match options.drive {
        DriveArg::Inline => Drive::Inline,
        DriveArg::Thread => Drive::Thread,
    };
    let mut workers = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..options.workers {
        let mut port = Port::builder().drive(drive);
        if options.no_spin {
            port = port.spin_limit(Duration::ZERO);
        }
        let port = port.build()?;
        let (connections, arrivals) = mpsc::channel();
        inboxes.push(Inbox {
            port: port.clone(),
            connections,
        });
        workers.push(Worker {
            port,
            arrivals,
            connections: HashMap::new(),
            next_key: 0,
        });
    }
    let listener = TcpListener::bind(options.addr)?;
    println!("listening on {}", listener.local_addr()?);
    let mut acceptor = Some(Acceptor {
        listener: Socket::associated(listener, &workers[0].port, LISTENER)?,
        inboxes,
        next: 0,
    });
    let deadline = options
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let threads = workers
        .into_iter()
        .enumerate()
        .map(|(i, worker)| {
            let acceptor = acceptor.take();
            thread::Builder::new()
                .name(format!("echo-worker-{i}"))
                .spawn(move || run_worker(worker, acceptor, deadline))
        })
        .collect::<io::Result<Vec<_>>>()?;
    for thread in threads {
        thread.join().expect("worker panicked")?;
    }
    Ok(())
}
