#!/usr/bin/env bash
# Records one iocp-bench scenario with `perf record -e cpu-clock -g` (frame pointers) and
# draws it as a flame graph with inferno:
#
#   perf/flamegraph.sh SCENARIO [extra iocp-bench arguments]
#   perf/flamegraph.sh drain --duration 1
#
# writes flamegraphs/SCENARIO.svg, flamegraphs/SCENARIO.folded.gz (the collapsed stacks the
# graph is drawn from, one "frame;frame;...;leaf COUNT" line per distinct stack) and
# flamegraphs/SCENARIO.md (the command, date, machine, rustc, commit and harness arguments,
# and the heaviest frames). See perf/README.md.
#
# Installs what is missing: perf (Debian's linux-perf), addr2line (binutils) and python3
# from Debian's packages, inferno from the Rust package registry. The harness and the
# libiocp.so it loads are built with frame pointers and fuller debug info into target/perf,
# so the normal build in target/ is untouched.
# The run is bounded by the scenario's own bounded measurements, and by FLAMEGRAPH_TIMEOUT
# seconds (default 1800) as a backstop. Nothing leaves the machine but the package
# downloads.
#
# Environment:
#   PERF_CALLGRAPH  fp (default): walk the frame pointers; small and fast, but a sample in
#                   a C library function that does not keep a frame pointer (glibc's
#                   send/recv wrappers, memcpy) loses some or all of its callers.
#                   dwarf: copy 8 KiB of stack per sample and unwind it with the DWARF
#                   tables afterwards; complete stacks through libc, about 8 KB per sample.
#                   Use it for scenarios that live in system calls (echo, file, wake).
#   PERF_FREQ       sampling rate in Hz (default 999 with fp, 499 with dwarf)
#   FLAMEGRAPH_TIMEOUT  seconds before the recording is stopped (default 1800)

set -euo pipefail

readonly INFERNO_VERSION=0.12.8
readonly CALLGRAPH=${PERF_CALLGRAPH:-fp}
case $CALLGRAPH in
    fp) default_freq=999 callgraph=(--call-graph fp) unwinding="frame pointers" ;;
    dwarf) default_freq=499 callgraph=(--call-graph "dwarf,8192") unwinding="DWARF unwinding" ;;
    *)
        printf 'flamegraph.sh: error: PERF_CALLGRAPH must be fp or dwarf, not %s\n' "$CALLGRAPH" >&2
        exit 1
        ;;
esac
readonly FREQ=${PERF_FREQ:-$default_freq}
readonly LIMIT=${FLAMEGRAPH_TIMEOUT:-1800}

say() { printf 'flamegraph.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: perf/flamegraph.sh SCENARIO [extra iocp-bench arguments]

  SCENARIO   an iocp-bench subcommand (drain, wake, ...; `iocp-bench --help` lists them)
  arguments  passed to iocp-bench after SCENARIO, e.g. --duration 1, --quick, --pin

Writes flamegraphs/SCENARIO.svg, .md and .folded.gz. Environment: PERF_CALLGRAPH (fp or
dwarf, default fp), PERF_FREQ (Hz), FLAMEGRAPH_TIMEOUT (seconds, default 1800); see the
comment at the top of this script.
EOF
    exit 2
}

