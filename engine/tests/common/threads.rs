//! Threads that wait while the test acts.

use super::timing::SETTLE;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

/// Runs `wait` on another thread and returns once it has had time to park (it passed a
/// barrier [`SETTLE`] ago), with the thread and the channel its result comes back on.
pub fn waiting<T: Send + 'static>(
    wait: impl FnOnce() -> T + Send + 'static,
) -> (thread::JoinHandle<()>, mpsc::Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    let barrier = Arc::new(Barrier::new(2));
    let handle = {
        let barrier = Arc::clone(&barrier);
        thread::spawn(move || {
            barrier.wait();
            let _ = tx.send(wait());
        })
    };
    barrier.wait();
    thread::sleep(SETTLE);
    (handle, rx)
}
