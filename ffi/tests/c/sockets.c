/* Sockets through ReadFile/WriteFile and the port: a socketpair and a TCP connection on
 * 127.0.0.1; requests done at once (no record), requests completing later (a record),
 * synchronous calls, cancellation, end of file, zero-byte reads, and a socket without a
 * port whose requests complete through their hEvent and GetOverlappedResult. */
#include "check.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

static HANDLE port;

static void expect_no_record(void)
{
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 0), ETIMEDOUT);
}

static void socketpair_through_the_port(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(CreateIoCompletionPort(sv[0], port, 5, 0) == port);

    char buf[64] = { 0 };
    DWORD done = 1, bytes, key;
    LPOVERLAPPED ovl;
    OVERLAPPED o, o2, o3, o4;
    memset(&o, 0, sizeof o);

    /* Nothing to read: it completes later, through the port. (A read of exactly what
       comes: a short one would have the cache below say the socket is drained.) */
    FAILS_WITH(!ReadFile(sv[0], buf, 5, &done, &o), EINPROGRESS);
    CHECK(!HasOverlappedIoCompleted(&o));
    FAILS_WITH(!GetOverlappedResult(sv[0], &o, &bytes, FALSE), EINPROGRESS);
    CHECK(WriteFile(sv[1], "hello", 5, &done, NULL) && done == 5);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000));
    CHECK(bytes == 5 && key == 5 && ovl == &o);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK(HasOverlappedIoCompleted(&o) && o.Internal == 0 && o.InternalHigh == 5);
    CHECK(GetOverlappedResult(sv[0], &o, &bytes, FALSE) && bytes == 5);

    /* Done at once: TRUE with the count, the block filled in, no record. */
    memset(&o2, 0, sizeof o2);
    CHECK(WriteFile(sv[0], "world", 5, &done, &o2) && done == 5);
    CHECK(HasOverlappedIoCompleted(&o2) && o2.InternalHigh == 5);
    expect_no_record();
    CHECK(ReadFile(sv[1], buf, 5, &done, NULL) && done == 5 && memcmp(buf, "world", 5) == 0);
    CHECK(WriteFile(sv[1], "again", 5, &done, NULL));
    memset(&o2, 0, sizeof o2);
    CHECK(ReadFile(sv[0], buf, sizeof buf, NULL, &o2));
    CHECK(o2.InternalHigh == 5 && memcmp(buf, "again", 5) == 0);
    expect_no_record();

    /* That read came back short (5 of 64): the readiness cache has the socket drained, so
       the next read waits for the socket's readable event, even with data already there,
       and completes through the port. */
    CHECK(WriteFile(sv[1], "later", 5, &done, NULL));
    memset(&o2, 0, sizeof o2);
    memset(buf, 0, sizeof buf);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, NULL, &o2), EINPROGRESS);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000));
    CHECK(bytes == 5 && key == 5 && ovl == &o2 && memcmp(buf, "later", 5) == 0);

    /* Cancellation: one request, then all of them; each completes once with ECANCELED. */
    memset(&o3, 0, sizeof o3);
    memset(&o4, 0, sizeof o4);
    char b3[8], b4[8];
    FAILS_WITH(!ReadFile(sv[0], b3, sizeof b3, NULL, &o3), EINPROGRESS);
    CHECK(CancelIoEx(sv[0], &o3));
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000), ECANCELED);
    CHECK(ovl == &o3 && key == 5 && bytes == 0 && o3.Internal == ECANCELED);
    FAILS_WITH(!GetOverlappedResult(sv[0], &o3, &bytes, FALSE), ECANCELED);
    FAILS_WITH(!ReadFile(sv[0], b3, sizeof b3, NULL, &o3), EINPROGRESS);
    FAILS_WITH(!ReadFile(sv[0], b4, sizeof b4, NULL, &o4), EINPROGRESS);
    CHECK(CancelIoEx(sv[0], NULL));
    FAILS_WITH(!CancelIoEx(sv[0], NULL), ENOENT);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000), ECANCELED);
    CHECK(ovl == &o3);
    FAILS_WITH(!GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000), ECANCELED);
    CHECK(ovl == &o4);
    expect_no_record();

    /* Synchronous calls: a non-blocking socket with nothing to read fails with EAGAIN; a
     * write to a closed peer fails with EPIPE and raises no SIGPIPE. */
    CHECK(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
    FAILS_WITH(!ReadFile(sv[1], buf, sizeof buf, &done, NULL), EAGAIN);

    /* End of file: a pending read completes with 0 bytes when the peer closes. */
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, NULL, &o), EINPROGRESS);
    close(sv[1]);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000));
    CHECK(ovl == &o && bytes == 0);
    FAILS_WITH(!WriteFile(sv[0], "x", 1, &done, NULL), EPIPE);
    close(sv[0]);
}

static void tcp_on_loopback(void)
{
    int server, client;
    tcp_pair(&server, &client);
    CHECK(CreateIoCompletionPort(server, port, 8, 0) == port);

    /* Many round trips: each read is pending until the client writes. */
    for (int round = 0; round < 100; round++) {
        char in[16] = { 0 }, out[16];
        OVERLAPPED o;
        memset(&o, 0, sizeof o);
        DWORD done, bytes, key;
        LPOVERLAPPED ovl;
        BOOL now = ReadFile(server, in, sizeof in, &done, &o);
        CHECK(!now && errno == EINPROGRESS);
        int n = snprintf(out, sizeof out, "ping %d", round);
        CHECK(WriteFile(client, out, (DWORD)n, &done, NULL) && done == (DWORD)n);
        CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000));
        CHECK(ovl == &o && key == 8 && bytes == (DWORD)n && memcmp(in, out, (size_t)n) == 0);
        /* The reply goes out at once. */
        memset(&o, 0, sizeof o);
        CHECK(WriteFile(server, "pong", 4, &done, &o) && done == 4);
        CHECK(ReadFile(client, in, 4, &done, NULL) && done == 4 && memcmp(in, "pong", 4) == 0);
    }
    expect_no_record();
    close(client);
    close(server);
}

