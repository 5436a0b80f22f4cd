//! Integration tests of the provider path ([`iocp::ProviderSocket`], the Winsock SPI's
//! `WPUCreateSocketHandle`, `WPUCompleteOverlappedRequest`, `WPUCloseSocketHandle` and
//! `WSPGetOverlappedResult`): handles and their registry, completion into a port or an
//! event, errors, and waiting for a result.
#![cfg(not(loom))]

mod common;

use common::ports::{assert_no_record, each_drive, next, port};
use common::timing::{PATIENCE, SETTLE};
use common::{address, errno, handle_numbers};
use iocp::{Completion, Event, Overlapped, Port, ProviderSocket, ProviderStatus};
use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// `WSS_OPERATION_IN_PROGRESS`: never a valid completion status.
const IN_PROGRESS: u32 = 0x103;

#[test]
fn a_provider_handle_is_found_by_its_number_until_closed() {
    let _numbers = handle_numbers();
    let socket = ProviderSocket::new(1001, 0xfeed).unwrap();
    let handle = socket.handle();
    assert!(handle > 2, "a descriptor the library owns");
    assert_eq!(socket.catalog_id(), 1001);
    assert_eq!(socket.context(), 0xfeed);
    let found = ProviderSocket::from_handle(handle).expect("found by its handle");
    assert_eq!(found.handle(), handle);
    assert_eq!((found.catalog_id(), found.context()), (1001, 0xfeed));
    socket.close().unwrap();
    assert!(ProviderSocket::from_handle(handle).is_none(), "closed");
    assert_eq!(errno(socket.close()), libc::EBADF);
    assert_eq!(
        errno(found.close()),
        libc::EBADF,
        "clones name the same handle"
    );
}

#[test]
fn from_handle_finds_nothing_for_numbers_that_are_not_provider_handles() {
    let _numbers = handle_numbers();
    let event = Event::new(true, false).unwrap();
    let port = Port::new().unwrap();
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    for number in [-1, 0, 1, 2, event.handle(), port.handle(), file.as_raw_fd()] {
        assert!(
            ProviderSocket::from_handle(number).is_none(),
            "{number} is not a provider handle"
        );
    }
}

#[test]
fn dropping_the_last_clone_forgets_the_handle() {
    let _numbers = handle_numbers();
    let socket = ProviderSocket::new(1, 2).unwrap();
    let handle = socket.handle();
    let clone = socket.clone();
    drop(socket);
    assert!(
        ProviderSocket::from_handle(handle).is_some(),
        "a clone lives"
    );
    drop(clone);
    assert!(ProviderSocket::from_handle(handle).is_none());
}

#[test]
fn associating_twice_fails_ealready_and_after_close_ebadf() {
    let _numbers = handle_numbers();
    let first = Port::new().unwrap();
    let second = Port::new().unwrap();
    let socket = ProviderSocket::new(1, 0).unwrap();
    socket.associate(&first, 1).unwrap();
    assert_eq!(errno(socket.associate(&second, 2)), libc::EALREADY);
    assert_eq!(errno(socket.associate(&first, 3)), libc::EALREADY);
    let closed = ProviderSocket::new(1, 0).unwrap();
    closed.close().unwrap();
    assert_eq!(errno(closed.associate(&first, 4)), libc::EBADF);
}

#[test]
fn complete_posts_a_record_with_the_key_and_the_overlapped_address() {
    let _numbers = handle_numbers();
    each_drive(|drive| {
        let port = port(drive);
        let socket = ProviderSocket::new(7, 0).unwrap();
        socket.associate(&port, 0xabc).unwrap();
        let overlapped = Overlapped::new();
        overlapped.start();
        assert!(!overlapped.is_complete());
        assert_eq!(errno(overlapped.get_result(false)), libc::EINPROGRESS);
        socket.complete(&overlapped, 0, 1234).unwrap();
        let record = next(&port);
        assert_eq!(record.key(), 0xabc);
        assert_eq!(record.overlapped(), address(&overlapped));
        assert_eq!((record.bytes(), record.error()), (1234, 0));
        assert!(overlapped.is_complete());
        assert_eq!(overlapped.get_result(false).unwrap(), 1234);
        assert_eq!(overlapped.get_result(true).unwrap(), 1234);
        assert_no_record(&port, Duration::ZERO);
    });
}

