/* Every row of the C API table in DESIGN.md, with its error cases: ports, the two dequeue
 * calls and their waiter rules, posting (and the batched post, iocp_post_many), the
 * argument checks of the I/O calls, list I/O, cancellation, results, the provider calls,
 * events and CloseHandle. The happy paths of real I/O are in sockets.c, files.c, provider.c
 * and events.c. */
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_signal(int sig)
{
    (void)sig;
}

static void install_handler(int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
}

/* Sends SIGUSR1 to `target` every 10 ms until `done`. */
struct interrupter {
    pthread_t target;
    pthread_t thread;
    atomic_int done;
};

static void *interrupt_loop(void *arg)
{
    struct interrupter *it = arg;
    while (!atomic_load(&it->done)) {
        pthread_kill(it->target, SIGUSR1);
        sleep_ms(10);
    }
    return NULL;
}

static void interrupt_start(struct interrupter *it)
{
    it->target = pthread_self();
    atomic_store(&it->done, 0);
    CHECK(pthread_create(&it->thread, NULL, interrupt_loop, it) == 0);
}

static void interrupt_stop(struct interrupter *it)
{
    atomic_store(&it->done, 1);
    CHECK(pthread_join(it->thread, NULL) == 0);
}

/* A thread blocked in GetQueuedCompletionStatus or GetMultipleCompletionStatus. */
struct waiter {
    HANDLE port;
    int multiple;
    DWORD timeout;
    pthread_t thread;
    atomic_int started, finished;
    BOOL ok;
    int count, err;
    DWORD bytes, key;
    LPOVERLAPPED ovl;
};

static void *wait_loop(void *arg)
{
    struct waiter *w = arg;
    atomic_store(&w->started, 1);
    errno = 0;
    if (w->multiple) {
        struct gmcs results[4];
        w->count = GetMultipleCompletionStatus(w->port, 1, 4, w->timeout, results);
        w->err = errno;
        if (w->count > 0) {
            w->bytes = results[0].transfer_count;
        }
    } else {
        w->ok = GetQueuedCompletionStatus(w->port, &w->bytes, &w->key, &w->ovl, w->timeout);
        w->err = errno;
    }
    atomic_store(&w->finished, 1);
    return NULL;
}

static void waiter_start(struct waiter *w, HANDLE port, int multiple, DWORD timeout)
{
    memset(w, 0, sizeof *w);
    w->port = port;
    w->multiple = multiple;
    w->timeout = timeout;
    CHECK(pthread_create(&w->thread, NULL, wait_loop, w) == 0);
    while (!atomic_load(&w->started)) {
        sleep_ms(1);
    }
    sleep_ms(100); /* past its spin: asleep on the port */
}

static void waiter_join(struct waiter *w)
{
    CHECK(pthread_join(w->thread, NULL) == 0);
}

static void create_and_associate(void)
{
    HANDLE port = new_port();
    CHECK(CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 1) > 0 ? 1 : 0);
    HANDLE unlimited = CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, INFINITE);
    CHECK(unlimited > 0 && unlimited != port);
    FAILS_WITH(CreateIoCompletionPort(INVALID_HANDLE_VALUE, port, 0, 0) == 0, EINVAL);

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(CreateIoCompletionPort(sv[0], port, 5, 0) == port);
    FAILS_WITH(CreateIoCompletionPort(sv[0], port, 5, 0) == 0, EALREADY);
    FAILS_WITH(CreateIoCompletionPort(sv[0], unlimited, 5, 0) == 0, EALREADY);

    /* Bad ports. */
    FAILS_WITH(CreateIoCompletionPort(sv[1], 0, 1, 0) == 0, EBADF);
    FAILS_WITH(CreateIoCompletionPort(sv[1], -7, 1, 0) == 0, EBADF);
    FAILS_WITH(CreateIoCompletionPort(sv[1], sv[0], 1, 0) == 0, EBADF);
    FAILS_WITH(CreateIoCompletionPort(sv[1], 1 << 20, 1, 0) == 0, EBADF);

    /* Bad descriptors: negative, closed, neither socket nor file, library handles. */
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    int closed = dup(pipefd[0]);
    CHECK(close(closed) == 0);
    HANDLE event = iocp_event_create(TRUE, FALSE);
    CHECK(event > 0);
    FAILS_WITH(CreateIoCompletionPort(-5, port, 1, 0) == 0, EINVAL);
    FAILS_WITH(CreateIoCompletionPort(closed, port, 1, 0) == 0, EINVAL);
    FAILS_WITH(CreateIoCompletionPort(pipefd[0], port, 1, 0) == 0, EINVAL);
    FAILS_WITH(CreateIoCompletionPort(port, port, 1, 0) == 0, EINVAL);
    FAILS_WITH(CreateIoCompletionPort(unlimited, port, 1, 0) == 0, EINVAL);
    FAILS_WITH(CreateIoCompletionPort(event, port, 1, 0) == 0, EINVAL);

    /* A regular file associates too. */
    char path[] = "/tmp/iocp-api-XXXXXX";
    int file = mkstemp(path);
    CHECK(file >= 0);
    unlink(path);
    CHECK(CreateIoCompletionPort(file, port, 9, 0) == port);

    /* A closed port, also while a socket's association still refers to it. */
    CHECK(CloseHandle(unlimited));
    FAILS_WITH(CreateIoCompletionPort(sv[1], unlimited, 1, 0) == 0, EBADF);
    HANDLE closing = new_port();
    int other[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, other) == 0);
    CHECK(CreateIoCompletionPort(other[0], closing, 1, 0) == closing);
    CHECK(CloseHandle(closing));
    FAILS_WITH(CreateIoCompletionPort(other[1], closing, 1, 0) == 0, EBADF);
    FAILS_WITH(!PostQueuedCompletionStatus(closing, 1, 1, NULL), EBADF);
    /* ... and its number is not one of the program's descriptors to read. */
    char byte;
    DWORD got;
    FAILS_WITH(!ReadFile(closing, &byte, 1, &got, NULL), EINVAL);
    close(other[0]);
    close(other[1]);

    CHECK(CloseHandle(event));
    CHECK(CloseHandle(port));
    close(file);
    close(pipefd[0]);
    close(pipefd[1]);
    close(sv[0]);
    close(sv[1]);
}

