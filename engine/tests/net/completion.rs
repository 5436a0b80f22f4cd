//! Immediate and pending completion: a request that can finish at once does so and posts
//! nothing; one that waits completes later as exactly one record under the socket's key.

use crate::common::errno;
use crate::common::pending;
use crate::common::ports::{assert_no_record, each_drive, next, port};
use crate::common::sockets::unix_pair;
use crate::common::timing::{PATIENCE, SETTLE};
use crate::{done, finish_next, tcp_pair, wait_readable, QUIET};
use iocp::{Completion, Event, Overlapped, Port, Socket, Ticket};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn a_recv_with_data_already_there_completes_at_once_and_posts_no_record() {
    each_drive(|drive| {
        let port = port(drive);
        let (a, mut b) = unix_pair();
        let socket = Socket::associated(a, &port, 3).unwrap();
        b.write_all(b"ready").unwrap();
        let got = done(socket.recv(vec![0; 16]));
        assert_eq!(got.result.unwrap(), 5);
        assert_eq!(got.buf.len(), 16, "the whole buffer comes back");
        assert_eq!(&got.buf[..5], b"ready");
        assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::ETIMEDOUT);
        assert_no_record(&port, QUIET);

        // The same over TCP, once the kernel has the bytes.
        let (server, mut client) = tcp_pair();
        let tcp = Socket::associated(server, &port, 4).unwrap();
        client.write_all(b"tcp bytes").unwrap();
        wait_readable(tcp.raw_fd());
        let got = done(tcp.recv(vec![0; 64]));
        assert_eq!(&got.buf[..got.result.unwrap()], b"tcp bytes");
        assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::ETIMEDOUT);
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn a_send_with_room_completes_at_once_with_the_count_and_the_buffer() {
    each_drive(|drive| {
        let port = port(drive);
        let (a, mut b) = unix_pair();
        let socket = Socket::associated(a, &port, 3).unwrap();
        let sent = done(socket.send(b"hello there".to_vec()));
        assert_eq!(sent.result.unwrap(), 11);
        assert_eq!(sent.buf, b"hello there");
        assert!(sent.peer.is_none() && sent.accepted.is_none());
        let mut got = [0; 11];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello there");
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn a_recv_that_would_block_completes_later_as_exactly_one_record_under_the_key() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, mut client) = tcp_pair();
        let socket = Socket::associated(server, &port, 42).unwrap();
        let buf = vec![7u8; 32];
        let allocation = buf.as_ptr();
        let ticket = pending(socket.recv(buf));
        assert_no_record(&port, QUIET);
        client.write_all(b"later").unwrap();
        let record = next(&port);
        assert_eq!(record.key(), 42);
        assert_eq!(Ticket::of(&record), ticket);
        assert_eq!(record.result().unwrap(), 5);
        let finished = socket.finish(&record).unwrap();
        assert_eq!(finished.result.unwrap(), 5);
        assert_eq!(
            finished.buf.as_ptr(),
            allocation,
            "the very buffer comes back"
        );
        assert_eq!(finished.buf.len(), 32);
        assert_eq!(&finished.buf[..5], b"later");
        assert!(
            finished.buf[5..].iter().all(|&b| b == 7),
            "only the data is written"
        );
        assert_eq!(errno(socket.finish(&record)), libc::EINVAL, "finish twice");
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn finish_rejects_records_that_are_not_this_sockets_pending_requests() {
    let port = Port::new().unwrap();
    let (a, _b) = unix_pair();
    let socket = Socket::associated(a, &port, 1).unwrap();
    assert_eq!(
        errno(socket.finish(&Completion::new(1, 0, 1))),
        libc::EINVAL
    );
    assert_eq!(
        errno(socket.finish(&Completion::new(1, 0, 12345))),
        libc::EINVAL
    );
}

#[test]
fn tickets_are_distinct_among_a_sockets_pending_requests() {
    let port = Port::new().unwrap();
    let (a, _b) = unix_pair();
    let socket = Socket::associated(a, &port, 1).unwrap();
    let tickets: HashSet<Ticket> = (0..8).map(|_| pending(socket.recv(vec![0; 4]))).collect();
    assert_eq!(tickets.len(), 8);
    assert_eq!(socket.cancel_all().unwrap(), 8);
}

#[test]
fn a_socket_used_without_a_port_can_be_associated_later() {
    each_drive(|drive| {
        let event = Event::new(true, false).unwrap();
        let overlapped = Overlapped::with_event(&event);
        let mut buf = [0u8; 8];
        let (a, mut b) = unix_pair();
        let socket = Socket::unassociated(a).unwrap();
        // A portless request that had to wait registers the socket with the shared reactor.
        // SAFETY: `buf` and `overlapped` outlive `socket` (declared first).
        let at_once = unsafe { socket.read_overlapped(buf.as_mut_ptr(), buf.len(), &overlapped) };
        assert_eq!(at_once.unwrap(), None);
        b.write_all(b"one").unwrap();
        event.wait(Some(PATIENCE)).unwrap();
        assert_eq!(overlapped.get_result(false).unwrap(), 3);
        // Now through a port: the socket moves to the port's reactor.
        let port = port(drive);
        socket.associate(&port, 17).unwrap();
        let ticket = pending(socket.recv(vec![0; 8]));
        b.write_all(b"two").unwrap();
        let got = finish_next(&port, &socket, 17, ticket);
        assert_eq!(&got.buf[..got.result.unwrap()], b"two");
    });
}

#[test]
fn closing_the_port_ends_a_wait_that_is_polling_sockets() {
    each_drive(|drive| {
        let port = port(drive);
        let (a, _b) = unix_pair();
        let socket = Socket::associated(a, &port, 1).unwrap();
        pending(socket.recv(vec![0; 8]));
        let waiter = {
            let port = port.clone();
            thread::spawn(move || port.get(Some(Duration::from_secs(20))))
        };
        thread::sleep(SETTLE);
        let closed = Instant::now();
        port.close().unwrap();
        assert_eq!(errno(waiter.join().unwrap()), libc::EBADF);
        assert!(
            closed.elapsed() < Duration::from_secs(2),
            "{:?}",
            closed.elapsed()
        );
        // The socket still closes cleanly; its cancelled request goes nowhere.
        socket.close().unwrap();
    });
}
