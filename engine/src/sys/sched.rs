//! The scheduling policy of the library's own threads.

/// Makes the calling thread a batch thread (Linux `SCHED_BATCH`, same priority): when an
/// event wakes it, it does not preempt the thread running on its CPU, but runs when that
/// one blocks or its time slice ends, or at once on an idle CPU. Elsewhere, and where the
/// kernel refuses (a seccomp filter, say), the thread stays as it was: only its speed
/// depends on this.
pub(crate) fn run_as_batch() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param` for the duration of the call; pid 0 is
        // the calling thread.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore)] // Miri has no scheduler policies.
    fn the_calling_thread_alone_becomes_a_batch_thread() {
        let policy = || {
            // SAFETY: no pointer is passed; pid 0 is the calling thread.
            unsafe { libc::sched_getscheduler(0) }
        };
        let before = policy();
        let inside = std::thread::spawn(move || {
            run_as_batch();
            policy()
        })
        .join()
        .unwrap();
        assert_eq!(inside, libc::SCHED_BATCH);
        assert_eq!(policy(), before);
    }
}