struct late_post {
    HANDLE port;
    pthread_t thread;
};

static void *post_late(void *arg)
{
    struct late_post *late = arg;
    usleep(20 * 1000);
    CHECK(PostQueuedCompletionStatus(late->port, 7, 70, NULL));
    return NULL;
}

static void create_with_flags(void)
{
    /* No flag: the port CreateIoCompletionPort makes; IOCP_PORT_FIFO: one order across
     * threads (ordering.c); IOCP_PORT_NO_SPIN: waiters sleep at once. Any other bit:
     * EINVAL. */
    HANDLE plain = iocp_port_create(0, 0);
    CHECK(plain > 0);
    HANDLE fifo = iocp_port_create(INFINITE, IOCP_PORT_FIFO);
    CHECK(fifo > 0 && fifo != plain);
    HANDLE quiet = iocp_port_create(1, IOCP_PORT_NO_SPIN | IOCP_PORT_FIFO);
    CHECK(quiet > 0 && quiet != fifo && quiet != plain);
    FAILS_WITH(iocp_port_create(0, 0x4) == 0, EINVAL);
    FAILS_WITH(iocp_port_create(0, IOCP_PORT_FIFO | 0x80000000u) == 0, EINVAL);
    FAILS_WITH(iocp_port_create(1, 0xFFFFFFFFu) == 0, EINVAL);

    /* A waiter on a port without a spin sleeps, and a post wakes it. */
    struct late_post late = { .port = quiet };
    CHECK(pthread_create(&late.thread, NULL, post_late, &late) == 0);
    DWORD late_bytes, late_key;
    LPOVERLAPPED late_ovl;
    CHECK(GetQueuedCompletionStatus(quiet, &late_bytes, &late_key, &late_ovl, 10000));
    CHECK(late_bytes == 7 && late_key == 70);
    CHECK(pthread_join(late.thread, NULL) == 0);

    /* Each is a port like any other: it takes associations, posts and every dequeue. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(CreateIoCompletionPort(sv[0], fifo, 3, 0) == fifo);
    CHECK(CreateIoCompletionPort(sv[1], plain, 4, 0) == plain);
    FAILS_WITH(CreateIoCompletionPort(sv[0], plain, 3, 0) == 0, EALREADY);
    HANDLE ports[3] = { plain, fifo, quiet };
    for (int i = 0; i < 3; i++) {
        DWORD bytes, key, removed;
        LPOVERLAPPED ovl;
        struct gmcs results[2];
        OVERLAPPED_ENTRY entries[2];
        CHECK(PostQueuedCompletionStatus(ports[i], 1, 10, NULL));
        CHECK(PostQueuedCompletionStatus(ports[i], 2, 20, NULL));
        CHECK(PostQueuedCompletionStatus(ports[i], 3, 30, NULL));
        CHECK(GetQueuedCompletionStatus(ports[i], &bytes, &key, &ovl, 0));
        CHECK(bytes == 1 && key == 10 && ovl == NULL);
        CHECK(GetQueuedCompletionStatusEx(ports[i], entries, 1, &removed, 0, FALSE));
        CHECK(removed == 1 && entries[0].dwNumberOfBytesTransferred == 2);
        CHECK(GetMultipleCompletionStatus(ports[i], 1, 2, 0, results) == 1);
        CHECK(results[0].transfer_count == 3 && results[0].completion_key == 30);
        FAILS_WITH(!GetQueuedCompletionStatus(ports[i], &bytes, &key, &ovl, 0), ETIMEDOUT);
        CHECK(CloseHandle(ports[i]));
        FAILS_WITH(!PostQueuedCompletionStatus(ports[i], 1, 1, NULL), EBADF);
    }
    close(sv[0]);
    close(sv[1]);
}

static void post_and_get(void)
{
    HANDLE port = new_port();
    DWORD bytes = 1, key = 1;
    LPOVERLAPPED ovl = (LPOVERLAPPED)&bytes;
    OVERLAPPED block;

    /* NULL pointers. */
    FAILS_WITH(!GetQueuedCompletionStatus(port, NULL, &key, &ovl, 0), EINVAL);
    CHECK(ovl == NULL);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, NULL, &ovl, 0), EINVAL);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, NULL, 0), EINVAL);

    /* Bad ports. */
    ovl = (LPOVERLAPPED)&bytes;
    FAILS_WITH(!GetQueuedCompletionStatus(0, &bytes, &key, &ovl, 0), EBADF);
    CHECK(ovl == NULL);
    FAILS_WITH(!GetQueuedCompletionStatus(-1, &bytes, &key, &ovl, 0), EBADF);
    FAILS_WITH(!GetQueuedCompletionStatus(0, &bytes, &key, &ovl, INFINITE), EBADF);

    /* Timeouts: a poll, and a wait that is never early. */
    ovl = (LPOVERLAPPED)&bytes;
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), ETIMEDOUT);
    CHECK(ovl == NULL);
    double start = now_ms();
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 50), ETIMEDOUT);
    CHECK(now_ms() - start >= 50.0);

    /* A posted record comes back as given, values unchecked. */
    CHECK(PostQueuedCompletionStatus(port, 512, 77, &block));
    CHECK(PostQueuedCompletionStatus(port, 0xFFFFFFFFu, 0xFFFFFFFFu, (LPOVERLAPPED)0x1234));
    CHECK(PostQueuedCompletionStatus(port, 0, 0, NULL));
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0));
    CHECK(bytes == 512 && key == 77 && ovl == &block);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, INFINITE));
    CHECK(bytes == 0xFFFFFFFFu && key == 0xFFFFFFFFu && ovl == (LPOVERLAPPED)0x1234);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 1000));
    CHECK(bytes == 0 && key == 0 && ovl == NULL);

    /* Post: EBADF for NULL, non-descriptors and closed ports; EINVAL for a non-port. */
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    HANDLE event = iocp_event_create(FALSE, FALSE);
    FAILS_WITH(!PostQueuedCompletionStatus(0, 1, 1, NULL), EBADF);
    FAILS_WITH(!PostQueuedCompletionStatus(-1, 1, 1, NULL), EBADF);
    FAILS_WITH(!PostQueuedCompletionStatus(1 << 20, 1, 1, NULL), EBADF);
    FAILS_WITH(!PostQueuedCompletionStatus(pipefd[0], 1, 1, NULL), EINVAL);
    FAILS_WITH(!PostQueuedCompletionStatus(event, 1, 1, NULL), EINVAL);
    CHECK(CloseHandle(event));
    close(pipefd[0]);
    close(pipefd[1]);

    /* A record of a failed I/O: FALSE, errno and *ovl from the record. */
    int err = 0;
    SOCKET s = WPUCreateSocketHandle(1, 0, &err);
    CHECK(s != INVALID_SOCKET);
    CHECK(CreateIoCompletionPort(s, port, 31, 0) == port);
    memset(&block, 0, sizeof block);
    block.Internal = WSS_OPERATION_IN_PROGRESS;
    CHECK(WPUCompleteOverlappedRequest(s, &block, ECONNRESET, 3, &err) == 0);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 1000), ECONNRESET);
    CHECK(ovl == &block && bytes == 3 && key == 31);
    CHECK(WPUCloseSocketHandle(s, &err) == 0);

    /* Closed port: EBADF. */
    CHECK(CloseHandle(port));
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), EBADF);
    FAILS_WITH(!PostQueuedCompletionStatus(port, 1, 1, NULL), EBADF);
}

