"""Reversible key escaping for backends whose key syntax is narrower than wasi:keyvalue's.

A wasi:keyvalue key is any non-empty string; a NATS KV key allows only
`[-/_=.a-zA-Z0-9]` (and '.' splits tokens), a Vault path treats '/' as nesting and
'.'/'..' as path segments. `escape` keeps `[A-Za-z0-9_-]` and writes every other UTF-8
byte as `=XX` (upper-case hex), so the result is one token/segment valid in both and
`unescape(escape(k)) == k`. Readable keys stay readable: `user-1` is stored as `user-1`,
`a/b c` as `a=2Fb=20c`.

`unescape` is strict: anything `escape` cannot produce raises ValueError, so foreign
entries in a shared backend are skipped rather than misread. Pure functions, no I/O.
"""

from __future__ import annotations

import re

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPED = re.compile(r"^(?:[A-Za-z0-9_-]|=[0-9A-F]{2})+$")


def escape(key: str) -> str:
    out: list[str] = []
    for byte in key.encode("utf-8"):
        out.append(chr(byte) if byte in _SAFE else f"={byte:02X}")
    return "".join(out)


def unescape(token: str) -> str:
    if not _ESCAPED.match(token):
        raise ValueError(f"not an escaped key: {token[:40]!r}")
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "=":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(token[i]))
            i += 1
    return raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
