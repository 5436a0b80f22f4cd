//! Cancellation racing completion, and cancelling one or all of a socket's requests.

use crate::common::errno;
use crate::common::pending;
use crate::common::ports::{assert_no_record, each_drive, next, port};
use crate::common::sockets::unix_pair;
use crate::common::timing::PATIENCE;
use crate::{fill_until_pending, finish_next, small_tcp_pair, QUIET};
use iocp::{Drive, Overlapped, Socket, Ticket};
use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

/// Many times: a pending 1-byte-or-more recv, then at once the peer writes, `interfere`
/// runs on a third thread, and this thread waits for the record. Exactly one record per
/// request, with the data or `ECANCELED`, consistent with what `interfere` reported.
///
/// `interfere` returns `Some(true)` when it claims the request (it must then complete with
/// `ECANCELED`), `Some(false)` when it says the completion won, `None` when it cannot tell.
fn race_completion(
    drive: Drive,
    iterations: u64,
    interfere: impl Fn(&Socket, Ticket) -> Option<bool> + Sync,
) -> (usize, usize) {
    let port = port(drive);
    let (mut cancelled, mut completed) = (0, 0);
    for i in 0..iterations {
        let (a, b) = unix_pair();
        let socket = Socket::associated(a, &port, i).unwrap();
        let ticket = pending(socket.recv(vec![0; 8]));
        let barrier = Barrier::new(3);
        let (interfered, record) = thread::scope(|s| {
            let writer = s.spawn(|| {
                barrier.wait();
                (&b).write_all(b"x")
            });
            let canceller = s.spawn(|| {
                barrier.wait();
                interfere(&socket, ticket)
            });
            barrier.wait();
            let record = port.get(Some(PATIENCE));
            match writer.join().unwrap() {
                // A close that won leaves the writer's peer gone.
                Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
                written => written.unwrap(),
            }
            (canceller.join().unwrap(), record)
        });
        let record = record.unwrap_or_else(|e| panic!("iteration {i}: no record: {e}"));
        assert_eq!(record.key(), i, "one record per request, in order");
        assert_eq!(Ticket::of(&record), ticket);
        let finished = socket.finish(&record).unwrap();
        match (interfered, &finished.result) {
            (Some(true) | None, Err(err)) if err.raw_os_error() == Some(libc::ECANCELED) => {
                cancelled += 1
            }
            (Some(false) | None, Ok(1)) => {
                assert_eq!(finished.buf[0], b'x');
                completed += 1;
            }
            other => panic!("iteration {i}: inconsistent outcome {other:?}"),
        }
    }
    assert_no_record(&port, Duration::from_millis(200));
    (cancelled, completed)
}

#[test]
fn cancel_racing_completion_yields_exactly_one_record_per_request() {
    each_drive(|drive| {
        let (cancelled, completed) = race_completion(drive, 500, |s, t| match s.cancel(t) {
            Ok(()) => Some(true),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Some(false),
            Err(err) => panic!("cancel: {err}"),
        });
        eprintln!("{drive:?}: {cancelled} cancelled, {completed} completed");
        assert_eq!(cancelled + completed, 500);
    });
}

#[test]
fn close_racing_completion_yields_exactly_one_record_per_request() {
    each_drive(|drive| {
        let (cancelled, completed) = race_completion(drive, 200, |s, _| {
            s.close().expect("close");
            None
        });
        eprintln!("{drive:?}: {cancelled} cancelled by close, {completed} completed");
        assert_eq!(cancelled + completed, 200);
    });
}

#[test]
fn cancel_with_nothing_pending_fails_enoent() {
    each_drive(|drive| {
        let port = port(drive);
        let (a, mut b) = unix_pair();
        let socket = Socket::associated(a, &port, 1).unwrap();
        let overlapped = Overlapped::new();
        assert_eq!(errno(socket.cancel(Ticket::from_raw(1))), libc::ENOENT);
        assert_eq!(errno(socket.cancel_all()), libc::ENOENT);
        assert_eq!(errno(socket.cancel_overlapped(&overlapped)), libc::ENOENT);
        // A request that already completed cannot be cancelled.
        let ticket = pending(socket.recv(vec![0; 4]));
        b.write_all(b"done").unwrap();
        assert_eq!(finish_next(&port, &socket, 1, ticket).result.unwrap(), 4);
        assert_eq!(errno(socket.cancel(ticket)), libc::ENOENT);
        assert_eq!(errno(socket.cancel_all()), libc::ENOENT);
        assert_no_record(&port, QUIET);
    });
}

#[test]
fn cancel_all_cancels_every_pending_request_and_counts_them() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, client) = small_tcp_pair();
        let socket = Socket::associated(server, &port, 21).unwrap();
        let mut tickets: HashSet<Ticket> =
            (0..3).map(|_| pending(socket.recv(vec![0; 4]))).collect();
        let (_, send_ticket) = fill_until_pending(&socket, 64 * 1024);
        tickets.insert(send_ticket);
        tickets.insert(pending(socket.send(vec![b'S'; 100])));
        assert_eq!(socket.cancel_all().unwrap(), 5);
        for _ in 0..5 {
            let record = next(&port);
            assert_eq!(record.key(), 21);
            assert!(tickets.remove(&Ticket::of(&record)), "{record:?}");
            assert_eq!(record.error() as i32, libc::ECANCELED);
            let finished = socket.finish(&record).unwrap();
            assert_eq!(errno(finished.result), libc::ECANCELED);
            assert!(!finished.buf.is_empty(), "the buffer comes back");
        }
        assert_eq!(errno(socket.cancel_all()), libc::ENOENT);
        assert_no_record(&port, QUIET);
        drop(client);
    });
}

#[test]
fn cancelling_one_of_three_queued_recvs_leaves_the_others_in_order() {
    each_drive(|drive| {
        let port = port(drive);
        let (a, mut b) = unix_pair();
        let socket = Socket::associated(a, &port, 2).unwrap();
        let first = pending(socket.recv(vec![0; 1]));
        let middle = pending(socket.recv(vec![0; 1]));
        let last = pending(socket.recv(vec![0; 1]));
        socket.cancel(middle).unwrap();
        assert_eq!(errno(socket.cancel(middle)), libc::ENOENT);
        assert_eq!(
            errno(finish_next(&port, &socket, 2, middle).result),
            libc::ECANCELED
        );
        b.write_all(b"xy").unwrap();
        let one = finish_next(&port, &socket, 2, first);
        let two = finish_next(&port, &socket, 2, last);
        assert_eq!((one.result.unwrap(), one.buf[0]), (1, b'x'));
        assert_eq!((two.result.unwrap(), two.buf[0]), (1, b'y'));
        assert_no_record(&port, QUIET);
    });
}