[[ $# -ge 1 ]] || usage
case $1 in -h | --help) usage ;; esac
scenario=$1
shift
[[ $scenario =~ ^[a-z][a-z0-9_-]*$ ]] || die "'$scenario' is not a scenario name"
[[ $FREQ =~ ^[1-9][0-9]*$ ]] || die "PERF_FREQ must be a positive integer, not '$FREQ'"
[[ $LIMIT =~ ^[1-9][0-9]*$ ]] || die "FLAMEGRAPH_TIMEOUT must be a positive integer, not '$LIMIT'"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
outdir=$root/flamegraphs
bench=$root/target/perf/release/iocp-bench
if [[ -d ${HOME:-}/.cargo/bin ]]; then PATH=$HOME/.cargo/bin:$PATH; fi

is_root() { [[ $(id -u) -eq 0 ]]; }

# --- tools -----------------------------------------------------------------------------

apt_updated=false
apt_install() {
    is_root || die "$* missing and not root: install Debian's $* (apt-get install $*) and rerun"
    if ! $apt_updated; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=true
    fi
    say "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Debian's /usr/bin/perf can be a wrapper that fails when no perf matches the kernel, so
# check that it runs, not merely that it exists.
if ! command -v perf >/dev/null || ! perf --version >/dev/null 2>&1; then
    apt_install linux-perf
    perf --version >/dev/null 2>&1 || die "perf still does not run after installing linux-perf"
fi
command -v addr2line >/dev/null || apt_install binutils
command -v python3 >/dev/null || apt_install python3

if ! command -v inferno-collapse-perf >/dev/null || ! command -v inferno-flamegraph >/dev/null; then
    say "cargo install inferno --version $INFERNO_VERSION --locked"
    cargo install inferno --version "$INFERNO_VERSION" --locked --quiet
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/iocp-flamegraph.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Can this process sample? cpu-clock is a software event, so it works in VMs without a
# PMU; only kernel.perf_event_paranoid (or a container's missing capabilities) can stop it.
probe() { perf record -q -e cpu-clock -g -o "$work/probe.data" -- true >/dev/null 2>&1; }
if ! probe; then
    paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?')
    if is_root && [[ $paranoid != '?' && $paranoid -gt -1 ]]; then
        say "perf record is refused (kernel.perf_event_paranoid = $paranoid); as root, setting it to -1"
        sysctl -q -w kernel.perf_event_paranoid=-1
        probe || die "perf record -e cpu-clock still fails; try it by hand: perf record -e cpu-clock -g -- true"
    else
        die "perf record -e cpu-clock fails (kernel.perf_event_paranoid = $paranoid). As root: sysctl -w kernel.perf_event_paranoid=1"
    fi
fi

# --- build -----------------------------------------------------------------------------

# Frame pointers make perf's stack walk cheap and complete for our code (the standard
# library ships with them too); `debug = limited` adds the qualified names of inlined
# functions that `line-tables-only` leaves out. Both only for this separate target dir.
# The harness builds libiocp.so (the C ABI rows) with cargo when it runs: exported, the
# same settings make that build the one done here, with frame pointers too.
export RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes"
export CARGO_PROFILE_RELEASE_DEBUG=limited
export CARGO_TARGET_DIR=$root/target/perf
say "building iocp-bench and libiocp.so with frame pointers into target/perf"
cargo build --release --quiet -p iocp-bench
cargo build --release --quiet -p iocp-ffi --lib

"$bench" "$scenario" --help >/dev/null 2>&1 ||
    die "iocp-bench has no scenario '$scenario' (see: $bench --help)"

# --- record ----------------------------------------------------------------------------

harness=("$bench" "$scenario" --out "$work/results" "$@")
record=(perf record -e cpu-clock -F "$FREQ" "${callgraph[@]}" -o "$work/perf.data" -- "${harness[@]}")
say "recording: ${record[*]}"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
status=0
# SIGINT makes perf stop the harness and still write what it has.
timeout --signal=INT --kill-after=30 "$LIMIT" "${record[@]}" || status=$?
if [[ $status -eq 124 ]]; then
    die "the run passed FLAMEGRAPH_TIMEOUT=$LIMIT s; nothing written"
elif [[ $status -ne 0 ]]; then
    die "perf record or iocp-bench failed (exit $status); nothing written"
fi

# --- fold and draw ---------------------------------------------------------------------

say "folding the stacks"
# No period field: inferno then counts one per sample instead of summing nanoseconds.
# --no-inline: inline_frames.py adds the inlined functions itself, with qualified names
# (perf's own, with DWARF unwinding, are bare and out of order); it also drops the
# harness's child processes.
perf script -i "$work/perf.data" --no-inline -F comm,pid,tid,time,event,ip,sym,dso 2>/dev/null |
    python3 "$root/perf/inline_frames.py" "$bench" |
    inferno-collapse-perf --all >"$work/stacks.folded"
[[ -s $work/stacks.folded ]] || die "perf recorded no stacks of iocp-bench"

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit+=" (tree modified)"
fi
args="$scenario${*:+ $*}"
# The CPU as the harness's table names it: a virtual machine's model name may name only
# the line ("AMD EPYC"), and the family, model and stepping tell its generations apart.
cpuinfo() { sed -n "s/^$1[[:space:]]*: //p" /proc/cpuinfo | head -n 1; }
# As there, a field that is missing or not a number is left out.
cpu=$(cpuinfo 'model name')
cpu=${cpu:-unknown CPU}
ids=""
for field in 'cpu family=family' 'model=model' 'stepping=stepping'; do
    value=$(cpuinfo "${field%%=*}")
    [[ ! $value =~ ^[0-9]+$ ]] || ids+="${ids:+ }${field##*=} $value"
done
[[ -z $ids ]] || cpu+=" ($ids)"
env_prefix=""
[[ $CALLGRAPH == fp ]] || env_prefix+="PERF_CALLGRAPH=$CALLGRAPH "
[[ -z ${PERF_FREQ:-} ]] || env_prefix+="PERF_FREQ=$FREQ "
inferno-flamegraph \
    --title "iocp-bench $args" \
    --subtitle "cpu-clock at $FREQ Hz, $unwinding; $cpu; commit $commit; $started" \
    --countname samples --colors rust --hash \
    <"$work/stacks.folded" >"$work/graph.svg"
python3 "$root/perf/summarize.py" "$work/stacks.folded" >"$work/summary.md"
samples=$(awk '{ t += $NF } END { print t }' "$work/stacks.folded")

# --- note ------------------------------------------------------------------------------

# The backquotes in the single-quoted formats below are Markdown code spans.
# shellcheck disable=SC2016
{
    printf '# Flame graph: `iocp-bench %s`\n\n' "$args"
    printf '[%s.svg](%s.svg) (open it in a browser: hover for counts, click to zoom, Ctrl-F to search).\n' "$scenario" "$scenario"
    printf 'The stacks it is drawn from are in `%s.folded.gz` (`zcat` it; `_[i]` marks inlined\n' "$scenario"
    printf 'frames, `_[k]` kernel ones). How to read both: `perf/README.md`.\n\n'
    printf '| | |\n| --- | --- |\n'
    printf '| command | `%sperf/flamegraph.sh %s` |\n' "$env_prefix" "$args"
    printf '| recorded | `%s` |\n' "perf record -e cpu-clock -F $FREQ ${callgraph[*]} -- iocp-bench $args"
    printf '| date | %s |\n' "$started"
    printf '| machine | %s, %s cores, Linux %s |\n' "$cpu" "$(nproc)" "$(uname -r)"
    printf '| rustc | %s |\n' "$(rustc -V)"
    printf '| build | release profile, `-C force-frame-pointers=yes`, `debug = "limited"` (target/perf) |\n'
    printf '| tools | %s, inferno %s |\n' "$(perf --version)" "$INFERNO_VERSION"
    printf '| commit | %s |\n' "$commit"
    printf '| harness arguments | `%s` |\n' "$args"
    printf '| samples | %s (every thread of the run: iocp and its peers) |\n\n' "$samples"
    cat "$work/summary.md"
    printf '\nThe harness'"'"'s table for this run (slowed by sampling; not a benchmark result):\n\n'
    printf '```\n'
    # Without its leading blank lines.
    sed '/./,$!d' "$work/results/table.txt" 2>/dev/null || echo '(no table.txt)'
    printf '```\n'
} >"$work/note.md"

mkdir -p "$outdir"
# -n: no name or time stamp inside, so the same stacks give the same bytes.
gzip -n -9 -c "$work/stacks.folded" >"$outdir/$scenario.folded.gz"
mv "$work/graph.svg" "$outdir/$scenario.svg"
mv "$work/note.md" "$outdir/$scenario.md"
rm -f "$outdir/$scenario.folded"
say "wrote flamegraphs/$scenario.svg, .md and .folded.gz ($samples samples)"
