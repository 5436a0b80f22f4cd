//! Each injected fault gives its documented outcome, and no record is lost or doubled.
//!
//! The faults are scoped to the descriptors and threads each test creates (see the parent
//! module), so these tests run alongside the crate's others.

use super::{fail, Call};
use crate::file::tests::scratch_file;
use crate::{
    Aiocb, Completion, DrainStatus, Drive, Event, File, FilePool, LioMode, Opcode, Overlapped,
    Port, Socket, Submitted, Ticket,
};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const LONG: Option<Duration> = Some(Duration::from_secs(10));
const SHORT: Option<Duration> = Some(Duration::from_millis(150));

fn errno(err: &io::Error) -> i32 {
    err.raw_os_error()
        .unwrap_or_else(|| panic!("no errno in {err}"))
}

/// A connected loopback pair: the engine's socket (associated with `port` under key 1) and
/// the plain peer.
fn tcp_pair(port: &Port) -> (Socket, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    (Socket::associated(ours, port, 1).unwrap(), peer)
}

fn done(submitted: Submitted) -> crate::OpResult {
    match submitted {
        Submitted::Done(result) => result,
        Submitted::Pending(ticket) => panic!("expected completion at once, got ticket {ticket}"),
    }
}

fn pending(submitted: Submitted) -> Ticket {
    match submitted {
        Submitted::Pending(ticket) => ticket,
        Submitted::Done(result) => panic!("expected a pending request, got {result:?}"),
    }
}

/// The result of a request that may complete at once or through its one record.
fn outcome(port: &Port, socket: &Socket, submitted: Submitted) -> crate::OpResult {
    match submitted {
        Submitted::Done(result) => result,
        Submitted::Pending(ticket) => socket.finish(&record_for(port, ticket)).unwrap(),
    }
}

/// The one record for `ticket`; fails on a timeout or a record for anything else.
fn record_for(port: &Port, ticket: Ticket) -> Completion {
    let record = port.get(LONG).expect("the request's record");
    assert_eq!(Ticket::of(&record), ticket, "a record for another request");
    record
}

fn assert_no_record(port: &Port) {
    match port.get(Some(Duration::ZERO)) {
        Err(err) => assert_eq!(errno(&err), libc::ETIMEDOUT),
        Ok(record) => panic!("unexpected record {record:?}"),
    }
}

#[test]
fn eintr_is_retried_by_socket_calls() {
    let port = Port::new().unwrap();
    let (socket, mut peer) = tcp_pair(&port);
    let fd = socket.raw_fd();

    let sends = fail(Call::Send, libc::EINTR).on_fd(fd).times(3).arm();
    let sent = done(socket.send(b"hello".to_vec()).unwrap());
    assert_eq!(sent.result.unwrap(), 5);
    assert_eq!(sends.hits(), 3);
    let mut got = [0; 5];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    peer.write_all(b"world").unwrap();
    let recvs = fail(Call::Recv, libc::EINTR).on_fd(fd).times(3).arm();
    // The bytes are on their way through loopback: wait for them with a queued request.
    let result = outcome(&port, &socket, socket.recv(vec![0; 16]).unwrap());
    assert_eq!(result.result.unwrap(), 5);
    assert_eq!(&result.buf[..5], b"world");
    assert_eq!(recvs.hits(), 3);
    assert_no_record(&port);
}

/// `EAGAIN` says the socket is not ready: the request waits for the socket's next
/// readiness and then completes once, with every byte that came.
#[test]
fn eagain_on_recv_waits_for_the_next_readiness() {
    let port = Port::new().unwrap();
    let (socket, mut peer) = tcp_pair(&port);
    let fd = socket.raw_fd();
    // Register the socket with the reactor first: a request that waits does that.
    let first = pending(socket.recv(vec![0; 4]).unwrap());
    peer.write_all(b"ping").unwrap();
    let got = socket.finish(&record_for(&port, first)).unwrap();
    assert_eq!(&got.buf[..got.result.unwrap()], b"ping");

    peer.write_all(b"one").unwrap();
    // With no request queued, a wait collects the readiness "one" raises and does nothing.
    assert!(port.get(SHORT).is_err(), "a record with no request");
    let again = fail(Call::Recv, libc::EAGAIN).on_fd(fd).arm();
    let ticket = pending(socket.recv(vec![0; 16]).unwrap());
    assert_eq!(again.hits(), 1);
    // The readiness for "one" was spent before the fault: the request waits for the next.
    assert!(port.get(SHORT).is_err(), "completed without readiness");
    peer.write_all(b"two").unwrap();
    let got = socket.finish(&record_for(&port, ticket)).unwrap();
    assert_eq!(&got.buf[..got.result.unwrap()], b"onetwo");
    assert_no_record(&port);
}

