/* Many threads at once: producers posting while one thread drains with
 * GetMultipleCompletionStatus (every record once, in each producer's order, through the
 * ring's overflow when producers outrun the consumer); then several GetQueuedCompletionStatus
 * consumers sharing a port, stopped by records posted once every real one was taken; then
 * providers completing from several threads. (ordering.c checks the order itself.) */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

#define PRODUCERS 4
#define PER_PRODUCER 50000
#define CONSUMERS 4
#define STOP_KEY 0xFFFFu

static HANDLE port;

static void *produce(void *arg)
{
    DWORD id = (DWORD)(uintptr_t)arg;
    for (DWORD seq = 0; seq < PER_PRODUCER; seq++) {
        CHECK(PostQueuedCompletionStatus(port, seq, id, NULL));
    }
    return NULL;
}

static void producers_one_batched_consumer(void)
{
    port = new_port();
    pthread_t threads[PRODUCERS];
    start_threads(threads, PRODUCERS, produce);
    DWORD next[PRODUCERS] = { 0 };
    static struct gmcs results[GMCS_NMAX];
    long total = 0;
    while (total < (long)PRODUCERS * PER_PRODUCER) {
        int n = GetMultipleCompletionStatus(port, 1, GMCS_NMAX, 5000, results);
        CHECK(n > 0);
        for (int i = 0; i < n; i++) {
            DWORD id = results[i].completion_key;
            CHECK(id < PRODUCERS);
            CHECK(results[i].transfer_count == next[id]);
            next[id]++;
        }
        total += n;
    }
    for (int i = 0; i < PRODUCERS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        CHECK(next[i] == PER_PRODUCER);
    }
    CHECK(GetMultipleCompletionStatus(port, 0, 1, 0, results) == 0);
    CHECK(CloseHandle(port));
}

static atomic_uchar seen[PRODUCERS][PER_PRODUCER];
static atomic_long consumed;

static void *consume(void *arg)
{
    (void)arg;
    for (;;) {
        DWORD bytes, key;
        LPOVERLAPPED ovl;
        CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000));
        if (key == STOP_KEY) {
            return NULL;
        }
        CHECK(key < PRODUCERS && bytes < PER_PRODUCER);
        CHECK(atomic_fetch_add(&seen[key][bytes], 1) == 0);
        /* Records of different threads may come out in any order, so a stop record posted
         * after the producers were joined could overtake theirs. The thread that takes the
         * last real record stops the others instead: nothing real is left behind it. */
        if (atomic_fetch_add(&consumed, 1) + 1 == (long)PRODUCERS * PER_PRODUCER) {
            for (int i = 1; i < CONSUMERS; i++) {
                CHECK(PostQueuedCompletionStatus(port, 0, STOP_KEY, NULL));
            }
            return NULL;
        }
    }
}

static void producers_many_consumers(void)
{
    port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, CONSUMERS);
    CHECK(port > 0);
    pthread_t consumers[CONSUMERS], producers[PRODUCERS];
    start_threads(consumers, CONSUMERS, consume);
    start_threads(producers, PRODUCERS, produce);
    join_threads(producers, PRODUCERS);
    join_threads(consumers, CONSUMERS);
    CHECK(atomic_load(&consumed) == (long)PRODUCERS * PER_PRODUCER);
    /* Each stop record was taken by one consumer; nothing is left. */
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), ETIMEDOUT);
    CHECK(CloseHandle(port));
}

#define COMPLETIONS 5000

struct provider_thread {
    SOCKET s;
    WSAOVERLAPPED blocks[COMPLETIONS];
};

static struct provider_thread providers[PRODUCERS];

static void *complete_all(void *arg)
{
    struct provider_thread *p = arg;
    int err;
    for (int i = 0; i < COMPLETIONS; i++) {
        p->blocks[i].Internal = WSS_OPERATION_IN_PROGRESS;
        CHECK(WPUCompleteOverlappedRequest(p->s, &p->blocks[i], 0, (DWORD)i, &err) == 0);
    }
    return NULL;
}

static void providers_completing_from_threads(void)
{
    port = new_port();
    pthread_t threads[PRODUCERS];
    int err;
    for (int i = 0; i < PRODUCERS; i++) {
        providers[i].s = WPUCreateSocketHandle((DWORD)i, 0, &err);
        CHECK(providers[i].s != INVALID_SOCKET);
        CHECK(CreateIoCompletionPort(providers[i].s, port, (DWORD)i, 0) == port);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        CHECK(pthread_create(&threads[i], NULL, complete_all, &providers[i]) == 0);
    }
    int next[PRODUCERS] = { 0 };
    static struct gmcs results[512];
    int total = 0;
    while (total < PRODUCERS * COMPLETIONS) {
        int n = GetMultipleCompletionStatus(port, 1, 512, 5000, results);
        CHECK(n > 0);
        for (int i = 0; i < n; i++) {
            DWORD id = results[i].completion_key;
            CHECK(id < PRODUCERS);
            CHECK(results[i].overlapped == &providers[id].blocks[next[id]]);
            CHECK(results[i].transfer_count == (DWORD)next[id]);
            CHECK(HasOverlappedIoCompleted(results[i].overlapped));
            next[id]++;
        }
        total += n;
    }
    for (int i = 0; i < PRODUCERS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        CHECK(WPUCloseSocketHandle(providers[i].s, &err) == 0);
    }
    CHECK(CloseHandle(port));
}

int main(void)
{
    double start = now_ms();
    producers_one_batched_consumer();
    producers_many_consumers();
    providers_completing_from_threads();
    printf("threads: %d producers x %d records, batched and GQCS consumers, providers: ok "
           "(%.0f ms)\n",
           PRODUCERS, PER_PRODUCER, now_ms() - start);
    return 0;
}
