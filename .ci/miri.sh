#!/usr/bin/env bash
# Miri over the engine's unit tests that it can run: the ring (engine/src/ring.rs: its
# lanes, the overflow queue, and producers racing a consumer under Miri's data-race
# detector and weak-memory emulation), the OVERLAPPED status block
# (engine/src/overlapped.rs, with its futex wait), the runs of tasks shared with a pool
# thread (engine/src/share.rs: a helper must be done with a run, which lives on its
# caller's stack, before the caller returns), a socket's word (engine/src/gate.rs), the
# socket address conversions (engine/src/sys/socket.rs), and the completion record's words
# and halves (engine/src/completion.rs).
#
# Not the others: anything with a port, an event, a socket or a file opens a handle, an
# AF_UNIX socket or epoll, which Miri does not emulate. buffer.rs has no unit tests of its
# own; of completion.rs's, the record's (its words and halves).
#
# Needs the nightly toolchain; adds its miri component when missing, and says so and exits
# 0 when it cannot.
# Builds go to target/miri. IOCP_MIRI_SEEDS (default 8) runs the concurrent tests under
# that many scheduler seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

# A nightly toolchain without Miri gets it (rustup fetches the component, when it can).
if cargo +nightly --version >/dev/null 2>&1 && ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup +nightly component add miri rust-src >/dev/null 2>&1 || true
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri.sh: skipped: no Miri (rustup +nightly component add miri)"
    exit 0
fi
cargo +nightly miri setup

# Strict provenance: no integer-to-pointer casts anywhere in what the tests run.
flags="-Zmiri-strict-provenance"
run() {
    MIRIFLAGS="$flags ${MIRIFLAGS:-} $1" cargo +nightly miri test -p iocp-engine --lib \
        --target-dir target/miri -- "${@:2}"
}
# Every test once, then the ones with threads under more interleavings.
run "" ring:: overlapped:: share:: gate:: sys::socket:: sys::fork:: completion::tests::a_record
seeds=${IOCP_MIRI_SEEDS:-8}
if [ "$seeds" -gt 1 ]; then
    run "-Zmiri-many-seeds=1..$seeds" \
        ring::tests::producers_racing_a_consumer_deliver_each_record_once_in_order \
        overlapped::tests::a_waiter_in_get_result_wakes_with_the_result_another_thread_publishes \
        overlapped::tests::a_thread_that_sees_the_request_complete_sees_its_byte_count \
        share::tests::a_helper_takes_tasks_and_the_caller_waits_for_it \
        sys::fork::tests::threads_racing_to_make_the_value_agree_on_one_and_drop_the_rest
fi
