"""Heal time (issue 8, part 6): a dead host is noticed in seconds, a slow one never.

- Pure: how a liveness beat turns into the planner's view of a host.
- A `lattice up` host is SIGKILLed under a deployed app: its replicas run elsewhere and
  the app is `deployed` again well before the 15 s heartbeat expiry would allow.
- A host whose event loop is blocked for longer than its beat window is *not* lost:
  the beat runs in a thread of its own. The host runs on an event loop in another
  thread of this process, so blocking it leaves the controller's loop alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from host.config import HostConfig
from host.host import Host
from lattice.client import LatticeClient
from lattice.controller.commands import Command
from lattice.controller.run.observer import with_beat
from lattice.controller.run.service import Controller
from lattice.controller.snapshot import HostSnapshot
from lattice.protocol import events
from tests.conftest import CACHE
from tests.test_controller_live import deploy, eventually
from tests.test_provider_lifetime import kill_host, lattice_up


def echo_app(name: str, image: str, instances: int) -> bytes:
    spread = {"type": "spreadscaler", "properties": {"instances": instances}}
    component = {
        "name": "echo",
        "type": "component",
        "properties": {"image": image},
        "traits": [spread],
    }
    return json.dumps(
        {
            "apiVersion": "core.oam.dev/v1beta1",
            "kind": "Application",
            "metadata": {"name": name, "annotations": {"version": "v1"}},
            "spec": {"components": [component]},
        }
    ).encode()


# -- pure ----------------------------------------------------------------------------------


def test_a_beating_host_is_seen_when_it_last_beat_and_lost_after_the_misses() -> None:
    host = HostSnapshot("h1", last_seen=100.0)
    seen = with_beat(host, (104.0, 1.0), 3)
    assert (seen.last_seen, seen.expiry) == (104.0, 3.0)
    assert "h1" in seen_live(seen, now=107.0) and "h1" not in seen_live(seen, now=107.1)
    assert with_beat(host, None, 3) is host  # no beats: the default expiry applies


def test_a_host_alive_otherwise_but_not_beating_keeps_the_default_expiry() -> None:
    host = HostSnapshot("h1", last_seen=120.0)  # inventory newer than beats allow
    assert with_beat(host, (110.0, 1.0), 3) is host


def seen_live(host: HostSnapshot, now: float) -> set[str]:
    from lattice.controller.snapshot import LatticeSnapshot

    return set(LatticeSnapshot.build([host]).live_hosts(now, expiry=15.0))


def test_beats_parse_and_refuse_garbage() -> None:
    assert events.parse_beat(events.beat("NABC", 7, 1.0)) == ("NABC", 7, 1.0)
    for bad in (b"", b"{", b"[]", b'{"host_id": 1, "seq": 1, "interval": 1}', b'{"host_id":"N"}'):
        assert events.parse_beat(bad) is None
    assert events.parse_beat(b'{"host_id": "N", "seq": 1, "interval": 0}') is None
    assert events.beat_subject("lat", "NABC") == "wasmbus.beat.lat.NABC"


# -- a SIGKILLed host ----------------------------------------------------------------------


async def test_a_sigkilled_host_is_replaced_within_seconds(
    nats_url: str, lattice_name: str, client: LatticeClient, tmp_path: Path, echo_ref: str
) -> None:
    procs = [await lattice_up(nats_url, lattice_name, tmp_path, z) for z in ("a", "b", "c")]
    ctl = Controller(nats_url, lattice_name)  # defaults: beats on, heartbeat expiry 15 s
    try:
        hosts: dict[str, str] = {}

        async def all_up() -> bool:
            hosts.update({h.labels["zone"]: h.id for h in await client.hosts(wait=0.5)})
            return len(hosts) == 3

        await eventually(all_up, timeout=60, what="three hosts")
        await ctl.start()
        await deploy(client, echo_app("heal", echo_ref, 6))

        async def is_deployed() -> bool:
            return (await client.model("status", "heal"))["status"]["state"] == "deployed"

        await eventually(is_deployed, timeout=120, what="heal deployed")
        where = (await client.model("status", "heal"))["status"]["components"][0]["where"]
        assert len(where) == 3, where
        procs[0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        left = [hosts["b"], hosts["c"]]

        async def healed() -> bool:
            total = 0
            for h in left:
                inv = await client.inventory(h)
                total += sum(c.max_instances for c in inv.components if c.id == "heal-echo")
            return total == 6 and await is_deployed()

        await eventually(healed, timeout=60, what="replicas re-placed")
        took = time.monotonic() - killed
        print(f"\nheal after SIGKILL: {took:.1f} s")
        assert took < 10.0, f"re-placed after {took:.1f} s"
        history = (await client.model("history", "heal"))["history"]
        lost = [s for h in history if h["action"] == "reconcile" for s in h["stopped"]]
        assert any(f"host {hosts['a']} lost (no beat for" in s["cause"] for s in lost), lost
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctl.stop(), 30)
        for p in procs:
            if p.returncode is None:
                p.terminate()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 20)
            except TimeoutError:
                await kill_host(p)


# -- a slow host ---------------------------------------------------------------------------


class ThreadHost:
    """A host on an event loop of its own, in a thread, so the test can stall that loop."""

    def __init__(self, config: HostConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.host = Host(config)

    async def run(self, coro: Any, timeout: float = 60) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    def stall(self, seconds: float) -> None:
        """Block the host's event loop, as a long GC or a busy callback would."""
        self.loop.call_soon_threadsafe(time.sleep, seconds)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def slow_host(nats_url: str, lattice_name: str) -> Iterator[ThreadHost]:
    th = ThreadHost(
        HostConfig(
            nats_url=nats_url,
            lattice=lattice_name,
            data_dir=CACHE / "test-host",
            embedded_nats=False,
            beat_interval=0.5,  # a beat window of 1.5 s: shorter than the stall below
        )
    )
    yield th
    with contextlib.suppress(Exception):
        fut = asyncio.run_coroutine_threadsafe(th.host.stop("test finished"), th.loop)
        fut.result(30)
    th.close()


