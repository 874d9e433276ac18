"""Delivering one source link's messages to its component's `handle-message` export.

A `Delivery` subscribes to the link's subjects (in its queue group, if any) on the
link's NATS connection and turns every message into a lattice invocation:

    request  {lattice}.{component_id}.rpc.wasmcloud:messaging/handler.handle-message
    body     msgpack [{"subject": s, "body": <bin>, "reply-to": r or nil}]
    headers  source-id: <provider id>, link-name: <link name> (and the message's
             traceparent, if it has one)

always on the lattice connection, whichever server the message came from. The
component answers the message itself, if it wants to, by publishing to `reply-to`
through `wasmcloud:messaging/consumer`.

Flow control: nats-py runs one callback at a time per subscription, so the callback
never awaits. It starts a task while fewer than `max_in_flight` calls are running for
the link; otherwise the message waits in a backlog (`max_backlog`) and the next task to
finish takes it. Past that the message is dropped and a warning says so (the first
drop at once, then one summary line per second with the count), so no message is ever
dropped without a log line. Every outcome other than success (the component is not
running, does not answer in time, traps, or returns `err`) is logged with the
provider, component and link; nothing here raises into NATS or the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from lattice import codec
from lattice.protocol.invocation import (
    ERROR_HEADER,
    LINK_NAME_HEADER,
    SOURCE_HEADER,
    TRACEPARENT_HEADER,
    InvocationError,
)
from providers.messaging_nats.connections import Connection
from providers.messaging_nats.settings import SourceSettings
from providers.sdk import Link

HANDLE_MESSAGE = "wasmcloud:messaging/handler.handle-message"


class Delivery:
    """The subscriptions of one source link and the calls they make."""

    max_backlog: int = 4096
    """Messages waiting for a free call slot before new ones are dropped."""
    drop_report_interval: float = 1.0
    """Seconds between summary log lines while messages are being dropped."""

    def __init__(
        self,
        *,
        link: Link,
        settings: SourceSettings,
        conn: Connection,
        lattice_nc: NATS,
        lattice: str,
        provider_id: str,
        timeout: float,
        log: Any,
    ) -> None:
        self.link = link
        self.settings = settings
        self.conn = conn
        self.component_id = link.target
        self.timeout = timeout
        self.subject = f"{lattice}.{link.target}.rpc.{HANDLE_MESSAGE}"
        self.log = log.bind(
            component_id=link.target, link_name=link.name, nats=conn.where, role="source"
        )
        self._lattice_nc = lattice_nc
        self._headers = {SOURCE_HEADER: provider_id, LINK_NAME_HEADER: link.name}
        self._subs: list[Subscription] = []
        self._backlog: deque[Msg] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._starter: asyncio.Task[None] | None = None
        self._stopped = False
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._unreported_drops = 0
        self._drop_why = ""
        self._drop_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def subscribed(self) -> bool:
        return len(self._subs) == len(self.settings.subscriptions)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self, wait: float) -> None:
        """Subscribe now if the connection is up within `wait` seconds, else once it is."""
        if await self.conn.wait_connected(wait):
            await self._subscribe()
            return
        self.log.warning(
            "nats not connected yet; subscribing once it is",
            subscriptions=list(self.settings.subscriptions),
        )
        self._starter = asyncio.create_task(self._subscribe_when_connected())

    async def _subscribe_when_connected(self) -> None:
        while not self._stopped:
            if await self.conn.wait_connected(1.0):
                try:
                    await self._subscribe()
                except Exception as exc:  # retried: the connection may have dropped again
                    self.log.warning("subscribing failed, retrying", error=str(exc))
                    await asyncio.sleep(1.0)
                    continue
                return
            await asyncio.sleep(0.2)

    async def _subscribe(self) -> None:
        nc = self.conn.nc
        queue = self.settings.queue_group or ""
        try:
            for subject in self.settings.subscriptions:
                self._subs.append(await nc.subscribe(subject, queue=queue, cb=self._on_message))
            await nc.flush(timeout=2)
        except BaseException:
            await self._unsubscribe()
            raise
        self.log.info(
            "subscribed",
            subscriptions=list(self.settings.subscriptions),
            queue_group=self.settings.queue_group,
            max_in_flight=self.settings.max_in_flight,
        )

    async def _unsubscribe(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def stop(self) -> None:
        """Unsubscribe and drop the backlog (with a log line); calls in flight go on."""
        self._stopped = True
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starter
        await self._unsubscribe()
        if self._backlog:
            self.log.warning(
                "messages not delivered: the link was removed",
                count=len(self._backlog),
            )
            self.dropped += len(self._backlog)
            self._backlog.clear()
        if self._drop_timer is not None:
            self._drop_timer.cancel()
            self._report_drops()
            if self._drop_timer is not None:
                self._drop_timer.cancel()
                self._drop_timer = None
        self.log.info(
            "unsubscribed",
            delivered=self.delivered,
            failed=self.failed,
            dropped=self.dropped,
            in_flight=self.in_flight,
        )

    async def wait_idle(self, timeout: float) -> None:
        """Wait up to `timeout` for the calls in flight, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            self.log.warning("calls cancelled at shutdown", count=len(pending))

    # ------------------------------------------------------------------ messages

    async def _on_message(self, msg: Msg) -> None:
        """The subscription callback: never awaits (see the module docstring)."""
        if self._stopped:
            self._drop(msg, "the link was removed")
        elif len(self._tasks) < self.settings.max_in_flight:
            task = asyncio.create_task(self._work(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif len(self._backlog) < self.max_backlog:
            self._backlog.append(msg)
        else:
            self._drop(msg, "backlog full")

    async def _work(self, msg: Msg) -> None:
        while True:
            try:
                await self._deliver(msg)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the link's deliveries
                self.failed += 1
                self.log.exception("delivering a message failed", subject=msg.subject)
            if self._stopped or not self._backlog:
                return
            msg = self._backlog.popleft()

    async def _deliver(self, msg: Msg) -> None:
        body = codec.pack(
            [{"subject": msg.subject, "body": msg.data, "reply-to": msg.reply or None}]
        )
        headers = dict(self._headers)
        trace = (msg.headers or {}).get(TRACEPARENT_HEADER)
        if trace:
            headers[TRACEPARENT_HEADER] = trace
        log = self.log.bind(subject=msg.subject, size=len(msg.data))
        try:
            reply = await self._lattice_nc.request(
                self.subject, body, timeout=self.timeout, headers=headers
            )
        except nats.errors.NoRespondersError:
            self.failed += 1
            log.error(
                "message not handled: component is not running (no responders)",
                operation=HANDLE_MESSAGE,
            )
            return
        except (nats.errors.TimeoutError, TimeoutError):
            self.failed += 1
            log.error(
                "message not handled: component did not answer in time",
                operation=HANDLE_MESSAGE,
                timeout_s=self.timeout,
            )
            return
        except nats.errors.Error as exc:
            self.failed += 1
            log.error("message not handled: lattice request failed", error=str(exc))
            return
        self._outcome(reply, log)

    def _outcome(self, reply: Msg, log: Any) -> None:
        kind = (reply.headers or {}).get(ERROR_HEADER)
        try:
            result = codec.unpack(reply.data) if reply.data else None
        except codec.CodecError as exc:
            self.failed += 1
            log.error("message handled, but the reply is not msgpack", error=str(exc))
            return
        if kind is not None:
            err = InvocationError.from_body(result, kind)
            self.failed += 1
            log.error(
                "message not handled: component call failed",
                kind=str(err.kind),
                error=err.message,
            )
        elif isinstance(result, dict) and "err" in result:
            self.failed += 1
            log.error("component returned an error for a message", error=str(result["err"]))
        else:
            self.delivered += 1
            log.debug("message handled")

    def _drop(self, msg: Msg, why: str) -> None:
        """Count a dropped message: the first of a burst is logged at once, the rest in
        one summary line per `drop_report_interval` (and at stop)."""
        self.dropped += 1
        if self._drop_timer is None:
            self.log.warning(
                "message dropped",
                why=why,
                subject=msg.subject,
                backlog=len(self._backlog),
                in_flight=self.in_flight,
                total=self.dropped,
            )
            self._drop_timer = asyncio.get_running_loop().call_later(
                self.drop_report_interval, self._report_drops
            )
        else:
            self._unreported_drops += 1
            self._drop_why = why

    def _report_drops(self) -> None:
        self._drop_timer = None
        if not self._unreported_drops:
            return
        self.log.warning(
            "messages dropped",
            why=self._drop_why,
            count=self._unreported_drops,
            total=self.dropped,
        )
        self._unreported_drops = 0
        self._drop_timer = asyncio.get_running_loop().call_later(
            self.drop_report_interval, self._report_drops
        )
