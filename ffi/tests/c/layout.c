/* The C view of the ABI structs and constants: sizes and offsets checked at compile time
 * against the numbers the Rust side asserts (ffi/src/layout.rs), and the header's
 * constants and macro checked at run time. Includes glibc's <aio.h> after iocp.h: the
 * two must not clash. */
#include "check.h"

#include <aio.h>
#include <stddef.h>

_Static_assert(sizeof(DWORD) == 4 && sizeof(HANDLE) == 4 && sizeof(BOOL) == 4, "widths");
_Static_assert(sizeof(SOCKET) == 4, "SOCKET");

_Static_assert(sizeof(OVERLAPPED) == 20, "sizeof OVERLAPPED");
_Static_assert(_Alignof(OVERLAPPED) == 4, "alignof OVERLAPPED");
_Static_assert(offsetof(OVERLAPPED, Internal) == 0, "Internal");
_Static_assert(offsetof(OVERLAPPED, InternalHigh) == 4, "InternalHigh");
_Static_assert(offsetof(OVERLAPPED, Offset) == 8, "Offset");
_Static_assert(offsetof(OVERLAPPED, OffsetHigh) == 12, "OffsetHigh");
_Static_assert(offsetof(OVERLAPPED, hEvent) == 16, "hEvent");
_Static_assert(sizeof(WSAOVERLAPPED) == sizeof(OVERLAPPED), "WSAOVERLAPPED");

_Static_assert(sizeof(struct gmcs) == 24, "sizeof struct gmcs");
_Static_assert(_Alignof(struct gmcs) == 8, "alignof struct gmcs");
_Static_assert(offsetof(struct gmcs, transfer_count) == 0, "transfer_count");
_Static_assert(offsetof(struct gmcs, completion_key) == 4, "completion_key");
_Static_assert(offsetof(struct gmcs, errorno) == 8, "errorno");
_Static_assert(offsetof(struct gmcs, overlapped) == 16, "overlapped");

_Static_assert(sizeof(OVERLAPPED_ENTRY) == 32, "sizeof OVERLAPPED_ENTRY");
_Static_assert(_Alignof(OVERLAPPED_ENTRY) == 8, "alignof OVERLAPPED_ENTRY");
_Static_assert(offsetof(OVERLAPPED_ENTRY, lpCompletionKey) == 0, "lpCompletionKey");
_Static_assert(offsetof(OVERLAPPED_ENTRY, lpOverlapped) == 8, "lpOverlapped");
_Static_assert(offsetof(OVERLAPPED_ENTRY, Internal) == 16, "Internal");
_Static_assert(offsetof(OVERLAPPED_ENTRY, dwNumberOfBytesTransferred) == 24,
               "dwNumberOfBytesTransferred");
_Static_assert(sizeof(((OVERLAPPED_ENTRY *)0)->lpCompletionKey) == sizeof(uintptr_t),
               "ULONG_PTR");

_Static_assert(sizeof(struct iocp_aiocb) == 56, "sizeof struct iocp_aiocb");
_Static_assert(_Alignof(struct iocp_aiocb) == 8, "alignof struct iocp_aiocb");
_Static_assert(offsetof(struct iocp_aiocb, aio_fildes) == 0, "aio_fildes");
_Static_assert(offsetof(struct iocp_aiocb, aio_offset) == 8, "aio_offset");
_Static_assert(offsetof(struct iocp_aiocb, aio_buf) == 16, "aio_buf");
_Static_assert(offsetof(struct iocp_aiocb, aio_nbytes) == 24, "aio_nbytes");
_Static_assert(offsetof(struct iocp_aiocb, aio_lio_opcode) == 32, "aio_lio_opcode");
_Static_assert(offsetof(struct iocp_aiocb, aio_flag) == 36, "aio_flag");
_Static_assert(offsetof(struct iocp_aiocb, aio_iocpfd) == 40, "aio_iocpfd");
/* 64 bits whatever _FILE_OFFSET_BITS makes of off_t, so that the layout is the library's. */
_Static_assert(sizeof(((struct iocp_aiocb *)0)->aio_offset) == sizeof(int64_t), "aio_offset");

_Static_assert(GMCS_NMAX == 4096, "GMCS_NMAX");
_Static_assert(WSS_OPERATION_IN_PROGRESS == 0x103, "WSS_OPERATION_IN_PROGRESS");
_Static_assert(IOCP_LIO_READ == 0 && IOCP_LIO_WRITE == 1 && IOCP_LIO_NOP == 2, "opcodes");
_Static_assert(IOCP_LIO_NOWAIT == 0 && IOCP_LIO_WAIT == 1 && LIO_NOWAIT_GMCS == 5, "modes");
_Static_assert(AIO_EXTENDED == 0x004, "AIO_EXTENDED");
/* iocp_aio_cancel answers with glibc's values, so <aio.h>'s names work too. */
_Static_assert(IOCP_AIO_CANCELED == AIO_CANCELED, "AIO_CANCELED");
_Static_assert(IOCP_AIO_NOTCANCELED == AIO_NOTCANCELED, "AIO_NOTCANCELED");
_Static_assert(IOCP_AIO_ALLDONE == AIO_ALLDONE, "AIO_ALLDONE");
/* The opcodes agree with glibc's too; the list modes do not (see iocp_lio_listio). */
_Static_assert(IOCP_LIO_READ == LIO_READ && IOCP_LIO_WRITE == LIO_WRITE, "glibc opcodes");
_Static_assert(IOCP_LIO_WAIT != LIO_WAIT, "glibc's LIO_WAIT is AIX's LIO_NOWAIT");
_Static_assert(WSAEINVAL == 10022 && WSA_IO_INCOMPLETE == 996 && WSA_IO_PENDING == 997,
               "Winsock errors");
_Static_assert(TRUE == 1 && FALSE == 0, "BOOL");

int main(void)
{
    /* Constants whose types matter, checked where C evaluates them. */
    DWORD infinite = INFINITE;
    HANDLE invalid = INVALID_HANDLE_VALUE;
    CHECK(infinite == 0xFFFFFFFFu);
    CHECK(invalid == -1);
    CHECK(INVALID_SOCKET == -1 && SOCKET_ERROR == -1);

    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    CHECK(HasOverlappedIoCompleted(&o));
    o.Internal = WSS_OPERATION_IN_PROGRESS;
    CHECK(!HasOverlappedIoCompleted(&o));
    LPOVERLAPPED lp = &o;
    lp->Internal = 0;
    CHECK(HasOverlappedIoCompleted(lp));
    puts("layout: ok");
    return 0;
}
