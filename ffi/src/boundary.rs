//! The panic boundary and `errno`.
//!
//! Every export runs its body through [`run`] (or [`catch`]): an error becomes the
//! function's failure value with `errno` set, and a Rust panic becomes the same failure
//! with `errno` = `EIO` instead of unwinding into C. (An unwind reaching an `extern "C"`
//! frame would abort the whole process.) The engine recovers the locks a panic poisons, so
//! carrying on after a caught panic is sound, which is what the `AssertUnwindSafe` claims.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;

/// An `errno` value on its way to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) i32);

impl Errno {
    pub(crate) const BADF: Errno = Errno(libc::EBADF);
    pub(crate) const INVAL: Errno = Errno(libc::EINVAL);
}

impl From<io::Error> for Errno {
    fn from(err: io::Error) -> Errno {
        Errno(err.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// What an export's body returns.
pub(crate) type Outcome<T> = Result<T, Errno>;

/// The caller's pointer `ptr` once it is fit to read or write through: `None` for NULL,
/// `EINVAL` for a misaligned one (Rust may not read or write through either).
pub(crate) fn checked<T>(ptr: *const T) -> Outcome<Option<NonNull<T>>> {
    if !ptr.is_aligned() {
        return Err(Errno::INVAL);
    }
    Ok(NonNull::new(ptr.cast_mut()))
}

/// The caller's object at `ptr`, to read: `None` for NULL, `EINVAL` for a misaligned `ptr`
/// (a reference may not be made of one).
///
/// # Safety
///
/// A non-NULL, aligned `ptr` must point to a live `T` for `'a`.
pub(crate) unsafe fn object<'a, T>(ptr: *const T) -> Outcome<Option<&'a T>> {
    // SAFETY: non-NULL and aligned, so a live `T` (the caller's promise).
    Ok(checked(ptr)?.map(|ptr| unsafe { ptr.as_ref() }))
}

/// The caller's array of `len` entries at `ptr`, to read; `EINVAL` for a NULL or misaligned
/// `ptr` (a slice may not be made of either).
///
/// # Safety
///
/// A non-NULL, aligned `ptr` must be valid for reads of `len` entries, which nothing
/// writes for `'a`.
pub(crate) unsafe fn array<'a, T>(ptr: *const T, len: usize) -> Outcome<&'a [T]> {
    let ptr = checked(ptr)?.ok_or(Errno::INVAL)?;
    // SAFETY: non-NULL and aligned, so valid for reads of `len` entries (the caller's
    // promise).
    Ok(unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len) })
}

/// The caller's array of `len` entries at `ptr`, to write before reading; `EINVAL` for a
/// NULL or misaligned `ptr`.
///
/// # Safety
///
/// A non-NULL, aligned `ptr` must be valid for writes of `len` entries, which nothing else
/// touches for `'a`.
pub(crate) unsafe fn array_mut<'a, T>(
    ptr: *mut T,
    len: usize,
) -> Outcome<&'a mut [std::mem::MaybeUninit<T>]> {
    let ptr = checked(ptr)?.ok_or(Errno::INVAL)?;
    // SAFETY: non-NULL and aligned, so valid for writes of `len` entries (the caller's
    // promise); `MaybeUninit` asks nothing of what they hold.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr().cast(), len) })
}

/// Runs an export's body behind the panic boundary: a panic is `Err(EIO)`.
pub(crate) fn catch<T, E: From<Errno>>(body: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| Err(Errno(libc::EIO).into()))
}

/// Runs an export's body behind the panic boundary: its value, or `failure` with `errno`
/// set.
pub(crate) fn run<T>(failure: T, body: impl FnOnce() -> Outcome<T>) -> T {
    catch(body).unwrap_or_else(|errno| {
        set_errno(errno.0);
        failure
    })
}

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(value: i32) {
    // SAFETY: the location is the calling thread's own `errno`, valid while it lives.
    unsafe { *errno_location() = value };
}

#[cfg(any(target_os = "netbsd", target_os = "openbsd"))]
use libc::__errno as errno_location;
#[cfg(any(target_os = "linux", target_os = "android"))]
use libc::__errno_location as errno_location;
#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
use libc::__error as errno_location;

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    #[test]
    fn a_pointer_is_checked_for_null_and_alignment() {
        let words = [0u32; 2];
        let aligned = words.as_ptr();
        assert_eq!(checked(aligned), Ok(NonNull::new(aligned.cast_mut())));
        assert_eq!(checked(ptr::null::<u32>()), Ok(None));
        let misaligned = aligned.cast::<u8>().wrapping_add(1).cast::<u32>();
        assert_eq!(checked(misaligned), Err(Errno::INVAL));
        // SAFETY: `aligned` points to a live `u32`; the others are refused before any read.
        unsafe {
            assert_eq!(object(aligned), Ok(Some(&0)));
            assert_eq!(object(ptr::null::<u32>()), Ok(None));
            assert_eq!(object(misaligned), Err(Errno::INVAL));
            assert_eq!(array(misaligned, 1), Err(Errno::INVAL));
        }
    }

    #[test]
    fn a_panic_becomes_the_failure_value_with_eio() {
        set_errno(0);
        let got = run(-1, || -> Outcome<i32> { panic!("engine bug") });
        assert_eq!(got, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn an_error_sets_errno_and_success_leaves_it_alone() {
        set_errno(0);
        assert_eq!(run(0, || Err(Errno::BADF)), 0);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EBADF));
        set_errno(libc::ENOENT);
        assert_eq!(run(0, || Ok(7)), 7);
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOENT)
        );
    }
}
