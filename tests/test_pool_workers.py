"""How many worker threads a pool runs: the eager number for short calls, more only for
calls stuck in guest code, and the extra ones leave once nothing needs them.

In process (no NATS): a pool of the minimal echo and one of the runaway component.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from components.build import build
from host.config import Limits
from host.runtime.pool import EAGER_WORKERS, IDLE_EXIT, InstancePool
from lattice import codec
from lattice.protocol.invocation import InvocationError


async def settles(pool: InstancePool, workers: int, within: float = IDLE_EXIT * 5) -> None:
    """Wait until at most `workers` threads serve the pool (surplus ones leave)."""
    for _ in range(int(within / 0.05)):
        if pool._workers <= workers:
            return
        await asyncio.sleep(0.05)
    assert pool._workers <= workers


async def test_short_calls_in_flight_keep_the_eager_workers(load) -> None:
    pool = await load(build("echo_min"), 100)
    export = pool.exports["lattice:examples/echo.echo"]
    body = codec.pack(["hello"])
    loop = asyncio.get_running_loop()

    async def call() -> bytes:
        fut: asyncio.Future[bytes] = loop.create_future()
        pool.submit(export, body, lambda r, e: fut.set_result(r), raw=True)
        return await fut

    most = 0
    for _ in range(30):
        replies = await asyncio.gather(*(call() for _ in range(100)))
        assert set(replies) == {codec.pack("hello")}
        most = max(most, pool._workers)
    # 100 calls queued at once wait for the GIL and the loop, not in guest code: no
    # thread is added for them (a machine busy elsewhere may add one past SLOW_CALL)
    assert most <= EAGER_WORKERS + 1, most
    await settles(pool, EAGER_WORKERS)


async def test_calls_stuck_in_guest_code_get_workers_that_leave_after(
    load, built: dict[str, Path]
) -> None:
    pool = await load(built["runaway"], 4, Limits(timeout_ms=1500))
    spin = pool.exports["lattice:examples/runaway.spin"]
    ping = pool.exports["lattice:examples/runaway.ping"]
    spins = [asyncio.ensure_future(pool.call(spin, [])) for _ in range(EAGER_WORKERS)]
    await asyncio.sleep(0.2)
    # every eager worker burns CPU in a spin: the queued ping gets a worker of its own
    assert await asyncio.wait_for(pool.call(ping, []), 1.0) == "pong"
    assert pool._workers == EAGER_WORKERS + 1
    for s in spins:
        with pytest.raises(InvocationError, match="deadline"):
            await s
    await settles(pool, EAGER_WORKERS)
    assert await pool.call(ping, []) == "pong"
