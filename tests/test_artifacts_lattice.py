"""The lattice as a registry, compile once per lattice, and the "Done when" flows.

Hosts here share no directory: each has its own data dir (artifact cache and compile
cache), so every byte a host runs reached it through NATS or a registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
import structlog.testing
from nats.aio.client import Client as NATS

from components.build import build
from host.config import ArtifactSettings, HostConfig
from host.host import Host
from host.identity import load_identity
from host.runtime.engine import COMPILE_KEY
from lattice import natsd
from lattice.artifacts import ops
from lattice.artifacts.compiled import SIGNATURE_HEADER, SIGNER_HEADER, object_name, sign
from lattice.artifacts.fetch import FetchPolicy
from lattice.artifacts.oci import Credentials, OciClient
from lattice.artifacts.refs import LatticeRef, OciRef, parse, sha256_digest
from lattice.artifacts.store import (
    ArtifactStore,
    ObjectBucket,
    StoreError,
    artifacts_bucket,
    compiled_bucket,
)
from lattice.artifacts.wasm import world
from lattice.client import LatticeClient, LatticeError
from lattice.controller.run.service import Controller
from tests.events import EventRecorder
from tests.test_oci_registry import DistributionRegistry

pytestmark = pytest.mark.slow

Start = Callable[..., Awaitable[Host]]


@pytest.fixture
async def isolated(nats_url: str, lattice_name: str, tmp_path: Path) -> AsyncIterator[Start]:
    """Start hosts that share nothing but NATS: `await isolated("a")` → data dir tmp/a."""
    hosts: list[Host] = []

    async def start(name: str, seed: str | None = None, **settings: Any) -> Host:
        cfg = HostConfig(
            nats_url=nats_url,
            lattice=lattice_name,
            labels={"node": name},
            host_seed=seed,
            heartbeat_interval=0.5,
            data_dir=tmp_path / name,
            embedded_nats=False,
            artifacts=ArtifactSettings(**settings),
        )
        host = Host(cfg)
        await host.start()
        hosts.append(host)
        return host

    yield start
    for h in hosts:
        if not h._stopping:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(h.stop("test finished"), 30)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def served_by(client: LatticeClient, component: str, hosts: set[str]) -> None:
    """Call `component` until each host in `hosts` has answered (queue-group balanced)."""
    seen: set[str] = set()
    for _ in range(400):
        answer, host_id = await client.call_traced(component, "echo", ["ping"], timeout=30)
        assert answer == "ping"
        seen.add(host_id or "")
        if hosts <= seen:
            return
    raise AssertionError(f"only {seen} answered, expected {hosts}")


def app_manifest(name: str, image: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "core.oam.dev/v1beta1",
            "kind": "Application",
            "metadata": {"name": name, "annotations": {"version": "v1"}},
            "spec": {
                "components": [
                    {
                        "name": "echo",
                        "type": "component",
                        "properties": {"image": image},
                        "traits": [{"type": "daemonscaler", "properties": {"instances": 2}}],
                    }
                ]
            },
        }
    ).encode()


@pytest.fixture
async def controller(nats_url: str, lattice_name: str) -> AsyncIterator[Controller]:
    ctl = Controller(
        nats_url, lattice_name, host_expiry=3.0, tick=0.3, lease_ttl=3.0, resync_interval=1.0
    )
    await ctl.start()
    try:
        yield ctl
    finally:
        await asyncio.wait_for(ctl.stop(), 30)


async def deploy(client: LatticeClient, body: bytes) -> str:
    put = await client.model("put", body=body)
    await client.model("deploy", put["name"], {"version": put["version"]})

    async def ok() -> bool:
        return (await client.model("status", put["name"]))["status"]["state"] == "deployed"

    await until(ok, 240)
    return put["name"]


async def test_an_18mb_component_needs_no_raised_max_payload(client: LatticeClient, built) -> None:
    nc: NATS = client.nc
    assert nc.max_payload <= 1024 * 1024  # the server's default, not raised
    wasm = built["echo"].read_bytes()
    assert len(wasm) > 16 * 1024 * 1024
    store = ArtifactStore(nc, client.lattice)
    ref = LatticeRef("echo", "0.1.0")
    info = await store.push(ref, wasm, world(wasm))
    assert info.digest == sha256_digest(wasm) and info.size == len(wasm)
    assert await store.get(ref, info.digest) == wasm
    listed = await ops.list_artifacts(nc, client.lattice)
    assert [a["ref"] for a in listed] == ["lattice://echo:0.1.0"]
    assert "lattice:examples/echo@0.1.0" in listed[0]["exports"]
    with pytest.raises(StoreError, match="arrived with digest"):
        await store.get(ref, "sha256:" + "0" * 64)


async def test_delete_is_refused_while_a_component_uses_it(
    isolated: Start, client: LatticeClient, built
) -> None:
    host = await isolated("a")
    policy = FetchPolicy()
    await ops.push(
        "lattice://echo:0.1.0", built["echo"], nc=client.nc, lattice=client.lattice, policy=policy
    )
    await client.scale_component(host.host_id, "lattice://echo:0.1.0", "echo", 1, wait=240)
    assert await client.call("echo", "echo", ["hi"]) == "hi"
    assert host.cache.fetcher.sources["lattice"] == 1

    with pytest.raises(StoreError, match=f"component echo running on host .*{host.host_id}"):
        await ops.delete(client.nc, client.lattice, "lattice://echo:0.1.0")
    await client.scale_component(host.host_id, "lattice://echo:0.1.0", "echo", 0)
    await ops.delete(client.nc, client.lattice, "lattice://echo:0.1.0")
    assert await ops.list_artifacts(client.nc, client.lattice) == []
    with pytest.raises(StoreError, match=r"holds no artifact echo:0\.1\.0"):
        await ops.delete(client.nc, client.lattice, "lattice://echo:0.1.0")


async def test_lattice_flow_two_hosts_no_shared_disk_restart_from_cache(
    isolated: Start, controller: Controller, client: LatticeClient, built
) -> None:
    """Done when: push to the lattice, deploy a manifest naming it, call it on both hosts,
    take the store away, restart one host: it starts the component again from cache."""
    a, b = await isolated("a"), await isolated("b")
    await ops.push(
        "lattice://echo:0.1.0",
        built["echo"],
        nc=client.nc,
        lattice=client.lattice,
        policy=FetchPolicy(),
    )
    await deploy(client, app_manifest("hello", "lattice://echo:0.1.0"))
    await served_by(client, "hello-echo", {a.host_id, b.host_id})

    # compiled once for the lattice: one host compiled, the other took the signed artifact
    compiled = a.cache.sources["compiled"] + b.cache.sources["compiled"]
    assert compiled == 1, (a.cache.sources, b.cache.sources)
    assert a.cache.sources["lattice"] + b.cache.sources["lattice"] == 1
    bucket = ObjectBucket(client.nc, compiled_bucket(client.lattice), "")
    (entry,) = await bucket.list()
    assert entry.headers[SIGNER_HEADER] in {a.host_id, b.host_id}

    # the store goes away (the lattice no longer answers for the artifact) …
    await client.nc.jetstream().delete_object_store(artifacts_bucket(client.lattice))
    seed = b.identity._seed.decode()
    await b.stop("restart")
    b2 = await isolated("b", seed=seed)  # same data dir, same identity
    await until(lambda: _runs(client, b2.host_id, "hello-echo"), 240)
    assert b2.cache.fetcher.sources["cache-offline"] == 1
    await served_by(client, "hello-echo", {a.host_id, b2.host_id})


async def _runs(client: LatticeClient, host_id: str, component: str) -> bool:
    try:
        inv = await client.inventory(host_id)
    except Exception:
        return False
    return any(c.id == component for c in inv.components)


async def test_oci_flow_two_hosts_restart_with_registry_down(
    isolated: Start, controller: Controller, client: LatticeClient, built, tmp_path
) -> None:
    """Done when, against the distribution registry with an OCI reference."""
    registry = DistributionRegistry(tmp_path / "registry")
    await registry.start()
    try:
        insecure = (registry.address,)
        tag_ref = f"{registry.address}/lattice/echo:0.1.0"
        pushed = await ops.push(
            tag_ref,
            built["echo"],
            nc=None,
            lattice=client.lattice,
            policy=FetchPolicy(insecure_registries=frozenset(insecure)),
        )
        a = await isolated("a", insecure_registries=insecure)
        b = await isolated("b", insecure_registries=insecure)
        await deploy(client, app_manifest("hello", tag_ref))
        await served_by(client, "hello-echo", {a.host_id, b.host_id})
        assert a.cache.fetcher.sources["oci"] == 1 and b.cache.fetcher.sources["oci"] == 1
        assert pushed.extra["manifest_digest"].startswith("sha256:")

        await registry.stop()
        seed = b.identity._seed.decode()
        await b.stop("restart")
        b2 = await isolated("b", seed=seed, insecure_registries=insecure)
        await until(lambda: _runs(client, b2.host_id, "hello-echo"), 240)
        assert b2.cache.fetcher.sources["cache-offline"] == 1
        await served_by(client, "hello-echo", {a.host_id, b2.host_id})
    finally:
        await registry.stop()


async def test_compiled_artifacts_not_signed_by_a_lattice_host_are_never_loaded(
    isolated: Start, client: LatticeClient, built
) -> None:
    """Deserializing runs native code: a stranger's artifact, or one whose bytes do not
    match the lattice host's signature, is ignored; the host compiles and republishes."""
    a = await isolated("a")
    bucket = ObjectBucket(client.nc, compiled_bucket(client.lattice), "")
    stranger = load_identity(None)
    garbage = b"\x7fELF pretend native code"
    cases = [
        ("echo", "v1", stranger, garbage),  # valid signature, but no host of this lattice
        ("echo", "v2", a.identity, b"other bytes"),  # a lattice host signed other bytes
    ]
    for name, variant, signer, signed in cases:
        wasm = build(name, variant).read_bytes()
        digest = sha256_digest(wasm)
        headers = {
            SIGNER_HEADER: signer.host_id,
            SIGNATURE_HEADER: sign(signer.sign, digest, COMPILE_KEY, signed),
        }
        await bucket.put(object_name(digest, COMPILE_KEY), garbage, headers)

    b = await isolated("b")
    for n, (name, variant, _signer, _signed) in enumerate(cases):
        ref = f"lattice://{name}-{variant}:1.0.0"
        await ops.push(
            ref, build(name, variant), nc=client.nc, lattice=client.lattice, policy=FetchPolicy()
        )
        await client.scale_component(b.host_id, ref, f"c{n}", 1, wait=240)
        assert await client.call(f"c{n}", "echo", ["x"]) == "x"
    assert b.cache.sources["compiled"] == 2 and b.cache.sources["lattice"] == 0
    for entry in await bucket.list():  # replaced by b's own, properly signed artifacts
        assert entry.headers[SIGNER_HEADER] == b.host_id