static void get_multiple(void)
{
    HANDLE port = new_port();
    struct gmcs results[GMCS_NMAX + 1];

    FAILS_WITH(GetMultipleCompletionStatus(port, 0, 0, 0, results) == -1, EINVAL);
    FAILS_WITH(GetMultipleCompletionStatus(port, 0, GMCS_NMAX + 1, 0, results) == -1, EINVAL);
    FAILS_WITH(GetMultipleCompletionStatus(port, 3, 2, 0, results) == -1, EINVAL);
    FAILS_WITH(GetMultipleCompletionStatus(port, 0, 1, 0, NULL) == -1, EINVAL);
    /* A misaligned array: EINVAL, and the record stays queued. */
    CHECK(PostQueuedCompletionStatus(port, 5, 9, NULL));
    FAILS_WITH(
        GetMultipleCompletionStatus(port, 0, 1, 0, MISALIGNED(struct gmcs, results)) == -1,
        EINVAL);
    CHECK(GetMultipleCompletionStatus(port, 1, 1, 0, results) == 1);
    CHECK(results[0].completion_key == 9 && results[0].transfer_count == 5);
    FAILS_WITH(GetMultipleCompletionStatus(0, 0, 1, 0, results) == -1, EBADF);
    FAILS_WITH(GetMultipleCompletionStatus(-1, 1, 1, 0, results) == -1, EBADF);

    /* nmin == 0 polls, whatever the timeout. */
    double start = now_ms();
    errno = 0;
    CHECK(GetMultipleCompletionStatus(port, 0, GMCS_NMAX, INFINITE, results) == 0);
    CHECK(errno == 0);
    CHECK(now_ms() - start < 1000.0);

    /* Fewer than nmin: the count, with ETIMEDOUT, after the whole timeout. */
    for (DWORD i = 0; i < 3; i++) {
        CHECK(PostQueuedCompletionStatus(port, i, 40 + i, NULL));
    }
    start = now_ms();
    errno = 0;
    CHECK(GetMultipleCompletionStatus(port, 5, 10, 50, results) == 3);
    CHECK(errno == ETIMEDOUT);
    CHECK(now_ms() - start >= 50.0);
    for (DWORD i = 0; i < 3; i++) {
        CHECK(results[i].transfer_count == i && results[i].completion_key == 40 + i);
        CHECK(results[i].overlapped == NULL && results[i].errorno == 0);
    }
    errno = 0;
    CHECK(GetMultipleCompletionStatus(port, 1, 10, 0, results) == 0);
    CHECK(errno == ETIMEDOUT);

    /* At most nmax, the rest stays queued; a full GMCS_NMAX batch. */
    for (int i = 0; i < GMCS_NMAX + 5; i++) {
        CHECK(PostQueuedCompletionStatus(port, (DWORD)i, 1, NULL));
    }
    CHECK(GetMultipleCompletionStatus(port, 2, 2, INFINITE, results) == 2);
    CHECK(results[0].transfer_count == 0 && results[1].transfer_count == 1);
    CHECK(GetMultipleCompletionStatus(port, GMCS_NMAX, GMCS_NMAX, 1000, results) == GMCS_NMAX);
    for (int i = 0; i < GMCS_NMAX; i++) {
        CHECK(results[i].transfer_count == (DWORD)(i + 2));
    }
    CHECK(GetMultipleCompletionStatus(port, 0, GMCS_NMAX, 0, results) == 3);

    /* transfer_count is capped at 2^31 - 1 (GQCS hands back what was posted). */
    CHECK(PostQueuedCompletionStatus(port, 0xFFFFFFFFu, 1, NULL));
    CHECK(PostQueuedCompletionStatus(port, 0x80000000u, 1, NULL));
    CHECK(GetMultipleCompletionStatus(port, 2, 2, 1000, results) == 2);
    CHECK(results[0].transfer_count == 0x7FFFFFFFu && results[1].transfer_count == 0x7FFFFFFFu);

    CHECK(CloseHandle(port));
    FAILS_WITH(GetMultipleCompletionStatus(port, 0, 1, 0, results) == -1, EBADF);
}