#[test]
fn eagain_on_send_queues_the_send() {
    let port = Port::new().unwrap();
    let (socket, mut peer) = tcp_pair(&port);
    let fd = socket.raw_fd();
    let again = fail(Call::Send, libc::EAGAIN).on_fd(fd).arm();
    let ticket = pending(socket.send(b"queued".to_vec()).unwrap());
    assert_eq!(again.hits(), 1);
    // Registering the socket reports it writable: the send runs then, once.
    let sent = socket.finish(&record_for(&port, ticket)).unwrap();
    assert_eq!(sent.result.unwrap(), 6);
    let mut got = [0; 6];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"queued");
    assert_no_record(&port);
}

/// A hard error is the request's result, at once or as its one record; the data behind it
/// is still there for the next request.
#[test]
fn enomem_and_ebadf_are_request_results() {
    let port = Port::new().unwrap();
    let (socket, mut peer) = tcp_pair(&port);
    let fd = socket.raw_fd();

    let nomem = fail(Call::Send, libc::ENOMEM).on_fd(fd).arm();
    let failed = done(socket.send(b"kept".to_vec()).unwrap());
    assert_eq!(errno(&failed.result.unwrap_err()), libc::ENOMEM);
    assert_eq!(failed.buf, b"kept", "the buffer comes back untouched");
    assert_eq!(nomem.hits(), 1);

    // Queued first, then failing when readiness runs it: one record with the errno.
    let ticket = pending(socket.recv(vec![0; 8]).unwrap());
    let badf = fail(Call::Recv, libc::EBADF).on_fd(fd).arm();
    peer.write_all(b"data").unwrap();
    let record = record_for(&port, ticket);
    assert_eq!(record.error(), libc::EBADF as u32);
    assert_eq!(
        errno(&socket.finish(&record).unwrap().result.unwrap_err()),
        libc::EBADF
    );
    assert_eq!(badf.hits(), 1);
    drop(badf);

    // The bytes the failed request did not take go to the next one.
    let got = outcome(&port, &socket, socket.recv(vec![0; 8]).unwrap());
    assert_eq!(&got.buf[..got.result.unwrap()], b"data");
    assert_no_record(&port);
}

/// An accept that fails leaves the connection in the backlog for the next accept.
#[test]
fn enomem_on_accept_loses_no_connection() {
    let port = Port::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = Socket::associated(listener, &port, 7).unwrap();
    let fd = listener.raw_fd();

    let ticket = pending(listener.accept().unwrap());
    let nomem = fail(Call::Accept, libc::ENOMEM).on_fd(fd).arm();
    let mut client = TcpStream::connect(addr).unwrap();
    let record = record_for(&port, ticket);
    assert_eq!(record.error(), libc::ENOMEM as u32);
    assert!(listener.finish(&record).unwrap().accepted.is_none());
    assert_eq!(nomem.hits(), 1);

    let accepted = done(listener.accept().unwrap());
    let stream = accepted.accepted.expect("the connection is still there");
    let stream = Socket::associated(stream, &port, 8).unwrap();
    client.write_all(b"hi").unwrap();
    let got = outcome(&port, &stream, stream.recv(vec![0; 2]).unwrap());
    assert_eq!(&got.buf[..got.result.unwrap()], b"hi");
    assert_no_record(&port);
}