/* Zero-byte reads (NULL, 0): an idle connection waits for its readable event holding no
   buffer; the read completes with 0 bytes and takes none of them, and a read with a
   buffer then gets them at once. */
static void zero_byte_reads(void)
{
    int server, client;
    tcp_pair(&server, &client);
    CHECK(CreateIoCompletionPort(server, port, 9, 0) == port);
    for (int round = 0; round < 3; round++) {
        OVERLAPPED o;
        memset(&o, 0, sizeof o);
        DWORD done = 7, bytes, key;
        LPOVERLAPPED ovl;
        FAILS_WITH(!ReadFile(server, NULL, 0, &done, &o), EINPROGRESS);
        expect_no_record();
        char out[16], in[16];
        int n = snprintf(out, sizeof out, "idle %d", round);
        CHECK(WriteFile(client, out, (DWORD)n, &done, NULL) && done == (DWORD)n);
        CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000));
        CHECK(ovl == &o && key == 9 && bytes == 0 && o.Internal == 0 && o.InternalHigh == 0);
        /* The bytes are all there: done at once, no record. */
        memset(&o, 0, sizeof o);
        CHECK(ReadFile(server, in, sizeof in, &done, &o) && done == (DWORD)n);
        CHECK(memcmp(in, out, (size_t)n) == 0);
        expect_no_record();
    }
    /* With bytes queued. The read before came back short, so the first zero-byte read is
       done at once or waits for the readable event the bytes raised, as the reactor has
       seen it or not; the second is done at once, since 0 bytes asked for and 0 got does
       not say the socket is drained. Neither takes a byte. */
    DWORD done;
    char in[4];
    CHECK(WriteFile(client, "abc", 3, &done, NULL) && done == 3);
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    BOOL now = ReadFile(server, NULL, 0, &done, &o);
    if (!now) {
        CHECK(errno == EINPROGRESS);
        DWORD bytes, key;
        LPOVERLAPPED ovl;
        CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000) && ovl == &o);
        done = bytes;
    }
    CHECK(done == 0);
    memset(&o, 0, sizeof o);
    CHECK(ReadFile(server, NULL, 0, &done, &o) && done == 0);
    memset(&o, 0, sizeof o);
    CHECK(ReadFile(server, in, sizeof in, &done, &o) && done == 3 && memcmp(in, "abc", 3) == 0);
    expect_no_record();
    close(client);
    close(server);
}

struct delayed_write {
    int fd;
    long delay_ms;
};

static void *write_later(void *arg)
{
    struct delayed_write *w = arg;
    sleep_ms(w->delay_ms);
    DWORD done;
    CHECK(WriteFile(w->fd, "late", 4, &done, NULL) && done == 4);
    return NULL;
}

static void without_a_port(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    HANDLE event = iocp_event_create(FALSE, FALSE);
    CHECK(event > 0);
    char buf[16];
    DWORD done, bytes;
    OVERLAPPED o;

    /* The completion sets the block's event instead of queuing a record. */
    memset(&o, 0, sizeof o);
    o.hEvent = event;
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, &done, &o), EINPROGRESS);
    FAILS_WITH(!iocp_event_wait(event, 0), ETIMEDOUT);
    CHECK(WriteFile(sv[1], "event", 5, &done, NULL));
    CHECK(iocp_event_wait(event, 5000));
    CHECK(GetOverlappedResult(sv[0], &o, &bytes, FALSE) && bytes == 5);
    CHECK(memcmp(buf, "event", 5) == 0);

    /* GetOverlappedResult with wait sleeps until the request is done, no event needed. */
    memset(&o, 0, sizeof o);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, &done, &o), EINPROGRESS);
    pthread_t writer;
    struct delayed_write w = { sv[1], 50 };
    CHECK(pthread_create(&writer, NULL, write_later, &w) == 0);
    CHECK(GetOverlappedResult(sv[0], &o, &bytes, TRUE) && bytes == 4);
    CHECK(memcmp(buf, "late", 4) == 0);
    CHECK(pthread_join(writer, NULL) == 0);

    /* Associating is refused while requests are in flight without a port. */
    memset(&o, 0, sizeof o);
    FAILS_WITH(!ReadFile(sv[0], buf, sizeof buf, &done, &o), EINPROGRESS);
    FAILS_WITH(CreateIoCompletionPort(sv[0], port, 1, 0) == 0, EBUSY);
    CHECK(CancelIoEx(sv[0], &o));
    FAILS_WITH(!GetOverlappedResult(sv[0], &o, &bytes, TRUE), ECANCELED);
    CHECK(CreateIoCompletionPort(sv[0], port, 1, 0) == port);

    CHECK(CloseHandle(event));
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    port = new_port();
    socketpair_through_the_port();
    tcp_on_loopback();
    zero_byte_reads();
    without_a_port();
    CHECK(CloseHandle(port));
    puts("sockets: ok");
    return 0;
}
