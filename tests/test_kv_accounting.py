"""Exact accounting in the keyvalue providers while their backends fail under load.

The invariant (issue 8): a call answered with a definite error was not applied, and no
write is repeated blindly. So after 8 workers × 200 concurrent increments through the
provider process over NATS, with the backend taken away and brought back meanwhile,

    acknowledged ok  <=  value in the backend  <=  acknowledged ok + timeouts

and with no timeouts the two are equal. A "timeout" is what the provider answers when a
write's outcome is unknown (invocation error `timeout`), or a request left unanswered.

Disruptions: Redis shut down (saving, so the restarted server has the data) and
restarted on its port, Redis frozen (SIGSTOP) longer than the client's socket timeout
(commands sent and applied later: the indeterminate case), Vault sealed and unsealed,
and the NATS server holding the JetStream bucket restarted (file storage survives).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from lattice.protocol.invocation import ErrorKind, InvocationError
from providers.keyvalue import KeyValueProvider, Store
from providers.keyvalue.semantics import Indeterminate, Unavailable
from providers.keyvalue.store import Update
from providers.keyvalue_redis.store import RedisStore, connect
from providers.sdk import HostData, Link
from tests.servers import ProviderProcess, RedisServer, VaultServer, link, nats_server, rpc

WORKERS = 8
CALLS = 200
INCR = "wasi:keyvalue/atomics.increment"
GET = "wasi:keyvalue/store.bucket.get"


@dataclass
class Tally:
    ok: int = 0
    err: int = 0  # definite: a keyvalue error or a non-timeout invocation error
    timeouts: int = 0
    done: int = 0
    messages: collections.Counter[str] = field(default_factory=collections.Counter)

    def line(self, backend: str, value: int) -> str:
        return (
            f"{backend}: ok={self.ok} err={self.err} timeouts={self.timeouts} "
            f"backend value={value} (calls {self.done})"
        )


async def increment(nc: NATS, lattice: str, provider_id: str, tally: Tally) -> None:
    try:
        reply = await rpc(nc, lattice, provider_id, INCR, ["", "n", 1], timeout=10)
    except InvocationError as exc:
        if exc.kind == ErrorKind.TIMEOUT:
            tally.timeouts += 1
        else:
            tally.err += 1
        tally.messages[f"{exc.kind}: {exc.message[:90]}"] += 1
    except NatsTimeout:
        tally.timeouts += 1
        tally.messages["no reply within 10s"] += 1
    except NoRespondersError:
        tally.err += 1  # nobody took the call: not applied
        tally.messages["no responders"] += 1
    else:
        if "ok" in reply:
            tally.ok += 1
        else:
            tally.err += 1
            tally.messages[f"err: {str(reply.get('err'))[:90]}"] += 1
    tally.done += 1


async def drive(
    nc: NATS,
    proc: ProviderProcess,
    disrupt: Callable[[], Awaitable[None]],
    calls: int = CALLS,
) -> tuple[Tally, int]:
    """WORKERS × `calls` increments, `disrupt()` once a quarter of them are done; returns
    the tally and the counter's final value as the provider reads it back."""
    hd = proc.host_data
    tally = Tally()
    quarter = asyncio.Event()

    async def worker() -> None:
        for _ in range(calls):
            before = tally.ok
            await increment(nc, hd.lattice, hd.provider_id, tally)
            if tally.done >= WORKERS * calls // 4:
                quarter.set()
            if tally.ok == before:
                await asyncio.sleep(0.05)  # backend down: keep the outage mid-run

    async def disruption() -> None:
        await quarter.wait()
        await disrupt()

    await asyncio.gather(*(worker() for _ in range(WORKERS)), disruption())
    value = await read_back(nc, hd.lattice, hd.provider_id)
    return tally, value


async def read_back(nc: NATS, lattice: str, provider_id: str) -> int:
    for _ in range(100):  # the backend may still be coming back
        with contextlib.suppress(InvocationError, NatsTimeout):
            reply = await rpc(nc, lattice, provider_id, GET, ["", "n"], timeout=10)
            if "ok" in reply:
                return int(reply["ok"] or b"0")
        await asyncio.sleep(0.2)
    raise AssertionError("the counter could not be read back")