@pytest.fixture
async def controller(nats_url: str, lattice_name: str) -> AsyncIterator[Controller]:
    ctl = Controller(nats_url, lattice_name, tick=0.2)
    await ctl.start()
    try:
        yield ctl
    finally:
        await asyncio.wait_for(ctl.stop(), 30)


async def test_a_host_with_a_stalled_event_loop_is_not_lost(
    slow_host: ThreadHost, controller: Controller, client: LatticeClient, echo_ref: str
) -> None:
    await slow_host.run(slow_host.host.start())
    host_id = slow_host.host.host_id
    await deploy(client, echo_app("slow", echo_ref, 2))

    async def is_deployed() -> bool:
        return (await client.model("status", "slow"))["status"]["state"] == "deployed"

    await eventually(is_deployed, timeout=120, what="slow deployed")
    await eventually(lambda: _true(host_id in controller.observer.beats), what="first beat")
    sent: list[Command] = []
    controller.worker.on_send.append(sent.append)

    stall = 2.5  # > the 1.5 s beat window: a beat on the host's loop would miss it
    slow_host.stall(stall)
    started, wall = time.monotonic(), time.time()
    answered_ping = False
    live_throughout = True
    beats_in_stall = set()
    while time.monotonic() - started < stall + 2.0:
        snap = controller.observer.snapshot()
        live_throughout &= host_id in snap.live_hosts(time.time(), controller.host_expiry)
        elapsed = time.monotonic() - started
        if elapsed < stall - 1.0:
            answered_ping |= any(h.id == host_id for h in await client.hosts(wait=0.3))
        if elapsed < stall - 0.1:
            at = controller.observer.beats[host_id][0]
            if at > wall + 0.2:
                beats_in_stall.add(at)
        await asyncio.sleep(0.1)
    assert not answered_ping, "the host's loop was not stalled (it answered a ping)"
    assert len(beats_in_stall) >= 3, f"beats stopped while the loop stalled: {beats_in_stall}"
    assert live_throughout, "a host that was only slow was taken for lost"
    assert sent == [], [c.describe() for c in sent]
    assert await is_deployed()


async def _true(value: bool) -> bool:
    return value
