#!/usr/bin/env bash
# Runs the C test suite (tests/c/*.c, the fuzz harness included) compiled with
# AddressSanitizer and UndefinedBehaviorSanitizer against a freshly built libiocp.a.
#
#   bash ffi/tests/sanitize.sh        (from anywhere; CC picks the compiler, default cc)
#
# Exits 0 without testing only when this machine's compiler has no sanitizer runtime,
# saying so; any other failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/../.."

cc=${CC:-cc}
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
printf 'int main(void) { return 0; }\n' >"$probe_dir/probe.c"
if ! "$cc" -fsanitize=address,undefined -fno-omit-frame-pointer "$probe_dir/probe.c" \
    -o "$probe_dir/probe" 2>"$probe_dir/why"; then
    echo "sanitize.sh: skipped: $cc cannot link -fsanitize=address,undefined:"
    cat "$probe_dir/why"
    exit 0
fi
if ! "$probe_dir/probe" 2>"$probe_dir/why"; then
    echo "sanitize.sh: skipped: a sanitized program does not run here:"
    cat "$probe_dir/why"
    exit 0
fi

# Cargo builds libiocp.a with the suite; IOCP_C_SANITIZE makes the suite compile every C
# program with -fsanitize=address,undefined -fno-omit-frame-pointer.
IOCP_C_SANITIZE=1 cargo test -p iocp-ffi --test c_suite
