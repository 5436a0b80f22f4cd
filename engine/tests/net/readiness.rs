//! The readiness cache: after a stream `recv` comes back short, the socket's receive queue
//! was empty, so the next `recv` waits for the socket's next readable event without a try
//! that would only find `EAGAIN` (as tokio's reads do). A readable event ends that; the
//! end of the stream, a failure or urgent data end it for good; datagrams never start it.

use crate::common::ports::{assert_no_record, each_drive, port};
use crate::common::timing::SETTLE;
use crate::{done, finish_next, outcome, stream_pairs, tcp_pair, wait_readable};
use iocp::{Port, Socket, Submitted, Ticket};
use std::io::Write;
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;

/// A `recv` that must wait: its ticket.
fn pending(socket: &Socket, len: usize) -> Ticket {
    match socket.recv(vec![0; len]).expect("recv") {
        Submitted::Pending(ticket) => ticket,
        Submitted::Done(done) => panic!("expected a wait, got {:?}", done.result),
    }
}

/// A stream socket on `port` under `key` whose first `recv` waited, so it is registered
/// with the reactor, and whose last read came back short: the cache has it drained.
fn registered_and_drained(
    port: &Port,
    key: u64,
    server: impl Into<OwnedFd>,
    peer: &mut impl Write,
) -> Socket {
    let socket = Socket::associated(server, port, key).unwrap();
    let ticket = pending(&socket, 64);
    peer.write_all(b"first").unwrap();
    let got = finish_next(port, &socket, key, ticket);
    assert_eq!(&got.buf[..got.result.unwrap()], b"first");
    socket
}

#[test]
fn after_a_short_stream_read_the_next_recv_waits_for_readiness_even_with_data_there() {
    each_drive(|drive| {
        let port = port(drive);
        for (key, (server, mut peer)) in (1..).zip(stream_pairs()) {
            let socket = Socket::associated(server, &port, key).unwrap();
            peer.write_all(b"short").unwrap();
            wait_readable(socket.raw_fd());
            let got = done(socket.recv(vec![0; 64]));
            assert_eq!(&got.buf[..got.result.unwrap()], b"short");
            // The bytes are there before the call, but the read before came back short:
            // this one waits for the event they raised, and completes through the port.
            peer.write_all(b"behind").unwrap();
            wait_readable(socket.raw_fd());
            let ticket = pending(&socket, 64);
            let got = finish_next(&port, &socket, key, ticket);
            assert_eq!(&got.buf[..got.result.unwrap()], b"behind");
        }
    });
}

#[test]
fn a_readable_event_lets_the_next_recv_complete_at_once_again() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, mut client) = tcp_pair();
        let socket = registered_and_drained(&port, 3, server, &mut client);
        // The event for these bytes reaches the socket with no read queued (a turn of the
        // reactor: the inline drive's within this wait, the thread drive's by itself).
        client.write_all(b"later").unwrap();
        assert_no_record(&port, SETTLE);
        let got = done(socket.recv(vec![0; 5]));
        assert_eq!(&got.buf[..got.result.unwrap()], b"later");
        // That read filled its buffer, which says nothing about the queue: the next read
        // tries at once too.
        client.write_all(b"more").unwrap();
        wait_readable(socket.raw_fd());
        let got = done(socket.recv(vec![0; 64]));
        assert_eq!(&got.buf[..got.result.unwrap()], b"more");
    });
}

#[test]
fn a_short_datagram_read_leaves_the_next_recv_to_try_at_once() {
    each_drive(|drive| {
        let port = port(drive);
        let (one, two) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        one.connect(two.local_addr().unwrap()).unwrap();
        two.connect(one.local_addr().unwrap()).unwrap();
        let socket = Socket::associated(one, &port, 4).unwrap();
        two.send(b"first").unwrap();
        two.send(b"second").unwrap();
        wait_readable(socket.raw_fd());
        // Each datagram is its own read: a short one says nothing of the next.
        let got = done(socket.recv(vec![0; 64]));
        assert_eq!(&got.buf[..got.result.unwrap()], b"first");
        let got = done(socket.recv(vec![0; 64]));
        assert_eq!(&got.buf[..got.result.unwrap()], b"second");
    });
}

