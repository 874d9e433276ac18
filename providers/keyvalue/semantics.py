"""The wasi:keyvalue rules every backend shares: what is a valid bucket, key and value,
how a counter is stored, how list-keys pages, and how errors look on the wire.

All three built-in providers call these functions, so a bucket name, key or value one
backend refuses is refused by all of them with the same words. `KvError` carries the
wasi:keyvalue `error` variant as it goes on the wire (`{"other": "…"}`,
`{"no-such-store": None}`, `{"access-denied": None}`); `Unavailable` is the "backend
down" flavour of `other` (nothing was applied), `Indeterminate` the "sent, no answer"
one (something may have been). No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lattice.protocol.invocation import ErrorKind, InvocationError
from providers.sdk import backend
from providers.sdk.backend import short

DEFAULT_BUCKET = "default"
BUCKET_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_KEY_CHARS = 1024
MAX_VALUE_BYTES = 512 * 1024
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 100_000
U64_MAX = 2**64 - 1
_DECIMAL = re.compile(rb"^[0-9]{1,20}$")


class KvError(Exception):
    """A wasi:keyvalue `error` for the caller; `wire` is the variant as sent."""

    def __init__(self, wire: dict[str, Any]) -> None:
        super().__init__(next(iter(wire.values())) or next(iter(wire)))
        self.wire = wire

    @classmethod
    def other(cls, message: str) -> KvError:
        return cls({"other": message})

    @classmethod
    def no_such_store(cls) -> KvError:
        return cls({"no-such-store": None})

    @classmethod
    def access_denied(cls) -> KvError:
        return cls({"access-denied": None})


class Unavailable(KvError):
    """The backend cannot be reached or cannot serve right now (down, sealed, timed out)."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__({"other": f"{backend} unavailable: {detail}"})
        self.backend = backend
        self.detail = detail


class Indeterminate(Unavailable):
    """A write went out (or may have) and no answer came back: it may have been applied.
    Never retried; the provider answers it as a `timeout`, not as a keyvalue error,
    because a keyvalue error promises that nothing was written."""


def bad_argument(op: str, what: str, value: Any) -> InvocationError:
    return InvocationError(
        ErrorKind.BAD_ARGUMENT, f"{op}: {what}, got {type(value).__name__} {short(repr(value))}"
    )


def check_bucket(identifier: Any, op: str) -> str:
    """The bucket name for `identifier`: "" means "default"; others must match BUCKET_RE."""
    if not isinstance(identifier, str):
        raise bad_argument(op, "bucket identifier must be a string", identifier)
    if identifier == "":
        return DEFAULT_BUCKET
    if not BUCKET_RE.match(identifier):
        raise KvError.no_such_store()
    return identifier


def check_key(key: Any, op: str) -> str:
    if not isinstance(key, str):
        raise bad_argument(op, "key must be a string", key)
    if not key:
        raise KvError.other("key must not be empty")
    if len(key) > MAX_KEY_CHARS:
        raise KvError.other(f"key of {len(key)} characters exceeds {MAX_KEY_CHARS}")
    return key


def check_keys(keys: Any, op: str) -> list[str]:
    if not isinstance(keys, list):
        raise bad_argument(op, "keys must be an array of strings", keys)
    return [check_key(k, op) for k in keys]


def check_value(value: Any, op: str) -> bytes:
    if isinstance(value, bytearray):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise bad_argument(op, "value must be bin (list<u8>)", value)
    if len(value) > MAX_VALUE_BYTES:
        raise KvError.other(f"value of {len(value)} bytes exceeds {MAX_VALUE_BYTES}")
    return value


def check_pairs(pairs: Any, op: str) -> list[tuple[str, bytes]]:
    if not isinstance(pairs, list) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs
    ):
        raise bad_argument(op, "key-values must be an array of [key, value] pairs", pairs)
    return [(check_key(k, op), check_value(v, op)) for k, v in pairs]


def check_u64(value: Any, op: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise bad_argument(op, f"{what} must be a u64", value)
    return value


def check_cursor(cursor: Any, op: str) -> int:
    return 0 if cursor is None else check_u64(cursor, op, "cursor")


def page_size(raw: str | None) -> int:
    """The `page_size` link setting; ValueError (refusing the link) when malformed."""
    return backend.page_size(raw, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def page(keys: Sequence[str], cursor: int, size: int) -> dict[str, Any]:
    """One list-keys page: `cursor` is an offset into the sorted keys."""
    ordered = sorted(keys)
    chunk = ordered[cursor : cursor + size]
    nxt = cursor + size if cursor + size < len(ordered) else None
    return {"keys": chunk, "cursor": nxt}


def counter(key: str, current: bytes | None, delta: int) -> bytes:
    """The new counter value (ASCII decimal) for `current` + `delta`, u64-checked."""
    if current is None:
        base = 0
    elif _DECIMAL.match(current) and int(current) <= U64_MAX:
        base = int(current)
    else:
        raise KvError.other(f"value at key {short(key)} is not an integer")
    total = base + delta
    if total > U64_MAX:
        raise KvError.other(f"increment of key {short(key)} by {delta} overflows u64")
    return str(total).encode("ascii")
