"""The observer's bookkeeping without NATS: beats, goodbyes, and stale inventories.

The observer is fed messages directly and given a stand-in for the control client
(the seam it talks to hosts through); the live tests (test_heal.py,
test_controller_stability.py) run the same code against real hosts.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from lattice.controller.run.observer import Observer
from lattice.protocol import events
from lattice.protocol.messages import HostInventory

HOST = "NHOST" + "A" * 51


@dataclass
class Msg:
    data: bytes


class Inventories:
    """Answers `inventory()` with what the test sets, when the test lets it."""

    lattice = "obs"

    def __init__(self) -> None:
        self.components: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.asked = 0

    async def inventory(self, host_id: str) -> HostInventory:
        self.asked += 1
        components = list(self.components)  # what the host runs when it is asked
        await self.release.wait()
        return HostInventory.model_validate(
            {
                "host_id": host_id,
                "friendly_name": "h",
                "lattice": "obs",
                "labels": {},
                "components": components,
                "providers": [],
                "version": "0",
                "uptime_seconds": 1,
                "uptime_human": "1s",
            }
        )


def event(kind: str, data: dict[str, Any]) -> Msg:
    return Msg(events.encode(events.cloud_event(HOST, kind, {"host_id": HOST, **data})))


def component(count: int) -> dict[str, Any]:
    return {"id": "c1", "image_ref": "file:///c.wasm", "max_instances": count, "annotations": {}}


async def observer(clock: list[float]) -> tuple[Observer, Inventories]:
    inv = Inventories()
    obs = Observer(None, inv, "obs", clock=lambda: clock[0])  # type: ignore[arg-type]
    await obs.refresh(HOST)
    return obs, inv


async def test_an_inventory_older_than_an_event_does_not_undo_it() -> None:
    obs, inv = await observer([100.0])
    inv.release.clear()
    slow = asyncio.create_task(obs.refresh(HOST))  # asked before the scale happened
    await asyncio.sleep(0)
    await obs._on_event(event("component_scaled", {**component(3), "component_id": "c1"}))
    inv.components = [component(3)]
    inv.release.set()
    await slow
    assert obs.hosts[HOST].components["c1"].count == 3
    await asyncio.gather(*obs._tasks)  # the refresh the event started
    assert obs.hosts[HOST].components["c1"].count == 3 and inv.asked == 3


async def test_beats_shorten_the_expiry_and_late_beats_after_a_goodbye_are_ignored() -> None:
    clock = [100.0]
    obs, _ = await observer(clock)
    clock[0] = 104.0
    await obs._on_beat(Msg(events.beat(HOST, 1, 1.0)))
    host = obs.snapshot().hosts[HOST]
    assert (host.last_seen, host.expiry) == (104.0, 3.0)
    await obs._on_beat(Msg(b"not json"))
    assert obs.beats[HOST] == (104.0, 1.0)
    await obs._on_event(event("host_stopped", {"labels": {}, "reason": "bye"}))
    await obs._on_beat(Msg(events.beat(HOST, 2, 1.0)))
    assert HOST not in obs.hosts and HOST not in obs.beats
    await obs._on_event(event("host_started", {"friendly_name": "h", "labels": {}}))
    await obs._on_beat(Msg(events.beat(HOST, 1, 1.0)))
    assert HOST in obs.beats  # back after a restart
    await asyncio.gather(*obs._tasks)
    for timer in obs._beat_timers.values():
        timer.cancel()


def test_event_helpers_round_trip() -> None:
    assert json.loads(events.beat(HOST, 5, 0.5)) == {"host_id": HOST, "seq": 5, "interval": 0.5}
