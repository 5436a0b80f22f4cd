//! Fairness of the inline drive: socket readiness is collected while the port is never
//! found empty.

use crate::common::address;
use crate::common::sockets::unix_pair;
use iocp::{Completion, Drive, Overlapped, Port, Socket};
use std::io::Write;
use std::time::Duration;

/// Records queued ahead of the socket's: far more than the engine takes between two looks
/// at readiness.
const QUEUED: usize = 10_000;

/// A worker that keeps finding records (posted ones here; in a server, its own requests
/// completing) never finds the port empty, which is when an inline-driven port's waiters
/// poll the reactor. The engine gives readiness a look every so many records all the same:
/// a read whose socket became ready completes long before the queue runs dry, and its
/// record then comes once, behind the records queued before it.
#[test]
fn an_inline_port_that_never_runs_dry_still_completes_socket_requests() {
    let port = Port::builder().drive(Drive::Inline).build().unwrap();
    let (ours, mut peer) = unix_pair();
    let socket = Socket::associated(ours, &port, 7).unwrap();
    let mut buf = [0u8; 8];
    let block = Overlapped::new();
    // SAFETY: `buf` and `block` are declared before `socket`, so they outlive it; its
    // close (on drop at the latest) ends the request.
    let at_once = unsafe { socket.read_overlapped(buf.as_mut_ptr(), buf.len(), &block) };
    assert_eq!(at_once.unwrap(), None, "nothing to read yet");
    for i in 0..QUEUED {
        port.post(Completion::new(1, 0, i)).unwrap();
    }
    peer.write_all(b"ready").unwrap();

    let mut taken = 0;
    while !block.is_complete() && taken < QUEUED {
        let record = port.get(Some(Duration::ZERO)).unwrap();
        assert_eq!(record.key(), 1, "a queued record first");
        taken += 1;
    }
    assert!(
        block.is_complete(),
        "the read waited until the port ran dry ({taken} records taken)"
    );
    eprintln!("the read completed after {taken} of {QUEUED} queued records were taken");
    assert!(taken < QUEUED / 10, "{taken} records taken before the look");
    assert_eq!(&buf[..5], b"ready");

    let rest: Vec<Completion> = (taken..=QUEUED)
        .map(|_| port.get(Some(Duration::ZERO)).unwrap())
        .collect();
    let reads: Vec<&Completion> = rest.iter().filter(|r| r.key() == 7).collect();
    assert_eq!(reads.len(), 1, "one record for the read");
    assert_eq!(
        (reads[0].overlapped(), reads[0].bytes()),
        (address(&block), 5)
    );
    assert!(port.get(Some(Duration::ZERO)).is_err(), "nothing else");
}
