#!/usr/bin/env python3
"""Tests of wasm_layout.py on hand-assembled modules: each way a layout can make
`--low-memory-unused` unsafe is refused, and the layouts rustc produces pass.
Run by scripts/test: python3 -m unittest discover -s scripts -p '*_test.py'"""
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wasm_layout  # noqa: E402

HEADER = b"\0asm\x01\0\0\0"


def uleb(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        done = (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40)
        out.append(byte if done else byte | 0x80)
        if done:
            return bytes(out)


def section(sid, body):
    return bytes([sid]) + uleb(len(body)) + body


def name(s):
    return uleb(len(s)) + s


def imports(*entries):
    return section(2, uleb(len(entries)) + b"".join(entries))


FUNC_IMPORT = name(b"env") + name(b"proxy_log") + b"\x00" + uleb(0)
MEMORY_IMPORT = name(b"env") + name(b"memory") + b"\x02" + b"\x00" + uleb(17)
TABLE_IMPORT = name(b"env") + name(b"table") + b"\x01" + b"\x70" + b"\x01" + uleb(1) + uleb(8)
GLOBAL_IMPORT = name(b"env") + name(b"g") + b"\x03" + b"\x7f\x00"


def active(offset, data=b"abc"):
    """An active segment of memory 0 at a constant offset."""
    return b"\x00" + b"\x41" + sleb(offset) + b"\x0b" + uleb(len(data)) + data


def active_explicit(offset, data=b"abc"):
    """An active segment naming its memory (flag 2)."""
    return b"\x02" + uleb(0) + b"\x41" + sleb(offset) + b"\x0b" + uleb(len(data)) + data


def passive(data=b"abc"):
    return b"\x01" + uleb(len(data)) + data


def data(*segments):
    return section(11, uleb(len(segments)) + b"".join(segments))


class Layout(unittest.TestCase):
    def test_rustc_layout_passes(self):
        module = HEADER + imports(FUNC_IMPORT, TABLE_IMPORT, GLOBAL_IMPORT) + data(
            active(1048576), passive(), active_explicit(1024)
        )
        self.assertEqual(wasm_layout.problems(module), [])

    def test_data_below_1_kib_is_refused(self):
        found = wasm_layout.problems(HEADER + data(active(1048576), active(16)))
        self.assertEqual(found, ["data segment 1 at 16, below 1024"])

    def test_explicit_memory_segment_below_1_kib_is_refused(self):
        found = wasm_layout.problems(HEADER + data(active_explicit(1023)))
        self.assertEqual(found, ["data segment 0 at 1023, below 1024"])

    def test_imported_memory_is_refused(self):
        found = wasm_layout.problems(HEADER + imports(FUNC_IMPORT, MEMORY_IMPORT))
        self.assertEqual(found, ["memory is imported (its low 1 KiB may be in use)"])

    def test_offset_that_is_not_a_constant_is_refused(self):
        segment = b"\x00" + b"\x23" + uleb(0) + b"\x0b" + uleb(1) + b"x"  # global.get 0
        found = wasm_layout.problems(HEADER + data(segment))
        self.assertEqual(found, ["data segment 0: offset is not a constant"])

    def test_not_a_module_is_refused(self):
        self.assertEqual(wasm_layout.problems(b"\x7fELF"), ["not a wasm module"])

    def test_the_command_exits_1_and_names_the_problem(self):
        with tempfile.NamedTemporaryFile(suffix=".wasm", delete=False) as f:
            f.write(HEADER + data(active(0)))
        try:
            run = subprocess.run(
                [sys.executable, wasm_layout.__file__, f.name], capture_output=True, text=True
            )
        finally:
            os.unlink(f.name)
        self.assertEqual(run.returncode, 1)
        self.assertIn("data segment 0 at 0, below 1024", run.stderr)


if __name__ == "__main__":
    unittest.main()
