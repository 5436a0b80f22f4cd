/* Helpers shared by the C tests of libiocp. Include first: it sets the feature macros. */
#ifndef IOCP_TEST_CHECK_H
#define IOCP_TEST_CHECK_H

#define _GNU_SOURCE 1

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iocp.h"

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

/* A new port with the default concurrency value. */
static inline HANDLE new_port(void)
{
    HANDLE port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 0);
    CHECK(port > 0);
    return port;
}

#endif