#[test]
fn faults_on_datagrams_lose_no_datagram() {
    let port = Port::new().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket = Socket::associated(udp, &port, 3).unwrap();
    let fd = socket.raw_fd();

    let ticket = pending(socket.recv_from(vec![0; 64]).unwrap());
    let faults = [
        fail(Call::RecvFrom, libc::EINTR).on_fd(fd).times(2).arm(),
        fail(Call::SendTo, libc::ENOMEM).on_fd(fd).arm(),
    ];
    peer.send_to(b"datagram", addr).unwrap();
    let got = socket.finish(&record_for(&port, ticket)).unwrap();
    assert_eq!(&got.buf[..got.result.unwrap()], b"datagram");
    assert_eq!(got.peer, Some(peer.local_addr().unwrap()));

    let failed = done(
        socket
            .send_to(b"back".to_vec(), peer.local_addr().unwrap())
            .unwrap(),
    );
    assert_eq!(errno(&failed.result.unwrap_err()), libc::ENOMEM);
    assert_eq!(faults[0].hits(), 2);
    assert_eq!(faults[1].hits(), 1);
    assert_no_record(&port);
}

#[test]
fn port_creation_fails_cleanly() {
    let nomem = fail(Call::HandleFd, libc::ENOMEM).on_this_thread().arm();
    assert_eq!(errno(&Port::new().unwrap_err()), libc::ENOMEM);
    assert_eq!(nomem.hits(), 1);
    // The descriptor made, then found closed: the port is not made either.
    let badf = fail(Call::Fstat, libc::EBADF).on_this_thread().arm();
    assert_eq!(errno(&Port::new().unwrap_err()), libc::EBADF);
    assert_eq!(badf.hits(), 1);
    drop((nomem, badf));
    let port = Port::new().unwrap();
    port.post(Completion::new(1, 2, 3)).unwrap();
    assert_eq!(port.get(LONG).unwrap(), Completion::new(1, 2, 3));
}

/// Without memory for their state, a socket, an event, a file pool and a caller's
/// descriptor are not made (`ENOMEM`), and a request that needed a reactor fails alone:
/// nothing is queued or posted; each works once memory is there again.
#[test]
fn allocation_failures_fail_each_creation_cleanly() {
    let port = Port::new().unwrap();
    let nomem = fail(Call::Alloc, libc::ENOMEM)
        .on_this_thread()
        .times(if cfg!(feature = "c-abi") { 4 } else { 3 })
        .arm();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(errno(&Socket::unassociated(udp).unwrap_err()), libc::ENOMEM);
    assert_eq!(errno(&Event::new(true, false).unwrap_err()), libc::ENOMEM);
    let pool = FilePool::builder().threads(1).build();
    assert_eq!(errno(&pool.unwrap_err()), libc::ENOMEM);
    #[cfg(feature = "c-abi")]
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    #[cfg(feature = "c-abi")]
    {
        let caller = crate::descriptor::associate(ours.as_raw_fd(), &port, 1);
        assert_eq!(errno(&caller.unwrap_err()), libc::ENOMEM);
    }
    assert_eq!(nomem.hits(), if cfg!(feature = "c-abi") { 4 } else { 3 });
    drop(nomem);
    #[cfg(feature = "c-abi")]
    crate::descriptor::associate(ours.as_raw_fd(), &port, 1).expect("associates now");
    Event::new(true, false).expect("an event now");

    // The first request that has to wait makes the port's reactor.
    let (socket, mut peer) = tcp_pair(&port);
    let nomem = fail(Call::Alloc, libc::ENOMEM).on_this_thread().arm();
    assert_eq!(errno(&socket.recv(vec![0; 8]).unwrap_err()), libc::ENOMEM);
    assert_eq!(nomem.hits(), 1);
    drop(nomem);
    assert_no_record(&port);
    let ticket = match socket.recv(vec![0; 8]).unwrap() {
        Submitted::Pending(ticket) => ticket,
        Submitted::Done(done) => panic!("nothing was sent yet: {done:?}"),
    };
    peer.write_all(b"after").unwrap();
    let record = port.get(LONG).unwrap();
    assert_eq!(Ticket::of(&record), ticket);
    let done = socket.finish(&record).unwrap();
    assert_eq!(&done.buf[..done.result.unwrap()], b"after");
    assert_no_record(&port);
}