/* iocp_post_many: its errors, records as given (errorno too), order with single posts, a
 * batch larger than the ring, and the wake of a sleeping waiter. */
static void post_many(void)
{
    HANDLE port = new_port();
    struct gmcs in[3] = {
        {512, 77, 0, (LPOVERLAPPED)0x10},
        {0xFFFFFFFFu, 0xFFFFFFFFu, 0, (LPOVERLAPPED)0x1234},
        {3, 31, ECONNRESET, (LPOVERLAPPED)0x20},
    };
    struct gmcs results[GMCS_NMAX];

    /* Bad arguments: nothing is queued. */
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    HANDLE event = iocp_event_create(FALSE, FALSE);
    FAILS_WITH(!iocp_post_many(port, NULL, 1), EINVAL);
    FAILS_WITH(!iocp_post_many(port, MISALIGNED(const struct gmcs, in), 1), EINVAL);
    FAILS_WITH(!iocp_post_many(0, in, 1), EBADF);
    FAILS_WITH(!iocp_post_many(-1, in, 1), EBADF);
    FAILS_WITH(!iocp_post_many(1 << 20, in, 1), EBADF);
    FAILS_WITH(!iocp_post_many(pipefd[0], in, 1), EINVAL);
    FAILS_WITH(!iocp_post_many(event, in, 1), EINVAL);
    FAILS_WITH(!iocp_post_many(0, NULL, 0), EBADF);
    CHECK(iocp_post_many(port, NULL, 0));
    CHECK(GetMultipleCompletionStatus(port, 0, GMCS_NMAX, 0, results) == 0);
    CHECK(CloseHandle(event));
    close(pipefd[0]);
    close(pipefd[1]);

    /* As given, in order, between single posts. */
    CHECK(PostQueuedCompletionStatus(port, 1, 1, NULL));
    CHECK(iocp_post_many(port, in, 3));
    CHECK(PostQueuedCompletionStatus(port, 2, 2, NULL));
    CHECK(GetMultipleCompletionStatus(port, 5, 5, 1000, results) == 5);
    CHECK(results[0].transfer_count == 1 && results[4].transfer_count == 2);
    CHECK(results[1].transfer_count == 512 && results[1].completion_key == 77);
    CHECK(results[1].errorno == 0 && results[1].overlapped == (LPOVERLAPPED)0x10);
    CHECK(results[2].transfer_count == 0x7FFFFFFFu && results[2].completion_key == 0xFFFFFFFFu);
    CHECK(results[2].overlapped == (LPOVERLAPPED)0x1234);
    CHECK(results[3].transfer_count == 3 && results[3].completion_key == 31);
    CHECK(results[3].errorno == ECONNRESET && results[3].overlapped == (LPOVERLAPPED)0x20);

    /* A record with an errorno is a failed I/O to GetQueuedCompletionStatus. */
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    CHECK(iocp_post_many(port, &in[2], 1));
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 1000), ECONNRESET);
    CHECK(bytes == 3 && key == 31 && ovl == (LPOVERLAPPED)0x20);

    /* Three rings' worth and more in one call: every record, in order. */
    enum { MANY = 3 * 4096 + 7 };
    struct gmcs *many = calloc(MANY, sizeof *many);
    CHECK(many != NULL);
    for (DWORD i = 0; i < MANY; i++) {
        many[i].transfer_count = i;
        many[i].completion_key = 5;
    }
    CHECK(iocp_post_many(port, many, MANY));
    for (DWORD next = 0; next < MANY;) {
        int n = GetMultipleCompletionStatus(port, 1, GMCS_NMAX, 1000, results);
        CHECK(n > 0);
        for (int i = 0; i < n; i++, next++) {
            CHECK(results[i].transfer_count == next && results[i].completion_key == 5);
        }
    }
    CHECK(GetMultipleCompletionStatus(port, 0, GMCS_NMAX, 0, results) == 0);
    free(many);

    /* A waiter asleep in GetQueuedCompletionStatus wakes for a batch. */
    struct waiter w;
    waiter_start(&w, port, 0, 5000);
    CHECK(iocp_post_many(port, in, 2));
    waiter_join(&w);
    CHECK(w.ok && w.bytes == 512 && w.key == 77 && w.ovl == (LPOVERLAPPED)0x10);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 1000));
    CHECK(bytes == 0xFFFFFFFFu && key == 0xFFFFFFFFu);

    /* Closed port: EBADF, also for an empty batch. */
    CHECK(CloseHandle(port));
    FAILS_WITH(!iocp_post_many(port, in, 3), EBADF);
    FAILS_WITH(!iocp_post_many(port, in, 0), EBADF);
}

