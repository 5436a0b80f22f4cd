#!/usr/bin/env bash
# Checks the echo_server example against real clients on loopback.
#
#   bash engine/tests/echo_clients.sh        (from the repository root)
#
# Builds the example in release mode, starts it on a free 127.0.0.1 port with
# `--seconds 20`, and drives it with a Python 3 socket client (many concurrent
# connections with 64-byte messages, a few with 1 MiB messages, a half-close), then with
# `nc` and `socat` when they are installed (each is skipped, with the reason printed, when
# it is not). Any mismatch exits non-zero; the server is killed on every exit path.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

for tool in cargo python3; do
    command -v "$tool" >/dev/null || { echo "echo_clients: $tool is required" >&2; exit 2; }
done

echo "echo_clients: building the example"
cargo build --quiet --release -p iocp-engine --example echo_server
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
server="$target_dir/release/examples/echo_server"
[[ -x "$server" ]] || { echo "echo_clients: no binary at $server" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/echo_clients.XXXXXX")
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cat >"$work/client.py" <<'PY'
"""Echo checks: concurrent small-message connections, 1 MiB messages, half-close."""
import socket
import sys
import threading
import time

PORT = int(sys.argv[1])
TIMEOUT = 10.0
failures = []
lock = threading.Lock()


def fail(message):
    with lock:
        failures.append(message)


def connect():
    sock = socket.create_connection(("127.0.0.1", PORT), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock, n):
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError(f"end of stream after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def pattern(n, seed):
    return bytes((i * 131 + seed) & 0xFF for i in range(n))


def small_messages(index, rounds=50):
    try:
        with connect() as sock:
            for r in range(rounds):
                message = pattern(64, index + r)
                sock.sendall(message)
                back = recv_exactly(sock, 64)
                if back != message:
                    fail(f"conn {index} round {r}: 64-byte echo differs")
                    return
            sock.shutdown(socket.SHUT_WR)
            if sock.recv(1) != b"":
                fail(f"conn {index}: data after half-close instead of end of stream")
    except Exception as err:  # noqa: BLE001 - any failure is a test failure
        fail(f"conn {index}: {err!r}")


def large_message(index, size=1 << 20):
    try:
        with connect() as sock:
            message = pattern(size, index)
            sender_error = []

            def send():
                try:
                    sock.sendall(message)
                except Exception as err:  # noqa: BLE001
                    sender_error.append(err)

            sender = threading.Thread(target=send)
            sender.start()
            back = recv_exactly(sock, size)
            sender.join(TIMEOUT)
            if sender_error:
                fail(f"large {index}: send failed: {sender_error[0]!r}")
            elif back != message:
                first = next(i for i, (a, b) in enumerate(zip(back, message)) if a != b)
                fail(f"large {index}: 1 MiB echo differs at byte {first}")
    except Exception as err:  # noqa: BLE001
        fail(f"large {index}: {err!r}")


start = time.monotonic()
threads = [threading.Thread(target=small_messages, args=(i,)) for i in range(100)]
threads += [threading.Thread(target=large_message, args=(i,)) for i in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(30)
alive = sum(thread.is_alive() for thread in threads)
if alive:
    fail(f"{alive} client threads still running after 30 s")
elapsed = time.monotonic() - start
if failures:
    for message in failures[:20]:
        print(f"  FAIL {message}", file=sys.stderr)
    print(f"python client: {len(failures)} failures", file=sys.stderr)
    sys.exit(1)
print(f"  100 connections x 50 64-byte echoes and 4 x 1 MiB echoes matched in {elapsed:.1f} s")
PY

# One configuration: start the server with `$@`, check it with every client, stop it.
check_server() {
    # Start the server; retry with another port if one was taken between probe and bind.
    port=""
    for attempt in 1 2 3; do
        port=$(free_port)
        "$server" --addr "127.0.0.1:$port" --seconds 20 "$@" >"$work/server.log" 2>&1 &
        server_pid=$!
        for _ in $(seq 100); do
            grep -q "listening on" "$work/server.log" && break
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        if grep -q "listening on" "$work/server.log"; then
            break
        fi
        echo "echo_clients: attempt $attempt: server did not start:" >&2
        cat "$work/server.log" >&2
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
        port=""
    done
    [[ -n "$port" ]] || { echo "echo_clients: could not start the server" >&2; exit 1; }
    echo "echo_clients: server $* (pid $server_pid) on 127.0.0.1:$port"

    echo "echo_clients: python3 client"
    python3 "$work/client.py" "$port"

    expected="hello from a line client"

    if command -v nc >/dev/null; then
        # OpenBSD nc half-closes with -N; traditional netcat with -q; ncat on its own.
        help=$(nc -h 2>&1 || true)
        if grep -q -- " -N" <<<"$help"; then
            flags=(-N)
        elif grep -q -- " -q" <<<"$help"; then
            flags=(-q 1)
        else
            flags=()
        fi
        got=$(printf '%s\n' "$expected" | timeout 5 nc ${flags[@]+"${flags[@]}"} 127.0.0.1 "$port" || true)
        if [[ "$got" != "$expected" ]]; then
            echo "echo_clients: nc got '$got', expected '$expected'" >&2
            exit 1
        fi
        echo "echo_clients: nc ok"
    else
        echo "echo_clients: skipping nc: not installed"
    fi

    if command -v socat >/dev/null; then
        got=$(printf '%s\n' "$expected" | timeout 5 socat -t 2 - "TCP:127.0.0.1:$port" || true)
        if [[ "$got" != "$expected" ]]; then
            echo "echo_clients: socat got '$got', expected '$expected'" >&2
            exit 1
        fi
        echo "echo_clients: socat ok"
    else
        echo "echo_clients: skipping socat: not installed"
    fi

    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "echo_clients: the server exited early:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    if grep -q "panicked" "$work/server.log"; then
        echo "echo_clients: the server panicked:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

for config in "--drive inline --workers 1" "--drive thread --workers 1" "--drive inline --workers 2"; do
    # shellcheck disable=SC2086 # the configuration is a list of options
    check_server $config
done
echo "echo_clients: ok"
