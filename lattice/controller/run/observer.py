"""The observed lattice, kept from heartbeats, events and a periodic inventory resync.

Hosts: a `host_heartbeat` carries a full inventory; any event from a host, and its
answer to the periodic `host.ping`, counts as seeing it; events that change what a host
runs (`component_scaled`, `provider_started`, …) trigger a `host.get` for that host, and
every `resync_interval` every host's inventory is fetched again — so a missed event
heals itself. `host_stopped` removes a host at once; a host that goes silent is left to
the planner's expiry. Links and config come from the same JetStream buckets the hosts
watch (`lattice.state`). Every change sets `changed`, which wakes the reconcile loop.

Liveness: hosts that send beats (`host/liveness.py`, about one a second) are lost after
`beat_misses` missed beats instead of the planner's `host_expiry`; a timer wakes the
loop the moment a beat is overdue, so a dead host is noticed within a few seconds.
Hosts that never beat (older versions, beats off) keep the heartbeat/ping expiry, and
so does a host whose other signs of life outlive its beats (its beat broke, not it).

The first resync waits for every host's inventory, so the first plan never sees a
partial lattice (it would start replicas that run on a host not yet heard from, and
stop the surplus once it is).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from lattice.client import LatticeClient, LatticeError
from lattice.controller.snapshot import ComponentInstance, HostSnapshot, LatticeSnapshot
from lattice.protocol import events, subjects
from lattice.protocol.events import short_type
from lattice.state import LatticeState

log = structlog.get_logger("lattice.controller.observer")

REFRESH_ON = {
    "host_started",
    "component_scaled",
    "component_scale_failed",
    "provider_started",
    "provider_start_failed",
    "provider_stopped",
    "labels_changed",
}

EventListener = Callable[[str, dict[str, Any]], None]
DEFAULT_BEAT_MISSES = 3.0
Beat = tuple[float, float]  # (when the last beat arrived, the host's beat interval)


def with_beat(host: HostSnapshot, beat: Beat | None, misses: float) -> HostSnapshot:
    """The host as the planner should see it given its last liveness beat: seen when it
    last beat, and lost after `misses` beat intervals of silence. A host with no beats,
    or whose other signs of life (events, inventory) are newer than its beats allow,
    keeps the default expiry."""
    if beat is None:
        return host
    at, interval = beat
    window = interval * misses
    if host.last_seen > at + window:
        return host
    return dataclasses.replace(host, last_seen=max(host.last_seen, at), expiry=window)


def apply_event(host: HostSnapshot, kind: str, data: dict[str, Any], now: float) -> HostSnapshot:
    """What an outcome event says about a host, applied at once (an inventory refresh
    follows), so the planner does not send the same command again meanwhile."""
    components = dict(host.components)
    providers = dict(host.providers)
    if kind == "component_scaled" and data.get("component_id"):
        if int(data.get("max_instances", 0)) == 0:
            components.pop(data["component_id"], None)
        else:
            components[data["component_id"]] = ComponentInstance(
                image_ref=data["image_ref"],
                count=int(data["max_instances"]),
                annotations=dict(data.get("annotations") or {}),
            )
    elif kind == "provider_stopped":
        providers.pop(data.get("provider_id", ""), None)
    return dataclasses.replace(host, components=components, providers=providers, last_seen=now)


class Observer:
    def __init__(
        self,
        nc: NATS,
        client: LatticeClient,
        lattice: str,
        *,
        resync_interval: float = 5.0,
        beat_misses: float = DEFAULT_BEAT_MISSES,
        beats: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nc = nc
        self.client = client
        self.lattice = lattice
        self.resync_interval = resync_interval
        self.clock = clock
        self.hosts: dict[str, HostSnapshot] = {}
        self.beat_misses = beat_misses
        self.use_beats = beats
        self.beats: dict[str, Beat] = {}
        self._beat_timers: dict[str, asyncio.TimerHandle] = {}
        self._beat_sub: Subscription | None = None
        self._refreshing: set[str] = set()
        self._said_goodbye: set[str] = set()  # host_stopped seen; late beats are ignored
        self._changes: dict[str, int] = {}  # per host: events that changed what it runs
        self.state = LatticeState(nc, lattice)
        self.changed = asyncio.Event()
        self.listeners: list[EventListener] = []
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = log.bind(lattice=lattice)

    async def start(self) -> None:
        self.state.on_link_change(self._state_changed)
        self.state.on_config_change(self._state_changed)
        await self.state.start()
        self._sub = await self.nc.subscribe(
            subjects.events_wildcard(self.lattice), cb=self._on_event
        )
        if self.use_beats:
            self._beat_sub = await self.nc.subscribe(
                events.beat_wildcard(self.lattice), cb=self._on_beat
            )
        await self.resync()
        self._spawn(self._resync_loop())

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for timer in self._beat_timers.values():
            timer.cancel()
        for sub in (self._sub, self._beat_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        await self.state.stop()

    def snapshot(self) -> LatticeSnapshot:
        return LatticeSnapshot.build(
            hosts=[
                with_beat(h, self.beats.get(h.id), self.beat_misses) for h in self.hosts.values()
            ],
            links=list(self.state.links.values()),
            configs={n: c.values for n, c in self.state.configs.items()},
        )

    # -- inputs ---------------------------------------------------------------

    async def _state_changed(self, *_: object) -> None:
        self.changed.set()

    async def _on_event(self, msg: Any) -> None:
        try:
            ev = json.loads(msg.data)
            kind, data = short_type(ev["type"]), ev.get("data") or {}
        except (ValueError, KeyError, TypeError):
            return
        host_id = data.get("host_id") or ev.get("source")
        now = self.clock()
        if kind in ("host_started", "host_heartbeat"):
            self._said_goodbye.discard(host_id)
        if kind == "host_started":
            # a host (re)started under a known id runs nothing yet: whatever its old
            # snapshot lists died with the old process; the refresh below asks anew
            self.hosts.pop(host_id, None)
        if kind == "host_heartbeat":
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.hosts[host_id] = HostSnapshot.from_inventory(data, last_seen=now)
        elif kind == "host_stopped":
            self.hosts.pop(host_id, None)
            self._said_goodbye.add(host_id)
            self.beats.pop(host_id, None)
            timer = self._beat_timers.pop(host_id, None)
            if timer is not None:
                timer.cancel()
        else:
            if host_id in self.hosts:
                self.hosts[host_id] = apply_event(self.hosts[host_id], kind, data, now)
            if kind in REFRESH_ON and host_id:
                self._changes[host_id] = self._changes.get(host_id, 0) + 1
                self._spawn(self.refresh(host_id))
        for listener in self.listeners:
            listener(kind, data)
        self.changed.set()

    async def _on_beat(self, msg: Any) -> None:
        """A liveness beat: the host is alive now; wake the loop when the next is overdue."""
        beat = events.parse_beat(msg.data)
        if beat is None:
            return
        host_id, _seq, interval = beat
        if host_id in self._said_goodbye:
            return  # sent before its host_stopped, arrived after
        now = self.clock()
        previous = self.beats.get(host_id)
        self.beats[host_id] = (now, interval)
        window = interval * self.beat_misses
        if previous is None or now - previous[0] > previous[1] * self.beat_misses:
            self.changed.set()  # new, or back after it was taken for lost
            if previous is not None:
                # back after it was taken for lost: its snapshot predates the loss (a
                # restarted host runs nothing of it), so it must not count as running
                # replicas that would then look like a surplus; ask it again
                self.hosts.pop(host_id, None)
        if host_id not in self.hosts and host_id not in self._refreshing:
            self._spawn(self.refresh(host_id))  # a host not heard from otherwise yet
        old = self._beat_timers.pop(host_id, None)
        if old is not None:
            old.cancel()
        self._beat_timers[host_id] = asyncio.get_running_loop().call_later(
            window + 0.05, self.changed.set
        )

    async def refresh(self, host_id: str) -> None:
        """Replace the host's snapshot with its inventory — unless an event changed it
        while the answer was on its way: the answer may predate that event, and the
        refresh the event started will bring the newer inventory."""
        self._refreshing.add(host_id)
        mark = self._changes.get(host_id, 0)
        try:
            inv = await self.client.inventory(host_id)
        except LatticeError:
            return
        finally:
            self._refreshing.discard(host_id)
        if host_id in self.hosts and self._changes.get(host_id, 0) != mark:
            return
        self.hosts[host_id] = HostSnapshot.from_inventory(inv.model_dump(), last_seen=self.clock())
        self.changed.set()

    async def resync(self) -> None:
        """Ask every host for its inventory; returns once every answer is applied."""
        refreshes: list[asyncio.Task[None]] = []
        try:
            async for ping in self.client.stream_hosts(wait=1.0):
                refreshes.append(asyncio.create_task(self.refresh(ping.id)))
        except LatticeError as exc:
            self._log.warning("resync failed", error=str(exc))
        if refreshes:
            await asyncio.gather(*refreshes, return_exceptions=True)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_interval)
            await self.resync()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
