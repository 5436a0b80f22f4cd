//! The asymmetric barrier: a Dekker pair whose frequent side pays nothing.
//!
//! A poster publishes a record and then looks for sleepers; a waiter announces itself and
//! then looks for records. Either look may miss the other side's store unless a full
//! (store-load) barrier separates each side's store from its load. Posting is the hot side,
//! so its barrier should cost nothing; sleeping makes a system call anyway, so it can pay
//! for both: [`heavy`] makes every other running thread of the process execute a full
//! barrier (Linux `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, by interrupting the CPUs
//! that run this process's threads; a thread not running has passed a context switch,
//! itself a barrier). After a waiter's announcement and [`heavy`], every poster has either
//! made its record visible or not yet loaded the sleeper count, which will then show the
//! waiter. This is the scheme of folly's `asymmetricHeavyBarrier` and of liburcu's
//! membarrier flavour.
//!
//! Where the kernel refuses `membarrier` (before Linux 4.14, under a seccomp filter), on
//! other systems, under loom and Miri, and with `--cfg iocp_force_fallback` (so that CI
//! runs this protocol too), [`light`] is a sequentially consistent fence
//! instead and [`heavy`] a plain one: the pair is then the classic symmetric Dekker pair.
//! [`is_asymmetric`] says which.

use crate::primitive::Ordering;

/// The poster's side, between publishing and looking for sleepers.
#[inline]
pub(crate) fn light() {
    if is_asymmetric() {
        // The waiter's `heavy` stands in for this side's fence; the compiler must still not
        // move the look for sleepers above the publication.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence();
    }
}

/// The waiter's side, between announcing itself and its last look for records.
pub(crate) fn heavy() {
    if !(is_asymmetric() && imp::membarrier()) {
        fence();
    }
}

/// Whether [`light`] costs nothing (the kernel's `membarrier` is available).
#[inline]
pub(crate) fn is_asymmetric() -> bool {
    imp::registered()
}

fn fence() {
    // SeqCst: the symmetric Dekker pair (see the module docs); pairs with the same fence
    // on the other side.
    crate::primitive::fence(Ordering::SeqCst);
}

#[cfg(all(target_os = "linux", not(loom), not(miri), not(iocp_force_fallback)))]
mod imp {
    use std::sync::atomic::{AtomicU8, Ordering};

    /// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` and its registration (`<linux/membarrier.h>`).
    const PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    const REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;

    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

    fn membarrier_call(cmd: libc::c_int) -> bool {
        // SAFETY: membarrier takes two integers and touches no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_uint,
                0 as libc::c_int,
            ) == 0
        }
    }

    /// Whether this process registered for expedited private barriers; registers on the
    /// first call (a process may register any number of times).
    #[inline]
    pub(super) fn registered() -> bool {
        // Relaxed: the flag only selects a protocol; registration happens-before every
        // later `membarrier` call of any thread through the kernel, and a thread that sees
        // UNKNOWN registers itself.
        match STATE.load(Ordering::Relaxed) {
            YES => true,
            NO => false,
            _ => register(),
        }
    }

    #[cold]
    fn register() -> bool {
        let ok = membarrier_call(REGISTER_PRIVATE_EXPEDITED);
        if ok {
            // A child of `fork` has a new address space, which is not registered: it must
            // register again before it trusts the flag (see `forgotten_in_child`). The
            // handler is inherited by children, so one registration of it is enough.
            static AT_FORK: std::sync::Once = std::sync::Once::new();
            AT_FORK.call_once(|| {
                // SAFETY: the handler is an `extern "C" fn()` that only stores to a static
                // atomic, which is async-signal-safe as a child handler must be.
                unsafe { libc::pthread_atfork(None, None, Some(forgotten_in_child)) };
            });
        }
        // Relaxed: see `registered`. Racing registrations agree (the kernel answers alike).
        STATE.store(if ok { YES } else { NO }, Ordering::Relaxed);
        ok
    }

    /// In a child of `fork`: the registration was the parent's; the next post or wait asks
    /// again.
    pub(super) extern "C" fn forgotten_in_child() {
        // Relaxed: the child has one thread.
        STATE.store(UNKNOWN, Ordering::Relaxed);
    }

    /// A full barrier on every running thread of the process; `false` if the kernel
    /// refused (the caller then falls back to a fence), after which posts take the fence
    /// side too.
    pub(super) fn membarrier() -> bool {
        if membarrier_call(PRIVATE_EXPEDITED) {
            return true;
        }
        // Relaxed: see `registered`. A registered address space keeps its registration (a
        // child of `fork` resets the flag before anything else runs), so this is a safety
        // net: from now on posts take the fence side as well.
        STATE.store(NO, Ordering::Relaxed);
        false
    }
}

#[cfg(not(all(target_os = "linux", not(loom), not(miri), not(iocp_force_fallback))))]
mod imp {
    #[inline]
    pub(super) fn registered() -> bool {
        false
    }

    pub(super) fn membarrier() -> bool {
        false
    }
}

#[cfg(all(
    test,
    target_os = "linux",
    not(loom),
    not(miri),
    not(iocp_force_fallback)
))]
mod tests {
    use super::imp;

    #[test]
    fn a_child_of_fork_registers_again_before_it_trusts_the_flag() {
        if !super::is_asymmetric() {
            // Before Linux 4.14, or under a seccomp filter: the symmetric fences are in use,
            // which the tests on the emulated backend cover.
            eprintln!("skipped: this kernel refuses membarrier");
            return;
        }
        assert!(imp::membarrier());
        // What the fork handler does in a child: the flag is forgotten, and the next look
        // registers (this process's registration stands, so it is accepted again).
        imp::forgotten_in_child();
        assert!(super::is_asymmetric());
        super::heavy();
        super::light();
    }
}
