//! Integration tests of [`iocp::Overlapped`] (publication, `GetOverlappedResult`,
//! completion to a port or an event) and of [`iocp::Event`].
#![cfg(not(loom))]

mod common;

use common::timing::{LATE, PATIENCE, SETTLE};
use common::{address, errno, handle_numbers};
use iocp::{Completion, Event, Overlapped, Port, STATUS_PENDING};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Event and port handles are descriptor numbers, reused as soon as their object dies.
// ---------------------------------------------------------------------------------------
// Overlapped

#[test]
fn overlapped_is_laid_out_as_c_overlapped() {
    assert_eq!(std::mem::size_of::<Overlapped>(), 20);
    assert_eq!(std::mem::align_of::<Overlapped>(), 4);
}

#[test]
fn a_new_overlapped_is_complete_with_nothing_transferred() {
    for overlapped in [Overlapped::new(), Overlapped::default()] {
        assert!(overlapped.is_complete());
        assert_eq!(overlapped.get_result(false).unwrap(), 0);
        assert_eq!(overlapped.get_result(true).unwrap(), 0);
        assert_eq!(overlapped.offset(), 0);
        assert_eq!(overlapped.event_handle(), 0);
    }
}

#[test]
fn start_marks_the_request_in_progress() {
    let overlapped = Overlapped::new();
    overlapped.start();
    assert!(!overlapped.is_complete());
    assert_eq!(errno(overlapped.get_result(false)), libc::EINPROGRESS);
}

#[test]
fn publish_of_a_success_gives_the_byte_count() {
    let overlapped = Overlapped::new();
    overlapped.start();
    overlapped.publish(1234, 0).unwrap();
    assert!(overlapped.is_complete());
    assert_eq!(overlapped.get_result(false).unwrap(), 1234);
    assert_eq!(overlapped.get_result(true).unwrap(), 1234);
    assert_eq!(overlapped.bytes(), 1234);
}

#[test]
fn publish_of_an_errno_gives_that_error() {
    let overlapped = Overlapped::new();
    overlapped.start();
    overlapped.publish(5, libc::ECONNRESET as u32).unwrap();
    assert!(overlapped.is_complete());
    assert_eq!(overlapped.bytes(), 5);
    assert_eq!(errno(overlapped.get_result(false)), libc::ECONNRESET);
    assert_eq!(errno(overlapped.get_result(true)), libc::ECONNRESET);
}

#[test]
fn publish_refuses_the_pending_status_with_einval() {
    let overlapped = Overlapped::new();
    overlapped.start();
    assert_eq!(errno(overlapped.publish(7, STATUS_PENDING)), libc::EINVAL);
    // The refusal changed nothing: the request still runs.
    assert!(!overlapped.is_complete());
    assert_eq!(errno(overlapped.get_result(false)), libc::EINPROGRESS);
}

#[test]
fn start_after_a_completion_begins_a_fresh_request() {
    let overlapped = Overlapped::new();
    overlapped.start();
    overlapped.publish(99, 0).unwrap();
    overlapped.start();
    assert!(!overlapped.is_complete());
    overlapped.publish(1, 0).unwrap();
    assert_eq!(overlapped.get_result(false).unwrap(), 1);
}

#[test]
fn the_offset_round_trips_through_both_words() {
    let overlapped = Overlapped::new();
    for offset in [
        0,
        1,
        u64::from(u32::MAX),
        1 << 32,
        0x1234_5678_9abc_def0,
        u64::MAX,
    ] {
        overlapped.set_offset(offset);
        assert_eq!(overlapped.offset(), offset);
    }
    // Starting and completing a request leave the offset alone.
    overlapped.set_offset(0x10_0000_0001);
    overlapped.start();
    overlapped.publish(3, 0).unwrap();
    assert_eq!(overlapped.offset(), 0x10_0000_0001);
}

