//! Churn: short-lived ports closed under sleeping waiters, with a receive pending, or dropped
//! with requests pending.

use crate::common::errno;
use crate::common::ports::DRIVES;
use crate::common::rng::Rng;
use crate::common::timing::BULK_PATIENCE;
use crate::{add, check_record, close_port, join, woken_by_close, Stats, CONCURRENCY, WAKE_BOUND};
use iocp::Socket;
use iocp::{Completion, DrainStatus, Port, Submitted, Ticket};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const CHURN_PORTS_MAX: usize = 48;
const CHURN_KEY: u64 = 5;

pub(crate) fn churn_round(seed: u64, budget: Duration, stats: &Stats) -> String {
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + budget;
    let pace = budget / CHURN_PORTS_MAX as u32;
    let mut made = 0;
    for _ in 0..CHURN_PORTS_MAX {
        if Instant::now() >= deadline {
            break;
        }
        let port = Port::builder()
            .capacity(1 << rng.below(11))
            .drive(rng.pick(&DRIVES))
            .concurrency(rng.pick(&CONCURRENCY))
            .build()
            .unwrap();
        add(&stats.ports, 1);
        made += 1;
        match rng.below(4) {
            0 | 1 => close_under_waiters(&port, &mut rng, stats),
            2 => close_with_pending_recv(&port, &mut rng, stats),
            _ => drop_with_pending(port, &mut rng, stats),
        }
        thread::sleep(pace.mul_f64(rng.unit()));
    }
    format!("churn {made} ports")
}

/// Waiters (some batched) on a port that gets up to 64 records and is then closed under
/// them: each record is dequeued at most once, each waiter returns `EBADF` promptly.
fn close_under_waiters(port: &Port, rng: &mut Rng, stats: &Stats) {
    let posted = rng.below(65) as u32;
    let seen = AtomicU64::new(0);
    let closed_at = OnceLock::new();
    thread::scope(|s| {
        let waiters: Vec<_> = (0..1 + rng.below(3))
            .map(|_| {
                let batched = rng.one_in(3);
                let (seen, closed_at) = (&seen, &closed_at);
                s.spawn(move || wait_for_close(port, batched, posted, seen, closed_at, stats))
            })
            .collect();
        for i in 0..posted {
            port.post(Completion::new(CHURN_KEY, i, i as usize))
                .unwrap();
        }
        thread::sleep(rng.micros(3000));
        close_port(port, &closed_at, stats);
        waiters.into_iter().for_each(join);
    });
    let seen = seen.load(Ordering::Relaxed).count_ones();
    add(&stats.posts, u64::from(posted));
    add(&stats.posts_discarded, u64::from(posted - seen));
    // Every call fails with EBADF now, and the handle names nothing of this port's.
    assert_eq!(errno(port.post(Completion::default())), libc::EBADF);
    assert_eq!(errno(port.get(Some(Duration::ZERO))), libc::EBADF);
    let mut out = [Completion::default(); 4];
    assert_eq!(errno(port.get_many(&mut out, 1, None)), libc::EBADF);
    assert_eq!(errno(port.drain(4, None)), libc::EBADF);
    assert_eq!(errno(port.close()), libc::EBADF);
    let found = Port::from_handle(port.handle());
    assert!(
        !matches!(found, Some(other) if other.same_port(port)),
        "a closed port is still found by its handle"
    );
}

fn wait_for_close(
    port: &Port,
    batched: bool,
    posted: u32,
    seen: &AtomicU64,
    closed_at: &OnceLock<Instant>,
    stats: &Stats,
) {
    let mut out = [Completion::default(); 8];
    for _ in 0..100_000 {
        let got = if batched {
            port.get_many(&mut out, 1, Some(BULK_PATIENCE))
                .map(|drained| {
                    assert_eq!(
                        drained.status,
                        DrainStatus::Complete,
                        "the close did not end the wait"
                    );
                    drained.count
                })
        } else {
            port.get(Some(BULK_PATIENCE)).map(|record| {
                out[0] = record;
                1
            })
        };
        match got {
            Ok(n) => {
                for record in &out[..n] {
                    let valid = record.key() == CHURN_KEY
                        && record.bytes() < posted
                        && record.overlapped() == record.bytes() as usize;
                    assert!(valid, "{record:?}: not a record of this port");
                    let bit = 1u64 << record.bytes();
                    let before = seen.fetch_or(bit, Ordering::Relaxed);
                    assert_eq!(before & bit, 0, "{record:?} dequeued twice");
                }
            }
            Err(err) => match err.raw_os_error() {
                Some(libc::EBADF) => {
                    woken_by_close(closed_at, stats, "a waiter");
                    return;
                }
                // Another waiter holds the batched dequeue, or this one is batched.
                Some(libc::EBUSY) => thread::sleep(Duration::from_micros(100)),
                _ => panic!("waiting on a port about to close: {err}"),
            },
        }
    }
    panic!("a waiter never saw its port close");
}

