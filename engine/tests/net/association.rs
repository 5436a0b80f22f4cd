//! Association and its errors: keys per kind of socket, a second association, what cannot be
//! associated, requests before association, closed sockets and ports.

use crate::common::errno;
use crate::common::files::TempDir;
use crate::common::sockets::{tcp_socket, unix_pair};
use crate::common::timing::PATIENCE;
use crate::{closed_port, fd_flags, tcp_pair};
use iocp::{Event, Overlapped, Port, Socket};
use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

#[test]
fn tcp_listeners_streams_udp_and_unix_sockets_associate_under_their_keys() {
    let port = Port::new().unwrap();
    let dir = TempDir::new("net");
    let (server, _client) = tcp_pair();
    let (unix, _peer) = unix_pair();
    let sockets = [
        Socket::associated(TcpListener::bind("127.0.0.1:0").unwrap(), &port, 1),
        Socket::associated(server, &port, 2),
        Socket::associated(UdpSocket::bind("127.0.0.1:0").unwrap(), &port, 3),
        Socket::associated(unix, &port, 4),
        Socket::associated(UnixListener::bind(dir.path("listener")).unwrap(), &port, 5),
    ];
    for (socket, key) in sockets.into_iter().zip(1..) {
        let socket = socket.unwrap_or_else(|err| panic!("association {key}: {err}"));
        let (associated, associated_key) = socket.port().expect("associated");
        assert!(associated.same_port(&port));
        assert_eq!(associated_key, key);
        let fd = socket.raw_fd();
        let (status, _) = fd_flags(fd);
        assert_ne!(
            status & libc::O_NONBLOCK,
            0,
            "associated sockets are non-blocking"
        );
    }
}

#[test]
fn a_second_association_fails_ealready_and_the_first_stays() {
    let first = Port::new().unwrap();
    let second = Port::new().unwrap();
    let (a, _b) = unix_pair();
    let socket = Socket::associated(a, &first, 5).unwrap();
    assert_eq!(errno(socket.associate(&second, 6)), libc::EALREADY);
    assert_eq!(errno(socket.associate(&first, 7)), libc::EALREADY);
    let (port, key) = socket.port().unwrap();
    assert!(port.same_port(&first));
    assert_eq!(key, 5);

    let (c, _d) = unix_pair();
    let late = Socket::unassociated(c).unwrap();
    assert!(late.port().is_none());
    late.associate(&second, 8).unwrap();
    assert_eq!(errno(late.associate(&first, 9)), libc::EALREADY);
}

#[test]
fn associating_a_regular_file_or_a_pipe_fails_einval() {
    let dir = TempDir::new("net");
    let path = dir.path("plain");
    let port = Port::new().unwrap();
    assert_eq!(
        errno(Socket::associated(File::create(&path).unwrap(), &port, 1)),
        libc::EINVAL
    );
    assert_eq!(
        errno(Socket::unassociated(File::open(&path).unwrap())),
        libc::EINVAL
    );
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    assert_eq!(errno(Socket::associated(read, &port, 2)), libc::EINVAL);
    assert_eq!(errno(Socket::unassociated(write)), libc::EINVAL);
}

#[test]
fn owned_buffer_requests_on_an_unassociated_socket_fail_enotconn() {
    let (a, _b) = unix_pair();
    let stream = Socket::unassociated(a).unwrap();
    let udp = Socket::unassociated(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
    let listener = Socket::unassociated(TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let unconnected = Socket::unassociated(tcp_socket(libc::AF_INET)).unwrap();
    let (_holder, somewhere) = closed_port();
    assert_eq!(errno(stream.recv(vec![0; 8])), libc::ENOTCONN);
    assert_eq!(errno(stream.send(vec![0; 8])), libc::ENOTCONN);
    assert_eq!(errno(udp.recv_from(vec![0; 8])), libc::ENOTCONN);
    assert_eq!(errno(udp.send_to(vec![0; 8], somewhere)), libc::ENOTCONN);
    assert_eq!(errno(listener.accept()), libc::ENOTCONN);
    assert_eq!(errno(unconnected.connect(somewhere)), libc::ENOTCONN);
}

#[test]
fn a_closed_socket_cannot_be_associated() {
    let (a, _b) = unix_pair();
    let socket = Socket::unassociated(a).unwrap();
    socket.close().unwrap();
    assert_eq!(
        errno(socket.associate(&Port::new().unwrap(), 1)),
        libc::EBADF
    );
}

#[test]
fn associating_with_a_closed_port_fails_ebadf() {
    let port = Port::new().unwrap();
    port.close().unwrap();
    let (a, _b) = unix_pair();
    assert_eq!(errno(Socket::associated(a, &port, 1)), libc::EBADF);
    let (c, _d) = unix_pair();
    let socket = Socket::unassociated(c).unwrap();
    assert_eq!(errno(socket.associate(&port, 2)), libc::EBADF);
}

#[test]
fn association_fails_ebusy_while_a_portless_request_is_pending() {
    let port = Port::new().unwrap();
    let event = Event::new(true, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    let mut buf = [0u8; 8];
    let (a, _b) = unix_pair();
    let socket = Socket::unassociated(a).unwrap();
    // SAFETY: `buf` and `overlapped` outlive `socket`, whose close ends the request.
    let at_once = unsafe { socket.read_overlapped(buf.as_mut_ptr(), buf.len(), &overlapped) };
    assert_eq!(at_once.unwrap(), None, "nothing to read yet");
    assert_eq!(errno(socket.associate(&port, 1)), libc::EBUSY);
    socket.cancel_overlapped(&overlapped).unwrap();
    event.wait(Some(PATIENCE)).unwrap();
    assert_eq!(errno(overlapped.get_result(false)), libc::ECANCELED);
    socket.associate(&port, 1).unwrap();
}
