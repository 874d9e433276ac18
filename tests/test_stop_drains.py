"""A replica that stops while calls stream in must not take any of them down with it.

Two hosts run the same component in one queue group; callers keep 48 calls in flight
while one host scales its replica to zero and back, again and again. Every call must
still be answered: a message nats-server routed to the stopping host before it saw the
UNSUB is that host's to answer, not to drop (the caller would wait out its deadline).
"""

from __future__ import annotations

import asyncio
import contextlib

from lattice.client import LatticeClient

ECHO = "lattice:examples/echo.echo"
CALLERS = 48
CYCLES = 12


async def test_calls_in_flight_survive_a_replica_stopping_again_and_again(
    start_host, client: LatticeClient, echo_ref: str
) -> None:
    a, b = await start_host(labels={"name": "a"}), await start_host(labels={"name": "b"})
    for h in (a, b):
        await client.scale_component(h.host_id, echo_ref, "echo", 2)
    answered: dict[str, int] = {}
    failures: list[str] = []
    stop = asyncio.Event()

    async def caller(n: int) -> None:
        i = 0
        while not stop.is_set():
            word = f"c{n}-{i}"
            try:  # a traced call hears which host answered
                got, host_id = await client.call_traced("echo", ECHO, [word], timeout=3.0)
            except Exception as exc:
                failures.append(f"{word}: {exc}")
            else:
                if got != word:
                    failures.append(f"{word}: answered {got!r}")
                answered[host_id] = answered.get(host_id, 0) + 1
            i += 1

    tasks = [asyncio.create_task(caller(n)) for n in range(CALLERS)]
    try:
        await asyncio.sleep(0.3)
        for _ in range(CYCLES):
            await client.scale_component(a.host_id, echo_ref, "echo", 0)
            await asyncio.sleep(0.05)
            await client.scale_component(a.host_id, echo_ref, "echo", 2)
            await asyncio.sleep(0.15)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks)
    assert not failures, f"{len(failures)} calls failed, first: {failures[:3]}"
    # both replicas really served, so the stops happened under load
    assert answered.get(a.host_id, 0) > CYCLES and answered.get(b.host_id, 0) > CYCLES, answered
