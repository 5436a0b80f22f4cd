/* fork(): a child of a process whose file threads are running (and busy, on another thread,
 * at the fork) and whose port waits for a socket does I/O of its own — iocp_lio_listio,
 * overlapped WriteFile on a file the parent associated with the port, LIO_NOWAIT_GMCS,
 * reads of new sockets associated with the parent's port and of a socket with no port —
 * and the parent keeps doing its own meanwhile and after. The library's threads stay in
 * the parent, and its io_uring rings and epoll instances are shared with the child: before
 * the library told the processes apart, the child waited for ever for the file threads,
 * both processes did on io_uring, and the child's sockets went into the parent's poll set,
 * where the parent took their events (named by addresses in the child's memory). Each
 * process checks every byte; the parent gives the child 30 s, then kills it.
 *
 * Skipped under ThreadSanitizer, whose runtime ends a child that starts threads after a
 * multi-threaded fork. */
#include "check.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#define BLOCK 4096
#define ROUNDS 200

static unsigned char pattern[BLOCK];

/* Writes `BLOCK` bytes made from `seed` at `offset` with one LIO_WAIT list, reads them back
 * with another, and checks them. */
static void write_and_read_back(int fd, off_t offset, int seed)
{
    unsigned char out[BLOCK], in[BLOCK];
    for (int i = 0; i < BLOCK; i++) {
        out[i] = (unsigned char)(pattern[i] + seed);
    }
    struct iocp_aiocb cb;
    struct iocp_aiocb *list[1] = {&cb};
    aiocb_for(&cb, fd, IOCP_LIO_WRITE, offset, out, BLOCK, 0);
    CHECK(iocp_lio_listio(IOCP_LIO_WAIT, list, 1, NULL) == 0);
    CHECK(iocp_aio_return(&cb) == BLOCK);
    memset(in, 0, sizeof in);
    aiocb_for(&cb, fd, IOCP_LIO_READ, offset, in, BLOCK, 0);
    CHECK(iocp_lio_listio(IOCP_LIO_WAIT, list, 1, NULL) == 0);
    CHECK(iocp_aio_return(&cb) == BLOCK && memcmp(in, out, BLOCK) == 0);
}

/* An overlapped write of `BLOCK` bytes at `offset` to `fd` (associated with `port` under
 * key 9), its record, and the bytes read back with pread. */
static void overlapped_write(HANDLE port, int fd, off_t offset, int seed)
{
    unsigned char out[BLOCK], in[BLOCK];
    for (int i = 0; i < BLOCK; i++) {
        out[i] = (unsigned char)(pattern[i] ^ seed);
    }
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    o.Offset = (DWORD)offset;
    DWORD done, bytes, key;
    LPOVERLAPPED ovl;
    FAILS_WITH(!WriteFile(fd, out, BLOCK, &done, &o), EINPROGRESS);
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 10000));
    CHECK(ovl == &o && key == 9 && bytes == BLOCK);
    CHECK(pread(fd, in, BLOCK, offset) == BLOCK && memcmp(in, out, BLOCK) == 0);
}

/* The parent's second thread: file I/O on its own file until told to stop, so that the
 * fork comes while requests are in flight. */
struct busy {
    pthread_t thread;
    int fd;
    volatile int stop;
    int rounds;
};

static void *keep_busy(void *arg)
{
    struct busy *busy = arg;
    for (int round = 0; !__atomic_load_n(&busy->stop, __ATOMIC_ACQUIRE); round++) {
        write_and_read_back(busy->fd, (off_t)(round % 16) * BLOCK, round);
        __atomic_store_n(&busy->rounds, round + 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* A read of a new socket pair's first end, pending until the other end writes, reported
 * to `port` (under key 6) or, with `port` 0, to an event. */
static void socket_read(HANDLE port)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    char buf[8] = {0};
    DWORD done, bytes, key;
    LPOVERLAPPED ovl;
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    HANDLE event = 0;
    if (port != 0) {
        CHECK(CreateIoCompletionPort(sv[0], port, 6, 0) == port);
    } else {
        event = iocp_event_create(TRUE, FALSE);
        CHECK(event != 0);
        o.hEvent = event;
    }
    FAILS_WITH(!ReadFile(sv[0], buf, 5, &done, &o), EINPROGRESS);
    CHECK(write(sv[1], "hello", 5) == 5);
    if (port != 0) {
        CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 10000));
        CHECK(ovl == &o && key == 6 && bytes == 5);
    } else {
        CHECK(iocp_event_wait(event, 10000));
        CHECK(GetOverlappedResult(sv[0], &o, &bytes, FALSE) && bytes == 5);
        CHECK(CloseHandle(event));
    }
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
}

/* The child: its own requests, through its own file threads and poll sets. `parents` is a
 * socket with a read of the parent's pending. Exits 0 when all is well. */
