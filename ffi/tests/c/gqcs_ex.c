/* GetQueuedCompletionStatusEx: the batched, non-exclusive dequeue of worker pools. Its
 * argument checks, runs of 1..count records with each record's errno in Internal, the
 * timeout and signals, several threads in it at once taking every record exactly once, the
 * EBUSY rule against a GetMultipleCompletionStatus wait either way, and close waking it. */
#include "check.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

static void arguments(void)
{
    HANDLE port = new_port();
    OVERLAPPED_ENTRY entries[4];
    DWORD removed = 99;
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, NULL, 4, &removed, 0, FALSE), EINVAL);
    CHECK(removed == 0);
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 4, NULL, 0, FALSE), EINVAL);
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 0, &removed, 0, FALSE), EINVAL);
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 4, &removed, 0, TRUE), EINVAL);
    /* A misaligned array: EINVAL, and the record stays queued. */
    CHECK(PostQueuedCompletionStatus(port, 5, 9, NULL));
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, MISALIGNED(OVERLAPPED_ENTRY, entries), 1,
                                            &removed, 0, FALSE),
               EINVAL);
    CHECK(GetQueuedCompletionStatusEx(port, entries, 4, &removed, 0, FALSE));
    CHECK(removed == 1 && entries[0].lpCompletionKey == 9);
    /* Not a port: 0, a closed number, one of the program's descriptors, an event. */
    FAILS_WITH(!GetQueuedCompletionStatusEx(0, entries, 4, &removed, 0, FALSE), EBADF);
    FAILS_WITH(!GetQueuedCompletionStatusEx(-1, entries, 4, &removed, 10, FALSE), EBADF);
    FAILS_WITH(!GetQueuedCompletionStatusEx(STDERR_FILENO, entries, 4, &removed, 10, FALSE),
               EBADF);
    HANDLE event = iocp_event_create(TRUE, FALSE);
    CHECK(event > 0);
    FAILS_WITH(!GetQueuedCompletionStatusEx(event, entries, 4, &removed, 10, FALSE), EBADF);
    CHECK(CloseHandle(event));
    CHECK(CloseHandle(port));
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 4, &removed, 0, FALSE), EBADF);
}

static void runs_and_errors(void)
{
    HANDLE port = new_port();
    OVERLAPPED_ENTRY entries[4];
    DWORD removed = 0;
    OVERLAPPED blocks[10];
    for (DWORD i = 0; i < 10; i++) {
        CHECK(PostQueuedCompletionStatus(port, 100 + i, i, &blocks[i]));
    }
    /* At most `count` at a time, in order. */
    CHECK(GetQueuedCompletionStatusEx(port, entries, 4, &removed, INFINITE, FALSE));
    CHECK(removed == 4);
    for (DWORD i = 0; i < 4; i++) {
        CHECK(entries[i].lpCompletionKey == i && entries[i].lpOverlapped == &blocks[i]);
        CHECK(entries[i].dwNumberOfBytesTransferred == 100 + i && entries[i].Internal == 0);
    }
    OVERLAPPED_ENTRY more[16];
    CHECK(GetQueuedCompletionStatusEx(port, more, 16, &removed, 0, FALSE) && removed == 6);
    CHECK(more[0].lpCompletionKey == 4 && more[5].lpCompletionKey == 9);

    /* A failed request is an entry like any other: its errno in Internal. */
    int err;
    SOCKET s = WPUCreateSocketHandle(1, 0, &err);
    CHECK(s != INVALID_SOCKET);
    CHECK(CreateIoCompletionPort(s, port, 77, 0) == port);
    WSAOVERLAPPED request;
    memset(&request, 0, sizeof request);
    request.Internal = WSS_OPERATION_IN_PROGRESS;
    CHECK(WPUCompleteOverlappedRequest(s, &request, ECONNRESET, 3, &err) == 0);
    CHECK(PostQueuedCompletionStatus(port, 4, 78, NULL));
    CHECK(GetQueuedCompletionStatusEx(port, entries, 4, &removed, 1000, FALSE) && removed == 2);
    CHECK(entries[0].lpCompletionKey == 77 && entries[0].lpOverlapped == &request);
    CHECK(entries[0].Internal == ECONNRESET && entries[0].dwNumberOfBytesTransferred == 3);
    CHECK(entries[1].lpCompletionKey == 78 && entries[1].Internal == 0);
    CHECK(WPUCloseSocketHandle(s, &err) == 0);

    /* Nothing ready: a poll fails at once, a wait after its timeout, never early. */
    removed = 99;
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 4, &removed, 0, FALSE), ETIMEDOUT);
    CHECK(removed == 0);
    double start = now_ms();
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 4, &removed, 50, FALSE), ETIMEDOUT);
    CHECK(now_ms() - start >= 50 && removed == 0);
    CHECK(CloseHandle(port));
}

static void on_signal(int sig)
{
    (void)sig;
}

static void *signal_soon(void *arg)
{
    sleep_ms(50);
    pthread_kill(*(pthread_t *)arg, SIGUSR1);
    return NULL;
}

static void signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    HANDLE port = new_port();
    OVERLAPPED_ENTRY entries[4];
    DWORD removed;
    pthread_t self = pthread_self(), killer;
    CHECK(pthread_create(&killer, NULL, signal_soon, &self) == 0);
    /* As GetQueuedCompletionStatus: a signal handler ends the wait with EAGAIN (AIX). */
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 4, &removed, 10000, FALSE), EAGAIN);
    CHECK(pthread_join(killer, NULL) == 0);
    signal(SIGUSR1, SIG_DFL);
    CHECK(CloseHandle(port));
}

