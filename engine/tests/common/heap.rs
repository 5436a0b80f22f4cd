//! The system allocator, counting the bytes allocated and not yet freed by every thread,
//! for the checks that memory is given back: a test binary that uses it installs it with
//! `#[global_allocator] static ALLOCATOR: Counting = Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

/// The system allocator, counting live bytes so that leak checks do not rest on RSS.
pub struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

/// Bytes allocated and not yet freed, by every thread.
pub fn live_bytes() -> i64 {
    // Relaxed: a count, read after the allocations it is to include (by the thread that
    // made them, or one that joined it).
    LIVE_BYTES.load(Ordering::Relaxed)
}

// SAFETY: every call goes to the system allocator with its arguments unchanged; the count
// kept on the side has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` is passed unchanged, so it has the non-zero size our caller
        // guarantees.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            // Relaxed: a count; see `live_bytes`.
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` is passed unchanged, with the non-zero size our caller
        // guarantees.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            // Relaxed: a count; see `live_bytes`.
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`, with `layout` (our
        // caller's guarantee).
        unsafe { System.dealloc(ptr, layout) };
        // Relaxed: as in `alloc`.
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` (via this allocator) with `layout`; our caller
        // guarantees `new_size` is non-zero and in range once rounded up to the alignment.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Relaxed: as in `alloc`.
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        new
    }
}
