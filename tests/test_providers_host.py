"""Providers run by a host: every keyvalue operation through the import bridge on each
backend, config changes reaching the provider, start failures, health and stop."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid

import pytest

from lattice.client import LatticeClient, LatticeError
from tests.events import EventRecorder

TOOL = "lattice:examples/kvtool"
COUNTER = "lattice:examples/counter"


@pytest.fixture(params=["redis", "vault", "nats"])
async def kvtool(
    request, start_host, client: LatticeClient, redis_server, vault_server, linked_refs
):
    """kvtool linked to one backend's provider through a host."""
    host = await start_host()
    backend = request.param
    if backend == "redis":
        await client.put_config("store", {"url": redis_server.url(3), "page_size": "2"})
    elif backend == "vault":
        await client.put_config(
            "store",
            {
                "addr": vault_server.addr,
                "mount": "secret",
                "token": vault_server.token,
                "page_size": "2",
            },
            ["token"],
        )
    else:
        await client.put_config("store", {"bucket": f"kv_{uuid.uuid4().hex[:8]}", "page_size": "2"})
    await client.start_provider(host.host_id, f"builtin://keyvalue-{backend}", "kv")
    await client.scale_component(host.host_id, linked_refs["kvtool"], "kvtool", 2)
    await client.put_link(
        "kvtool", "kv", "wasi", "keyvalue", ["store", "atomics", "batch"], target_config=["store"]
    )
    return host


async def test_every_keyvalue_operation_through_the_host(kvtool, client: LatticeClient) -> None:
    bucket = f"b{uuid.uuid4().hex[:8]}"

    async def tool(fn: str, *args: object) -> object:
        return await client.call("kvtool", f"{TOOL}.{fn}", list(args))

    assert await tool("get", bucket, "missing") == {"ok": None}
    assert await tool("set", bucket, "k/1 é", b"v1") == {"ok": None}
    assert await tool("get", bucket, "k/1 é") == {"ok": b"v1"}
    assert await tool("exists", bucket, "k/1 é") == {"ok": True}
    assert await tool("set-many", bucket, [["a", b"1"], ["b", b"2"]]) == {"ok": None}
    assert await tool("get-many", bucket, ["a", "zz", "b"]) == {
        "ok": [["a", b"1"], None, ["b", b"2"]]
    }
    keys, cursor = (await tool("list-keys", bucket, None))["ok"]
    assert len(keys) == 2 and cursor is not None
    rest, end = (await tool("list-keys", bucket, cursor))["ok"]
    assert sorted(keys + rest) == ["a", "b", "k/1 é"] and end is None
    assert await tool("increment", bucket, "n", 5) == {"ok": 5}
    assert await tool("increment", bucket, "n", 2) == {"ok": 7}
    assert await tool("get", bucket, "n") == {"ok": b"7"}
    assert await tool("delete-many", bucket, ["a", "b"]) == {"ok": None}
    assert await tool("delete", bucket, "k/1 é") == {"ok": None}
    assert await tool("exists", bucket, "k/1 é") == {"ok": False}
    assert await tool("get", "bad bucket!", "x") == {"err": "no-such-store"}


async def test_config_change_reaches_the_provider(
    start_host,
    client: LatticeClient,
    redis_server,
    linked_refs,
) -> None:
    host = await start_host()
    await client.put_config("redis", {"url": redis_server.url(4)})
    await client.start_provider(host.host_id, "builtin://keyvalue-redis", "kv")
    await client.scale_component(host.host_id, linked_refs["counter"], "counter", 1)
    await client.put_link(
        "counter", "kv", "wasi", "keyvalue", ["store", "atomics"], target_config=["redis"]
    )
    key = f"c{uuid.uuid4().hex[:6]}"
    assert await client.call("counter", f"{COUNTER}.increment", [key]) == {"ok": 1}
    assert await client.call("counter", f"{COUNTER}.increment", [key]) == {"ok": 2}
    # same link, same target: only the named config changes, and the provider follows
    await client.put_config("redis", {"url": redis_server.url(5)})
    for _ in range(200):  # the provider reconnects to the new database within seconds
        value = await client.call("counter", f"{COUNTER}.increment", [key])
        if value == {"ok": 1}:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the provider kept using the old database")


async def test_provider_start_failures_are_clear(host, client: LatticeClient, tmp_path) -> None:
    rec = await EventRecorder.start(client.nc, client.lattice)
    with pytest.raises(LatticeError, match="no built-in provider 'nope'"):
        await client.start_provider(host.host_id, "builtin://nope", "p1")
    script = tmp_path / "notexec.sh"
    script.write_text("#!/bin/sh\nexit 3\n")
    with pytest.raises(LatticeError, match="not executable"):
        await client.start_provider(host.host_id, script.as_uri(), "p2")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(LatticeError, match="exited with code 3"):
        await client.start_provider(host.host_id, script.as_uri(), "p3")
    failed = rec.of_type("provider_start_failed")
    assert {e["data"]["provider_id"] for e in failed} == {"p1", "p2", "p3"}
    assert (await client.inventory(host.host_id)).providers == []
    await rec.stop()


async def test_provider_inventory_health_and_stop(
    start_host,
    client: LatticeClient,
    redis_server,
) -> None:
    host = await start_host()
    host.providers.health_interval = 0.2
    rec = await EventRecorder.start(client.nc, client.lattice)
    await client.put_config("secret-cfg", {"url": redis_server.url(0), "pw": "p@ss"}, ["pw"])
    await client.start_provider(
        host.host_id, "builtin://keyvalue-redis", "kv", config=["secret-cfg"]
    )
    await rec.wait_for("health_check_status", lambda d: d["provider_id"] == "kv")
    (prov,) = (await client.inventory(host.host_id)).providers
    assert (
        prov["id"] == "kv" and prov["healthy"] is True and prov["image_ref"].startswith("builtin")
    )
    # idempotent start, and a second ref for the same id is refused
    await client.start_provider(host.host_id, "builtin://keyvalue-redis", "kv")
    with pytest.raises(LatticeError, match="already runs"):
        await client.start_provider(host.host_id, "builtin://keyvalue-vault", "kv")
    pid = host.providers.running["kv"].process.pid
    await client.stop_provider(host.host_id, "kv")
    assert (await client.inventory(host.host_id)).providers == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(LatticeError, match="not running on this host"):
        await client.stop_provider(host.host_id, "kv")
    assert "p@ss" not in json.dumps(rec.events)
    await rec.stop()
