"""Runs a plan's commands against the hosts, one phase after another.

The command worker is the only part of the controller that changes the lattice (wadm's
`workers/command.rs`). Commands of one phase run concurrently; the next phase waits
for them. Link and config commands are final when the host answers; component and
provider commands are acknowledged at once and finish later, so they stay "in flight"
until the observer reports their outcome event (or `INFLIGHT_FOR` passes) — meanwhile
the planner sees their expected effect (an optimistic overlay), and does not send them
again. Failures, whether refused at once or reported by a `*_failed` event, are
recorded for backoff with jitter, so a failing command is retried later, never in a
tight loop.

`on_send` hooks see every command just before it goes on the wire (the seam tests use
to count what the controller really sends, not what a plan proposed).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import structlog

from lattice.client import LatticeClient, LatticeError
from lattice.controller import simulate
from lattice.controller.backoff import Backoff, Failure, record_failure, record_success
from lattice.controller.commands import Command, CommandKey, Phase
from lattice.controller.plan import Plan
from lattice.controller.snapshot import LatticeSnapshot
from lattice.protocol import subjects

log = structlog.get_logger("lattice.controller.worker")

INFLIGHT_FOR = 60.0  # a scale the host acknowledged but never reported on is retried after this
CONFIRM_WITHIN = 30.0  # how long stops wait for the starts of their round
START_PHASES = {Phase.RESTART_PROVIDER, Phase.START_PROVIDER, Phase.SCALE_UP}
STOP_PHASES = {Phase.SCALE_DOWN, Phase.STOP_PROVIDER}
# replies that mean a stop or delete has nothing left to do
_ALREADY_DONE = ("is not running", "no link from", "no config named")
_OUTCOMES = {
    "component_scaled": ("component", True),
    "component_scale_failed": ("component", False),
    "provider_started": ("provider", True),
    "provider_start_failed": ("provider", False),
    "provider_stopped": ("provider", True),
}


class Worker:
    def __init__(
        self,
        client: LatticeClient,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.rand = rand
        self.failures: dict[CommandKey, Failure] = {}
        self.inflight: dict[CommandKey, tuple[Command, float]] = {}
        self.on_send: list[Callable[[Command], None]] = []
        self._log = log.bind(lattice=client.lattice)

    def overlay(self, snapshot: LatticeSnapshot) -> LatticeSnapshot:
        """The snapshot as it will be once the in-flight commands finish."""
        now = self.clock()
        self.inflight = {k: v for k, v in self.inflight.items() if v[1] > now}
        if not self.inflight:
            return snapshot
        try:
            return simulate.apply([c for c, _ in self.inflight.values()], snapshot, strict=False)
        except simulate.SimulationError:
            return snapshot

    async def run(self, plan: Plan) -> list[Command]:
        """Send every command of `plan` (phase by phase); returns those sent.

        Stops wait until this round's starts are confirmed by their events, so moving a
        replica never drops below the desired count; if a start failed, the stops wait
        for a later round."""
        sent: list[Command] = []
        started: list[CommandKey] = []
        for phase, commands in plan.phases():
            if phase in STOP_PHASES and started and not await self._confirmed(started):
                self._log.info("holding back stops until the new replicas are up")
                break
            todo = [c for c in commands if c.key not in self.inflight]
            await asyncio.gather(*(self._send(c) for c in todo))
            sent += todo
            if phase in START_PHASES:
                started += [c.key for c in todo if c.key in self.inflight]
        return sent

    async def _confirmed(self, keys: list[CommandKey], timeout: float = CONFIRM_WITHIN) -> bool:
        """Wait for the outcome events of `keys`; False if any failed or timed out."""
        deadline = self.clock() + timeout
        while any(k in self.inflight for k in keys):
            if self.clock() > deadline:
                return False
            await asyncio.sleep(0.05)
        return not any(k in self.failures for k in keys)

    async def _send(self, cmd: Command) -> None:
        noun, verb, target, body = cmd.request()
        subject = subjects.ctl(self.client.lattice, noun, verb, target)
        for hook in self.on_send:
            hook(cmd)
        settles_later = noun in ("component", "provider")
        if settles_later:  # before sending: the outcome event may beat the reply
            self.inflight[cmd.key] = (cmd, self.clock() + INFLIGHT_FOR)
        try:
            await self.client.request(subject, body)
        except LatticeError as exc:
            self.inflight.pop(cmd.key, None)
            if verb in ("stop", "del") and any(s in str(exc) for s in _ALREADY_DONE):
                self.failures = record_success(self.failures, cmd.key)
                return
            self._failed(cmd.key, str(exc))
            self._log.warning("command failed", command=cmd.describe(), error=str(exc))
            return
        self._log.info("command sent", command=cmd.describe())
        if not settles_later:
            self.failures = record_success(self.failures, cmd.key)

    def _failed(self, key: CommandKey, error: str) -> None:
        self.failures = record_failure(
            self.failures, key, error, now=self.clock(), policy=self.backoff, rand=self.rand
        )

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Outcome events from the observer: settle in-flight commands."""
        outcome = _OUTCOMES.get(kind)
        if outcome is None:
            return
        noun, ok = outcome
        entity = data.get("component_id") if noun == "component" else data.get("provider_id")
        key: CommandKey = (noun, data.get("host_id", ""), entity or "")
        self.inflight.pop(key, None)
        if ok:
            self.failures = record_success(self.failures, key)
        else:
            self._failed(key, str(data.get("error", kind)))
