"""The minimal echo (hand-written WAT, no language runtime) runs on a host and echoes.

It is the bench's second guest: same interface as the componentize-py echo, so any
difference between the two in `bench invoke` is what the guest's runtime costs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from components.build import build
from lattice.client import LatticeClient

ECHO = "lattice:examples/echo.echo"


@pytest.fixture(scope="module")
def echo_min() -> Path:
    return build("echo_min")


def test_exports_the_echo_interface_and_nothing_else(echo_min: Path) -> None:
    wasm_tools = Path(sys.executable).parent / "wasm-tools"
    wit = subprocess.run(
        [str(wasm_tools), "component", "wit", str(echo_min)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "export lattice:examples/echo@0.1.0;" in wit
    assert "echo: func(msg: string) -> string;" in wit
    assert "version: func() -> string;" in wit
    assert "import" not in wit  # no WASI, no runtime
    assert echo_min.stat().st_size < 2048


async def test_host_runs_it_and_it_echoes(host, client: LatticeClient, echo_min: Path) -> None:
    ref = echo_min.as_uri()
    data = await client.scale_component(host.host_id, ref, "echo-min", 2)
    assert data["max_instances"] == 2

    assert await client.call("echo-min", ECHO, ["hello lattice"]) == "hello lattice"
    assert await client.call("echo-min", "echo.version", []) == "minimal"
    assert await client.call("echo-min", ECHO, [""]) == ""
    assert await client.call("echo-min", ECHO, ["héllo ✓ 🦀"]) == "héllo ✓ 🦀"
    # larger than its initial 64 KiB page: cabi_realloc grows memory
    big = "x" * 300_000
    assert await client.call("echo-min", ECHO, [big]) == big
    # the heap is reset after every call (post-return): many calls on warm instances
    for i in range(200):
        assert await client.call("echo-min", ECHO, [f"{i}" * 1000]) == f"{i}" * 1000

    (desc,) = (await client.inventory(host.host_id)).components
    assert desc.exports == ["lattice:examples/echo.echo", "lattice:examples/echo.version"]


COUNTER = "lattice:examples/counter.increment"


async def test_minimal_counter_counts_through_a_provider_on_another_host(
    start_host, client: LatticeClient, redis_server
) -> None:
    """The bench's second provider guest: keyvalue open, atomics.increment, the bucket
    dropped, over a link to keyvalue-redis running on a different host."""
    provider_host, component_host = await start_host(), await start_host()
    ref = build("counter_min").as_uri()
    await client.scale_component(component_host.host_id, ref, "counter-min", 2)

    # no link yet: the keyvalue error comes back as the export's err string, no trap
    unlinked = await client.call("counter-min", COUNTER, ["hits"])
    assert set(unlinked) == {"err"} and "counter-min" in unlinked["err"], unlinked

    await client.put_config("redis-min", {"url": redis_server.url(3)})
    await client.start_provider(provider_host.host_id, "builtin://keyvalue-redis", "kv-min")
    await client.put_link(
        "counter-min",
        "kv-min",
        "wasi",
        "keyvalue",
        ["store", "atomics"],
        target_config=["redis-min"],
    )
    key = f"min-{component_host.host_id[-6:]}"
    got = [await client.call("counter-min", COUNTER, [key]) for _ in range(50)]
    assert got == [{"ok": n} for n in range(1, 51)]
    # in Redis itself: one key (`bucket:key`) holding 50
    r = aioredis.from_url(redis_server.url(3))
    try:
        (stored,) = [k async for k in r.scan_iter(match=f"*:{key}")]
        assert int(await r.get(stored)) == 50
    finally:
        await r.aclose()
