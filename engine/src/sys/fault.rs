//! Fault injection: the seam through which tests make chosen system calls fail.
//!
//! Every system call the engine makes itself passes through [`take`] first: the retry
//! loop `cvt` asks it before each attempt, and the futex wait, `connect` and the handle
//! descriptor's creation ask it once. So do the reactor's calls into mio: each poll
//! (`epoll_wait`) and each registration (`epoll_ctl`), the poll under the reactor's
//! descriptor (`Reactor::fault_fd`) and the registration under the socket's. Outside the
//! crate's own tests and the test-only builds with the `fault-injection` feature (which
//! makes [`fail`] public, for the C library's fault tests), `take` is an inlined `None`, so
//! the seam costs nothing in a real build.
//!
//! In tests, [`fail`] arms a rule — "the next `times` calls of this kind fail with this
//! errno" — scoped to one descriptor, one file or one thread, so that the crate's other
//! tests, which run on other threads and descriptors of the same process, never meet it.
//! The [`Armed`] guard it returns counts the faults delivered and disarms the rule when
//! dropped.
//!
//! Not covered: other calls made inside other crates (mio's creation of the poll and its
//! waker, `epoll_ctl`'s removal of a socket, std's thread spawning and allocation).

/// The system calls the seam can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `fcntl` (descriptor flags).
    Fcntl,
    /// `fstat` (what a descriptor is).
    Fstat,
    /// `kcmp(KCMP_FILE)` (whether two descriptors share an open file; the C ABI's).
    #[cfg_attr(not(all(target_os = "linux", feature = "c-abi")), allow(dead_code))]
    Kcmp,
    /// `recv`.
    Recv,
    /// `send`.
    Send,
    /// `recvfrom`.
    RecvFrom,
    /// `sendto`.
    SendTo,
    /// `accept4`/`accept`.
    Accept,
    /// `connect`.
    Connect,
    /// `getsockopt(SO_ERROR)`.
    GetSockOpt,
    /// `getpeername`.
    GetPeerName,
    /// `pread`.
    Pread,
    /// `pwrite`.
    Pwrite,
    /// `read` (the C ABI's synchronous `ReadFile`).
    #[cfg_attr(not(feature = "c-abi"), allow(dead_code))]
    Read,
    /// `write` (the C ABI's synchronous `WriteFile`).
    #[cfg_attr(not(feature = "c-abi"), allow(dead_code))]
    Write,
    /// `fsync`.
    Fsync,
    /// `fdatasync` (plain `fsync` where there is none).
    #[cfg_attr(
        not(any(target_os = "linux", target_os = "android", target_os = "freebsd")),
        allow(dead_code)
    )]
    Fdatasync,
    /// Creating a handle's descriptor (`socket`).
    HandleFd,
    /// A futex wait: `EINTR` ends it as a signal would, `EAGAIN` makes it return
    /// spuriously, `ETIMEDOUT` makes it time out.
    FutexWait,
    /// The reactor's poll (`epoll_wait`, `kevent`): fails at once, collecting nothing.
    ReactorPoll,
    /// Registering a socket with the reactor (`epoll_ctl(EPOLL_CTL_ADD)`).
    ReactorRegister,
    /// An allocation off the fast path (`ENOMEM`): a ring lane's slots (the one allocation
    /// whose size the program chooses), and the state of a new socket, reactor, file pool,
    /// event or caller's descriptor (see [`allocation`]).
    Alloc,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use imp::armed;
#[cfg(any(test, feature = "fault-injection"))]
pub use imp::fail;
pub(crate) use imp::take;

/// The seam's allocation point: `ENOMEM` (or the errno a rule names) where a rule says this
/// allocation fails. The engine's allocations outside the ring's slots are small and of
/// fixed size, and Rust offers no fallible form of them: a real failure aborts, as Rust's
/// collections do, and the seam checks the error paths around them.
#[cfg(not(loom))]
pub(crate) fn allocation() -> std::io::Result<()> {
    match take(Call::Alloc, -1) {
        Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
        None => Ok(()),
    }
}
#[cfg(feature = "fault-injection")]
pub use imp::{Armed, Plan};

#[cfg(not(any(test, feature = "fault-injection")))]
mod imp {
    use super::Call;

    /// The errno the next `call` on `fd` must fail with: never, outside tests.
    #[inline(always)]
    pub(crate) fn take(_call: Call, _fd: std::os::fd::RawFd) -> Option<i32> {
        None
    }

    /// Whether a rule for `call` is armed: never, outside tests.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[inline(always)]
    pub(crate) fn armed(_call: Call) -> bool {
        false
    }
}

#[cfg(any(test, feature = "fault-injection"))]
mod imp {
    use super::Call;
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::thread::{self, ThreadId};

    struct Rule {
        id: usize,
        call: Call,
        fd: Option<RawFd>,
        file: Option<FileId>,
        thread: Option<ThreadId>,
        errno: i32,
        remaining: u32,
        hits: Arc<AtomicU32>,
    }

    /// Which file or socket a descriptor refers to: `st_dev` and `st_ino`, shared by every
    /// descriptor of it (a caller's and the engine's duplicate of it alike).
    type FileId = (u64, u64);

