"""Outgoing HTTP for components: the allowlist and the host ⇄ http-client wire contract.

Pure (no I/O), shared by the host's own outgoing HTTP (`host.wasi.outgoing`), the host's
side of a linked `wasi:http/outgoing-handler` (`host.wasi.outgoing_link`) and the
`builtin://http-client` provider, so the three agree on who may be called and on every
message. The contract is docs/wasi-http.md, "Outgoing HTTP through a provider".

The exchange is the incoming protocol of docs/http.md with the roles swapped: the host
is the caller, the provider the server.

1. Head: NATS request to `subject(lattice, provider)` (queue group `queue(...)`):
   `Head` packed with msgpack. Answer `{inbox, window}`, or `{code, message}`: a WASI
   `error-code` case (`HTTP-request-denied` …) or `not-linked` (nothing was done: the
   host may re-read the link and send again, the link hand-off).
2. Request body (when `head.body`), host → provider inbox: `{t: data, d}` … `{t: end}` or
   `{t: err, message}`; at most `window` chunks unacknowledged, the provider acks
   `{t: ack, n}` as it hands chunks to the HTTP connection.
3. Response, provider → `head.reply`: `{t: head, status, headers}`, then `{t: data, d}`
   under the host's acks (`{t: ack, n}`, sent as the guest's pipe takes chunks), then
   `{t: end}`; a failure is `{t: err, code, message}` (before or after the head).
4. `{t: cancel}` host → provider: the component went away; the request is aborted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, Field

PROTOCOL_VERSION = 1
WINDOW = 8
"""Chunks (each ≤ `CHUNK`) a sender may have unacknowledged, in each direction."""
CHUNK = 64 * 1024
IDLE_TIMEOUT = 30.0
"""Seconds without progress from the other side before an exchange is given up."""
ACCEPT_TIMEOUT = 5.0
"""Seconds for the provider to accept or refuse a head."""
INTERFACE = "outgoing-handler"
OPERATION = "wasi:http/outgoing-handler.handle"
NOT_LINKED = "not-linked"
DENIED = "HTTP-request-denied"

OutgoingPolicy = Callable[[str, int], bool]  # (host, port) -> allowed


def subject(lattice: str, target: str) -> str:
    return f"{lattice}.{target}.http.out"


def queue(lattice: str, target: str) -> str:
    return f"http-out.{lattice}.{target}"


def allowlist(patterns: Iterable[str]) -> OutgoingPolicy:
    """A policy from patterns: `host`, `host:port`, `*.suffix`, or `*`; none denies all."""
    rules = [p.strip().lower() for p in patterns if p.strip()]

    def allowed(host: str, port: int) -> bool:
        host = host.lower()
        for rule in rules:
            if rule == "*":
                return True
            name, _, rport = rule.partition(":")
            if rport and rport != str(port):
                continue
            if name == host or (name.startswith("*.") and host.endswith(name[1:])):
                return True
        return False

    return allowed


def allowlist_of(config: Mapping[str, str]) -> OutgoingPolicy:
    """The policy a config's `allowed_hosts` (comma-separated patterns) sets."""
    return allowlist(config.get("allowed_hosts", "").split(","))


def split_authority(authority: str, scheme: str) -> tuple[str, int]:
    """(host, port) of `host[:port]` / `[v6]:port`, the port defaulting by scheme."""
    host, _, port_text = authority.rpartition(":")
    if not host or not port_text.isdigit():
        host, port_text = authority, "443" if scheme == "https" else "80"
    return host.strip("[]"), int(port_text)


def url_of(scheme: str, authority: str, path: str) -> str:
    """The request URL; ValueError when the parts could name a host other than
    `authority` (the allowlist is checked against the authority)."""
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {scheme!r}")
    if not authority or any(c in authority for c in "/?#@\\ "):
        raise ValueError(f"authority {authority!r} is not host[:port]")
    path = path or "/"
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} does not start with '/'")
    return f"{scheme}://{authority}{path}"


class Head(BaseModel):
    """The request head the host sends to the provider."""

    v: int = PROTOCOL_VERSION
    id: str = ""
    source: str = Field(min_length=1)  # the component making the request
    link_name: str = "default"
    method: str = "GET"
    scheme: str = "https"
    authority: str = Field(min_length=1)
    path: str = "/"
    headers: list[tuple[str, bytes]] = Field(default_factory=list)
    reply: str = Field(min_length=1)
    body: bool = False
    # the guest's request-options, in nanoseconds (None: not set)
    connect_ns: int | None = None
    first_byte_ns: int | None = None
    between_bytes_ns: int | None = None


TIMEOUT_KEYS = {
    "connect": "connect_timeout_ms",
    "first_byte": "first_byte_timeout_ms",
    "between_bytes": "between_bytes_timeout_ms",
}


@dataclass(frozen=True)
class Timeouts:
    """Seconds for each phase; None means no limit beyond the component's deadline."""

    connect: float | None = 10.0
    first_byte: float | None = 60.0
    between_bytes: float | None = 60.0

    @classmethod
    def from_config(cls, config: Mapping[str, str]) -> Timeouts:
        """From a link's config (`connect_timeout_ms` …); ValueError names a bad key."""
        base = cls()
        values: dict[str, float | None] = {}
        for attr, key in TIMEOUT_KEYS.items():
            raw = config.get(key)
            if raw is None or not raw.strip():
                values[attr] = getattr(base, attr)
                continue
            try:
                ms = float(raw)
            except ValueError:
                raise ValueError(f"{key}={raw!r} is not a number of milliseconds") from None
            if ms < 0:
                raise ValueError(f"{key}={raw!r} must not be negative")
            values[attr] = None if ms == 0 else ms / 1000
        return cls(**values)

    def narrowed(self, head: Head) -> Timeouts:
        """The guest's request-options apply where they are shorter than the link's."""

        def pick(mine: float | None, ns: int | None) -> float | None:
            if ns is None or ns <= 0:
                return mine
            theirs = ns / 1e9
            return theirs if mine is None else min(mine, theirs)

        return Timeouts(
            pick(self.connect, head.connect_ns),
            pick(self.first_byte, head.first_byte_ns),
            pick(self.between_bytes, head.between_bytes_ns),
        )
