/* The order records come out in.
 *
 * A port from CreateIoCompletionPort, or iocp_port_create without flags, keeps each posting
 * thread's order (a record per PostQueuedCompletionStatus or a batch per iocp_post_many)
 * and no order between threads: several producers and several consumers in
 * GetQueuedCompletionStatus and GetQueuedCompletionStatusEx take every record exactly once,
 * each producer's in the order it posted them. A port made with IOCP_PORT_FIFO keeps the
 * order the posts happened in, across threads, as Windows and AIX do: the records of
 * joined threads come out before a record posted after the join, and stop records posted
 * after joining the producers stop the consumers only once every real record is taken. */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- one FIFO order across threads ---- */

#define ROUNDS 300
#define ROUND_PRODUCERS 3
#define MARKER_KEY 0xFFFEu

struct round_producer {
    HANDLE port;
    DWORD id, count;
};

static void *post_round(void *arg)
{
    struct round_producer *p = arg;
    for (DWORD seq = 0; seq < p->count; seq++) {
        CHECK(PostQueuedCompletionStatus(p->port, seq, p->id, NULL));
    }
    return NULL;
}

/* Takes up to `max` records from `port` into `keys` and `seqs` with the dequeue named by
 * `how` (0: GetMultipleCompletionStatus, 1: GetQueuedCompletionStatusEx, 2:
 * GetQueuedCompletionStatus), waiting for at least one. */
static int take(HANDLE port, int how, DWORD max, DWORD *keys, DWORD *seqs)
{
    static _Thread_local struct gmcs results[GMCS_NMAX];
    static _Thread_local OVERLAPPED_ENTRY entries[GMCS_NMAX];
    if (max > GMCS_NMAX) {
        max = GMCS_NMAX;
    }
    switch (how) {
    case 0: {
        int n = GetMultipleCompletionStatus(port, 1, max, 5000, results);
        CHECK(n > 0);
        for (int i = 0; i < n; i++) {
            keys[i] = results[i].completion_key;
            seqs[i] = results[i].transfer_count;
        }
        return n;
    }
    case 1: {
        DWORD removed = 0;
        CHECK(GetQueuedCompletionStatusEx(port, entries, max, &removed, 5000, FALSE));
        CHECK(removed >= 1 && removed <= max);
        for (DWORD i = 0; i < removed; i++) {
            keys[i] = (DWORD)entries[i].lpCompletionKey;
            seqs[i] = entries[i].dwNumberOfBytesTransferred;
        }
        return (int)removed;
    }
    default: {
        LPOVERLAPPED ovl;
        CHECK(GetQueuedCompletionStatus(port, &seqs[0], &keys[0], &ovl, 5000));
        return 1;
    }
    }
}

/* Each round, 1 to 3 threads post, the main thread joins them and posts a marker: the
 * marker comes out after every record of theirs, whose own orders hold. Some rounds post
 * more than the port's ring holds, so records go through the overflow too. */
static void fifo_records_of_joined_threads_come_first(void)
{
    HANDLE port = iocp_port_create(0, IOCP_PORT_FIFO);
    CHECK(port > 0);
    static DWORD keys[GMCS_NMAX], seqs[GMCS_NMAX];
    struct round_producer producers[ROUND_PRODUCERS];
    pthread_t threads[ROUND_PRODUCERS];
    for (int round = 0; round < ROUNDS; round++) {
        int count = 1 + round % ROUND_PRODUCERS;
        DWORD per = round % 50 == 49 ? 3000 : 1 + (DWORD)(round * 37 % 200);
        for (int i = 0; i < count; i++) {
            producers[i] = (struct round_producer){ port, (DWORD)i, per };
            CHECK(pthread_create(&threads[i], NULL, post_round, &producers[i]) == 0);
        }
        for (int i = 0; i < count; i++) {
            CHECK(pthread_join(threads[i], NULL) == 0);
        }
        CHECK(PostQueuedCompletionStatus(port, (DWORD)round, MARKER_KEY, NULL));

        DWORD next[ROUND_PRODUCERS] = { 0 };
        DWORD total = 0, expected = (DWORD)count * per;
        int marker = 0;
        while (!marker) {
            int n = take(port, round % 3, expected + 1 - total, keys, seqs);
            for (int i = 0; i < n; i++) {
                CHECK(!marker);
                if (keys[i] == MARKER_KEY) {
                    if (total != expected) {
                        fprintf(stderr, "round %d: the marker came after %u of %u records\n",
                                round, total, expected);
                        exit(1);
                    }
                    CHECK(seqs[i] == (DWORD)round);
                    marker = 1;
                    continue;
                }
                CHECK(keys[i] < (DWORD)count && seqs[i] == next[keys[i]]);
                next[keys[i]]++;
                total++;
            }
        }
        DWORD bytes, key;
        LPOVERLAPPED ovl;
        FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), ETIMEDOUT);
    }
    CHECK(CloseHandle(port));
}