static void waiter_rules(void)
{
    HANDLE port = new_port();
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    struct gmcs results[4];
    struct waiter a, b;

    /* While a GMCS waits, other dequeues fail with EBUSY. */
    waiter_start(&a, port, 1, 5000);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), EBUSY);
    FAILS_WITH(GetMultipleCompletionStatus(port, 0, 4, 0, results) == -1, EBUSY);
    CHECK(PostQueuedCompletionStatus(port, 11, 1, NULL));
    waiter_join(&a);
    CHECK(a.count == 1 && a.bytes == 11);

    /* While GQCS waiters sleep, a GMCS fails with EBUSY (a GQCS may still wait). */
    waiter_start(&a, port, 0, 5000);
    FAILS_WITH(GetMultipleCompletionStatus(port, 1, 4, 10, results) == -1, EBUSY);
    waiter_start(&b, port, 0, 5000);
    /* Waiters wake last-in first-out: b, the later one, gets the first record. */
    CHECK(PostQueuedCompletionStatus(port, 21, 1, NULL));
    sleep_ms(100);
    CHECK(atomic_load(&b.finished) && !atomic_load(&a.finished));
    CHECK(PostQueuedCompletionStatus(port, 22, 1, NULL));
    waiter_join(&a);
    waiter_join(&b);
    CHECK(a.ok && b.ok && b.bytes == 21 && a.bytes == 22);

    /* Closing the port wakes every waiter with EBADF, GQCS and GMCS alike. */
    waiter_start(&a, port, 0, INFINITE);
    waiter_start(&b, port, 0, INFINITE);
    CHECK(CloseHandle(port));
    waiter_join(&a);
    waiter_join(&b);
    CHECK(!a.ok && a.err == EBADF && a.ovl == NULL);
    CHECK(!b.ok && b.err == EBADF);
    FAILS_WITH(!CloseHandle(port), EBADF);

    port = new_port();
    waiter_start(&a, port, 1, INFINITE);
    CHECK(CloseHandle(port));
    waiter_join(&a);
    CHECK(a.count == -1 && a.err == EBADF);

    /* The concurrency value: with 1, a thread that took a record holds the port's one
     * slot until it comes back, so another thread's GQCS waits although a record is
     * ready. iocp_port_create takes it too. */
    for (int how = 0; how < 2; how++) {
        port = how ? iocp_port_create(1, IOCP_PORT_FIFO)
                   : CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 1);
        CHECK(port > 0);
        CHECK(PostQueuedCompletionStatus(port, 1, 1, NULL));
        CHECK(PostQueuedCompletionStatus(port, 2, 1, NULL));
        CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0) && bytes == 1);
        waiter_start(&a, port, 0, 100);
        waiter_join(&a);
        CHECK(!a.ok && a.err == ETIMEDOUT);
        CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0) && bytes == 2);
        CHECK(CloseHandle(port));
    }
}

static void signals(void)
{
    HANDLE port = new_port();
    DWORD bytes, key;
    LPOVERLAPPED ovl = (LPOVERLAPPED)&bytes;
    struct gmcs results[4];
    struct interrupter it;

    /* A signal handler ends a GQCS wait with EAGAIN (AIX), SA_RESTART or not. */
    for (int restart = 0; restart <= 1; restart++) {
        install_handler(restart ? SA_RESTART : 0);
        interrupt_start(&it);
        FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, INFINITE), EAGAIN);
        interrupt_stop(&it);
        CHECK(ovl == NULL);

        /* ... and a GMCS wait with the count so far and EINTR. */
        CHECK(PostQueuedCompletionStatus(port, 5, 1, NULL));
        interrupt_start(&it);
        errno = 0;
        int n = GetMultipleCompletionStatus(port, 2, 4, 10000, results);
        int err = errno;
        interrupt_stop(&it);
        CHECK(n == 1 && err == EINTR && results[0].transfer_count == 5);
    }
    signal(SIGUSR1, SIG_DFL);
    CHECK(CloseHandle(port));
}

