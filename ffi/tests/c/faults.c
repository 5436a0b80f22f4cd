/* Faults injected through the library (the test-only build, faults.h): each failing system
 * call gives the documented errno through the public API, every request completes exactly
 * once — one record, or one immediate failure and no record — and everything works again
 * once the rule is disarmed. Exactly once is checked three ways: the record is the request's,
 * no further record comes within QUIET_MS, and the rule delivered exactly the faults
 * expected (iocp_test_disarm's count). */
#include "check.h"
#include "faults.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long a port must stay empty for "no other record" (a late duplicate would come from
 * the reactor or a file thread within milliseconds). */
#define QUIET_MS 30

static HANDLE port;
/* Faults delivered, for the summary. */
static int delivered;

/* Arms a rule, checking that it was accepted. */
static int arm(const char *call, int err, int fd, unsigned times)
{
    int rule = iocp_test_fail(call, err, fd, times);
    CHECK(rule >= 0);
    return rule;
}

/* Disarms `rule`, which must have delivered exactly `hits` faults. */
static void disarm(int rule, int hits)
{
    int got = iocp_test_disarm(rule);
    if (got != hits) {
        fprintf(stderr, "faults: rule %d delivered %d faults, expected %d\n", rule, got, hits);
        exit(1);
    }
    delivered += got;
}

/* The descriptors the process has open (the directory's own included, every time alike). */
static int open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    CHECK(dir != NULL);
    int n = 0;
    while (readdir(dir) != NULL) {
        n++;
    }
    closedir(dir);
    return n;
}

static void expect_no_record(HANDLE on)
{
    DWORD bytes, key;
    LPOVERLAPPED ovl = (LPOVERLAPPED)1;
    FAILS_WITH(!GetQueuedCompletionStatus(on, &bytes, &key, &ovl, QUIET_MS), ETIMEDOUT);
    CHECK(ovl == NULL);
}

/* The next record, which must be `o`'s under `key`: `err` 0 for a success of `bytes` bytes,
 * else a failure with that errno. */
static void expect_record(const OVERLAPPED *o, DWORD key, int err, DWORD bytes)
{
    DWORD got_bytes = 99, got_key = 99;
    LPOVERLAPPED ovl = NULL;
    errno = 0;
    BOOL ok = GetQueuedCompletionStatus(port, &got_bytes, &got_key, &ovl, 5000);
    if (err == 0) {
        CHECK(ok);
    } else {
        CHECK(!ok && errno == err);
    }
    CHECK(ovl == o && got_key == key && got_bytes == bytes);
}

/* The block's own report of a finished request, as GetOverlappedResult gives it. */
static void expect_result(int fd, OVERLAPPED *o, int err, DWORD bytes)
{
    DWORD got = 99;
    CHECK(HasOverlappedIoCompleted(o));
    if (err == 0) {
        CHECK(GetOverlappedResult(fd, o, &got, FALSE));
    } else {
        FAILS_WITH(!GetOverlappedResult(fd, o, &got, FALSE), err);
    }
    CHECK(o->Internal == (DWORD)err && got == bytes);
}

static void socket_pair(int sv[2])
{
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
}

static void send_all(int fd, const char *what)
{
    size_t n = strlen(what);
    CHECK(send(fd, what, n, MSG_NOSIGNAL) == (ssize_t)n);
}

/* A socket read whose recv fails at once: FALSE with the errno, the block completed with it,
 * no record; the bytes it did not take go to the next read. */
static void recv_fails_at_once(void)
{
    int sv[2];
    socket_pair(sv);
    CHECK(CreateIoCompletionPort(sv[0], port, 1, 0) == port);
    send_all(sv[1], "data");
    char buf[16];
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    DWORD done = 99;
    int rule = arm("Recv", ENOMEM, sv[0], 1);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, &done, &o), ENOMEM);
    expect_result(sv[0], &o, ENOMEM, 0);
    expect_no_record(port);
    disarm(rule, 1);

    memset(&o, 0, sizeof o);
    CHECK(ReadFile(sv[0], buf, sizeof buf, &done, &o));
    CHECK(done == 4 && memcmp(buf, "data", 4) == 0);
    expect_no_record(port);
    close(sv[0]);
    close(sv[1]);
}