#[test]
fn get_result_waits_for_a_publish_from_another_thread() {
    // A single waiter thread; each round hands it a fresh pending block, and this thread
    // publishes after a varying delay so that some publishes land before the waiter
    // sleeps, some while it goes to sleep and some after. A lost wake-up hangs a round.
    let (work_tx, work_rx) = mpsc::channel::<Option<(Arc<Overlapped>, Arc<AtomicBool>)>>();
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        while let Some((overlapped, published)) = work_rx.recv().unwrap() {
            let result = overlapped.get_result(true);
            done_tx
                .send((
                    result.map_err(|e| e.to_string()),
                    published.load(Ordering::SeqCst),
                ))
                .unwrap();
        }
    });
    let start = Instant::now();
    for round in 0..1000u32 {
        let overlapped = Arc::new(Overlapped::new());
        overlapped.start();
        let published = Arc::new(AtomicBool::new(false));
        work_tx
            .send(Some((Arc::clone(&overlapped), Arc::clone(&published))))
            .unwrap();
        match round % 4 {
            0 => {}
            1 => thread::yield_now(),
            2 => {
                let until = Instant::now() + Duration::from_micros(20);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            _ => thread::sleep(Duration::from_micros(200)),
        }
        published.store(true, Ordering::SeqCst);
        overlapped.publish(round, 0).unwrap();
        let (result, saw_published) = done_rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("round {round}: the waiter missed the publish"));
        assert_eq!(result, Ok(round));
        assert!(
            saw_published,
            "round {round}: get_result returned before the publish"
        );
    }
    work_tx.send(None).unwrap();
    waiter.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn get_result_wakes_every_waiter_of_one_block() {
    let overlapped = Arc::new(Overlapped::new());
    overlapped.start();
    let barrier = Arc::new(Barrier::new(4));
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        let (overlapped, barrier, tx) = (Arc::clone(&overlapped), Arc::clone(&barrier), tx.clone());
        thread::spawn(move || {
            barrier.wait();
            tx.send(overlapped.get_result(true).map_err(|e| e.raw_os_error()))
                .unwrap();
        });
    }
    barrier.wait();
    thread::sleep(SETTLE);
    assert!(
        rx.try_recv().is_err(),
        "a waiter returned before the publish"
    );
    overlapped.publish(0, libc::EPIPE as u32).unwrap();
    for _ in 0..3 {
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Err(Some(libc::EPIPE)));
    }
}

#[test]
fn complete_posts_a_record_naming_the_block_to_the_port() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    let overlapped = Overlapped::new();
    overlapped.start();
    overlapped.complete(512, 0, Some((&port, 42))).unwrap();
    assert_eq!(overlapped.get_result(false).unwrap(), 512);
    let record = port.get(Some(Duration::ZERO)).unwrap();
    assert_eq!(record, Completion::new(42, 512, address(&overlapped)));
    assert_eq!(record.result().unwrap(), 512);
}

#[test]
fn complete_with_an_errno_posts_a_failed_record() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    let overlapped = Overlapped::new();
    overlapped.start();
    overlapped
        .complete(3, libc::ECONNABORTED as u32, Some((&port, 7)))
        .unwrap();
    assert_eq!(errno(overlapped.get_result(false)), libc::ECONNABORTED);
    let record = port.get(Some(Duration::ZERO)).unwrap();
    assert_eq!(record.overlapped(), address(&overlapped));
    assert_eq!(record.key(), 7);
    assert_eq!(record.bytes(), 3);
    assert_eq!(record.error(), libc::ECONNABORTED as u32);
    assert_eq!(errno(record.result()), libc::ECONNABORTED);
}

#[test]
fn complete_with_the_pending_status_fails_einval_and_reports_nothing() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    let event = Event::new(true, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    overlapped.start();
    assert_eq!(
        errno(overlapped.complete(1, STATUS_PENDING, Some((&port, 1)))),
        libc::EINVAL
    );
    assert_eq!(
        errno(overlapped.complete(1, STATUS_PENDING, None)),
        libc::EINVAL
    );
    assert!(!overlapped.is_complete());
    assert_eq!(port.queued(), 0);
    assert!(!event.is_set());
}

#[test]
fn complete_to_a_closed_port_fails_ebadf_but_publishes_the_result() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    port.close().unwrap();
    let overlapped = Overlapped::new();
    overlapped.start();
    assert_eq!(
        errno(overlapped.complete(8, 0, Some((&port, 1)))),
        libc::EBADF
    );
    assert_eq!(overlapped.get_result(false).unwrap(), 8);
}