    static RULES: Mutex<Vec<Rule>> = Mutex::new(Vec::new());
    /// How many rules are armed: lets `take` skip the lock when none is.
    static ARMED: AtomicUsize = AtomicUsize::new(0);
    static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

    /// The errno the next `call` on `fd` (by this thread) must fail with, if a rule says
    /// so; consumes one of the rule's faults.
    pub(crate) fn take(call: Call, fd: RawFd) -> Option<i32> {
        // Relaxed: a test arms a rule before it starts the operation that should meet it,
        // and that start reaches the thread making the call through the engine's own
        // synchronisation (a queue, a lock, a spawn), so the arming store happens before
        // this load and coherence makes it visible.
        if ARMED.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let me = thread::current().id();
        // `fd`'s file, asked of the kernel only if a rule is scoped to a file.
        let mut file = None;
        let mut rules = RULES.lock().unwrap_or_else(PoisonError::into_inner);
        let rule = rules.iter_mut().find(|rule| {
            rule.call == call
                && rule.remaining > 0
                && rule.fd.map_or(true, |want| want == fd)
                && rule.thread.map_or(true, |want| want == me)
                && rule.file.map_or(true, |want| {
                    *file.get_or_insert_with(|| file_of(fd).ok()) == Some(want)
                })
        })?;
        rule.remaining -= 1;
        rule.hits.fetch_add(1, Ordering::Relaxed);
        Some(rule.errno)
    }

    /// Whether a rule for `call` with faults left is armed (whatever its descriptor or
    /// thread): a fast path that would bypass the call stands aside then.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn armed(call: Call) -> bool {
        // Relaxed: as in `take`.
        ARMED.load(Ordering::Relaxed) != 0
            && RULES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|rule| rule.call == call && rule.remaining > 0)
    }

    /// The file `fd` refers to. A plain `fstat`, not the engine's (which passes through the
    /// seam): `EBADF` for a descriptor that is not open.
    fn file_of(fd: RawFd) -> io::Result<FileId> {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` is writable and large enough for a `stat`.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // the widths vary by OS
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// A rule being built: `call` fails with `errno`.
    #[must_use = "a plan does nothing until armed"]
    pub struct Plan {
        call: Call,
        errno: i32,
        fd: Option<RawFd>,
        file: Option<FileId>,
        thread: Option<ThreadId>,
        times: u32,
    }

    /// Plans a fault: `call` fails with `errno`, once unless [`Plan::times`] says more.
    pub fn fail(call: Call, errno: i32) -> Plan {
        Plan {
            call,
            errno,
            fd: None,
            file: None,
            thread: None,
            times: 1,
        }
    }

    impl Plan {
        /// Only calls on descriptor `fd` fail.
        pub fn on_fd(self, fd: RawFd) -> Plan {
            Plan {
                fd: Some(fd),
                ..self
            }
        }

        /// Only calls on the file or socket `fd` refers to fail, whichever descriptor they
        /// use: `fd`, or the engine's duplicate of it. `EBADF` if `fd` is not open.
        #[cfg(feature = "fault-injection")]
        pub fn on_file(self, fd: RawFd) -> io::Result<Plan> {
            Ok(Plan {
                file: Some(file_of(fd)?),
                ..self
            })
        }

        /// Only calls made by the calling thread fail.
        pub fn on_this_thread(self) -> Plan {
            Plan {
                thread: Some(thread::current().id()),
                ..self
            }
        }

        /// The next `times` matching calls fail.
        pub fn times(self, times: u32) -> Plan {
            Plan { times, ..self }
        }

        /// Arms the rule until the returned guard is dropped.
        ///
        /// # Panics
        ///
        /// If the rule names no descriptor, file or thread: it would hit the crate's other
        /// tests, running in parallel.
        pub fn arm(self) -> Armed {
            assert!(
                self.fd.is_some() || self.file.is_some() || self.thread.is_some(),
                "a fault must be scoped to a descriptor, a file or a thread"
            );
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let hits = Arc::new(AtomicU32::new(0));
            let mut rules = RULES.lock().unwrap_or_else(PoisonError::into_inner);
            rules.push(Rule {
                id,
                call: self.call,
                fd: self.fd,
                file: self.file,
                thread: self.thread,
                errno: self.errno,
                remaining: self.times,
                hits: Arc::clone(&hits),
            });
            ARMED.fetch_add(1, Ordering::Relaxed);
            Armed { id, hits }
        }
    }

    /// An armed rule; dropping it disarms the rule.
    pub struct Armed {
        id: usize,
        hits: Arc<AtomicU32>,
    }

    impl Armed {
        /// How many faults the rule has delivered so far.
        pub fn hits(&self) -> u32 {
            // Relaxed: read after the operations that met the fault have reported back
            // (through the port or a join), which orders their increments before this.
            self.hits.load(Ordering::Relaxed)
        }
    }

    impl Drop for Armed {
        fn drop(&mut self) {
            let mut rules = RULES.lock().unwrap_or_else(PoisonError::into_inner);
            rules.retain(|rule| rule.id != self.id);
            ARMED.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
