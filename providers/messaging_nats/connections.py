"""The NATS connections the messaging provider uses: the lattice one and one per other URL.

Links without a `url` use the provider's own lattice connection (owned by the SDK
runner; never closed here). A link naming another server gets a connection to it, shared
by every link naming the same URL and closed when the last of them goes. Such a
connection connects in the background and reconnects forever (nats-py re-subscribes
after a reconnect), so a server that is down when a link arrives is picked up when it
comes back; meanwhile health says which server is not connected, publishes fail fast
and subscriptions wait. Connection errors are logged once per distinct error, state
changes (disconnected, reconnected) always, with the server shown without credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from nats.aio.client import Client as NATS

from providers.messaging_nats.settings import shown

LATTICE = "lattice"


class Connection:
    """One NATS connection; `where` names it in logs ("lattice" or "nats://host:port")."""

    def __init__(self, where: str, nc: NATS, task: asyncio.Task[None] | None = None) -> None:
        self.where = where
        self.nc = nc
        self._task = task  # the background connect of an owned connection
        self.closing = False

    @property
    def owned(self) -> bool:
        return self._task is not None

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the first connect; True when connected now."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return self.connected

    async def close(self) -> None:
        if self._task is None:
            return  # the lattice connection belongs to the SDK runner
        self.closing = True
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        with contextlib.suppress(Exception):
            await self.nc.close()


class ConnectionPool:
    """Reference-counted connections by URL; `None` is the lattice connection."""

    def __init__(self, lattice: NATS, log: Any, name: str) -> None:
        self.lattice = Connection(LATTICE, lattice)
        self._log = log
        self._name = name
        self._conns: dict[str, tuple[Connection, int]] = {}

    def acquire(self, url: str | None) -> Connection:
        if url is None:
            return self.lattice
        conn, refs = self._conns.get(url) or (self._open(url), 0)
        self._conns[url] = (conn, refs + 1)
        return conn

    async def release(self, url: str | None) -> None:
        if url is None or url not in self._conns:
            return
        conn, refs = self._conns[url]
        if refs > 1:
            self._conns[url] = (conn, refs - 1)
            return
        del self._conns[url]
        await conn.close()
        self._log.info("nats connection closed", nats=conn.where)

    def all(self) -> list[Connection]:
        """The lattice connection and every other one in use."""
        return [self.lattice, *(conn for conn, _ in self._conns.values())]

    async def close_all(self) -> None:
        conns, self._conns = self._conns, {}
        for conn, _ in conns.values():
            await conn.close()

    def _open(self, url: str) -> Connection:
        where = shown(url)
        log = self._log.bind(nats=where)
        nc = NATS()
        conn = Connection(where, nc)
        reported: set[str] = set()

        async def on_error(exc: Exception) -> None:
            text = f"{type(exc).__name__}: {exc}"
            if text not in reported:  # nats-py reports every retry; say it once
                reported.add(text)
                log.warning("nats error", error=text)

        async def on_disconnect() -> None:
            if not conn.closing:
                log.warning("disconnected from nats, reconnecting")

        async def on_reconnect() -> None:
            reported.clear()
            log.info("reconnected to nats")

        async def connect() -> None:
            await nc.connect(
                url,
                name=self._name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=1,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
            reported.clear()
            log.info("connected to nats")

        log.info("connecting to nats")
        conn._task = asyncio.get_running_loop().create_task(connect())
        return conn
