//! `libiocp.so` as a C program uses it, for the rows that measure the C ABI.
//!
//! The harness builds the C library with cargo from this checkout (`cargo build -p iocp-ffi
//! --lib`, in the harness's own profile and target directory: a no-op when it is up to
//! date), loads the `libiocp.so` it produced with `dlopen`, and calls the exported
//! functions through the addresses `dlsym` gives: the same indirect call a C program makes
//! through its PLT. So a C row pays everything a C caller pays — the handle → port lookup,
//! the argument checks, the panic boundary, `errno`, and the shared library's own code
//! (position-independent; its thread-locals, but for the port cache's initial-exec slot,
//! reached through `__tls_get_addr`) — while the loop around the calls is the same Rust
//! code as the Rust row it is compared with. Nothing of the library is inlined into the
//! harness: it is a separate object, found at run time.
//!
//! Building needs cargo ([`crate::cargo`]). Where the build or the load fails, the C rows
//! are skipped with the reason.

use crate::cargo;
use crate::sys::SharedLibrary;
use serde_json::Value;
use std::ffi::{c_int, c_uint, c_void, CStr};
use std::io;
use std::path::PathBuf;
use std::ptr;
use std::sync::OnceLock;

/// `DWORD`: `unsigned int`, as on AIX.
pub type Dword = c_uint;
/// `HANDLE`: a descriptor number.
type Handle = c_int;
/// `BOOL`.
type Bool = c_int;

/// `INVALID_HANDLE_VALUE`: `CreateIoCompletionPort`'s "no file", for a new port.
const INVALID_HANDLE_VALUE: Handle = -1;

/// `struct gmcs`, in the documented field order (DESIGN.md, `iocp.h`). The `OVERLAPPED`
/// pointer is held as an address (same size and alignment): the harness only posts values.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Gmcs {
    /// Bytes transferred.
    pub transfer_count: Dword,
    /// The record's key.
    pub completion_key: Dword,
    /// 0, or the request's errno.
    pub errorno: Dword,
    /// The record's `OVERLAPPED` pointer (here, whatever was posted).
    pub overlapped: usize,
}

impl Gmcs {
    /// The entry a C program would post for `record` with `iocp_post_many`.
    pub fn from_record(record: &iocp::Completion) -> Gmcs {
        Gmcs {
            transfer_count: record.bytes(),
            completion_key: record.key() as Dword,
            errorno: record.error(),
            overlapped: record.overlapped(),
        }
    }
}

/// Windows' `OVERLAPPED_ENTRY` (`GetQueuedCompletionStatusEx`), as `iocp.h` declares it,
/// the pointer again held as an address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OverlappedEntry {
    /// The record's key.
    pub completion_key: usize,
    /// The record's `OVERLAPPED` pointer.
    pub overlapped: usize,
    /// 0, or the request's errno.
    pub internal: usize,
    /// Bytes transferred.
    pub bytes: Dword,
}

type CreateIoCompletionPort = unsafe extern "C" fn(Handle, Handle, Dword, Dword) -> Handle;
type CloseHandle = unsafe extern "C" fn(Handle) -> Bool;
type PostQueuedCompletionStatus = unsafe extern "C" fn(Handle, Dword, Dword, *mut c_void) -> Bool;
type PostMany = unsafe extern "C" fn(Handle, *const Gmcs, Dword) -> Bool;
type GetQueuedCompletionStatus =
    unsafe extern "C" fn(Handle, *mut Dword, *mut Dword, *mut *mut c_void, Dword) -> Bool;
type GetMultipleCompletionStatus =
    unsafe extern "C" fn(Handle, Dword, Dword, Dword, *mut Gmcs) -> c_int;
type GetQueuedCompletionStatusEx =
    unsafe extern "C" fn(Handle, *mut OverlappedEntry, Dword, *mut Dword, Dword, Bool) -> Bool;

/// The loaded library's port functions.
pub struct Library {
    create: CreateIoCompletionPort,
    close: CloseHandle,
    post: PostQueuedCompletionStatus,
    post_many: PostMany,
    get: GetQueuedCompletionStatus,
    get_multiple: GetMultipleCompletionStatus,
    /// Absent from libraries older than the call.
    get_ex: Option<GetQueuedCompletionStatusEx>,
    /// Keeps the code the pointers above point into loaded (never unloaded).
    _library: SharedLibrary,
}

