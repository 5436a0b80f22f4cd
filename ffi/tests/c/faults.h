/* The test-only exports of libiocp built with `cargo build -p iocp-ffi --features
 * fault-injection` (ffi/src/fault.rs): they make the library's own system calls fail, through
 * the engine's fault seam (engine/src/sys/fault.rs). A real build has none of them, so they
 * are declared here and not in iocp.h. Used by faults.c. */
#ifndef IOCP_TEST_FAULTS_H
#define IOCP_TEST_FAULTS_H

/* The `fd` of iocp_test_fail that scopes a rule to the calling thread. */
#define IOCP_TEST_THIS_THREAD (-1)

/* Makes the next `times` calls of the system call `call` fail with `err`, until
 * iocp_test_disarm. `call` names a variant of the engine's `iocp::fault::Call`, as spelt
 * there: "Recv", "Send", "Pread", "Pwrite", "Fcntl" (F_DUPFD_CLOEXEC when the library
 * duplicates a descriptor of the program's), "Fstat", "Kcmp", "HandleFd" (a handle's
 * descriptor), "FutexWait" (EINTR: a signal; EAGAIN: a spurious wake; ETIMEDOUT),
 * "ReactorPoll" (epoll_wait), "ReactorRegister" (epoll_ctl), "Alloc" (a ring's slots),
 * "RecvFrom", "SendTo", "Accept", "Connect", "GetSockOpt", "GetPeerName", "Read", "Write",
 * "Fsync", "Fdatasync". `fd` scopes the rule: a descriptor (calls on its file or socket,
 * through whichever descriptor: the library's duplicate of it too) or IOCP_TEST_THIS_THREAD
 * (calls the calling thread makes). An EINTR the library retries consumes one of `times` per
 * attempt.
 *
 * Returns the rule's number (0 or more), or -1 with errno: EINVAL for a NULL or unknown
 * `call`, `err` not positive, `times` 0 or `fd` below -1; EBADF for an `fd` not open. */
int iocp_test_fail(const char *call, int err, int fd, unsigned times);

/* How many faults rule `rule` has delivered so far; -1 with EINVAL for a number that names no
 * armed rule. */
int iocp_test_hits(int rule);

/* Disarms rule `rule` and returns how many faults it delivered; -1 with EINVAL for a number
 * that names no armed rule (a rule is disarmed once). */
int iocp_test_disarm(int rule);

#endif
