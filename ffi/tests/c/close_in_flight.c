/* Closing a descriptor with requests in flight (ffi/README.md, "Closing a socket or file with
 * requests in flight"): each request completes once, with ECANCELED, within the documented
 * bound (100 ms; the checks allow IOCP_TEST_CLOSE_MS, 500 by default, for a loaded machine,
 * and print what they measured); the peer of a closed socket sees the close; and no request
 * reads from or writes to whatever gets the number next, also when the program associates
 * that number again at once. */
#include "check.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#define FILE_SIZE (64 * 4096)
#define BLOCKS 64

static HANDLE port;
static double bound_ms = 500;

static void expect_no_record(void)
{
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), ETIMEDOUT);
}

/* Waits up to 5 s for the peer to see end of file; returns the milliseconds it took from
 * `since`. */
static double peer_sees_close(int peer, double since)
{
    struct pollfd p = { .fd = peer, .events = POLLIN };
    CHECK(poll(&p, 1, 5000) == 1);
    char c;
    CHECK(recv(peer, &c, 1, MSG_DONTWAIT) == 0);
    return now_ms() - since;
}

/* The one record for `o`, which must be a cancellation; returns when it came, in ms from
 * `since`. */
static double expect_cancelled(const OVERLAPPED *o, DWORD key, double since)
{
    DWORD bytes = 99, got_key;
    LPOVERLAPPED ovl;
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &got_key, &ovl, 5000), ECANCELED);
    double took = now_ms() - since;
    CHECK(ovl == o && got_key == key && bytes == 0);
    CHECK(o->Internal == ECANCELED && o->InternalHigh == 0);
    return took;
}

/* A socket's number closed and handed at once to another connection, which the program
 * associates again and reads: the old request ends with ECANCELED, its buffer untouched;
 * the old peer sees the close; every byte of the new connection reaches the new request
 * and nothing of the old one does. */
static void socket_number_reused_at_once(void)
{
    int a, a_peer, b, b_peer;
    tcp_pair(&a, &a_peer);
    tcp_pair(&b, &b_peer);
    CHECK(CreateIoCompletionPort(a, port, 1, 0) == port);

    char old_buf[64];
    memset(old_buf, 0xAA, sizeof old_buf);
    OVERLAPPED o_old;
    memset(&o_old, 0, sizeof o_old);
    FAILS_WITH(!ReadFile(a, old_buf, sizeof old_buf, NULL, &o_old), EINPROGRESS);

    /* dup2 closes the number's socket and gives the number to `b` in one step, as a
     * close() followed by an accept() that gets the lowest free number would. */
    double closed = now_ms();
    CHECK(dup2(b, a) == a);
    close(b);
    double cancelled = expect_cancelled(&o_old, 1, closed);
    double seen = peer_sees_close(a_peer, closed);
    fprintf(stderr, "close_in_flight: socket reused: ECANCELED after %.1f ms, peer saw the "
                    "close after %.1f ms\n", cancelled, seen);
    CHECK(cancelled < bound_ms && seen < bound_ms);
    for (size_t i = 0; i < sizeof old_buf; i++) {
        CHECK((unsigned char)old_buf[i] == 0xAA);
    }
    /* What the old peer sends now goes nowhere near the number's new connection. */
    (void)send(a_peer, "stale", 5, MSG_NOSIGNAL);

    /* The number again: associated anew, read; only the new peer's bytes arrive. */
    CHECK(CreateIoCompletionPort(a, port, 2, 0) == port);
    char new_buf[64];
    memset(new_buf, 0, sizeof new_buf);
    OVERLAPPED o_new;
    memset(&o_new, 0, sizeof o_new);
    DWORD done = 0;
    BOOL at_once = ReadFile(a, new_buf, sizeof new_buf, &done, &o_new);
    CHECK(at_once || errno == EINPROGRESS);
    CHECK(send(b_peer, "fresh bytes", 11, 0) == 11);
    if (!at_once) {
        DWORD bytes, key;
        LPOVERLAPPED ovl;
        CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000));
        CHECK(ovl == &o_new && key == 2);
        done = bytes;
    }
    CHECK(done == 11 && memcmp(new_buf, "fresh bytes", 11) == 0);
    /* And the program's writes on the number reach the new peer only. */
    CHECK(WriteFile(a, "reply", 5, &done, NULL) && done == 5);
    char reply[8];
    CHECK(recv(b_peer, reply, sizeof reply, 0) == 5 && memcmp(reply, "reply", 5) == 0);
    expect_no_record();
    close(a);
    close(a_peer);
    close(b_peer);
}

/* A plain close() with reads in flight: each ends with ECANCELED, the peer sees the close,
 * and the number, never used again, is named by no association. */