#[test]
fn complete_without_a_port_sets_the_event_named_by_hevent() {
    let _numbers = handle_numbers();
    let event = Event::new(true, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    assert_eq!(overlapped.event_handle(), event.handle());
    overlapped.start();
    assert!(!event.is_set());
    overlapped.complete(64, 0, None).unwrap();
    assert!(event.is_set());
    event.wait(Some(Duration::ZERO)).unwrap();
    assert_eq!(overlapped.get_result(false).unwrap(), 64);
}

#[test]
fn complete_without_a_port_wakes_a_thread_waiting_on_the_event() {
    let _numbers = handle_numbers();
    let event = Event::new(false, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    overlapped.start();
    let waiter = {
        let event = event.clone();
        thread::spawn(move || event.wait(Some(PATIENCE)).map_err(|e| e.raw_os_error()))
    };
    thread::sleep(SETTLE);
    overlapped.complete(1, 0, None).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(()));
    // Auto reset: the waiter consumed the signal.
    assert!(!event.is_set());
}

#[test]
fn complete_with_a_port_leaves_the_event_alone() {
    let _numbers = handle_numbers();
    let port = Port::new().unwrap();
    let event = Event::new(true, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    overlapped.start();
    overlapped.complete(2, 0, Some((&port, 5))).unwrap();
    assert!(!event.is_set());
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap().key(), 5);
}

#[test]
fn complete_without_a_port_or_a_live_event_only_publishes() {
    let overlapped = Overlapped::new();
    overlapped.start();
    overlapped.complete(11, 0, None).unwrap();
    assert_eq!(overlapped.get_result(false).unwrap(), 11);

    let _numbers = handle_numbers();
    let event = Event::new(true, false).unwrap();
    let orphan = Overlapped::with_event(&event);
    drop(event);
    orphan.start();
    orphan.complete(12, 0, None).unwrap();
    assert_eq!(orphan.get_result(false).unwrap(), 12);
}

// ---------------------------------------------------------------------------------------
// Events

#[test]
fn a_new_event_has_the_state_it_was_made_with() {
    let _numbers = handle_numbers();
    for (manual, set) in [(true, true), (true, false), (false, true), (false, false)] {
        let event = Event::new(manual, set).unwrap();
        assert_eq!(event.is_manual_reset(), manual);
        assert_eq!(event.is_set(), set);
    }
}

#[test]
fn a_manual_reset_event_releases_every_waiter_and_stays_set_until_reset() {
    let _numbers = handle_numbers();
    let event = Event::new(true, false).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        let (event, barrier, tx) = (event.clone(), Arc::clone(&barrier), tx.clone());
        thread::spawn(move || {
            barrier.wait();
            let result = event.wait(Some(PATIENCE)).map_err(|e| e.raw_os_error());
            tx.send((result, Instant::now())).unwrap();
        });
    }
    barrier.wait();
    thread::sleep(SETTLE);
    assert!(rx.try_recv().is_err(), "a waiter returned before the set");
    let set = Instant::now();
    event.set();
    for _ in 0..3 {
        let (result, returned) = rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!(result, Ok(()));
        assert!(
            returned - set < LATE,
            "released {:?} after the set",
            returned - set
        );
    }
    assert!(event.is_set());
    event.wait(Some(Duration::ZERO)).unwrap();
    event.wait(None).unwrap();
    event.reset();
    assert!(!event.is_set());
    assert_eq!(
        errno(event.wait(Some(Duration::from_millis(10)))),
        libc::ETIMEDOUT
    );
}

#[test]
fn an_auto_reset_event_releases_exactly_one_waiter_per_set() {
    let _numbers = handle_numbers();
    let event = Event::new(false, false).unwrap();
    let timeout = Duration::from_millis(600);
    let barrier = Arc::new(Barrier::new(3));
    let (tx, rx) = mpsc::channel();
    for _ in 0..2 {
        let (event, barrier, tx) = (event.clone(), Arc::clone(&barrier), tx.clone());
        thread::spawn(move || {
            barrier.wait();
            let start = Instant::now();
            let result = event.wait(Some(timeout)).map_err(|e| e.raw_os_error());
            tx.send((result, Instant::now(), start.elapsed())).unwrap();
        });
    }
    barrier.wait();
    thread::sleep(SETTLE);
    let set = Instant::now();
    event.set();
    let (first, returned, _) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(first, Ok(()));
    assert!(
        returned - set < Duration::from_millis(200),
        "released {:?} after the set",
        returned - set
    );
    let (second, _, waited) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(
        second,
        Err(Some(libc::ETIMEDOUT)),
        "one set released two waiters"
    );
    assert!(waited >= timeout);
    assert!(
        !event.is_set(),
        "the released waiter did not consume the signal"
    );
}

