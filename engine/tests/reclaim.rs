//! Closing gives the memory back: a port closed through its handle, as `CloseHandle` closes
//! it, is freed before the call returns, ring and lanes included, also when the closing
//! thread posted to it and dequeued from it through the handle; so are a dropped Rust port,
//! a closed event and a closed provider handle. Live heap bytes are counted by a counting
//! global allocator (`common::heap`).
//!
//! One test, alone in its binary: the handle table's entries are reclaimed through the
//! epoch, which lets an entry go once no thread is pinned in an older epoch, and tests
//! running beside this one would keep pinning.
#![cfg(not(loom))]

mod common;

use common::heap::{live_bytes, Counting};
use iocp::{Completion, Event, Port, ProviderSocket};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Rounds: each makes and closes two ports, an event and a provider handle.
const ROUNDS: usize = 32;

/// What the rounds may leave behind in all: less than one port's ring (4,096 slots of 32
/// bytes in each lane), so that keeping any closed port fails the check.
const SLACK: i64 = 64 << 10;

/// A port used through its handle, as a C program uses one: posts and dequeues by handle
/// (which fill the thread's caches of ports and lanes), then closed as `CloseHandle` closes
/// it, through a reference of its own, while another thread still holds one that it drops
/// after the close. Then a Rust port posted to and dropped, an event and a provider handle
/// made and closed.
fn round() {
    let handle = Port::new().unwrap().into_handle();
    for i in 0..3 {
        Port::post_to_handle(handle, Completion::new(i, 8, 0))
            .expect("a port")
            .unwrap();
    }
    let port = Port::from_handle(handle).expect("a port");
    let mut taken = [Completion::new(0, 0, 0); 4];
    let drained = port.get_many(&mut taken, 3, Some(Duration::ZERO)).unwrap();
    assert_eq!(drained.count, 3);
    let (closed, told) = mpsc::channel::<()>();
    let elsewhere = {
        let port = port.clone();
        thread::spawn(move || {
            told.recv().unwrap();
            drop(port);
        })
    };
    port.check_handle().unwrap();
    port.close().unwrap();
    drop(port);
    assert!(Port::from_handle(handle).is_none());
    closed.send(()).unwrap();
    elsewhere.join().unwrap();

    let port = Port::new().unwrap();
    port.post(Completion::new(1, 2, 3)).unwrap();
    drop(port);

    let event = Event::new(true, false).unwrap().into_handle();
    Event::from_handle(event)
        .expect("an event")
        .close()
        .unwrap();

    let provider = ProviderSocket::new(1, 2).unwrap().into_handle();
    ProviderSocket::from_handle(provider)
        .expect("a provider handle")
        .close()
        .unwrap();
}

#[test]
fn closed_handles_give_their_memory_back() {
    // From the start: what is made once per thread or process (the thread's caches, its
    // epoch registration, the handle table's chunk) is a few KiB.
    let before = live_bytes();
    for _ in 0..ROUNDS {
        round();
    }
    let grown = live_bytes() - before;
    assert!(
        grown < SLACK,
        "{ROUNDS} rounds of closed ports, events and provider handles left {grown} bytes \
         allocated"
    );
}
