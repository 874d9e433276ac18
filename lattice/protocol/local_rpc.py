"""Same-host provider calls over a Unix socket: the frames and the socket's name.

A host that starts a provider process hands it a socket path in its host data
(`local_socket`); the provider listens there as well as on NATS, and the host's own
processes send that provider's link calls through the socket, each on a connection of
the calling thread's own, so a call needs no trip through the NATS server and no hop to
the host's event loop. docs/protocol.md, "Same-host provider calls", has the contract.

Each frame is a 4-byte big-endian length and a msgpack array:

    request  [call id, operation, headers, argument bytes]
    reply    [call id, headers or nil, result bytes]

The operation, headers and bytes are exactly what the NATS path carries (the subject's
`{interface}.{function}` tail, `source-id`/`link-name`, the msgpack arguments), so the
provider serves both with one `invoke`. A reply whose headers carry `STOPPING_HEADER`
says the provider took the frame but will not run it (it is stopping): nothing was done
and the caller sends the call over NATS instead.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

LENGTH = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
"""Largest frame either side accepts: far over NATS's 1 MiB payload, bounded so a corrupt
length cannot make a reader allocate without limit."""
STOPPING_HEADER = "lattice-local"
"""Reply header (value `stopping`): not run, send it another way."""


class FrameError(ValueError):
    """A frame that is not what this protocol sends; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Request:
    call_id: int
    operation: str
    headers: dict[str, str]
    data: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """What the NATS path's reply message gives its reader: `.headers` and `.data`."""

    call_id: int
    headers: dict[str, str] | None
    data: bytes


def socket_path(directory: Path, provider_id: str) -> Path:
    """The provider's socket in `directory`: a digest of its id, since a provider id may
    be longer than a socket path allows (108 bytes, with the directory)."""
    return directory / f"{hashlib.sha256(provider_id.encode()).hexdigest()[:20]}.sock"


def _frame(body: list[Any]) -> bytes:
    packed = msgpack.packb(body, use_bin_type=True)
    if len(packed) > MAX_FRAME:
        raise FrameError(f"frame of {len(packed)} bytes is over the {MAX_FRAME}-byte limit")
    return LENGTH.pack(len(packed)) + packed


def encode_request(req: Request) -> bytes:
    return _frame([req.call_id, req.operation, req.headers, req.data])


def encode_reply(reply: Reply) -> bytes:
    return _frame([reply.call_id, reply.headers, reply.data])


def frame_length(prefix: bytes) -> int:
    """The body length a 4-byte prefix announces; FrameError when over the limit."""
    (n,) = LENGTH.unpack(prefix)
    if n > MAX_FRAME:
        raise FrameError(f"frame announces {n} bytes, over the {MAX_FRAME}-byte limit")
    return n


def _unpack(body: bytes, size: int, what: str) -> list[Any]:
    try:
        value = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"{what} is not msgpack: {type(exc).__name__}") from None
    if not isinstance(value, list) or len(value) != size:
        raise FrameError(f"{what} must be an array of {size} items")
    if not isinstance(value[0], int) or isinstance(value[0], bool):
        raise FrameError(f"{what}: call id must be an integer")
    return value


def _headers(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise FrameError(f"{what}: headers must be a map of strings to strings")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise FrameError(f"{what}: data must be bytes, got {type(value).__name__}")
    return value


def decode_request(body: bytes) -> Request:
    call_id, operation, headers, data = _unpack(body, 4, "request frame")
    if not isinstance(operation, str) or not operation:
        raise FrameError("request frame: operation must be a non-empty string")
    return Request(
        call_id,
        operation,
        _headers(headers, "request frame"),
        _bytes(data, "request frame"),
    )


def decode_reply(body: bytes) -> Reply:
    call_id, headers, data = _unpack(body, 3, "reply frame")
    return Reply(
        call_id,
        None if headers is None else _headers(headers, "reply frame"),
        _bytes(data, "reply frame"),
    )