/* ---- several producers, several consumers ---- */

#define PRODUCERS 4
#define PER_PRODUCER 40000
#define CONSUMERS 4
#define TOTAL ((long)PRODUCERS * PER_PRODUCER)
#define STOP_KEY 0xFFFFu
#define BATCH 16

static HANDLE port;
static atomic_uchar seen[PRODUCERS][PER_PRODUCER];
static atomic_long consumed;
static atomic_long stops_taken;
/* Per producer, the highest sequence number a dequeue that has returned took (-1: none). */
static atomic_long returned_max[PRODUCERS];

/* Even producers post one record per call, odd ones batches of 1 to 64 records with
 * iocp_post_many. */
static void *produce(void *arg)
{
    DWORD id = (DWORD)(uintptr_t)arg;
    if (id % 2 == 0) {
        for (DWORD seq = 0; seq < PER_PRODUCER; seq++) {
            CHECK(PostQueuedCompletionStatus(port, seq, id, NULL));
        }
        return NULL;
    }
    struct gmcs batch[64];
    for (DWORD seq = 0, size = 1; seq < PER_PRODUCER; size = size % 64 + 1) {
        DWORD n = PER_PRODUCER - seq < size ? PER_PRODUCER - seq : size;
        for (DWORD i = 0; i < n; i++) {
            batch[i] = (struct gmcs){seq + i, id, 0, NULL};
        }
        CHECK(iocp_post_many(port, batch, n));
        seq += n;
    }
    return NULL;
}

/* Checks one dequeue's records and counts them; returns how many stop records it took.
 *
 * The port hands records out one dequeue at a time, so a dequeue that began after another
 * returned takes records queued behind that one's. Per producer, then, a record must come
 * after every record that dequeues returned before this one began had taken (`before`, read
 * before the call), and one dequeue's records must be in order among themselves. */
static int check_taken(const long before[PRODUCERS], int n, const DWORD *keys,
                       const DWORD *seqs)
{
    long last[PRODUCERS];
    memcpy(last, before, sizeof last);
    int stops = 0;
    for (int i = 0; i < n; i++) {
        if (keys[i] == STOP_KEY) {
            stops++;
            continue;
        }
        DWORD id = keys[i], seq = seqs[i];
        CHECK(id < PRODUCERS && seq < PER_PRODUCER);
        if ((long)seq <= last[id]) {
            fprintf(stderr, "producer %u: record %u came out after record %ld\n", id, seq,
                    last[id]);
            exit(1);
        }
        last[id] = seq;
        CHECK(atomic_fetch_add(&seen[id][seq], 1) == 0);
    }
    for (int id = 0; id < PRODUCERS; id++) {
        long cur = atomic_load(&returned_max[id]);
        while (cur < last[id] &&
               !atomic_compare_exchange_weak(&returned_max[id], &cur, last[id])) {
        }
    }
    return stops;
}

