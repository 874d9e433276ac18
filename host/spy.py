"""The host side of `lattice spy`: tap the calls in and out of watched components.

A spy asks for a component with a lease (lattice/protocol/spy.py); while a lease is
live this host sends a `SpyRecord` for each call the component serves (the inbound
path in host/components.py) and each call it makes through a link (the outbound path
in host/runtime/imports.py) to the spy's inbox. Both hooks ask `active(component_id)`
first: a lookup in a dict that is empty when nobody spies, so the cost falls only on
the component spied on, and a spy that has gone costs nothing once its lease ends.

The watch table is replaced, never mutated, so worker threads read it without a lock
(a same-host link call taps its callee inbound on the caller's thread).
Records are built on the calling thread and published from the host's event loop. It
never changes a call: the caller gets the same reply, at the same moment, spied or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from lattice import codec
from lattice.protocol.invocation import SOURCE_HEADER, InvocationError
from lattice.protocol.links import find_link
from lattice.protocol.spy import (
    LEASE_S,
    PREVIEW_CHARS,
    SPY_PREFIX,
    SpyRecord,
    SpyWatch,
    host_wildcard,
)

log = structlog.get_logger("lattice.spy")

Done = Callable[[Any, InvocationError | None], None]


def preview(value: Any) -> str:
    """A short JSON rendering of a wire value, for people reading a spy."""
    try:
        text = json.dumps(codec.to_json_compatible(value), ensure_ascii=False, default=str)
    except Exception:
        text = repr(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def preview_packed(data: bytes | None) -> str:
    if not data:
        return ""
    try:
        return preview(codec.unpack(data))
    except Exception:
        return f"<{len(data)} bytes>"


class Spy:
    def __init__(self, nc: NATS, lattice: str, host_id: str) -> None:
        self.nc = nc
        self.lattice = lattice
        self.host_id = host_id
        self.loop = asyncio.get_running_loop()
        self._watching: dict[str, dict[str, float]] = {}  # component -> inbox -> expiry
        self._sub: Subscription | None = None

    @classmethod
    async def attach(cls, host: Any) -> Spy:
        """Start listening for spies and hook into the host's component manager and
        import bridge (both read `spy` before tapping)."""
        spy = cls(host.nc, host.lattice, host.host_id)
        spy._sub = await host.nc.subscribe(host_wildcard(host.lattice), cb=spy._on_watch)
        host.components.spy = spy
        host.bridge.spy = spy
        return spy

    # -- leases -----------------------------------------------------------------

    async def _on_watch(self, msg: Msg) -> None:
        parts = msg.subject.split(".")
        if len(parts) != len(SPY_PREFIX.split(".")) + 3:
            return
        component_id, verb = parts[-2], parts[-1]
        try:
            watch = SpyWatch.model_validate_json(msg.data)
        except ValueError:
            return
        now = time.monotonic()
        table = {c: {i: e for i, e in w.items() if e > now} for c, w in self._watching.items()}
        inboxes = table.get(component_id, {})
        if verb == "watch":
            inboxes[watch.inbox] = now + LEASE_S
        elif verb == "unwatch":
            inboxes.pop(watch.inbox, None)
        table[component_id] = inboxes
        self._watching = {c: w for c, w in table.items() if w}

    def active(self, component_id: str) -> bool:
        """Whether calls of `component_id` are to be tapped now (cheap when nobody spies)."""
        inboxes = self._watching.get(component_id)
        if not inboxes:
            return False
        now = time.monotonic()
        return any(e > now for e in inboxes.values())

    # -- taps -------------------------------------------------------------------

    def inbound(self, component_id: str, function: str, msg: Msg, done: Done) -> Done:
        """Wrap the reply callback of one served call so its outcome is recorded."""
        started = time.perf_counter()
        caller = (msg.headers or {}).get(SOURCE_HEADER, "")
        request = msg.data

        def tapped(body: Any, error: InvocationError | None) -> None:
            done(body, error)
            with contextlib.suppress(Exception):  # a spy never breaks a call
                self._record(
                    component_id,
                    direction="in",
                    caller=caller,
                    function=function,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    outcome="ok" if error is None else str(error.kind),
                    error="" if error is None else error.message,
                    request_bytes=len(request),
                    reply_bytes=len(body) if isinstance(body, bytes | bytearray) else 0,
                    request=preview_packed(request),
                    reply=preview_packed(body) if error is None else "",
                )

        return tapped

    def outbound(
        self,
        invoke: Callable[..., Any],
        component_id: str,
        iface: Any,
        operation: str,
        wire_args: list[Any],
        timeout_ms: int,
    ) -> Any:
        """Run one outbound link call through `invoke` (the bridge's own, untapped: a
        same-host callee running inside it is tapped on its own) and record it."""
        started = time.perf_counter()
        outcome, error, reply = "ok", "", None
        try:
            reply = invoke(component_id, iface, operation, wire_args, timeout_ms)
            return reply
        except Exception as exc:
            outcome, error = "error", str(exc)
            raise
        finally:
            with contextlib.suppress(Exception):
                bridge = getattr(invoke, "__self__", None)
                name, target = "", ""
                if bridge is not None:
                    name = bridge.link_name(component_id, iface.namespace, iface.package)
                    link = find_link(
                        bridge.links,
                        component_id,
                        iface.namespace,
                        iface.package,
                        iface.interface,
                        name,
                    )
                    target = link.target if link is not None else ""
                self._record(
                    component_id,
                    direction="out",
                    caller=component_id,
                    function=operation,
                    link=name,
                    target=target,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    outcome=outcome,
                    error=error,
                    request_bytes=len(codec.pack(wire_args)),
                    reply_bytes=len(codec.pack(reply)) if outcome == "ok" else 0,
                    request=preview(wire_args),
                    reply=preview(reply) if outcome == "ok" else "",
                )

    def _record(self, component_id: str, **fields: Any) -> None:
        record = SpyRecord(
            at=time.time(), host_id=self.host_id, component_id=component_id, **fields
        )
        data = record.model_dump_json().encode()
        now = time.monotonic()
        inboxes = [i for i, e in self._watching.get(component_id, {}).items() if e > now]
        for inbox in inboxes:
            self.loop.call_soon_threadsafe(self._publish, inbox, data)

    def _publish(self, inbox: str, data: bytes) -> None:
        task = asyncio.ensure_future(self.nc.publish(inbox, data))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
