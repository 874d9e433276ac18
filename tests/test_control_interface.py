"""Every control subject answers malformed input with `success: false` naming the field."""

from __future__ import annotations

import json

import pytest

from lattice.client import LatticeClient, LatticeError
from lattice.protocol import subjects
from lattice.protocol.envelope import CtlReply
from tests.events import EventRecorder


async def raw(client: LatticeClient, subject: str, body: bytes) -> CtlReply:
    msg = await client.nc.request(subject, body, timeout=5)
    return CtlReply.from_bytes(msg.data)


HOST_OPS = ["component.scale", "component.update", "label.put", "label.del"]


@pytest.mark.parametrize("op", HOST_OPS)
@pytest.mark.parametrize(
    "body, needle",
    [
        (b"", "empty request body"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
    ],
)
async def test_unparseable_bodies(
    host, client: LatticeClient, op: str, body: bytes, needle: str
) -> None:
    reply = await raw(client, subjects.ctl(client.lattice, *op.split("."), host.host_id), body)
    assert not reply.success
    assert needle in reply.message


@pytest.mark.parametrize(
    "op, body, field",
    [
        ("component.scale", {"component_id": "x", "count": 1}, "component_ref"),
        ("component.scale", {"component_ref": "file:///x", "count": 1}, "component_id"),
        ("component.scale", {"component_ref": "file:///x", "component_id": "x"}, "count"),
        ("component.scale", {"component_ref": "f", "component_id": "x", "count": "many"}, "count"),
        ("component.scale", {"component_ref": "f", "component_id": "x", "count": -1}, "count"),
        (
            "component.scale",
            {"component_ref": "f", "component_id": "a.b", "count": 1},
            "component_id",
        ),
        (
            "component.scale",
            {"component_ref": "f", "component_id": "x", "count": 1, "annotations": []},
            "annotations",
        ),
        (
            "component.scale",
            {"component_ref": "f", "component_id": "x", "count": 1, "config": "c"},
            "config",
        ),
        (
            "component.scale",
            {"component_ref": "f", "component_id": "x", "count": 1, "limits": {"timeout_ms": 0}},
            "limits.timeout_ms",
        ),
        (
            "component.scale",
            {"component_ref": "f", "component_id": "x", "count": 1, "limits": {"cpu": 1}},
            "limits.cpu",
        ),
        ("component.update", {"component_id": "x"}, "new_component_ref"),
        ("component.update", {"new_component_ref": "f", "component_id": 5}, "component_id"),
        ("label.put", {"key": "zone"}, "value"),
        ("label.put", {"key": "hostcore.os", "value": "dos"}, "key"),
        ("label.put", {"key": "", "value": "v"}, "key"),
        ("label.del", {}, "key"),
        ("label.del", {"key": "hostcore.arch"}, "key"),
    ],
)
async def test_wrong_fields_are_named(
    host, client: LatticeClient, op: str, body: dict, field: str
) -> None:
    subject = subjects.ctl(client.lattice, *op.split("."), host.host_id)
    reply = await raw(client, subject, json.dumps(body).encode())
    assert not reply.success
    assert field in reply.message, reply.message
    # and the host is still there
    assert [h.id for h in await client.hosts(wait=0.5, expect=1)] == [host.host_id]


async def test_broadcast_subjects_reject_bad_bodies(host, client: LatticeClient) -> None:
    reply = await raw(
        client, subjects.ctl(client.lattice, "component", "auction"), b'{"component_id": 1}'
    )
    assert not reply.success and "component_ref" in reply.message


async def test_unknown_and_misaddressed_subjects(host, client: LatticeClient) -> None:
    lat = client.lattice
    unknown = await raw(client, f"wasmbus.ctl.v1.{lat}.component.explode", b"{}")
    assert (
        not unknown.success and "unknown control operation 'component.explode'" in unknown.message
    )
    unknown_on_host = await raw(client, f"wasmbus.ctl.v1.{lat}.widget.spin.{host.host_id}", b"{}")
    assert not unknown_on_host.success and "widget.spin" in unknown_on_host.message
    no_host = await raw(client, f"wasmbus.ctl.v1.{lat}.component.scale", b"{}")
    assert not no_host.success and "must be addressed to a host" in no_host.message
    ping_with_host = await raw(client, f"wasmbus.ctl.v1.{lat}.host.ping.{host.host_id}", b"{}")
    assert not ping_with_host.success and "takes no host id" in ping_with_host.message
    with pytest.raises(LatticeError, match="nobody answers"):
        await client.inventory("N" + "A" * 55)


async def test_inventory_and_ping(host, client: LatticeClient) -> None:
    (ping,) = await client.hosts(wait=0.5, expect=1)
    assert ping.id == host.host_id and ping.id.startswith("N") and len(ping.id) == 56
    assert {"hostcore.arch", "hostcore.os", "hostcore.osfamily"} <= set(ping.labels)
    inv = await client.inventory(host.host_id)
    assert inv.host_id == host.host_id and inv.friendly_name == host.friendly_name
    assert inv.components == [] and inv.lattice == client.lattice


async def test_labels_put_and_delete(host, client: LatticeClient) -> None:
    rec = await EventRecorder.start(client.nc, client.lattice)
    await client.put_label(host.host_id, "zone", "eu-1")
    ev = await rec.wait_for("labels_changed", lambda d: d["labels"].get("zone") == "eu-1")
    assert ev["data"]["host_id"] == host.host_id
    assert (await client.inventory(host.host_id)).labels["zone"] == "eu-1"
    await client.del_label(host.host_id, "zone")
    await rec.wait_for("labels_changed", lambda d: "zone" not in d["labels"])
    with pytest.raises(LatticeError, match="not set"):
        await client.del_label(host.host_id, "zone")
    with pytest.raises(LatticeError, match="hostcore"):
        await client.put_label(host.host_id, "hostcore.arch", "z80")
    await rec.stop()


async def test_auction_respects_constraints(
    start_host, client: LatticeClient, echo_ref: str
) -> None:
    a = await start_host(labels={"zone": "a"})
    b = await start_host(labels={"zone": "b"})
    assert set(await client.auction_component(echo_ref, "e", {})) == {a.host_id, b.host_id}
    assert await client.auction_component(echo_ref, "e", {"zone": "b"}) == [b.host_id]
    assert await client.auction_component(echo_ref, "e", {"zone": "c"}) == []


async def test_update_of_a_component_not_running(
    host, client: LatticeClient, echo_ref: str
) -> None:
    with pytest.raises(LatticeError, match="not running on this host"):
        await client.update_component(host.host_id, "ghost", echo_ref)