#[test]
fn an_auto_reset_event_releases_two_waiters_with_two_sets() {
    let _numbers = handle_numbers();
    let event = Event::new(false, false).unwrap();
    let barrier = Arc::new(Barrier::new(3));
    let (tx, rx) = mpsc::channel();
    for _ in 0..2 {
        let (event, barrier, tx) = (event.clone(), Arc::clone(&barrier), tx.clone());
        thread::spawn(move || {
            barrier.wait();
            tx.send(event.wait(Some(PATIENCE)).map_err(|e| e.raw_os_error()))
                .unwrap();
        });
    }
    barrier.wait();
    thread::sleep(SETTLE);
    for _ in 0..2 {
        event.set();
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Ok(()));
    }
    assert!(!event.is_set());
}

#[test]
fn an_auto_reset_wait_consumes_the_signal() {
    let _numbers = handle_numbers();
    let event = Event::new(false, true).unwrap();
    event.wait(Some(Duration::ZERO)).unwrap();
    assert!(!event.is_set());
    assert_eq!(errno(event.wait(Some(Duration::ZERO))), libc::ETIMEDOUT);
    event.set();
    event.set();
    // Setting a set event is a no-op: one signal, one release.
    event.wait(None).unwrap();
    assert_eq!(errno(event.wait(Some(Duration::ZERO))), libc::ETIMEDOUT);
}

#[test]
fn event_wait_timeouts_are_never_early_and_fail_etimedout() {
    let _numbers = handle_numbers();
    for manual in [true, false] {
        let event = Event::new(manual, false).unwrap();
        for ms in [1, 10, 50] {
            let timeout = Duration::from_millis(ms);
            let start = Instant::now();
            let result = event.wait(Some(timeout));
            let elapsed = start.elapsed();
            assert_eq!(errno(result), libc::ETIMEDOUT);
            assert!(
                elapsed >= timeout,
                "{timeout:?} wait returned after {elapsed:?}"
            );
            assert!(
                elapsed < timeout + LATE,
                "{timeout:?} wait returned after {elapsed:?}"
            );
        }
    }
}

#[test]
fn from_handle_finds_a_live_event_until_its_last_clone_is_dropped() {
    let _numbers = handle_numbers();
    let event = Event::new(true, false).unwrap();
    let handle = event.handle();
    let found = Event::from_handle(handle).expect("a live event is found by its handle");
    assert_eq!(found.handle(), handle);
    found.set();
    assert!(event.is_set(), "from_handle found another event");

    let clone = event.clone();
    drop(event);
    drop(found);
    assert!(Event::from_handle(handle).is_some(), "a clone still lives");
    drop(clone);
    assert!(
        Event::from_handle(handle).is_none(),
        "a dead event is still found"
    );
}

#[test]
fn from_handle_finds_nothing_under_numbers_that_are_not_events() {
    let _numbers = handle_numbers();
    for handle in [-1, 0, 1, 2, i32::MAX] {
        assert!(Event::from_handle(handle).is_none(), "handle {handle}");
    }
}

#[test]
fn event_handles_are_distinct_and_never_zero() {
    let _numbers = handle_numbers();
    let events: Vec<Event> = (0..32)
        .map(|i| Event::new(i % 2 == 0, false).unwrap())
        .collect();
    let mut handles: Vec<i32> = events.iter().map(Event::handle).collect();
    assert!(handles.iter().all(|&h| h > 0), "{handles:?}");
    handles.sort_unstable();
    handles.dedup();
    assert_eq!(handles.len(), events.len());
}

