/* An AIX program closes its port with plain close(port) instead of CloseHandle. What
 * happens (ffi/README.md, "close(port)"): calls that bind to the port or are about to
 * sleep on it — CreateIoCompletionPort(fd, port, ...), a dequeue that finds too little
 * ready and is about to sleep, CloseHandle — notice it; the port is then closed (its
 * waiters wake with EBADF, its records are discarded), its number is forgotten and never
 * closed by the library again, and the call fails with EBADF. Until then, calls that do not check (posting, a dequeue that finds a record,
 * a poll) still reach the orphaned port. The same holds for events and provider handles. */
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

static int devnull;

/* Makes `fd` one of the program's own descriptors again (what its next open() may do). */
static void reuse_number(int fd)
{
    CHECK(dup2(devnull, fd) == fd);
}

static int is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static void closed_and_free(void)
{
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    struct gmcs results[4];
    HANDLE port = new_port();
    CHECK(PostQueuedCompletionStatus(port, 1, 1, NULL));
    CHECK(close(port) == 0);

    /* Not noticed yet: posting and taking a ready record still work. */
    CHECK(PostQueuedCompletionStatus(port, 2, 1, NULL));
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 1000) && bytes == 1);
    CHECK(GetMultipleCompletionStatus(port, 1, 4, 1000, results) == 1);
    /* A wait notices; from then on every call fails. */
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 1000), EBADF);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), EBADF);
    FAILS_WITH(GetMultipleCompletionStatus(port, 0, 4, 0, results) == -1, EBADF);
    FAILS_WITH(!PostQueuedCompletionStatus(port, 3, 1, NULL), EBADF);
    FAILS_WITH(!CloseHandle(port), EBADF);
    CHECK(!is_open(port));
}

static void closed_and_reused_by_the_program(void)
{
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    struct gmcs results[4];

    /* Noticed by a wait. */
    HANDLE port = new_port();
    CHECK(close(port) == 0);
    reuse_number(port);
    FAILS_WITH(GetMultipleCompletionStatus(port, 1, 4, 1000, results) == -1, EBADF);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 1000), EBADF);
    /* The number is the program's now: an open descriptor that is not a port. */
    FAILS_WITH(!PostQueuedCompletionStatus(port, 1, 1, NULL), EINVAL);
    FAILS_WITH(!CloseHandle(port), EBADF);
    CHECK(is_open(port));
    close(port);

    /* Noticed by CloseHandle. */
    port = new_port();
    CHECK(close(port) == 0);
    reuse_number(port);
    FAILS_WITH(!CloseHandle(port), EBADF);
    CHECK(is_open(port));
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), EBADF);
    close(port);

    /* Noticed by an association. */
    port = new_port();
    int sv[2];
    CHECK(pipe(sv) == 0);
    char path[] = "/tmp/iocp-close-XXXXXX";
    int file = mkstemp(path);
    CHECK(file >= 0);
    unlink(path);
    CHECK(close(port) == 0);
    reuse_number(port);
    FAILS_WITH(CreateIoCompletionPort(file, port, 1, 0) == 0, EBADF);
    CHECK(is_open(port));
    close(port);
    close(file);
    close(sv[0]);
    close(sv[1]);
}

/* Every call on the number after a plain close(port) that the program's next file got:
 * none succeeds, and none reads, writes, moves or closes the file. */
static void every_call_leaves_the_programs_new_file_alone(void)
{
    char path[] = "/tmp/iocp-close-file-XXXXXX";
    HANDLE port = new_port();
    CHECK(PostQueuedCompletionStatus(port, 1, 1, NULL));
    CHECK(close(port) == 0);
    int file = mkstemp(path);
    CHECK(file == port);
    unlink(path);
    CHECK(write(file, "contents", 8) == 8);
    CHECK(lseek(file, 3, SEEK_SET) == 3);

    DWORD bytes, key, removed;
    LPOVERLAPPED ovl;
    struct gmcs results[4];
    OVERLAPPED_ENTRY entries[4];
    /* A wait notices before it sleeps (the record left in the port is discarded with it). */
    FAILS_WITH(GetMultipleCompletionStatus(port, 2, 4, 1000, results) == -1, EBADF);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 1000), EBADF);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), EBADF);
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 4, &removed, 1000, FALSE), EBADF);
    FAILS_WITH(GetMultipleCompletionStatus(port, 0, 4, 0, results) == -1, EBADF);
    /* The number is an open descriptor that is not a port. */
    FAILS_WITH(!PostQueuedCompletionStatus(port, 2, 2, NULL), EINVAL);
    FAILS_WITH(CreateIoCompletionPort(STDERR_FILENO, port, 1, 0) == 0, EBADF);
    FAILS_WITH(!iocp_event_set(port), EBADF);
    FAILS_WITH(!CloseHandle(port), EBADF);

    /* The file is as the program left it: open, its offset and contents untouched. */
    CHECK(is_open(file));
    CHECK(lseek(file, 0, SEEK_CUR) == 3);
    char buf[16] = { 0 };
    CHECK(pread(file, buf, sizeof buf, 0) == 8 && memcmp(buf, "contents", 8) == 0);
    close(file);
}