/* A socket read that waits, then fails when readiness runs it: one record with the errno
 * (GetQueuedCompletionStatus FALSE, `*ovl` set), the block says the same; the bytes are left
 * for the next read. */
static void recv_fails_later(void)
{
    int sv[2];
    socket_pair(sv);
    CHECK(CreateIoCompletionPort(sv[0], port, 2, 0) == port);
    char buf[16];
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, NULL, &o), EINPROGRESS);
    int rule = arm("Recv", ECONNRESET, sv[0], 1);
    send_all(sv[1], "late");
    expect_record(&o, 2, ECONNRESET, 0);
    expect_result(sv[0], &o, ECONNRESET, 0);
    expect_no_record(port);
    disarm(rule, 1);

    DWORD done = 0;
    memset(&o, 0, sizeof o);
    CHECK(ReadFile(sv[0], buf, sizeof buf, &done, &o));
    CHECK(done == 4 && memcmp(buf, "late", 4) == 0);
    expect_no_record(port);
    close(sv[0]);
    close(sv[1]);
}

/* EINTR is retried (each attempt consumes one fault), by reads and writes alike: the request
 * completes at once, as without it. */
static void eintr_is_retried(void)
{
    int sv[2];
    socket_pair(sv);
    CHECK(CreateIoCompletionPort(sv[0], port, 3, 0) == port);
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    DWORD done = 0;
    int rule = arm("Send", EINTR, sv[0], 3);
    CHECK(WriteFile(sv[0], "hello", 5, &done, &o));
    CHECK(done == 5);
    disarm(rule, 3);
    char buf[16];
    CHECK(recv(sv[1], buf, sizeof buf, 0) == 5 && memcmp(buf, "hello", 5) == 0);

    send_all(sv[1], "world");
    memset(&o, 0, sizeof o);
    rule = arm("Recv", EINTR, sv[0], 3);
    CHECK(ReadFile(sv[0], buf, sizeof buf, &done, &o));
    CHECK(done == 5 && memcmp(buf, "world", 5) == 0);
    disarm(rule, 3);
    expect_no_record(port);
    close(sv[0]);
    close(sv[1]);
}

/* A socket write: failing at once (ENOMEM) sends nothing and queues no record; deferred
 * (EAGAIN: the socket is not ready) and then failing when readiness runs it (ECONNRESET),
 * it completes once, with that errno. */
static void send_fails(void)
{
    int sv[2];
    socket_pair(sv);
    CHECK(CreateIoCompletionPort(sv[0], port, 4, 0) == port);
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    DWORD done = 99;
    int rule = arm("Send", ENOMEM, sv[0], 1);
    FAILS_WITH(!WriteFile(sv[0], "lost", 4, &done, &o), ENOMEM);
    expect_result(sv[0], &o, ENOMEM, 0);
    disarm(rule, 1);
    char buf[16];
    FAILS_WITH(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) < 0, EAGAIN);

    /* The first rule that matches with faults left answers: EAGAIN first, then ECONNRESET. */
    int again = arm("Send", EAGAIN, sv[0], 1);
    int reset = arm("Send", ECONNRESET, sv[0], 1);
    memset(&o, 0, sizeof o);
    FAILS_WITH(!WriteFile(sv[0], "later", 5, NULL, &o), EINPROGRESS);
    expect_record(&o, 4, ECONNRESET, 0);
    expect_result(sv[0], &o, ECONNRESET, 0);
    expect_no_record(port);
    disarm(again, 1);
    disarm(reset, 1);
    FAILS_WITH(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) < 0, EAGAIN);

    memset(&o, 0, sizeof o);
    CHECK(WriteFile(sv[0], "fine", 4, &done, &o));
    CHECK(done == 4);
    CHECK(recv(sv[1], buf, sizeof buf, 0) == 4 && memcmp(buf, "fine", 4) == 0);
    expect_no_record(port);
    close(sv[0]);
    close(sv[1]);
}

