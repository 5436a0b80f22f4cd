/* Regular files: iocp_lio_listio in its three modes (LIO_NOWAIT_GMCS drained with
 * GetMultipleCompletionStatus), iocp_aio_error / iocp_aio_return / iocp_aio_cancel, and
 * overlapped ReadFile/WriteFile at an offset (the Windows extension). */
#include "check.h"

#include <pthread.h>
#include <unistd.h>

#define FILE_SIZE (64 * 1024)
#define BLOCK 4096
#define BLOCKS (FILE_SIZE / BLOCK)

static HANDLE port;
static int fd;
static unsigned char data[FILE_SIZE];

static void make_file(void)
{
    char path[] = "/tmp/iocp-files-XXXXXX";
    fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(unlink(path) == 0);
    for (int i = 0; i < FILE_SIZE; i++) {
        data[i] = (unsigned char)(i * 7 % 251);
    }
    CHECK(pwrite(fd, data, FILE_SIZE, 0) == FILE_SIZE);
}

/* A request on the test file, reporting to the port when `gmcs`. */
static void fill(struct iocp_aiocb *cb, int opcode, off_t offset, void *buf, size_t n, int gmcs)
{
    aiocb_for(cb, fd, opcode, offset, buf, n, gmcs ? port : 0);
}

/* Drains `n` records, checking each against the list it came from. */
static void drain_gmcs(struct iocp_aiocb *cbs, int n, DWORD expect_bytes, int seen[])
{
    struct gmcs results[BLOCKS * 2];
    int got = 0;
    while (got < n) {
        int k = GetMultipleCompletionStatus(port, 1, (DWORD)(n - got), 5000, results);
        CHECK(k > 0);
        for (int i = 0; i < k; i++) {
            struct iocp_aiocb *cb = (struct iocp_aiocb *)results[i].overlapped;
            CHECK(cb >= cbs && cb < cbs + n);
            CHECK(results[i].completion_key == 0);
            CHECK(results[i].errorno == 0 && results[i].transfer_count == expect_bytes);
            seen[cb - cbs]++;
        }
        got += k;
    }
}

static void list_io_gmcs(void)
{
    static unsigned char bufs[BLOCKS][BLOCK];
    struct iocp_aiocb cbs[BLOCKS], nop;
    struct iocp_aiocb *list[BLOCKS + 2];
    int seen[BLOCKS] = { 0 };
    for (int i = 0; i < BLOCKS; i++) {
        fill(&cbs[i], IOCP_LIO_READ, (off_t)i * BLOCK, bufs[i], BLOCK, 1);
        list[i] = &cbs[i];
    }
    /* NULL entries and NOPs are skipped. */
    fill(&nop, IOCP_LIO_NOP, 0, NULL, 0, 1);
    list[BLOCKS] = &nop;
    list[BLOCKS + 1] = NULL;
    CHECK(iocp_lio_listio(LIO_NOWAIT_GMCS, list, BLOCKS + 2, NULL) == 0);
    drain_gmcs(cbs, BLOCKS, BLOCK, seen);
    for (int i = 0; i < BLOCKS; i++) {
        CHECK(seen[i] == 1);
        CHECK(memcmp(bufs[i], data + i * BLOCK, BLOCK) == 0);
        /* Status only through struct gmcs: the aiocb was never updated. */
        CHECK(iocp_aio_error(&cbs[i]) == 0);
    }
    struct gmcs extra[1];
    errno = 0;
    CHECK(GetMultipleCompletionStatus(port, 0, 1, 0, extra) == 0);

    /* Writes, and a bad entry: the call fails with EIO, the others are queued, and the
     * bad one reports its error as a record. */
    static unsigned char out[2][BLOCK];
    memset(out[0], 0xAB, BLOCK);
    memset(out[1], 0xCD, BLOCK);
    struct iocp_aiocb w[3];
    fill(&w[0], IOCP_LIO_WRITE, FILE_SIZE, out[0], BLOCK, 1);
    fill(&w[1], 42, 0, out[1], BLOCK, 1);
    fill(&w[2], IOCP_LIO_WRITE, FILE_SIZE + BLOCK, out[1], BLOCK, 1);
    struct iocp_aiocb *wl[3] = { &w[0], &w[1], &w[2] };
    FAILS_WITH(iocp_lio_listio(LIO_NOWAIT_GMCS, wl, 3, NULL) == -1, EIO);
    struct gmcs results[3];
    int got = 0, bad = 0;
    while (got < 3) {
        int k = GetMultipleCompletionStatus(port, 1, 3, 5000, results + got);
        CHECK(k > 0);
        got += k;
    }
    for (int i = 0; i < 3; i++) {
        if (results[i].overlapped == (LPOVERLAPPED)&w[1]) {
            CHECK(results[i].errorno == EINVAL && results[i].transfer_count == 0);
            bad++;
        } else {
            CHECK(results[i].errorno == 0 && results[i].transfer_count == BLOCK);
        }
    }
    CHECK(bad == 1);
    unsigned char check[BLOCK];
    CHECK(pread(fd, check, BLOCK, FILE_SIZE) == BLOCK && memcmp(check, out[0], BLOCK) == 0);
    CHECK(pread(fd, check, BLOCK, FILE_SIZE + BLOCK) == BLOCK);
    CHECK(memcmp(check, out[1], BLOCK) == 0);
    CHECK(ftruncate(fd, FILE_SIZE) == 0);
}

