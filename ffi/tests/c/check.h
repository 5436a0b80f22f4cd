/* Helpers shared by the C tests of libiocp. Include first: it sets the feature macros. */
#ifndef IOCP_TEST_CHECK_H
#define IOCP_TEST_CHECK_H

#define _GNU_SOURCE 1

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iocp.h"

/* UNDER_TSAN is defined when the program is built with ThreadSanitizer (gcc says so with
 * __SANITIZE_THREAD__, clang with __has_feature). */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* Fails the test, naming the line, unless `cond` holds. */
#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            int saved_ = errno;                                                            \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (errno %d: %s)\n", __FILE__, __LINE__, \
                    #cond, saved_, strerror(saved_));                                      \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

/* Evaluates `failed` (a call compared with its failure value) with errno cleared, and
 * fails the test unless it is true and errno is `err`. */
#define FAILS_WITH(failed, err)                                                            \
    do {                                                                                   \
        errno = 0;                                                                         \
        int failed_ = (failed);                                                            \
        int saved_ = errno;                                                                \
        if (!failed_ || saved_ != (err)) {                                                 \
            fprintf(stderr, "%s:%d: FAILS_WITH(%s, %s): %s, errno %d (%s)\n", __FILE__,    \
                    __LINE__, #failed, #err, failed_ ? "failed" : "did not fail", saved_,  \
                    strerror(saved_));                                                     \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

/* Starts `threads[0..n)` running `fn`, each given its index as its argument. */
static inline void start_threads(pthread_t *threads, int n, void *(*fn)(void *))
{
    for (uintptr_t i = 0; i < (uintptr_t)n; i++) {
        CHECK(pthread_create(&threads[i], NULL, fn, (void *)i) == 0);
    }
}

/* Joins `threads[0..n)`. */
static inline void join_threads(pthread_t *threads, int n)
{
    for (int i = 0; i < n; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
    }
}

/* Milliseconds on CLOCK_MONOTONIC. */
static inline double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* `place` one byte off, as a `type *`: misaligned for anything a call reads or writes
 * through, which every call refuses with EINVAL. */
#define MISALIGNED(type, place) ((type *)((char *)(place) + 1))

/* A new port with the default concurrency value. */
static inline HANDLE new_port(void)
{
    HANDLE port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 0);
    CHECK(port > 0);
    return port;
}

/* A connected TCP pair on 127.0.0.1: the accepted side in `*ours`, the connecting side in
 * `*peer`. */
static inline void tcp_pair(int *ours, int *peer)
{
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(listener >= 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(listener, (struct sockaddr *)&addr, sizeof addr) == 0);
    CHECK(listen(listener, 1) == 0);
    socklen_t len = sizeof addr;
    CHECK(getsockname(listener, (struct sockaddr *)&addr, &len) == 0);
    *peer = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(*peer >= 0);
    CHECK(connect(*peer, (struct sockaddr *)&addr, sizeof addr) == 0);
    *ours = accept(listener, NULL, NULL);
    CHECK(*ours >= 0);
    close(listener);
}

/* A regular file, its name already removed, holding `size` bytes of `byte`. */
static inline int scratch_file(char byte, size_t size)
{
    char path[] = "/tmp/iocp-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(unlink(path) == 0);
    char block[4096];
    memset(block, byte, sizeof block);
    for (size_t at = 0; at < size; at += sizeof block) {
        size_t n = size - at < sizeof block ? size - at : sizeof block;
        CHECK(pwrite(fd, block, n, (off_t)at) == (ssize_t)n);
    }
    return fd;
}

/* Fills in `cb` for a request of `opcode` on `fd`; it reports to `to` (AIO_EXTENDED) unless
 * `to` is 0. */
static inline void aiocb_for(struct iocp_aiocb *cb, int fd, int opcode, off_t offset, void *buf,
                             size_t n, HANDLE to)
{
    memset(cb, 0, sizeof *cb);
    cb->aio_fildes = fd;
    cb->aio_lio_opcode = opcode;
    cb->aio_offset = offset;
    cb->aio_buf = buf;
    cb->aio_nbytes = n;
    if (to != 0) {
        cb->aio_flag = AIO_EXTENDED;
        cb->aio_iocpfd = to;
    }
}

#endif
