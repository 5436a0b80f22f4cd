//! Accept and connect: an accept storm, a refused connect, a connect that carries data.

use crate::common::errno;
use crate::common::pending;
use crate::common::ports::{assert_no_record, each_drive, next, port};
use crate::common::sockets::tcp_socket;
use crate::common::timing::PATIENCE;
use crate::{closed_port, done, fd_flags, finish_next, Socket, QUIET};
use iocp::{OpResult, Submitted};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn an_accept_storm_of_two_hundred_connects_is_accepted_in_full() {
    const CONNECTS: usize = 200;
    const QUEUED_ACCEPTS: usize = 4;
    each_drive(|drive| {
        let port = port(drive);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = Socket::associated(listener, &port, 77).unwrap();
        // One accept waits before any client connects.
        pending(socket.accept());
        let mut queued = 1;
        let (release, released) = mpsc::channel::<()>();
        let (addrs_tx, addrs_rx) = mpsc::channel();
        let client = thread::spawn(move || {
            let streams: Vec<TcpStream> = (0..CONNECTS)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect();
            let addrs: HashSet<SocketAddr> =
                streams.iter().map(|s| s.local_addr().unwrap()).collect();
            addrs_tx.send(addrs).unwrap();
            // Keep the connections open until the server has them all.
            let _ = released.recv_timeout(Duration::from_secs(20));
        });
        let mut accepted: Vec<OwnedFd> = Vec::new();
        let mut peers = HashSet::new();
        let (mut at_once, mut later) = (0, 0);
        let mut take = |done: OpResult, accepted: &mut Vec<OwnedFd>| {
            assert_eq!(done.result.expect("accept"), 0);
            let fd = done.accepted.expect("an accepted connection");
            let (status, descriptor) = fd_flags(fd.as_raw_fd());
            assert_ne!(
                status & libc::O_NONBLOCK,
                0,
                "accepted sockets are non-blocking"
            );
            assert_ne!(descriptor & libc::FD_CLOEXEC, 0, "and close-on-exec");
            assert!(peers.insert(done.peer.expect("a TCP peer address")));
            accepted.push(fd);
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while accepted.len() < CONNECTS {
            assert!(Instant::now() < deadline, "accepted {}", accepted.len());
            while queued < QUEUED_ACCEPTS && accepted.len() + queued < CONNECTS {
                match socket.accept().unwrap() {
                    Submitted::Done(done) => {
                        at_once += 1;
                        take(done, &mut accepted);
                    }
                    Submitted::Pending(_) => queued += 1,
                }
            }
            if accepted.len() == CONNECTS {
                break;
            }
            let record = next(&port);
            assert_eq!(record.key(), 77);
            queued -= 1;
            later += 1;
            take(socket.finish(&record).unwrap(), &mut accepted);
        }
        let addrs = addrs_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        release.send(()).unwrap();
        client.join().unwrap();
        eprintln!("{drive:?}: {at_once} accepts at once, {later} through records");
        assert_eq!(peers, addrs, "every client was accepted exactly once");
        assert!(later > 0, "some accept had to wait");
        socket.close().unwrap();
        for _ in 0..queued {
            assert_eq!(next(&port).error() as i32, libc::ECANCELED);
        }
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn connecting_to_a_closed_port_fails_econnrefused() {
    each_drive(|drive| {
        let port = port(drive);
        let socket = Socket::associated(tcp_socket(libc::AF_INET), &port, 8).unwrap();
        let (_holder, closed) = closed_port();
        let result = match socket.connect(closed).unwrap() {
            Submitted::Done(done) => {
                eprintln!("{drive:?}: refused at once");
                done.result
            }
            Submitted::Pending(ticket) => {
                eprintln!("{drive:?}: refused through a record");
                finish_next(&port, &socket, 8, ticket).result
            }
        };
        assert_eq!(errno(result), libc::ECONNREFUSED);
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn connecting_to_a_listener_completes_and_the_connection_carries_data() {
    each_drive(|drive| {
        for (domain, host) in [(libc::AF_INET, "127.0.0.1:0"), (libc::AF_INET6, "[::1]:0")] {
            let Ok(listener) = TcpListener::bind(host) else {
                eprintln!("skipping {host}: no such loopback here");
                continue;
            };
            let port = port(drive);
            let socket = Socket::associated(tcp_socket(domain), &port, 8).unwrap();
            let connected = match socket.connect(listener.local_addr().unwrap()).unwrap() {
                Submitted::Done(done) => {
                    eprintln!("{drive:?} {host}: connected at once");
                    done
                }
                Submitted::Pending(ticket) => finish_next(&port, &socket, 8, ticket),
            };
            assert_eq!(connected.result.unwrap(), 0);
            let (mut peer, peer_addr) = listener.accept().unwrap();
            peer.set_read_timeout(Some(PATIENCE)).unwrap();
            assert_eq!(done(socket.send(b"ping".to_vec())).result.unwrap(), 4);
            let mut got = [0; 4];
            peer.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping");
            let ticket = pending(socket.recv(vec![0; 8]));
            peer.write_all(b"pong").unwrap();
            let back = finish_next(&port, &socket, 8, ticket);
            assert_eq!(&back.buf[..back.result.unwrap()], b"pong");
            assert!(peer_addr.ip().is_loopback());
        }
    });
}