/// Without memory for its ring a port is not made (`ENOMEM`, no descriptor taken: the
/// ring comes first); without memory for a thread's own lane the thread posts on the
/// shared lane, for good, and loses nothing.
#[test]
fn allocation_failures_fail_port_creation_and_move_posts_to_the_shared_lane() {
    let nomem = fail(Call::Alloc, libc::ENOMEM).on_this_thread().arm();
    assert_eq!(errno(&Port::new().unwrap_err()), libc::ENOMEM);
    assert_eq!(nomem.hits(), 1);
    drop(nomem);

    let port = Port::builder().capacity(8).build().unwrap();
    let poster = port.clone();
    thread::spawn(move || {
        let nomem = fail(Call::Alloc, libc::ENOMEM).on_this_thread().arm();
        for i in 0..100 {
            poster.post(Completion::new(1, 0, i)).unwrap();
        }
        assert_eq!(nomem.hits(), 1, "one try for a lane of its own");
    })
    .join()
    .unwrap();
    let got: Vec<usize> = (0..100)
        .map(|_| port.get(LONG).unwrap().overlapped())
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert_no_record(&port);
}

#[test]
fn associating_a_closed_descriptor_is_ebadf() {
    let port = Port::new().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let badf = fail(Call::Fstat, libc::EBADF).on_fd(udp.as_raw_fd()).arm();
    assert_eq!(
        errno(&Socket::associated(udp, &port, 1).unwrap_err()),
        libc::EBADF
    );
    assert_eq!(badf.hits(), 1);
}

fn file_result(file: &File, port: &Port, ticket: Ticket) -> crate::OpResult {
    file.finish(&record_for(port, ticket)).unwrap()
}

/// On the file pool's threads: `EINTR` is retried, every other errno is the request's one
/// record, and the file is unchanged by a failed write.
#[test]
fn file_pool_faults_give_one_record_each() {
    let port = Port::new().unwrap();
    let pool = FilePool::builder().threads(2).build().unwrap();
    let file = scratch_file(b"0123456789");
    let fd = file.as_raw_fd();
    let file = File::associated(file, &pool, &port, 5).unwrap();

    let intr = fail(Call::Pread, libc::EINTR).on_fd(fd).times(5).arm();
    let got = file_result(&file, &port, pending(file.read_at(vec![0; 4], 2).unwrap()));
    assert_eq!(&got.buf[..got.result.unwrap()], b"2345");
    assert_eq!(intr.hits(), 5);

    for (call, errno_) in [
        (Call::Pread, libc::ENOMEM),
        (Call::Pread, libc::EAGAIN),
        (Call::Pread, libc::EBADF),
        (Call::Pwrite, libc::ENOMEM),
        (Call::Fsync, libc::EBADF),
        (Call::Fdatasync, libc::EINTR),
    ] {
        let fault = fail(call, errno_).on_fd(fd).arm();
        let ticket = match call {
            Call::Pread => file.read_at(vec![0; 4], 0),
            Call::Pwrite => file.write_at(b"XXXX".to_vec(), 0),
            Call::Fsync => file.sync_all(),
            _ => file.sync_data(),
        }
        .unwrap();
        let record = record_for(&port, pending(ticket));
        let result = file.finish(&record).unwrap().result;
        if errno_ == libc::EINTR {
            assert!(
                result.is_ok(),
                "{call:?}: EINTR must be retried: {result:?}"
            );
            assert_eq!(record.error(), 0);
        } else {
            assert_eq!(errno(&result.unwrap_err()), errno_, "{call:?}");
            assert_eq!(record.error(), errno_ as u32, "{call:?}");
        }
        assert_eq!(fault.hits(), 1, "{call:?}");
    }
    let got = file_result(&file, &port, pending(file.read_at(vec![0; 10], 0).unwrap()));
    assert_eq!(&got.buf[..got.result.unwrap()], b"0123456789");
    assert_no_record(&port);
}