static void io_arguments(void)
{
    HANDLE port = new_port();
    char buf[16];
    DWORD done = 99;
    OVERLAPPED block;
    memset(&block, 0, sizeof block);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);

    /* Bad descriptors: negative, closed, a library handle (never read as a socket). */
    FAILS_WITH(!ReadFile(-3, buf, sizeof buf, &done, NULL), EINVAL);
    CHECK(done == 0);
    FAILS_WITH(!WriteFile(-3, buf, sizeof buf, &done, &block), EINVAL);
    FAILS_WITH(!ReadFile(1 << 20, buf, sizeof buf, &done, &block), EINVAL);
    FAILS_WITH(!ReadFile(port, buf, sizeof buf, &done, NULL), EINVAL);
    FAILS_WITH(!WriteFile(port, buf, sizeof buf, &done, &block), EINVAL);
    /* NULL buffer with a length; NULL count without an OVERLAPPED. */
    FAILS_WITH(!ReadFile(sv[0], NULL, 4, &done, &block), EINVAL);
    FAILS_WITH(!WriteFile(sv[0], NULL, 4, &done, NULL), EINVAL);
    FAILS_WITH(!WriteFile(sv[0], "x", 1, NULL, NULL), EINVAL);
    /* Zero bytes from NULL is fine. */
    CHECK(WriteFile(sv[0], NULL, 0, &done, NULL) && done == 0);

    /* CancelIoEx with nothing pending. */
    FAILS_WITH(!CancelIoEx(sv[0], NULL), ENOENT);
    FAILS_WITH(!CancelIoEx(sv[0], &block), ENOENT);
    FAILS_WITH(!CancelIoEx(-1, NULL), ENOENT);

    /* GetOverlappedResult: NULLs, pending, done. */
    FAILS_WITH(!GetOverlappedResult(sv[0], NULL, &done, FALSE), EINVAL);
    FAILS_WITH(!GetOverlappedResult(sv[0], &block, NULL, FALSE), EINVAL);
    block.Internal = WSS_OPERATION_IN_PROGRESS;
    FAILS_WITH(!GetOverlappedResult(sv[0], &block, &done, FALSE), EINPROGRESS);
    block.Internal = 0;
    block.InternalHigh = 6;
    CHECK(GetOverlappedResult(sv[0], &block, &done, TRUE) && done == 6);
    block.Internal = EPIPE;
    FAILS_WITH(!GetOverlappedResult(sv[0], &block, &done, TRUE), EPIPE);
    CHECK(done == 6);

    CHECK(CloseHandle(port));
    close(sv[0]);
    close(sv[1]);
}

static void list_io_arguments(void)
{
    struct iocp_aiocb cb;
    memset(&cb, 0, sizeof cb);
    struct iocp_aiocb *list[1] = { &cb };

    FAILS_WITH(iocp_lio_listio(3, list, 1, NULL) == -1, EINVAL);
    FAILS_WITH(iocp_lio_listio(-1, list, 1, NULL) == -1, EINVAL);
    FAILS_WITH(iocp_lio_listio(IOCP_LIO_WAIT, list, -1, NULL) == -1, EINVAL);
    FAILS_WITH(iocp_lio_listio(IOCP_LIO_WAIT, NULL, 1, NULL) == -1, EINVAL);
    struct iocp_aiocb **misaligned = MISALIGNED(struct iocp_aiocb *, list);
    FAILS_WITH(iocp_lio_listio(IOCP_LIO_WAIT, misaligned, 1, NULL) == -1, EINVAL);
    CHECK(iocp_lio_listio(IOCP_LIO_WAIT, NULL, 0, NULL) == 0);
    /* A bad entry fails the call with EIO and carries its own error. */
    cb.aio_fildes = -1;
    cb.aio_lio_opcode = IOCP_LIO_READ;
    FAILS_WITH(iocp_lio_listio(IOCP_LIO_WAIT, list, 1, NULL) == -1, EIO);
    CHECK(iocp_aio_error(&cb) == EBADF);
    CHECK(iocp_aio_return(&cb) == -1);
    /* LIO_NOWAIT_GMCS needs a port in every entry. */
    cb.aio_fildes = 0;
    FAILS_WITH(iocp_lio_listio(LIO_NOWAIT_GMCS, list, 1, NULL) == -1, EIO);
    CHECK(iocp_aio_error(&cb) == EINVAL);

    FAILS_WITH(iocp_aio_error(NULL) == -1, EINVAL);
    FAILS_WITH(iocp_aio_return(NULL) == -1, EINVAL);
    FAILS_WITH(iocp_aio_cancel(-1, NULL) == -1, EBADF);
    FAILS_WITH(iocp_aio_cancel(1, &cb) == -1, EINVAL); /* aio_fildes is 0 */
    CHECK(iocp_aio_cancel(0, NULL) == IOCP_AIO_ALLDONE);
}

