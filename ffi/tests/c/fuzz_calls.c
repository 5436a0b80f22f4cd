/* Random call sequences through the whole C API, mostly with bad arguments: NULLs, closed,
 * foreign and negative handles, library handles where a descriptor is expected and the
 * other way round, out-of-range counts and modes, double closes, plain close() of library
 * handles, timeouts of 0 and 1 ms, unknown port flags. Nothing may crash (the suite also runs this under
 * AddressSanitizer and UndefinedBehaviorSanitizer), every failure must set an errno of the
 * API's, and the program's own descriptors must never be closed by the library.
 *
 * Usage: fuzz_calls [seeds [calls-per-seed [first-seed]]]   (default 20 x 1000 from 1)
 *
 * Only the C API's contract is respected: pointers are NULL or valid (or, now and then,
 * one byte off a valid place: misaligned, which every call refuses with EINVAL before it
 * reads or writes through it), and memory handed to a request (OVERLAPPED, buffers,
 * aiocbs) stays valid until it completes (it is static here, and reused only once
 * complete). */
#include "check.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

static uint64_t rng_state;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static uint32_t below(uint32_t n)
{
    return rnd() % n;
}

static int chance(uint32_t percent)
{
    return below(100) < percent;
}

/* `p`, or now and then `p` one byte off: misaligned for anything a call reads or writes. */
static void *skewed(void *p)
{
    return p && chance(3) ? MISALIGNED(void, p) : p;
}

/* ---- the program's own descriptors: never closed by the library ---- */

#define PAIRS 3
static int pairs[PAIRS][2]; /* [0] is used with the library, [1] is the peer */
static int files[2], pipefd[2], devnull;

/* Numbers of library handles the program closed itself and then reused. */
#define FOREIGN 64
static int foreign[FOREIGN];
static int foreign_count;

static void nonblocking(int fd)
{
    CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
}

static void open_pair(int i)
{
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, pairs[i]) == 0);
    nonblocking(pairs[i][0]);
    nonblocking(pairs[i][1]);
}

/* ---- library handles ---- */

enum kind { PORT, EVENT, PROVIDER, KINDS };
#define LIVE 8
static HANDLE live[KINDS][LIVE];
static int live_count[KINDS];
#define DEAD 32
static HANDLE dead[DEAD];
static int dead_next;

static void remember_dead(HANDLE h)
{
    dead[dead_next++ % DEAD] = h;
}

static void forget(HANDLE h)
{
    for (int k = 0; k < KINDS; k++) {
        for (int i = 0; i < live_count[k]; i++) {
            if (live[k][i] == h) {
                live[k][i] = live[k][--live_count[k]];
                remember_dead(h);
                return;
            }
        }
    }
}

static void add_live(enum kind k, HANDLE h)
{
    if (h > 0 && h != INVALID_SOCKET) {
        if (live_count[k] == LIVE) {
            HANDLE old = live[k][0];
            CHECK(CloseHandle(old));
            forget(old);
        }
        live[k][live_count[k]++] = h;
    }
}

static HANDLE any_live(void)
{
    int total = live_count[PORT] + live_count[EVENT] + live_count[PROVIDER];
    if (total == 0) {
        return 0;
    }
    int i = (int)below((uint32_t)total);
    for (int k = 0; k < KINDS; k++) {
        if (i < live_count[k]) {
            return live[k][i];
        }
        i -= live_count[k];
    }
    return 0;
}

static HANDLE live_of(enum kind k)
{
    return live_count[k] ? live[k][below((uint32_t)live_count[k])] : any_live();
}

static int own_fd(void)
{
    switch (below(6)) {
    case 0: return pairs[below(PAIRS)][0];
    case 1: return pairs[below(PAIRS)][1];
    case 2: return files[below(2)];
    case 3: return pipefd[below(2)];
    case 4: return devnull;
    default: return foreign_count ? foreign[below((uint32_t)foreign_count)] : devnull;
    }
}

static HANDLE junk(void)
{
    switch (below(6)) {
    case 0: return 0;
    case 1: return INVALID_HANDLE_VALUE;
    case 2: return -(HANDLE)below(1000) - 2;
    case 3: return (HANDLE)below(1 << 16);
    case 4: return dead[below(DEAD)];
    default: return 1 << 30;
    }
}

/* A handle for a call that wants one of `k`: usually right, often not. */
static HANDLE handle_for(enum kind k)
{
    uint32_t r = below(10);
    if (r < 5) {
        return live_of(k);
    }
    if (r < 7) {
        return any_live();
    }
    if (r < 8) {
        return own_fd();
    }
    return junk();
}