/* The records of a list, by aiocb: each exactly once, with its errno and count. */
static void expect_list_records(struct iocp_aiocb *const *list, const int *errs,
                                const DWORD *counts, int n)
{
    struct gmcs results[4];
    CHECK(n <= 4);
    CHECK(GetMultipleCompletionStatus(port, (DWORD)n, (DWORD)n, 5000, results) == n);
    int seen[4] = { 0 };
    for (int i = 0; i < n; i++) {
        int which = -1;
        for (int j = 0; j < n; j++) {
            if (results[i].overlapped == (void *)list[j]) {
                which = j;
            }
        }
        CHECK(which >= 0);
        seen[which]++;
        CHECK(results[i].errorno == (DWORD)errs[which] && results[i].transfer_count == counts[which]);
    }
    for (int j = 0; j < n; j++) {
        CHECK(seen[j] == 1);
    }
    expect_no_record(port);
}

/* File requests on the library's file threads: a pread or pwrite that fails fails its entry
 * alone — iocp_aio_error says why, its one record carries the same errno — and the other
 * entries complete; EINTR is retried; an overlapped ReadFile on the file completes once with
 * the errno. The rules name the program's descriptors and reach the library's duplicates. */
static void file_requests_fail(void)
{
    int a = scratch_file('a', 8), b = scratch_file('b', 8);
    char buf_a[8], buf_b[8];
    struct iocp_aiocb cb_a, cb_b;
    struct iocp_aiocb *list[2] = { &cb_a, &cb_b };

    /* IOCP_LIO_NOWAIT: the aiocbs and a record each. */
    aiocb_for(&cb_a, a, IOCP_LIO_READ, 0, buf_a, 8, port);
    aiocb_for(&cb_b, b, IOCP_LIO_READ, 0, buf_b, 8, port);
    int rule = arm("Pread", ENOMEM, b, 1);
    CHECK(iocp_lio_listio(IOCP_LIO_NOWAIT, list, 2, NULL) == 0);
    expect_list_records(list, (const int[]){ 0, ENOMEM }, (const DWORD[]){ 8, 0 }, 2);
    CHECK(iocp_aio_error(&cb_a) == 0 && iocp_aio_return(&cb_a) == 8);
    CHECK(memcmp(buf_a, "aaaaaaaa", 8) == 0);
    CHECK(iocp_aio_error(&cb_b) == ENOMEM && iocp_aio_return(&cb_b) == -1);
    disarm(rule, 1);

    /* IOCP_LIO_WAIT: the call returns when both are done, with EIO since one failed (as
     * POSIX has it); the failed entry's aiocb says why, its file is unchanged, and no
     * record is queued. */
    char big_a[] = "AAAAAAAA", big_b[] = "BBBBBBBB";
    aiocb_for(&cb_a, a, IOCP_LIO_WRITE, 0, big_a, 8, port);
    aiocb_for(&cb_b, b, IOCP_LIO_WRITE, 0, big_b, 8, port);
    rule = arm("Pwrite", ENOSPC, a, 1);
    FAILS_WITH(iocp_lio_listio(IOCP_LIO_WAIT, list, 2, NULL) == -1, EIO);
    CHECK(iocp_aio_error(&cb_a) == ENOSPC && iocp_aio_return(&cb_a) == -1);
    CHECK(iocp_aio_error(&cb_b) == 0 && iocp_aio_return(&cb_b) == 8);
    char check[8];
    CHECK(pread(a, check, 8, 0) == 8 && memcmp(check, "aaaaaaaa", 8) == 0);
    CHECK(pread(b, check, 8, 0) == 8 && memcmp(check, "BBBBBBBB", 8) == 0);
    expect_no_record(port);
    disarm(rule, 1);

    /* EINTR, retried on the file thread. */
    aiocb_for(&cb_a, a, IOCP_LIO_READ, 0, buf_a, 8, port);
    rule = arm("Pread", EINTR, a, 5);
    CHECK(iocp_lio_listio(IOCP_LIO_NOWAIT, list, 1, NULL) == 0);
    expect_list_records(list, (const int[]){ 0 }, (const DWORD[]){ 8 }, 1);
    disarm(rule, 5);

    /* An overlapped ReadFile on the file: pending, then one record with the errno. */
    CHECK(CreateIoCompletionPort(a, port, 5, 0) == port);
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    rule = arm("Pread", EIO, a, 1);
    FAILS_WITH(!ReadFile(a, buf_a, 8, NULL, &o), EINPROGRESS);
    expect_record(&o, 5, EIO, 0);
    expect_result(a, &o, EIO, 0);
    expect_no_record(port);
    disarm(rule, 1);

    /* Disarmed: both files read and write again. */
    memset(&o, 0, sizeof o);
    FAILS_WITH(!WriteFile(a, "xyz", 3, NULL, &o), EINPROGRESS);
    expect_record(&o, 5, 0, 3);
    aiocb_for(&cb_a, a, IOCP_LIO_READ, 0, buf_a, 8, port);
    aiocb_for(&cb_b, b, IOCP_LIO_READ, 0, buf_b, 8, port);
    CHECK(iocp_lio_listio(IOCP_LIO_WAIT, list, 2, NULL) == 0);
    CHECK(memcmp(buf_a, "xyzaaaaa", 8) == 0 && memcmp(buf_b, "BBBBBBBB", 8) == 0);
    expect_no_record(port);
    close(a);
    close(b);
}

