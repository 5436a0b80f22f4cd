#!/usr/bin/env python3
"""Adds inlined functions to the call stacks of `perf script` output.

Usage: perf script ... | inline_frames.py BINARY > expanded.txt

Stacks recorded with frame pointers name only the functions that kept a frame of their
own; in an optimized Rust build most of the engine (`Ring::claim`, `Ring::push`,
`Consumer::ready`, ...) is inlined into its caller and would be invisible. This filter asks
`addr2line -i` (GNU binutils) once for every distinct address of BINARY in the stacks and
replaces each of BINARY's frames with the chain of functions inlined at that address,
innermost first, as perf prints stacks (leaf first). Inlined frames get the `_[i]` suffix
that flame graphs color as "inlined" (the convention of FlameGraph's stackcollapse-perf).

perf prints a frame's address as an offset into the file; addr2line wants the virtual
address, so the program headers of BINARY translate one into the other. A caller's address
is its return address, the instruction after the call; one byte less falls inside the call
and so in the caller's inline context. Only the first frame of a sample is the interrupted
instruction itself and is looked up as it is.

Frames of other objects (libc, the kernel) and addresses addr2line cannot place pass
through unchanged. Samples of processes that never ran BINARY's code are dropped: perf
follows the harness's children (`git`, `rustc -V`, run once for its report), whose stacks
without frame pointers are noise. The sample headers must carry "pid/tid" (`perf script
-F comm,pid,tid,...`). Standard library only.
"""

import functools
import os
import re
import struct
import subprocess
import sys

# "\t    55d0c iocp::port::Port::post+0x1e0 (/path/to/iocp-bench)"
FRAME = re.compile(r"^(\s+)([0-9a-f]+) (.+) \(([^()]*)\)$")
# "iocp-bench 27234/27236  4345.166244: cpu-clock: " (the command may contain spaces)
HEADER = re.compile(r"^\S.*? (\d+)/\d+ ")
INLINED = "_[i]"


@functools.lru_cache(maxsize=None)
def realpath(path):
    return os.path.realpath(path)


def load_segments(path):
    """The executable's PT_LOAD segments as (file offset, size, virtual address)."""
    with open(path, "rb") as elf:
        ident = elf.read(16)
        if ident[:4] != b"\x7fELF" or ident[4] != 2:
            sys.exit(f"inline_frames.py: {path} is not a 64-bit ELF file")
        endian = "<" if ident[5] == 1 else ">"
        elf.seek(0x20)
        (phoff,) = struct.unpack(endian + "Q", elf.read(8))
        elf.seek(0x36)
        phentsize, phnum = struct.unpack(endian + "HH", elf.read(4))
        segments = []
        for i in range(phnum):
            elf.seek(phoff + i * phentsize)
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack(
                endian + "IIQQQQ", elf.read(40)
            )
            if p_type == 1:  # PT_LOAD
                segments.append((p_offset, p_filesz, p_vaddr))
        return segments


def to_vaddr(segments, offset):
    for p_offset, p_filesz, p_vaddr in segments:
        if p_offset <= offset < p_offset + p_filesz:
            return offset - p_offset + p_vaddr
    return None


def inline_chains(binary, addresses):
    """{address: [innermost, ..., outermost function]} from one addr2line run."""
    if not addresses:
        return {}
    query = "".join(f"{a:#x}\n" for a in addresses)
    out = subprocess.run(
        ["addr2line", "--functions", "--inlines", "--demangle", "--addresses", "-e", binary],
        input=query,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # With --addresses each answer starts with the address as 0x%016x, then a function
    # line and a file:line line per inlined level. Addresses come back in query order, so
    # an address line is recognized as the next one expected, never by its look alone.
    chains = {}
    i = 0
    for n, address in enumerate(addresses):
        header = f"0x{address:016x}"
        if i >= len(out) or out[i] != header:
            sys.exit(f"inline_frames.py: unexpected addr2line output near {header}")
        i += 1
        following = f"0x{addresses[n + 1]:016x}" if n + 1 < len(addresses) else None
        names = []
        while i < len(out) and out[i] != following:
            names.append(out[i])
            i += 2  # skip the file:line line
        chains[address] = [name for name in names if name != "??"]
    return chains


def own_samples(lines, real):
    """The lines of the samples whose process ran BINARY's code at least once."""
    pids = set()
    pid = None
    for line in lines:
        header = HEADER.match(line)
        if header:
            pid = header.group(1)
            continue
        frame = FRAME.match(line)
        if frame and pid is not None and realpath(frame.group(4)) == real:
            pids.add(pid)
    kept = []
    keep = False
    for line in lines:
        header = HEADER.match(line)
        if header:
            keep = header.group(1) in pids
        if keep:
            kept.append(line)
    return kept


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: perf script ... | inline_frames.py BINARY")
    binary = sys.argv[1]
    real = os.path.realpath(binary)
    segments = load_segments(binary)
    lines = sys.stdin.read().splitlines()
    lines = own_samples(lines, real)

    # Pass 1: the address each of BINARY's frames is looked up at.
    lookups = {}  # line index -> virtual address
    first_frame = True
    for index, line in enumerate(lines):
        match = FRAME.match(line)
        if not match:
            first_frame = True  # a sample header or the blank line that ends a sample
            continue
        at_leaf, first_frame = first_frame, False
        if realpath(match.group(4)) != real:
            continue
        vaddr = to_vaddr(segments, int(match.group(2), 16))
        if vaddr is None:
            continue
        lookups[index] = vaddr if at_leaf else vaddr - 1
    chains = inline_chains(binary, sorted(set(lookups.values())))

    # Pass 2: each looked-up frame becomes its inline chain; the outermost function is
    # the one that owns the machine frame, the others were inlined into it.
    out = sys.stdout
    for index, line in enumerate(lines):
        chain = chains.get(lookups.get(index, -1))
        if not chain:
            out.write(line + "\n")
            continue
        indent, address, _symbol, dso = FRAME.match(line).groups()
        for depth, name in enumerate(chain):
            suffix = INLINED if depth < len(chain) - 1 else ""
            out.write(f"{indent}{address} {name}{suffix} ({dso})\n")


if __name__ == "__main__":
    main()
