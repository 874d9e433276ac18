"""The invocation (data plane) contract between callers and components.

A call is a NATS request on `{lattice}.{component_id}.rpc.{interface}.{function}` whose
body is the msgpack array of arguments (or a map by parameter name). A successful reply
is the msgpack of the result (nil when the function returns nothing). A failed call is
answered, never left to time out, with the header `lattice-error: <kind>` and a msgpack
map `{"kind": kind, "message": text}` so every client can tell a trap from a bad
argument from a missing function.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ERROR_HEADER = "lattice-error"
SOURCE_HEADER = "source-id"
LINK_NAME_HEADER = "link-name"
TRACEPARENT_HEADER = "traceparent"
HOST_HEADER = "lattice-host"  # on every reply: which host served the call


class ErrorKind(StrEnum):
    BAD_ARGUMENT = "bad-argument"
    UNKNOWN_FUNCTION = "unknown-function"
    TRAP = "trap"
    TIMEOUT = "timeout"
    RESOURCE_LIMIT = "resource-limit"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    NOT_LINKED = "not-linked"  # the target holds no such link and applied nothing


@dataclass(eq=False)
class InvocationError(Exception):
    """A call that failed at the callee; `kind` says whose fault it is.

    Not frozen, not slotted: raising sets `__traceback__` and friends on an exception,
    and a frozen (or slotted) dataclass refuses that, so one re-raised through a
    `with` block (contextlib assigns `__traceback__`) came out as a TypeError."""

    kind: ErrorKind
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    def to_body(self) -> dict[str, str]:
        return {"kind": str(self.kind), "message": self.message}

    @classmethod
    def from_body(cls, body: object, header_kind: str | None) -> InvocationError:
        if isinstance(body, dict):
            kind = body.get("kind", header_kind)
            message = str(body.get("message", ""))
        else:
            kind, message = header_kind, repr(body)
        try:
            return cls(ErrorKind(kind), message)
        except ValueError:
            return cls(ErrorKind.INTERNAL, f"{kind}: {message}")
