"""The demonstration that matters: relink a component's keyvalue under load.

A counter component increments one key per call while eight clients call it without
pause. `link put --replace` moves its wasi:keyvalue link from the Redis provider to
the Vault provider and back, then between two Redis databases. No call may fail,
every call that starts after the link change lands in the new backend (each backend
counts 1, 2, 3… on its own, so the values show where a call landed), and the
component's instances are the same ones throughout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from lattice.client import LatticeClient

COUNTER = "lattice:examples/counter"
KV = ("wasi", "keyvalue")
IFACES = ["store", "atomics"]


@dataclass
class Call:
    started: float
    ended: float
    value: object


class Load:
    """Clients calling counter.increment("hits") until stopped; every outcome recorded."""

    def __init__(self, client: LatticeClient, workers: int = 8) -> None:
        self.client = client
        self.calls: list[Call] = []
        self.failures: list[BaseException] = []
        self._stop = asyncio.Event()
        self.workers = workers  # calls in flight at any moment, at most
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]

    async def _worker(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                value = await self.client.call("counter", f"{COUNTER}.increment", ["hits"])
            except Exception as exc:  # recorded; the test asserts there are none
                self.failures.append(exc)
                continue
            self.calls.append(Call(t0, time.monotonic(), value))

    def between(self, start: float, end: float) -> list[object]:
        """Values of calls that started after `start` and ended before `end`."""
        return [c.value for c in self.calls if c.started > start and c.ended < end]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def counts_from_one(values: list[object]) -> list[int]:
    oks = [v["ok"] for v in values if isinstance(v, dict) and "ok" in v]
    assert len(oks) == len(values), f"calls returned errors: {[v for v in values if v not in oks]}"
    return sorted(oks)


@pytest.fixture
async def kv_setup(start_host, client: LatticeClient, redis_server, vault_server, linked_refs):
    host = await start_host()
    await client.put_config("redis-a", {"url": redis_server.url(0)})
    await client.put_config("redis-b", {"url": redis_server.url(1)})
    await client.put_config(
        "vault",
        {"addr": vault_server.addr, "mount": "secret", "token": vault_server.token},
        ["token"],
    )
    await client.start_provider(host.host_id, "builtin://keyvalue-redis", "kv-redis")
    await client.start_provider(host.host_id, "builtin://keyvalue-vault", "kv-vault")
    await client.scale_component(host.host_id, linked_refs["counter"], "counter", 4)
    await client.put_link("counter", "kv-redis", *KV, IFACES, target_config=["redis-a"])
    return host


async def test_hot_swap_redis_vault_redis_under_load(kv_setup, client: LatticeClient) -> None:
    host = kv_setup
    rc = host.components.running["counter"]
    pool = rc.pool
    # a fresh key in every backend for this test
    key_reset = await client.call("counter", f"{COUNTER}.get", ["hits"])
    assert key_reset == {"ok": None}

    load = Load(client)
    await asyncio.sleep(1.0)
    t_vault = time.monotonic()
    await client.put_link("counter", "kv-vault", *KV, IFACES, target_config=["vault"], replace=True)
    t_vault_done = time.monotonic()
    await asyncio.sleep(1.5)
    t_back = time.monotonic()
    await client.put_link(
        "counter", "kv-redis", *KV, IFACES, target_config=["redis-a"], replace=True
    )
    t_back_done = time.monotonic()
    await asyncio.sleep(1.0)
    t_db = time.monotonic()
    await client.put_link("counter", "kv-redis", *KV, IFACES, target_config=["redis-b"])
    t_db_done = time.monotonic()
    await asyncio.sleep(1.0)
    await load.stop()

    assert load.failures == []
    total = len(load.calls)
    elapsed = load.calls[-1].ended - load.calls[0].started
    assert total / elapsed > 100, f"only {total / elapsed:.0f} calls/s"

    redis_1 = counts_from_one(load.between(0, t_vault))
    vault = counts_from_one(load.between(t_vault_done, t_back))
    redis_2 = counts_from_one(load.between(t_back_done, t_db))
    redis_db1 = counts_from_one(load.between(t_db_done, float("inf")))

    # each backend counted on its own: the calls after each change landed in the new one.
    # The calls that may land on either side are those in flight when the change began
    # (8 callers) and those started while it was under way: the target holds the new
    # link from the hand-off's prepare on, before `link put` returns.
    def either_side(start: float, end: float) -> int:
        return load.workers + sum(1 for c in load.calls if start <= c.started < end)

    for backend, fresh, window in (
        ("vault", vault, either_side(t_vault, t_vault_done)),
        ("redis db 1", redis_db1, either_side(t_db, t_db_done)),
    ):
        assert fresh and fresh[0] <= window + 1 and len(set(fresh)) == len(fresh), (
            f"{backend}: {len(fresh)} calls counted {fresh[:5]}…{fresh[-3:]} "
            f"({window} may land on either side); "
            f"redis before: {len(redis_1)} calls, last {redis_1[-1:]}"
        )
    assert redis_2[0] > redis_1[-1] >= len(redis_1)
    # and the component was never restarted
    assert host.components.running["counter"] is rc and rc.pool is pool
    assert pool.discarded == 0 and rc.revision == 0


async def test_provider_crash_and_backend_outage_are_clear_and_recover(
    kv_setup,
    client: LatticeClient,
    redis_server,
) -> None:
    host = kv_setup
    assert (await client.call("counter", f"{COUNTER}.increment", ["k"]))["ok"] >= 1

    # the provider process dies: calls get a clear error at once, then it is restarted
    host.providers.running["kv-redis"].process.kill()
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    err = await client.call("counter", f"{COUNTER}.increment", ["k"])
    assert time.monotonic() - t0 < 2
    assert "kv-redis is not running" in err["err"]
    for _ in range(100):
        await asyncio.sleep(0.1)
        if "ok" in await client.call("counter", f"{COUNTER}.increment", ["k"]):
            break
    else:
        pytest.fail("provider was not restarted")
    assert host.providers.running["kv-redis"].restarts == 1

    # the backend goes away: a clear error naming it, and recovery when it returns
    await redis_server.stop()
    try:
        t0 = time.monotonic()
        err = await client.call("counter", f"{COUNTER}.increment", ["k"], timeout=15)
        assert time.monotonic() - t0 < 8
        assert "unavailable" in err["err"].lower()
    finally:
        await redis_server.start()
    for _ in range(100):
        if "ok" in await client.call("counter", f"{COUNTER}.increment", ["k"]):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("no recovery after redis came back")
