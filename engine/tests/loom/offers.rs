//! Shared cached reads: a run of tasks offered to an idle pool thread (`Offers`).

use crate::model;
use iocp::Offers;
use loom::thread;
use std::sync::Arc;

/// Cells the tasks of a shared run write, one per task, as a helper's `pread` writes the
/// caller's buffer: loom reports a write not ordered before the caller's reads.
struct Buffers([loom::cell::UnsafeCell<u32>; 3]);

// SAFETY: each cell is written by the one thread that runs its task, and read by the
// caller only after `Offers::run` returned, which orders every task before.
unsafe impl Sync for Buffers {}

/// A caller shares a run of three tasks through the pool's slot while a helper looks at the
/// slot twice: each task runs exactly once, on either thread, and what the helper's tasks
/// wrote is visible to the caller when `run` returns; the slot is empty afterwards.
#[test]
fn a_shared_run_has_each_task_run_once_and_seen_by_the_caller() {
    model(
        "a_shared_run_has_each_task_run_once_and_seen_by_the_caller",
        3,
        || {
            let offers = Arc::new(Offers::new());
            let helper = {
                let offers = Arc::clone(&offers);
                thread::spawn(move || {
                    let first = offers.help();
                    first | offers.help()
                })
            };
            let buffers = Buffers(std::array::from_fn(|_| loom::cell::UnsafeCell::new(0)));
            let cells = &buffers;
            let task = move |i: usize| {
                // SAFETY: `run` hands index `i` to one thread only (the `Buffers` contract).
                cells.0[i].with_mut(|cell| unsafe { *cell += 1 });
            };
            offers.run(3, &task, || {});
            for (i, cell) in buffers.0.iter().enumerate() {
                // SAFETY: `run` returned: no task writes any more.
                assert_eq!(cell.with(|cell| unsafe { *cell }), 1, "task {i}");
            }
            assert!(!offers.pending(), "the run is out of the slot");
            helper.join().unwrap();
        },
    );
}
