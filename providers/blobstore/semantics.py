"""The wasi:blobstore rules every backend shares: names, ranges, pages, wire errors.

All three built-in providers call these functions, so a container or object name one
backend refuses is refused by all of them with the same words. wasi:blobstore's
`error` is a string, so a `BlobError` carries one message; `Unavailable` is the
"backend down" flavour (nothing was applied), `Indeterminate` the "sent, no answer"
one (something may have been). No I/O here.
"""

from __future__ import annotations

import re
from typing import Any

from lattice.protocol.invocation import ErrorKind, InvocationError
from providers.sdk import backend
from providers.sdk.backend import short

CHUNK = 256 * 1024
"""The most bytes one `get-data` answer carries (NATS messages are limited to 1 MB)."""
MAX_PART = 512 * 1024
"""The most bytes one `write-data` part may carry."""
MAX_NAME_BYTES = 1024
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000
MAX_PAGE_BYTES = 256 * 1024
U64_MAX = 2**64 - 1
CONTAINER_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
UPLOAD_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PREFIX_RE = re.compile(r"^[a-z0-9-]{0,15}$")


class BlobError(Exception):
    """A wasi:blobstore `error` (a string) for the caller: nothing was applied."""

    @property
    def wire(self) -> str:
        return str(self)


class Unavailable(BlobError):
    """The backend cannot be reached or cannot serve right now; nothing was applied."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend} unavailable: {detail}")


class Indeterminate(Unavailable):
    """A write went out (or may have) and no answer came back: it may have been applied.
    The provider answers it as an invocation error of kind `timeout`, never as `err`."""


def no_container(container: str) -> BlobError:
    return BlobError(f"container {short(container)} does not exist")


def container_exists(container: str) -> BlobError:
    return BlobError(f"container {short(container)} already exists")


def no_object(container: str, name: str) -> BlobError:
    return BlobError(f"object {short(name)} does not exist in container {short(container)}")


def bad_argument(op: str, what: str, value: Any) -> InvocationError:
    return InvocationError(
        ErrorKind.BAD_ARGUMENT,
        f"{op}: {what}, got {type(value).__name__} {short(repr(value))}",
    )


def check_container(name: Any, op: str) -> str:
    if not isinstance(name, str):
        raise bad_argument(op, "container name must be a string", name)
    if not CONTAINER_RE.match(name):
        raise BlobError(
            f"invalid container name {short(name)}: use 1-48 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    return name


def check_object(name: Any, op: str) -> str:
    if not isinstance(name, str):
        raise bad_argument(op, "object name must be a string", name)
    if not name:
        raise BlobError("object name must not be empty")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise BlobError(f"object name of {size} bytes exceeds {MAX_NAME_BYTES}")
    if "\x00" in name:
        raise BlobError(f"object name {short(name)} contains a NUL character")
    return name


def check_objects(names: Any, op: str) -> list[str]:
    if not isinstance(names, list):
        raise bad_argument(op, "names must be an array of strings", names)
    return [check_object(n, op) for n in names]


def check_object_id(value: Any, op: str, what: str) -> tuple[str, str]:
    """An `object-id` record: `{"container": …, "object": …}`."""
    if not isinstance(value, dict) or set(value) != {"container", "object"}:
        raise bad_argument(op, f"{what} must be a map with 'container' and 'object'", value)
    return check_container(value["container"], op), check_object(value["object"], op)


def check_u64(value: Any, op: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise bad_argument(op, f"{what} must be a u64", value)
    return value


def check_range(start: Any, end: Any, op: str) -> tuple[int, int]:
    """Inclusive `start..=end`; the answer is cut to `CHUNK` bytes by the caller."""
    first, last = check_u64(start, op, "start"), check_u64(end, op, "end")
    if first > last:
        raise BlobError(f"range start {first} is after end {last}")
    return first, last


def check_data(value: Any, op: str) -> bytes:
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise bad_argument(op, "data must be bin (list<u8>)", value)
    if len(value) > MAX_PART:
        raise BlobError(f"part of {len(value)} bytes exceeds {MAX_PART}; send smaller parts")
    return value


def check_upload(value: Any, op: str) -> str:
    if not isinstance(value, str) or not UPLOAD_RE.match(value):
        raise bad_argument(op, "upload must be an id of 1-64 [A-Za-z0-9_-]", value)
    return value


def check_bool(value: Any, op: str, what: str) -> bool:
    if not isinstance(value, bool):
        raise bad_argument(op, f"{what} must be a bool", value)
    return value


def check_cursor(value: Any, op: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_argument(op, "cursor must be a string or nil", value)
    return value


def check_limit(value: Any, op: str, default: int) -> int:
    if value is None:
        return default
    n = check_u64(value, op, "limit")
    return max(1, min(n, MAX_PAGE_SIZE))


def page_size(raw: str | None) -> int:
    """The `page_size` link setting; ValueError (refusing the link) when malformed."""
    return backend.page_size(raw, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def seconds(raw: str | None, name: str, default: float) -> float:
    """A positive number of seconds from a link setting; ValueError naming it."""
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {short(raw)}") from None
    if not 0 < value <= 86400:
        raise ValueError(f"{name} must be between 0 and 86400 seconds, got {value:g}")
    return value


def prefix(raw: str | None, name: str, default: str) -> str:
    value = default if raw is None else raw
    if not PREFIX_RE.match(value):
        raise ValueError(f"{name} must be at most 15 of [a-z0-9-], got {short(value)}")
    return value


def page(names: list[str], limit: int) -> tuple[list[str], bool]:
    """Cut a sorted list of names to `limit` names and `MAX_PAGE_BYTES`; (page, more)."""
    out: list[str] = []
    used = 0
    for name in names:
        size = len(name.encode("utf-8")) + 3
        if len(out) >= limit or (out and used + size > MAX_PAGE_BYTES):
            return out, True
        out.append(name)
        used += size
    return out, False
