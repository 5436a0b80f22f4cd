//! The fast path allocates nothing: posting, dequeuing records that are ready through
//! every call, and waking a parked waiter, counted by a counting global allocator.
//!
//! Only the calling thread's allocations are counted, so tests running in parallel (and the
//! test harness) do not disturb each other's counts. Each test first runs its sequence
//! once to warm up what is allocated once per thread or per port (the thread's parker, its
//! lane on the port, the wait stack's storage), then asserts that a second run allocates
//! nothing.
#![cfg(not(loom))]

mod common;

use common::ports::record;
use iocp::{Completion, DrainStatus, Drained, Event, Overlapped, Port};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

struct Counting;

thread_local! {
    /// Allocations (including reallocations) made by this thread. A const-initialized
    /// `Cell` has no destructor, so reading it never allocates nor fails at thread exit.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    ALLOCATIONS.with(|count| count.set(count.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are this allocator's; counting touches only a thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: `layout` is passed unchanged, so it has the non-zero size our caller
        // guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: `layout` is passed unchanged, with the non-zero size our caller
        // guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from this allocator, hence from `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns what it returned and how many allocations this thread made in it.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (result, ALLOCATIONS.with(Cell::get) - before)
}

/// Runs `round` twice and checks that the second run allocated nothing.
fn allocation_free_after_warm_up<R: PartialEq + std::fmt::Debug>(mut round: impl FnMut() -> R) {
    let (warm, _) = allocations_in(&mut round);
    let (again, allocations) = allocations_in(&mut round);
    assert_eq!(again, warm, "the two rounds disagree");
    assert_eq!(
        allocations, 0,
        "the fast path allocated {allocations} times"
    );
}

const N: usize = 32;

fn post_all(port: &Port) {
    for i in 0..N {
        port.post(record(i)).unwrap();
    }
}

/// Sums every field so the rounds' results can be compared without a collection.
fn checksum(records: impl IntoIterator<Item = Completion>) -> (usize, u64) {
    records.into_iter().fold((0, 0), |(n, sum), r| {
        (
            n + 1,
            sum.wrapping_mul(31) ^ r.key() ^ u64::from(r.bytes()) ^ r.overlapped() as u64,
        )
    })
}

#[test]
fn post_and_get_of_ready_records_allocate_nothing() {
    // The default concurrency value is in force, so `get` also does its accounting.
    let port = Port::builder().capacity(64).build().unwrap();
    allocation_free_after_warm_up(|| {
        post_all(&port);
        checksum((0..N).map(|_| port.get(Some(Duration::ZERO)).unwrap()))
    });
}

#[test]
fn post_and_get_many_allocate_nothing() {
    let port = Port::builder().capacity(64).build().unwrap();
    allocation_free_after_warm_up(|| {
        post_all(&port);
        let mut out = [Completion::default(); N];
        let drained = port.get_many(&mut out, N, None).unwrap();
        (drained, checksum(out))
    });
}

#[test]
fn post_and_fill_allocate_nothing() {
    let port = Port::builder().capacity(64).build().unwrap();
    allocation_free_after_warm_up(|| {
        post_all(&port);
        let mut out = [MaybeUninit::<Completion>::uninit(); N];
        let drained = port.fill(&mut out, N, None, |r| *r).unwrap();
        // SAFETY: `fill` initialized the first `count` entries, which is all `N`.
        let sum = checksum(
            out[..drained.count]
                .iter()
                .map(|r| unsafe { r.assume_init() }),
        );
        (drained, sum)
    });
}

#[test]
fn post_and_drain_allocate_nothing() {
    let port = Port::builder().capacity(64).build().unwrap();
    allocation_free_after_warm_up(|| {
        post_all(&port);
        let batch = port.drain(N, None).unwrap();
        let len = batch.len();
        (len, checksum(batch))
    });
}

#[test]
fn dequeues_that_wrap_around_the_ring_allocate_nothing() {
    // Eleven records at a time through a ring of 16 start at a different slot each time,
    // so most runs split at the end of the ring and are copied in two pieces.
    let port = Port::builder().capacity(16).build().unwrap();
    allocation_free_after_warm_up(|| {
        let mut out = [Completion::default(); 16];
        let mut taken = 0;
        for _ in 0..7 {
            for i in 0..11 {
                port.post(record(i)).unwrap();
            }
            let drained = port.get_many(&mut out, 11, None).unwrap();
            assert!(out[..drained.count]
                .iter()
                .enumerate()
                .all(|(i, r)| *r == record(i)));
            taken += drained.count;
        }
        (taken, port.queued())
    });
}

