"""The backend contract of a key-value provider, and reference-counted shared clients.

A `Store` is what one link's config opens (a Redis database, a Vault mount, a NATS KV
bucket). It sees only validated input: bucket names already mapped ("" -> "default"),
keys and values already checked. Its job is to map (bucket, key) onto the backend
without collisions, make `update` an atomic read-modify-write, and turn "cannot reach
the backend" into `Unavailable` (and nothing else into it). It never formats wire
replies; `providers.keyvalue.provider` does.

`SharedPool` lets links that name the same server share one client, closed when the
last of them goes.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar, Generic, TypeVar

from providers.keyvalue.semantics import KvError, counter, short

MAX_CAS_RETRIES = 100
"""Optimistic-concurrency retries before an increment gives up (contention)."""

Update = Callable[[bytes | None], bytes]
"""Computes the new value from the current one (None if missing); may raise KvError."""


async def backoff(attempt: int) -> None:
    """A short random pause after a lost check-and-set race, growing with `attempt`."""
    await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 20)))


def contention(key: str) -> KvError:
    return KvError.other(
        f"increment of key {short(key)} gave up after {MAX_CAS_RETRIES} conflicting writers"
    )


class Store(ABC):
    """One link's view of a backend. All methods may raise KvError / Unavailable."""

    backend: ClassVar[str]
    """Name used in messages: "redis unavailable: …"."""

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the data lives, safe to show (no passwords, no tokens)."""

    @abstractmethod
    async def get(self, bucket: str, key: str) -> bytes | None: ...

    @abstractmethod
    async def set(self, bucket: str, key: str, value: bytes) -> None: ...

    @abstractmethod
    async def delete(self, bucket: str, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""

    async def exists(self, bucket: str, key: str) -> bool:
        return await self.get(bucket, key) is not None

    @abstractmethod
    async def keys(self, bucket: str) -> list[str]:
        """Every key in `bucket`, original spelling, any order."""

    @abstractmethod
    async def update(self, bucket: str, key: str, fn: Update) -> bytes:
        """Atomically replace the value with `fn(current)`; returns what was written."""

    async def increment(self, bucket: str, key: str, delta: int) -> int:
        """Add `delta` to the counter at `key`; a backend may override with a faster path
        but must keep the semantics of `semantics.counter` (plain digits, u64)."""
        return int(await self.update(bucket, key, lambda cur: counter(key, cur, delta)))

    async def get_many(self, bucket: str, keys: Sequence[str]) -> list[bytes | None]:
        return list(await asyncio.gather(*(self.get(bucket, k) for k in keys)))

    async def set_many(self, bucket: str, pairs: Sequence[tuple[str, bytes]]) -> None:
        await asyncio.gather(*(self.set(bucket, k, v) for k, v in pairs))

    async def delete_many(self, bucket: str, keys: Sequence[str]) -> None:
        await asyncio.gather(*(self.delete(bucket, k) for k in keys))

    @abstractmethod
    async def ping(self) -> None:
        """Return if the backend can serve this store, else raise Unavailable/KvError."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what this store alone holds (shared clients go through SharedPool)."""


K = TypeVar("K")
R = TypeVar("R")


class SharedPool(Generic[K, R]):
    """Reference-counted resources keyed by e.g. a URL: one client however many links."""

    def __init__(self, opener: Callable[[K], R], closer: Callable[[R], Awaitable[None]]) -> None:
        self._open = opener
        self._close = closer
        self._items: dict[K, tuple[R, int]] = {}

    def acquire(self, key: K) -> R:
        item, refs = self._items.get(key) or (self._open(key), 0)
        self._items[key] = (item, refs + 1)
        return item

    async def release(self, key: K) -> None:
        entry = self._items.get(key)
        if entry is None:
            return
        item, refs = entry
        if refs > 1:
            self._items[key] = (item, refs - 1)
            return
        del self._items[key]
        await self._close(item)

    async def close_all(self) -> None:
        items, self._items = self._items, {}
        for item, _ in items.values():
            await self._close(item)

    def __len__(self) -> int:
        return len(self._items)

    def refs(self, key: K) -> int:
        entry = self._items.get(key)
        return 0 if entry is None else entry[1]
