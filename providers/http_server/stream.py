"""The caller's side of one HTTP exchange over NATS (the contract is docs/http.md).

`Exchanges` owns one wildcard subscription on a private inbox prefix; each exchange gets
`{prefix}.{token}` as its reply inbox and an `asyncio.Queue` that the subscription
callback feeds (it never blocks: nats-py runs one callback at a time per subscription).
Credit messages (`{t: ack, n}`) are folded into the exchange's send credit instead of
being queued. The host's messages to one inbox come from one connection, so they
arrive in order.

`Exchange.start` sends the request head as a NATS request to
`{lattice}.{component_id}.http`; the host answers `{inbox, window}` (or refuses with
`{status, message}`). `send_body` streams the request body to the host inbox with at
most `window` chunks unacknowledged; `next` returns the host's next message (head,
data, end, err); `ack` acknowledges consumed response chunks; `cancel` tells the host
the client is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

CHUNK = 64 * 1024
"""Bytes per request body message."""
ACCEPT_TIMEOUT = 5.0
"""Seconds for a host to accept an exchange (no responders fails at once)."""
IDLE_TIMEOUT = 30.0
"""Seconds without progress from the host (credit or a message) before giving up."""


def pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class Refused(Exception):
    """The host would not take the exchange; `status` and the message are for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Stalled(Exception):
    """The other side made no progress within `IDLE_TIMEOUT`."""


@dataclass(eq=False)
class Exchange:
    nc: NATS
    id: str
    inbox: str
    messages: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    host_inbox: str = ""
    window: int = 8
    acked: int = 0  # request chunks the host has consumed
    consumed: int = 0  # response chunks we have consumed
    credit: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def deliver(self, message: dict[str, Any]) -> None:
        if message.get("t") == "ack":
            self.acked = max(self.acked, int(message.get("n", 0)))
            self.credit.set()
        else:
            self.messages.put_nowait(message)

    async def start(self, subject: str, head: dict[str, Any]) -> None:
        """Send the head; raises `Refused`, nats NoRespondersError or TimeoutError."""
        reply = await self.nc.request(
            subject, pack({**head, "id": self.id, "reply": self.inbox}), timeout=ACCEPT_TIMEOUT
        )
        accept = msgpack.unpackb(reply.data, raw=False)
        if "inbox" not in accept:
            raise Refused(int(accept.get("status", 502)), str(accept.get("message", "refused")))
        self.host_inbox = str(accept["inbox"])
        self.window = max(1, int(accept.get("window", 8)))

    async def send_body(self, chunks: AsyncIterable[bytes]) -> None:
        """Stream the request body under the host's credit; `err` if reading it fails."""
        sent = 0
        try:
            async for chunk in chunks:
                while sent >= self.acked + self.window:
                    if self.closed:
                        return
                    self.credit.clear()
                    try:
                        await asyncio.wait_for(self.credit.wait(), IDLE_TIMEOUT)
                    except TimeoutError:
                        raise Stalled("the host gave no credit for the request body") from None
                if self.closed:
                    return
                await self.nc.publish(self.host_inbox, pack({"t": "data", "d": bytes(chunk)}))
                sent += 1
        except (Stalled, asyncio.CancelledError):
            raise
        except Exception as exc:
            if not self.closed:
                message = f"request body failed: {type(exc).__name__}: {exc}"
                await self.nc.publish(self.host_inbox, pack({"t": "err", "message": message}))
            raise
        if not self.closed:
            await self.nc.publish(self.host_inbox, pack({"t": "end"}))

    async def next(self, timeout: float = IDLE_TIMEOUT) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self.messages.get(), timeout)
        except TimeoutError:
            raise Stalled("the host sent nothing") from None

    async def ack(self) -> None:
        """One response chunk consumed; credit goes back every `window // 2` chunks."""
        self.consumed += 1
        if self.consumed % max(1, self.window // 2) == 0:
            await self.nc.publish(self.host_inbox, pack({"t": "ack", "n": self.consumed}))

    async def cancel(self) -> None:
        if self.host_inbox:
            await self.nc.publish(self.host_inbox, pack({"t": "cancel"}))


class Exchanges:
    """Every exchange of one provider process, behind one inbox subscription."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.prefix = f"{nc.new_inbox()}.h"
        self.open: dict[str, Exchange] = {}
        self.sub: Subscription | None = None
        self._ids = itertools.count()
        self._run = secrets.token_hex(4)

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(f"{self.prefix}.*", cb=self._route)

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()
            self.sub = None

    def new(self) -> Exchange:
        n = next(self._ids)
        ex = Exchange(self.nc, f"{self._run}-{n}", f"{self.prefix}.{n}")
        self.open[str(n)] = ex
        return ex

    def close(self, ex: Exchange) -> None:
        ex.closed = True
        ex.credit.set()
        self.open.pop(ex.inbox.rsplit(".", 1)[1], None)

    async def _route(self, msg: Msg) -> None:
        ex = self.open.get(msg.subject.rsplit(".", 1)[1])
        if ex is None:
            return
        try:
            message = msgpack.unpackb(msg.data, raw=False)
        except Exception:
            message = {"t": "err", "message": "malformed message from the host"}
        if isinstance(message, dict):
            ex.deliver(message)
