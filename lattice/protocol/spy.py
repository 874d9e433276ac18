"""The `lattice spy` wire format: a lease asking hosts to tap one component, and the
record of one tapped call.

A spy publishes a `SpyWatch` on `wasmbus.spy.{lattice}.{component_id}.watch` every
`RENEW_S` seconds; each host running the component then sends a `SpyRecord` for every
call in or out of it to the spy's inbox, until the lease runs out (`LEASE_S` after the
last renewal) or the spy says `…unwatch`. So a spy that stops costs nothing within a
few seconds, even when it dies without a word. Records carry short previews of the
arguments and the reply, never more than `PREVIEW_CHARS` characters each.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LEASE_S = 6.0
RENEW_S = 2.0
PREVIEW_CHARS = 200
SPY_PREFIX = "wasmbus.spy"


def watch_subject(lattice: str, component_id: str) -> str:
    return f"{SPY_PREFIX}.{lattice}.{component_id}.watch"


def unwatch_subject(lattice: str, component_id: str) -> str:
    return f"{SPY_PREFIX}.{lattice}.{component_id}.unwatch"


def host_wildcard(lattice: str) -> str:
    """What a host subscribes to: every watch and unwatch of its lattice."""
    return f"{SPY_PREFIX}.{lattice}.*.*"


class SpyWatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    inbox: str = Field(min_length=1)


class SpyRecord(BaseModel):
    """One call seen by a host: `in` is a call to the component, `out` a call it made
    through a link."""

    model_config = ConfigDict(frozen=True)

    at: float
    host_id: str
    component_id: str
    direction: Literal["in", "out"]
    caller: str  # who called: a component id, "lattice-cli", or "" when unknown
    function: str  # ns:pkg/iface.fn (or a world-level function's name)
    link: str = ""  # link name of an outbound call
    target: str = ""  # who served an outbound call
    duration_ms: float
    outcome: str  # "ok", or the error kind
    error: str = ""
    request_bytes: int
    reply_bytes: int
    request: str = ""  # preview, JSON
    reply: str = ""  # preview, JSON