static void child(HANDLE port, int shared_fd, int parents)
{
    int fd = scratch_file(0, 0);
    for (int round = 0; round < ROUNDS; round++) {
        write_and_read_back(fd, (off_t)(round % 8) * BLOCK, round);
    }
    /* The file the parent associated with the port, at offsets the parent does not use;
     * the record comes to the child's copy of the port. */
    for (int round = 0; round < 16; round++) {
        overlapped_write(port, shared_fd, (off_t)(64 + round) * BLOCK, round);
    }
    /* LIO_NOWAIT_GMCS to the port. */
    unsigned char in[4][BLOCK];
    struct iocp_aiocb cbs[4];
    struct iocp_aiocb *list[4];
    for (int i = 0; i < 4; i++) {
        aiocb_for(&cbs[i], fd, IOCP_LIO_READ, (off_t)i * BLOCK, in[i], BLOCK, port);
        list[i] = &cbs[i];
    }
    CHECK(iocp_lio_listio(LIO_NOWAIT_GMCS, list, 4, NULL) == 0);
    struct gmcs records[4];
    int got = 0;
    while (got < 4) {
        int n = GetMultipleCompletionStatus(port, 1, (DWORD)(4 - got), 10000, records);
        CHECK(n > 0);
        for (int i = 0; i < n; i++) {
            CHECK(records[i].errorno == 0 && records[i].transfer_count == BLOCK);
        }
        got += n;
    }
    /* Sockets: new ones on the parent's port (the child's own poll set for it), and one
     * with no port. The parent's socket is the parent's: a read that would wait fails at
     * once, and leaves the parent's read and registration alone. */
    for (int round = 0; round < 50; round++) {
        socket_read(port);
    }
    socket_read(0);
    char buf[8];
    OVERLAPPED o;
    memset(&o, 0, sizeof o);
    DWORD done;
    FAILS_WITH(!ReadFile(parents, buf, sizeof buf, &done, &o), EBADF);
    /* Closing the child's copy leaves the socket in the parent's poll set: the parent's
     * read still completes. The library lets go of its own copy once its watcher notices,
     * within 100 ms (see "Closing a socket or file with requests in flight"). */
    CHECK(close(parents) == 0);
    FAILS_WITH(!ReadFile(parents, buf, sizeof buf, &done, &o), EINVAL);
    usleep(300 * 1000);
    /* Nothing of the child's is queued any more; the parent's requests are not its own. */
    CHECK(iocp_aio_cancel(fd, NULL) == IOCP_AIO_ALLDONE);
    CHECK(iocp_aio_cancel(shared_fd, NULL) == IOCP_AIO_ALLDONE);
    CHECK(close(fd) == 0);
    fflush(stdout);
    _exit(0);
}

int main(void)
{
#ifdef UNDER_TSAN
    puts("fork: skipped: ThreadSanitizer ends a child that starts threads after a fork");
    return 0;
#endif
    for (int i = 0; i < BLOCK; i++) {
        pattern[i] = (unsigned char)(i * 7 % 251);
    }
    HANDLE port = new_port();
    int shared_fd = scratch_file(0, 0);
    CHECK(CreateIoCompletionPort(shared_fd, port, 9, 0) == port);
    /* A socket read of the parent's waits on the port (which makes its poll set). */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(CreateIoCompletionPort(sv[0], port, 5, 0) == port);
    char sbuf[8] = {0};
    DWORD sdone;
    OVERLAPPED so;
    memset(&so, 0, sizeof so);
    FAILS_WITH(!ReadFile(sv[0], sbuf, 5, &sdone, &so), EINPROGRESS);
    /* The file threads start, and a thread keeps them busy across the fork. */
    overlapped_write(port, shared_fd, 0, 1);
    struct busy busy = {.fd = scratch_file(0, 0)};
    CHECK(pthread_create(&busy.thread, NULL, keep_busy, &busy) == 0);
    while (__atomic_load_n(&busy.rounds, __ATOMIC_RELAXED) < 8) {
        usleep(1000);
    }

    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        child(port, shared_fd, sv[0]);
    }

    /* The parent's own requests, while the child makes its. */
    int status = 0, round = 0;
    struct timespec start, now;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &start) == 0);
    for (;;) {
        overlapped_write(port, shared_fd, (off_t)(1 + round % 32) * BLOCK, round);
        round++;
        pid_t done = waitpid(pid, &status, WNOHANG);
        CHECK(done >= 0);
        if (done == pid) {
            break;
        }
        CHECK(clock_gettime(CLOCK_MONOTONIC, &now) == 0);
        if (now.tv_sec - start.tv_sec > 30) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "fork: the child did not finish in 30 s\n");
            return 1;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fork: the child failed (status %#x)\n", status);
        return 1;
    }
    __atomic_store_n(&busy.stop, 1, __ATOMIC_RELEASE);
    CHECK(pthread_join(busy.thread, NULL) == 0);
    /* The parent's socket read, waiting through all of it, completes. */
    CHECK(write(sv[1], "world", 5) == 5);
    DWORD bytes, key;
    LPOVERLAPPED ovl;
    CHECK(GetQueuedCompletionStatus(port, &bytes, &key, &ovl, 10000));
    CHECK(ovl == &so && key == 5 && bytes == 5 && memcmp(sbuf, "world", 5) == 0);
    CHECK(close(sv[0]) == 0 && close(sv[1]) == 0);
    /* And after: the parent's file threads still answer. */
    for (int i = 0; i < 16; i++) {
        overlapped_write(port, shared_fd, (off_t)(1 + i) * BLOCK, 1000 + i);
        write_and_read_back(busy.fd, (off_t)i * BLOCK, 2000 + i);
    }
    CHECK(CloseHandle(port));
    close(busy.fd);
    close(shared_fd);
    printf("fork: the child did its file and socket I/O; the parent %d rounds beside it and %d in its "
           "second thread\n",
           round, busy.rounds);
    return 0;
}
