//! UDP datagrams: sender addresses, a pending receive, truncation.

use crate::common::errno;
use crate::common::pending;
use crate::common::ports::{assert_no_record, each_drive, port};
use crate::common::rng::pattern;
use crate::{done, finish_next, outcome, wait_readable, Socket, QUIET};
use iocp::Port;
use std::net::UdpSocket;

#[test]
fn udp_datagrams_carry_their_sender_address() {
    each_drive(|drive| {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let (Ok(one), Ok(two)) = (UdpSocket::bind(host), UdpSocket::bind(host)) else {
                eprintln!("skipping {host}: no such loopback here");
                continue;
            };
            let port = port(drive);
            let (one_addr, two_addr) = (one.local_addr().unwrap(), two.local_addr().unwrap());
            let one = Socket::associated(one, &port, 1).unwrap();
            let two = Socket::associated(two, &port, 2).unwrap();
            for (i, size) in [1usize, 100, 1400].into_iter().enumerate() {
                let payload = pattern(i as u64, size);
                let sent = outcome(&port, &one, 1, one.send_to(payload.clone(), two_addr));
                assert_eq!(sent.result.unwrap(), size);
                let got = outcome(&port, &two, 2, two.recv_from(vec![0; 2048]));
                assert_eq!(got.result.unwrap(), size, "one datagram per recv_from");
                assert_eq!(&got.buf[..size], payload);
                assert_eq!(got.peer, Some(one_addr));
            }
            // The other way, with two datagrams queued: each recv takes exactly one.
            for message in [&b"first"[..], b"second"] {
                done(two.send_to(message.to_vec(), one_addr));
            }
            for message in [&b"first"[..], b"second"] {
                let got = outcome(&port, &one, 1, one.recv_from(vec![0; 64]));
                assert_eq!(&got.buf[..got.result.unwrap()], message);
                assert_eq!(got.peer, Some(two_addr));
            }
            assert_no_record(&port, QUIET);
        }
    });
}

#[test]
fn a_pending_recv_from_is_completed_by_a_later_datagram() {
    each_drive(|drive| {
        let port = port(drive);
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = receiver.local_addr().unwrap();
        let socket = Socket::associated(receiver, &port, 40).unwrap();
        let ticket = pending(socket.recv_from(vec![0; 512]));
        assert_no_record(&port, QUIET);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"late datagram", addr).unwrap();
        let got = finish_next(&port, &socket, 40, ticket);
        assert_eq!(&got.buf[..got.result.unwrap()], b"late datagram");
        assert_eq!(got.peer, Some(sender.local_addr().unwrap()));
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn a_datagram_longer_than_the_buffer_is_reported_as_truncated() {
    let port = Port::new().unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = receiver.local_addr().unwrap();
    let socket = Socket::associated(receiver, &port, 1).unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&[7; 100], addr).unwrap();
    wait_readable(socket.raw_fd());
    let got = outcome(&port, &socket, 1, socket.recv_from(vec![0; 10]));
    assert_eq!(errno(got.result), libc::EMSGSIZE);
    assert_eq!(got.buf, [7; 10], "the part that fit is delivered");
}