/* A port or event that cannot be made: 0 with the errno, no descriptor left behind (the
 * ring's allocation comes before the handle's descriptor; a failed descriptor leaves no
 * ring); made as usual once the rule is disarmed. */
static void creation_fails(void)
{
    int before = open_fds();
    int rule = arm("HandleFd", ENOMEM, IOCP_TEST_THIS_THREAD, 1);
    FAILS_WITH(CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 0) == 0, ENOMEM);
    disarm(rule, 1);
    rule = arm("HandleFd", EMFILE, IOCP_TEST_THIS_THREAD, 1);
    FAILS_WITH(iocp_port_create(0, IOCP_PORT_FIFO) == 0, EMFILE);
    disarm(rule, 1);
    rule = arm("Alloc", ENOMEM, IOCP_TEST_THIS_THREAD, 1);
    FAILS_WITH(iocp_port_create(0, 0) == 0, ENOMEM);
    disarm(rule, 1);
    rule = arm("HandleFd", EMFILE, IOCP_TEST_THIS_THREAD, 1);
    FAILS_WITH(iocp_event_create(FALSE, FALSE) == 0, EMFILE);
    disarm(rule, 1);
    CHECK(open_fds() == before);

    HANDLE made = CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 0);
    CHECK(made > 0);
    CHECK(PostQueuedCompletionStatus(made, 1, 2, (LPOVERLAPPED)3));
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    CHECK(GetQueuedCompletionStatus(made, &bytes, &key, &ovl, 5000));
    CHECK(bytes == 1 && key == 2 && ovl == (LPOVERLAPPED)3);
    expect_no_record(made);
    CHECK(CloseHandle(made));
    HANDLE event = iocp_event_create(FALSE, TRUE);
    CHECK(event > 0);
    CHECK(iocp_event_wait(event, 0));
    CHECK(CloseHandle(event));
    CHECK(open_fds() == before);
}

/* A descriptor the library has never seen, while it cannot duplicate it (F_DUPFD_CLOEXEC
 * fails with EMFILE): a ReadFile, an association and a list entry each fail with EMFILE and
 * leave no state — no descriptor, no association, no record — so that it associates and
 * reads as new afterwards. */
static void duplicate_fails(void)
{
    int sv[2];
    socket_pair(sv);
    int file = scratch_file('f', 8);
    /* The library's file pool, made on first use, may hold descriptors of its own (with
     * IOCP_FILE_DRIVER=uring, its ring and eventfd): made before the count, they are not
     * taken for a leak. */
    CHECK(iocp_aio_cancel(file, NULL) == IOCP_AIO_ALLDONE);
    int before = open_fds();
    char buf[16];
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    int rule = arm("Fcntl", EMFILE, sv[0], 1);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, NULL, &o), EMFILE);
    disarm(rule, 1);
    rule = arm("Fcntl", EMFILE, sv[0], 1);
    FAILS_WITH(CreateIoCompletionPort(sv[0], port, 6, 0) == 0, EMFILE);
    disarm(rule, 1);

    /* A write runs on the pool, on the library's duplicate of the file, which it cannot
     * make. (A read of cached pages is done by the caller on its own descriptor.) */
    struct iocp_aiocb cb, write_cb;
    struct iocp_aiocb *list[1] = { &cb }, *write_list[1] = { &write_cb };
    aiocb_for(&cb, file, IOCP_LIO_READ, 0, buf, 8, port);
    char ff[8];
    memset(ff, 'f', sizeof ff);
    aiocb_for(&write_cb, file, IOCP_LIO_WRITE, 0, ff, 8, port);
    rule = arm("Fcntl", EMFILE, file, 1);
    FAILS_WITH(iocp_lio_listio(IOCP_LIO_NOWAIT, write_list, 1, NULL) == -1, EIO);
    CHECK(iocp_aio_error(&write_cb) == EMFILE && iocp_aio_return(&write_cb) == -1);
    disarm(rule, 1);
    CHECK(open_fds() == before);
    expect_no_record(port);

    /* Never associated, so it associates now, under its new key, and reads. */
    CHECK(CreateIoCompletionPort(sv[0], port, 6, 0) == port);
    memset(&o, 0, sizeof o);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, NULL, &o), EINPROGRESS);
    send_all(sv[1], "dup");
    expect_record(&o, 6, 0, 3);
    CHECK(memcmp(buf, "dup", 3) == 0);
    CHECK(iocp_lio_listio(IOCP_LIO_NOWAIT, list, 1, NULL) == 0);
    expect_list_records(list, (const int[]){ 0 }, (const DWORD[]){ 8 }, 1);
    CHECK(memcmp(buf, "ffffffff", 8) == 0);
    close(sv[0]);
    close(sv[1]);
    close(file);
}