static void providers_and_events(void)
{
    int err = 0;
    OVERLAPPED block;
    memset(&block, 0, sizeof block);
    DWORD bytes, flags;

    /* Handles not made by WPUCreateSocketHandle. */
    HANDLE port = new_port();
    FAILS_WITH(WPUCompleteOverlappedRequest(port, &block, 0, 1, &err) == SOCKET_ERROR, EBADF);
    CHECK(err == WSAEINVAL);
    err = 0;
    FAILS_WITH(WPUCompleteOverlappedRequest(-1, &block, 0, 1, &err) == SOCKET_ERROR, EBADF);
    CHECK(err == WSAEINVAL);
    FAILS_WITH(WPUCompleteOverlappedRequest(0, &block, 0, 1, NULL) == SOCKET_ERROR, EBADF);
    FAILS_WITH(WPUCloseSocketHandle(port, &err) == SOCKET_ERROR, EBADF);
    FAILS_WITH(!WSPGetOverlappedResult(port, &block, &bytes, FALSE, &flags, &err), EBADF);
    CHECK(err == WSAEINVAL);

    /* A provider handle: bad arguments, then a double close. */
    SOCKET s = WPUCreateSocketHandle(3, (uintptr_t)&block, &err);
    CHECK(s != INVALID_SOCKET);
    err = 0;
    FAILS_WITH(WPUCompleteOverlappedRequest(s, NULL, 0, 1, &err) == SOCKET_ERROR, EINVAL);
    CHECK(err == WSAEINVAL);
    err = 0;
    FAILS_WITH(WPUCompleteOverlappedRequest(s, &block, WSS_OPERATION_IN_PROGRESS, 1, &err) ==
                       SOCKET_ERROR,
               EINVAL);
    CHECK(err == WSAEINVAL);
    FAILS_WITH(!WSPGetOverlappedResult(s, NULL, &bytes, FALSE, &flags, &err), EINVAL);
    FAILS_WITH(!WSPGetOverlappedResult(s, &block, NULL, FALSE, &flags, &err), EINVAL);
    FAILS_WITH(!WSPGetOverlappedResult(s, &block, &bytes, FALSE, NULL, &err), EINVAL);
    CHECK(WPUCloseSocketHandle(s, &err) == 0);
    err = 0;
    FAILS_WITH(WPUCloseSocketHandle(s, &err) == SOCKET_ERROR, EBADF);
    CHECK(err == WSAEINVAL);
    FAILS_WITH(WPUCompleteOverlappedRequest(s, &block, 0, 1, &err) == SOCKET_ERROR, EBADF);
    /* CloseHandle closes provider handles too. */
    s = WPUCreateSocketHandle(3, 0, NULL);
    CHECK(s != INVALID_SOCKET);
    CHECK(CloseHandle(s));
    FAILS_WITH(WPUCloseSocketHandle(s, NULL) == SOCKET_ERROR, EBADF);

    /* Events: bad handles, timeouts. */
    FAILS_WITH(!iocp_event_set(0), EBADF);
    FAILS_WITH(!iocp_event_reset(-1), EBADF);
    FAILS_WITH(!iocp_event_wait(port, 0), EBADF);
    HANDLE event = iocp_event_create(FALSE, FALSE);
    CHECK(event > 0);
    FAILS_WITH(!iocp_event_wait(event, 0), ETIMEDOUT);
    double start = now_ms();
    FAILS_WITH(!iocp_event_wait(event, 30), ETIMEDOUT);
    CHECK(now_ms() - start >= 30.0);
    CHECK(iocp_event_set(event) && iocp_event_wait(event, 0));
    CHECK(CloseHandle(event));
    FAILS_WITH(!iocp_event_set(event), EBADF);

    /* CloseHandle: a second close, and never the caller's descriptors. */
    CHECK(CloseHandle(port));
    FAILS_WITH(!CloseHandle(port), EBADF);
    FAILS_WITH(!CloseHandle(event), EBADF);
    FAILS_WITH(!CloseHandle(0), EBADF);
    FAILS_WITH(!CloseHandle(INVALID_HANDLE_VALUE), EBADF);
    int mine = dup(1);
    CHECK(mine >= 0);
    FAILS_WITH(!CloseHandle(mine), EBADF);
    CHECK(fcntl(mine, F_GETFD) != -1);
    close(mine);
}

/* Every pointer a call reads or writes through is refused misaligned with EINVAL, before
 * the call does anything: no record taken, no byte read, no request submitted or
 * completed. */