/// In a list, a faulted entry fails alone: `aio_error` says why, its record carries the
/// same errno, and the other entries complete. (`LIO_NOWAIT` rather than `NOWAIT_GMCS`,
/// which leaves the aiocbs alone.)
#[test]
fn lio_listio_entry_faults_fail_alone() {
    let port = Port::new().unwrap();
    let pool = FilePool::builder().threads(2).build().unwrap();
    let a = scratch_file(b"aaaaaaaa");
    let b = scratch_file(b"bbbbbbbb");
    let mut bufs = [[0u8; 8]; 2];
    let [buf_a, buf_b] = &mut bufs;
    let mut cbs = [
        Aiocb::new(a.as_raw_fd(), Opcode::Read, 0, buf_a.as_mut_ptr(), 8).with_port(&port),
        Aiocb::new(b.as_raw_fd(), Opcode::Read, 0, buf_b.as_mut_ptr(), 8).with_port(&port),
    ];
    let nomem = fail(Call::Pread, libc::ENOMEM).on_fd(b.as_raw_fd()).arm();
    let list: Vec<*mut Aiocb> = cbs.iter_mut().map(|cb| cb as *mut Aiocb).collect();
    // SAFETY: the aiocbs and their buffers outlive both records, dequeued below.
    unsafe { pool.lio_listio(LioMode::NoWait, &list) }.unwrap();
    let mut records = [port.get(LONG).unwrap(), port.get(LONG).unwrap()];
    records.sort_by_key(Completion::overlapped);
    let mut expected = [
        (list[0] as usize, 0, 8),
        (list[1] as usize, libc::ENOMEM as u32, 0),
    ];
    expected.sort();
    let seen: Vec<_> = records
        .iter()
        .map(|r| (r.overlapped(), r.error(), r.bytes()))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(cbs[0].error(), 0);
    assert_eq!(cbs[0].result().unwrap(), 8);
    assert_eq!(cbs[1].error(), libc::ENOMEM);
    assert_eq!(cbs[1].result().unwrap(), -1);
    assert_eq!(&bufs[0], b"aaaaaaaa");
    assert_eq!(nomem.hits(), 1);
    assert_no_record(&port);
}

/// A signal ends a sleeping port wait with `EINTR`; the interrupted waiter leaves no trace
/// in the wait stack that could swallow the next wake meant for another waiter.
#[test]
fn eintr_ends_a_port_wait_and_loses_no_wake() {
    let port = Port::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let other = {
        let port = port.clone();
        thread::spawn(move || {
            tx.send(()).unwrap();
            port.get(LONG)
        })
    };
    rx.recv().unwrap();
    thread::sleep(Duration::from_millis(20)); // let the other waiter go to sleep
    let intr = fail(Call::FutexWait, libc::EINTR).on_this_thread().arm();
    let started = Instant::now();
    let err = port.get(None).unwrap_err();
    assert_eq!(errno(&err), libc::EINTR);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(intr.hits(), 1);
    drop(intr);

    port.post(Completion::new(9, 9, 9)).unwrap();
    assert_eq!(other.join().unwrap().unwrap(), Completion::new(9, 9, 9));
    assert_no_record(&port);
}

#[test]
fn eintr_ends_a_batched_wait() {
    let port = Port::new().unwrap();
    let intr = fail(Call::FutexWait, libc::EINTR).on_this_thread().arm();
    let mut out = [Completion::default(); 4];
    let ended = port.get_many(&mut out, 1, None).unwrap();
    assert_eq!((ended.count, ended.status), (0, DrainStatus::Interrupted));
    assert_eq!(intr.hits(), 1);
    // The port is whole: the next batched wait takes what is posted.
    port.post(Completion::new(1, 1, 1)).unwrap();
    port.post(Completion::new(2, 2, 2)).unwrap();
    let got = port.get_many(&mut out, 2, LONG).unwrap();
    assert_eq!((got.count, got.status), (2, DrainStatus::Complete));
    assert_eq!(
        &out[..2],
        &[Completion::new(1, 1, 1), Completion::new(2, 2, 2)]
    );
}

