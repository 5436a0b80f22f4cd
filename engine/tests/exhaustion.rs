//! Running out of descriptors: every call that opens one meets `EMFILE` when the process
//! has none left, fails with it, leaves no descriptor behind, and works again once
//! descriptors are free.
//!
//! Each test lowers `RLIMIT_NOFILE` and fills the descriptor table, which would starve
//! every other test of the process; so each runs in a child process of its own: the test
//! binary started again with [`CHILD`] set and only that test selected (see [`in_child`]).
//! In the child, [`Table`] fills the table with duplicates of `/dev/null` and frees them
//! one at a time: a call is made with 0, 1, 2, … descriptors free until it succeeds, and
//! each failure before must be `EMFILE` with exactly the same descriptors open as before
//! the call, which catches a descriptor leaked by a creation that failed half-way.
//!
//! What opens descriptors: a port's, an event's and a provider socket's handle (one each),
//! a reactor (its `epoll` descriptor, a duplicate for registration, an `eventfd` waker),
//! made for a port, or for port-less sockets, by the first request that has to wait, an
//! accept, and the library's duplicate of a caller's descriptor (the C ABI's association and
//! requests, and each `lio_listio` call per file it names). A file pool, and associating a
//! socket or a file the engine owns, open none: they are checked to work with a full table.
#![cfg(not(loom))]

mod common;

use common::errno;
use common::files::unlinked_file;
use common::pending;
use common::ports::assert_no_record;
use common::sockets::{tcp_socket, unix_pair};
use common::timing::PATIENCE;
use iocp::{
    Completion, Drive, FilePool, OpResult, Opcode, Overlapped, Port, ProviderSocket, Socket,
    Submitted, Ticket,
};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

/// Set in the environment of the child process that runs one test's scenario.
const CHILD: &str = "IOCP_EXHAUSTION_CHILD";
/// The child's soft descriptor limit: small, so that filling the table is quick.
const LIMIT: RawFd = 256;
/// Free descriptors a call may need before the test gives up on it.
const MOST_NEEDED: usize = 8;

/// Runs `scenario` in a child process (this test binary running only `test`, with
/// [`CHILD`] set), or, in that child, runs it here.
fn in_child(test: &str, scenario: fn()) {
    if std::env::var_os(CHILD).is_some() {
        scenario();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child running {test} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // What each call needed, for `--nocapture`.
    eprint!("{stderr}");
}

/// The descriptor table of a child: a lowered limit, and fillers holding every number
/// the tests do not free.
struct Table {
    fillers: Vec<OwnedFd>,
}

impl Table {
    /// Lowers the soft limit to [`LIMIT`] and takes every free number below it.
    fn full() -> Table {
        // SAFETY: an all-zero rlimit is a valid value for getrlimit to overwrite.
        let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: `limit` is a valid rlimit that outlives both calls.
        let rc = unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = LIMIT as libc::rlim_t;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit)
        };
        assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
        let mut table = Table {
            fillers: Vec::new(),
        };
        table.refill();
        assert_eq!(table.free(), 0);
        table
    }

    /// Takes every free number.
    fn refill(&mut self) {
        loop {
            match File::open("/dev/null") {
                Ok(file) => self.fillers.push(file.into()),
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
                    return;
                }
            }
        }
    }

    /// Frees one number.
    fn free_one(&mut self) {
        self.fillers.pop().expect("a filler to free");
    }

    /// The descriptors open now (numbers below [`LIMIT`]), found without opening one.
    fn open() -> Vec<RawFd> {
        (0..LIMIT)
            // SAFETY: F_GETFD only reads a descriptor's flags; a closed one fails EBADF.
            .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
            .collect()
    }

    /// Numbers below the limit that are free.
    fn free(&self) -> usize {
        LIMIT as usize - Table::open().len()
    }
}

/// Makes `make` meet a full table, then 1, 2, … free descriptors until it succeeds; each
/// attempt before must fail with `EMFILE` and leave the same descriptors open. Returns what
/// it made; the descriptors freed for it and not used stay free.
fn meets_emfile<T>(table: &mut Table, what: &str, make: impl Fn() -> io::Result<T>) -> T {
    for free in 0..=MOST_NEEDED {
        assert_eq!(table.free(), free);
        let before = Table::open();
        match make() {
            Ok(made) => {
                let used = Table::open().len() - before.len();
                assert!(free > 0, "{what} opened no descriptor");
                eprintln!(
                    "{what}: EMFILE with 0 to {} descriptors free; made with {free} free, \
                     using {used}",
                    free - 1
                );
                return made;
            }
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{what}: {err}");
                assert_eq!(Table::open(), before, "{what} failed and left descriptors");
            }
        }
        table.free_one();
    }
    panic!("{what} still failed with {MOST_NEEDED} descriptors free");
}

