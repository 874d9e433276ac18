"""Say in one line why a component call failed, from wasmtime's error and the guest's stderr.

wasmtime reports a trap as a long wasm backtrace whose useful line is the last one
(`wasm trap: …`); guests written in Python or Rust print the real reason to stderr
first (a Python traceback ending in `RuntimeError: …`, or a Rust `panicked at …`
followed by the message). Pure functions, so they are tested without wasm.
"""

from __future__ import annotations

import re

_FRAME = re.compile(r"^\s*\d+:\s+0x[0-9a-f]+\s+-")


_DUMP = re.compile(r"^object (repr|type name)\s*: (.+)$")


def _dumped(lines: list[str]) -> str | None:
    """The exception CPython dumped field by field (`object address  : …`, then `object
    type name: MemoryError`, `object repr     : MemoryError()`) when it could not print
    it: a guest out of memory often cannot."""
    found = dict(m.groups() for m in map(_DUMP.match, lines) if m)
    return found.get("repr") or found.get("type name")


def guest_reason(stderr: str) -> str | None:
    """The exception or panic message the guest printed last, if any."""
    lines = stderr.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last)"):
            for j, line in enumerate(lines[i + 1 :], i + 1):
                if line and not line.startswith((" ", "\t")):
                    if line.startswith("object address"):
                        return _dumped(lines[j:]) or line.strip()
                    return line.strip()
        if "panicked at" in lines[i] and i + 1 < len(lines):
            nxt = lines[i + 1].strip()
            if nxt and nxt != "Python function threw an unexpected exception":
                return nxt
    return None


TWO_BORROWS = (
    "wasmtime-py 50 cannot pass two borrowed handles to one host function (wasmtime's "
    "'deferred host scope has no call context'), e.g. wasi:blobstore container.write-data: "
    "use lattice:blobstore/upload.write-data (docs/blobstore.md)"
)


def wasmtime_reason(error_text: str) -> str:
    """The last line of wasmtime's message that is not a backtrace frame; for an internal
    wasmtime error ("BUG: …", followed by boilerplate), that line."""
    lines = [ln.strip() for ln in error_text.strip().splitlines() if ln.strip()]
    bug = next((ln for ln in lines if ln.startswith("BUG: ")), None)
    if bug is not None:
        return TWO_BORROWS if "deferred host scope has no call context" in bug else bug
    meaningful = [
        ln
        for ln in lines
        if not _FRAME.match(ln)
        and not ln.startswith(("error while executing at wasm backtrace", "note:"))
    ]
    return meaningful[-1] if meaningful else (lines[0] if lines else "trap")


def summarize(error_text: str, stderr: str) -> str:
    return guest_reason(stderr) or wasmtime_reason(error_text)


def is_interrupt(error_text: str) -> bool:
    return "interrupt" in wasmtime_reason(error_text).lower()


def is_out_of_memory(error_text: str, stderr: str) -> bool:
    reason = (guest_reason(stderr) or "") + "\n" + wasmtime_reason(error_text)
    return bool(re.search(r"MemoryError|out of memory|memory allocation|alloc.*fail", reason, re.I))