/* The reactor's poll (epoll_wait) failing under a waiting GetQueuedCompletionStatus, the
 * thread that polls for the port's sockets: ENOMEM is retried, EINTR ends that wait with
 * AIX's EAGAIN (a signal); either way the readiness is not lost and the request completes
 * once. */
static void reactor_poll_fails(void)
{
    int sv[2];
    socket_pair(sv);
    CHECK(CreateIoCompletionPort(sv[0], port, 7, 0) == port);
    char buf[16];
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, NULL, &o), EINPROGRESS);
    send_all(sv[1], "one");
    int rule = arm("ReactorPoll", ENOMEM, IOCP_TEST_THIS_THREAD, 3);
    expect_record(&o, 7, 0, 3);
    CHECK(memcmp(buf, "one", 3) == 0);
    disarm(rule, 3);
    expect_no_record(port);

    memset(&o, 0, sizeof o);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, NULL, &o), EINPROGRESS);
    send_all(sv[1], "two");
    rule = arm("ReactorPoll", EINTR, IOCP_TEST_THIS_THREAD, 1);
    DWORD bytes, key;
    LPOVERLAPPED ovl = (LPOVERLAPPED)1;
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000), EAGAIN);
    CHECK(ovl == NULL);
    disarm(rule, 1);
    expect_record(&o, 7, 0, 3);
    CHECK(memcmp(buf, "two", 3) == 0);
    expect_no_record(port);
    close(sv[0]);
    close(sv[1]);
}

static void *set_later(void *event)
{
    sleep_ms(30);
    CHECK(iocp_event_set(*(HANDLE *)event));
    return NULL;
}

static void *send_later(void *fd)
{
    sleep_ms(30);
    send_all(*(int *)fd, "woke");
    return NULL;
}

/* A signal during a port's futex wait (FutexWait EINTR): GetQueuedCompletionStatus and
 * GetQueuedCompletionStatusEx fail with EAGAIN (AIX), GetMultipleCompletionStatus returns
 * fewer than `nmin` with errno EINTR; nothing queued is lost. An event wait and
 * GetOverlappedResult's wait ride it out. */
