#!/usr/bin/env python3
"""wasm_layout.py MODULE.wasm: exits 1 unless the module's layout lets wasm-opt assume that the
low 1 KiB of memory is unused (`--low-memory-unused`, scripts/lib.sh): its own memory (not
imported) and every active data segment at address 1024 or above. rustc's wasm32 targets link
stack-first: the stack grows down from 1 MiB towards 0 and the data lies above it, so the low
1 KiB is only ever reached by a stack about to overflow. Should a linker change put data there,
this check fails the build instead of the optimisation silently breaking the module."""
import sys

LOW = 1024


def leb(b, i, signed=False):
    """The LEB128 number at b[i] and the index after it."""
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return (r - (1 << s) if signed and x & 0x40 else r), i


def problems(b):
    if b[:4] != b"\0asm":
        return ["not a wasm module"]
    found, i = [], 8
    while i < len(b):
        section, i = b[i], i + 1
        size, i = leb(b, i)
        end = i + size
        if section == 2:  # imports: kind 2 is a memory
            count, j = leb(b, i)
            for _ in range(count):
                for _ in range(2):  # module name, field name
                    n, j = leb(b, j)
                    j += n
                kind, j = b[j], j + 1
                if kind == 2:
                    found.append("memory is imported (its low 1 KiB may be in use)")
                    break
                if kind == 0:
                    _, j = leb(b, j)
                elif kind == 1:
                    j += 1
                    flags, j = leb(b, j + 0)
                    _, j = leb(b, j)
                    if flags & 1:
                        _, j = leb(b, j)
                elif kind == 3:
                    j += 2
                else:
                    break
        if section == 11:  # data: active segments of memory 0 start with i32.const
            count, j = leb(b, i)
            for n in range(count):
                flags, j = leb(b, j)
                if flags == 1:  # passive
                    size_, j = leb(b, j)
                    j += size_
                    continue
                if flags == 2:
                    _, j = leb(b, j)
                if b[j] != 0x41:
                    found.append(f"data segment {n}: offset is not a constant")
                    break
                offset, j = leb(b, j + 1, signed=True)
                j += 1  # end
                size_, j = leb(b, j)
                j += size_
                if offset < LOW:
                    found.append(f"data segment {n} at {offset}, below {LOW}")
        i = end
    return found


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        found = problems(f.read())
    for p in found:
        print(f"{sys.argv[1]}: {p}", file=sys.stderr)
    sys.exit(1 if found else 0)
