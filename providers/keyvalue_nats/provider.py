"""The keyvalue-nats provider: JetStream KV buckets on the lattice NATS or another server.

Settings per link: `bucket` (JetStream KV bucket, required, created on first use),
`url` (optional: a different NATS server; default the provider's lattice connection)
and `page_size`. Connections to other servers are shared per URL and connect in the
background, retrying forever, so a server that is down when the link arrives is picked
up when it comes back; calls meanwhile fail fast as unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from urllib.parse import urlsplit

from nats.aio.client import Client as NATS

from providers.keyvalue import KeyValueProvider, SharedPool, Store
from providers.keyvalue_nats.store import NatsStore
from providers.sdk import HostData, Link, LinkKey

BUCKET_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def shown(url: str) -> str:
    """`nats://host:port` for messages: never a user, password or token in the URL."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return f"{parts.scheme}://{parts.hostname or '?'}:{parts.port or 4222}"


class _Conn:
    """A NATS connection to another server, (re)connecting in the background."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.nc = NATS()

        async def quiet(exc: Exception) -> None:
            """Unavailability is reported by calls and health, not per retry."""

        self._task = asyncio.get_running_loop().create_task(
            self.nc.connect(
                url,
                name="keyvalue-nats store",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=1,
                error_cb=quiet,
            )
        )

    async def close(self) -> None:
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        with contextlib.suppress(Exception):
            await self.nc.close()


async def _close(conn: _Conn) -> None:
    await conn.close()


class NatsKeyValueProvider(KeyValueProvider):
    backend = "nats"

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self.conns: SharedPool[str, _Conn] = SharedPool(_Conn, _close)
        self._urls: dict[LinkKey, str] = {}

    async def open_store(self, link: Link) -> Store:
        bucket = self.setting(link, "bucket")
        if not bucket or not BUCKET_RE.match(bucket):
            raise ValueError(
                "'bucket' must name the JetStream KV bucket ([A-Za-z0-9_-], at most 64)"
            )
        url = self.setting(link, "url")
        if not url:
            return NatsStore(self.nats, bucket, "lattice")
        try:
            where = shown(url)
        except ValueError:
            raise ValueError("'url' is not a valid NATS URL") from None
        self._urls[link.key] = url
        return NatsStore(self.conns.acquire(url).nc, bucket, where)

    async def close_store(self, link: Link, store: Store) -> None:
        url = self._urls.pop(link.key, None)
        if url is not None:
            await self.conns.release(url)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self.conns.close_all()