/// A socket request pending while a thread waits (with the inline drive, as the leader in
/// `epoll_wait`), the port closed under both: the waiter returns `EBADF` (or the record, if
/// the data came first) and the request still has exactly one outcome.
fn close_with_pending_recv(port: &Port, rng: &mut Rng, stats: &Stats) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let socket = Socket::associated(a, port, CHURN_KEY).unwrap();
    add(&stats.socket_ops, 1);
    let ticket = match socket.recv(vec![0; 16]).unwrap() {
        Submitted::Pending(ticket) => ticket,
        Submitted::Done(done) => panic!("a recv with nothing sent completed at once: {done:?}"),
    };
    let early = rng.one_in(2);
    let closed_at = OnceLock::new();
    let taken = thread::scope(|s| {
        let waiter = s.spawn(|| port.get(Some(BULK_PATIENCE)));
        thread::sleep(rng.micros(3000));
        if early {
            b.write_all(b"early").unwrap();
            thread::sleep(rng.micros(1000));
        }
        close_port(port, &closed_at, stats);
        match join(waiter) {
            Ok(record) => Some(record),
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
                let after = closed_at.get().expect("set before the close").elapsed();
                assert!(
                    after < WAKE_BOUND,
                    "a waiter returned {after:?} after the close"
                );
                add(&stats.woken, 1);
                None
            }
        }
    });
    // After the close: no record can come of it.
    b.write_all(b"late").unwrap();
    add(&stats.closes, 1);
    socket.close().unwrap();
    let record = taken.unwrap_or_else(|| Completion::new(CHURN_KEY, 0, ticket.get() as usize));
    assert_eq!(Ticket::of(&record), ticket, "{record:?}");
    let done = socket
        .finish(&record)
        .unwrap_or_else(|err| panic!("the recv has no outcome: {err}"));
    assert_eq!(
        errno(socket.finish(&record)),
        libc::EINVAL,
        "an outcome handed back twice"
    );
    match taken {
        Some(record) => check_record(&record, &done.result),
        None => add(&stats.discarded, 1),
    }
    match done.result {
        Ok(n) => {
            let stream: &[u8] = if early { b"earlylate" } else { b"late" };
            assert!(
                n > 0 && stream.starts_with(&done.buf[..n]),
                "{:?}",
                &done.buf[..n]
            );
        }
        Err(err) => {
            assert_eq!(err.raw_os_error(), Some(libc::ECANCELED), "{err}");
            add(&stats.cancelled, 1);
        }
    }
}

/// A port dropped (not closed) with records queued and a socket request pending, in
/// either order with the socket: nothing may leak.
fn drop_with_pending(port: Port, rng: &mut Rng, stats: &Stats) {
    let posted = rng.below(65) as u32;
    for i in 0..posted {
        port.post(Completion::new(CHURN_KEY, i, i as usize))
            .unwrap();
    }
    let (a, b) = UnixStream::pair().unwrap();
    let socket = Socket::associated(a, &port, CHURN_KEY + 1).unwrap();
    add(&stats.socket_ops, 1);
    assert!(matches!(
        socket.recv(vec![0; 16]).unwrap(),
        Submitted::Pending(_)
    ));
    let mut seen = 0;
    if rng.one_in(2) {
        // A short wait, which with the inline drive leads the reactor for a moment.
        for _ in 0..=posted {
            match port.get(Some(Duration::from_millis(1))) {
                Ok(record) => {
                    assert_eq!((record.key(), record.bytes()), (CHURN_KEY, seen));
                    seen += 1;
                }
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
                    break;
                }
            }
        }
    }
    add(&stats.posts, u64::from(posted));
    add(&stats.posts_discarded, u64::from(posted - seen));
    add(&stats.closes, 1);
    add(&stats.closes_with_pending, 1);
    if rng.one_in(2) {
        drop(port);
        drop(socket);
    } else {
        drop(socket);
        drop(port);
    }
    drop(b);
}
