//! The few system calls the harness makes itself: the raw futex of the `wake` peer, the
//! CPU clocks of the idle-waiter measurement and of `echo`'s CPU use, `uname` for the
//! machine record, `dlopen` for the C library the C ABI rows load, the descriptor limit,
//! resident memory and heap trim of the echo scale row, and the filesystem checks,
//! `O_DIRECT` and page-cache advice of the `file` scenario.

use std::ffi::{c_void, CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time every thread of the process has used (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both CPU clocks exist on every Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
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

/// `RLIMIT_NOFILE`: the soft and the hard limit on open descriptors.
pub fn open_files_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Sets the soft `RLIMIT_NOFILE` to `soft` (at most the hard limit, which is kept).
pub fn set_open_files_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = open_files_limit()?;
    let limit = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The process's resident memory, in bytes: the `Rss:` of `/proc/self/smaps_rollup`, which
/// the kernel counts page by page when it is read (the `statm` and `status` counters are
/// per-CPU caches that may lag by some hundreds of KiB).
pub fn resident_bytes() -> io::Result<u64> {
    parse_rss(&fs::read_to_string("/proc/self/smaps_rollup")?)
        .ok_or_else(|| io::Error::other("/proc/self/smaps_rollup has no Rss line"))
}

/// The `Rss:` line of an smaps file, in bytes.
fn parse_rss(smaps: &str) -> Option<u64> {
    let kib = smaps
        .lines()
        .find_map(|line| line.strip_prefix("Rss:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// Gives the heap's free pages back to the kernel (glibc's `malloc_trim`), so that memory
/// allocated next is counted as it is touched rather than hidden in pages freed earlier.
/// Elsewhere than on glibc, nothing.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
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
    // SAFETY: dlerror's text is non-NULL here, NUL-terminated, and valid until this
    // thread's next dl call, which comes after the copy.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// statfs's `f_type` of tmpfs (`TMPFS_MAGIC` in `<linux/magic.h>`).
pub const TMPFS_MAGIC: u64 = 0x0102_1994;
/// statfs's `f_type` of ramfs (`RAMFS_MAGIC`).
pub const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// The `f_type` statfs reports for the filesystem holding `path` (its magic number).
pub fn filesystem_magic(path: &Path) -> io::Result<u64> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `statfs` is plain old data; all-zero bytes are a valid value.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `stats` a valid, writable statfs.
    if unsafe { libc::statfs(name.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // `f_type` is signed on some targets; the magic numbers are 32-bit patterns.
    Ok(stats.f_type as u64 & 0xffff_ffff)
}

/// The type and the source of the filesystem mounted where `path` lives (`("ext4",
/// "/dev/vda")`): the `/proc/self/mountinfo` line of `path`'s device.
pub fn mount_of(path: &Path) -> Option<(String, String)> {
    let dev = fs::metadata(path).ok()?.dev();
    let device = format!("{}:{}", libc::major(dev), libc::minor(dev));
    parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").ok()?, &device)
}

/// The type and source of the first mount of `device` (`major:minor`) in a mountinfo text.
fn parse_mountinfo(info: &str, device: &str) -> Option<(String, String)> {
    info.lines().find_map(|line| {
        // `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`: the device is
        // the third field; the type and source follow the ` - ` separator.
        if line.split(' ').nth(2)? != device {
            return None;
        }
        let mut after = line.split_once(" - ")?.1.split(' ');
        Some((after.next()?.to_owned(), after.next()?.to_owned()))
    })
}

/// Opens `path` for reading with `O_DIRECT`: reads go to the device, not the page cache, and
/// need buffers, offsets and lengths aligned to the device's logical block.
pub fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Asks the kernel to drop `file`'s clean pages from the page cache
/// (`POSIX_FADV_DONTNEED` over the whole file).
pub fn drop_cached_pages(file: &File) -> io::Result<()> {
    // SAFETY: posix_fadvise only reads its arguments; the descriptor is open for the call.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Restricts the calling thread (and the threads and processes it starts later) to `cores`,
/// if given.
pub fn pin_set(cores: Option<&[core_affinity::CoreId]>) {
    let Some(cores) = cores else { return };
    // SAFETY: `cpu_set_t` is plain old data; all-zero bytes are the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for core in cores {
        // SAFETY: CPU_SET writes one bit of the set; core ids come from the OS and are
        // below CPU_SETSIZE.
        unsafe { libc::CPU_SET(core.id, &mut set) };
    }
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from a live set; pid 0
    // is the calling thread. A refusal just leaves the thread unpinned.
    unsafe {
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_smaps_rollup() {
        let smaps = "55d0c0000000-7ffc00000000 ---p 00000000 00:00 0  [rollup]\n\
                     Rss:                4228 kB\n\
                     Pss:                1000 kB\n";
        assert_eq!(parse_rss(smaps), Some(4228 * 1024));
        assert_eq!(parse_rss("Pss: 12 kB\n"), None);
        assert!(resident_bytes().unwrap() > 0);
    }

    #[test]
    fn mountinfo_names_the_device_s_filesystem() {
        let info = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                    1 0 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    30 1 0:26 / /tmp rw shared:5 - tmpfs tmpfs rw,size=1024k\n";
        assert_eq!(
            parse_mountinfo(info, "254:0"),
            Some(("ext4".into(), "/dev/vda".into()))
        );
        assert_eq!(
            parse_mountinfo(info, "0:26"),
            Some(("tmpfs".into(), "tmpfs".into()))
        );
        assert_eq!(parse_mountinfo(info, "8:1"), None);
        assert_ne!(filesystem_magic(Path::new("/")).unwrap(), 0);
    }
}