static void socket_closed(void)
{
    int c, c_peer;
    tcp_pair(&c, &c_peer);
    CHECK(CreateIoCompletionPort(c, port, 3, 0) == port);
    char b1[16], b2[16];
    OVERLAPPED o1, o2;
    memset(&o1, 0, sizeof o1);
    memset(&o2, 0, sizeof o2);
    FAILS_WITH(!ReadFile(c, b1, sizeof b1, NULL, &o1), EINPROGRESS);
    FAILS_WITH(!ReadFile(c, b2, sizeof b2, NULL, &o2), EINPROGRESS);
    double closed = now_ms();
    close(c);
    double first = expect_cancelled(&o1, 3, closed);
    double second = expect_cancelled(&o2, 3, closed);
    double seen = peer_sees_close(c_peer, closed);
    fprintf(stderr, "close_in_flight: socket closed: ECANCELED after %.1f and %.1f ms, peer "
                    "saw the close after %.1f ms\n", first, second, seen);
    CHECK(second < bound_ms && seen < bound_ms);
    FAILS_WITH(!CancelIoEx(c, NULL), ENOENT);
    expect_no_record();
    close(c_peer);
}

struct waiter {
    int fd;
    OVERLAPPED *o;
    BOOL ok;
    int err;
    double done_at;
};

static void *wait_for_result(void *arg)
{
    struct waiter *w = arg;
    DWORD bytes;
    w->ok = GetOverlappedResult(w->fd, w->o, &bytes, TRUE);
    w->err = errno;
    w->done_at = now_ms();
    return NULL;
}

/* A socket without a port: a thread in GetOverlappedResult(..., TRUE) returns once the
 * program closes the socket under it. */
static void waiter_released_by_close(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    char buf[8];
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, NULL, &o), EINPROGRESS);
    struct waiter w = { .fd = sv[0], .o = &o };
    pthread_t t;
    CHECK(pthread_create(&t, NULL, wait_for_result, &w) == 0);
    sleep_ms(20);
    double closed = now_ms();
    close(sv[0]);
    CHECK(pthread_join(t, NULL) == 0);
    fprintf(stderr, "close_in_flight: GetOverlappedResult(TRUE) returned %.1f ms after the "
                    "close\n", w.done_at - closed);
    CHECK(!w.ok && w.err == ECANCELED && o.Internal == ECANCELED);
    CHECK(w.done_at - closed < bound_ms);
    close(sv[1]);
}

/* Every request on a file whose number the program hands to another file at once reads
 * the file it was made for, or ends with ECANCELED: never a byte of the new file. Both the
 * overlapped path (ReadFile) and lio_listio. */
static void file_number_reused_at_once(void)
{
    static char bufs[2 * BLOCKS][4096];
    memset(bufs, 0, sizeof bufs);
    int f = scratch_file('o', FILE_SIZE);
    int g = scratch_file('n', FILE_SIZE);
    CHECK(CreateIoCompletionPort(f, port, 4, 0) == port);

    static OVERLAPPED o[BLOCKS];
    static struct iocp_aiocb cbs[BLOCKS];
    struct iocp_aiocb *list[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        memset(&o[i], 0, sizeof o[i]);
        o[i].Offset = (DWORD)(i * 4096);
        FAILS_WITH(!ReadFile(f, bufs[i], 4096, NULL, &o[i]), EINPROGRESS);
        aiocb_for(&cbs[i], f, IOCP_LIO_READ, (off_t)i * 4096, bufs[BLOCKS + i], 4096, port);
        list[i] = &cbs[i];
    }
    CHECK(iocp_lio_listio(LIO_NOWAIT_GMCS, list, BLOCKS, NULL) == 0);
    CHECK(dup2(g, f) == f);
    close(g);

    int seen[2 * BLOCKS] = { 0 };
    int cancelled = 0;
    for (int got = 0; got < 2 * BLOCKS; got++) {
        DWORD bytes, key;
        LPOVERLAPPED ovl;
        BOOL ok = GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000);
        CHECK(ok || errno == ECANCELED);
        CHECK(ovl != NULL);
        int i = -1;
        for (int k = 0; k < BLOCKS; k++) {
            if (ovl == &o[k]) {
                i = k;
            } else if (ovl == (LPOVERLAPPED)&cbs[k]) {
                i = BLOCKS + k;
            }
        }
        CHECK(i >= 0 && !seen[i]);
        seen[i] = 1;
        if (!ok) {
            cancelled++;
            CHECK(bytes == 0);
            continue;
        }
        CHECK(bytes == 4096);
        for (int j = 0; j < 4096; j++) {
            CHECK(bufs[i][j] == 'o');
        }
    }
    fprintf(stderr, "close_in_flight: file reused: %d of %d requests cancelled, the rest read "
                    "the original file\n", cancelled, 2 * BLOCKS);
    expect_no_record();
    /* The number, now the new file, reads the new file. */
    char c;
    CHECK(pread(f, &c, 1, 0) == 1 && c == 'n');
    close(f);
}

int main(void)
{
    const char *env = getenv("IOCP_TEST_CLOSE_MS");
    if (env != NULL) {
        bound_ms = atof(env);
    }
    port = new_port();
    socket_number_reused_at_once();
    socket_closed();
    waiter_released_by_close();
    file_number_reused_at_once();
    CHECK(CloseHandle(port));
    return 0;
}
