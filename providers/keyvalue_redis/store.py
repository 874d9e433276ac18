"""Redis as a wasi:keyvalue store: one Redis database per link, buckets as key prefixes.

Layout: wasi bucket `b`, key `k` -> Redis string `b:k` (UTF-8). Bucket names match
`[A-Za-z0-9_-]{1,64}`, so the first ':' always ends the bucket and two buckets never
share a key; keys are stored as they are (Redis keys are binary-safe). list-keys scans
`b:*`. increment is one Lua script (GET, check plain digits within i64, INCRBY) in the
common case; otherwise (u64 beyond i64, "+5" that INCRBY would accept) GET then a
compare-and-set script, retried on a lost race, so it is atomic and u64-exact.

Accounting: nothing is retried blindly. redis-py retries every command on
ConnectionError/TimeoutError by default (8.1, installed here: `Retry` with exponential
backoff, 10 retries, for `Redis` and `RedisCluster` alike; the provider used to ask for
one) and turns a connection lost during WATCH/MULTI/EXEC into `WatchError`, the "retry
me" signal; a retried INCRBY whose reply was lost counts twice (measured: 1608 in the
backend for 1600 acknowledged increments, Redis frozen past the socket timeout). So
`connect` builds clients with no automatic retry, and this store decides: reads are
tried once more on a lost connection (a read applies nothing); a write is never
repeated. Failing to *connect* means nothing was sent: `Unavailable`. A write
sent with no answer (lost connection, socket timeout) may have been applied:
`Indeterminate`. Authentication failures are `access-denied`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio import connection as rconn
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from providers.keyvalue.semantics import Indeterminate, KvError, Unavailable
from providers.keyvalue.store import MAX_CAS_RETRIES, Store, Update, backoff, contention

T = TypeVar("T")
SCAN_COUNT = 1000
I64_MAX = 2**63 - 1
HEALTH_CHECK_INTERVAL = 1.0  # seconds idle after which a pooled connection is PINGed first
# One round trip for the common case: a plain-digits value (or none) that INCRBY can
# take without leaving signed 64-bit. Anything else takes the exact compare-and-set path.
# An error reply means nothing was written: the check fails before INCRBY, and an INCRBY
# that errs (overflow) does not apply.
_INCR_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v and not string.match(v, '^[0-9]+$') then return redis.error_reply('LATTICE_SLOW') end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""
# SET only if the value is still what we read (ARGV[1] '1': it was missing); 0 on a
# lost race, and then nothing was written, so trying again is safe.
_CAS_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if v then return 0 end
elseif v ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"""


class ConnectFailed(rx.ConnectionError):
    """Connecting (socket, handshake) failed: no command of ours went out on it."""


class _MarksConnectFailures:
    """Mixin for redis-py connection classes: a failure while connecting raises
    `ConnectFailed`, so the store can tell "never sent" from "sent, no answer"."""

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except (rx.AuthenticationError, rx.AuthorizationError, ConnectFailed):
            raise
        except (rx.ConnectionError, rx.TimeoutError) as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from exc

    async def check_health(self) -> None:
        """The PING before a pooled connection idle for `health_check_interval` is used
        again. If it fails, the server dropped the connection while it sat idle (Redis
        restarted): nothing of ours went out on it, so connect afresh (a failure there is
        `ConnectFailed`, never sent) rather than send the command into a dead socket and
        have to call its outcome unknown."""
        try:
            await super().check_health()  # type: ignore[misc]
        except ConnectFailed:
            raise
        except (rx.ConnectionError, rx.TimeoutError, OSError):
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            await self.connect_check_health(check_health=False)


class _Tcp(_MarksConnectFailures, rconn.Connection):
    pass


class _Tls(_MarksConnectFailures, rconn.SSLConnection):
    pass


class _Unix(_MarksConnectFailures, rconn.UnixDomainSocketConnection):
    pass


def _check_redis_py() -> None:
    """The one redis-py internal this relies on; fail loudly if a release renames it."""
    if not callable(getattr(rconn.AbstractConnection, "connect_check_health", None)):
        raise RuntimeError(
            f"redis-py {redis.__version__}: AbstractConnection.connect_check_health is "
            "gone; providers/keyvalue_redis/store.py must learn the new connect path"
        )


def connect(url: str, connect_timeout: float = 1.0, command_timeout: float = 2.0) -> aioredis.Redis:
    """A client for `url` that never retries a command by itself (see the module doc);
    it connects lazily."""
    _check_redis_py()
    scheme = urlsplit(url).scheme
    cls = {"rediss": _Tls, "unix": _Unix}.get(scheme, _Tcp)
    return aioredis.from_url(
        url,
        connection_class=cls,
        socket_connect_timeout=connect_timeout,
        socket_timeout=command_timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        health_check_interval=HEALTH_CHECK_INTERVAL,
        decode_responses=False,
    )


