//! A caller closing a borrowed descriptor (the C ABI's, `iocp::descriptor`) with requests in
//! flight: each request completes once, with `ECANCELED`, within the documented bound
//! ([`descriptor::CLOSE_NOTICED`]; the checks allow five times as much for a loaded machine
//! and print what they measured), the peer of a closed socket sees the close, and no
//! request reads from or writes to whatever gets the number next.
#![cfg(not(loom))]

mod common;

use common::address;
use common::files::unlinked_file;
use common::sockets::tcp_pair;
use common::timing::PATIENCE;
use iocp::descriptor::{self, Started, CLOSE_NOTICED};
use iocp::{Aiocb, FilePool, LioMode, Opcode, Overlapped, Port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::time::{Duration, Instant};

const LONG: Option<Duration> = Some(PATIENCE);

/// What the checks allow: the documented bound, five times over.
fn allowed() -> Duration {
    CLOSE_NOTICED * 5
}

/// Replaces what `number` names with `with`, in one step: the caller's `close` of the old
/// descriptor and the kernel handing its number to a new one, with no moment in which a
/// test running in parallel could take the number.
fn reuse(number: RawFd, with: &impl AsRawFd) {
    // SAFETY: both descriptors are this test's; dup2 replaces `number` atomically.
    let rc = unsafe { libc::dup2(with.as_raw_fd(), number) };
    assert_eq!(rc, number, "dup2: {}", std::io::Error::last_os_error());
}

/// Waits for `peer` to read end of file; how long it took since `since`.
fn sees_close(peer: &mut TcpStream, since: Instant) -> Duration {
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        peer.read(&mut byte).unwrap(),
        0,
        "the peer reads end of file"
    );
    since.elapsed()
}

#[test]
fn a_socket_number_reused_at_once_cancels_the_old_request_and_serves_only_the_new_socket() {
    let port = Port::new().unwrap();
    let (ours, mut old_peer) = tcp_pair();
    let (new, mut new_peer) = tcp_pair();
    let fd = ours.into_raw_fd();
    descriptor::associate(fd, &port, 1).unwrap();

    let mut old_buf = [0xAAu8; 64];
    let old_block = Overlapped::new();
    // SAFETY: `old_buf` and `old_block` outlive the request, whose record is taken below.
    let started = unsafe { descriptor::read(fd, old_buf.as_mut_ptr(), 64, &old_block) };
    assert_eq!(started.unwrap(), Started::Pending);

    let closed = Instant::now();
    reuse(fd, &new);
    drop(new);
    let record = port.get(LONG).unwrap();
    let cancelled = closed.elapsed();
    assert_eq!(
        (
            record.key(),
            record.overlapped(),
            record.bytes(),
            record.error()
        ),
        (1, address(&old_block), 0, libc::ECANCELED as u32)
    );
    let seen = sees_close(&mut old_peer, closed);
    eprintln!("socket reused: ECANCELED after {cancelled:?}, peer saw the close after {seen:?}");
    assert!(cancelled < allowed() && seen < allowed());
    assert_eq!(old_buf, [0xAA; 64], "the cancelled request wrote nothing");
    // Sent now, to the closed socket: it must not reach the number's new connection.
    let _ = old_peer.write_all(b"stale");

    descriptor::associate(fd, &port, 2).unwrap();
    let mut new_buf = [0u8; 64];
    let new_block = Overlapped::new();
    // SAFETY: `new_buf` and `new_block` outlive the request: it is done at once, or its
    // record is taken below.
    let started = unsafe { descriptor::read(fd, new_buf.as_mut_ptr(), 64, &new_block) };
    new_peer.write_all(b"fresh bytes").unwrap();
    let bytes = match started.unwrap() {
        Started::Done(bytes) => bytes,
        Started::Pending => {
            let record = port.get(LONG).unwrap();
            assert_eq!(
                (record.key(), record.overlapped()),
                (2, address(&new_block))
            );
            record.bytes()
        }
    };
    assert_eq!(&new_buf[..bytes as usize], b"fresh bytes");

    // A plain close now: the engine lets its duplicate go, and the new peer sees it.
    let closed = Instant::now();
    // SAFETY: `fd` is this test's, and not used after.
    unsafe { libc::close(fd) };
    let seen = sees_close(&mut new_peer, closed);
    eprintln!("socket closed: peer saw the close after {seen:?}");
    assert!(seen < allowed());
}