/* Junk for a descriptor argument. A number the program does not own (a closed handle's,
 * a random one) may be one the library opened for itself, such as the duplicate it keeps
 * of a caller's socket, and a call on it races with the library closing it (ThreadSanitizer
 * reported a blocking WriteFile's send on such a duplicate against the descriptor
 * watcher's close). That is the program's use of a number it does not own, so under
 * ThreadSanitizer the junk is only numbers that are never open. */
static int junk_fd(void)
{
#ifdef UNDER_TSAN
    switch (below(4)) {
    case 0: return INVALID_HANDLE_VALUE;
    case 1: return -(HANDLE)below(1000) - 2;
    case 2: return 1 << 30;
    default: return own_fd();
    }
#else
    return junk();
#endif
}

/* A descriptor for a call that wants one of the program's: usually right, often not. */
static int fd_for_io(void)
{
    uint32_t r = below(10);
    if (r < 6) {
        return own_fd();
    }
    if (r < 8) {
        return any_live();
    }
    return junk_fd();
}

/* ---- request memory: static, reused only once its request is complete ---- */

#define BLOCKS 2048
#define BUF 64
static OVERLAPPED blocks[BLOCKS];
static char block_bufs[BLOCKS][BUF];
static char scratch[BUF];

/* A block not in flight, zeroed, or NULL when none was found quickly. */
static LPOVERLAPPED free_block(void)
{
    for (int tries = 0; tries < 8; tries++) {
        LPOVERLAPPED o = &blocks[below(BLOCKS)];
        if (HasOverlappedIoCompleted(o)) {
            memset(o, 0, sizeof *o);
            if (chance(20)) {
                o->hEvent = handle_for(EVENT);
            }
            return o;
        }
    }
    return NULL;
}

static char *buf_of(LPOVERLAPPED o)
{
    return block_bufs[o - blocks];
}

#define AIOCBS 4096
static struct iocp_aiocb aiocbs[AIOCBS];
static char aio_bufs[AIOCBS][BUF];
static int aiocbs_used;
static struct iocp_aiocb wait_cbs[4];
static char wait_bufs[4][BUF];

static struct gmcs results[GMCS_NMAX + 8];

/* ---- the errno check ---- */

static long calls, failures;

static int allowed(int e)
{
    switch (e) {
    case EBADF: case EINVAL: case EALREADY: case ETIMEDOUT: case EAGAIN: case EINTR:
    case EBUSY: case EINPROGRESS: case ENOENT: case ECANCELED: case EIO:
    /* the I/O's own errors, through records and results */
    case EPIPE: case ECONNRESET: case ESPIPE: case EFBIG: case ENOTCONN: case EISDIR:
    case 10054:
        return 1;
    default:
        return 0;
    }
}

static void outcome(const char *call, int failed)
{
    int e = errno;
    calls++;
    if (!failed) {
        return;
    }
    failures++;
    if (e == 0 || !allowed(e)) {
        fprintf(stderr, "fuzz: %s failed with errno %d (%s), seed state %llu\n", call, e,
                strerror(e), (unsigned long long)rng_state);
        exit(1);
    }
}

#define CALL(failed_expr, name)                                                            \
    do {                                                                                   \
        errno = 0;                                                                         \
        int failed_ = (failed_expr);                                                       \
        outcome(name, failed_);                                                            \
    } while (0)

/* ---- one random call ---- */

static DWORD timeout_ms(void)
{
    return chance(85) ? 0 : 1;
}