/// Spurious futex returns (`EAGAIN`) and early timeouts change nothing: the wait still
/// ends at its deadline, never before, and a record posted meanwhile is taken.
///
/// Regression: a futex wait that reported `ETIMEDOUT` before the deadline ended the port
/// wait at once (after ~10 µs of a 150 ms timeout); `sys::futex_wait` now checks the clock.
#[test]
fn regression_early_futex_timeout_ended_port_wait() {
    let port = Port::new().unwrap();
    for errno_ in [libc::EAGAIN, libc::ETIMEDOUT] {
        // A thousand false returns, then the real wait: the deadline must hold across them.
        let fault = fail(Call::FutexWait, errno_)
            .on_this_thread()
            .times(1000)
            .arm();
        let started = Instant::now();
        let err = port.get(SHORT).unwrap_err();
        let waited = started.elapsed();
        assert_eq!(errno(&err), libc::ETIMEDOUT);
        assert!(
            waited >= SHORT.unwrap(),
            "errno {errno_}: timed out after {waited:?}"
        );
        assert_eq!(fault.hits(), 1000, "errno {errno_}");

        let poster = {
            let port = port.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                port.post(Completion::new(4, 4, 4)).unwrap();
            })
        };
        assert_eq!(port.get(LONG).unwrap(), Completion::new(4, 4, 4));
        poster.join().unwrap();
    }
}

/// An event wait is not ended by a signal (the documented `WaitForSingleObject` rule).
#[test]
fn event_waits_ride_out_futex_faults() {
    let event = Event::new(false, false).unwrap();
    let intr = fail(Call::FutexWait, libc::EINTR)
        .on_this_thread()
        .times(50)
        .arm();
    let setter = {
        let event = event.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            event.set();
        })
    };
    event.wait(LONG).unwrap();
    setter.join().unwrap();
    assert!(intr.hits() > 0);
}

