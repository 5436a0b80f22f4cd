//! Regression tests, named after the bug.

use crate::common::errno;
use crate::common::pending;
use crate::common::ports::{self, assert_no_record, next, DRIVES};
use crate::common::process::{in_forked_child, CHILD_PATIENCE};
use crate::common::sockets::unix_pair;
use crate::QUIET;
use iocp::{Completion, Event, Overlapped, Port, Socket, Ticket};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

/// Guards 05007d4 ("a request with no port that completed at once did not set its
/// event"): as on Windows, an overlapped request on a socket without a port sets its
/// `hEvent` however it completes, at once (success or failure) as well as later. Only the
/// later case was checked.
#[test]
fn regression_portless_overlapped_request_completed_at_once_left_its_event_unset() {
    let mut buf = [0u8; 16];
    let (a, mut b) = unix_pair();
    let socket = Socket::unassociated(a).unwrap();
    for manual_reset in [true, false] {
        let event = Event::new(manual_reset, false).unwrap();
        let overlapped = Overlapped::with_event(&event);
        // SAFETY: the message and `overlapped` outlive the call, which completes at once.
        let wrote = unsafe { socket.write_overlapped(b"at once".as_ptr(), 7, &overlapped) };
        assert_eq!(wrote.unwrap(), Some(7));
        assert!(
            event.is_set(),
            "a write done at once left its event unset (manual reset: {manual_reset})"
        );
        event.wait(Some(Duration::ZERO)).unwrap();
        let mut back = [0; 7];
        b.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"at once");

        let event = Event::new(manual_reset, false).unwrap();
        let overlapped = Overlapped::with_event(&event);
        b.write_all(b"ready").unwrap();
        // A read of exactly what is there: a short read would have the next round's read
        // wait for readiness (the readiness cache) rather than complete at once.
        // SAFETY: `buf` and `overlapped` outlive the call, which completes at once.
        let read = unsafe { socket.read_overlapped(buf.as_mut_ptr(), 5, &overlapped) };
        assert_eq!(read.unwrap(), Some(5));
        assert_eq!(&buf[..5], b"ready");
        assert!(
            event.is_set(),
            "a read done at once left its event unset (manual reset: {manual_reset})"
        );
    }

    // A request that fails at once sets it too.
    drop(b);
    let event = Event::new(true, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    // SAFETY: the static message and `overlapped` outlive the call, which fails at once
    // (the peer is gone), so nothing keeps the pointers.
    let wrote = unsafe { socket.write_overlapped(b"gone".as_ptr(), 4, &overlapped) };
    assert_eq!(errno(wrote), libc::EPIPE);
    assert_eq!(errno(overlapped.get_result(false)), libc::EPIPE);
    assert!(
        event.is_set(),
        "a write failed at once left its event unset"
    );
}

/// Guards 05007d4 ("tickets were per socket, so one socket could finish another's
/// record"): each socket numbered its requests from 1, so two sockets on one port issued
/// the same tickets, and `finish` on the wrong socket took that socket's own result for
/// the other's record. Tickets are unique in the process now.
#[test]
fn regression_one_socket_could_finish_another_sockets_record() {
    let port = Port::new().unwrap();
    let (a, mut a_peer) = unix_pair();
    let (b, mut b_peer) = unix_pair();
    let a = Socket::associated(a, &port, 1).unwrap();
    let b = Socket::associated(b, &port, 2).unwrap();
    let a_ticket = pending(a.recv(vec![0; 8]));
    let b_ticket = pending(b.recv(vec![0; 8]));
    assert_ne!(
        a_ticket, b_ticket,
        "two sockets' pending requests share a ticket"
    );
    a_peer.write_all(b"for a").unwrap();
    b_peer.write_all(b"for b").unwrap();
    let mut records: HashMap<u64, Completion> = (0..2)
        .map(|_| {
            let record = next(&port);
            (record.key(), record)
        })
        .collect();
    let a_record = records.remove(&1).expect("a record for socket A");
    let b_record = records.remove(&2).expect("a record for socket B");
    assert_eq!(Ticket::of(&a_record), a_ticket);
    assert_eq!(Ticket::of(&b_record), b_ticket);

    assert_eq!(
        errno(b.finish(&a_record)),
        libc::EINVAL,
        "socket B finished socket A's record"
    );
    // Neither socket's result was taken by the wrong call.
    let a_done = a.finish(&a_record).expect("A's result is still there");
    assert_eq!(&a_done.buf[..a_done.result.unwrap()], b"for a");
    let b_done = b.finish(&b_record).expect("B's result is still there");
    assert_eq!(&b_done.buf[..b_done.result.unwrap()], b"for b");
    assert_no_record(&port, QUIET);
}

