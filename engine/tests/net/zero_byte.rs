//! Zero-byte reads, Winsock's idiom for many idle connections: a `recv` with an empty
//! buffer on a stream socket completes, with 0 bytes, once the socket is readable (bytes
//! queued, the end of the stream, or a failure), and takes none of the bytes; the server
//! then reads into a buffer it lends for that moment, so an idle connection holds none.
//! On a datagram socket an empty buffer takes the next datagram and keeps none of it, as
//! `recv(2)` does.

use crate::common::pending;
use crate::common::ports::{assert_no_record, each_drive, port};
use crate::common::timing::SETTLE;
use crate::{done, finish_next, outcome, reset, stream_pairs, tcp_pair, wait_readable};
use iocp::{Port, Socket, Ticket};
use std::io::Write;
use std::net::{Shutdown, UdpSocket};

/// A zero-byte `recv` that has to wait: its ticket.
fn waiting(socket: &Socket) -> Ticket {
    pending(socket.recv(Vec::new()))
}

/// Rounds of the idle cycle each test runs: enough to pass through the readiness cache's
/// states more than once.
const ROUNDS: usize = 3;

#[test]
fn a_zero_byte_recv_waits_for_bytes_and_leaves_them_to_the_read_after_it() {
    each_drive(|drive| {
        let port = port(drive);
        for (key, (server, mut peer)) in (1..).zip(stream_pairs()) {
            let socket = Socket::associated(server, &port, key).unwrap();
            for round in 0..ROUNDS {
                // Idle: the zero-byte read waits, holding no buffer.
                let ticket = waiting(&socket);
                assert_no_record(&port, SETTLE);
                let message = format!("message {round}");
                peer.write_all(message.as_bytes()).unwrap();
                let ready = finish_next(&port, &socket, key, ticket);
                assert_eq!((ready.result.unwrap(), ready.buf.len()), (0, 0));
                // The bytes are all still there for a read with a buffer, which completes
                // at once. It comes back short, so the next zero-byte read waits for the
                // next readable event without a try.
                let got = done(socket.recv(vec![0; 64]));
                assert_eq!(&got.buf[..got.result.unwrap()], message.as_bytes());
            }
        }
    });
}

#[test]
fn a_zero_byte_recv_with_bytes_queued_completes_at_once_and_takes_none() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, mut client) = tcp_pair();
        let socket = Socket::associated(server, &port, 7).unwrap();
        client.write_all(b"queued").unwrap();
        wait_readable(socket.raw_fd());
        for _ in 0..ROUNDS {
            let ready = done(socket.recv(Vec::new()));
            assert_eq!(ready.result.unwrap(), 0);
        }
        let got = done(socket.recv(vec![0; 64]));
        assert_eq!(&got.buf[..got.result.unwrap()], b"queued");
        assert_no_record(&port, SETTLE);
    });
}

#[test]
fn a_zero_byte_recv_completes_at_the_end_of_the_stream_and_the_next_read_tells_it_apart() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, client) = tcp_pair();
        let socket = Socket::associated(server, &port, 8).unwrap();
        let ticket = waiting(&socket);
        client.shutdown(Shutdown::Write).unwrap();
        let ready = finish_next(&port, &socket, 8, ticket);
        assert_eq!(ready.result.unwrap(), 0);
        // A read with a buffer: 0 bytes into 64 is the end of the stream.
        let end = outcome(&port, &socket, 8, socket.recv(vec![0; 64]));
        assert_eq!(end.result.unwrap(), 0);
    });
}

#[test]
fn a_zero_byte_recv_reports_a_reset_connection() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, client) = tcp_pair();
        let socket = Socket::associated(server, &port, 9).unwrap();
        let ticket = waiting(&socket);
        reset(client);
        let failed = finish_next(&port, &socket, 9, ticket);
        let err = failed.result.expect_err("a reset, not a byte count");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    });
}

#[test]
fn a_zero_byte_recv_on_a_datagram_socket_takes_the_next_datagram() {
    each_drive(|drive| {
        let port = port(drive);
        let (one, two) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        one.connect(two.local_addr().unwrap()).unwrap();
        two.connect(one.local_addr().unwrap()).unwrap();
        let socket = Socket::associated(one, &port, 10).unwrap();
        let ticket = waiting(&socket);
        two.send(b"dropped").unwrap();
        two.send(b"kept").unwrap();
        let taken = finish_next(&port, &socket, 10, ticket);
        assert_eq!(taken.result.unwrap(), 0);
        let got = outcome(&port, &socket, 10, socket.recv(vec![0; 64]));
        assert_eq!(&got.buf[..got.result.unwrap()], b"kept");
    });
}

/// A port with a zero-byte read of each of many sockets waiting holds no buffer for any:
/// each completes as its peer writes, in any order.
#[test]
fn many_idle_sockets_each_wake_their_own_zero_byte_read() {
    const SOCKETS: u64 = 32;
    each_drive(|drive| {
        let port: Port = port(drive);
        let mut idle = Vec::new();
        for key in 0..SOCKETS {
            let (server, client) = tcp_pair();
            let socket = Socket::associated(server, &port, key).unwrap();
            let ticket = waiting(&socket);
            idle.push((socket, client, ticket));
        }
        assert_no_record(&port, SETTLE);
        // Wake them from the last to the first.
        for (key, (socket, client, ticket)) in idle.iter_mut().enumerate().rev() {
            client.write_all(&[key as u8]).unwrap();
            let ready = finish_next(&port, socket, key as u64, *ticket);
            assert_eq!(ready.result.unwrap(), 0);
            let got = done(socket.recv(vec![0; 8]));
            assert_eq!(&got.buf[..got.result.unwrap()], [key as u8]);
        }
    });
}
