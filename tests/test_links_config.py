"""Links and named config over the control interface, stored in JetStream key-value."""

from __future__ import annotations

import json

import pytest

from lattice.client import LatticeClient, LatticeError
from lattice.protocol import subjects
from lattice.protocol.envelope import CtlReply
from tests.events import EventRecorder


async def test_config_put_get_del_with_secrets(host, client: LatticeClient) -> None:
    rec = await EventRecorder.start(client.nc, client.lattice)
    await client.put_config(
        "vault", {"addr": "http://127.0.0.1:8200", "token": "hunter2"}, ["token"]
    )
    await rec.wait_for("config_set", lambda d: d["config_name"] == "vault")
    assert await client.get_config("vault") == {"addr": "http://127.0.0.1:8200", "token": "***"}
    assert "hunter2" not in json.dumps(rec.events)
    await client.del_config("vault")
    await rec.wait_for("config_deleted", lambda d: d["config_name"] == "vault")
    with pytest.raises(LatticeError, match="no config named 'vault'"):
        await client.get_config("vault")
    with pytest.raises(LatticeError, match="no config named"):
        await client.del_config("vault")
    await rec.stop()


async def test_link_put_get_replace_del(host, client: LatticeClient) -> None:
    rec = await EventRecorder.start(client.nc, client.lattice)
    await client.put_config("redis-a", {"url": "redis://127.0.0.1:1/0"})
    await client.put_link(
        "counter", "kv-redis", "wasi", "keyvalue", ["store", "atomics"], target_config=["redis-a"]
    )
    ev = await rec.wait_for("linkdef_set")
    assert ev["data"]["target"] == "kv-redis" and ev["data"]["target_config"] == ["redis-a"]
    (stored,) = await client.get_links()
    assert stored["source_id"] == "counter" and stored["interfaces"] == ["store", "atomics"]
    assert host.state.links[("counter", "wasi", "keyvalue", "default")].target == "kv-redis"

    with pytest.raises(LatticeError, match="replace"):
        await client.put_link("counter", "kv-vault", "wasi", "keyvalue", ["store", "atomics"])
    failed = await rec.wait_for("linkdef_set_failed")
    assert "already exists" in failed["data"]["error"]

    await client.put_link(
        "counter", "kv-vault", "wasi", "keyvalue", ["store", "atomics"], replace=True
    )
    assert host.state.links[("counter", "wasi", "keyvalue", "default")].target == "kv-vault"

    with pytest.raises(LatticeError, match="used by links"):
        await client.put_link(
            "counter",
            "kv-vault",
            "wasi",
            "keyvalue",
            ["store"],
            target_config=["redis-a"],
            name="second",
        )
        await client.del_config("redis-a")

    await client.del_link("counter", "wasi", "keyvalue")
    await rec.wait_for("linkdef_deleted")
    assert ("counter", "wasi", "keyvalue", "default") not in host.state.links
    with pytest.raises(LatticeError, match="no link from counter"):
        await client.del_link("counter", "wasi", "keyvalue")
    await rec.stop()


async def test_link_refuses_unknown_config(host, client: LatticeClient) -> None:
    with pytest.raises(LatticeError, match="config that does not exist: nope"):
        await client.put_link("c", "t", "wasi", "keyvalue", ["store"], target_config=["nope"])
    assert await client.get_links() == []


async def test_late_host_replays_links_and_config(start_host, client: LatticeClient) -> None:
    first = await start_host()
    await client.put_config("cfg", {"k": "v"})
    await client.put_link("a", "b", "lattice", "examples", ["greet"], source_config=["cfg"])
    late = await start_host()
    assert late.state.links[("a", "lattice", "examples", "default")].target == "b"
    assert late.state.configs["cfg"].values == {"k": "v"}
    # changes reach both hosts' copies
    await client.put_link("a", "c", "lattice", "examples", ["greet"], replace=True)
    for h in (first, late):
        await h.state._wait_until(
            lambda h=h: h.state.links[("a", "lattice", "examples", "default")].target == "c"
        )


@pytest.mark.parametrize(
    "op, body, needle",
    [
        ("link.put", {"source_id": "a"}, "target"),
        (
            "link.put",
            {
                "source_id": "a",
                "target": "b",
                "wit_namespace": "wasi",
                "wit_package": "keyvalue",
                "interfaces": "store",
            },
            "interfaces",
        ),
        ("link.del", {"source_id": "a"}, "wit_namespace"),
    ],
)
async def test_bad_link_requests_name_the_field(host, client, op, body, needle) -> None:
    msg = await client.nc.request(
        subjects.ctl(client.lattice, *op.split(".")), json.dumps(body).encode(), timeout=5
    )
    reply = CtlReply.from_bytes(msg.data)
    assert not reply.success and needle in reply.message


async def test_config_subjects_need_a_name_and_valid_body(host, client) -> None:
    lat = client.lattice
    r = CtlReply.from_bytes(
        (await client.nc.request(f"wasmbus.ctl.v1.{lat}.config.put", b"{}", timeout=5)).data
    )
    assert not r.success and "needs a name" in r.message
    r = CtlReply.from_bytes(
        (await client.nc.request(f"wasmbus.ctl.v1.{lat}.config.put.x", b'{"a": 1}', timeout=5)).data
    )
    assert not r.success and "a: config values must be strings" in r.message
    r = CtlReply.from_bytes(
        (await client.nc.request(f"wasmbus.ctl.v1.{lat}.config.put.x", b"[]", timeout=5)).data
    )
    assert not r.success and "JSON object" in r.message