/// Guards the fix of "a forked child's sockets went into the parent's poll set": the epoll
/// instance of a port made before a `fork` is shared with the child, and epoll names a
/// socket by its address in the memory of the process that registered it. A child's new
/// socket on the parent's port went into that poll set, so the parent's waits took the
/// child's readiness (and read the child's addresses as its own), and the child waited for
/// ever; on the thread drive, for a reactor thread only the parent has. Now a child makes
/// its own poll set for the port on first use, never waits on the parent's, and a socket
/// the parent registered fails at once in the child (`EBADF`) instead of taking the
/// parent's registration with it (`ffi/tests/c/fork.c` also closes it in the child). A
/// socket with no port likewise gets the child's own reactor thread. The parent's read,
/// waiting through all of it, completes.
#[test]
#[cfg_attr(iocp_tsan, ignore)] // ThreadSanitizer ends a child that starts threads after a fork.
fn regression_a_forked_childs_sockets_went_into_the_parents_poll_set() {
    for drive in DRIVES {
        let port = ports::port(drive);
        let (a, mut a_peer) = unix_pair();
        let parents = Socket::associated(a, &port, 1).unwrap();
        let ticket = pending(parents.recv(vec![0; 5]));

        let code = in_forked_child(|| {
            for round in 0..50 {
                let (b, mut b_peer) = unix_pair();
                let socket = Socket::associated(b, &port, 2).unwrap();
                let ticket = pending(socket.recv(vec![0; 5]));
                b_peer.write_all(b"child").unwrap();
                let record = port.get(Some(CHILD_PATIENCE)).unwrap();
                if (record.key(), Ticket::of(&record)) != (2, ticket) {
                    return 10 + round.min(50);
                }
                if socket.finish(&record).unwrap().buf != b"child" {
                    return 2;
                }
            }
            let (c, mut c_peer) = unix_pair();
            let portless = Socket::unassociated(c).unwrap();
            let event = Event::new(true, false).unwrap();
            let overlapped = Overlapped::with_event(&event);
            let mut buf = [0u8; 5];
            // SAFETY: `buf` and `overlapped` outlive the request, which completes before
            // the wait below returns.
            let read = unsafe { portless.read_overlapped(buf.as_mut_ptr(), 5, &overlapped) };
            if !matches!(read, Ok(None)) {
                return 3;
            }
            c_peer.write_all(b"loose").unwrap();
            if event.wait(Some(CHILD_PATIENCE)).is_err() || &buf != b"loose" {
                return 4;
            }
            if errno(parents.recv(vec![0; 5])) != libc::EBADF {
                return 5;
            }
            0
        });
        assert_eq!(
            code, 0,
            "{drive:?}, in the child: 1x, round x took another record; 2, wrong bytes; 3, the \
             portless read did not wait; 4, it never came; 5, the parent's socket was not \
             refused; 101, a panic"
        );
        a_peer.write_all(b"first").unwrap();
        let record = next(&port);
        assert_eq!(
            (record.key(), Ticket::of(&record)),
            (1, ticket),
            "{drive:?}"
        );
        assert_eq!(parents.finish(&record).unwrap().buf, b"first", "{drive:?}");
    }
}
