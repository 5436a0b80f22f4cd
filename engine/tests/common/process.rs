//! A forked child that runs a closure and ends, for tests of what the library does across
//! `fork`.

use std::time::{Duration, Instant};

/// How long a child may take before it is killed and the test fails.
pub const CHILD_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `child` in a forked child of this process and returns its exit code: `child`'s
/// value, or 101 if it panicked. Fails the test if the child is killed, or takes longer
/// than [`CHILD_PATIENCE`] (it is killed then).
///
/// The child ends with `_exit`, skipping this process's exit handlers and destructors,
/// which are not the child's. It prints nothing: the test harness captures output in this
/// process's memory, which the child's copy would keep to itself.
pub fn in_forked_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs `child` and ends with `_exit`. Only the calling thread is
    // copied: `child` must not need a lock another thread of the test may hold at the fork
    // (glibc's allocator, which `fork` prepares for the child, is fine).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child at once, as above.
        unsafe { libc::_exit(code) }
    }
    let started = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live local; `pid` is this process's child, not yet reaped.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(done >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if done == pid {
            break;
        }
        if started.elapsed() > CHILD_PATIENCE {
            // SAFETY: `pid` is this process's child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child did not finish in {CHILD_PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        libc::WIFEXITED(status),
        "the child was killed: status {status:#x}"
    );
    libc::WEXITSTATUS(status)
}
