/* iocp.h after glibc's <aio.h>, whose names it must not clash with (layout.c includes
 * them the other way round), and twice; compiled as strict C99 and as C++11 by
 * tests/c_suite.rs. */
#include <aio.h>
#include "iocp.h"
#include "iocp.h"

int main(void)
{
    OVERLAPPED o = { 0, 0, 0, 0, 0 };
    struct gmcs results[1];
    struct iocp_aiocb cb;
    struct aiocb posix;
    (void)results;
    (void)cb;
    (void)posix;
    o.Internal = WSS_OPERATION_IN_PROGRESS;
    return HasOverlappedIoCompleted(&o) ? 1 : (AIO_CANCELED == IOCP_AIO_CANCELED ? 0 : 1);
}
