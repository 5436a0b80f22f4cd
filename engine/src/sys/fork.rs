//! Which process the library's threads and kernel objects belong to: a count of the
//! `fork` calls this process descends through, kept by a `pthread_atfork` child handler.
//!
//! `fork` copies the calling thread alone, and shares the parent's kernel objects with the
//! child. The file pool's threads and a port's reactor thread stay in the parent; an
//! io_uring instance's rings (a shared mapping) and an epoll instance stay shared with it.
//! A child that used them would wait for threads it does not have, take readiness meant
//! for the parent (whose epoll events name sockets by their address in the parent's
//! memory), or fill the parent's rings with its own requests. So what is made of threads
//! and such objects notes the process it is made in ([`Born`]), and a child makes its own
//! ([`PerProcess`]) or refuses (a file pool made before the fork).
//!
//! Under loom there is no fork: the count stays 0.

use crate::primitive::{AtomicPtr, Ordering};
use std::io;
use std::marker::PhantomData;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU64;

/// `fork` calls since the library started watching, counted in the child only.
#[cfg(not(loom))]
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Runs in the child of every `fork` once [`watch`] has run, with the child's one thread.
#[cfg(not(loom))]
extern "C" fn forked() {
    // Relaxed: the child has one thread at this point; threads it starts later are ordered
    // after this store by their creation.
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Starts counting forks (once per process; later calls return at once). Returns the
/// current count, which [`generation`] keeps returning in this process and in no other.
fn watch() -> u64 {
    #[cfg(not(loom))]
    {
        static WATCH: std::sync::Once = std::sync::Once::new();
        WATCH.call_once(|| {
            // SAFETY: `forked` is an `extern "C" fn()` that lives as long as the process
            // and only adds to an atomic (async-signal-safe, as a child handler must be).
            let status = unsafe { libc::pthread_atfork(None, None, Some(forked)) };
            // Only ENOMEM can fail it; then a child is not told apart from its parent, as
            // before the library watched.
            debug_assert!(
                status == 0 || status == libc::ENOMEM,
                "pthread_atfork: {status}"
            );
        });
    }
    generation()
}

/// The number of `fork` calls between the first process that called [`watch`] and this
/// one.
#[inline]
fn generation() -> u64 {
    #[cfg(not(loom))]
    {
        // Relaxed: the count changes only in a child before it has a second thread.
        FORKS.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(loom)]
    0
}

/// The process something was made in: the count of forks then (which also starts the
/// count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Born(u64);

impl Born {
    /// This process.
    pub(crate) fn now() -> Born {
        Born(watch())
    }

    /// Whether the calling process is the one this was made in, not the child of a
    /// later `fork`.
    #[inline]
    pub(crate) fn is_here(self) -> bool {
        generation() == self.0
    }
}

/// A value made on first use in each process: in a static, one of the library's
/// process-wide objects (the C ABI's file pool, the reactor of sockets with no port); in a
/// port, its reactor. A forked child sees nothing of the parent's, and makes its own on
/// first use; the parent's is then left to leak in the child (another thread of the child
/// may still be reading it). The value in the slot is dropped with it. No lock: one
/// that a thread of the parent held at the fork would stay held in the child.
pub(crate) struct PerProcess<T> {
    /// Null, or a leaked box.
    current: AtomicPtr<Made<T>>,
    /// Sent and shared as `OnceLock<T>` is: a value made on one thread is read on others
    /// and dropped on the owner's.
    _value: PhantomData<(std::sync::Mutex<T>, T)>,
}

/// A [`PerProcess`] value and the process that made it.
struct Made<T> {
    born: Born,
    value: T,
}

impl<T> PerProcess<T> {
    /// None made yet.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> PerProcess<T> {
        PerProcess {
            current: AtomicPtr::new(std::ptr::null_mut()),
            _value: PhantomData,
        }
    }

    /// None made yet.
    #[cfg(loom)]
    pub(crate) fn new() -> PerProcess<T> {
        PerProcess {
            current: AtomicPtr::new(std::ptr::null_mut()),
            _value: PhantomData,
        }
    }

    /// What the slot holds, whichever process made it.
    #[inline]
    fn load(&self) -> Option<&Made<T>> {
        // Acquire: pairs with the release in `get_or_make`'s exchange: the value is
        // initialized.
        let made = self.current.load(Ordering::Acquire);
        // SAFETY: non-null only once `get_or_make` stored a leaked, initialized box, which
        // is freed only by `drop` (`&mut self`, so no reference from here outlives it).
        unsafe { made.as_ref() }
    }

    /// This process's value, if it has made one.
    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
        self.load()
            .filter(|made| made.born.is_here())
            .map(|made| &made.value)
    }

    /// This process's value, made with `make` if it has none yet; `true` with it when this
    /// call's `make` made it. Threads that race here may each run `make`: the values of
    /// all but one are dropped at once.
    pub(crate) fn get_or_make(
        &self,
        make: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<(&T, bool)> {
        let born = Born::now();
        let before = self.current.load(Ordering::Acquire);
        // SAFETY: as in `load`.
        if let Some(made) = unsafe { before.as_ref() } {
            if made.born == born {
                return Ok((&made.value, false));
            }
        }
        let ours = Box::into_raw(Box::new(Made {
            born,
            value: make()?,
        }));
        // AcqRel: the release half publishes the value to the acquire loads in `load` and
        // above; the acquire half, on failure, makes the winner's value visible here.
        // (What `before` held, made by another process, is left to leak: see the type.)
        match self
            .current
            .compare_exchange(before, ours, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: `ours` is installed, and freed only by `drop`.
            Ok(_) => Ok((unsafe { &(*ours).value }, true)),
            Err(winner) => {
                // SAFETY: `ours` came from `Box::into_raw` above and was never published.
                drop(unsafe { Box::from_raw(ours) });
                // SAFETY: only this process's threads store here after `before` was read
                // (the memory is this process's own), and each stores a value made in it,
                // leaked and freed only by `drop`.
                Ok((unsafe { &(*winner).value }, false))
            }
        }
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self`; the value was published to this thread when the slot was
        // (a value made by another process is a copy as old as the fork).
        let made = self.current.load(Ordering::Relaxed);
        if !made.is_null() {
            // SAFETY: a box leaked by `get_or_make`; `&mut self`, so nobody borrows it.
            drop(unsafe { Box::from_raw(made) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Counts its drops in the counter it holds.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_slot_makes_its_value_once_and_drops_it_with_itself() {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = PerProcess::new();
        assert!(slot.get().is_none());
        let (first, made) = slot
            .get_or_make(|| Ok(Counted(Arc::clone(&drops))))
            .unwrap();
        assert!(made);
        let first: *const Counted = first;
        let (again, made) = slot
            .get_or_make(|| -> io::Result<Counted> { panic!("made twice") })
            .unwrap();
        assert!(!made && std::ptr::eq(again, first));
        assert!(slot.get().is_some_and(|value| std::ptr::eq(value, first)));
        // A failed `make` leaves an empty slot empty.
        let empty = PerProcess::<Counted>::new();
        let failed = empty.get_or_make(|| Err(io::Error::from_raw_os_error(libc::EMFILE)));
        assert_eq!(
            failed.err().and_then(|e| e.raw_os_error()),
            Some(libc::EMFILE)
        );
        assert!(empty.get().is_none());
        drop(slot);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn threads_racing_to_make_the_value_agree_on_one_and_drop_the_rest() {
        const THREADS: usize = 4;
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = PerProcess::new();
        let start = std::sync::Barrier::new(THREADS);
        let results: Vec<(usize, bool)> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let (value, made) = slot
                            .get_or_make(|| Ok(Counted(Arc::clone(&drops))))
                            .unwrap();
                        (std::ptr::from_ref(value).addr(), made)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|(_, made)| *made).count(), 1);
        assert!(results.iter().all(|(addr, _)| *addr == results[0].0));
        let losers = drops.load(std::sync::atomic::Ordering::Relaxed);
        drop(slot);
        assert_eq!(
            drops.load(std::sync::atomic::Ordering::Relaxed),
            losers + 1,
            "the slot drops the value it kept"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Miri cannot fork.
    fn a_child_counts_one_more_fork_than_its_parent() {
        let born = watch();
        let mut pipe = [0; 2];
        // SAFETY: `pipe` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only reads an atomic and makes async-signal-safe calls (write,
        // _exit) before it ends.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let seen = generation().wrapping_sub(born);
            let byte = seen.min(255) as u8;
            // SAFETY: one byte from a live local to the pipe's write end; `_exit` skips
            // the parent's atexit handlers and destructors, which are not the child's.
            unsafe {
                libc::write(pipe[1], std::ptr::from_ref(&byte).cast(), 1);
                libc::_exit(0);
            }
        }
        let mut byte = 0u8;
        // SAFETY: one byte into a live local; the parent's copies of the descriptors are
        // its own to close.
        let read = unsafe {
            libc::close(pipe[1]);
            let n = libc::read(pipe[0], std::ptr::from_mut(&mut byte).cast(), 1);
            libc::close(pipe[0]);
            n
        };
        let mut status = 0;
        // SAFETY: `status` is a live local; `pid` is this process's child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!((read, byte), (1, 1), "the child's count");
        assert_eq!(generation(), born, "the parent's count");
    }
}