static void one_call(void)
{
    DWORD bytes = 0, key = 0, flags = 0, done = 0;
    LPOVERLAPPED ovl = NULL;
    int err = 0;

    switch (below(30)) {
    case 0: {
        DWORD threads = chance(50) ? below(3) : (chance(50) ? INFINITE : rnd());
        HANDLE port;
        CALL((port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, chance(90) ? 0 : junk(), 0,
                                            threads)) == 0,
             "CreateIoCompletionPort(new)");
        add_live(PORT, port);
        break;
    }
    case 1:
        CALL(CreateIoCompletionPort(fd_for_io(), handle_for(PORT), rnd(), rnd()) == 0,
             "CreateIoCompletionPort(associate)");
        break;
    case 2:
    case 3: {
        int with = (int)below(8);
        CALL(!GetQueuedCompletionStatus(handle_for(PORT), with == 1 ? NULL : skewed(&bytes),
                                        with == 2 ? NULL : skewed(&key),
                                        with == 3 ? NULL : skewed(&ovl), timeout_ms()),
             "GetQueuedCompletionStatus");
        break;
    }
    case 4:
    case 5: {
        DWORD nmax = chance(80) ? below(64) + 1 : (chance(50) ? 0 : GMCS_NMAX + below(3));
        DWORD nmin = chance(80) ? below(nmax + 1) : nmax + 1;
        struct gmcs *out = chance(95) ? skewed(results) : NULL;
        int n;
        errno = 0;
        n = GetMultipleCompletionStatus(handle_for(PORT), nmin, nmax, timeout_ms(), out);
        if (n >= 0) {
            CHECK((DWORD)n <= nmax);
            if ((DWORD)n < nmin && !(errno == ETIMEDOUT || errno == EINTR)) {
                fprintf(stderr, "fuzz: GMCS returned %d < %u with errno %d\n", n, nmin, errno);
                exit(1);
            }
        }
        outcome("GetMultipleCompletionStatus", n == -1);
        break;
    }
    case 6:
    case 7:
        /* Posted values are never dereferenced: any pointer will do. */
        CALL(!PostQueuedCompletionStatus(handle_for(PORT), rnd(), rnd(),
                                         (LPOVERLAPPED)(uintptr_t)rnd()),
             "PostQueuedCompletionStatus");
        break;
    case 8:
    case 9: {
        int fd = fd_for_io();
        int write = (int)below(2);
        LPOVERLAPPED o = chance(60) ? free_block() : NULL;
        if (o && chance(50)) {
            o->Offset = below(1 << 16);
            o->OffsetHigh = chance(95) ? 0 : rnd();
        }
        char *buf = o ? buf_of(o) : scratch;
        DWORD n = chance(95) ? below(BUF + 1) : below(BUF + 1) + 1;
        if (chance(5)) {
            buf = NULL;
        }
        if (n > BUF && buf) {
            n = BUF;
        }
        DWORD *count = chance(90) ? skewed(&done) : NULL;
        o = skewed(o);
        if (write) {
            CALL(!WriteFile(fd, buf, n, count, o), "WriteFile");
        } else {
            CALL(!ReadFile(fd, buf, n, count, o), "ReadFile");
        }
        break;
    }
    case 10:
        CALL(!CancelIoEx(fd_for_io(), chance(50) ? NULL : &blocks[below(BLOCKS)]), "CancelIoEx");
        break;
    case 11: {
        LPOVERLAPPED o = chance(90) ? &blocks[below(BLOCKS)] : NULL;
        /* Waiting is only safe on a block that is done (or it might wait for ever). */
        BOOL wait = o && HasOverlappedIoCompleted(o) && chance(50);
        CALL(!GetOverlappedResult(fd_for_io(), skewed(o), chance(90) ? skewed(&bytes) : NULL,
                                  wait),
             "GetOverlappedResult");
        break;
    }
    case 12: {
        static const int modes[] = { IOCP_LIO_WAIT, IOCP_LIO_NOWAIT, LIO_NOWAIT_GMCS, 2, -1, 7 };
        int mode = modes[below(6)];
        int count = (int)below(5);
        int asynchronous = mode != IOCP_LIO_WAIT;
        if (asynchronous && aiocbs_used + count > AIOCBS) {
            break;
        }
        struct iocp_aiocb *list[4];
        for (int i = 0; i < count; i++) {
            struct iocp_aiocb *cb = asynchronous ? &aiocbs[aiocbs_used] : &wait_cbs[i];
            char *buf = asynchronous ? aio_bufs[aiocbs_used++] : wait_bufs[i];
            memset(cb, 0, sizeof *cb);
            cb->aio_fildes = chance(70) ? files[below(2)] : fd_for_io();
            cb->aio_lio_opcode = (int)below(4);
            cb->aio_offset = chance(95) ? (off_t)below(1 << 16) : -1;
            cb->aio_buf = chance(95) ? buf : NULL;
            cb->aio_nbytes = chance(95) ? below(BUF + 1) : ((size_t)1 << 31);
            if (chance(70)) {
                cb->aio_flag = AIO_EXTENDED;
                cb->aio_iocpfd = handle_for(PORT);
            }
            list[i] = chance(95) ? skewed(cb) : NULL;
        }
        int n = chance(90) ? count : (chance(50) ? -1 : 0);
        CALL(iocp_lio_listio(mode, count || chance(50) ? list : NULL, n, NULL) == -1,
             "iocp_lio_listio");
        break;
    }
    case 13: {
        struct iocp_aiocb *cb = aiocbs_used && chance(90) ? &aiocbs[below((uint32_t)aiocbs_used)]
                                                          : NULL;
        CALL(iocp_aio_error(skewed(cb)) == -1, "iocp_aio_error");
        CALL(iocp_aio_return(skewed(cb)) == -1 && errno != 0, "iocp_aio_return");
        break;
    }
    case 14: {
        struct iocp_aiocb *cb = aiocbs_used && chance(50) ? &aiocbs[below((uint32_t)aiocbs_used)]
                                                          : NULL;
        int fd = cb && chance(80) ? cb->aio_fildes : fd_for_io();
        CALL(iocp_aio_cancel(fd, skewed(cb)) == -1, "iocp_aio_cancel");
        break;
    }
    case 15: {
        SOCKET s;
        CALL((s = WPUCreateSocketHandle(rnd(), rnd(), chance(90) ? skewed(&err) : NULL)) ==
                 INVALID_SOCKET,
             "WPUCreateSocketHandle");
        add_live(PROVIDER, s);
        break;
    }
    case 16: {
        SOCKET s = handle_for(PROVIDER);
        int closed;
        CALL(closed = WPUCloseSocketHandle(s, chance(90) ? skewed(&err) : NULL) == SOCKET_ERROR,
             "WPUCloseSocketHandle");
        if (!closed) {
            forget(s);
        }
        break;
    }
    case 17:
    case 18: {
        /* A provider accepts a request on a free block, or completes one (or a block of
         * any state: the engine publishes whatever it is given). */
        LPOVERLAPPED o = chance(90) ? free_block() : NULL;
        if (o && chance(80)) {
            o->Internal = WSS_OPERATION_IN_PROGRESS;
            o->OffsetHigh = chance(80) ? 0 : 10054;
        }
        static const DWORD errors[] = { 0, 0, 0, ECONNRESET, 10054, WSS_OPERATION_IN_PROGRESS };
        CALL(WPUCompleteOverlappedRequest(handle_for(PROVIDER), skewed(o), errors[below(6)],
                                          rnd(),
                                          chance(90) ? skewed(&err) : NULL) == SOCKET_ERROR,
             "WPUCompleteOverlappedRequest");
        break;
    }
    case 19: {
        LPOVERLAPPED o = chance(90) ? &blocks[below(BLOCKS)] : NULL;
        BOOL wait = o && HasOverlappedIoCompleted(o) && chance(50);
        CALL(!WSPGetOverlappedResult(handle_for(PROVIDER), skewed(o),
                                     chance(90) ? skewed(&bytes) : NULL, wait,
                                     chance(90) ? skewed(&flags) : NULL,
                                     chance(90) ? skewed(&err) : NULL),
             "WSPGetOverlappedResult");
        break;
    }
    case 20: {
        HANDLE e;
        CALL((e = iocp_event_create((BOOL)below(2), (BOOL)below(2))) == 0, "iocp_event_create");
        add_live(EVENT, e);
        break;
    }
    case 21:
        if (chance(50)) {
            CALL(!iocp_event_set(handle_for(EVENT)), "iocp_event_set");
        } else {
            CALL(!iocp_event_reset(handle_for(EVENT)), "iocp_event_reset");
        }
        break;
    case 22:
        CALL(!iocp_event_wait(handle_for(EVENT), timeout_ms()), "iocp_event_wait");
        break;
    case 23: {
        HANDLE h = chance(70) ? any_live() : (chance(50) ? own_fd() : junk());
        int closed;
        CALL(closed = !CloseHandle(h), "CloseHandle");
        if (!closed) {
            forget(h);
        }
        break;
    }
    case 24: {
        /* An AIX program closes a library handle with plain close(), and maybe opens
         * something that gets the number. */
        HANDLE h = any_live();
        if (h > 0 && chance(30)) {
            CHECK(close(h) == 0);
            forget(h);
            if (chance(50) && foreign_count < FOREIGN) {
                CHECK(dup2(devnull, h) == h);
                foreign[foreign_count++] = h;
            }
        }
        break;
    }
    case 25: {
        /* Unknown flags must fail with EINVAL; good ones make a port. */
        DWORD threads = chance(50) ? below(3) : INFINITE;
        DWORD flags = chance(80) ? (chance(50) ? 0 : IOCP_PORT_FIFO) : rnd();
        HANDLE port;
        errno = 0;
        port = iocp_port_create(threads, flags);
        if ((flags & ~(DWORD)IOCP_PORT_FIFO) != 0 && (port != 0 || errno != EINVAL)) {
            fprintf(stderr, "fuzz: iocp_port_create(%u, %#x) gave %d, errno %d\n", threads,
                    flags, port, errno);
            exit(1);
        }
        outcome("iocp_port_create", port == 0);
        add_live(PORT, port);
        break;
    }
    case 26:
    case 27: {
        /* Pointers NULL, valid for `count` entries or misaligned; count 0, alertable and a
         * misaligned pointer are EINVAL (then `*removed` is checked only if it was given
         * aligned). */
        static OVERLAPPED_ENTRY entries[64];
        DWORD count = chance(95) ? below(64) + 1 : 0;
        DWORD removed = 99;
        DWORD *out = chance(95) ? &removed : NULL;
        DWORD *given = skewed(out);
        BOOL ok;
        errno = 0;
        ok = GetQueuedCompletionStatusEx(handle_for(PORT), chance(95) ? skewed(entries) : NULL,
                                         count, given, timeout_ms(), chance(95) ? FALSE : TRUE);
        if (out && given == out && (ok ? removed == 0 || removed > count : removed != 0)) {
            fprintf(stderr, "fuzz: GetQueuedCompletionStatusEx gave %d with %u removed of %u\n",
                    ok, removed, count);
            exit(1);
        }
        outcome("GetQueuedCompletionStatusEx", !ok);
        break;
    }
    case 28: {
        /* A batch of random records (errno values the check allows), NULL or valid. */
        static struct gmcs batch[80];
        DWORD n = chance(90) ? below(80) + 1 : 0;
        for (DWORD i = 0; i < n; i++) {
            DWORD errorno = chance(90) ? 0 : (chance(50) ? ECONNRESET : EPIPE);
            batch[i] = (struct gmcs){rnd(), rnd(), errorno, (LPOVERLAPPED)(uintptr_t)rnd()};
        }
        CALL(!iocp_post_many(handle_for(PORT), chance(95) ? skewed(batch) : NULL, n),
             "iocp_post_many");
        break;
    }
    default:
        /* Churn: drain a peer, or replace a socket pair (numbers come back). */
        if (chance(80)) {
            int p = (int)below(PAIRS);
            while (recv(pairs[p][1], scratch, BUF, MSG_DONTWAIT) > 0) {
            }
            while (recv(pairs[p][0], scratch, BUF, MSG_DONTWAIT) > 0) {
            }
        } else {
            int p = (int)below(PAIRS);
            close(pairs[p][0]);
            close(pairs[p][1]);
            open_pair(p);
        }
        break;
    }
}