static void list_io_wait_and_nowait(void)
{
    static unsigned char bufs[4][BLOCK];
    struct iocp_aiocb cbs[4];
    struct iocp_aiocb *list[4];

    /* LIO_WAIT: done on return, aiocbs updated, no records even with a port named. A read
     * at the end of the file is short. */
    for (int i = 0; i < 4; i++) {
        fill(&cbs[i], IOCP_LIO_READ, (off_t)i * BLOCK, bufs[i], BLOCK, 1);
        list[i] = &cbs[i];
    }
    cbs[3].aio_offset = FILE_SIZE - BLOCK / 2;
    CHECK(iocp_lio_listio(IOCP_LIO_WAIT, list, 4, NULL) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK(iocp_aio_error(&cbs[i]) == 0 && iocp_aio_return(&cbs[i]) == BLOCK);
        CHECK(memcmp(bufs[i], data + i * BLOCK, BLOCK) == 0);
    }
    CHECK(iocp_aio_error(&cbs[3]) == 0 && iocp_aio_return(&cbs[3]) == BLOCK / 2);
    struct gmcs results[4];
    CHECK(GetMultipleCompletionStatus(port, 0, 4, 0, results) == 0);

    /* LIO_NOWAIT without a port: poll the aiocbs. */
    for (int i = 0; i < 4; i++) {
        fill(&cbs[i], IOCP_LIO_READ, (off_t)(i + 4) * BLOCK, bufs[i], BLOCK, 0);
    }
    CHECK(iocp_lio_listio(IOCP_LIO_NOWAIT, list, 4, NULL) == 0);
    for (int i = 0; i < 4; i++) {
        double start = now_ms();
        while (iocp_aio_error(&cbs[i]) == EINPROGRESS) {
            FAILS_WITH(iocp_aio_return(&cbs[i]) == -1, EINVAL);
            CHECK(now_ms() - start < 5000.0);
            sleep_ms(1);
        }
        CHECK(iocp_aio_error(&cbs[i]) == 0 && iocp_aio_return(&cbs[i]) == BLOCK);
        CHECK(memcmp(bufs[i], data + (i + 4) * BLOCK, BLOCK) == 0);
    }

    /* LIO_NOWAIT with a port: the aiocb is updated and a record queued. */
    fill(&cbs[0], IOCP_LIO_READ, 0, bufs[0], 100, 1);
    CHECK(iocp_lio_listio(IOCP_LIO_NOWAIT, list, 1, NULL) == 0);
    CHECK(GetMultipleCompletionStatus(port, 1, 4, 5000, results) == 1);
    CHECK(results[0].overlapped == (LPOVERLAPPED)&cbs[0] && results[0].transfer_count == 100);
    CHECK(iocp_aio_error(&cbs[0]) == 0 && iocp_aio_return(&cbs[0]) == 100);

    /* A closed file in LIO_WAIT: EIO, the entry says EBADF. */
    fill(&cbs[0], IOCP_LIO_READ, 0, bufs[0], BLOCK, 0);
    cbs[0].aio_fildes = 1 << 20;
    FAILS_WITH(iocp_lio_listio(IOCP_LIO_WAIT, list, 1, NULL) == -1, EIO);
    CHECK(iocp_aio_error(&cbs[0]) == EBADF && iocp_aio_return(&cbs[0]) == -1);
}

struct gmcs_waiter {
    pthread_t thread;
    int count, err;
    double waited;
};

static void *wait_gmcs(void *arg)
{
    struct gmcs_waiter *w = arg;
    struct gmcs results[1];
    double start = now_ms();
    errno = 0;
    w->count = GetMultipleCompletionStatus(port, 1, 1, 300, results);
    w->err = errno;
    w->waited = now_ms() - start;
    return NULL;
}

