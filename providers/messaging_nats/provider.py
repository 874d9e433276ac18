"""The messaging-nats provider: wasmcloud:messaging@0.2.0 on NATS, both directions.

Source role (link messaging-nats → component, `wasmcloud:messaging`, interface
`handler`): `on_source_link_put` parses the link's source config (`settings.py`),
takes the connection it names (`connections.py`) and starts a `Delivery`
(`delivery.py`) that subscribes and calls the component's `handle-message` for every
message. `linkdefs.put` answers once the subscriptions are in place (when the server is
reachable within `subscribe_wait`; otherwise they follow when it connects). Link del,
or a changed link, unsubscribes first.

Target role (link component → messaging-nats, interface `consumer`): the component's
`publish` and `request` go to the NATS of the link's target config `url`, else to the
lattice NATS. Every outcome is a `result`: `{"ok": …}` or `{"err": "…"}` — a server
that is not connected, no responders, a timeout, an invalid subject; argument *types*
that do not match the WIT are `bad-argument` invocation errors.

Health: healthy when every connection in use (the lattice one included) is connected;
the message names each one that is not, with the links that use it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors

from providers.messaging_nats.connections import Connection, ConnectionPool
from providers.messaging_nats.delivery import Delivery
from providers.messaging_nats.settings import (
    BrokerMessage,
    SourceSettings,
    subject_problem,
    target_url,
    wire_bytes,
)
from providers.sdk import ErrorKind, HostData, InvocationError, Link, LinkKey, Provider, operation

NAMESPACE = "wasmcloud"
PACKAGE = "messaging"
CONSUMER = "wasmcloud:messaging/consumer"


def _wit_check(link: Link, interface: str) -> None:
    if (link.wit_namespace, link.wit_package) != (NAMESPACE, PACKAGE):
        raise ValueError(
            f"messaging-nats serves {NAMESPACE}:{PACKAGE} links only, "
            f"not {link.wit_namespace}:{link.wit_package}"
        )
    if interface not in link.interfaces:
        raise ValueError(
            f"the link's interfaces ({', '.join(link.interfaces) or 'none'}) "
            f"do not include {interface!r}"
        )


class MessagingNatsProvider(Provider):
    """wasmcloud:messaging over NATS: subscriptions for source links, publish/request
    for target links."""

    handle_timeout: float = 30.0
    """Seconds a component may take over one `handle-message` before it is logged."""
    subscribe_wait: float = 2.0
    """Seconds `linkdefs.put` waits for another server to connect before answering."""

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self._deliveries: dict[LinkKey, Delivery] = {}
        self._targets: dict[LinkKey, tuple[str | None, Connection]] = {}
        self._pool: ConnectionPool | None = None

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(self.nats, self.log, f"provider {self.provider_id}")
        return self._pool

    # ------------------------------------------------------------------ source role

    async def on_source_link_put(self, link: Link) -> None:
        _wit_check(link, "handler")
        settings = SourceSettings.parse(link.source_config)
        conn = self.pool.acquire(settings.url)
        delivery = Delivery(
            link=link,
            settings=settings,
            conn=conn,
            lattice_nc=self.nats,
            lattice=self.lattice,
            provider_id=self.provider_id,
            timeout=self.handle_timeout,
            log=self.log,
        )
        try:
            await delivery.start(self.subscribe_wait)
        except Exception as exc:
            await self.pool.release(settings.url)
            raise ValueError(f"subscribing on {conn.where} failed: {exc}") from None
        self._deliveries[link.key] = delivery

    async def on_source_link_del(self, link: Link) -> None:
        delivery = self._deliveries.pop(link.key, None)
        if delivery is not None:
            await delivery.stop()
            await self.pool.release(delivery.settings.url)

    # ------------------------------------------------------------------ target role

    async def on_link_put(self, link: Link) -> None:
        _wit_check(link, "consumer")
        url = target_url(link.target_config)
        conn = self.pool.acquire(url)
        self._targets[link.key] = (url, conn)
        self.log.info("serving consumer", source_id=link.source_id, nats=conn.where)

    async def on_link_del(self, link: Link) -> None:
        target = self._targets.pop(link.key, None)
        if target is not None:
            await self.pool.release(target[0])

    def _conn_for(self, link: Link) -> Connection:
        target = self._targets.get(link.key)
        return self.pool.lattice if target is None else target[1]

    @operation(f"{CONSUMER}.publish", params=("msg",))
    async def publish(self, link: Link, args: list[Any]) -> dict[str, Any]:
        msg = BrokerMessage.from_wire(args[0])
        problem = subject_problem(msg.subject, wildcards=False)
        if problem:
            return {"err": f"cannot publish: subject {msg.subject!r} {problem}"}
        if msg.reply_to is not None:
            problem = subject_problem(msg.reply_to, wildcards=False)
            if problem:
                return {"err": f"cannot publish: reply-to {msg.reply_to!r} {problem}"}
        conn = self._conn_for(link)
        if not conn.connected:
            return {"err": f"cannot publish to {msg.subject}: not connected to {conn.where}"}
        try:
            await conn.nc.publish(msg.subject, msg.body, reply=msg.reply_to or "")
        except nats.errors.Error as exc:
            return {"err": f"publish to {msg.subject} failed: {exc}"}
        return {"ok": None}

    @operation(f"{CONSUMER}.request", params=("subject", "body", "timeout_ms"))
    async def request(self, link: Link, args: list[Any]) -> dict[str, Any]:
        subject, raw_body, timeout_ms = args
        if not isinstance(subject, str):
            raise InvocationError(ErrorKind.BAD_ARGUMENT, "subject must be a string")
        body = wire_bytes(raw_body, "body")
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 0:
            raise InvocationError(ErrorKind.BAD_ARGUMENT, "timeout_ms must be a u32")
        problem = subject_problem(subject, wildcards=False)
        if problem:
            return {"err": f"cannot request: subject {subject!r} {problem}"}
        conn = self._conn_for(link)
        if not conn.connected:
            return {"err": f"cannot request on {subject}: not connected to {conn.where}"}
        # leave the SDK's call timeout room to answer with our own message
        wait_ms = min(timeout_ms, int(self.call_timeout * 1000) - 1000)
        try:
            reply = await conn.nc.request(subject, body, timeout=max(wait_ms, 1) / 1000)
        except nats.errors.NoRespondersError:
            return {"err": f"no responders on {subject}"}
        except (nats.errors.TimeoutError, TimeoutError):
            return {"err": f"timed out after {wait_ms} ms waiting for a reply on {subject}"}
        except nats.errors.Error as exc:
            return {"err": f"request on {subject} failed: {exc}"}
        return {"ok": BrokerMessage(reply.subject, reply.data, reply.reply or None).to_wire()}

    # ------------------------------------------------------------------ health, stop

    async def health(self) -> tuple[bool, str]:
        users: dict[str, list[str]] = {}
        for key, delivery in self._deliveries.items():
            users.setdefault(delivery.conn.where, []).append(f"{key.name}->{delivery.link.target}")
        for key, (_, conn) in self._targets.items():
            users.setdefault(conn.where, []).append(f"{key.source_id}/{key.name}")
        down = [
            f"{conn.where} not connected"
            + (f" (links {', '.join(users[conn.where])})" if conn.where in users else "")
            for conn in self.pool.all()
            if not conn.connected
        ]
        if down:
            return False, "; ".join(down)
        subs = sum(len(d.settings.subscriptions) for d in self._deliveries.values())
        waiting = sum(1 for d in self._deliveries.values() if not d.subscribed)
        return True, (
            f"{len(self.pool.all())} nats connection(s) up; {len(self._deliveries)} source "
            f"link(s) with {subs} subscription(s)"
            + (f" ({waiting} link(s) still subscribing)" if waiting else "")
            + f"; {len(self._targets)} target link(s)"
        )

    async def on_shutdown(self) -> None:
        deliveries = list(self._deliveries.values())
        self._deliveries.clear()
        for delivery in deliveries:
            await delivery.stop()
        await asyncio.gather(*(d.wait_idle(self.shutdown_timeout) for d in deliveries))
        if self._pool is not None:
            await self._pool.close_all()