static void check_own_descriptors(void)
{
    int own[] = { pairs[0][0], pairs[0][1], pairs[1][0], pairs[1][1], pairs[2][0],
                  pairs[2][1], files[0],    files[1],    pipefd[0],   pipefd[1], devnull };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        CHECK(fcntl(own[i], F_GETFD) != -1);
    }
    for (int i = 0; i < foreign_count; i++) {
        CHECK(fcntl(foreign[i], F_GETFD) != -1);
    }
}

static void run_seed(uint64_t seed, long count)
{
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < PAIRS; i++) {
        open_pair(i);
    }
    for (long i = 0; i < count; i++) {
        one_call();
    }
    check_own_descriptors();
    for (int k = 0; k < KINDS; k++) {
        while (live_count[k] > 0) {
            HANDLE h = live[k][0];
            CHECK(CloseHandle(h));
            forget(h);
        }
    }
    for (int i = 0; i < PAIRS; i++) {
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    for (int i = 0; i < foreign_count; i++) {
        close(foreign[i]);
    }
    foreign_count = 0;
}

int main(int argc, char **argv)
{
    long seeds = argc > 1 ? atol(argv[1]) : 20;
    long count = argc > 2 ? atol(argv[2]) : 1000;
    uint64_t first = argc > 3 ? (uint64_t)atoll(argv[3]) : 1;

    for (int i = 0; i < 2; i++) {
        char path[] = "/tmp/iocp-fuzz-XXXXXX";
        files[i] = mkstemp(path);
        CHECK(files[i] >= 0);
        unlink(path);
    }
    CHECK(pipe(pipefd) == 0);
    nonblocking(pipefd[0]);
    nonblocking(pipefd[1]);
    devnull = open("/dev/null", O_RDWR);
    CHECK(devnull >= 0);

    double start = now_ms();
    for (long s = 0; s < seeds; s++) {
        run_seed(first + (uint64_t)s, count);
    }
    printf("fuzz_calls: %ld seeds, %ld calls, %ld failures with a valid errno, %.0f ms\n", seeds,
           calls, failures, now_ms() - start);
    return 0;
}
