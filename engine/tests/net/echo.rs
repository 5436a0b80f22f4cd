//! Echo over many connections on one port, over TCP and over a Unix listener.

use crate::common::files::TempDir;
use crate::common::pending;
use crate::common::ports::{assert_no_record, each_drive, port};
use crate::common::rng::pattern;
use crate::common::timing::PATIENCE;
use crate::{finish_next, first_difference, read_to_eof, QUIET};
use iocp::{Completion, OpResult, Port, Socket, Submitted, Ticket};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

const ECHO_CHUNK: usize = 16 * 1024;

/// What a connection's next step is given.
enum Step {
    Read(Vec<u8>),
    ReadDone(OpResult),
    WriteDone(OpResult),
}

/// A completion-driven echo server: one read or one write in flight per connection.
#[derive(Default)]
struct Echo {
    conns: HashMap<u64, (Socket, Option<Ticket>)>,
    clean_eofs: usize,
    partial_writes: usize,
}

impl Echo {
    fn advance(&mut self, key: u64, mut step: Step) {
        // Bounded: each pass either returns or handles a completion that happened at once.
        for _ in 0..100_000 {
            let Some((socket, read_ticket)) = self.conns.get_mut(&key) else {
                return;
            };
            let (submitted, reading) = match step {
                Step::Read(mut buf) => {
                    buf.resize(ECHO_CHUNK, 0);
                    (socket.recv(buf), true)
                }
                Step::ReadDone(done) => match done.result {
                    Ok(0) => {
                        self.clean_eofs += 1;
                        self.conns.remove(&key);
                        return;
                    }
                    Ok(n) => {
                        let mut buf = done.buf;
                        buf.truncate(n);
                        (socket.send(buf), false)
                    }
                    Err(err) => panic!("echo read on #{key}: {err}"),
                },
                Step::WriteDone(done) => {
                    let n = done
                        .result
                        .unwrap_or_else(|e| panic!("echo write #{key}: {e}"));
                    if n < done.buf.len() {
                        self.partial_writes += 1;
                        let mut rest = done.buf;
                        rest.drain(..n);
                        (socket.send(rest), false)
                    } else {
                        let mut buf = done.buf;
                        buf.resize(ECHO_CHUNK, 0);
                        (socket.recv(buf), true)
                    }
                }
            };
            match submitted.unwrap_or_else(|e| panic!("echo submit on #{key}: {e}")) {
                Submitted::Pending(ticket) => {
                    if reading {
                        *read_ticket = Some(ticket);
                    }
                    return;
                }
                Submitted::Done(done) if reading => step = Step::ReadDone(done),
                Submitted::Done(done) => step = Step::WriteDone(done),
            }
        }
        panic!("connection #{key} never blocked");
    }

    fn on_record(&mut self, record: &Completion) {
        let key = record.key();
        let (socket, read_ticket) = self
            .conns
            .get_mut(&key)
            .unwrap_or_else(|| panic!("record for a finished connection: {record:?}"));
        let done = socket.finish(record).expect("finish an echo record");
        let step = if *read_ticket == Some(Ticket::of(record)) {
            *read_ticket = None;
            Step::ReadDone(done)
        } else {
            Step::WriteDone(done)
        };
        self.advance(key, step);
    }
}

/// Serves `sockets` (keyed by their map key) on `port` until every peer has closed.
fn serve_echo(port: Port, sockets: Vec<(u64, Socket)>, limit: Duration) -> Echo {
    let mut echo = Echo::default();
    for (key, socket) in sockets {
        echo.conns.insert(key, (socket, None));
        echo.advance(key, Step::Read(Vec::new()));
    }
    let deadline = Instant::now() + limit;
    let mut records = [Completion::default(); 64];
    while !echo.conns.is_empty() {
        assert!(
            Instant::now() < deadline,
            "echo: {} connections still open",
            echo.conns.len()
        );
        let drained = port
            .get_many(&mut records, 1, Some(Duration::from_millis(100)))
            .unwrap();
        for record in &records[..drained.count] {
            echo.on_record(record);
        }
    }
    echo
}

#[test]
fn echo_round_trips_over_fifty_tcp_connections_on_one_port() {
    const CONNECTIONS: usize = 50;
    const CLIENT_THREADS: usize = 5;
    const ROUNDS: usize = 10;
    each_drive(|drive| {
        let port = port(drive);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut sockets = Vec::new();
        for key in 0..CONNECTIONS as u64 {
            let client = TcpStream::connect(addr).unwrap();
            client.set_read_timeout(Some(PATIENCE)).unwrap();
            let (server, _) = listener.accept().unwrap();
            sockets.push((key, Socket::associated(server, &port, key).unwrap()));
            clients.push(client);
        }
        let server = {
            let port = port.clone();
            thread::spawn(move || serve_echo(port, sockets, Duration::from_secs(20)))
        };
        let per_thread = CONNECTIONS / CLIENT_THREADS;
        let client_threads: Vec<_> = (0..CLIENT_THREADS)
            .map(|t| {
                let mine: Vec<TcpStream> = clients.drain(..per_thread).collect();
                thread::spawn(move || {
                    for round in 0..ROUNDS {
                        let messages: Vec<Vec<u8>> = (0..mine.len())
                            .map(|c| {
                                let len = 1 + (round * 977 + c * 131 + t * 17) % 8192;
                                pattern((round + c) as u64, len)
                            })
                            .collect();
                        for (mut stream, message) in mine.iter().zip(&messages) {
                            stream.write_all(message).unwrap();
                        }
                        for (mut stream, message) in mine.iter().zip(&messages) {
                            let mut back = vec![0; message.len()];
                            stream.read_exact(&mut back).unwrap();
                            assert!(back == *message, "echo mismatch, round {round}");
                        }
                    }
                    for mut stream in mine {
                        stream.shutdown(Shutdown::Write).unwrap();
                        let mut rest = [0; 16];
                        assert_eq!(stream.read(&mut rest).unwrap(), 0, "server closes");
                    }
                })
            })
            .collect();
        for client in client_threads {
            client.join().expect("client thread");
        }
        let echo = server.join().expect("server thread");
        assert_eq!(echo.clean_eofs, CONNECTIONS);
        eprintln!("{drive:?}: {} partial echo writes", echo.partial_writes);
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn echo_over_a_unix_listener_accepts_with_no_peer_address() {
    each_drive(|drive| {
        let port = port(drive);
        let dir = TempDir::new("net");
        let path = dir.path("echo.sock");
        let listener = Socket::associated(UnixListener::bind(&path).unwrap(), &port, 0).unwrap();
        let ticket = pending(listener.accept());
        let mut client = UnixStream::connect(&path).unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let accepted = finish_next(&port, &listener, 0, ticket);
        assert_eq!(accepted.result.unwrap(), 0);
        assert!(accepted.peer.is_none(), "Unix peers have no IP address");
        let stream = Socket::associated(accepted.accepted.unwrap(), &port, 1).unwrap();
        let server = {
            let port = port.clone();
            thread::spawn(move || serve_echo(port, vec![(1, stream)], Duration::from_secs(10)))
        };
        let message = pattern(9, 100_000);
        let writer = {
            let mut client = client.try_clone().unwrap();
            let message = message.clone();
            thread::spawn(move || {
                client.write_all(&message).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
            })
        };
        let back = read_to_eof(&mut client, message.len());
        writer.join().unwrap();
        assert_eq!(first_difference(&back, &message), None);
        assert_eq!(server.join().unwrap().clean_eofs, 1);
    });
}
