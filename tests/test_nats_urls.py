"""`--nats-url` naming several servers: a host, its providers and the CLI start on
whichever node answers, as a client of a NATS cluster should."""

from __future__ import annotations

import uuid

import pytest

from lattice import natsd
from lattice.client import LatticeClient
from lattice.natsauth import server_list

TOOL = "lattice:examples/kvtool"


def test_server_list_splits_and_refuses_an_empty_list() -> None:
    assert server_list("nats://a:4222") == ["nats://a:4222"]
    assert server_list(" nats://a:1, nats://b:2 ,") == ["nats://a:1", "nats://b:2"]
    with pytest.raises(ValueError, match="no NATS server URL in ' , '"):
        server_list(" , ")
    assert natsd.is_local("nats://127.0.0.1:1,nats://localhost:2")
    assert not natsd.is_local("nats://127.0.0.1:1,nats://192.0.2.7:2")


async def test_a_dead_first_server_is_skipped(nats_url: str) -> None:
    dead = f"nats://127.0.0.1:{natsd.free_port()}"
    assert not await natsd.answers(dead, timeout=0.5)
    assert await natsd.answers(f"{dead},{nats_url}", timeout=0.5)


async def test_host_and_provider_join_through_a_list_with_a_dead_node(
    start_host, nats_url: str, lattice_name: str, linked_refs: dict[str, str]
) -> None:
    dead = f"nats://127.0.0.1:{natsd.free_port()}"
    both = f"{dead},{nats_url}"
    host = await start_host(url=both)
    assert host.nats_url == both and host.embedded is None  # a list never starts one
    client = await LatticeClient.connect(both, lattice_name, timeout=10.0)
    async with client:
        await client.put_config("store", {"bucket": f"kv_{uuid.uuid4().hex[:8]}"})
        # the provider process gets the same list in its start-up data
        await client.start_provider(host.host_id, "builtin://keyvalue-nats", "kv")
        await client.scale_component(host.host_id, linked_refs["kvtool"], "kvtool", 1)
        await client.put_link(
            "kvtool",
            "kv",
            "wasi",
            "keyvalue",
            ["store", "atomics", "batch"],
            target_config=["store"],
        )
        assert await client.call("kvtool", f"{TOOL}.set", ["b", "k", b"v"]) == {"ok": None}
        assert await client.call("kvtool", f"{TOOL}.get", ["b", "k"]) == {"ok": b"v"}


async def test_a_list_where_nothing_answers_is_a_clear_error(start_host) -> None:
    from host.host import HostStartError

    dead = [f"nats://127.0.0.1:{natsd.free_port()}" for _ in range(2)]
    with pytest.raises(HostStartError) as refused:
        await start_host(url=",".join(dead))
    assert f"no NATS server answers at {','.join(dead)}" in str(refused.value)