#[test]
fn a_plain_close_cancels_every_request_in_flight_and_the_peer_sees_it() {
    let port = Port::new().unwrap();
    let (ours, mut peer) = tcp_pair();
    let fd = ours.into_raw_fd();
    descriptor::associate(fd, &port, 3).unwrap();
    let mut bufs = [[0u8; 16]; 2];
    let blocks = [Overlapped::new(), Overlapped::new()];
    for (buf, block) in bufs.iter_mut().zip(&blocks) {
        // SAFETY: the buffers and blocks outlive the requests, whose records come below.
        let started = unsafe { descriptor::read(fd, buf.as_mut_ptr(), 16, block) };
        assert_eq!(started.unwrap(), Started::Pending);
    }
    let closed = Instant::now();
    // SAFETY: `fd` is this test's, and not used after but for the failing cancel below.
    unsafe { libc::close(fd) };
    for block in &blocks {
        let record = port.get(LONG).unwrap();
        assert_eq!(
            (record.key(), record.overlapped(), record.error()),
            (3, address(block), libc::ECANCELED as u32)
        );
        assert_eq!(
            block.get_result(false).unwrap_err().raw_os_error(),
            Some(libc::ECANCELED)
        );
    }
    let cancelled = closed.elapsed();
    let seen = sees_close(&mut peer, closed);
    eprintln!("socket closed: ECANCELED after {cancelled:?}, peer saw the close after {seen:?}");
    assert!(cancelled < allowed() && seen < allowed());
    assert!(port.get(Some(Duration::ZERO)).is_err(), "one record each");
}

/// A file of `byte` repeated over `BLOCKS` blocks of 4 KiB, its name removed.
fn file_of(byte: u8) -> std::fs::File {
    let mut file = unlinked_file("closing");
    file.write_all(&vec![byte; BLOCKS * 4096]).unwrap();
    file
}

const BLOCKS: usize = 64;

#[test]
fn file_requests_on_a_number_reused_at_once_read_their_own_file_or_end_cancelled() {
    let port = Port::new().unwrap();
    let pool = FilePool::builder().threads(2).build().unwrap();
    let old = file_of(b'o');
    let new = file_of(b'n');
    let fd = old.as_raw_fd();
    descriptor::associate(fd, &port, 4).unwrap();

    // Half the blocks through ReadFile's path, half through lio_listio.
    let mut bufs = vec![[0u8; 4096]; 2 * BLOCKS];
    let (overlapped_bufs, lio_bufs) = bufs.split_at_mut(BLOCKS);
    let blocks: Vec<Overlapped> = (0..BLOCKS).map(|_| Overlapped::new()).collect();
    for (i, (buf, block)) in overlapped_bufs.iter_mut().zip(&blocks).enumerate() {
        block.set_offset(i as u64 * 4096);
        // SAFETY: the buffers and blocks outlive the requests, whose records come below.
        let started = unsafe { descriptor::read(fd, buf.as_mut_ptr(), 4096, block) };
        assert_eq!(started.unwrap(), Started::Pending);
    }
    let mut cbs: Vec<Aiocb> = lio_bufs
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| {
            Aiocb::new(fd, Opcode::Read, i as i64 * 4096, buf.as_mut_ptr(), 4096).with_port(&port)
        })
        .collect();
    let list: Vec<*mut Aiocb> = cbs.iter_mut().map(|cb| cb as *mut Aiocb).collect();
    // SAFETY: the aiocbs and their buffers outlive the requests, whose records come below.
    unsafe { pool.lio_listio(LioMode::NoWaitGmcs, &list) }.unwrap();
    reuse(fd, &new);
    drop(new);

    let mut seen = [false; 2 * BLOCKS];
    let mut cancelled = 0;
    for _ in 0..2 * BLOCKS {
        let record = port.get(Some(PATIENCE)).unwrap();
        let i = blocks
            .iter()
            .position(|block| address(block) == record.overlapped())
            .or_else(|| {
                list.iter()
                    .position(|cb| *cb as usize == record.overlapped())
                    .map(|i| BLOCKS + i)
            })
            .expect("a record of this test's");
        assert!(!seen[i], "one record per request");
        seen[i] = true;
        match record.error() {
            0 => {
                assert_eq!(record.bytes(), 4096);
                assert!(
                    bufs[i].iter().all(|&b| b == b'o'),
                    "request {i} read another file"
                );
            }
            errno => {
                assert_eq!(errno, libc::ECANCELED as u32);
                cancelled += 1;
            }
        }
    }
    eprintln!(
        "file reused: {cancelled} of {} requests cancelled",
        2 * BLOCKS
    );
    let mut first = [0u8; 1];
    // SAFETY: `fd` now names the new file, which `old` owns; the buffer is live.
    let read = unsafe { libc::pread(fd, first.as_mut_ptr().cast(), 1, 0) };
    assert_eq!((read, first[0]), (1, b'n'));
    assert!(port.get(Some(Duration::ZERO)).is_err(), "one record each");
}