/// The record for `ticket`, the one record the port holds.
fn record_for(port: &Port, ticket: Ticket) -> Completion {
    let record = port.get(Some(PATIENCE)).expect("the request's record");
    assert_eq!(Ticket::of(&record), ticket, "{record:?}");
    assert_no_record(port, Duration::ZERO);
    record
}

// ---------------------------------------------------------------------------------------
// Handles

#[test]
fn port_creation_meets_emfile() {
    in_child("port_creation_meets_emfile", || {
        let mut table = Table::full();
        let port = meets_emfile(&mut table, "Port::new", Port::new);
        drop(table);
        port.post(Completion::new(1, 2, 3)).unwrap();
        assert_eq!(port.get(Some(PATIENCE)).unwrap(), Completion::new(1, 2, 3));
        let second = Port::new().unwrap();
        assert!(!second.same_port(&port));
        assert_ne!(second.handle(), port.handle());
    });
}

#[test]
fn event_creation_meets_emfile() {
    in_child("event_creation_meets_emfile", || {
        let mut table = Table::full();
        let event = meets_emfile(&mut table, "Event::new", || iocp::Event::new(true, false));
        drop(table);
        event.set();
        event.wait(Some(PATIENCE)).unwrap();
        assert!(iocp::Event::from_handle(event.handle()).is_some());
    });
}

#[test]
fn provider_socket_creation_meets_emfile() {
    in_child("provider_socket_creation_meets_emfile", || {
        let port = Port::new().unwrap();
        let mut table = Table::full();
        let socket = meets_emfile(&mut table, "ProviderSocket::new", || {
            ProviderSocket::new(7, 0)
        });
        drop(table);
        socket.associate(&port, 9).unwrap();
        let overlapped = Overlapped::new();
        overlapped.start();
        socket.complete(&overlapped, 0, 42).unwrap();
        let record = port.get(Some(PATIENCE)).unwrap();
        assert_eq!((record.key(), record.bytes()), (9, 42));
        assert_no_record(&port, Duration::ZERO);
    });
}

// ---------------------------------------------------------------------------------------
// Reactors

/// The first request on a port's socket that has to wait makes the port's reactor: with no
/// descriptor for it, that request fails with `EMFILE`, queues nothing and posts nothing;
/// the one that finds descriptors makes it and completes once.
fn a_ports_reactor_meets_emfile(drive: Drive) {
    let port = Port::builder().drive(drive).build().unwrap();
    let (ours, mut peer) = unix_pair();
    let mut table = Table::full();
    // Associating opens nothing.
    let socket = Socket::associated(ours, &port, 5).unwrap();
    let ticket = meets_emfile(
        &mut table,
        &format!("the reactor of a port driven {drive:?}"),
        || {
            socket
                .recv(vec![0; 8])
                .map(|submitted| pending(Ok(submitted)))
        },
    );
    assert_no_record(&port, Duration::ZERO);
    // Later requests use the reactor made, even with the table full again.
    table.refill();
    peer.write_all(b"ready").unwrap();
    let done = socket.finish(&record_for(&port, ticket)).unwrap();
    assert_eq!(&done.buf[..done.result.unwrap()], b"ready");
    let second = pending(socket.recv(vec![0; 8]));
    peer.write_all(b"again").unwrap();
    let done = socket.finish(&record_for(&port, second)).unwrap();
    assert_eq!(&done.buf[..done.result.unwrap()], b"again");
    drop(table);
}

#[test]
fn an_inline_ports_reactor_meets_emfile() {
    in_child("an_inline_ports_reactor_meets_emfile", || {
        a_ports_reactor_meets_emfile(Drive::Inline);
    });
}

#[test]
fn a_thread_driven_ports_reactor_meets_emfile() {
    in_child("a_thread_driven_ports_reactor_meets_emfile", || {
        a_ports_reactor_meets_emfile(Drive::Thread);
    });
}

