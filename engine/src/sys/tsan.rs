//! ThreadSanitizer annotations, compiled in with `--cfg iocp_tsan` (which
//! `.ci/sanitizers.sh` passes together with `-Zsanitizer=thread`) and absent otherwise.
//!
//! They describe to TSan orderings the engine has but TSan cannot see — never orderings it
//! lacks: TSan keeps, under an address, the clock of the last release there, and
//! [`acquire`] takes it, exactly what an acquire load of an atomic at that address does.

use std::ffi::c_void;

extern "C" {
    // From TSan's runtime (`tsan_interface.h`), linked into every program built with
    // `-Zsanitizer=thread`. Both only update TSan's clocks for `addr`: neither reads nor
    // writes the memory there.
    fn __tsan_acquire(addr: *mut c_void);
    fn __tsan_release(addr: *mut c_void);
}

/// The calling thread acquires what was released at `addr`.
pub(crate) fn acquire<T>(addr: *const T) {
    // SAFETY: see the declaration: the address is only a key into TSan's tables.
    unsafe { __tsan_acquire(addr.cast_mut().cast()) }
}

/// The calling thread releases at `addr`, for a later [`acquire`] there.
pub(crate) fn release<T>(addr: *const T) {
    // SAFETY: the address is only a key into TSan's tables: nothing reads or writes there.
    unsafe { __tsan_release(addr.cast_mut().cast()) }
}
