#!/usr/bin/env bash
# Installs the peers of iocp-bench that are programs rather than crates: fio, for the
# `file` scenario's `fio psync` and `fio io_uring` rows. Idempotent: does nothing when fio
# is already on the PATH. Debian and Ubuntu (apt-get); run as root or with sudo available.
#
#   bash bench-harness/scripts/install-peers.sh
set -euo pipefail

if command -v fio >/dev/null 2>&1; then
  echo "install-peers: fio is already installed: $(fio --version)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-peers: no apt-get here; install fio with this system's package manager" >&2
  exit 1
fi

# Root runs apt-get directly; anyone else goes through sudo.
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-peers: need root (or sudo) to run apt-get" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when fio is not known yet (a fresh machine has none).
if ! apt-cache show fio >/dev/null 2>&1; then
  "${as_root[@]}" apt-get update
fi
"${as_root[@]}" apt-get install -y --no-install-recommends fio

echo "install-peers: installed $(fio --version)"