static void futex_wait_interrupted(void)
{
    HANDLE quiet = CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 0);
    CHECK(quiet > 0);
    DWORD bytes, key;
    LPOVERLAPPED ovl = (LPOVERLAPPED)1;
    int rule = arm("FutexWait", EINTR, IOCP_TEST_THIS_THREAD, 1);
    FAILS_WITH(!GetQueuedCompletionStatus(quiet, &bytes, &key, &ovl, INFINITE), EAGAIN);
    CHECK(ovl == NULL);
    disarm(rule, 1);

    OVERLAPPED_ENTRY entries[2];
    DWORD removed = 99;
    rule = arm("FutexWait", EINTR, IOCP_TEST_THIS_THREAD, 1);
    FAILS_WITH(!GetQueuedCompletionStatusEx(quiet, entries, 2, &removed, INFINITE, FALSE),
               EAGAIN);
    CHECK(removed == 0);
    disarm(rule, 1);

    struct gmcs results[2];
    rule = arm("FutexWait", EINTR, IOCP_TEST_THIS_THREAD, 1);
    errno = 0;
    CHECK(GetMultipleCompletionStatus(quiet, 1, 2, INFINITE, results) == 0);
    CHECK(errno == EINTR);
    disarm(rule, 1);

    /* Disarmed: a record posted now comes out once. */
    CHECK(PostQueuedCompletionStatus(quiet, 4, 5, (LPOVERLAPPED)6));
    CHECK(GetQueuedCompletionStatus(quiet, &bytes, &key, &ovl, 5000));
    CHECK(bytes == 4 && key == 5 && ovl == (LPOVERLAPPED)6);
    expect_no_record(quiet);
    CHECK(CloseHandle(quiet));

    /* iocp_event_wait is not ended by a signal: it waits on until the event is set. */
    HANDLE event = iocp_event_create(FALSE, FALSE);
    CHECK(event > 0);
    pthread_t setter;
    rule = arm("FutexWait", EINTR, IOCP_TEST_THIS_THREAD, 50);
    CHECK(pthread_create(&setter, NULL, set_later, &event) == 0);
    CHECK(iocp_event_wait(event, 5000));
    CHECK(pthread_join(setter, NULL) == 0);
    int hits = iocp_test_disarm(rule);
    CHECK(hits > 0);
    delivered += hits;
    CHECK(CloseHandle(event));

    /* GetOverlappedResult(..., TRUE) neither: a read on a socket with no port (its block
     * is the only report) waits on until the bytes come. */
    int sv[2];
    socket_pair(sv);
    char buf[16];
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, NULL, &o), EINPROGRESS);
    rule = arm("FutexWait", EINTR, IOCP_TEST_THIS_THREAD, 50);
    CHECK(pthread_create(&setter, NULL, send_later, &sv[1]) == 0);
    DWORD got = 0;
    CHECK(GetOverlappedResult(sv[0], &o, &got, TRUE));
    CHECK(got == 4 && memcmp(buf, "woke", 4) == 0);
    CHECK(pthread_join(setter, NULL) == 0);
    hits = iocp_test_disarm(rule);
    CHECK(hits > 0);
    delivered += hits;
    close(sv[0]);
    close(sv[1]);
}

/* The test API's own errors. */
static void bad_rules(void)
{
    FAILS_WITH(iocp_test_fail("NoSuchCall", EIO, IOCP_TEST_THIS_THREAD, 1) == -1, EINVAL);
    FAILS_WITH(iocp_test_fail(NULL, EIO, IOCP_TEST_THIS_THREAD, 1) == -1, EINVAL);
    FAILS_WITH(iocp_test_fail("Recv", 0, IOCP_TEST_THIS_THREAD, 1) == -1, EINVAL);
    FAILS_WITH(iocp_test_fail("Recv", EIO, IOCP_TEST_THIS_THREAD, 0) == -1, EINVAL);
    FAILS_WITH(iocp_test_fail("Recv", EIO, -2, 1) == -1, EINVAL);
    int closed = dup(0);
    CHECK(closed >= 0 && close(closed) == 0);
    FAILS_WITH(iocp_test_fail("Recv", EIO, closed, 1) == -1, EBADF);
    int rule = arm("Recv", EIO, IOCP_TEST_THIS_THREAD, 1);
    CHECK(iocp_test_hits(rule) == 0);
    disarm(rule, 0);
    FAILS_WITH(iocp_test_hits(rule) == -1, EINVAL);
    FAILS_WITH(iocp_test_disarm(rule) == -1, EINVAL);
    FAILS_WITH(iocp_test_disarm(-1) == -1, EINVAL);
}

int main(void)
{
    port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 0);
    CHECK(port > 0);
    bad_rules();
    /* These two count descriptors: first, before any descriptor of the program's is closed,
     * whose duplicate the library would drop at a moment of its choosing. */
    creation_fails();
    duplicate_fails();
    recv_fails_at_once();
    recv_fails_later();
    eintr_is_retried();
    send_fails();
    file_requests_fail();
    reactor_poll_fails();
    futex_wait_interrupted();
    expect_no_record(port);
    CHECK(CloseHandle(port));
    printf("faults: ok, %d faults delivered\n", delivered);
    return 0;
}