static void misaligned_pointers(void)
{
    _Alignas(16) char spare[64];
    HANDLE port = new_port();
    DWORD bytes = 1, key = 1;
    LPOVERLAPPED ovl = (LPOVERLAPPED)&bytes;
    OVERLAPPED block;
    memset(&block, 0, sizeof block);

    /* The dequeues: the record stays queued through every refusal. */
    CHECK(PostQueuedCompletionStatus(port, 5, 6, &block));
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, MISALIGNED(LPOVERLAPPED, spare),
                                          0),
               EINVAL);
    FAILS_WITH(!GetQueuedCompletionStatus(port, MISALIGNED(DWORD, spare), &key, &ovl, 0),
               EINVAL);
    CHECK(ovl == NULL);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, MISALIGNED(DWORD, spare), &ovl, 0),
               EINVAL);
    OVERLAPPED_ENTRY entry;
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, &entry, 1, MISALIGNED(DWORD, spare), 0, FALSE),
               EINVAL);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0));
    CHECK(bytes == 5 && key == 6 && ovl == &block);

    /* ReadFile and WriteFile: nothing read or written. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(write(sv[1], "ab", 2) == 2);
    char buf[4] = { 0 };
    DWORD done = 0;
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, MISALIGNED(DWORD, spare), NULL), EINVAL);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, &done, MISALIGNED(OVERLAPPED, spare)),
               EINVAL);
    FAILS_WITH(!WriteFile(sv[0], "x", 1, &done, MISALIGNED(OVERLAPPED, spare)), EINVAL);
    CHECK(buf[0] == 0);
    CHECK(ReadFile(sv[0], buf, sizeof buf, &done, NULL) && done == 2);
    CHECK(memcmp(buf, "ab", 2) == 0);
    int waiting = -1;
    CHECK(ioctl(sv[1], FIONREAD, &waiting) == 0 && waiting == 0);

    /* GetOverlappedResult. */
    block.Internal = 0;
    block.InternalHigh = 6;
    FAILS_WITH(!GetOverlappedResult(sv[0], MISALIGNED(OVERLAPPED, spare), &done, FALSE), EINVAL);
    FAILS_WITH(!GetOverlappedResult(sv[0], &block, MISALIGNED(DWORD, spare), FALSE), EINVAL);

    /* List I/O: a misaligned entry refuses the whole list, so the good one does not run. */
    char path[] = "/tmp/iocp-misaligned-XXXXXX";
    int file = mkstemp(path);
    CHECK(file >= 0);
    CHECK(unlink(path) == 0);
    CHECK(write(file, "data", 4) == 4);
    struct iocp_aiocb good;
    memset(&good, 0, sizeof good);
    char got[4] = { 0 };
    good.aio_fildes = file;
    good.aio_lio_opcode = IOCP_LIO_READ;
    good.aio_buf = got;
    good.aio_nbytes = sizeof got;
    struct iocp_aiocb *list[2] = { &good, MISALIGNED(struct iocp_aiocb, spare) };
    FAILS_WITH(iocp_lio_listio(IOCP_LIO_WAIT, list, 2, NULL) == -1, EINVAL);
    CHECK(got[0] == 0);
    CHECK(iocp_lio_listio(IOCP_LIO_WAIT, list, 1, NULL) == 0);
    CHECK(iocp_aio_return(&good) == 4 && memcmp(got, "data", 4) == 0);
    FAILS_WITH(iocp_aio_error(MISALIGNED(struct iocp_aiocb, spare)) == -1, EINVAL);
    FAILS_WITH(iocp_aio_return(MISALIGNED(struct iocp_aiocb, spare)) == -1, EINVAL);
    FAILS_WITH(iocp_aio_cancel(file, MISALIGNED(struct iocp_aiocb, spare)) == -1, EINVAL);
    close(file);

    /* The provider calls: a misaligned err is refused before the call does anything. */
    int err = 0;
    FAILS_WITH(WPUCreateSocketHandle(1, 0, MISALIGNED(int, spare)) == INVALID_SOCKET, EINVAL);
    SOCKET s = WPUCreateSocketHandle(1, 0, &err);
    CHECK(s != INVALID_SOCKET);
    CHECK(CreateIoCompletionPort(s, port, 8, 0) == port);
    memset(&block, 0, sizeof block);
    block.Internal = WSS_OPERATION_IN_PROGRESS;
    FAILS_WITH(WPUCompleteOverlappedRequest(s, &block, 0, 3, MISALIGNED(int, spare)) ==
                       SOCKET_ERROR,
               EINVAL);
    err = 0;
    FAILS_WITH(WPUCompleteOverlappedRequest(s, MISALIGNED(OVERLAPPED, spare), 0, 3, &err) ==
                       SOCKET_ERROR,
               EINVAL);
    CHECK(err == WSAEINVAL);
    CHECK(block.Internal == WSS_OPERATION_IN_PROGRESS);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), ETIMEDOUT);
    CHECK(WPUCompleteOverlappedRequest(s, &block, 0, 3, &err) == 0);
    DWORD flags = 0;
    FAILS_WITH(!WSPGetOverlappedResult(s, MISALIGNED(OVERLAPPED, spare), &bytes, FALSE, &flags,
                                       &err),
               EINVAL);
    FAILS_WITH(!WSPGetOverlappedResult(s, &block, MISALIGNED(DWORD, spare), FALSE, &flags, &err),
               EINVAL);
    FAILS_WITH(!WSPGetOverlappedResult(s, &block, &bytes, FALSE, MISALIGNED(DWORD, spare), &err),
               EINVAL);
    FAILS_WITH(!WSPGetOverlappedResult(s, &block, &bytes, FALSE, &flags, MISALIGNED(int, spare)),
               EINVAL);
    CHECK(WSPGetOverlappedResult(s, &block, &bytes, FALSE, &flags, &err) && bytes == 3);
    FAILS_WITH(WPUCloseSocketHandle(s, MISALIGNED(int, spare)) == SOCKET_ERROR, EINVAL);
    CHECK(WPUCloseSocketHandle(s, &err) == 0);

    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0));
    CHECK(bytes == 3 && key == 8 && ovl == &block);
    CHECK(CloseHandle(port));
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    create_and_associate();
    create_with_flags();
    post_and_get();
    get_multiple();
    post_many();
    waiter_rules();
    signals();
    io_arguments();
    list_io_arguments();
    providers_and_events();
    misaligned_pointers();
    puts("api_table: every row and its error cases: ok");
    return 0;
}
