//! The few system calls the harness makes itself: the raw futex of the `wake` peer, the
//! thread CPU clock of the idle-waiter measurement, `uname` for the machine record, and
//! `dlopen` for the C library the C ABI rows load.

use std::ffi::{c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected` (`FUTEX_WAIT`, no timeout). Returns on a wake, a
/// signal, or at once if the word already differs: callers re-check the word in a loop.
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a live, aligned u32 for the whole call; a NULL timeout means no
    // timeout. The kernel only reads the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes one thread sleeping on `word` (`FUTEX_WAKE`).
pub fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only hashes the address to find sleepers; `word` is live anyway.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; this clock exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `uname -srvm`: kernel name, release, version and machine, or `None` if it fails.
pub fn uname() -> Option<String> {
    // SAFETY: `utsname` is plain old data; all-zero bytes are a valid value.
    let mut names: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `names` is a valid, writable utsname.
    if unsafe { libc::uname(&mut names) } != 0 {
        return None;
    }
    let field = |chars: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates every field within its array.
        unsafe { CStr::from_ptr(chars.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Some(format!(
        "{} {} {} {}",
        field(&names.sysname),
        field(&names.release),
        field(&names.version),
        field(&names.machine)
    ))
}

/// A shared library loaded with `dlopen`. Never unloaded: a Rust `cdylib` may leave
/// thread-local destructors behind that must not outlive its code, so the handle is kept
/// for the life of the process.
pub struct SharedLibrary {
    handle: *mut c_void,
}

// SAFETY: a dlopen handle is a process-wide token; `dlsym` may be called on it from any
// thread.
unsafe impl Send for SharedLibrary {}
// SAFETY: shared use reaches the handle only through `dlsym`, which is thread-safe, and the
// handle is never closed.
unsafe impl Sync for SharedLibrary {}

impl SharedLibrary {
    /// Loads `path` with every symbol resolved now (`RTLD_NOW`) and kept out of the global
    /// namespace (`RTLD_LOCAL`), as a plugin is. Returns `dlerror`'s text on failure.
    pub fn open(path: &Path) -> Result<SharedLibrary, String> {
        let name = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: `name` is a NUL-terminated path. Loading runs the library's initializers;
        // the libraries loaded here are ours (libiocp), whose initializers are Rust's.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(dl_error());
        }
        Ok(SharedLibrary { handle })
    }

    /// The address of the exported symbol `name`, or `None` when the library lacks it.
    pub fn symbol(&self, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: `handle` came from a successful dlopen and is never closed; `name` is
        // NUL-terminated.
        let address = unsafe { libc::dlsym(self.handle, name.as_ptr()) };
        (!address.is_null()).then_some(address)
    }
}

/// The text of the last `dlopen`/`dlsym` failure on this thread.
fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call
    // on this thread, which the copy below precedes.
    let text = unsafe { libc::dlerror() };
    if text.is_null() {
        return "unknown dlopen error".to_owned();
    }
    // SAFETY: non-NULL, NUL-terminated, valid until the next dl call (see above).
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}
