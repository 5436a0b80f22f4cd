#!/usr/bin/env python3
"""Markdown tables of where iocp's samples are, from a folded stack file.

Usage: summarize.py STACKS.folded   (or - for standard input:
       zcat flamegraphs/drain.folded.gz | perf/summarize.py -)

Input: one "root;...;leaf COUNT" line per distinct stack (inferno-collapse-perf), where
frames may carry the `_[i]` (inlined) or `_[k]` (kernel) suffix. Prints the inclusive
share of some iocp frames (samples whose stack contains the frame, above its parent's
frame where it has one, as a share of all samples and of the parent's; frames with no
sample are left out), then the leaf frames of the samples inside iocp.
Standard library only.
"""

import re
import sys
from collections import Counter

# (label, frame regex, parent label or None); a frame regex matches a whole frame name.
FRAMES = [
    ("iocp (any `iocp::` frame)", r"<?iocp::.*", None),
    ("`iocp::port::Port::post`", r"iocp::port::Port::post", "iocp (any `iocp::` frame)"),
    ("`iocp::ring::Lane::claim_*`", r"iocp::ring::Lane::claim_\w+", "`iocp::port::Port::post`"),
    (
        "`iocp::ring::*::write_and_publish`",
        r"iocp::ring::(Lane|Slots)::write_and_publish",
        "`iocp::port::Port::post`",
    ),
    ("`iocp::port::Shared::notify`", r"iocp::port::Shared::notify", "`iocp::port::Port::post`"),
    ("`iocp::port::Shared::take_many`", r"iocp::port::Shared::take_many", "iocp (any `iocp::` frame)"),
    ("`iocp::ring::Consumer::take_ready`", r"iocp::ring::Consumer::take_ready", "`iocp::port::Shared::take_many`"),
    ("`iocp::port::Port::drain`", r"iocp::port::Port::drain", "iocp (any `iocp::` frame)"),
    ("`iocp::ring::Consumer::ready*`", r"iocp::ring::Consumer::ready.*", "`iocp::port::Port::drain`"),
    ("`iocp::port::Shared::wait_leading`", r"iocp::port::Shared::wait_leading", "iocp (any `iocp::` frame)"),
    ("`iocp::parker::Spin::spin`", r"iocp::parker::Spin::spin", "iocp (any `iocp::` frame)"),
    ("`iocp::parker::Parker::park`", r"iocp::parker::Parker::park", "iocp (any `iocp::` frame)"),
    ("`iocp::net::*` (sockets)", r"<?iocp::net::.*", "iocp (any `iocp::` frame)"),
    ("`iocp::reactor::*` (epoll)", r"<?iocp::reactor::.*", "iocp (any `iocp::` frame)"),
    ("`epoll_wait` under iocp", r"(__x64_sys_)?epoll_wait", "iocp (any `iocp::` frame)"),
    ("`send`/`recv` under iocp", r"__send|__libc_send|__libc_recv|__recv|send|recv", "iocp (any `iocp::` frame)"),
    ("memcpy / memmove under iocp", r"__mem(cpy|move)\w*", "iocp (any `iocp::` frame)"),
    ("`sched_yield` under iocp", r"__sched_yield|sched_yield", "iocp (any `iocp::` frame)"),
    ("futex system calls under iocp", r"(__x64_sys_)?futex\w*", "iocp (any `iocp::` frame)"),
]
# A stack that reaches one of these reached its thread's entry: the walk was complete.
ENTRIES = {"start_thread", "__libc_start_call_main", "__libc_start_main", "_start"}
SUFFIX = re.compile(r"_\[[ik]\]$")
IOCP = re.compile(r"<?iocp::")  # iocp's functions and its trait impls


def read(path):
    stacks = []
    with (open(path) if path != "-" else sys.stdin) as folded:
        for line in folded:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            stacks.append(([SUFFIX.sub("", f) for f in stack.split(";")], int(count)))
    return stacks


def above(frames, regex, under):
    """Whether a frame matching `regex` is in `frames`, from the first one matching `under`
    on if given (the same frame, for a parent whose pattern takes in its children)."""
    start = 0
    if under is not None:
        start = next((i for i, f in enumerate(frames) if under.match(f)), None)
        if start is None:
            return False
    return any(regex.match(f) for f in frames[start:])


def percent(part, whole):
    return f"{100 * part / whole:.1f}%" if whole else "-"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py STACKS.folded (- for standard input)")
    stacks = read(sys.argv[1])
    total = sum(n for _, n in stacks)
    inside = [(frames, n) for frames, n in stacks if any(IOCP.match(f) for f in frames)]

    complete = sum(n for frames, n in stacks if ENTRIES.intersection(frames))
    lost = ""
    if total - complete > total // 1000:
        lost = (
            " The others could not be walked to the end (with frame pointers: a C function"
            " that keeps none, such as glibc's `send` or `recv`; with DWARF: a stack deeper"
            " than the bytes copied per sample). They start at the last frame found, right"
            " under the thread's name: their time is in the graph, but not under the code"
            " that called it, nor in the iocp shares below."
        )
    print(
        "Stacks walked back to their thread's entry (`start_thread` or `main`): "
        f"{complete} of {total} samples ({percent(complete, total)}).{lost}"
    )
    print()
    threads = Counter()
    for frames, n in stacks:
        threads[frames[0]] += n
    print("| thread (root frame) | share of all |")
    print("| --- | --- |")
    for thread, n in threads.most_common(10):
        print(f"| `{thread}` | {percent(n, total)} |")
    print()
    print("Samples whose stack contains the frame (inclusive):")
    print()
    counts = {}
    regexes = {}
    print("| frame | samples | share of all | share of its parent |")
    print("| --- | --- | --- | --- |")
    for label, pattern, parent in FRAMES:
        regex = regexes[label] = re.compile(pattern + "$")
        # A frame with a parent counts only above it: a function that other callers reach
        # too is no share of this parent there.
        under = regexes[parent] if parent else None
        count = sum(n for frames, n in inside if above(frames, regex, under))
        counts[label] = count
        if count == 0 and parent:
            continue  # frames this scenario never reached
        of_parent = f"{percent(count, counts[parent])} of {parent}" if parent else ""
        print(f"| {label} | {count} | {percent(count, total)} | {of_parent} |")

    leaves = Counter()
    for frames, n in inside:
        leaves[frames[-1]] += n
    print()
    print("Leaf frames of the samples inside iocp (self time):")
    print()
    print("| share of all | share of iocp's | leaf frame |")
    print("| --- | --- | --- |")
    inside_total = sum(n for _, n in inside)
    for frame, n in leaves.most_common(12):
        print(f"| {percent(n, total)} | {percent(n, inside_total)} | `{frame}` |")


if __name__ == "__main__":
    main()
