//! Non-blocking socket system calls on raw descriptors.
//!
//! Every call returns `WouldBlock` rather than waiting (owned descriptors are in
//! non-blocking mode, transfers also pass `MSG_DONTWAIT`); `EINTR` is retried here, since a
//! non-blocking call cannot have waited.
//! Sends never raise `SIGPIPE`: a closed peer is an `EPIPE` record, not a dead process.

use super::cvt;
use super::fault::{self, Call};
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Every transfer is non-blocking by flag, so descriptors borrowed from a C caller, whose
/// blocking mode is the caller's business, never block us.
const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT;
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// Puts `fd` in non-blocking mode (and, where there is no `MSG_NOSIGNAL`, stops it from
/// raising `SIGPIPE`).
pub(crate) fn prepare(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    let flags = cvt(Call::Fcntl, fd, || {
        // SAFETY: F_GETFL/F_SETFL on a descriptor the caller keeps open; no pointers.
        unsafe { libc::fcntl(fd, libc::F_GETFL) as isize }
    })? as libc::c_int;
    if flags & libc::O_NONBLOCK == 0 {
        cvt(Call::Fcntl, fd, || {
            // SAFETY: F_SETFL takes an integer and no memory; `fd` stays open (borrowed).
            unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) as isize }
        })?;
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        let one: libc::c_int = 1;
        // SAFETY: `one` outlives the call and its size is passed.
        cvt(Call::Fcntl, fd, || unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        } as isize)?;
    }
    Ok(())
}

/// Whether `fd` is a socket (as opposed to a regular file, pipe, ...).
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(super::identify(fd.as_raw_fd())?.kind == super::Kind::Socket)
}

/// `recv` into `buf`: the byte count, 0 at end of stream.
///
/// # Safety
///
/// `buf` must be valid for writes of `len` bytes for the duration of the call.
pub(crate) unsafe fn recv(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees `buf..buf + len` is writable.
    cvt(Call::Recv, fd, || unsafe {
        libc::recv(fd, buf.cast(), len, RECV_FLAGS)
    })
}

/// `send` from `buf`: the byte count, possibly short.
///
/// # Safety
///
/// `buf` must be valid for reads of `len` bytes for the duration of the call.
pub(crate) unsafe fn send(fd: RawFd, buf: *const u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees `buf..buf + len` is readable.
    cvt(Call::Send, fd, || unsafe {
        libc::send(fd, buf.cast(), len, SEND_FLAGS)
    })
}

/// `send` that blocks as the descriptor does (a C caller's synchronous `WriteFile`), still
/// without `SIGPIPE` where `MSG_NOSIGNAL` exists.
///
/// # Safety
///
/// As for [`send`].
#[cfg(feature = "c-abi")]
pub(crate) unsafe fn send_blocking(fd: RawFd, buf: *const u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees `buf..buf + len` is readable.
    cvt(Call::Send, fd, || unsafe {
        libc::send(fd, buf.cast(), len, SEND_FLAGS & !libc::MSG_DONTWAIT)
    })
}

/// `recvfrom` into `buf`: the byte count and the sender, when it has an IP address.
///
/// # Safety
///
/// As for [`recv`].
pub(crate) unsafe fn recv_from(
    fd: RawFd,
    buf: *mut u8,
    len: usize,
) -> io::Result<(usize, Option<SocketAddr>)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut addr_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // MSG_TRUNC makes Linux return a datagram's full length, so truncation shows.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = RECV_FLAGS | libc::MSG_TRUNC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = RECV_FLAGS;
    // SAFETY: the caller guarantees `buf`; `storage` and `addr_len` are writable and sized.
    let n = cvt(Call::RecvFrom, fd, || unsafe {
        libc::recvfrom(
            fd,
            buf.cast(),
            len,
            flags,
            storage.as_mut_ptr().cast(),
            &mut addr_len,
        )
    })?;
    if n > len {
        // Too long for the buffer: the part that fit is there, the rest is lost (as
        // Windows reports with WSAEMSGSIZE).
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    // SAFETY: zero-initialized, then possibly filled by the kernel.
    Ok((n, from_sockaddr(unsafe { storage.assume_init_ref() })))
}

/// `sendto` from `buf` to `addr`.
///
/// # Safety
///
/// As for [`send`].
pub(crate) unsafe fn send_to(
    fd: RawFd,
    buf: *const u8,
    len: usize,
    addr: &SocketAddr,
) -> io::Result<usize> {
    let (storage, addr_len) = to_sockaddr(addr);
    // SAFETY: the caller guarantees `buf`; `storage` holds a valid address of `addr_len`.
    cvt(Call::SendTo, fd, || unsafe {
        libc::sendto(
            fd,
            buf.cast(),
            len,
            SEND_FLAGS,
            (&storage as *const libc::sockaddr_storage).cast(),
            addr_len,
        )
    })
}

/// Accepts a connection: the new socket (non-blocking, close-on-exec) and its peer.
pub(crate) fn accept(fd: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut addr_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    // SAFETY: `storage` and `addr_len` are writable and sized.
    let new = cvt(Call::Accept, fd, || unsafe {
        libc::accept4(
            fd,
            storage.as_mut_ptr().cast(),
            &mut addr_len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        ) as isize
    })?;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    // SAFETY: `storage` and `addr_len` are writable and sized for a `sockaddr_storage`.
    let new = cvt(Call::Accept, fd, || unsafe {
        libc::accept(fd, storage.as_mut_ptr().cast(), &mut addr_len) as isize
    })?;
    // SAFETY: accept returned a new descriptor that nothing else owns.
    let new = unsafe { OwnedFd::from_raw_fd(new as RawFd) };
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        // SAFETY: F_SETFD on the descriptor we own.
        cvt(Call::Fcntl, new.as_raw_fd(), || unsafe {
            libc::fcntl(new.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC)
        } as isize)?;
        prepare(std::os::fd::AsFd::as_fd(&new))?;
    }
    // SAFETY: zero-initialized, then possibly filled by the kernel.
    Ok((new, from_sockaddr(unsafe { storage.assume_init_ref() })))
}