/// Regression: as for port waits, an early `ETIMEDOUT` ended an event wait at once.
#[test]
fn regression_early_futex_timeout_ended_event_wait() {
    let event = Event::new(false, false).unwrap();
    let early = fail(Call::FutexWait, libc::ETIMEDOUT)
        .on_this_thread()
        .arm();
    let started = Instant::now();
    let err = event.wait(SHORT).unwrap_err();
    assert_eq!(errno(&err), libc::ETIMEDOUT);
    assert!(
        started.elapsed() >= SHORT.unwrap(),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(early.hits(), 1);
}

/// A port of `drive` with a connected loopback pair whose engine end has a receive pending
/// (so the socket is registered with the port's reactor): the port, the socket, the peer
/// and the pending ticket.
fn registered_pair(drive: Drive) -> (Port, Socket, TcpStream, Ticket) {
    let port = Port::builder().drive(drive).build().unwrap();
    let (socket, peer) = tcp_pair(&port);
    let ticket = pending(socket.recv(vec![0; 16]).unwrap());
    (port, socket, peer, ticket)
}

/// The bytes a finished receive brought.
fn received(socket: &Socket, record: &Completion) -> Vec<u8> {
    let got = socket.finish(record).unwrap();
    got.buf[..got.result.unwrap()].to_vec()
}

/// A signal in the inline leader's `epoll_wait` ends that port wait with `EINTR`, as it
/// ends a sleeping one; the readiness it interrupted is not lost: the next wait collects
/// it and the request completes once.
#[test]
fn eintr_in_an_inline_reactor_poll_ends_the_wait_and_loses_no_readiness() {
    let (port, socket, mut peer, ticket) = registered_pair(Drive::Inline);
    peer.write_all(b"data").unwrap();
    let intr = fail(Call::ReactorPoll, libc::EINTR).on_this_thread().arm();
    assert_eq!(errno(&port.get(LONG).unwrap_err()), libc::EINTR);
    assert_eq!(intr.hits(), 1);
    assert_eq!(received(&socket, &record_for(&port, ticket)), b"data");
    assert_no_record(&port);
}

/// Other poll failures (`ENOMEM`, `EBADF`) do not end an inline wait: it polls again, and
/// the readiness that was waiting completes the request once.
#[test]
fn other_inline_reactor_poll_failures_are_retried_and_lose_no_readiness() {
    let (port, socket, mut peer, ticket) = registered_pair(Drive::Inline);
    peer.write_all(b"data").unwrap();
    let faults = [
        fail(Call::ReactorPoll, libc::ENOMEM)
            .on_this_thread()
            .times(3)
            .arm(),
        fail(Call::ReactorPoll, libc::EBADF)
            .on_this_thread()
            .times(3)
            .arm(),
    ];
    let started = Instant::now();
    assert_eq!(received(&socket, &record_for(&port, ticket)), b"data");
    assert_eq!((faults[0].hits(), faults[1].hits()), (3, 3));
    // Each failed poll pauses a millisecond; six of them cost a few, not a timeout.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_no_record(&port);
}

/// A reactor thread whose poll fails (a signal, `ENOMEM`, `EBADF`) polls again: readiness
/// reaches the port exactly once, before and after the failures.
///
/// Regression: the thread asserted that only a signal could fail its poll, so in a debug
/// build the first `ENOMEM` killed it and the port's sockets never completed again.
#[test]
fn regression_a_failed_poll_killed_the_reactor_thread() {
    let (port, socket, mut peer, first) = registered_pair(Drive::Thread);
    let reactor = port.readiness(crate::net::Reactor::new).unwrap();
    let faults = [libc::EINTR, libc::ENOMEM, libc::EBADF].map(|errno_| {
        fail(Call::ReactorPoll, errno_)
            .on_fd(reactor.fault_fd())
            .times(2)
            .arm()
    });
    // The thread is inside `epoll_wait` already: this readiness ends that poll, and the
    // thread's next six polls fail.
    peer.write_all(b"one").unwrap();
    assert_eq!(received(&socket, &record_for(&port, first)), b"one");
    let second = pending(socket.recv(vec![0; 16]).unwrap());
    peer.write_all(b"two").unwrap();
    assert_eq!(received(&socket, &record_for(&port, second)), b"two");
    // The second readiness came through a poll that did not fail: all six had failed
    // before it.
    assert_eq!(faults.each_ref().map(|fault| fault.hits()), [2, 2, 2]);
    assert_no_record(&port);
}

/// A socket the reactor cannot register (`epoll_ctl` failing with `ENOMEM` or `ENOSPC`)
/// fails the request that needed it, at once, with that errno and no record; an
/// `OVERLAPPED` request's block completes with the errno too, so nobody waits on it. The
/// next request registers the socket and completes once.
#[test]
fn a_failed_registration_fails_the_request_alone() {
    for drive in [Drive::Inline, Drive::Thread] {
        let port = Port::builder().drive(drive).build().unwrap();
        let (socket, mut peer) = tcp_pair(&port);
        let fd = socket.raw_fd();

        let nomem = fail(Call::ReactorRegister, libc::ENOMEM).on_fd(fd).arm();
        assert_eq!(errno(&socket.recv(vec![0; 8]).unwrap_err()), libc::ENOMEM);
        assert_eq!(nomem.hits(), 1);
        let nospc = fail(Call::ReactorRegister, libc::ENOSPC).on_fd(fd).arm();
        let block = Overlapped::new();
        let mut buf = [0u8; 8];
        // SAFETY: `buf` and `block` outlive the request, which fails at once (checked).
        let refused = unsafe { socket.read_overlapped(buf.as_mut_ptr(), buf.len(), &block) };
        assert_eq!(errno(&refused.unwrap_err()), libc::ENOSPC, "{drive:?}");
        assert_eq!(errno(&block.get_result(false).unwrap_err()), libc::ENOSPC);
        assert_eq!(nospc.hits(), 1);
        assert_no_record(&port);

        let ticket = pending(socket.recv(vec![0; 8]).unwrap());
        peer.write_all(b"late").unwrap();
        assert_eq!(
            received(&socket, &record_for(&port, ticket)),
            b"late",
            "{drive:?}"
        );
        assert_no_record(&port);
    }
}