/// The C library, built and loaded on first use; the reason it is not available otherwise.
pub fn library() -> Result<&'static Library, String> {
    static LIBRARY: OnceLock<Result<Library, String>> = OnceLock::new();
    LIBRARY.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Builds `libiocp.so` and binds its functions.
fn load() -> Result<Library, String> {
    let path = build()?;
    let library =
        SharedLibrary::open(&path).map_err(|e| format!("loading {}: {e}", path.display()))?;
    let symbol = |name: &CStr| library.symbol(name);
    let required = |name: &CStr| {
        symbol(name).ok_or_else(|| format!("{} does not export {name:?}", path.display()))
    };
    // SAFETY: for each transmute below, the symbol is the `extern "C"` function of that name
    // in ffi/src, whose signature the type spells out in C terms (`iocp.h`); a function
    // pointer and a data pointer have the same size on every platform Rust supports here.
    let bound = unsafe {
        Library {
            create: std::mem::transmute::<*mut c_void, CreateIoCompletionPort>(required(
                c"CreateIoCompletionPort",
            )?),
            close: std::mem::transmute::<*mut c_void, CloseHandle>(required(c"CloseHandle")?),
            post: std::mem::transmute::<*mut c_void, PostQueuedCompletionStatus>(required(
                c"PostQueuedCompletionStatus",
            )?),
            post_many: std::mem::transmute::<*mut c_void, PostMany>(required(c"iocp_post_many")?),
            get: std::mem::transmute::<*mut c_void, GetQueuedCompletionStatus>(required(
                c"GetQueuedCompletionStatus",
            )?),
            get_multiple: std::mem::transmute::<*mut c_void, GetMultipleCompletionStatus>(
                required(c"GetMultipleCompletionStatus")?,
            ),
            get_ex: symbol(c"GetQueuedCompletionStatusEx").map(|address| {
                std::mem::transmute::<*mut c_void, GetQueuedCompletionStatusEx>(address)
            }),
            _library: library,
        }
    };
    Ok(bound)
}

/// `cargo build -p iocp-ffi --lib` in the harness's profile; the `libiocp.so` it reports.
fn build() -> Result<PathBuf, String> {
    let artifacts = cargo::build("libiocp.so", &["-p", "iocp-ffi", "--lib"], |message| {
        let ours = message["package_id"]
            .as_str()
            .is_some_and(|id| id.contains("iocp-ffi"));
        match &message["filenames"] {
            Value::Array(files) if ours => files
                .iter()
                .filter_map(|file| file.as_str().map(PathBuf::from))
                .collect(),
            _ => Vec::new(),
        }
    })?;
    artifacts
        .into_iter()
        .find(|file| file.extension().is_some_and(|ext| ext == "so"))
        .ok_or_else(|| "building libiocp.so: cargo reported no libiocp.so".into())
}

impl Library {
    /// Whether the library has `GetQueuedCompletionStatusEx`; the reason when not.
    pub fn has_get_ex(&self) -> Result<(), String> {
        match self.get_ex {
            Some(_) => Ok(()),
            None => Err("this libiocp.so has no GetQueuedCompletionStatusEx".into()),
        }
    }
}

/// A port made through the C ABI (`CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 0)`:
/// the default concurrency value), closed with `CloseHandle` when dropped.
pub struct CPort {
    library: &'static Library,
    handle: Handle,
}

impl CPort {
    /// A new port, as a C program makes one.
    pub fn new(library: &'static Library) -> Result<CPort, String> {
        // SAFETY: creating a port reads no pointer.
        let handle = unsafe { (library.create)(INVALID_HANDLE_VALUE, 0, 0, 0) };
        if handle == 0 {
            return Err(format!(
                "CreateIoCompletionPort: {}",
                io::Error::last_os_error()
            ));
        }
        Ok(CPort { library, handle })
    }

