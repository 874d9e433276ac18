"""Link settings and wire values of wasmcloud:messaging, validated. Pure: no I/O, no logs.

Source links (provider → component) carry their settings in `source_config`:

    subscriptions   comma-separated NATS subjects (wildcards allowed), at least one
    queue_group     optional; every subscription of the link joins this queue group
    url             optional; another NATS server (default: the lattice NATS)
    max_in_flight   optional; concurrent handle-message calls for the link (default 256)

Target links (component → provider) may set `url` in `target_config` (default: the
lattice NATS). Errors are `ValueError`s naming the setting; they never echo a URL,
which may carry a password or token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lattice.protocol.invocation import ErrorKind, InvocationError

DEFAULT_MAX_IN_FLIGHT = 256
MAX_IN_FLIGHT_LIMIT = 10_000


def shown(url: str) -> str:
    """`nats://host:port` for logs and messages: never a user, password or token."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        port = parts.port or 4222
    except ValueError:
        port = "?"
    return f"{parts.scheme}://{parts.hostname or '?'}:{port}"


def check_url(url: str, where: str) -> str:
    """A NATS URL as nats-py accepts it (`nats://`, `tls://`, `ws(s)://`, or host:port)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.scheme not in ("nats", "tls", "ws", "wss"):
        raise ValueError(f"'url' in the link's {where} must be a nats://, tls:// or ws(s):// URL")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ValueError(f"'url' in the link's {where} has an invalid port") from None
    if not parts.hostname:
        raise ValueError(f"'url' in the link's {where} names no host")
    return url


def subject_problem(subject: str, *, wildcards: bool) -> str | None:
    """Why `subject` is not a valid NATS subject (to subscribe to, or publish on), or None."""
    if not subject:
        return "is empty"
    if any(c.isspace() for c in subject):
        return "contains whitespace"
    tokens = subject.split(".")
    if any(t == "" for t in tokens):
        return "has an empty token"
    for i, token in enumerate(tokens):
        if token in ("*", ">"):
            if not wildcards:
                return "contains a wildcard"
            if token == ">" and i != len(tokens) - 1:
                return "has '>' before the last token"
        elif "*" in token or ">" in token:
            return f"has a wildcard inside token {token!r}"
    return None


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """What a source link asks for: subjects to deliver, from which server, how."""

    subscriptions: tuple[str, ...]
    queue_group: str | None = None
    url: str | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    @classmethod
    def parse(cls, config: Mapping[str, str]) -> SourceSettings:
        raw = config.get("subscriptions", "")
        subjects = tuple(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))
        if not subjects:
            raise ValueError(
                "no 'subscriptions' in the link's source config "
                "(comma-separated NATS subjects, e.g. 'orders.*,audit.>')"
            )
        for subject in subjects:
            problem = subject_problem(subject, wildcards=True)
            if problem:
                raise ValueError(f"subscription {subject!r} {problem}")
        queue = config.get("queue_group", "").strip() or None
        if queue is not None and (any(c.isspace() for c in queue) or "*" in queue):
            raise ValueError(f"queue_group {queue!r} must not contain whitespace or '*'")
        url = config.get("url", "").strip() or None
        if url is not None:
            check_url(url, "source config")
        limit = config.get("max_in_flight", "").strip()
        in_flight = DEFAULT_MAX_IN_FLIGHT
        if limit:
            if not limit.isdigit() or not 1 <= int(limit) <= MAX_IN_FLIGHT_LIMIT:
                raise ValueError(f"max_in_flight must be a number from 1 to {MAX_IN_FLIGHT_LIMIT}")
            in_flight = int(limit)
        return cls(subjects, queue, url, in_flight)


def target_url(config: Mapping[str, str]) -> str | None:
    """The NATS URL a target link publishes on; None means the lattice NATS."""
    url = config.get("url", "").strip() or None
    return None if url is None else check_url(url, "target config")


@dataclass(frozen=True, slots=True)
class BrokerMessage:
    """`wasmcloud:messaging/types.broker-message`."""

    subject: str
    body: bytes
    reply_to: str | None = None

    @classmethod
    def from_wire(cls, value: Any, what: str = "msg") -> BrokerMessage:
        """Decode the wire record; a wrong *type* is a `bad-argument` invocation error."""
        if not isinstance(value, dict):
            raise _bad(f"{what} must be a broker-message map, got {type(value).__name__}")
        unknown = sorted(str(k) for k in value if k not in ("subject", "body", "reply-to"))
        if unknown:
            raise _bad(f"{what} has unknown field(s) {', '.join(unknown)}")
        subject, body, reply_to = value.get("subject"), value.get("body"), value.get("reply-to")
        if not isinstance(subject, str):
            raise _bad(f"{what}.subject must be a string")
        return cls(subject, wire_bytes(body, f"{what}.body"), _opt_str(reply_to, what))

    def to_wire(self) -> dict[str, Any]:
        return {"subject": self.subject, "body": self.body, "reply-to": self.reply_to}


def wire_bytes(value: Any, what: str) -> bytes:
    """`list<u8>` on the wire: bin (or an array of ints 0..255, as the codec accepts)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in value):
        return bytes(value)
    raise _bad(f"{what} must be bin (list<u8>)")


def _opt_str(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise _bad(f"{what}.reply-to must be a string or nil")


def _bad(message: str) -> InvocationError:
    return InvocationError(ErrorKind.BAD_ARGUMENT, message)
