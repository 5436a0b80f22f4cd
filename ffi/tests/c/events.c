/* Events and GetOverlappedResult: manual- and auto-reset semantics, waiters in threads,
 * timeouts that are never early, and an OVERLAPPED's hEvent set by a completion. */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

struct event_waiter {
    HANDLE event;
    pthread_t thread;
    atomic_int woke;
};

static void *wait_event(void *arg)
{
    struct event_waiter *w = arg;
    if (iocp_event_wait(w->event, 5000)) {
        atomic_store(&w->woke, 1);
    }
    return NULL;
}

static void start(struct event_waiter *w, HANDLE event)
{
    w->event = event;
    atomic_store(&w->woke, 0);
    CHECK(pthread_create(&w->thread, NULL, wait_event, w) == 0);
}

static void manual_reset(void)
{
    HANDLE e = iocp_event_create(TRUE, TRUE);
    CHECK(e > 0);
    /* Signalled at creation, and it stays so. */
    CHECK(iocp_event_wait(e, 0) && iocp_event_wait(e, 0));
    CHECK(iocp_event_reset(e));
    FAILS_WITH(!iocp_event_wait(e, 0), ETIMEDOUT);
    /* One set releases every waiter. */
    struct event_waiter w[3];
    for (int i = 0; i < 3; i++) {
        start(&w[i], e);
    }
    sleep_ms(50);
    CHECK(iocp_event_set(e));
    for (int i = 0; i < 3; i++) {
        CHECK(pthread_join(w[i].thread, NULL) == 0);
        CHECK(atomic_load(&w[i].woke));
    }
    CHECK(iocp_event_wait(e, 0));
    CHECK(CloseHandle(e));
    FAILS_WITH(!CloseHandle(e), EBADF);
    FAILS_WITH(!iocp_event_wait(e, 0), EBADF);
    FAILS_WITH(!iocp_event_reset(e), EBADF);
}

static void auto_reset(void)
{
    HANDLE e = iocp_event_create(FALSE, FALSE);
    CHECK(e > 0);
    double begin = now_ms();
    FAILS_WITH(!iocp_event_wait(e, 40), ETIMEDOUT);
    CHECK(now_ms() - begin >= 40.0);
    /* One set releases one waiter and resets. */
    CHECK(iocp_event_set(e));
    CHECK(iocp_event_wait(e, 0));
    FAILS_WITH(!iocp_event_wait(e, 0), ETIMEDOUT);
    struct event_waiter a, b;
    start(&a, e);
    start(&b, e);
    sleep_ms(50);
    CHECK(iocp_event_set(e));
    sleep_ms(50);
    CHECK(atomic_load(&a.woke) + atomic_load(&b.woke) == 1);
    CHECK(iocp_event_set(e));
    CHECK(pthread_join(a.thread, NULL) == 0 && pthread_join(b.thread, NULL) == 0);
    CHECK(atomic_load(&a.woke) && atomic_load(&b.woke));
    CHECK(CloseHandle(e));
}

static void overlapped_results(void)
{
    /* A provider request completing into an event (GetOverlappedResult needs no fd). */
    int err;
    SOCKET s = WPUCreateSocketHandle(1, 0, &err);
    CHECK(s != INVALID_SOCKET);
    HANDLE e = iocp_event_create(FALSE, FALSE);
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    o.hEvent = e;
    o.Internal = WSS_OPERATION_IN_PROGRESS;
    DWORD bytes = 77;
    FAILS_WITH(!GetOverlappedResult(-1, &o, &bytes, FALSE), EINPROGRESS);
    CHECK(WPUCompleteOverlappedRequest(s, &o, 0, 4096, &err) == 0);
    CHECK(iocp_event_wait(e, 1000));
    CHECK(GetOverlappedResult(-1, &o, &bytes, TRUE) && bytes == 4096);
    /* A failed one: FALSE, errno its error, the count still reported. */
    o.Internal = WSS_OPERATION_IN_PROGRESS;
    CHECK(WPUCompleteOverlappedRequest(s, &o, ETIMEDOUT, 12, &err) == 0);
    CHECK(iocp_event_wait(e, 1000));
    FAILS_WITH(!GetOverlappedResult(-1, &o, &bytes, TRUE), ETIMEDOUT);
    CHECK(bytes == 12);
    CHECK(CloseHandle(e));
    CHECK(CloseHandle(s));
}

int main(void)
{
    manual_reset();
    auto_reset();
    overlapped_results();
    puts("events: ok");
    return 0;
}