static void cancellation(void)
{
    /* Many queued requests, then cancel them all: each completes exactly once, as a
     * record, with ECANCELED unless it ran first. */
    enum { N = 256 };
    static unsigned char bufs[N][512];
    static struct iocp_aiocb cbs[N];
    static struct iocp_aiocb *list[N];
    for (int i = 0; i < N; i++) {
        fill(&cbs[i], IOCP_LIO_READ, (off_t)(i % BLOCKS) * BLOCK, bufs[i], 512, 1);
        list[i] = &cbs[i];
    }
    CHECK(iocp_lio_listio(IOCP_LIO_NOWAIT, list, N, NULL) == 0);
    int answer = iocp_aio_cancel(fd, NULL);
    CHECK(answer == IOCP_AIO_CANCELED || answer == IOCP_AIO_NOTCANCELED ||
          answer == IOCP_AIO_ALLDONE);
    static int seen[N];
    struct gmcs results[64];
    int got = 0, cancelled = 0;
    while (got < N) {
        int k = GetMultipleCompletionStatus(port, 1, 64, 5000, results);
        CHECK(k > 0);
        for (int i = 0; i < k; i++) {
            struct iocp_aiocb *cb = (struct iocp_aiocb *)results[i].overlapped;
            CHECK(cb >= cbs && cb < cbs + N);
            seen[cb - cbs]++;
            if (results[i].errorno == ECANCELED) {
                cancelled++;
                CHECK(iocp_aio_error(cb) == ECANCELED);
            } else {
                CHECK(results[i].errorno == 0 && results[i].transfer_count == 512);
            }
        }
        got += k;
    }
    for (int i = 0; i < N; i++) {
        CHECK(seen[i] == 1);
    }
    CHECK(iocp_aio_cancel(fd, NULL) == IOCP_AIO_ALLDONE);
    CHECK(iocp_aio_cancel(fd, &cbs[0]) == IOCP_AIO_ALLDONE);
    printf("files: cancelled %d of %d queued requests\n", cancelled, N);

    /* Cancelling never ends a GMCS wait. */
    struct gmcs_waiter w;
    CHECK(pthread_create(&w.thread, NULL, wait_gmcs, &w) == 0);
    sleep_ms(50);
    CHECK(iocp_aio_cancel(fd, NULL) == IOCP_AIO_ALLDONE);
    CHECK(pthread_join(w.thread, NULL) == 0);
    CHECK(w.count == 0 && w.err == ETIMEDOUT && w.waited >= 300.0);
}

static void overlapped_file_io(void)
{
    unsigned char buf[BLOCK];
    DWORD done, bytes, key;
    LPOVERLAPPED ovl;
    OVERLAPPED o;

    CHECK(CreateIoCompletionPort(fd, port, 9, 0) == port);
    /* Always asynchronous, at the block's offset. */
    memset(&o, 0, sizeof o);
    o.Offset = 3 * BLOCK;
    FAILS_WITH(!ReadFile(fd, buf, BLOCK, &done, &o), EINPROGRESS);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000));
    CHECK(ovl == &o && key == 9 && bytes == BLOCK);
    CHECK(memcmp(buf, data + 3 * BLOCK, BLOCK) == 0);
    CHECK(GetOverlappedResult(fd, &o, &bytes, FALSE) && bytes == BLOCK);

    /* Past the end: 0 bytes. An offset beyond 2^63: EINVAL at once. */
    memset(&o, 0, sizeof o);
    o.OffsetHigh = 1;
    FAILS_WITH(!ReadFile(fd, buf, BLOCK, &done, &o), EINPROGRESS);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000) && bytes == 0);
    memset(&o, 0, sizeof o);
    o.OffsetHigh = 0x80000000u;
    FAILS_WITH(!ReadFile(fd, buf, BLOCK, &done, &o), EINVAL);

    /* A write, checked with pread. */
    memset(&o, 0, sizeof o);
    o.Offset = 100;
    FAILS_WITH(!WriteFile(fd, "overlapped", 10, &done, &o), EINPROGRESS);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000) && ovl == &o);
    CHECK(bytes == 10 && pread(fd, buf, 10, 100) == 10 && memcmp(buf, "overlapped", 10) == 0);
    CHECK(pwrite(fd, data + 100, 10, 100) == 10);

    /* Synchronous, from the file position. */
    CHECK(lseek(fd, 5, SEEK_SET) == 5);
    CHECK(ReadFile(fd, buf, 20, &done, NULL) && done == 20 && memcmp(buf, data + 5, 20) == 0);

    /* A file without a port: the event, or GetOverlappedResult's wait. */
    char path[] = "/tmp/iocp-files-XXXXXX";
    int other = mkstemp(path);
    CHECK(other >= 0);
    unlink(path);
    CHECK(pwrite(other, data, BLOCK, 0) == BLOCK);
    HANDLE event = iocp_event_create(TRUE, FALSE);
    memset(&o, 0, sizeof o);
    o.hEvent = event;
    FAILS_WITH(!ReadFile(other, buf, BLOCK, &done, &o), EINPROGRESS);
    CHECK(iocp_event_wait(event, 5000));
    CHECK(GetOverlappedResult(other, &o, &bytes, FALSE) && bytes == BLOCK);
    memset(&o, 0, sizeof o);
    FAILS_WITH(!ReadFile(other, buf, 10, &done, &o), EINPROGRESS);
    CHECK(GetOverlappedResult(other, &o, &bytes, TRUE) && bytes == 10);
    CHECK(CloseHandle(event));
    close(other);
}

int main(void)
{
    port = new_port();
    make_file();
    list_io_gmcs();
    list_io_wait_and_nowait();
    cancellation();
    overlapped_file_io();
    CHECK(CloseHandle(port));
    close(fd);
    puts("files: ok");
    return 0;
}
