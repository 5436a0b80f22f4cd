//! Large transfers, in sends larger than the socket buffers and through many receives.

use crate::common::ports::{each_drive, next, port};
use crate::common::rng::pattern;
use crate::common::timing::PATIENCE;
use crate::{first_difference, outcome, read_to_eof, small_tcp_pair, Socket};
use iocp::Submitted;
use std::io::Write;
use std::net::Shutdown;
use std::sync::{mpsc, Arc};
use std::thread;

#[test]
fn a_large_transfer_in_sends_larger_than_the_socket_buffers_arrives_intact() {
    const LEN: usize = 4 << 20;
    const MAX_SEND: usize = 1 << 20;
    each_drive(|drive| {
        let port = port(drive);
        let (server, client) = small_tcp_pair();
        let socket = Socket::associated(server, &port, 9).unwrap();
        let data = pattern(1, LEN);
        // The reader starts only once a send has had to wait: each send is far larger than
        // the shrunken kernel buffers, so it goes out in pieces as the reader drains them.
        let (go, wait_for_go) = mpsc::channel::<()>();
        let reader = thread::spawn(move || {
            let _ = wait_for_go.recv_timeout(PATIENCE);
            read_to_eof(client, LEN)
        });
        let mut go = Some(go);
        let (mut offset, mut sends, mut later) = (0, 0, 0);
        while offset < LEN {
            sends += 1;
            assert!(sends < 100_000, "no progress at {offset}");
            let end = LEN.min(offset + MAX_SEND);
            let submitted = socket.send(data[offset..end].to_vec());
            if matches!(submitted, Ok(Submitted::Pending(_))) {
                later += 1;
                if let Some(go) = go.take() {
                    go.send(()).unwrap();
                }
            }
            let sent = outcome(&port, &socket, 9, submitted);
            let n = sent.result.expect("send");
            assert_eq!(n, end - offset, "a send completes once all of it is out");
            assert!(
                sent.buf == data[offset..end],
                "the buffer comes back untouched"
            );
            offset += n;
        }
        socket.close().unwrap();
        let received = reader.join().expect("reader");
        eprintln!("{drive:?}: {LEN} bytes in {sends} sends, {later} pending");
        assert_eq!(received.len(), LEN);
        assert_eq!(first_difference(&received, &data), None);
        assert!(later > 0, "some send had to wait for the reader");
    });
}

#[test]
fn a_large_transfer_arrives_intact_through_recvs() {
    const LEN: usize = 4 << 20;
    each_drive(|drive| {
        let port = port(drive);
        let (server, client) = small_tcp_pair();
        let socket = Socket::associated(server, &port, 5).unwrap();
        let data = pattern(2, LEN);
        let writer = {
            let data = data.clone();
            thread::spawn(move || {
                let mut client = client;
                client.write_all(&data).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut received = Vec::with_capacity(LEN);
        let mut buf = vec![0; 64 * 1024];
        for _ in 0..100_000 {
            let got = outcome(&port, &socket, 5, socket.recv(buf));
            let n = got.result.expect("recv");
            buf = got.buf;
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            assert!(received.len() <= LEN);
        }
        writer.join().unwrap();
        assert_eq!(received.len(), LEN);
        assert_eq!(first_difference(&received, &data), None);
    });
}

/// Sends from several threads at once on one stream: each send's bytes arrive together
/// (a send that completes at once never lands inside one that went out in pieces), each
/// thread's sends in the order it made them, none lost. The kernel buffers are small, so
/// sends go out at once, in pieces, and after waiting, all racing one another.
#[test]
fn sends_from_several_threads_on_one_stream_arrive_whole_and_in_each_threads_order() {
    const THREADS: usize = 3;
    const SENDS: usize = 150;
    const LEN: usize = 48 * 1024;
    let message = |thread: usize, seq: usize| {
        let mut bytes = pattern((thread * SENDS + seq) as u64, LEN);
        bytes[0] = thread as u8;
        bytes[1..5].copy_from_slice(&(seq as u32).to_le_bytes());
        bytes
    };
    each_drive(|drive| {
        let port = port(drive);
        let (server, client) = small_tcp_pair();
        let socket = Arc::new(Socket::associated(server, &port, 5).unwrap());
        let reader = thread::spawn(move || read_to_eof(client, THREADS * SENDS * LEN));
        let senders: Vec<_> = (0..THREADS)
            .map(|thread| {
                let socket = Arc::clone(&socket);
                thread::spawn(move || {
                    let mut waiting = 0;
                    for seq in 0..SENDS {
                        match socket.send(message(thread, seq)).expect("send") {
                            Submitted::Done(done) => assert_eq!(done.result.unwrap(), LEN),
                            Submitted::Pending(_) => waiting += 1,
                        }
                    }
                    waiting
                })
            })
            .collect();
        let waiting: usize = senders.into_iter().map(|s| s.join().unwrap()).sum();
        // The sends that waited complete as records (an inline-driven port's readiness is
        // collected by the thread taking them).
        for _ in 0..waiting {
            let record = next(&port);
            assert_eq!(socket.finish(&record).unwrap().result.unwrap(), LEN);
        }
        socket.close().unwrap();
        let received = reader.join().expect("reader");
        eprintln!("{drive:?}: {waiting} of {} sends waited", THREADS * SENDS);
        assert_eq!(received.len(), THREADS * SENDS * LEN);
        let mut next_seq = [0; THREADS];
        for (i, chunk) in received.chunks(LEN).enumerate() {
            let thread = usize::from(chunk[0]);
            assert!(
                thread < THREADS,
                "send {i} is not whole: thread byte {thread}"
            );
            let seq = next_seq[thread];
            assert!(
                chunk == message(thread, seq),
                "send {i} is not thread {thread}'s send {seq}, whole"
            );
            next_seq[thread] += 1;
        }
        assert_eq!(next_seq, [SENDS; THREADS]);
    });
}