def check(backend: str, tally: Tally, value: int, calls: int = CALLS) -> None:
    print(tally.line(backend, value))
    for message, n in tally.messages.most_common(6):
        print(f"    {n} × {message}")
    assert tally.done == WORKERS * calls
    assert tally.ok <= value <= tally.ok + tally.timeouts, tally.line(backend, value)
    assert tally.err + tally.timeouts > 0, "the disruption caused no failure: test is moot"
    if tally.timeouts == 0:
        assert value == tally.ok


async def provider(
    backend: str, nats_url: str, nc: NATS, tmp: Path, config: dict[str, str], **secrets: str
) -> ProviderProcess:
    lattice = f"acc{uuid.uuid4().hex[:8]}"
    pid = f"kv-{backend}"
    hd = HostData(
        lattice=lattice,
        nats_url=nats_url,
        provider_id=pid,
        host_id="NTESTHOST",
        link_definitions=[link("comp-a", pid, config, secrets_=secrets)],
        log_format="json",
    )
    proc = await ProviderProcess(f"providers.keyvalue_{backend}", hd, tmp / f"{pid}.log").start()
    await proc.wait_ready(nc)
    return proc


async def run_case(
    label: str,
    backend: str,
    config: dict[str, str],
    disrupt: Callable[[], Awaitable[None]],
    env: tuple[str, NATS, Path],
    calls: int = CALLS,
    **secrets: str,
) -> Tally:
    """One provider process, the load with `disrupt()` in the middle, the check."""
    nats_url, nc, tmp = env
    proc = await provider(backend, nats_url, nc, tmp, config, **secrets)
    try:
        tally, value = await drive(nc, proc, disrupt, calls)
        check(label, tally, value, calls)
        return tally
    finally:
        await proc.stop()


@pytest.fixture
def env(nats_url: str, nc: NATS, tmp_path: Path) -> tuple[str, NATS, Path]:
    return nats_url, nc, tmp_path


async def test_redis_restart(env: tuple[str, NATS, Path], tmp_path: Path) -> None:
    redis = await RedisServer(tmp_path / "redis").start()

    async def restart() -> None:
        # SHUTDOWN SAVE: the server writes what it applied, so the restarted one
        # still has the counter (the test server runs without persistence).
        with contextlib.suppress(Exception):
            r, w = await asyncio.open_connection("127.0.0.1", redis.port)
            w.write(b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n")
            await w.drain()
            await asyncio.wait_for(r.read(), 10)
            w.close()
        await redis.stop()
        await asyncio.sleep(1.0)
        await redis.start()

    try:
        await run_case("redis restart", "redis", {"url": redis.url(0)}, restart, env)
    finally:
        await redis.stop()


async def test_redis_frozen_past_the_socket_timeout(
    env: tuple[str, NATS, Path], tmp_path: Path
) -> None:
    """Commands sent to a frozen Redis time out at the client and are applied when it
    thaws: the provider must call those `timeout`, never an error."""
    redis = await RedisServer(tmp_path / "redis").start()

    async def freeze() -> None:
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3.0)  # the store's socket timeout is 2 s
        finally:
            redis.process.send_signal(signal.SIGCONT)

    try:
        tally = await run_case("redis frozen", "redis", {"url": redis.url(0)}, freeze, env)
        assert tally.timeouts > 0
    finally:
        await redis.stop()


async def test_vault_sealed_and_unsealed(env: tuple[str, NATS, Path], tmp_path: Path) -> None:
    vault = await VaultServer(tmp_path / "bao").start()

    async def seal() -> None:
        await vault.seal()
        await asyncio.sleep(1.0)
        await vault.unseal()

    try:
        config = {"addr": vault.addr}
        # Vault's check-and-set on one key serialises the workers: fewer calls, same test
        await run_case("vault seal", "vault", config, seal, env, calls=60, token=vault.token)
    finally:
        await vault.stop()


async def test_nats_kv_server_restarted(env: tuple[str, NATS, Path], tmp_path: Path) -> None:
    """The bucket lives on a NATS server of its own (link setting `url`), restarted on
    its port with its store directory, while the lattice NATS stays up."""
    kv_nats = await nats_server(tmp_path / "kv-nats").start()

    async def restart() -> None:
        await kv_nats.stop()
        await asyncio.sleep(1.0)
        await kv_nats.start()

    try:
        config = {"bucket": "acct", "url": kv_nats.url}
        await run_case("nats kv restart", "nats", config, restart, env)
    finally:
        await kv_nats.stop()


# ---------------------------------------------------------------------- classification