/* The library's next handle of another kind gets the number of a port closed with plain
 * close(): the stale port is retired, and the number names the new object only. */
static void closed_and_reused_by_another_kind(void)
{
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    HANDLE old = new_port();
    CHECK(close(old) == 0);
    HANDLE event = iocp_event_create(TRUE, FALSE);
    CHECK(event == old);
    FAILS_WITH(!PostQueuedCompletionStatus(event, 1, 1, NULL), EINVAL);
    FAILS_WITH(!GetQueuedCompletionStatus(event, &bytes, &key, &ovl, 0), EBADF);
    CHECK(iocp_event_set(event));
    CHECK(iocp_event_wait(event, 0));
    CHECK(CloseHandle(event));
    CHECK(!is_open(event));
}

static void closed_and_reused_by_the_library(void)
{
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    HANDLE old = new_port();
    CHECK(close(old) == 0);
    /* The lowest free number: the library's next handle gets it. */
    HANDLE port = new_port();
    CHECK(port == old);
    /* The stale port was retired without closing the number, which names the new port:
     * its checks pass, and it works. */
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 20), ETIMEDOUT);
    CHECK(PostQueuedCompletionStatus(port, 9, 9, NULL));
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 1000) && bytes == 9);
    CHECK(CloseHandle(port));
    CHECK(!is_open(port));
    FAILS_WITH(!CloseHandle(port), EBADF);
}

struct sleeper {
    HANDLE port;
    pthread_t thread;
    BOOL ok;
    int err;
};

static void *sleep_on_port(void *arg)
{
    struct sleeper *s = arg;
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    s->ok = GetQueuedCompletionStatus(s->port, &bytes, &key, &ovl, INFINITE);
    s->err = errno;
    return NULL;
}

static void closed_under_a_sleeping_waiter(void)
{
    /* close(2) itself wakes nobody, and a waiter already asleep checks nothing more until
     * it wakes; the next call that notices closes the port, and that wakes every waiter
     * with EBADF. */
    struct sleeper s = { new_port(), 0, TRUE, 0 };
    CHECK(pthread_create(&s.thread, NULL, sleep_on_port, &s) == 0);
    sleep_ms(100);
    CHECK(close(s.port) == 0);
    reuse_number(s.port);
    /* A GMCS does not get as far as a wait: the sleeping GQCS makes it fail with EBUSY. */
    struct gmcs results[1];
    FAILS_WITH(GetMultipleCompletionStatus(s.port, 1, 1, 10, results) == -1, EBUSY);
    /* A second GQCS looks at the handle before it sleeps: it notices. */
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    FAILS_WITH(!GetQueuedCompletionStatus(s.port, &bytes, &key, &ovl, 1000), EBADF);
    CHECK(pthread_join(s.thread, NULL) == 0);
    CHECK(!s.ok && s.err == EBADF);
    CHECK(is_open(s.port));
    close(s.port);
}

static void events_and_providers(void)
{
    HANDLE event = iocp_event_create(TRUE, TRUE);
    CHECK(event > 0);
    CHECK(close(event) == 0);
    reuse_number(event);
    FAILS_WITH(!iocp_event_wait(event, 0), EBADF);
    FAILS_WITH(!CloseHandle(event), EBADF);
    FAILS_WITH(!iocp_event_set(event), EBADF);
    FAILS_WITH(!iocp_event_wait(event, 0), EBADF);
    CHECK(is_open(event));
    close(event);

    int err = 0;
    SOCKET s = WPUCreateSocketHandle(1, 0, &err);
    CHECK(s != INVALID_SOCKET);
    CHECK(close(s) == 0);
    reuse_number(s);
    FAILS_WITH(WPUCloseSocketHandle(s, &err) == SOCKET_ERROR, EBADF);
    CHECK(err == WSAEINVAL && is_open(s));
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    FAILS_WITH(WPUCompleteOverlappedRequest(s, &o, 0, 1, &err) == SOCKET_ERROR, EBADF);
    close(s);

    /* A stale event whose number the library hands out again. */
    event = iocp_event_create(FALSE, FALSE);
    CHECK(close(event) == 0);
    HANDLE again = iocp_event_create(FALSE, TRUE);
    CHECK(again == event);
    CHECK(iocp_event_wait(again, 0));
    CHECK(CloseHandle(again));
    CHECK(!is_open(again));
}

int main(void)
{
    devnull = open("/dev/null", O_RDONLY);
    CHECK(devnull >= 0);
    closed_and_free();
    closed_and_reused_by_the_program();
    every_call_leaves_the_programs_new_file_alone();
    closed_and_reused_by_the_library();
    closed_and_reused_by_another_kind();
    closed_under_a_sleeping_waiter();
    events_and_providers();
    puts("close_port: ok");
    return 0;
}
