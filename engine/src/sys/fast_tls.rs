//! One pointer-sized thread-local slot that the library reaches without a function call,
//! also when it is a shared library.
//!
//! Rust's `thread_local!` uses the general-dynamic TLS model: in `libiocp.so` each access
//! is a call to `__tls_get_addr` (through the PLT) and a check of the variable's state,
//! about a nanosecond per C call, a tenth of a `PostQueuedCompletionStatus`. Stable Rust
//! cannot choose another model, so on x86-64 Linux the slot is declared in assembly and
//! read with the initial-exec model: its offset from the thread pointer is fixed when the
//! library is loaded, and a read is two loads. A library loaded with `dlopen` takes those
//! 8 bytes from the C library's reserve of static TLS (glibc keeps 512 bytes or more for
//! this); `dlopen` fails with "cannot allocate memory in static TLS block" only when other
//! libraries have used up that reserve.
//!
//! Elsewhere (other targets, Miri) the slot is a plain `thread_local!` cell.
//!
//! The slot only holds a pointer; what it points to, and for how long it stays valid, is
//! the owner's business: the port's thread cache (`port::Recent`), which stores the
//! address of its own thread-local there and clears it when that is dropped.

#[cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
mod imp {
    use std::arch::{asm, global_asm};

    // An 8-byte zero-initialized thread-local object. Global (so that every codegen unit's
    // assembly reaches it) but hidden (so that each shared object has its own), and named
    // with the crate's version so that two versions of the engine in one program do not
    // collide.
    global_asm!(
        ".pushsection .tbss.iocp_engine_0_1_tls_slot,\"awT\",@nobits",
        ".globl iocp_engine_0_1_tls_slot",
        ".hidden iocp_engine_0_1_tls_slot",
        ".type iocp_engine_0_1_tls_slot,@object",
        ".size iocp_engine_0_1_tls_slot,8",
        ".p2align 3",
        "iocp_engine_0_1_tls_slot:",
        ".zero 8",
        ".popsection",
    );

    /// The calling thread's slot (null until [`set`]).
    #[inline(always)]
    pub(crate) fn get() -> *const () {
        let value: *const ();
        // SAFETY: initial-exec access to the slot above: the GOT entry holds its offset
        // from the thread pointer (`%fs` base), and the slot is this thread's own 8 bytes,
        // which nothing else reads or writes.
        unsafe {
            asm!(
                "movq iocp_engine_0_1_tls_slot@GOTTPOFF(%rip), {v}",
                "movq %fs:({v}), {v}",
                v = out(reg) value,
                options(att_syntax, nostack, preserves_flags, readonly, pure),
            );
        }
        value
    }

    /// Sets the calling thread's slot.
    #[inline]
    pub(crate) fn set(value: *const ()) {
        // SAFETY: initial-exec access to the slot: the GOT entry holds its offset from the
        // thread pointer (`%fs` base), and the store is to this thread's own 8 bytes, which
        // nothing else reads or writes.
        unsafe {
            asm!(
                "movq iocp_engine_0_1_tls_slot@GOTTPOFF(%rip), {t}",
                "movq {v}, %fs:({t})",
                t = out(reg) _,
                v = in(reg) value,
                options(att_syntax, nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64", not(miri))))]
mod imp {
    use std::cell::Cell;

    std::thread_local! {
        static SLOT: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
    }

    /// The calling thread's slot (null until [`set`], and once the thread's locals are
    /// gone).
    #[inline]
    pub(crate) fn get() -> *const () {
        SLOT.try_with(Cell::get).unwrap_or(std::ptr::null())
    }

    /// Sets the calling thread's slot (nothing, once the thread's locals are gone).
    #[inline]
    pub(crate) fn set(value: *const ()) {
        let _ = SLOT.try_with(|slot| slot.set(value));
    }
}

pub(crate) use imp::{get, set};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_has_its_own_slot_starting_null() {
        let mine = 0x1000 as *const ();
        set(mine);
        assert_eq!(get(), mine);
        std::thread::spawn(|| {
            assert!(get().is_null());
            set(0x2000 as *const ());
            assert_eq!(get(), 0x2000 as *const ());
        })
        .join()
        .unwrap();
        assert_eq!(get(), mine);
        set(std::ptr::null());
        assert!(get().is_null());
    }
}