#[test]
fn polling_an_empty_port_allocates_nothing() {
    let port = Port::new().unwrap();
    allocation_free_after_warm_up(|| {
        let mut out = [Completion::default(); 4];
        (
            port.get(Some(Duration::ZERO)).map_err(|e| e.raw_os_error()),
            port.get_many(&mut out, 1, Some(Duration::ZERO)).unwrap(),
            port.drain(4, Some(Duration::ZERO))
                .map(|b| b.len())
                .map_err(|e| e.raw_os_error()),
        )
    });
}

#[test]
fn a_post_that_wakes_a_parked_waiter_allocates_nothing_on_either_side() {
    let port = Port::builder().concurrency(usize::MAX).build().unwrap();
    let rounds = 3;
    let ready = Arc::new(Barrier::new(2));
    let waiter = {
        let (port, ready) = (port.clone(), Arc::clone(&ready));
        thread::spawn(move || {
            let mut allocations = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                ready.wait();
                let (got, count) = allocations_in(|| port.get(Some(Duration::from_secs(10))));
                assert_eq!(got.unwrap().key(), 7);
                allocations.push(count);
            }
            allocations
        })
    };
    let mut posting = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        ready.wait();
        // Long enough for the waiter to park, so the post makes the wake call.
        thread::sleep(Duration::from_millis(50));
        let ((), count) = allocations_in(|| port.post(Completion::new(7, 0, 0)).unwrap());
        posting.push(count);
    }
    let waiting = waiter.join().unwrap();
    // The thread's first post to the port takes (makes) its lane.
    assert_eq!(posting[1..], [0, 0], "allocations by each waking post");
    // The first wait makes the thread's parker and the wait stack's storage.
    assert_eq!(waiting[1..], [0, 0], "allocations by each woken wait");
}

#[test]
fn a_post_that_wakes_a_parked_get_many_allocates_nothing() {
    let port = Port::new().unwrap();
    let ready = Arc::new(Barrier::new(2));
    let waiter = {
        let (port, ready) = (port.clone(), Arc::clone(&ready));
        thread::spawn(move || {
            let mut out = [Completion::default(); 4];
            let mut counts = [0; 3];
            for count in &mut counts {
                ready.wait();
                let (drained, allocations) =
                    allocations_in(|| port.get_many(&mut out, 1, Some(Duration::from_secs(10))));
                assert_eq!(drained.unwrap().count, 1);
                *count = allocations;
            }
            counts
        })
    };
    let mut posting = [0; 3];
    for count in &mut posting {
        ready.wait();
        thread::sleep(Duration::from_millis(50));
        *count = allocations_in(|| port.post(Completion::new(1, 0, 0)).unwrap()).1;
    }
    let waiting = waiter.join().unwrap();
    // The first post makes the thread's lane; the first wait, its parker.
    assert_eq!(posting[1..], [0, 0]);
    assert_eq!(waiting[1..], [0, 0]);
}

#[test]
fn overlapped_completion_to_a_port_allocates_nothing() {
    let port = Port::new().unwrap();
    let overlapped = Overlapped::new();
    allocation_free_after_warm_up(|| {
        overlapped.start();
        overlapped.complete(10, 0, Some((&port, 3))).unwrap();
        let record = port.get(Some(Duration::ZERO)).unwrap();
        (
            overlapped.get_result(true).unwrap(),
            record.key(),
            record.bytes(),
        )
    });
}

#[test]
fn setting_and_waiting_on_an_event_allocates_nothing() {
    let event = Event::new(false, false).unwrap();
    let overlapped = Overlapped::with_event(&event);
    allocation_free_after_warm_up(|| {
        event.set();
        let direct = event.wait(Some(Duration::ZERO)).is_ok();
        overlapped.start();
        overlapped.complete(1, 0, None).unwrap();
        (
            direct,
            event.wait(Some(Duration::ZERO)).is_ok(),
            event.is_set(),
        )
    });
}

#[test]
fn the_overflow_may_allocate_and_after_it_drains_the_ring_allocates_nothing() {
    let port = Port::builder().capacity(4).build().unwrap();
    // Spilling into the overflow queue allocates its blocks: allowed, not asserted.
    let ((), spill) = allocations_in(|| {
        for i in 0..1000 {
            port.post(record(i)).unwrap();
        }
    });
    let mut out = vec![Completion::default(); 1000];
    let drained = port.get_many(&mut out, 1000, None).unwrap();
    assert_eq!(
        drained,
        Drained {
            count: 1000,
            status: DrainStatus::Complete
        }
    );
    assert!(out.iter().enumerate().all(|(i, r)| *r == record(i)));
    eprintln!("spilling 996 records into the overflow made {spill} allocations");
    allocation_free_after_warm_up(|| {
        for i in 0..4 {
            port.post(record(i)).unwrap();
        }
        let mut out = [Completion::default(); 4];
        port.get_many(&mut out, 4, None).unwrap()
    });
}
