/* The Winsock provider path: a provider makes socket handles with WPUCreateSocketHandle,
 * the application associates them with a port, and the provider completes its requests
 * with WPUCompleteOverlappedRequest; WSPGetOverlappedResult reads what it left behind. */
#include "check.h"

#include <pthread.h>

#define WSAECONNRESET 10054

static HANDLE port;

struct completer {
    SOCKET s;
    LPWSAOVERLAPPED ovl;
    DWORD bytes;
};

static void *complete_later(void *arg)
{
    struct completer *c = arg;
    int err = 0;
    sleep_ms(50);
    CHECK(WPUCompleteOverlappedRequest(c->s, c->ovl, 0, c->bytes, &err) == 0);
    return NULL;
}

static void through_a_port(void)
{
    int err = 0;
    SOCKET s = WPUCreateSocketHandle(1001, 0xC0FFEE, &err);
    CHECK(s != INVALID_SOCKET && s > 0);
    CHECK(CreateIoCompletionPort(s, port, 99, 0) == port);
    HANDLE other = new_port();
    FAILS_WITH(CreateIoCompletionPort(s, other, 1, 0) == 0, EALREADY);
    CHECK(CloseHandle(other));

    /* The provider accepts a request: it is pending. */
    WSAOVERLAPPED o;
    memset(&o, 0, sizeof o);
    o.Internal = WSS_OPERATION_IN_PROGRESS;
    o.Offset = 0x40; /* the request's flags */
    DWORD bytes = 1, flags = 1, key;
    LPOVERLAPPED ovl;
    err = 0;
    FAILS_WITH(!WSPGetOverlappedResult(s, &o, &bytes, FALSE, &flags, &err), EINPROGRESS);
    CHECK(err == WSA_IO_INCOMPLETE);
    CHECK(!HasOverlappedIoCompleted(&o));

    /* Completed: the count before the status, then a record to the port. */
    CHECK(WPUCompleteOverlappedRequest(s, &o, 0, 123, &err) == 0);
    CHECK(HasOverlappedIoCompleted(&o) && o.Internal == 0 && o.InternalHigh == 123);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000));
    CHECK(key == 99 && bytes == 123 && ovl == &o);
    CHECK(WSPGetOverlappedResult(s, &o, &bytes, FALSE, &flags, &err));
    CHECK(bytes == 123 && flags == 0x40);

    /* A failed request: the record carries the provider's error; WSPGetOverlappedResult
     * reports what the provider left in OffsetHigh. */
    memset(&o, 0, sizeof o);
    o.Internal = WSS_OPERATION_IN_PROGRESS;
    o.OffsetHigh = WSAECONNRESET;
    CHECK(WPUCompleteOverlappedRequest(s, &o, WSAECONNRESET, 7, &err) == 0);
    struct gmcs results[2];
    CHECK(GetMultipleCompletionStatus(port, 1, 2, 5000, results) == 1);
    CHECK(results[0].overlapped == &o && results[0].errorno == WSAECONNRESET);
    CHECK(results[0].transfer_count == 7 && results[0].completion_key == 99);
    err = 0;
    FAILS_WITH(!WSPGetOverlappedResult(s, &o, &bytes, FALSE, &flags, &err), EIO);
    CHECK(err == WSAECONNRESET && bytes == 7);

    /* With wait, WSPGetOverlappedResult sleeps until the provider completes. */
    memset(&o, 0, sizeof o);
    o.Internal = WSS_OPERATION_IN_PROGRESS;
    struct completer c = { s, &o, 55 };
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, complete_later, &c) == 0);
    CHECK(WSPGetOverlappedResult(s, &o, &bytes, TRUE, &flags, &err) && bytes == 55);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 5000) && ovl == &o);

    /* After close, completing into the handle fails. */
    CHECK(WPUCloseSocketHandle(s, &err) == 0);
    err = 0;
    FAILS_WITH(WPUCompleteOverlappedRequest(s, &o, 0, 1, &err) == SOCKET_ERROR, EBADF);
    CHECK(err == WSAEINVAL);
}

static void without_a_port(void)
{
    int err = 0;
    SOCKET s = WPUCreateSocketHandle(1002, 0, &err);
    CHECK(s != INVALID_SOCKET);
    HANDLE event = iocp_event_create(TRUE, FALSE);
    CHECK(event > 0);
    WSAOVERLAPPED o;
    memset(&o, 0, sizeof o);
    o.Internal = WSS_OPERATION_IN_PROGRESS;
    o.hEvent = event;
    CHECK(WPUCompleteOverlappedRequest(s, &o, 0, 9, &err) == 0);
    CHECK(iocp_event_wait(event, 0));
    DWORD bytes, flags;
    CHECK(WSPGetOverlappedResult(s, &o, &bytes, FALSE, &flags, &err) && bytes == 9);
    /* GetOverlappedResult reads the same block. */
    CHECK(GetOverlappedResult(s, &o, &bytes, FALSE) && bytes == 9);
    CHECK(CloseHandle(event));
    /* A completion naming a closed event is fine: nothing is set. */
    o.Internal = WSS_OPERATION_IN_PROGRESS;
    CHECK(WPUCompleteOverlappedRequest(s, &o, 0, 1, &err) == 0);
    CHECK(CloseHandle(s));
}

int main(void)
{
    port = new_port();
    through_a_port();
    without_a_port();
    CHECK(CloseHandle(port));
    puts("provider: ok");
    return 0;
}
