/* The AIX documentation's use of GetMultipleCompletionStatus: drain up to 10 completions,
 * waiting at most 100 ms for at least one, and treat fewer than asked as normal. */
#include "check.h"

#define COMPLETIONS 25

int main(void)
{
    HANDLE port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, 0, 0, 0);
    CHECK(port > 0);

    OVERLAPPED blocks[COMPLETIONS];
    for (int i = 0; i < COMPLETIONS; i++) {
        CHECK(PostQueuedCompletionStatus(port, 100 + i, 7, &blocks[i]));
    }

    struct gmcs results[10];
    int seen = 0;
    for (;;) {
        int n = GetMultipleCompletionStatus(port, 1, 10, 100, results);
        CHECK(n >= 0 && n <= 10);
        if (n == 0) {
            /* Nothing within 100 ms: not an error, errno says why. */
            CHECK(errno == ETIMEDOUT);
            break;
        }
        for (int i = 0; i < n; i++, seen++) {
            CHECK(results[i].overlapped == &blocks[seen]);
            CHECK(results[i].transfer_count == (DWORD)(100 + seen));
            CHECK(results[i].completion_key == 7);
            CHECK(results[i].errorno == 0);
        }
    }
    CHECK(seen == COMPLETIONS);
    CHECK(CloseHandle(port));
    printf("aix_example: drained %d completions in batches of up to 10\n", seen);
    return 0;
}
