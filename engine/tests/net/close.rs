//! Closing and dropping a socket with requests pending, and requests after close.

use crate::common::errno;
use crate::common::pending;
use crate::common::ports::{assert_no_record, each_drive, next, port};
use crate::common::sockets::unix_pair;
use crate::common::timing::PATIENCE;
use crate::{
    closed_port, fill_until_pending, finish_next, read_to_eof, shrink_buffers, small_tcp_pair,
    tcp_pair, Socket, QUIET,
};
use iocp::{Overlapped, Port, Submitted, Ticket};
use std::collections::HashSet;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

#[test]
fn close_completes_each_pending_request_once_with_ecanceled_and_the_peer_sees_eof() {
    each_drive(|drive| {
        let port = port(drive);
        let (a, mut b) = unix_pair();
        let socket = Socket::associated(a, &port, 31).unwrap();
        let mut tickets: HashSet<Ticket> =
            (0..3).map(|_| pending(socket.recv(vec![0; 8]))).collect();
        socket.close().unwrap();
        for _ in 0..3 {
            let record = next(&port);
            assert_eq!(record.key(), 31);
            assert!(tickets.remove(&Ticket::of(&record)), "{record:?}");
            let finished = socket.finish(&record).unwrap();
            assert_eq!(errno(finished.result), libc::ECANCELED);
            assert_eq!(finished.buf.len(), 8);
        }
        assert_no_record(&port, QUIET);
        assert_eq!(b.read(&mut [0; 8]).unwrap(), 0, "the peer sees the close");
    });
}

#[test]
fn close_cancels_a_pending_send_and_a_pending_accept() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, _client) = tcp_pair();
        shrink_buffers(server.as_raw_fd());
        let socket = Socket::associated(server, &port, 32).unwrap();
        let (_, ticket) = fill_until_pending(&socket, 64 * 1024);
        socket.close().unwrap();
        assert_eq!(
            errno(finish_next(&port, &socket, 32, ticket).result),
            libc::ECANCELED
        );
        let listener =
            Socket::associated(TcpListener::bind("127.0.0.1:0").unwrap(), &port, 33).unwrap();
        let ticket = pending(listener.accept());
        listener.close().unwrap();
        let finished = finish_next(&port, &listener, 33, ticket);
        assert_eq!(errno(finished.result), libc::ECANCELED);
        assert!(finished.accepted.is_none());
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn dropping_a_socket_completes_its_pending_requests_with_ecanceled() {
    each_drive(|drive| {
        let port = port(drive);
        let (a, mut b) = unix_pair();
        let socket = Socket::associated(a, &port, 34).unwrap();
        let tickets: HashSet<Ticket> = (0..2).map(|_| pending(socket.recv(vec![0; 8]))).collect();
        drop(socket);
        let seen: HashSet<Ticket> = (0..2)
            .map(|_| {
                let record = next(&port);
                assert_eq!((record.key(), record.error() as i32), (34, libc::ECANCELED));
                Ticket::of(&record)
            })
            .collect();
        assert_eq!(seen, tickets);
        assert_eq!(b.read(&mut [0; 8]).unwrap(), 0);
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn requests_after_close_fail_ebadf() {
    let port = Port::new().unwrap();
    let (a, _b) = unix_pair();
    let socket = Socket::associated(a, &port, 1).unwrap();
    socket.close().unwrap();
    let (_holder, somewhere) = closed_port();
    assert_eq!(errno(socket.recv(vec![0; 8])), libc::EBADF);
    assert_eq!(errno(socket.send(vec![0; 8])), libc::EBADF);
    assert_eq!(errno(socket.recv_from(vec![0; 8])), libc::EBADF);
    assert_eq!(errno(socket.send_to(vec![0; 8], somewhere)), libc::EBADF);
    assert_eq!(errno(socket.accept()), libc::EBADF);
    assert_eq!(errno(socket.connect(somewhere)), libc::EBADF);
    assert_eq!(errno(socket.close()), libc::EBADF);
    assert_eq!(errno(socket.cancel_all()), libc::ENOENT);
    let overlapped = Overlapped::new();
    let mut buf = [0u8; 8];
    // SAFETY: `buf` and `overlapped` outlive the call; a closed socket queues nothing.
    let read = unsafe { socket.read_overlapped(buf.as_mut_ptr(), buf.len(), &overlapped) };
    assert_eq!(errno(read), libc::EBADF);
    assert!(
        overlapped.is_complete(),
        "a refused request leaves no pending block"
    );
    assert_eq!(errno(overlapped.get_result(false)), libc::EBADF);
    // SAFETY: `buf` and `overlapped` outlive the call; the socket is closed, so the request
    // is refused at once and nothing keeps the pointers.
    let write = unsafe { socket.write_overlapped(buf.as_ptr(), buf.len(), &overlapped) };
    assert_eq!(errno(write), libc::EBADF);
    assert_no_record(&port, QUIET);
}

#[test]
fn a_closed_socket_keeps_its_descriptor_until_it_is_dropped_and_a_closed_listener_refuses() {
    let port = Port::new().unwrap();
    let listener = Socket::associated(TcpListener::bind("127.0.0.1:0").unwrap(), &port, 1).unwrap();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], local_port(&listener)));
    listener.close().unwrap();
    // The number lent by as_fd is still this socket's: nothing else can have been given it.
    assert_eq!(listener.as_fd().as_raw_fd(), listener.raw_fd());
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(listener.raw_fd(), libc::F_GETFD) };
    assert!(
        flags >= 0,
        "the descriptor of a closed socket is open until the drop"
    );
    assert_eq!(
        std::net::TcpStream::connect(address).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "a closed listener still listens"
    );
}

