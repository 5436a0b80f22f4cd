#!/usr/bin/env bash
# ThreadSanitizer and AddressSanitizer (with LeakSanitizer) over the engine's tests and the
# C tests, with the standard library rebuilt instrumented (-Zbuild-std) so that its locks,
# threads and allocations are seen as well; the file tests, engine and C, on both file
# drivers (io_uring, the default, then the thread driver).
#
#   bash .ci/sanitizers.sh              both sanitizers
#   bash .ci/sanitizers.sh thread       one of them (thread or address)
#
# Needs the nightly toolchain with rust-src; without them it says so and exits 0. Any
# sanitizer report fails it. Builds go to target/san-thread and target/san-address.
#
# tests/stress.rs runs at its debug size (400000 records per producer-and-capacity test);
# IOCP_STRESS_RECORDS scales it down should the run grow too long.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

skip() {
    echo "sanitizers.sh: skipped: $*"
    exit 0
}
cargo +nightly --version >/dev/null 2>&1 || skip "no nightly toolchain (rustup toolchain install nightly)"
sysroot=$(rustc +nightly --print sysroot)
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
[ -d "$sysroot/lib/rustlib/src/rust/library" ] ||
    rustup +nightly component add rust-src >/dev/null 2>&1 || true
[ -d "$sysroot/lib/rustlib/src/rust/library" ] ||
    skip "the nightly toolchain has no rust-src (rustup +nightly component add rust-src)"

# A report makes the process exit non-zero (TSan: 66 at exit, after all reports; ASan: at
# the first), which fails its test binary.
export TSAN_OPTIONS="second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=1 ${ASAN_OPTIONS:-}"

# The engine's integration tests (tests/*.rs and tests/*/main.rs) under `mode`, but those
# named after it. Always left out: loom (models, empty without --cfg loom) and soak
# (minutes long, #[ignore]).
engine_tests() {
    local mode=$1 rustflags=$2
    shift 2
    local args=(--lib) name
    for file in engine/tests/*.rs engine/tests/*/main.rs; do
        name=$(basename "${file%/main.rs}" .rs)
        case " loom soak $* " in
        *" $name "*) echo "sanitizers.sh: $mode: tests/$name left out" ;;
        *) args+=(--test "$name") ;;
        esac
    done
    sanitized_engine "$mode" "$rustflags" "${args[@]}"
}

# `cargo test` of the engine under `mode`, with the rest of the arguments.
sanitized_engine() {
    local mode=$1 rustflags=$2
    shift 2
    RUSTFLAGS="-Zsanitizer=$mode $rustflags" cargo +nightly test -Zbuild-std --target "$host" \
        -p iocp-engine --features c-abi --target-dir "target/san-$mode" "$@"
}

# ENGINE_FILE_TESTS and C_FILE_TESTS: the tests that make file requests.
source .ci/file-tests.sh

# The file tests again on the thread driver (those above ran on the default, io_uring, but
# for the tests that name a driver), as CI's plain run does: same build, other driver.
file_tests_on_threads() {
    IOCP_FILE_DRIVER=threads sanitized_engine "$1" "$2" "${ENGINE_FILE_TESTS[@]}"
}

started=$SECONDS
step() { printf '\n=== sanitizers: %s (at %ss)\n' "$*" "$((SECONDS - started))"; }

modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(thread address)
for mode in "${modes[@]}"; do
    case $mode in
    thread)
        step "ThreadSanitizer: engine"
        # --cfg iocp_tsan: the annotations of engine/src/sys/tsan.rs.
        engine_tests thread "--cfg iocp_tsan"
        step "ThreadSanitizer: file tests on the thread driver"
        file_tests_on_threads thread "--cfg iocp_tsan"
        step "ThreadSanitizer: C tests"
        bash ffi/tests/sanitize.sh thread
        step "ThreadSanitizer: the C tests of files on the thread driver"
        IOCP_FILE_DRIVER=threads bash ffi/tests/sanitize.sh thread "${C_FILE_TESTS[@]}"
        ;;
    address)
        step "AddressSanitizer: engine"
        engine_tests address ""
        step "AddressSanitizer: file tests on the thread driver"
        file_tests_on_threads address ""
        step "AddressSanitizer: C tests"
        bash ffi/tests/sanitize.sh address
        step "AddressSanitizer: the C tests of files on the thread driver"
        IOCP_FILE_DRIVER=threads bash ffi/tests/sanitize.sh address "${C_FILE_TESTS[@]}"
        ;;
    *)
        echo "usage: $0 [thread|address]..." >&2
        exit 2
        ;;
    esac
done
step "done"