    /// `PostQueuedCompletionStatus`; `false` when it fails.
    #[inline]
    pub fn post(&self, bytes: Dword, key: Dword, overlapped: usize) -> bool {
        // SAFETY: the call dereferences nothing: `overlapped` is queued as a value.
        unsafe { (self.library.post)(self.handle, bytes, key, overlapped as *mut c_void) != 0 }
    }

    /// `iocp_post_many`: queues `records` in order; `false` when it fails.
    #[inline]
    pub fn post_many(&self, records: &[Gmcs]) -> bool {
        // SAFETY: `records` is valid for reads of `records.len()` entries of `struct gmcs`,
        // and the call dereferences none of their `overlapped` values.
        unsafe {
            (self.library.post_many)(self.handle, records.as_ptr(), records.len() as Dword) != 0
        }
    }

    /// `GetMultipleCompletionStatus(port, nmin, out.len(), timeout_ms, out)`: the number
    /// of entries written (fewer than `nmin` on a timeout, which is not an error).
    #[inline]
    pub fn get_multiple(
        &self,
        nmin: Dword,
        out: &mut [Gmcs],
        timeout_ms: Dword,
    ) -> io::Result<usize> {
        // SAFETY: `out` is valid for writes of `out.len()` entries of `struct gmcs`.
        let n = unsafe {
            (self.library.get_multiple)(
                self.handle,
                nmin,
                out.len() as Dword,
                timeout_ms,
                out.as_mut_ptr(),
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// `GetQueuedCompletionStatus`: one record's key and `OVERLAPPED` value.
    #[inline]
    pub fn get(&self, timeout_ms: Dword) -> io::Result<(Dword, usize)> {
        let (mut bytes, mut key, mut overlapped) = (0, 0, ptr::null_mut());
        // SAFETY: the three out-pointers are valid for writes for the whole call.
        let ok = unsafe {
            (self.library.get)(
                self.handle,
                &mut bytes,
                &mut key,
                &mut overlapped,
                timeout_ms,
            )
        };
        match ok {
            0 => Err(io::Error::last_os_error()),
            _ => Ok((key, overlapped as usize)),
        }
    }

    /// `GetQueuedCompletionStatusEx(port, out, out.len(), &removed, timeout_ms, FALSE)`:
    /// the number of entries written. `ENOSYS` when the library lacks the call.
    #[inline]
    pub fn get_ex(&self, out: &mut [OverlappedEntry], timeout_ms: Dword) -> io::Result<usize> {
        let Some(get_ex) = self.library.get_ex else {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        };
        let mut removed = 0;
        // SAFETY: `out` is valid for writes of `out.len()` entries, `removed` for one.
        let ok = unsafe {
            get_ex(
                self.handle,
                out.as_mut_ptr(),
                out.len() as Dword,
                &mut removed,
                timeout_ms,
                0,
            )
        };
        match ok {
            0 => Err(io::Error::last_os_error()),
            _ => Ok(removed as usize),
        }
    }
}

impl Drop for CPort {
    fn drop(&mut self) {
        // SAFETY: `handle` is a port this value made and nothing else closes.
        unsafe { (self.library.close)(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_posted_through_the_c_abi_comes_back() {
        let port = CPort::new(library().expect("libiocp.so builds and loads")).unwrap();
        assert!(port.post(3, 2, 1));
        assert_eq!(port.get(100).unwrap(), (2, 1));
        assert!(port.post(5, 4, 6));
        let mut out = [Gmcs::default(); 4];
        assert_eq!(port.get_multiple(1, &mut out, 100).unwrap(), 1);
        assert_eq!(
            (
                out[0].transfer_count,
                out[0].completion_key,
                out[0].overlapped
            ),
            (5, 4, 6)
        );
        let batch = [7, 8, 9].map(|i| Gmcs::from_record(&iocp::Completion::new(i, i as Dword, 1)));
        assert!(port.post_many(&batch));
        assert_eq!(port.get_multiple(3, &mut out, 100).unwrap(), 3);
        let keys: Vec<Dword> = out[..3].iter().map(|entry| entry.completion_key).collect();
        assert_eq!(keys, [7, 8, 9]);
    }
}