/* A thread in GetQueuedCompletionStatusEx or GetMultipleCompletionStatus. */
struct waiter {
    HANDLE port;
    int gmcs;
    DWORD timeout;
    pthread_t thread;
    int got;
    int err;
};

static void *wait_on_port(void *arg)
{
    struct waiter *w = arg;
    if (w->gmcs) {
        struct gmcs results[4];
        w->got = GetMultipleCompletionStatus(w->port, 1, 4, w->timeout, results);
    } else {
        OVERLAPPED_ENTRY entries[4];
        DWORD removed = 0;
        w->got = GetQueuedCompletionStatusEx(w->port, entries, 4, &removed, w->timeout, FALSE)
                     ? (int)removed
                     : -1;
    }
    w->err = errno;
    return NULL;
}

static void start_waiter(struct waiter *w, HANDLE port, int gmcs, DWORD timeout)
{
    w->port = port;
    w->gmcs = gmcs;
    w->timeout = timeout;
    CHECK(pthread_create(&w->thread, NULL, wait_on_port, w) == 0);
    sleep_ms(100);
}

static void busy_rule(void)
{
    HANDLE port = new_port();
    OVERLAPPED_ENTRY entries[4];
    DWORD removed;
    struct gmcs results[4];
    struct waiter w;

    /* While a GMCS waits, the batched dequeue fails with EBUSY, polling or not. */
    start_waiter(&w, port, 1, INFINITE);
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 4, &removed, 0, FALSE), EBUSY);
    FAILS_WITH(!GetQueuedCompletionStatusEx(port, entries, 4, &removed, 10, FALSE), EBUSY);
    CHECK(PostQueuedCompletionStatus(port, 1, 1, NULL));
    CHECK(pthread_join(w.thread, NULL) == 0);
    CHECK(w.got == 1);

    /* While it waits, a GMCS fails with EBUSY. */
    start_waiter(&w, port, 0, INFINITE);
    FAILS_WITH(GetMultipleCompletionStatus(port, 1, 4, 10, results) == -1, EBUSY);
    CHECK(PostQueuedCompletionStatus(port, 2, 2, NULL));
    CHECK(pthread_join(w.thread, NULL) == 0);
    CHECK(w.got == 1);

    /* Closing the port wakes it with EBADF. */
    start_waiter(&w, port, 0, INFINITE);
    CHECK(CloseHandle(port));
    CHECK(pthread_join(w.thread, NULL) == 0);
    CHECK(w.got == -1 && w.err == EBADF);
}

#define PRODUCERS 2
#define PER_PRODUCER 50000
#define CONSUMERS 4
#define TOTAL ((long)PRODUCERS * PER_PRODUCER)

static HANDLE pool_port;
static atomic_uchar seen[PRODUCERS][PER_PRODUCER];
static atomic_long consumed;
static atomic_long batches;

static void *produce(void *arg)
{
    DWORD id = (DWORD)(uintptr_t)arg;
    for (DWORD seq = 0; seq < PER_PRODUCER; seq++) {
        CHECK(PostQueuedCompletionStatus(pool_port, seq, id, NULL));
    }
    return NULL;
}

static void *consume(void *arg)
{
    (void)arg;
    OVERLAPPED_ENTRY entries[16];
    while (atomic_load(&consumed) < TOTAL) {
        DWORD removed = 0;
        if (!GetQueuedCompletionStatusEx(pool_port, entries, 16, &removed, 20, FALSE)) {
            CHECK(errno == ETIMEDOUT && removed == 0);
            continue;
        }
        CHECK(removed >= 1 && removed <= 16);
        DWORD last[PRODUCERS] = { 0 };
        int any[PRODUCERS] = { 0 };
        for (DWORD i = 0; i < removed; i++) {
            uintptr_t id = entries[i].lpCompletionKey;
            DWORD seq = entries[i].dwNumberOfBytesTransferred;
            CHECK(id < PRODUCERS && seq < PER_PRODUCER && entries[i].Internal == 0);
            /* One run is in each producer's order. */
            CHECK(!any[id] || seq > last[id]);
            any[id] = 1;
            last[id] = seq;
            CHECK(atomic_fetch_add(&seen[id][seq], 1) == 0);
        }
        atomic_fetch_add(&consumed, (long)removed);
        atomic_fetch_add(&batches, 1);
    }
    return NULL;
}

static void worker_pool(void)
{
    pool_port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, CONSUMERS);
    CHECK(pool_port > 0);
    pthread_t consumers[CONSUMERS], producers[PRODUCERS];
    start_threads(consumers, CONSUMERS, consume);
    start_threads(producers, PRODUCERS, produce);
    join_threads(producers, PRODUCERS);
    join_threads(consumers, CONSUMERS);
    CHECK(atomic_load(&consumed) == TOTAL);
    OVERLAPPED_ENTRY entries[1];
    DWORD removed;
    FAILS_WITH(!GetQueuedCompletionStatusEx(pool_port, entries, 1, &removed, 0, FALSE),
               ETIMEDOUT);
    CHECK(CloseHandle(pool_port));
}

int main(void)
{
    arguments();
    runs_and_errors();
    signals();
    busy_rule();
    worker_pool();
    printf("gqcs_ex: %d threads took %ld records in %ld runs: ok\n", CONSUMERS, TOTAL,
           atomic_load(&batches));
    return 0;
}