class _Scripted(Store):
    """A store whose writes and reads fail the way a test says."""

    backend = "scripted"

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.hang = False

    @property
    def where(self) -> str:
        return "scripted store"

    async def _maybe(self) -> None:
        if self.hang:
            await asyncio.sleep(60)
        if self.fail is not None:
            raise self.fail

    async def get(self, bucket: str, key: str) -> bytes | None:
        await self._maybe()
        return None

    async def set(self, bucket: str, key: str, value: bytes) -> None:
        await self._maybe()

    async def delete(self, bucket: str, key: str) -> None:
        await self._maybe()

    async def keys(self, bucket: str) -> list[str]:
        await self._maybe()
        return []

    async def update(self, bucket: str, key: str, fn: Update) -> bytes:
        await self._maybe()
        return fn(None)

    async def ping(self) -> None:
        await self._maybe()


class _ScriptedKV(KeyValueProvider):
    op_timeout = 0.2

    async def open_store(self, link: Link) -> Store:
        self.store = _Scripted()
        return self.store


async def test_an_unknown_outcome_is_a_timeout_and_a_refusal_an_err() -> None:
    p = _ScriptedKV(HostData(lattice="l", nats_url="n", provider_id="kv", host_id="h"))
    lk = link("comp-a", "kv", {})
    await p.add_link(lk)

    async def incr() -> Any:
        return await p.op_increment(lk, ["", "n", 1])

    async def get() -> Any:
        return await p.op_get(lk, ["", "n"])

    assert await incr() == {"ok": 1}
    p.store.fail = Unavailable("scripted", "connection refused")  # never sent
    assert await incr() == {"err": {"other": "scripted unavailable: connection refused"}}
    p.store.fail = Indeterminate("scripted", "reply lost")  # sent, no answer
    with pytest.raises(InvocationError) as info:
        await incr()
    assert info.value.kind == ErrorKind.TIMEOUT and "outcome is unknown" in info.value.message
    assert await get() == {"err": {"other": "scripted unavailable: reply lost"}}  # a read
    p.store.fail, p.store.hang = None, True  # no answer within op_timeout
    with pytest.raises(InvocationError) as info:
        await incr()
    assert info.value.kind == ErrorKind.TIMEOUT
    assert "no answer within 0.2s" in (await get())["err"]["other"]


async def test_redis_store_tells_never_sent_from_sent_without_answer(tmp_path: Path) -> None:
    """A refused connection is Unavailable (definite); a frozen server is Indeterminate
    for a write and Unavailable for a read; neither is retried into a double write."""
    redis = RedisServer(tmp_path / "redis")
    client = connect(redis.url(0), connect_timeout=0.5, command_timeout=0.5)
    store = RedisStore(client, "redis test")
    try:
        with pytest.raises(Unavailable) as refused:
            await store.increment("b", "k", 1)
        assert not isinstance(refused.value, Indeterminate)
        await redis.start()
        assert await store.increment("b", "k", 1) == 1
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(Indeterminate):
                await store.increment("b", "k", 1)
            with pytest.raises(Unavailable) as read:
                await store.get("b", "k")
            assert not isinstance(read.value, Indeterminate)
        finally:
            redis.process.send_signal(signal.SIGCONT)
        assert await store.get("b", "k") == b"2"  # the lost reply's write was applied once
        assert await store.increment("b", "k", 2**64 - 3) == 2**64 - 1  # the exact path
    finally:
        await client.aclose()
        await redis.stop()


async def test_redis_restart_while_idle_is_not_an_unknown_outcome(tmp_path: Path) -> None:
    """A pooled connection the server dropped while it sat idle (Redis restarted while
    the link pointed elsewhere) is found dead by the PING before reuse and replaced: the
    next write goes out on a fresh connection and is acknowledged, not 'outcome unknown'."""
    redis = RedisServer(
        tmp_path / "redis", extra_args=("--appendonly", "yes", "--appendfsync", "always")
    )
    await redis.start()
    client = connect(redis.url(0), connect_timeout=0.5, command_timeout=0.5)
    store = RedisStore(client, "redis test")
    try:
        assert await store.increment("b", "k", 1) == 1
        await redis.stop()
        await redis.start()
        await asyncio.sleep(1.2)  # idle past the health-check interval
        assert await store.increment("b", "k", 1) == 2  # the append-only file kept 1
    finally:
        await client.aclose()
        await redis.stop()