#[test]
fn complete_with_an_error_posts_a_failed_record() {
    let _numbers = handle_numbers();
    each_drive(|drive| {
        let port = port(drive);
        let socket = ProviderSocket::new(7, 0).unwrap();
        socket.associate(&port, 5).unwrap();
        let overlapped = Overlapped::new();
        overlapped.start();
        socket
            .complete(&overlapped, libc::ECONNRESET as u32, 17)
            .unwrap();
        let record = next(&port);
        assert_eq!(record.key(), 5);
        assert_eq!(record.overlapped(), address(&overlapped));
        assert_eq!(record.error(), libc::ECONNRESET as u32);
        assert_eq!(errno(record.result()), libc::ECONNRESET);
        assert_eq!(record.bytes(), 17, "the byte count travels with the error");
        assert_eq!(errno(overlapped.get_result(false)), libc::ECONNRESET);
        assert_eq!(overlapped.bytes(), 17);
    });
}

#[test]
fn a_completion_wakes_a_thread_waiting_on_the_port() {
    let _numbers = handle_numbers();
    each_drive(|drive| {
        let port = port(drive);
        let socket = ProviderSocket::new(7, 0).unwrap();
        socket.associate(&port, 9).unwrap();
        let overlapped = Box::new(Overlapped::new());
        overlapped.start();
        let waiter = {
            let port = port.clone();
            thread::spawn(move || port.get(Some(PATIENCE)))
        };
        thread::sleep(SETTLE);
        let posted = Instant::now();
        socket.complete(&overlapped, 0, 3).unwrap();
        let record = waiter.join().unwrap().expect("woken by the completion");
        assert!(posted.elapsed() < Duration::from_secs(2));
        assert_eq!(record.overlapped(), address(&overlapped));
    });
}

#[test]
fn complete_without_a_port_sets_the_overlapped_event() {
    let _numbers = handle_numbers();
    let socket = ProviderSocket::new(7, 0).unwrap();
    for manual_reset in [true, false] {
        let event = Event::new(manual_reset, false).unwrap();
        let overlapped = Overlapped::with_event(&event);
        assert_eq!(overlapped.event_handle(), event.handle());
        overlapped.start();
        assert!(!event.is_set());
        socket.complete(&overlapped, 0, 64).unwrap();
        event.wait(Some(PATIENCE)).expect("the event is set");
        assert_eq!(overlapped.get_result(false).unwrap(), 64);
    }
    // With neither a port nor an event, the block alone reports the completion.
    let overlapped = Overlapped::new();
    overlapped.start();
    socket.complete(&overlapped, 0, 8).unwrap();
    assert_eq!(overlapped.get_result(false).unwrap(), 8);
}

#[test]
fn an_event_set_by_a_completion_wakes_a_thread_waiting_on_it() {
    let _numbers = handle_numbers();
    let socket = ProviderSocket::new(7, 0).unwrap();
    let event = Event::new(true, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    overlapped.start();
    let waiter = {
        let event = event.clone();
        thread::spawn(move || event.wait(Some(PATIENCE)))
    };
    thread::sleep(SETTLE);
    socket.complete(&overlapped, 0, 1).unwrap();
    waiter.join().unwrap().expect("woken by the completion");
}

#[test]
fn completing_with_the_in_progress_status_fails_einval_and_changes_nothing() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    let socket = ProviderSocket::new(7, 0).unwrap();
    socket.associate(&port, 1).unwrap();
    let event = Event::new(true, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    overlapped.start();
    assert_eq!(
        errno(socket.complete(&overlapped, IN_PROGRESS, 5)),
        libc::EINVAL
    );
    assert!(!overlapped.is_complete(), "the request is still pending");
    assert_no_record(&port, Duration::ZERO);
    let portless = ProviderSocket::new(7, 0).unwrap();
    assert_eq!(
        errno(portless.complete(&overlapped, IN_PROGRESS, 5)),
        libc::EINVAL
    );
    assert!(!event.is_set());
}

#[test]
fn complete_after_close_fails_ebadf_and_leaves_the_request_pending() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    let socket = ProviderSocket::new(7, 0).unwrap();
    socket.associate(&port, 1).unwrap();
    let clone = socket.clone();
    socket.close().unwrap();
    let overlapped = Overlapped::new();
    overlapped.start();
    assert_eq!(errno(socket.complete(&overlapped, 0, 5)), libc::EBADF);
    assert_eq!(errno(clone.complete(&overlapped, 0, 5)), libc::EBADF);
    assert!(!overlapped.is_complete());
    assert_no_record(&port, Duration::ZERO);
}

#[test]
fn overlapped_result_is_none_while_pending_without_wait() {
    let _numbers = handle_numbers();
    let socket = ProviderSocket::new(7, 0).unwrap();
    let overlapped = Overlapped::new();
    overlapped.start();
    assert_eq!(socket.overlapped_result(&overlapped, false), None);
    socket.complete(&overlapped, 0, 12).unwrap();
    assert_eq!(
        socket.overlapped_result(&overlapped, false),
        Some(ProviderStatus {
            bytes: 12,
            flags: 0,
            error: 0
        })
    );
}