@contextlib.contextmanager
def _errors(*, write: bool) -> Iterator[None]:
    try:
        yield
    except (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError):
        raise KvError.access_denied() from None
    except (ConnectFailed, rx.BusyLoadingError) as exc:  # refused before anything ran
        raise Unavailable("redis", str(exc) or type(exc).__name__) from None
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        detail = str(exc) or type(exc).__name__
        if write:
            raise Indeterminate("redis", f"{detail} after the command was sent") from None
        raise Unavailable("redis", detail) from None
    except rx.RedisError as exc:
        raise KvError.other(f"redis error: {exc}") from None


async def _read(call: Callable[[], Awaitable[T]]) -> T:
    """A read, asked once more if the connection was lost: a read applies nothing, so
    asking again is safe, and the second try takes a fresh connection (a restarted
    Redis leaves the pooled ones dead). Not after a timeout: that already took long."""
    with _errors(write=False):
        try:
            return await call()
        except (rx.AuthenticationError, rx.AuthorizationError, rx.BusyLoadingError):
            raise
        except rx.ConnectionError:
            return await call()


class RedisStore(Store):
    backend = "redis"

    def __init__(self, client: aioredis.Redis, where: str) -> None:
        self._r = client
        self._where = where
        self._incr = client.register_script(_INCR_SCRIPT)
        self._cas = client.register_script(_CAS_SCRIPT)

    @property
    def where(self) -> str:
        return self._where

    @staticmethod
    def _k(bucket: str, key: str) -> bytes:
        return f"{bucket}:{key}".encode()

    async def get(self, bucket: str, key: str) -> bytes | None:
        value: bytes | None = await _read(lambda: self._r.get(self._k(bucket, key)))
        return value

    async def set(self, bucket: str, key: str, value: bytes) -> None:
        with _errors(write=True):
            await self._r.set(self._k(bucket, key), value)

    async def delete(self, bucket: str, key: str) -> None:
        with _errors(write=True):
            await self._r.delete(self._k(bucket, key))

    async def exists(self, bucket: str, key: str) -> bool:
        return bool(await _read(lambda: self._r.exists(self._k(bucket, key))))

    async def keys(self, bucket: str) -> list[str]:
        prefix = f"{bucket}:".encode()

        async def scan() -> list[str]:
            found: set[str] = set()  # SCAN may return a key twice
            async for raw in self._r.scan_iter(match=prefix + b"*", count=SCAN_COUNT):
                with contextlib.suppress(UnicodeDecodeError):  # not written by us
                    found.add(raw[len(prefix) :].decode("utf-8"))
            return list(found)

        return await _read(scan)

    async def update(self, bucket: str, key: str, fn: Update) -> bytes:
        k = self._k(bucket, key)
        for attempt in range(MAX_CAS_RETRIES):
            current: bytes | None = await _read(lambda: self._r.get(k))
            new = fn(current)
            missing = b"1" if current is None else b"0"
            with _errors(write=True):
                swapped = await self._cas(keys=[k], args=[missing, current or b"", new])
            if int(swapped) == 1:
                return new
            await backoff(attempt)  # lost the race; nothing was written, so try again
        raise contention(key)

    async def increment(self, bucket: str, key: str, delta: int) -> int:
        # redis-py's Script sends the script again after NOSCRIPT (a restarted server
        # lost its script cache): safe, since the server ran nothing.
        if delta <= I64_MAX:
            with _errors(write=True):
                try:
                    return int(await self._incr(keys=[self._k(bucket, key)], args=[delta]))
                except rx.ResponseError:
                    pass  # not plain digits, leading zeros, or past i64: the exact path decides
        return await super().increment(bucket, key, delta)

    async def get_many(self, bucket: str, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = await _read(
            lambda: self._r.mget([self._k(bucket, k) for k in keys])
        )
        return values

    async def set_many(self, bucket: str, pairs: Sequence[tuple[str, bytes]]) -> None:
        with _errors(write=True):
            await self._r.mset({self._k(bucket, k): v for k, v in pairs})

    async def delete_many(self, bucket: str, keys: Sequence[str]) -> None:
        with _errors(write=True):
            await self._r.delete(*(self._k(bucket, k) for k in keys))

    async def ping(self) -> None:
        await _read(self._r.ping)
