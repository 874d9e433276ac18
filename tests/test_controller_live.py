"""The controller against real hosts on a real NATS: spread, daemons, host loss,
shared providers, upgrades under load, rollback, bad manifests, leader failover."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from lattice.client import LatticeClient, LatticeError
from lattice.controller.run.service import Controller

ECHO = "lattice:examples/echo.echo"


def manifest(name: str, components: list[dict[str, Any]], version: str = "v1") -> bytes:
    return json.dumps(
        {
            "apiVersion": "core.oam.dev/v1beta1",
            "kind": "Application",
            "metadata": {"name": name, "annotations": {"version": version}},
            "spec": {"components": components},
        }
    ).encode()


def echo_component(image: str, traits: list[dict[str, Any]], name: str = "echo") -> dict[str, Any]:
    return {"name": name, "type": "component", "properties": {"image": image}, "traits": traits}


def spread(instances: int, rules: list[tuple[str, dict[str, str], int]] | None = None) -> dict:
    props: dict[str, Any] = {"instances": instances}
    if rules:
        props["spread"] = [{"name": n, "requirements": r, "weight": w} for n, r, w in rules]
    return {"type": "spreadscaler", "properties": props}


async def eventually(check: Callable[[], Any], timeout: float = 90.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except (LatticeError, KeyError, AssertionError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")


async def counts(client: LatticeClient, component_id: str) -> dict[str, int]:
    """Instances of a component per host label `zone`."""
    found: dict[str, int] = {}
    for h in await client.hosts(wait=0.5):
        inv = await client.inventory(h.id)
        for c in inv.components:
            if c.id == component_id:
                found[inv.labels.get("zone", h.id)] = c.max_instances
    return found


@pytest.fixture
async def lattice3(start_host, nats_url: str, lattice_name: str) -> AsyncIterator[list]:
    hosts = [await start_host(labels={"zone": z}, heartbeat_interval=0.5) for z in "abc"]
    ctl = Controller(
        nats_url, lattice_name, host_expiry=3.0, tick=0.3, lease_ttl=3.0, resync_interval=1.0
    )
    await ctl.start()
    try:
        yield [ctl, *hosts]
    finally:
        await asyncio.wait_for(ctl.stop(), 30)


async def deploy(client: LatticeClient, body: bytes) -> dict[str, Any]:
    put = await client.model("put", body=body)
    return await client.model("deploy", put["name"], {"version": put["version"]})


async def deployed(client: LatticeClient, name: str) -> Callable[[], Any]:
    async def check() -> bool:
        return (await client.model("status", name))["status"]["state"] == "deployed"

    return check


async def test_weighted_spread_and_daemonscaler(lattice3, client: LatticeClient, echo_ref) -> None:
    await deploy(
        client,
        manifest(
            "weighted",
            [
                echo_component(
                    echo_ref, [spread(4, [("a", {"zone": "a"}, 80), ("b", {"zone": "b"}, 20)])]
                ),
            ],
        ),
    )
    await eventually(await deployed(client, "weighted"), what="weighted deployed")
    assert await counts(client, "weighted-echo") == {"a": 3, "b": 1}  # 80/20 of 4 is 3/1

    await deploy(
        client,
        manifest(
            "daemon",
            [
                echo_component(
                    echo_ref, [{"type": "daemonscaler", "properties": {"instances": 2}}]
                ),
            ],
        ),
    )
    await eventually(await deployed(client, "daemon"), what="daemon deployed")
    assert await counts(client, "daemon-echo") == {"a": 2, "b": 2, "c": 2}
    status = (await client.model("status", "daemon"))["status"]
    (comp,) = status["components"]
    assert comp["desired"] == comp["running"] == 6 and len(comp["where"]) == 3
    assert await client.call("daemon-echo", ECHO, ["hi"]) == "hi"


async def test_lost_host_replicas_come_back_elsewhere(lattice3, client, echo_ref) -> None:
    _ctl, a, _b, _c = lattice3
    await deploy(client, manifest("heal", [echo_component(echo_ref, [spread(6)])]))
    await eventually(await deployed(client, "heal"), what="heal deployed")
    assert sum((await counts(client, "heal-echo")).values()) == 6
    # the host vanishes without a goodbye: no host_stopped, just silence
    a._stopping = True
    await a.nc.close()
    if a._beat is not None:
        await asyncio.to_thread(a._beat.stop)  # its liveness beat goes silent too
    started = time.monotonic()

    async def healed() -> bool:
        c = await counts(client, "heal-echo")
        return "a" not in c and sum(c.values()) == 6

    await eventually(healed, timeout=30, what="replicas re-placed")
    assert time.monotonic() - started < 15


async def test_undeploy_removes_owned_and_keeps_shared(lattice3, client, echo_ref) -> None:
    def app(name: str) -> bytes:
        return manifest(
            name,
            [
                echo_component(echo_ref, [spread(1)]),
                {
                    "name": "kv",
                    "type": "capability",
                    "properties": {"image": "builtin://keyvalue-nats", "id": "shared-kv"},
                    "traits": [spread(1, [("a", {"zone": "a"}, 100)])],
                },
            ],
        )

    await deploy(client, app("one"))
    await deploy(client, app("two"))
    for n in ("one", "two"):
        await eventually(await deployed(client, n), what=f"{n} deployed")

    async def providers() -> set[str]:
        found = set()
        for h in await client.hosts(wait=0.5):
            found |= {p["id"] for p in (await client.inventory(h.id)).providers}
        return found

    assert await providers() == {"shared-kv"}
    await client.model("undeploy", "one")

    async def one_gone() -> bool:
        return await counts(client, "one-echo") == {} and await counts(client, "two-echo") != {}

    await eventually(one_gone, what="one's component removed")
    await asyncio.sleep(1.0)
    assert await providers() == {"shared-kv"}, "a provider another app uses was stopped"
    await client.model("undeploy", "two")

    async def all_gone() -> bool:
        return await providers() == set() and await counts(client, "two-echo") == {}

    await eventually(all_gone, what="two's component and the shared provider removed")
    assert (await client.model("status", "two"))["status"]["state"] == "undeployed"


async def test_upgrade_under_load_and_rollback(lattice3, client, echo_ref, echo_v2_ref) -> None:
    await deploy(client, manifest("up", [echo_component(echo_ref, [spread(3)])], "v1"))
    await eventually(await deployed(client, "up"), what="v1 deployed")
    failures: list[BaseException] = []
    seen: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                seen.append(await client.call("up-echo", "echo.version", []))
            except Exception as exc:  # recorded: asserted empty below
                failures.append(exc)

    workers = [asyncio.create_task(load()) for _ in range(6)]
    await asyncio.sleep(0.5)
    await deploy(client, manifest("up", [echo_component(echo_v2_ref, [spread(3)])], "v2"))

    async def on_v2() -> bool:
        return seen[-20:] == ["v2"] * 20

    await eventually(on_v2, what="every host on v2")
    stop.set()
    await asyncio.gather(*workers)
    assert failures == [] and "v1" in seen

    reply = await client.model("deploy", "up", {"version": "v1"})  # rollback
    assert reply["version"] == "v1"

    async def back_on_v1() -> bool:
        return {await client.call("up-echo", "echo.version", []) for _ in range(10)} == {"v1"}

    await eventually(back_on_v1, what="rolled back to v1")
    history = (await client.model("history", "up"))["history"]
    assert [h["action"] for h in history][-1] == "rollback"
    versions = (await client.model("versions", "up"))["versions"]
    assert [(v["version"], v["deployed"]) for v in versions] == [("v1", True), ("v2", False)]


async def test_bad_manifests_and_api_errors(lattice3, client: LatticeClient) -> None:
    bad = manifest(
        "bad",
        [{"name": "x", "type": "component", "properties": {"image": ""}, "traits": [spread(-1)]}],
    )
    with pytest.raises(LatticeError) as err:
        await client.model("put", body=bad)
    assert "spec.components[0].traits[0].properties.instances" in str(err.value)
    assert "spec.components[0].properties.image" in str(err.value)
    with pytest.raises(LatticeError, match=r"no application named 'ghost'"):
        await client.model("deploy", "ghost")
    with pytest.raises(LatticeError, match="needs the application name"):
        await client.model("deploy")
    with pytest.raises(LatticeError, match=r"unknown operation model\.fly"):
        await client.model("fly")
    with pytest.raises(LatticeError, match="not valid JSON"):
        await client.model("deploy", "x", b"{oops")


async def test_standby_takes_over_when_the_leader_dies(
    start_host, nats_url: str, lattice_name: str, client: LatticeClient, echo_ref
) -> None:
    await start_host(labels={"zone": "a"}, heartbeat_interval=0.5)
    first = Controller(nats_url, lattice_name, host_expiry=3, tick=0.3, lease_ttl=2.0)
    second = Controller(nats_url, lattice_name, host_expiry=3, tick=0.3, lease_ttl=2.0)
    await first.start()
    await asyncio.sleep(0.2)
    await second.start()
    try:
        await eventually(lambda: _true(first.is_leader or second.is_leader), what="a leader")
        leader, standby = (first, second) if first.is_leader else (second, first)
        assert not standby.is_leader
        await deploy(client, manifest("ha1", [echo_component(echo_ref, [spread(1)])]))
        await eventually(await deployed(client, "ha1"), what="ha1 deployed")
        # deploy, and kill the leader while it reconciles: no graceful release of its lease
        await deploy(client, manifest("ha2", [echo_component(echo_ref, [spread(2)])]))
        await asyncio.sleep(0.05)
        for t in leader._tasks:
            t.cancel()
        await leader.nc.close()
        started = time.monotonic()
        await eventually(lambda: _true(standby.is_leader), timeout=15, what="takeover")
        await eventually(await deployed(client, "ha2"), what="ha2 deployed by the new leader")
        assert time.monotonic() - started < 12
        assert await counts(client, "ha1-echo") == {"a": 1}  # nothing done twice
    finally:
        for c in (first, second):
            with contextlib.suppress(Exception):
                await c.stop()


async def _true(value: bool) -> bool:
    return value


async def test_history_explains_every_stop(lattice3, client: LatticeClient, echo_ref) -> None:
    await deploy(client, manifest("why", [echo_component(echo_ref, [spread(3)])], "v1"))
    await eventually(await deployed(client, "why"), what="v1 deployed")
    await deploy(client, manifest("why", [echo_component(echo_ref, [spread(1)])], "v2"))

    async def scaled_down() -> bool:
        return sum((await counts(client, "why-echo")).values()) == 1

    await eventually(scaled_down, what="scaled down to 1")
    history = (await client.model("history", "why"))["history"]
    rounds = [h for h in history if h["action"] == "reconcile"]
    stopped = [s for h in rounds for s in h["stopped"]]
    assert rounds and all(h["version"] == "v2" for h in rounds)
    assert len(stopped) == 2, stopped
    assert {s["cause"] for s in stopped} == {
        "replica surplus on rule 'default' (no requirements): 3 > 1"
    }
    assert all(s["command"].startswith("stop why-echo on ") for s in stopped)
