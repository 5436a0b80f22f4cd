//! Synchronization primitives, from loom under `--cfg loom` and from std otherwise, so
//! that the models in `tests/loom/` check the very code that ships.

#[cfg(loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    },
    sync::{Condvar, Mutex, MutexGuard},
    thread_local,
};

#[cfg(not(loom))]
pub(crate) use std::{
    sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    },
    sync::{Mutex, MutexGuard},
    thread_local,
};

/// Only the emulated futex sleeps on a condition variable.
#[cfg(all(not(loom), any(not(target_os = "linux"), iocp_force_fallback)))]
pub(crate) use std::sync::Condvar;

/// One step of a busy wait. Under loom it yields, so the model lets the other threads run.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Gives the CPU to another thread. Under loom, a yield of the model.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// A `SeqCst` fence for loom only. Loom models `SeqCst` accesses as `AcqRel` (see its
/// README's limitations), which breaks the Dekker pairs between posters and waiters that
/// the real memory model keeps through the single total order of `SeqCst` accesses; this
/// fence at each side's turn gives loom that order. Elsewhere it compiles to nothing.
#[inline]
pub(crate) fn loom_seqcst_fence() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// Locks `mutex`, ignoring poisoning: every critical section in the engine leaves its
/// data consistent before anything in it can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `std::cell::UnsafeCell` with loom's closure-based accessors.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
