//! Fault injection for the C tests: `iocp_test_fail`, `iocp_test_hits`, `iocp_test_disarm`.
//!
//! Only in the test-only build (feature `fault-injection`), declared in `tests/c/faults.h`
//! and kept out of `iocp.h` (cbindgen skips this module). Each export arms or reads a rule
//! of the engine's fault seam (`iocp::fault`); the armed rules live in a table here, and a
//! rule's number is its index in it.

use crate::boundary::{run, Errno};
use iocp::fault::{fail, Armed, Call};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uint};
use std::sync::{Mutex, PoisonError};

/// The `fd` that scopes a rule to the calling thread (`IOCP_TEST_THIS_THREAD`).
const THIS_THREAD: c_int = -1;

/// The armed rules by number; `None` once disarmed (numbers are not reused).
static RULES: Mutex<Vec<Option<Armed>>> = Mutex::new(Vec::new());

/// Makes the next `times` calls of the system call `call` fail with `err`, until
/// `iocp_test_disarm`. `call` is the name of an `iocp::fault::Call` (`"Recv"`, `"Pread"`,
/// `"Fcntl"`, `"HandleFd"`, `"FutexWait"`, `"ReactorPoll"`, `"Alloc"`, ...). `fd` scopes the
/// rule: a descriptor (the calls on its file or socket, through whichever descriptor, the
/// library's duplicate of it included), or `IOCP_TEST_THIS_THREAD` (the calling thread's
/// calls).
///
/// Returns the rule's number (0 or more), or -1 with `errno`: `EINVAL` for a NULL or
/// unknown `call`, `err` not positive, `times` 0 or `fd` below -1; `EBADF` for an `fd` that
/// is not open.
///
/// # Safety
///
/// `call` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn iocp_test_fail(
    call: *const c_char,
    err: c_int,
    fd: c_int,
    times: c_uint,
) -> c_int {
    run(-1, || {
        if call.is_null() || err <= 0 || times == 0 || fd < THIS_THREAD {
            return Err(Errno::INVAL);
        }
        // SAFETY: `call` is non-NULL, so a NUL-terminated string (the caller's contract).
        let name = unsafe { CStr::from_ptr(call) };
        let plan = fail(call_named(name).ok_or(Errno::INVAL)?, err).times(times);
        let plan = match fd {
            THIS_THREAD => plan.on_this_thread(),
            fd => plan.on_file(fd)?,
        };
        let mut rules = RULES.lock().unwrap_or_else(PoisonError::into_inner);
        let number = c_int::try_from(rules.len()).map_err(|_| Errno(libc::ENOSPC))?;
        rules.push(Some(plan.arm()));
        Ok(number)
    })
}

/// How many faults rule `rule` has delivered so far; -1 with `EINVAL` for a number that
/// names no armed rule.
#[no_mangle]
pub extern "C" fn iocp_test_hits(rule: c_int) -> c_int {
    run(-1, || {
        let rules = RULES.lock().unwrap_or_else(PoisonError::into_inner);
        let armed = usize::try_from(rule)
            .ok()
            .and_then(|index| rules.get(index)?.as_ref())
            .ok_or(Errno::INVAL)?;
        Ok(hits(armed))
    })
}

/// Disarms rule `rule` and returns how many faults it delivered; -1 with `EINVAL` for a
/// number that names no armed rule.
#[no_mangle]
pub extern "C" fn iocp_test_disarm(rule: c_int) -> c_int {
    run(-1, || {
        let mut rules = RULES.lock().unwrap_or_else(PoisonError::into_inner);
        let armed = usize::try_from(rule)
            .ok()
            .and_then(|index| rules.get_mut(index)?.take())
            .ok_or(Errno::INVAL)?;
        Ok(hits(&armed))
    })
}

/// A rule's count as C's `int` (a count past it reads as the largest).
fn hits(armed: &Armed) -> c_int {
    c_int::try_from(armed.hits()).unwrap_or(c_int::MAX)
}

/// The seam's call named `name`, spelt as the variant.
fn call_named(name: &CStr) -> Option<Call> {
    Some(match name.to_bytes() {
        b"Fcntl" => Call::Fcntl,
        b"Fstat" => Call::Fstat,
        b"Kcmp" => Call::Kcmp,
        b"Recv" => Call::Recv,
        b"Send" => Call::Send,
        b"RecvFrom" => Call::RecvFrom,
        b"SendTo" => Call::SendTo,
        b"Accept" => Call::Accept,
        b"Connect" => Call::Connect,
        b"GetSockOpt" => Call::GetSockOpt,
        b"GetPeerName" => Call::GetPeerName,
        b"Pread" => Call::Pread,
        b"Pwrite" => Call::Pwrite,
        b"Read" => Call::Read,
        b"Write" => Call::Write,
        b"Fsync" => Call::Fsync,
        b"Fdatasync" => Call::Fdatasync,
        b"HandleFd" => Call::HandleFd,
        b"FutexWait" => Call::FutexWait,
        b"ReactorPoll" => Call::ReactorPoll,
        b"ReactorRegister" => Call::ReactorRegister,
        b"Alloc" => Call::Alloc,
        _ => return None,
    })
}