#[test]
fn an_event_made_while_descriptor_zero_is_free_does_not_get_handle_zero() {
    let _numbers = handle_numbers();
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` on descriptor 0 only creates a new descriptor; no
    // Rust object owns descriptor 0 in this test binary.
    let saved = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if saved >= 0 {
        // SAFETY: descriptor 0 is closed to free its number; `saved` keeps what it named,
        // and it is put back below. Nothing else in this binary reads stdin.
        unsafe { libc::close(0) };
    }
    let result = Event::new(true, false);
    let zero_after = Event::from_handle(0).is_none();
    if saved >= 0 {
        // SAFETY: `saved` is a descriptor this test owns; `dup2` puts it back as 0.
        let restored = unsafe { libc::dup2(saved, 0) };
        // SAFETY: `saved` is ours and no longer needed.
        unsafe { libc::close(saved) };
        assert_eq!(restored, 0, "{}", io::Error::last_os_error());
    }
    let event = result.unwrap();
    assert_ne!(event.handle(), 0);
    assert!(zero_after, "descriptor 0 names an event");
    assert_eq!(
        Event::from_handle(event.handle()).unwrap().handle(),
        event.handle()
    );
}

#[test]
fn a_thread_waiting_forever_on_an_event_is_released_by_a_set() {
    let _numbers = handle_numbers();
    let event = Event::new(false, false).unwrap();
    let waiter = {
        let event = event.clone();
        thread::spawn(move || event.wait(None).map_err(|e| e.raw_os_error()))
    };
    thread::sleep(SETTLE);
    event.set();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(waiter.join().unwrap()).unwrap());
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Ok(()));
}

// ---------------------------------------------------------------------------------------
// Port handles

#[test]
fn a_port_is_found_by_its_handle_until_it_is_closed_or_its_last_clone_is_dropped() {
    let _numbers = handle_numbers();
    let port = Port::builder().concurrency(usize::MAX).build().unwrap();
    let handle = port.handle();
    assert!(handle > 0);
    assert!(Port::from_handle(handle).unwrap().same_port(&port));
    let clone = port.clone();
    drop(port);
    assert!(Port::from_handle(handle).unwrap().same_port(&clone));
    // Closing releases the handle at once, as CloseHandle does, though a clone lives on.
    clone.close().unwrap();
    assert!(
        Port::from_handle(handle).is_none(),
        "a closed port is still found"
    );
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(handle, libc::F_GETFD) };
    // The lock above keeps this file's other tests from opening a descriptor meanwhile.
    assert_eq!(
        flags, -1,
        "the handle's descriptor was closed with the port"
    );
    drop(clone);

    let port = Port::new().unwrap();
    let handle = port.handle();
    drop(port);
    assert!(
        Port::from_handle(handle).is_none(),
        "a dropped port is still found"
    );
}

#[test]
fn port_and_event_handles_name_one_kind_of_object_each() {
    let _numbers = handle_numbers();
    let ports: Vec<Port> = (0..8).map(|_| Port::new().unwrap()).collect();
    let events: Vec<Event> = (0..8).map(|_| Event::new(true, false).unwrap()).collect();
    let mut handles: Vec<i32> = ports.iter().map(Port::handle).collect();
    handles.extend(events.iter().map(Event::handle));
    assert!(handles.iter().all(|&h| h > 0), "{handles:?}");
    handles.sort_unstable();
    handles.dedup();
    assert_eq!(handles.len(), 16, "two objects share a handle");
    for port in &ports {
        assert!(Event::from_handle(port.handle()).is_none());
    }
    for event in &events {
        assert!(Port::from_handle(event.handle()).is_none());
    }
}

#[test]
fn a_port_dropped_by_a_thread_that_took_a_record_is_gone() {
    let _numbers = handle_numbers();
    // Ports with a concurrency value remember which thread they released; that must not
    // keep the port (its ring, its descriptor) alive once its owner drops it.
    thread::spawn(|| {
        let port = Port::builder().concurrency(4).build().unwrap();
        let handle = port.handle();
        port.post(Completion::new(1, 0, 0)).unwrap();
        port.get(Some(Duration::ZERO)).unwrap();
        drop(port);
        assert!(
            Port::from_handle(handle).is_none(),
            "the port outlived its last clone"
        );
    })
    .join()
    .unwrap();
}
