//! Engine defects these tests found: inline waiters handing the reactor on, the concurrency
//! value and socket completions, a refused connect with a receive queued behind it, polling
//! a port, reactor threads and descriptors released with their port, send order.

use crate::common::errno;
use crate::common::pending;
use crate::common::ports::{assert_no_record, each_drive, next, port};
use crate::common::rng::pattern;
use crate::common::sockets::{tcp_socket, unix_pair};
use crate::common::timing::{PATIENCE, SETTLE};
use crate::{
    fill_until_pending, first_difference, loopback_socket, read_to_eof, small_tcp_pair,
    wait_readable, Socket, QUIET,
};
use iocp::{Completion, Drive, Port, Submitted, Ticket};
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Threads of this process named `name` (by `/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Open descriptors of this process whose link reads `target`.
fn descriptors_of(target: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|link| link == Path::new(target))
        .count()
}

#[test]
fn an_inline_waiter_parked_before_the_first_pending_request_reaps_its_completion() {
    let port = port(Drive::Inline);
    let (a, mut b) = unix_pair();
    let socket = Socket::associated(a, &port, 70).unwrap();
    let waiter = {
        let port = port.clone();
        thread::spawn(move || {
            let start = Instant::now();
            (port.get(Some(Duration::from_secs(3))), start.elapsed())
        })
    };
    thread::sleep(SETTLE);
    let ticket = pending(socket.recv(vec![0; 8]));
    b.write_all(b"hi").unwrap();
    let (record, waited) = waiter.join().unwrap();
    let record = record.expect("the waiting thread reaps the completion");
    assert_eq!((record.key(), Ticket::of(&record)), (70, ticket));
    assert!(
        waited < Duration::from_secs(2),
        "reaped only after {waited:?}"
    );
}

#[test]
fn a_follower_takes_over_polling_when_the_inline_leader_times_out() {
    let port = port(Drive::Inline);
    let (a, mut b) = unix_pair();
    let socket = Socket::associated(a, &port, 71).unwrap();
    let ticket = pending(socket.recv(vec![0; 8]));
    let waiter = |timeout: Duration| {
        let port = port.clone();
        thread::spawn(move || {
            let start = Instant::now();
            (port.get(Some(timeout)), start.elapsed())
        })
    };
    let leader = waiter(Duration::from_millis(200));
    thread::sleep(QUIET);
    let follower = waiter(Duration::from_secs(3));
    let (led, _) = leader.join().unwrap();
    assert_eq!(errno(led), libc::ETIMEDOUT);
    thread::sleep(QUIET);
    b.write_all(b"hi").unwrap();
    let (record, waited) = follower.join().unwrap();
    let record = record.expect("the follower reaps the completion");
    assert_eq!((record.key(), Ticket::of(&record)), (71, ticket));
    assert!(
        waited < Duration::from_secs(2),
        "reaped only after {waited:?}"
    );
}

/// With a concurrency value of 1: thread X takes a record and stays released; thread Y
/// waits (and, in the inline drive, polls the sockets); a completion arrives that Y may not
/// take yet; then X exits, which counts it out. Y should take the record promptly.
/// Returns how long Y waited after X exited.
fn completion_after_a_released_thread_exits(drive: Drive) -> Duration {
    let port = Port::builder().drive(drive).concurrency(1).build().unwrap();
    let (a, mut b) = unix_pair();
    let socket = Socket::associated(a, &port, 73).unwrap();
    let ticket = pending(socket.recv(vec![0; 8]));
    port.post(Completion::new(1, 0, 0)).unwrap();
    let (exit, exiting) = mpsc::channel::<()>();
    let released = {
        let port = port.clone();
        thread::spawn(move || {
            let record = port.get(Some(PATIENCE)).unwrap();
            assert_eq!(record.key(), 1);
            // Stay released (not back in `get`) until told to exit.
            let _ = exiting.recv_timeout(PATIENCE);
        })
    };
    thread::sleep(SETTLE);
    let waiter = {
        let port = port.clone();
        thread::spawn(move || port.get(Some(Duration::from_secs(3))))
    };
    thread::sleep(SETTLE);
    b.write_all(b"z").unwrap();
    thread::sleep(SETTLE);
    exit.send(()).unwrap();
    released.join().unwrap();
    let exited = Instant::now();
    let record = waiter
        .join()
        .unwrap()
        .expect("the waiter takes the completion");
    assert_eq!((record.key(), Ticket::of(&record)), (73, ticket));
    exited.elapsed()
}

#[test]
fn a_thread_held_back_by_the_concurrency_value_takes_a_socket_completion_once_released() {
    let waited = completion_after_a_released_thread_exits(Drive::Thread);
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
}

#[test]
fn an_inline_leader_held_back_by_the_concurrency_value_takes_a_completion_once_released() {
    let waited = completion_after_a_released_thread_exits(Drive::Inline);
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
}

/// A listener on 127.0.0.1 whose accept queue is full; the connection that fills it; and
/// a socket that holds the port (bound, not listening) once the listener is dropped.
///
/// Linux drops the SYN of a further connect, which stays in progress (`SYN_SENT`) until
/// its SYN is retransmitted, about a second later; if the listener has been dropped by
/// then, the holder keeps any other listener off the port, so that SYN is refused. A
/// backlog of zero holds one connection.
fn full_listener() -> (TcpListener, OwnedFd, TcpStream) {
    let listener = loopback_socket(0, true);
    // SAFETY: listen(2) on a socket this function owns; no pointers.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(rc, 0, "listen: {}", io::Error::last_os_error());
    let listener = TcpListener::from(listener);
    let addr = listener.local_addr().unwrap();
    let holder = loopback_socket(addr.port(), true);
    let filler = TcpStream::connect(addr).unwrap();
    // The queue is full once the filler's handshake has reached it.
    wait_readable(listener.as_raw_fd());
    (listener, holder, filler)
}

/// Guards 05007d4 ("a recv queued during a connect took the connect's SO_ERROR and left
/// the connect pending forever"): the recv must queue while the connect is in progress,
/// and the refusal that comes later belongs to the connect.
#[test]
fn a_refused_connect_completes_even_with_a_recv_queued_behind_it() {
    each_drive(|drive| {
        let port = port(drive);
        let socket = Socket::associated(tcp_socket(libc::AF_INET), &port, 74).unwrap();
        // On loopback the refusal of a connect to a closed port comes back at once: it
        // may beat the connect call's return, or the recv's submission. A full listener
        // keeps the connect in progress for a second instead.
        let (listener, _holder, _filler) = full_listener();
        let connect = pending(socket.connect(listener.local_addr().unwrap()));
        let recv = pending(socket.recv(vec![0; 8]));
        // The retransmitted SYN finds no listener.
        drop(listener);
        let mut results = HashMap::new();
        while results.len() < 2 {
            let record = next(&port);
            assert_eq!(record.key(), 74, "{record:?}");
            let ticket = Ticket::of(&record);
            assert!(ticket == connect || ticket == recv, "{record:?}");
            let finished = socket.finish(&record).unwrap();
            eprintln!("{drive:?} #{ticket}: {:?}", finished.result);
            assert!(
                results.insert(ticket, finished.result).is_none(),
                "two records for #{ticket}"
            );
        }
        assert_eq!(
            errno(results.remove(&connect).unwrap()),
            libc::ECONNREFUSED,
            "the connect's error went elsewhere"
        );
        // Linux ends a read on a reset socket with end of stream; an error is fine too, as
        // long as it is not the one the connect owns.
        match results.remove(&recv).unwrap() {
            Ok(0) => {}
            Ok(n) => panic!("a recv on a refused socket got {n} bytes"),
            Err(err) => assert_ne!(
                err.raw_os_error(),
                Some(libc::ECONNREFUSED),
                "the recv took the connect's error"
            ),
        }
        assert_no_record(&port, QUIET);
    });
}

/// Polls with zero-timeout `get` (and `get_many` with `min == 0`) for up to a second.
fn poll_for_completion(port: &Port) -> (bool, bool) {
    let (a, mut b) = unix_pair();
    let socket = Socket::associated(a, port, 72).unwrap();
    pending(socket.recv(vec![0; 8]));
    b.write_all(b"x").unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    let by_get = loop {
        if port.get(Some(Duration::ZERO)).is_ok() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(1));
    };
    pending(socket.recv(vec![0; 8]));
    b.write_all(b"y").unwrap();
    let mut out = [Completion::default(); 4];
    let deadline = Instant::now() + Duration::from_secs(1);
    let by_get_many = loop {
        if port.get_many(&mut out, 0, None).unwrap().count == 1 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(1));
    };
    (by_get, by_get_many)
}

#[test]
fn polling_a_thread_driven_port_sees_socket_completions() {
    assert_eq!(poll_for_completion(&port(Drive::Thread)), (true, true));
}

#[test]
fn polling_an_inline_driven_port_sees_socket_completions() {
    assert_eq!(poll_for_completion(&port(Drive::Inline)), (true, true));
}

#[test]
fn dropping_a_thread_driven_port_ends_its_reactor_thread() {
    const PORTS: usize = 16;
    let before = threads_named("iocp-reactor");
    for _ in 0..PORTS {
        let port = port(Drive::Thread);
        let (a, _b) = unix_pair();
        let socket = Socket::associated(a, &port, 1).unwrap();
        pending(socket.recv(vec![0; 8]));
        drop(socket);
        drop(port);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut after = threads_named("iocp-reactor");
    while after >= before + PORTS / 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        after = threads_named("iocp-reactor");
    }
    // Other tests running now may hold a few reactor threads of their own.
    assert!(
        after < before + PORTS / 2,
        "{before} reactor threads before, {after} after dropping {PORTS} ports"
    );
}

/// The scheduling policy of each of this process's threads named `name`.
fn policies_of(name: &str) -> Vec<libc::c_int> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            let tid: libc::pid_t = task.file_name()?.to_str()?.parse().ok()?;
            // SAFETY: no pointer is passed; a thread gone meanwhile fails with ESRCH.
            let policy = unsafe { libc::sched_getscheduler(tid) };
            (comm.trim_end() == name && policy >= 0).then_some(policy)
        })
        .collect()
}

#[test]
fn a_reactor_thread_runs_as_a_batch_thread() {
    let port = port(Drive::Thread);
    let (a, _b) = unix_pair();
    let socket = Socket::associated(a, &port, 1).unwrap();
    pending(socket.recv(vec![0; 8]));
    // The thread may not have named itself yet, and other tests' reactor threads may be
    // starting (named, policy not yet set): each one must be a batch thread by the deadline.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut policies = policies_of("iocp-reactor");
    let settled = |policies: &[libc::c_int]| {
        !policies.is_empty() && policies.iter().all(|&p| p == libc::SCHED_BATCH)
    };
    while !settled(&policies) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
        policies = policies_of("iocp-reactor");
    }
    assert!(!policies.is_empty(), "no reactor thread found");
    assert!(
        policies.iter().all(|&p| p == libc::SCHED_BATCH),
        "reactor threads' policies: {policies:?}"
    );
}

#[test]
fn dropping_an_inline_driven_port_and_its_sockets_releases_the_poll_descriptors() {
    const PORTS: usize = 32;
    let before = descriptors_of("anon_inode:[eventpoll]");
    for _ in 0..PORTS {
        let port = port(Drive::Inline);
        let (a, _b) = unix_pair();
        let socket = Socket::associated(a, &port, 1).unwrap();
        pending(socket.recv(vec![0; 8]));
        drop(socket);
        drop(port);
    }
    let after = descriptors_of("anon_inode:[eventpoll]");
    // Each reactor holds two epoll descriptors; other tests may hold a few.
    assert!(
        after < before + PORTS,
        "{before} epoll descriptors before, {after} after dropping {PORTS} ports"
    );
}

#[test]
fn queued_sends_reach_the_peer_in_submission_order() {
    each_drive(|drive| {
        let port = port(drive);
        let (server, client) = small_tcp_pair();
        let socket = Socket::associated(server, &port, 80).unwrap();
        // What the application means to send, in order: the filler, then A, then B.
        let (filled, filler) = fill_until_pending(&socket, 64 * 1024);
        let mut expected = vec![b'F'; filled + 64 * 1024];
        let a = pattern(4, 256 * 1024);
        let b = b"the end".to_vec();
        let mut outstanding: HashMap<Ticket, ()> = HashMap::from([(filler, ())]);
        outstanding.insert(pending(socket.send(a.clone())), ());
        outstanding.insert(pending(socket.send(b.clone())), ());
        expected.extend_from_slice(&a);
        expected.extend_from_slice(&b);
        let reader = thread::spawn(move || read_to_eof(client, 64 << 20));
        // Resend every remainder as soon as its record says the send was short.
        for _ in 0..10_000 {
            if outstanding.is_empty() {
                break;
            }
            let record = next(&port);
            assert!(outstanding.remove(&Ticket::of(&record)).is_some());
            let sent = socket.finish(&record).unwrap();
            let n = sent.result.unwrap();
            let mut rest = sent.buf[n..].to_vec();
            while !rest.is_empty() {
                match socket.send(rest).unwrap() {
                    Submitted::Pending(ticket) => {
                        outstanding.insert(ticket, ());
                        break;
                    }
                    Submitted::Done(done) => rest = done.buf[done.result.unwrap()..].to_vec(),
                }
            }
        }
        assert!(outstanding.is_empty());
        socket.close().unwrap();
        let received = reader.join().unwrap();
        assert_eq!(received.len(), expected.len());
        assert_eq!(
            first_difference(&received, &expected),
            None,
            "stream out of order"
        );
    });
}