/// Sockets with no port share one reactor, made by the first of their requests that has
/// to wait; an `OVERLAPPED` request that cannot have it fails and completes its block with
/// `EMFILE`, so nobody waits on it.
#[test]
fn the_portless_reactor_meets_emfile() {
    in_child("the_portless_reactor_meets_emfile", || {
        let (ours, mut peer) = unix_pair();
        let socket = Socket::unassociated(ours).unwrap();
        let event = iocp::Event::new(true, false).unwrap();
        let block = Overlapped::with_event(&event);
        let mut buf = [0u8; 8];
        let at = buf.as_mut_ptr();
        let mut table = Table::full();
        meets_emfile(&mut table, "the port-less reactor", || {
            // SAFETY: `buf` and `block` outlive the request: it fails at once, or the
            // event below says it is done before they go.
            let submitted = unsafe { socket.read_overlapped(at, 8, &block) };
            if let Err(err) = &submitted {
                assert_eq!(errno(block.get_result(false)), err.raw_os_error().unwrap());
                assert!(!event.is_set(), "a request refused at once set its event");
            }
            submitted.map(|at_once| assert_eq!(at_once, None, "no data was sent"))
        });
        drop(table);
        peer.write_all(b"portless").unwrap();
        event.wait(Some(PATIENCE)).unwrap();
        assert_eq!(block.get_result(false).unwrap(), 8);
        assert_eq!(&buf, b"portless");
    });
}

// ---------------------------------------------------------------------------------------
// Accept

/// An accept with no descriptor for the connection completes with `EMFILE` and leaves the
/// connection queued: the next accept, with descriptors free, takes it and its bytes.
#[test]
fn an_accept_meets_emfile_and_loses_no_connection() {
    in_child("an_accept_meets_emfile_and_loses_no_connection", || {
        let port = Port::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = Socket::associated(listener, &port, 1).unwrap();
        let first = pending(listener.accept());
        // The client's socket, made while descriptors are free.
        let client = TcpStream::from(tcp_socket(libc::AF_INET));
        let mut table = Table::full();
        let before = Table::open();
        connect(&client, addr);
        let record = record_for(&port, first);
        assert_eq!(record.error(), libc::EMFILE as u32, "{record:?}");
        let refused: OpResult = listener.finish(&record).unwrap();
        assert!(refused.accepted.is_none());
        // At once this time: the connection is still in the backlog.
        let at_once = |submitted| match submitted {
            Submitted::Done(done) => done,
            Submitted::Pending(ticket) => panic!("the connection is gone (#{ticket} waits)"),
        };
        assert_eq!(
            errno(at_once(listener.accept().unwrap()).result),
            libc::EMFILE
        );
        assert_eq!(Table::open(), before, "a refused accept left descriptors");
        assert_no_record(&port, Duration::ZERO);

        table.free_one();
        let accepted = at_once(listener.accept().unwrap());
        let stream = accepted.accepted.expect("the connection");
        assert_eq!(accepted.peer, Some(client.local_addr().unwrap()));
        drop(table);
        let mut client = client;
        client.write_all(b"kept").unwrap();
        let mut stream = TcpStream::from(stream);
        stream.set_nonblocking(false).unwrap();
        let mut got = [0; 4];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"kept");
    });
}

