"""The link hand-off's messages on a real host: `link.resolve.{host}`, and fuzzed bodies
for it and for the link operations, each answered with an error envelope that names
the problem while the host keeps serving."""

from __future__ import annotations

import asyncio
import json
import random
import string
from typing import Any

import pytest

from lattice.client import LatticeClient
from lattice.protocol import subjects
from lattice.protocol.envelope import CtlReply


async def raw(client: LatticeClient, subject: str, body: bytes) -> CtlReply:
    msg = await client.nc.request(subject, body, timeout=5)
    return CtlReply.from_bytes(msg.data)


def resolve_subject(client: LatticeClient, host_id: str) -> str:
    return subjects.ctl(client.lattice, "link", "resolve", host_id)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """Arbitrary JSON: the shapes a confused or hostile client might send."""
    pick = rng.randrange(8 if depth < 3 else 5)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 2**70, 3.5, float("1e308")])
    if pick in (3, 4):
        alphabet = string.ascii_letters + string.digits + ".*> \u00e9-_:/\x00"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 20)))
    if pick == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = [
        "provider_id",
        "source_id",
        "name",
        "wit_namespace",
        "wit_package",
        "target",
        "interfaces",
        "replace",
        "target_config",
        "x",
    ]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(0, 6))}


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"", "empty request body"),
        (b"{not json", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (
            json.dumps({"source_id": "c", "wit_namespace": "wasi", "wit_package": "kv"}).encode(),
            "provider_id",
        ),
        (
            json.dumps({"provider_id": "p", "wit_namespace": "wasi", "wit_package": "kv"}).encode(),
            "source_id",
        ),
        (
            json.dumps(
                {
                    "provider_id": "p",
                    "source_id": "a.b",
                    "wit_namespace": "wasi",
                    "wit_package": "kv",
                }
            ).encode(),
            "source_id",
        ),
        (
            json.dumps(
                {
                    "provider_id": "p",
                    "source_id": "c",
                    "wit_namespace": "wa si",
                    "wit_package": "kv",
                }
            ).encode(),
            "wit_namespace",
        ),
        (
            json.dumps(
                {
                    "provider_id": "ghost",
                    "source_id": "c",
                    "wit_namespace": "wasi",
                    "wit_package": "keyvalue",
                }
            ).encode(),
            "ghost does not run on this host",
        ),
    ],
)
async def test_link_resolve_names_what_is_wrong(
    host, client: LatticeClient, body: bytes, needle: str
) -> None:
    reply = await raw(client, resolve_subject(client, host.host_id), body)
    assert not reply.success and needle in reply.message, reply.message


async def test_link_resolve_reads_the_bucket_for_a_provider_of_this_host(
    host, client: LatticeClient
) -> None:
    await client.put_config("kvb", {"bucket": "resolvetest"})
    await client.start_provider(host.host_id, "builtin://keyvalue-nats", "kvn")
    for _ in range(200):
        if "kvn" in host.providers.running and host.providers.running["kvn"].healthy:
            break
        await asyncio.sleep(0.05)
    ask = {
        "provider_id": "kvn",
        "source_id": "counter",
        "wit_namespace": "wasi",
        "wit_package": "keyvalue",
    }
    reply = await raw(client, resolve_subject(client, host.host_id), json.dumps(ask).encode())
    assert reply.success and reply.response == {"link": None}
    await client.put_link("counter", "kvn", "wasi", "keyvalue", ["store"], target_config=["kvb"])
    reply = await raw(client, resolve_subject(client, host.host_id), json.dumps(ask).encode())
    assert reply.success
    link = reply.response["link"]
    assert link["target"] == "kvn" and link["target_config"] == {"bucket": "resolvetest"}
    # a link to another target is not handed to this provider
    await client.put_link("counter", "elsewhere", "wasi", "keyvalue", ["store"], replace=True)
    reply = await raw(client, resolve_subject(client, host.host_id), json.dumps(ask).encode())
    assert reply.success and reply.response == {"link": None}


async def test_fuzzed_link_messages_get_envelopes_and_the_host_lives(
    host, client: LatticeClient
) -> None:
    rng = random.Random(8)
    lat = client.lattice
    targets = [
        resolve_subject(client, host.host_id),
        subjects.ctl(lat, "link", "put"),
        subjects.ctl(lat, "link", "del"),
        subjects.ctl(lat, "link", "resolve"),  # no host id: answered by the queue group
    ]
    for i in range(240):
        body = json.dumps(random_json(rng)).encode() if i % 7 else bytes(rng.randbytes(12))
        subject = targets[i % len(targets)]
        reply = await raw(client, subject, body)
        assert isinstance(reply.success, bool) and isinstance(reply.message, str)
        if not reply.success:
            assert reply.message and "Traceback" not in reply.message, reply.message
    # nothing was stored by garbage, and the host still answers
    assert [h.id for h in await client.hosts(wait=0.5, expect=1)] == [host.host_id]
    assert all(lk["source_id"] for lk in await client.get_links())