async def test_registry_credentials_come_from_named_config_and_never_show(
    isolated: Start, client: LatticeClient, built, tmp_path
) -> None:
    secret = "pw-never-shown-4711"
    reg = DistributionRegistry(tmp_path / "authreg", users={"ada": secret})
    await reg.start()
    try:
        ref = f"{reg.address}/lattice/echo:0.1.0"
        pusher = OciClient(
            insecure={reg.address}, credentials={reg.address: Credentials("ada", secret)}
        )
        parsed = parse(ref)
        assert isinstance(parsed, OciRef)
        await pusher.push(parsed, built["echo"].read_bytes())
        rec = await EventRecorder.start(client.nc, client.lattice)
        host = await isolated(
            "a", insecure_registries=(reg.address,), registry_configs={reg.address: "regcreds"}
        )
        with pytest.raises(LatticeError, match=f"registry {reg.address} refused access"):
            await client.scale_component(host.host_id, ref, "echo", 1, wait=60)
        await client.put_config(
            "regcreds", {"username": "ada", "password": secret}, ["password"], wait=10
        )
        await client.scale_component(host.host_id, ref, "echo", 1, wait=240)
        assert await client.call("echo", "echo", ["ok"]) == "ok"
        inventory = (await client.inventory(host.host_id)).model_dump_json()
        assert "echo" in inventory and secret not in inventory
        assert rec.events and all(secret not in json.dumps(e) for e in rec.events)
        assert secret not in json.dumps(await client.get_config("regcreds"))
    finally:
        await reg.stop()


