//! Sockets for the tests' peers.

use super::timing::PATIENCE;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// A fresh, unconnected TCP socket of `domain` (`AF_INET` or `AF_INET6`).
pub fn tcp_socket(domain: libc::c_int) -> OwnedFd {
    // SAFETY: socket(2) with constant arguments; no pointers.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A connected Unix stream pair: the first end for the engine, the second for the test,
/// whose reads give up after [`PATIENCE`].
pub fn unix_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(PATIENCE)).unwrap();
    (a, b)
}

/// A connected TCP pair on 127.0.0.1: the accepted side, then the connecting side, which
/// gives up reading after [`PATIENCE`].
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    (server, client)
}