/// A fresh TCP socket, blocking.
/// Connects `client` (blocking) to `addr`, an IPv4 address, opening no descriptor.
fn connect(client: &TcpStream, addr: SocketAddr) {
    let SocketAddr::V4(addr) = addr else {
        panic!("{addr} is not IPv4")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::connect(
            client.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect: {}", io::Error::last_os_error());
}

// ---------------------------------------------------------------------------------------
// Files

/// A file pool and a file's association open no descriptor: both work with a full table,
/// and requests complete through them.
#[test]
fn a_file_pool_and_file_association_need_no_descriptor() {
    in_child(
        "a_file_pool_and_file_association_need_no_descriptor",
        || {
            let port = Port::new().unwrap();
            let file = unlinked_file("exhaustion");
            file.write_all_at(b"0123456789", 0).unwrap();
            let table = Table::full();
            let before = Table::open();
            let pool = FilePool::builder().threads(2).build().unwrap();
            let file = iocp::File::associated(file, &pool, &port, 3).unwrap();
            let ticket = pending(file.read_at(vec![0; 4], 3));
            let done = file.finish(&record_for(&port, ticket)).unwrap();
            assert_eq!(&done.buf[..done.result.unwrap()], b"3456");
            let ticket = pending(file.write_at(b"ab".to_vec(), 0));
            assert_eq!(
                file.finish(&record_for(&port, ticket))
                    .unwrap()
                    .result
                    .unwrap(),
                2
            );
            assert_eq!(
                Table::open(),
                before,
                "the pool or the association opened descriptors"
            );
            drop(table);
            let mut contents = String::new();
            // The file's descriptor went to the engine: read it back through /proc.
            File::open(format!("/proc/self/fd/{}", file.raw_fd()))
                .unwrap()
                .read_to_string(&mut contents)
                .unwrap();
            assert_eq!(contents, "ab23456789");
        },
    );
}

// ---------------------------------------------------------------------------------------
// The caller's descriptors (the C ABI's)

/// Associating one of the caller's descriptors takes one descriptor, the library's own
/// duplicate: with none free it fails with `EMFILE` and keeps nothing; then requests on it
/// complete as usual. Sockets and files alike.
#[test]
#[cfg(feature = "c-abi")]
fn associating_a_callers_descriptor_meets_emfile() {
    in_child("associating_a_callers_descriptor_meets_emfile", || {
        let port = Port::new().unwrap();
        let (ours, mut peer) = unix_pair();
        let file = unlinked_file("exhaustion");
        file.write_all_at(b"0123456789", 0).unwrap();
        let mut table = Table::full();
        meets_emfile(&mut table, "associating a socket", || {
            iocp::descriptor::associate(ours.as_raw_fd(), &port, 1)
        });
        meets_emfile(&mut table, "associating a file", || {
            iocp::descriptor::associate(file.as_raw_fd(), &port, 2)
        });
        drop(table);

        let mut buf = [0u8; 8];
        let block = Overlapped::new();
        // SAFETY: `buf` and `block` outlive the request, whose record is taken below.
        let started =
            unsafe { iocp::descriptor::read(ours.as_raw_fd(), buf.as_mut_ptr(), 8, &block) };
        assert_eq!(started.unwrap(), iocp::descriptor::Started::Pending);
        peer.write_all(b"socket").unwrap();
        let record = port.get(Some(PATIENCE)).unwrap();
        assert_eq!((record.key(), record.bytes()), (1, 6));
        assert_eq!(&buf[..6], b"socket");

        let block = Overlapped::new();
        block.set_offset(3);
        // SAFETY: `buf` (8 bytes, 4 asked; its socket read done) and the new `block`
        // outlive the request, whose record is taken below.
        let started =
            unsafe { iocp::descriptor::read(file.as_raw_fd(), buf.as_mut_ptr(), 4, &block) };
        assert_eq!(started.unwrap(), iocp::descriptor::Started::Pending);
        let record = port.get(Some(PATIENCE)).unwrap();
        assert_eq!((record.key(), record.bytes()), (2, 4));
        assert_eq!(&buf[..4], b"3456");
        assert_no_record(&port, Duration::ZERO);
    });
}

/// A `lio_listio` call takes one descriptor per file its pool requests name, a duplicate
/// they run on: with none free, a write entry fails with `EMFILE` (its `aio_error`) and
/// nothing is queued; then the same list writes. A read of cached pages, done on the
/// calling thread from the caller's own descriptor, needs none: it reads with the table
/// full.
#[test]
fn a_lio_listio_entry_meets_emfile() {
    in_child("a_lio_listio_entry_meets_emfile", || {
        let pool = FilePool::builder().threads(1).build().unwrap();
        let file = unlinked_file("exhaustion");
        file.write_all_at(b"0123456789", 0).unwrap();
        let list = |opcode, buf: &mut [u8; 4]| {
            let mut aiocb = iocp::Aiocb::new(file.as_raw_fd(), opcode, 5, buf.as_mut_ptr(), 4);
            // SAFETY: `aiocb` and `buf` outlive the call, which waits for the request.
            let listed = unsafe { pool.lio_listio(iocp::LioMode::Wait, &[&mut aiocb]) };
            match listed {
                Ok(()) => aiocb.result(),
                Err(_) => Err(io::Error::from_raw_os_error(aiocb.error())),
            }
        };
        let mut table = Table::full();
        let mut buf = [0u8; 4];
        assert_eq!(list(Opcode::Read, &mut buf).unwrap(), 4, "a cached read");
        assert_eq!(&buf, b"5678");
        let written = meets_emfile(&mut table, "a lio_listio write", || {
            let mut data = *b"abcd";
            list(Opcode::Write, &mut data)
        });
        drop(table);
        assert_eq!(written, 4);
        let mut back = [0u8; 4];
        file.read_exact_at(&mut back, 5).unwrap();
        assert_eq!(&back, b"abcd");
    });
}
