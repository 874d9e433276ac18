"""The keyvalue-redis provider: one Redis client per distinct URL, shared by links.

A link's `url` setting picks the server and database; links naming the same URL share
one client (and its connection pool), closed when the last of them is deleted. Clients
connect lazily, time out fast (1 s connect, 2 s per command) and never retry a command
by themselves (`store.connect`: a retried write whose reply was lost would apply twice),
so a dead Redis is an error in ~1 s and a restart costs only the calls in flight.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis

from providers.keyvalue import KeyValueProvider, SharedPool, Store
from providers.keyvalue_redis.store import RedisStore, connect
from providers.sdk import HostData, Link, LinkKey


def where(url: str) -> str:
    """`redis host:port/db` for messages: never the password."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    return f"redis {parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


def _open(url: str) -> aioredis.Redis:
    return connect(url, connect_timeout=1.0, command_timeout=2.0)


async def _close(client: aioredis.Redis) -> None:
    await client.aclose()


class RedisKeyValueProvider(KeyValueProvider):
    backend = "redis"

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self.clients: SharedPool[str, aioredis.Redis] = SharedPool(_open, _close)
        self._urls: dict[LinkKey, str] = {}

    def _url(self, link: Link) -> str:
        url = self.setting(link, "url")
        if not url:
            raise ValueError("no 'url' in the link's target config (e.g. redis://host:6379/0)")
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("'url' must start with redis://, rediss:// or unix://")
        return url

    async def open_store(self, link: Link) -> Store:
        url = self._url(link)
        try:
            shown = where(url)
            client = self.clients.acquire(url)
        except ValueError as exc:  # redis-py's own URL checks; they never echo the URL
            raise ValueError(f"invalid 'url': {exc}") from None
        self._urls[link.key] = url
        return RedisStore(client, shown)

    async def close_store(self, link: Link, store: Store) -> None:
        url = self._urls.pop(link.key, None)
        if url is not None:
            await self.clients.release(url)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self.clients.close_all()