#[test]
fn overlapped_result_reports_internal_high_offset_and_offset_high() {
    let _numbers = handle_numbers();
    let socket = ProviderSocket::new(7, 0).unwrap();
    let overlapped = Overlapped::new();
    // A provider leaves the flags in `Offset` and its error code in `OffsetHigh`.
    let (flags, error) = (0x0000_0002_u32, 10054_u32);
    overlapped.set_offset((u64::from(error) << 32) | u64::from(flags));
    overlapped.start();
    socket.complete(&overlapped, 0, 4096).unwrap();
    for wait in [false, true] {
        assert_eq!(
            socket.overlapped_result(&overlapped, wait),
            Some(ProviderStatus {
                bytes: 4096,
                flags,
                error
            })
        );
    }
}

#[test]
fn overlapped_result_with_wait_blocks_until_another_thread_completes() {
    let _numbers = handle_numbers();
    let socket = ProviderSocket::new(7, 0).unwrap();
    let overlapped = Arc::new(Overlapped::new());
    overlapped.set_offset(0x1_0000_0040);
    overlapped.start();
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let (socket, overlapped) = (socket.clone(), Arc::clone(&overlapped));
        thread::spawn(move || tx.send(socket.overlapped_result(&overlapped, true)))
    };
    thread::sleep(SETTLE);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "still waiting");
    socket.complete(&overlapped, 0, 99).unwrap();
    let status = rx.recv_timeout(PATIENCE).expect("woken by the completion");
    assert_eq!(
        status,
        Some(ProviderStatus {
            bytes: 99,
            flags: 0x40,
            error: 1
        })
    );
    waiter.join().unwrap().unwrap();
}

#[test]
fn completions_from_many_threads_each_arrive_exactly_once() {
    const THREADS: usize = 4;
    const EACH: usize = 500;
    let _numbers = handle_numbers();
    each_drive(|drive| {
        let port = port(drive);
        let socket = ProviderSocket::new(7, 0).unwrap();
        socket.associate(&port, 3).unwrap();
        let blocks: Arc<Vec<Overlapped>> =
            Arc::new((0..THREADS * EACH).map(|_| Overlapped::new()).collect());
        for block in blocks.iter() {
            block.start();
        }
        let completers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (socket, blocks) = (socket.clone(), Arc::clone(&blocks));
                thread::spawn(move || {
                    for i in (t * EACH)..((t + 1) * EACH) {
                        socket.complete(&blocks[i], 0, i as u32).unwrap();
                    }
                })
            })
            .collect();
        let base = address(&blocks[0]);
        let size = std::mem::size_of::<Overlapped>();
        let mut seen = HashSet::new();
        let mut out = [Completion::default(); 256];
        let deadline = Instant::now() + PATIENCE;
        while seen.len() < THREADS * EACH {
            assert!(Instant::now() < deadline, "{} records", seen.len());
            let drained = port
                .get_many(&mut out, 1, Some(Duration::from_millis(100)))
                .unwrap();
            for record in &out[..drained.count] {
                let index = (record.overlapped() - base) / size;
                assert_eq!(record.key(), 3);
                assert_eq!(record.bytes() as usize, index, "{record:?}");
                assert!(seen.insert(index), "record {index} twice");
            }
        }
        for completer in completers {
            completer.join().unwrap();
        }
        for (i, block) in blocks.iter().enumerate() {
            assert_eq!(block.get_result(false).unwrap() as usize, i);
        }
        assert_no_record(&port, Duration::ZERO);
    });
}

#[test]
fn a_block_can_be_reused_for_the_next_request() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    let socket = ProviderSocket::new(7, 0).unwrap();
    socket.associate(&port, 1).unwrap();
    let overlapped = Overlapped::new();
    for round in 0..3u32 {
        overlapped.start();
        assert_eq!(overlapped.bytes(), 0, "start clears the count");
        assert!(!overlapped.is_complete());
        socket.complete(&overlapped, round, 10 + round).unwrap();
        let record = next(&port);
        assert_eq!((record.bytes(), record.error()), (10 + round, round));
    }
}

#[test]
fn complete_into_a_closed_port_fails_ebadf_but_publishes_the_block() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    let socket = ProviderSocket::new(7, 0).unwrap();
    socket.associate(&port, 1).unwrap();
    port.close().unwrap();
    let overlapped = Overlapped::new();
    overlapped.start();
    assert_eq!(errno(socket.complete(&overlapped, 0, 5)), libc::EBADF);
    assert_eq!(overlapped.get_result(false).unwrap(), 5);
}

#[test]
fn associating_with_a_closed_port_fails_ebadf() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    port.close().unwrap();
    let socket = ProviderSocket::new(7, 0).unwrap();
    assert_eq!(errno(socket.associate(&port, 1)), libc::EBADF);
}
