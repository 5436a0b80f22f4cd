#!/usr/bin/env bash
# Runs the C test suite (tests/c/*.c, the fuzz harness included) under sanitizers.
#
#   bash ffi/tests/sanitize.sh           C programs with AddressSanitizer and
#                                        UndefinedBehaviorSanitizer against a libiocp.a built
#                                        as usual (any toolchain)
#   bash ffi/tests/sanitize.sh address   the same against a libiocp.a that is itself built
#                                        with -Zsanitizer=address, standard library included
#   bash ffi/tests/sanitize.sh thread    C programs and libiocp.a under ThreadSanitizer
#   bash ffi/tests/sanitize.sh MODE NAME...
#                                        only the C tests whose names contain a NAME
#
# The last two need the nightly toolchain with rust-src (-Zbuild-std) and share their builds
# with .ci/sanitizers.sh (target/san-address, target/san-thread). CC picks the C compiler
# (default cc).
#
# Exits 0 without testing only when this machine lacks what a mode needs (a sanitizer
# runtime for the C compiler, the nightly toolchain, rust-src), saying so; any other failure,
# and any sanitizer report, fails the script.
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=${1:-plain}
filters=("${@:2}")
cc=${CC:-cc}
skip() {
    echo "sanitize.sh ($mode): skipped: $*"
    exit 0
}
case $mode in
plain | address) fsanitize=address,undefined ;;
thread) fsanitize=thread ;;
*)
    echo "usage: $0 [address|thread]" >&2
    exit 2
    ;;
esac

probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT

# The Rust side: the nightly toolchain builds libiocp.a, and the standard library in it,
# with the sanitizer's instrumentation.
if [ "$mode" != plain ]; then
    cargo +nightly --version >/dev/null 2>&1 || skip "no nightly toolchain"
    sysroot=$(rustc +nightly --print sysroot)
    host=$(rustc +nightly -vV | sed -n 's/^host: //p')
    [ -d "$sysroot/lib/rustlib/src/rust/library" ] ||
        skip "the nightly toolchain has no rust-src (rustup +nightly component add rust-src)"
    rustflags="-Zsanitizer=$mode"
    if [ "$mode" = thread ]; then
        # The annotations of engine/src/sys/tsan.rs.
        rustflags+=" --cfg iocp_tsan"
    fi
    RUSTFLAGS="$rustflags" cargo +nightly build -Zbuild-std --target "$host" \
        -p iocp-ffi --lib --target-dir "target/san-$mode"
    export IOCP_C_LIBRARY="$PWD/target/san-$mode/$host/debug/libiocp.a"
fi

# ThreadSanitizer instruments by calls into its runtime, and the library's instrumentation
# (rustc's LLVM) calls entry points (__tsan_memcpy, ...) that an older C compiler's runtime
# lacks: the programs link the runtime that ships with the Rust toolchain instead.
link_probe=(-fsanitize="$fsanitize")
if [ "$mode" = thread ]; then
    runtime="$sysroot/lib/rustlib/$host/lib/librustc-nightly_rt.tsan.a"
    [ -f "$runtime" ] || skip "the nightly toolchain has no TSan runtime ($runtime)"
    export IOCP_C_SANITIZER_RUNTIME="$runtime"
    # shellcheck disable=SC2054 # the commas belong to the linker options
    link_probe=(-Wl,--whole-archive "$runtime" -Wl,--no-whole-archive -lrt -lpthread -ldl -lm)
fi

# The C compiler can build a sanitized program, and the sanitizer reports a planted bug: a
# race for TSan, an overflow for ASan. A runtime that saw nothing would make a green run
# meaningless, so that fails the script. The probe gets three tries: ThreadSanitizer (v3,
# the nightly toolchain's runtime) now and then misses the planted race, printing nothing
# and exiting 0 (on a 2-core Xeon VM, 5 runs of 7,000; 1 of 3,000 with a hundred racing
# increments a thread), and once that failed CI; a runtime that never reports still fails.
planted=overflow
expected="ERROR: AddressSanitizer: heap-buffer-overflow"
if [ "$mode" = thread ]; then
    planted=race
    expected="WARNING: ThreadSanitizer: data race"
fi
cat >"$probe_dir/probe.c" <<'EOF'
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
static int shared;
static void *bump(void *arg) { (void)arg; shared++; return NULL; }
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "race") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, bump, NULL);
        shared++;
        pthread_join(t, NULL);
    }
    if (argc > 1 && strcmp(argv[1], "overflow") == 0) {
        volatile char *p = malloc(8);
        p[argc + 6] = 1;
        free((void *)p);
    }
    return 0;
}
EOF
if ! "$cc" -g -pthread -fsanitize="$fsanitize" -c "$probe_dir/probe.c" -o "$probe_dir/probe.o" \
    2>"$probe_dir/why" ||
    ! "$cc" -pthread "$probe_dir/probe.o" "${link_probe[@]}" -o "$probe_dir/probe" \
        2>>"$probe_dir/why"; then
    cat "$probe_dir/why"
    skip "$cc cannot build a program with -fsanitize=$fsanitize"
fi
if ! "$probe_dir/probe" 2>"$probe_dir/why"; then
    cat "$probe_dir/why"
    skip "a sanitized program does not run here"
fi
reported() {
    ! "$probe_dir/probe" "$planted" >"$probe_dir/planted" 2>&1 &&
        grep -q "$expected" "$probe_dir/planted"
}
if ! reported && ! reported && ! reported; then
    cat "$probe_dir/planted"
    echo "sanitize.sh ($mode): the sanitizer did not report the planted $planted in 3 tries" >&2
    exit 1
fi

# Cargo builds the suite's harness (and, in plain mode, libiocp.a); the IOCP_C_* variables
# make it compile every C program with the sanitizer and link the library chosen above.
IOCP_C_SANITIZE=${mode/plain/address} cargo test -p iocp-ffi --test c_suite -- "${filters[@]}"