async def test_a_read_interrupted_by_a_nats_restart_resumes(tmp_path: Path, built) -> None:
    """The NATS server restarts in the middle of a download and the reader's consumer is
    gone: the read goes on from the chunk after the last one received, and the bytes
    still match their digest."""
    server = natsd.EmbeddedNats(
        "127.0.0.1", natsd.free_port(), tmp_path / "js", tmp_path / "nats.log"
    )
    await server.start()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        wasm = built["echo"].read_bytes()
        bucket = ObjectBucket(nc, "RESUME", "resume test")
        info = await bucket.put("echo", wasm, {})
        seen: list[int] = []

        async def restart_once(received: int, chunks: int) -> None:
            seen.append(received)
            if len(seen) == 1:
                assert received < chunks  # mid-way
                await server.stop()
                await server.start()
                js = nc.jetstream()
                for c in await js.consumers_info("OBJ_RESUME"):  # lose the consumer too
                    await js.delete_consumer("OBJ_RESUME", c.name)

        with structlog.testing.capture_logs() as logs:
            data = await bucket.get("echo", info.digest, progress=restart_once)
        assert data == wasm
        resumed = [e for e in logs if e["event"] == "object read interrupted; resuming"]
        assert resumed and resumed[0]["received"] == seen[0]
    finally:
        await nc.close()
        await server.stop()