/// Starts connecting to `addr`: `Ok` when connected at once, `EINPROGRESS` when the result
/// comes later (see [`take_error`]).
pub(crate) fn connect(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    if let Some(errno) = fault::take(Call::Connect, fd) {
        return Err(io::Error::from_raw_os_error(errno));
    }
    let (storage, addr_len) = to_sockaddr(addr);
    // SAFETY: `storage` holds a valid address of `addr_len` bytes.
    let rc = unsafe {
        libc::connect(
            fd,
            (&storage as *const libc::sockaddr_storage).cast(),
            addr_len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket's pending error (`SO_ERROR`), clearing it.
pub(crate) fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let errno = int_option(fd, libc::SO_ERROR)?;
    Ok((errno != 0).then(|| io::Error::from_raw_os_error(errno)))
}

/// Whether a TCP connect is still under way (the socket in `SYN_SENT`), for a socket that
/// is not connected and has no pending error: `false` when it failed and its error was
/// taken by a read made meanwhile. Where that cannot be told (no `TCP_INFO`), `true`.
pub(crate) fn still_connecting(fd: RawFd) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` and `len` are writable and sized for the option's struct.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        // `TCP_SYN_SENT` in the kernel's `enum tcp_state`.
        const SYN_SENT: u8 = 2;
        // SAFETY: zero-initialized, then possibly filled by the kernel.
        rc != 0 || unsafe { info.assume_init_ref() }.tcpi_state == SYN_SENT
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = fd;
        true
    }
}

/// Whether `fd` is a stream socket (`SO_TYPE` is `SOCK_STREAM`: TCP, a Unix stream).
pub(crate) fn is_stream(fd: RawFd) -> io::Result<bool> {
    Ok(int_option(fd, libc::SO_TYPE)? == libc::SOCK_STREAM)
}

/// The `SOL_SOCKET` option `name`, one whose value is an `int`.
fn int_option(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are writable and sized for the option's int.
    cvt(Call::GetSockOpt, fd, || unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        ) as isize
    })?;
    Ok(value)
}

/// Shuts the connection down both ways (`shutdown(SHUT_RDWR)`): the peer reads its end,
/// a listener stops listening. `ENOTCONN` for a socket with no connection.
pub(crate) fn shutdown(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes only the number and a constant, and touches no memory.
    if unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The connected peer's address (`getpeername`); `ENOTCONN` while not connected.
pub(crate) fn peer_addr(fd: RawFd) -> io::Result<Option<SocketAddr>> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut addr_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `addr_len` are writable and sized.
    cvt(Call::GetPeerName, fd, || unsafe {
        libc::getpeername(fd, storage.as_mut_ptr().cast(), &mut addr_len)
    } as isize)?;
    // SAFETY: zero-initialized, then possibly filled by the kernel.
    Ok(from_sockaddr(unsafe { storage.assume_init_ref() }))
}

fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "makes system calls Miri does not run")]
    fn a_failed_connect_whose_error_a_read_took_is_no_longer_connecting() {
        let socket = || {
            // SAFETY: socket takes only constants; the result is checked.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            // SAFETY: `fd` is a new descriptor nobody else owns.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        // Bound and not listening: its address refuses connections, and stays taken.
        let holder = socket();
        let (any, len) = to_sockaddr(&"127.0.0.1:0".parse().unwrap());
        // SAFETY: `any` holds a valid address of `len` bytes.
        let rc = unsafe {
            libc::bind(
                holder.as_raw_fd(),
                (&any as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
        let mut bound = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut bound_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `bound` and `bound_len` are writable and sized.
        let rc = unsafe {
            libc::getsockname(
                holder.as_raw_fd(),
                bound.as_mut_ptr().cast(),
                &mut bound_len,
            )
        };
        assert_eq!(rc, 0, "getsockname: {}", io::Error::last_os_error());
        // SAFETY: zero-initialized, then filled by the kernel.
        let addr = from_sockaddr(unsafe { bound.assume_init_ref() }).unwrap();
        let connecting = socket();
        let fd = connecting.as_raw_fd();
        match connect(fd, &addr) {
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            other => panic!("expected EINPROGRESS, got {other:?}"),
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 5_000) };
        assert_eq!(ready, 1, "the connect never ended");
        // The read takes the connect's error.
        let mut byte = 0u8;
        // SAFETY: `byte` is writable for one byte.
        let rc = unsafe { recv(fd, &mut byte, 1) };
        assert_eq!(rc.unwrap_err().raw_os_error(), Some(libc::ECONNREFUSED));
        assert!(take_error(fd).unwrap().is_none(), "taken by the read");
        assert_eq!(
            peer_addr(fd).unwrap_err().raw_os_error(),
            Some(libc::ENOTCONN)
        );
        assert!(!still_connecting(fd));
    }

    #[test]
    fn socket_addresses_round_trip() {
        for addr in ["127.0.0.1:8080", "[::1]:443", "[fe80::1%3]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (storage, _) = to_sockaddr(&addr);
            assert_eq!(from_sockaddr(&storage), Some(addr));
        }
    }
}
