#!/usr/bin/env bash
# Installs the peers of iocp-bench that are programs rather than crates, from Debian's
# packages: fio, for the `file` scenario's `fio psync` and `fio io_uring` rows; redis-server
# and redis-tools (redis-cli, redis-benchmark), for the `resp` scenario and the tests of
# engine/examples/resp_server.rs. Idempotent: installs only what is not on the PATH yet.
# Debian and Ubuntu (apt-get); run as root or with sudo available.
#
#   bash bench-harness/scripts/install-peers.sh
set -euo pipefail

# Each package with the program that tells whether it is installed.
packages=(fio:fio redis-tools:redis-cli redis-server:redis-server)

missing=()
for entry in "${packages[@]}"; do
  package=${entry%%:*} program=${entry#*:}
  if command -v "$program" >/dev/null 2>&1; then
    echo "install-peers: $program is already installed ($package)"
  else
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-peers: no apt-get here; install ${missing[*]} with this system's package manager" >&2
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
# Refresh the package lists only when a package is not known yet (a fresh machine has none).
for package in "${missing[@]}"; do
  if ! apt-cache show "$package" >/dev/null 2>&1; then
    "${as_root[@]}" apt-get update
    break
  fi
done
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"

# Debian starts the packaged redis-server as a service on port 6379; the harness runs its
# own instances, so the service is left as the system configures it.
echo "install-peers: installed ${missing[*]}"
