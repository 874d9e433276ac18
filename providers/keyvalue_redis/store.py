"""Redis as a wasi:keyvalue store: one Redis database per link, buckets as key prefixes.

Layout: wasi bucket `b`, key `k` -> Redis string `b:k` (UTF-8). Bucket names match
`[A-Za-z0-9_-]{1,64}`, so the first ':' always ends the bucket and two buckets never
share a key; keys are stored as they are (Redis keys are binary-safe). list-keys scans
`b:*`; increment is WATCH/MULTI/EXEC, retried on conflict, so it is atomic and u64-exact
(Redis' own INCRBY is signed 64-bit and would accept "+5"); a Lua script takes the
one-round-trip INCRBY path when the stored value is plain digits within i64. Connection
failures and
timeouts become `Unavailable`; authentication failures `access-denied`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import redis.asyncio as aioredis
from redis import exceptions as rx

from providers.keyvalue.semantics import KvError, Unavailable
from providers.keyvalue.store import MAX_CAS_RETRIES, Store, Update, contention

SCAN_COUNT = 1000
I64_MAX = 2**63 - 1
# One round trip for the common case: a plain-digits value (or none) that INCRBY can
# take without leaving signed 64-bit. Anything else takes the exact WATCH/MULTI path.
_INCR_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v and not string.match(v, '^[0-9]+$') then return redis.error_reply('LATTICE_SLOW') end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError):
        raise KvError.access_denied() from None
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        raise Unavailable("redis", str(exc) or type(exc).__name__) from None
    except rx.RedisError as exc:
        raise KvError.other(f"redis error: {exc}") from None


class RedisStore(Store):
    backend = "redis"

    def __init__(self, client: aioredis.Redis, where: str) -> None:
        self._r = client
        self._where = where
        self._incr = client.register_script(_INCR_SCRIPT)

    @property
    def where(self) -> str:
        return self._where

    @staticmethod
    def _k(bucket: str, key: str) -> bytes:
        return f"{bucket}:{key}".encode()

    async def get(self, bucket: str, key: str) -> bytes | None:
        with _errors():
            value: bytes | None = await self._r.get(self._k(bucket, key))
        return value

    async def set(self, bucket: str, key: str, value: bytes) -> None:
        with _errors():
            await self._r.set(self._k(bucket, key), value)

    async def delete(self, bucket: str, key: str) -> None:
        with _errors():
            await self._r.delete(self._k(bucket, key))

    async def exists(self, bucket: str, key: str) -> bool:
        with _errors():
            return bool(await self._r.exists(self._k(bucket, key)))

    async def keys(self, bucket: str) -> list[str]:
        prefix = f"{bucket}:".encode()
        found: set[str] = set()  # SCAN may return a key twice
        with _errors():
            async for raw in self._r.scan_iter(match=prefix + b"*", count=SCAN_COUNT):
                with contextlib.suppress(UnicodeDecodeError):  # not written by us
                    found.add(raw[len(prefix) :].decode("utf-8"))
        return list(found)

    async def update(self, bucket: str, key: str, fn: Update) -> bytes:
        k = self._k(bucket, key)
        with _errors():
            async with self._r.pipeline(transaction=True) as pipe:
                for _ in range(MAX_CAS_RETRIES):
                    try:
                        await pipe.watch(k)
                        new = fn(await pipe.get(k))
                        pipe.multi()
                        pipe.set(k, new)
                        await pipe.execute()
                        return new
                    except rx.WatchError:
                        continue
        raise contention(key)

    async def increment(self, bucket: str, key: str, delta: int) -> int:
        if delta <= I64_MAX:
            with _errors():
                try:
                    return int(await self._incr(keys=[self._k(bucket, key)], args=[delta]))
                except rx.ResponseError:
                    pass  # not plain digits, leading zeros, or past i64: the exact path decides
        return await super().increment(bucket, key, delta)

    async def get_many(self, bucket: str, keys: Sequence[str]) -> list[bytes | None]:
        with _errors():
            values: list[bytes | None] = await self._r.mget([self._k(bucket, k) for k in keys])
        return values

    async def set_many(self, bucket: str, pairs: Sequence[tuple[str, bytes]]) -> None:
        with _errors():
            await self._r.mset({self._k(bucket, k): v for k, v in pairs})

    async def delete_many(self, bucket: str, keys: Sequence[str]) -> None:
        with _errors():
            await self._r.delete(*(self._k(bucket, k) for k in keys))

    async def ping(self) -> None:
        with _errors():
            await self._r.ping()