#[test]
fn the_end_of_the_stream_seen_before_a_short_read_is_not_waited_for() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, mut client) = tcp_pair();
        let socket = registered_and_drained(&port, 5, server, &mut client);
        // The last bytes and the end of the stream, whose one event the reactor takes
        // before the reads below: a read that waited for another would wait forever.
        client.write_all(b"last").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_no_record(&port, SETTLE);
        let got = done(socket.recv(vec![0; 64]));
        assert_eq!(&got.buf[..got.result.unwrap()], b"last");
        let end = outcome(&port, &socket, 5, socket.recv(vec![0; 64]));
        assert_eq!(end.result.unwrap(), 0);
        assert_eq!(done(socket.recv(vec![0; 64])).result.unwrap(), 0);
    });
}

#[test]
fn urgent_data_seen_before_a_read_that_stops_at_its_mark_is_not_waited_for() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, mut client) = tcp_pair();
        let socket = registered_and_drained(&port, 6, server, &mut client);
        // "ab", an urgent byte, "de": a read stops short at the urgent mark with "de"
        // behind it, and the urgent byte's event came before that read.
        client.write_all(b"ab").unwrap();
        send_urgent(&client, b'c');
        client.write_all(b"de").unwrap();
        assert_no_record(&port, SETTLE);
        let mut got = Vec::new();
        for _ in 0..4 {
            if got.len() >= 4 {
                break;
            }
            let read = outcome(&port, &socket, 6, socket.recv(vec![0; 64]));
            got.extend_from_slice(&read.buf[..read.result.unwrap()]);
        }
        assert_eq!(got, b"abde", "the urgent byte is out of band");
    });
}

/// Sends one byte of urgent (out-of-band) data.
fn send_urgent(stream: &TcpStream, byte: u8) {
    // SAFETY: `byte` is one readable byte for the duration of the call.
    let sent = unsafe {
        libc::send(
            stream.as_raw_fd(),
            (&byte as *const u8).cast(),
            1,
            libc::MSG_OOB,
        )
    };
    assert_eq!(
        sent,
        1,
        "send(MSG_OOB): {}",
        std::io::Error::last_os_error()
    );
}

/// A `recv` that tries at once, without the socket's lock, racing the peer's byte: it
/// gets the byte at once or through the port, never waits for an event that came and
/// went. Each `recv` asks for exactly the byte the peer sends, so none comes back short
/// and each tries at once. (How narrow the window between the try and the queueing is,
/// the loom model `a_recv_tried_without_the_lock_never_waits_for_an_event_handled_before_it_queued`
/// checks every order of.)
#[test]
fn bytes_arriving_while_a_recv_tries_without_the_lock_are_not_waited_for() {
    const ROUNDS: usize = 2_000;
    each_drive(|drive| {
        let port = port(drive);
        let (server, mut client) = tcp_pair();
        let socket = Socket::associated(server, &port, 6).unwrap();
        let (go, went) = mpsc::sync_channel::<u8>(1);
        let peer = thread::spawn(move || {
            while let Ok(byte) = went.recv() {
                client.write_all(&[byte]).unwrap();
            }
        });
        let mut waited = 0;
        for round in 0..ROUNDS {
            let byte = round as u8;
            go.send(byte).unwrap();
            let submitted = socket.recv(vec![0; 1]);
            waited += usize::from(matches!(submitted, Ok(Submitted::Pending(_))));
            let got = outcome(&port, &socket, 6, submitted);
            assert_eq!(
                (got.result.unwrap(), got.buf[0]),
                (1, byte),
                "round {round}"
            );
        }
        drop(go);
        peer.join().unwrap();
        eprintln!("{drive:?}: {waited} of {ROUNDS} reads waited");
    });
}
