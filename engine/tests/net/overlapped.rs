//! The C-style overlapped requests (`ReadFile`/`WriteFile` on sockets), with a port or with
//! an event.

use crate::common::ports::{assert_no_record, each_drive, next, port};
use crate::common::rng::pattern;
use crate::common::sockets::unix_pair;
use crate::common::timing::PATIENCE;
use crate::common::{address, errno};
use crate::{fill_until_pending, read_to_eof, small_tcp_pair, wait_readable, QUIET};
use iocp::{Event, Overlapped, Socket, Ticket};
use std::io::{Read, Write};
use std::thread;

#[test]
fn read_overlapped_on_an_associated_socket_posts_the_block_address() {
    each_drive(|drive| {
        let port = port(drive);
        let overlapped = Overlapped::new();
        let mut buf = [0u8; 32];
        let (a, mut b) = unix_pair();
        let socket = Socket::associated(a, &port, 50).unwrap();
        // SAFETY: `buf` and `overlapped` are declared before `socket`, so they outlive
        // it; its close (on drop at the latest) ends the request.
        let at_once = unsafe { socket.read_overlapped(buf.as_mut_ptr(), buf.len(), &overlapped) };
        assert_eq!(at_once.unwrap(), None);
        assert!(!overlapped.is_complete());
        assert_eq!(errno(overlapped.get_result(false)), libc::EINPROGRESS);
        b.write_all(b"overlapped").unwrap();
        let record = next(&port);
        assert_eq!(record.key(), 50);
        assert_eq!(record.overlapped(), address(&overlapped));
        assert_eq!(record.result().unwrap(), 10);
        assert_eq!(overlapped.get_result(false).unwrap(), 10);
        assert_eq!(overlapped.bytes(), 10);
        assert_eq!(&buf[..10], b"overlapped");
        assert_eq!(
            errno(socket.finish(&record)),
            libc::EINVAL,
            "not an owned-buffer record"
        );

        // That read came back short (10 of 32 bytes): the readiness cache has the socket
        // drained, so the next read waits for its readable event and completes through the
        // port; unless the event was handled first (the thread drive's reactor may take it
        // before the call), when it is done at once. (`readiness.rs` checks the wait with a
        // socket no event can reach first.)
        b.write_all(b"again").unwrap();
        wait_readable(socket.raw_fd());
        // SAFETY: `buf` and `overlapped` outlive `socket` (declared first), whose close
        // ends the request; the first read is done, so the block is free again.
        let read = unsafe { socket.read_overlapped(buf.as_mut_ptr(), 5, &overlapped) };
        if read.unwrap().is_none() {
            let record = next(&port);
            assert_eq!(record.overlapped(), address(&overlapped));
            assert_eq!(record.result().unwrap(), 5);
        }
        assert_eq!(overlapped.get_result(false).unwrap(), 5);
        assert_eq!(&buf[..5], b"again");

        // That read filled its buffer, which says nothing drained: with data already there
        // the next one is done at once, the block filled in, no record.
        b.write_all(b"third").unwrap();
        wait_readable(socket.raw_fd());
        // SAFETY: `buf` and `overlapped` outlive `socket` (declared first), whose close
        // ends the request; the second read is done, so the block is free again.
        let at_once = unsafe { socket.read_overlapped(buf.as_mut_ptr(), buf.len(), &overlapped) };
        assert_eq!(at_once.unwrap(), Some(5));
        assert_eq!(overlapped.get_result(false).unwrap(), 5);
        assert_eq!(&buf[..5], b"third");
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn write_overlapped_completes_at_once_or_through_the_port() {
    each_drive(|drive| {
        let port = port(drive);
        let overlapped = Overlapped::new();
        let message = pattern(3, 256 * 1024);
        let (server, client) = small_tcp_pair();
        let socket = Socket::associated(server, &port, 51).unwrap();
        // SAFETY: `message` and `overlapped` outlive `socket` (declared first).
        let small = unsafe { socket.write_overlapped(message.as_ptr(), 100, &overlapped) };
        assert_eq!(small.unwrap(), Some(100));
        assert_eq!(overlapped.get_result(false).unwrap(), 100);
        // Fill the path, then a write that has to wait for the reader.
        let (filled, ticket) = fill_until_pending(&socket, 64 * 1024);
        // SAFETY: `message` and `overlapped` outlive `socket` (declared first), whose close
        // ends the request; the first write is done, so the block is free.
        let later =
            unsafe { socket.write_overlapped(message.as_ptr(), message.len(), &overlapped) };
        assert_eq!(later.unwrap(), None);
        let reader = thread::spawn(move || read_to_eof(client, 64 << 20));
        let fill = next(&port);
        assert_eq!(Ticket::of(&fill), ticket);
        let record = next(&port);
        assert_eq!(record.key(), 51);
        assert_eq!(record.overlapped(), address(&overlapped));
        let n = overlapped.get_result(false).unwrap();
        assert_eq!(record.result().unwrap(), n);
        assert!(n > 0 && n as usize <= message.len());
        socket.close().unwrap();
        let received = reader.join().unwrap();
        let fill_sent = socket.finish(&fill).unwrap().result.unwrap();
        assert_eq!(received.len(), 100 + filled + fill_sent + n as usize);
        assert_eq!(&received[..100], &message[..100]);
        assert_eq!(
            &received[received.len() - n as usize..],
            &message[..n as usize]
        );
    });
}

#[test]
fn read_overlapped_on_an_unassociated_socket_sets_the_event() {
    let event = Event::new(true, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    let mut buf = [0u8; 16];
    let (a, mut b) = unix_pair();
    let socket = Socket::unassociated(a).unwrap();
    // SAFETY: `buf` and `overlapped` are declared before `socket` and outlive it.
    let at_once = unsafe { socket.read_overlapped(buf.as_mut_ptr(), buf.len(), &overlapped) };
    assert_eq!(at_once.unwrap(), None);
    assert_eq!(errno(event.wait(Some(QUIET))), libc::ETIMEDOUT);
    b.write_all(b"no port").unwrap();
    event
        .wait(Some(PATIENCE))
        .expect("the completion sets the event");
    assert_eq!(overlapped.get_result(false).unwrap(), 7);
    assert_eq!(&buf[..7], b"no port");

    // A write through the same socket, and an auto-reset event.
    let auto = Event::new(false, false).unwrap();
    let overlapped = Overlapped::with_event(&auto);
    // SAFETY: `buf` and `overlapped` outlive the call, which completes at once.
    let wrote = unsafe { socket.write_overlapped(buf.as_ptr(), 7, &overlapped) };
    assert_eq!(wrote.unwrap(), Some(7));
    let mut back = [0; 7];
    b.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"no port");
}

#[test]
fn cancel_overlapped_completes_the_block_with_ecanceled() {
    each_drive(|drive| {
        let port = port(drive);
        let event = Event::new(true, false).unwrap();
        let first = Overlapped::new();
        let second = Overlapped::with_event(&event);
        let mut buf = [0u8; 16];
        let (a, _b) = unix_pair();
        let (c, _d) = unix_pair();
        let associated = Socket::associated(a, &port, 60).unwrap();
        let portless = Socket::unassociated(c).unwrap();
        // SAFETY: `buf`, `first` and `second` outlive both sockets (declared first).
        unsafe {
            assert_eq!(
                associated
                    .read_overlapped(buf.as_mut_ptr(), 8, &first)
                    .unwrap(),
                None
            );
            assert_eq!(
                portless
                    .read_overlapped(buf.as_mut_ptr().add(8), 8, &second)
                    .unwrap(),
                None
            );
        }
        assert_eq!(errno(associated.cancel_overlapped(&second)), libc::ENOENT);
        associated.cancel_overlapped(&first).unwrap();
        let record = next(&port);
        assert_eq!(record.overlapped(), address(&first));
        assert_eq!(record.error() as i32, libc::ECANCELED);
        assert_eq!(errno(first.get_result(false)), libc::ECANCELED);
        assert_eq!(errno(associated.cancel_overlapped(&first)), libc::ENOENT);

        portless.cancel_overlapped(&second).unwrap();
        event.wait(Some(PATIENCE)).unwrap();
        assert_eq!(errno(second.get_result(false)), libc::ECANCELED);
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn closing_an_unassociated_socket_completes_its_overlapped_requests_and_sets_their_events() {
    let events = [
        Event::new(true, false).unwrap(),
        Event::new(true, false).unwrap(),
    ];
    let blocks = [
        Overlapped::with_event(&events[0]),
        Overlapped::with_event(&events[1]),
    ];
    let mut bufs = [[0u8; 4]; 2];
    let (a, mut b) = unix_pair();
    let socket = Socket::unassociated(a).unwrap();
    for (buf, block) in bufs.iter_mut().zip(&blocks) {
        // SAFETY: `bufs` and `blocks` outlive `socket` (declared first).
        let at_once = unsafe { socket.read_overlapped(buf.as_mut_ptr(), buf.len(), block) };
        assert_eq!(at_once.unwrap(), None);
    }
    socket.close().unwrap();
    for (event, block) in events.iter().zip(&blocks) {
        event.wait(Some(PATIENCE)).unwrap();
        assert_eq!(errno(block.get_result(false)), libc::ECANCELED);
    }
    assert_eq!(b.read(&mut [0; 4]).unwrap(), 0);
}