/* Consumers with an even index call GetQueuedCompletionStatus, the others
 * GetQueuedCompletionStatusEx for up to BATCH records. The one that takes the last real
 * record posts a stop record for each other consumer: only then is every real record out
 * of the queue. A GetQueuedCompletionStatusEx that takes several stop records keeps one and
 * posts the rest again. */
static void *consume(void *arg)
{
    int batched = (int)(uintptr_t)arg % 2;
    DWORD keys[BATCH], seqs[BATCH];
    for (;;) {
        long before[PRODUCERS];
        for (int id = 0; id < PRODUCERS; id++) {
            before[id] = atomic_load(&returned_max[id]);
        }
        int n = take(port, batched ? 1 : 2, BATCH, keys, seqs);
        int stops = check_taken(before, n, keys, seqs);
        if (stops > 0) {
            CHECK(stops == n);
            atomic_fetch_add(&stops_taken, 1);
            for (int i = 1; i < stops; i++) {
                CHECK(PostQueuedCompletionStatus(port, 0, STOP_KEY, NULL));
            }
            return NULL;
        }
        if (atomic_fetch_add(&consumed, n) + n == TOTAL) {
            for (int i = 1; i < CONSUMERS; i++) {
                CHECK(PostQueuedCompletionStatus(port, 0, STOP_KEY, NULL));
            }
            return NULL;
        }
    }
}

static void per_thread_order_many_consumers(HANDLE made)
{
    port = made;
    CHECK(port > 0);
    memset(seen, 0, sizeof seen);
    atomic_store(&consumed, 0);
    atomic_store(&stops_taken, 0);
    for (int id = 0; id < PRODUCERS; id++) {
        atomic_store(&returned_max[id], -1);
    }
    pthread_t consumers[CONSUMERS], producers[PRODUCERS];
    start_threads(consumers, CONSUMERS, consume);
    start_threads(producers, PRODUCERS, produce);
    join_threads(producers, PRODUCERS);
    join_threads(consumers, CONSUMERS);
    CHECK(atomic_load(&consumed) == TOTAL);
    CHECK(atomic_load(&stops_taken) == CONSUMERS - 1);
    for (int id = 0; id < PRODUCERS; id++) {
        CHECK(atomic_load(&returned_max[id]) == PER_PRODUCER - 1);
    }
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), ETIMEDOUT);
    CHECK(CloseHandle(port));
}

/* ---- the Windows and AIX shutdown pattern, on a FIFO port ---- */

static void *consume_until_stop(void *arg)
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
        atomic_fetch_add(&consumed, 1);
    }
}

/* Join the producers, then post one stop record per consumer: on a FIFO port the stop
 * records queue behind every record the producers posted, so no consumer stops early. */
static void fifo_stop_records_after_join(void)
{
    port = iocp_port_create(CONSUMERS, IOCP_PORT_FIFO);
    CHECK(port > 0);
    memset(seen, 0, sizeof seen);
    atomic_store(&consumed, 0);
    pthread_t consumers[CONSUMERS], producers[PRODUCERS];
    start_threads(consumers, CONSUMERS, consume_until_stop);
    start_threads(producers, PRODUCERS, produce);
    join_threads(producers, PRODUCERS);
    for (int i = 0; i < CONSUMERS; i++) {
        CHECK(PostQueuedCompletionStatus(port, 0, STOP_KEY, NULL));
    }
    join_threads(consumers, CONSUMERS);
    CHECK(atomic_load(&consumed) == TOTAL);
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), ETIMEDOUT);
    CHECK(CloseHandle(port));
}

int main(void)
{
    double start = now_ms();
    fifo_records_of_joined_threads_come_first();
    per_thread_order_many_consumers(CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0,
                                                           CONSUMERS));
    per_thread_order_many_consumers(iocp_port_create(CONSUMERS, 0));
    fifo_stop_records_after_join();
    printf("ordering: %d FIFO rounds, %d producers x %d records to %d consumers: ok "
           "(%.0f ms)\n",
           ROUNDS, PRODUCERS, PER_PRODUCER, CONSUMERS, now_ms() - start);
    return 0;
}
