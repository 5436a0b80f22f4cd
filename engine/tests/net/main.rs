//! Integration tests of overlapped socket I/O ([`iocp::Socket`]) on loopback: association
//! and its errors, immediate versus pending completion, echo over many connections, large
//! transfers with partial sends, accept storms, connect, peer resets and end of stream,
//! cancellation racing completion, close, UDP datagrams, and the C-style overlapped
//! requests (`ReadFile`/`WriteFile` on sockets, with a port or with an event).
//!
//! Tests whose outcome depends on how readiness is collected run once per
//! [`Drive`](iocp::Drive). Every wait has a timeout; every loop is bounded.
//!
//! The tests live by concern in the modules below ([`association`], [`completion`],
//! [`echo`], [`transfers`], [`connect`], [`peers`], [`cancel`], [`close`], [`udp`],
//! [`overlapped`], [`readiness`], [`zero_byte`], [`defects`], [`regressions`]); this file holds
//! what they share.
#![cfg(not(loom))]

mod association;
mod cancel;
mod close;
#[path = "../common/mod.rs"]
mod common;
mod completion;
mod connect;
mod defects;
mod echo;
mod fairness;
mod overlapped;
mod peers;
mod readiness;
mod regressions;
mod transfers;
mod udp;
mod zero_byte;

use common::ports::next;
use common::sockets::{tcp_pair, tcp_socket, unix_pair};
use common::timing::PATIENCE;
use iocp::{OpResult, Port, Socket, Submitted, Ticket};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A wait that shows nothing more arrives (a reactor turn has time to run).
const QUIET: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn done(submitted: io::Result<Submitted>) -> OpResult {
    match submitted.expect("submitted") {
        Submitted::Done(done) => done,
        Submitted::Pending(ticket) => panic!("expected an immediate completion, got #{ticket}"),
    }
}

/// Waits for the record of `ticket` on `socket` (keyed `key`) and finishes it.
fn finish_next(port: &Port, socket: &Socket, key: u64, ticket: Ticket) -> OpResult {
    let record = next(port);
    assert_eq!(record.key(), key, "{record:?}");
    assert_eq!(Ticket::of(&record), ticket, "{record:?}");
    let finished = socket.finish(&record).expect("finish");
    match &finished.result {
        Ok(n) => assert_eq!((record.error(), record.bytes() as usize), (0, *n)),
        Err(err) => assert_eq!(record.error() as i32, err.raw_os_error().unwrap()),
    }
    finished
}

/// The result of a request, whether it completed at once or through the port.
fn outcome(port: &Port, socket: &Socket, key: u64, submitted: io::Result<Submitted>) -> OpResult {
    match submitted.expect("submitted") {
        Submitted::Done(done) => done,
        Submitted::Pending(ticket) => finish_next(port, socket, key, ticket),
    }
}

/// An address on 127.0.0.1 where nothing listens, and the socket that keeps it so: bound
/// there, not listening, it refuses connections and keeps any other socket from binding
/// the port (a port merely released could be a parallel test's listener a moment later).
fn closed_port() -> (OwnedFd, SocketAddr) {
    // A bound, unconnected TCP socket, only to read its address.
    let holder = TcpStream::from(loopback_socket(0, false));
    let addr = holder.local_addr().unwrap();
    (holder.into(), addr)
}

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: `value` outlives the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// Small kernel buffers, so that large sends complete partially and block.
fn shrink_buffers(fd: RawFd) {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 32 * 1024);
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 32 * 1024);
}

/// A loopback TCP pair and a Unix stream pair: each server end, and its peer to write to
/// it from.
fn stream_pairs() -> [(OwnedFd, Box<dyn Write>); 2] {
    let (tcp_server, tcp_client) = tcp_pair();
    let (unix_server, unix_client) = unix_pair();
    [
        (tcp_server.into(), Box::new(tcp_client)),
        (unix_server.into(), Box::new(unix_client)),
    ]
}

/// A loopback TCP pair with small kernel buffers at both ends (see [`shrink_buffers`]).
fn small_tcp_pair() -> (TcpStream, TcpStream) {
    let (server, client) = tcp_pair();
    shrink_buffers(server.as_raw_fd());
    shrink_buffers(client.as_raw_fd());
    (server, client)
}

/// Closes `stream` with a reset (`SO_LINGER` on with a zero timeout).
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` outlives the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
    drop(stream);
}

/// Waits until `fd` is readable (data already queued in the kernel).
fn wait_readable(fd: RawFd) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, PATIENCE.as_millis() as libc::c_int) };
    assert_eq!(rc, 1, "not readable within {PATIENCE:?}");
}

fn fd_flags(fd: RawFd) -> (libc::c_int, libc::c_int) {
    // SAFETY: F_GETFL/F_GETFD on an open descriptor; no pointers.
    unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD),
        )
    }
}

/// Reads until end of stream (bounded by the read timeout and `limit`).
fn read_to_eof(mut stream: impl Read, limit: usize) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return all,
            Ok(n) => {
                all.extend_from_slice(&chunk[..n]);
                assert!(all.len() <= limit, "peer received more than {limit} bytes");
            }
            Err(err) => panic!("peer read failed after {} bytes: {err}", all.len()),
        }
    }
}

/// First index where `a` and `b` differ, for readable failures on large buffers.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Fills `socket`'s send path with `chunk`-byte sends until one is pending; returns how
/// many bytes went out at once and the pending send's ticket.
fn fill_until_pending(socket: &Socket, chunk: usize) -> (usize, Ticket) {
    let mut sent = 0;
    for _ in 0..10_000 {
        match socket.send(vec![b'F'; chunk]).expect("send") {
            Submitted::Done(done) => sent += done.result.expect("send at once"),
            Submitted::Pending(ticket) => return (sent, ticket),
        }
    }
    panic!("the send buffer never filled after {sent} bytes");
}

/// A TCP socket bound to 127.0.0.1:`port` (0: any), with `SO_REUSEPORT` if `reuseport`, so
/// that a second one can share its port.
fn loopback_socket(port: u16, reuseport: bool) -> OwnedFd {
    let fd = tcp_socket(libc::AF_INET);
    if reuseport {
        set_int_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1);
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
    fd
}