/// The port a bound socket listens on.
fn local_port(socket: &Socket) -> u16 {
    let fd = socket.as_fd().try_clone_to_owned().unwrap();
    std::net::TcpListener::from(fd).local_addr().unwrap().port()
}

/// A close racing sends from other threads (some going out at once without the socket's
/// lock, some in pieces, some waiting): every send has exactly one outcome, at once or as
/// one record, and once the close is done sends fail with `EBADF`.
#[test]
fn a_close_racing_sends_from_other_threads_leaves_each_send_exactly_one_outcome() {
    const THREADS: usize = 2;
    const LEN: usize = 16 * 1024;
    each_drive(|drive| {
        let port = port(drive);
        let (server, client) = small_tcp_pair();
        let socket = Arc::new(Socket::associated(server, &port, 8).unwrap());
        let reader = thread::spawn(move || read_to_eof(client, usize::MAX).len());
        let made = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..THREADS)
            .map(|_| {
                let (socket, made) = (Arc::clone(&socket), Arc::clone(&made));
                thread::spawn(move || {
                    let mut tickets = HashSet::new();
                    for _ in 0..100_000 {
                        match socket.send(vec![b'S'; LEN]) {
                            Ok(Submitted::Done(_)) => {}
                            Ok(Submitted::Pending(ticket)) => assert!(tickets.insert(ticket)),
                            Err(err) => {
                                assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
                                return tickets;
                            }
                        }
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                    panic!("the close never reached this sender");
                })
            })
            .collect();
        let deadline = Instant::now() + PATIENCE;
        while made.load(Ordering::Relaxed) < 200 {
            assert!(Instant::now() < deadline, "the senders made no progress");
            thread::yield_now();
        }
        socket.close().unwrap();
        let mut tickets = HashSet::new();
        for sender in senders {
            tickets.extend(sender.join().unwrap());
        }
        let waited = tickets.len();
        while !tickets.is_empty() {
            let record = next(&port);
            assert!(tickets.remove(&Ticket::of(&record)), "{record:?}");
            let result = socket.finish(&record).unwrap().result;
            assert!(
                result.as_ref().is_ok_and(|&n| n == LEN) || errno(result) == libc::ECANCELED,
                "{record:?}"
            );
        }
        assert_no_record(&port, QUIET);
        let received = reader.join().unwrap();
        eprintln!("{drive:?}: {waited} sends waited; the peer got {received} bytes");
    });
}
