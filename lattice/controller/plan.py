"""The reconciler's plan: desired applications + observed lattice → ordered commands.

`plan(desired, observed, now=…)` is a pure function. It never talks to NATS; a command
worker executes the commands phase by phase (`commands.Phase`), events and heartbeats
update the snapshot, and the next plan starts from there. Applied to its own outcome, a
plan has nothing left to do (tested with `simulate.apply` and hypothesis).

One pass:

1. Hosts not seen within `host_expiry` seconds (or their own `expiry`, for hosts that
   send liveness beats) are gone: nothing is sent to them and their replicas no
   longer count, so the scalers place them elsewhere at once.
2. Each deployed manifest is compiled (`desired.compile_app`). A lattice id claimed by
   two apps goes to the one listed first in `desired` (pass them in the order they
   were first deployed, so a new manifest never takes an id from a running app); the
   other app's component fails with a reason. Providers with an explicit `id` and the
   same image in several apps are *shared*: each app's scaler places it, the union of
   their hosts runs it, and it stops only when no deployed app wants it there.
3. Per workload: eligible hosts are the live ones, minus hosts running an instance of
   the same id that the controller did not start (never touched, never counted), minus
   hosts where starting it failed and the backoff has not expired. `scalers.place`
   says how many to run where; the difference with what runs becomes commands:
   a new host → ScaleComponent/StartProvider; another count → ScaleComponent; another
   image at the same count → UpdateComponent (the host swaps with no failed call);
   another image and count → ScaleComponent with `allow_update`; a provider with
   another image or config → StopProvider + StartProvider on that host (a host runs one
   provider per id; for a swap with no gap give the new one another id and re-target the
   link). A workload whose named config does not exist gets no commands and fails.
4. Managed instances (annotation `wasmcloud.dev/managed-by`) of ids no deployed app
   wants are stopped. Undeploying an app therefore removes what it owned, and nothing
   it shared with an app still deployed.
5. Links and config: `wiring.plan_wiring`.
6. Backoff: a command whose key failed and waits (`backoff.waiting`) is held back
   (`Plan.withheld`); while anything that starts a workload is held back, its stops are
   too, so a failed start never turns into fewer replicas.
7. Status per app and component (`assess.py`, `status.py`).

Executing: run phases in order; before `Phase.SCALE_DOWN`, wait for the events that
confirm the `START_PROVIDER`/`SCALE_UP` commands (or give up for this round), so starts
come before stops. Treat "not running"/"no such link" replies to stops and deletes as
success.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lattice.controller import naming
from lattice.controller.assess import Findings, assess
from lattice.controller.backoff import Failure, waiting
from lattice.controller.commands import (
    Command,
    CommandKey,
    Phase,
    ScaleComponent,
    StartProvider,
    StopProvider,
    UpdateComponent,
    order,
)
from lattice.controller.desired import AppSpec, DesiredConfig, Workload, compile_app
from lattice.controller.manifest import Manifest
from lattice.controller.scalers import Placement, place
from lattice.controller.snapshot import HostSnapshot, LatticeSnapshot
from lattice.controller.status import AppStatus
from lattice.controller.wiring import Owner, plan_wiring

DEFAULT_HOST_EXPIRY = 15.0
DEFAULT_FAILED_AFTER = 3

_STARTS = (Phase.RESTART_PROVIDER, Phase.START_PROVIDER, Phase.SCALE_UP)
_STOPS = (Phase.SCALE_DOWN, Phase.STOP_PROVIDER)
_SHARED_ROUNDS = 8


@dataclass(frozen=True)
class Plan:
    commands: tuple[Command, ...]
    status: Mapping[str, AppStatus]
    withheld: tuple[Command, ...] = ()  # held back by backoff; not to be run now
    lost_hosts: tuple[str, ...] = ()  # hosts treated as gone (last seen too long ago)
    apps: Mapping[CommandKey, tuple[str, ...]] = field(default_factory=dict)  # who asked
    losses: Mapping[str, str] = field(default_factory=dict)  # lost host → why, in words

    def apps_of(self, cmd: Command) -> tuple[str, ...]:
        """The applications a command is for (its history goes to them)."""
        return self.apps.get(cmd.key, ())

    @property
    def empty(self) -> bool:
        return not self.commands

    def phases(self) -> list[tuple[Phase, tuple[Command, ...]]]:
        """The commands grouped by phase, in execution order."""
        return [
            (ph, tuple(group))
            for ph, group in itertools.groupby(self.commands, key=lambda c: c.phase)
        ]


def plan(
    desired: Sequence[Manifest],
    observed: LatticeSnapshot,
    *,
    now: float,
    host_expiry: float = DEFAULT_HOST_EXPIRY,
    retired: Sequence[Manifest] = (),
    failures: Mapping[CommandKey, Failure] | None = None,
    failed_after: int = DEFAULT_FAILED_AFTER,
) -> Plan:
    """What to do so that `observed` runs the `desired` applications.

    `desired`: the deployed version of each application, in the order they were first
    deployed — when two claim the same lattice id, link or config name, the earlier wins.

    `retired`: manifests the controller deployed before and may have left things
    behind for — undeployed apps and earlier versions of deployed ones (passing every
    stored version is fine); their links and configs are removed unless still wanted.
    `failures`: the command worker's failure records by command key (`backoff.py`).
    `failed_after`: attempts after which a failing command makes its component `failed`.
    """
    names = [m.name for m in desired]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"applications deployed twice: {', '.join(dupes)}")
    return _Planner(
        specs=[compile_app(m) for m in desired],
        retired=[compile_app(m) for m in retired],
        observed=observed,
        now=now,
        host_expiry=host_expiry,
        failures=failures or {},
        failed_after=failed_after,
    ).run()


class _Planner:
    def __init__(
        self,
        *,
        specs: list[AppSpec],
        retired: list[AppSpec],
        observed: LatticeSnapshot,
        now: float,
        host_expiry: float,
        failures: Mapping[CommandKey, Failure],
        failed_after: int,
    ) -> None:
        self.specs = specs
        self.retired = retired
        self.observed = observed
        self.now = now
        self.failures = failures
        self.failed_after = failed_after
        self.live = observed.live_hosts(now, host_expiry)
        self.lost = tuple(sorted(set(observed.hosts) - set(self.live)))
        self.out: list[tuple[Command, tuple[Owner, ...]]] = []
        self.outcomes: dict[Owner, Findings] = defaultdict(Findings)

    # -- the pass --------------------------------------------------------------------

    def run(self) -> Plan:
        owners = self._owners()
        wiring = plan_wiring(
            [lk for s in self.specs for lk in s.links if self._owns(owners, s.name, lk.source_id)],
            [c for s in self.specs for c in s.configs if self._owns(owners, s.name, _id(s, c))],
            self.retired,
            self.observed,
            orphan_sources=self._orphan_sources(owners),
            in_use=self._configs_in_use(),
        )
        self.out.extend(wiring.commands)
        for owner, problem in wiring.problems:
            self.outcomes[owner].failures.append(problem)
        for wid, winners in sorted(owners.items()):
            self._workload(wid, winners, wiring.available_configs)
        self._strays(owners)
        emitted, withheld = self._backoff()
        apps: dict[CommandKey, tuple[str, ...]] = {}
        for cmd, owners in emitted:
            apps[cmd.key] = tuple(dict.fromkeys((*apps.get(cmd.key, ()), *(a for a, _ in owners))))
        return Plan(
            commands=tuple(order([c for c, _ in emitted])),
            status=assess(
                self.specs,
                self.retired,
                self.outcomes,
                emitted,
                withheld,
                running=self._current,
                failures=self.failures,
                now=self.now,
                failed_after=self.failed_after,
            ),
            withheld=tuple(order([c for c, _ in withheld])),
            lost_hosts=self.lost,
            apps=apps,
            losses={h: self._why_lost(h) for h in self.lost},
        )

    def _why_lost(self, h: str) -> str:
        host = self.observed.hosts[h]
        silent = "no beat" if host.expiry is not None else "not seen"
        return f"host {h} lost ({silent} for {self.now - host.last_seen:.1f} s)"

    # -- ownership -------------------------------------------------------------------

    def _owners(self) -> dict[str, list[Workload]]:
        """Lattice id → the workloads that get it (several only for a shared provider)."""
        claims: dict[str, list[Workload]] = defaultdict(list)
        for spec in self.specs:
            for w in spec.workloads:
                claims[w.id].append(w)
        return {wid: self._resolve(wid, ws) for wid, ws in claims.items()}

    def _resolve(self, wid: str, claims: list[Workload]) -> list[Workload]:
        """The claims in deploy order: the first wins; a shared provider goes to every
        claim with the first one's image."""
        if len(claims) == 1:
            return claims
        first = claims[0]
        if all(w.shared for w in claims):
            winners = [w for w in claims if w.image == first.image]
            users = ", ".join(repr(w.app) for w in winners)
            why = (
                f"provider id {wid!r} runs {first.image} for application {users}; use the "
                "same image to share it, or another id"
            )
        else:
            winners = [first]
            why = (
                f"lattice id {wid!r} is already used by application {first.app!r} "
                f"({first.name}); rename the component or give it another id"
            )
        for w in claims:
            if w not in winners:
                outcome = self.outcomes[(w.app, w.name)]
                outcome.failures.append(why)
                outcome.conflict = True
        return winners

    @staticmethod
    def _owns(owners: Mapping[str, list[Workload]], app: str, wid: str) -> bool:
        return any(w.app == app for w in owners.get(wid, []))

    def _orphan_sources(self, owners: Mapping[str, list[Workload]]) -> dict[str, str]:
        """Ids the controller manages (or managed) that no deployed app wants → app."""
        found: dict[str, str] = {}
        for spec in self.retired:
            for w in spec.workloads:
                found.setdefault(w.id, spec.name)
        for host in self.observed.hosts.values():  # lost hosts too: their ids were ours
            for wid, inst in itertools.chain(host.components.items(), host.providers.items()):
                if naming.is_managed(inst.annotations):
                    found.setdefault(wid, naming.owner_app(inst.annotations) or "")
        return {wid: app for wid, app in found.items() if wid not in owners}

    def _configs_in_use(self) -> set[str]:
        used = {n for s in self.specs for w in s.workloads for n in w.config}
        for s in self.specs:
            for lk in s.links:
                used.update(lk.source_config, lk.target_config)
        return used

    # -- workloads -------------------------------------------------------------------

    def _workload(self, wid: str, winners: list[Workload], configs: frozenset[str]) -> None:
        kind = winners[0].kind
        key_kind = "component" if kind == "component" else "provider"
        current = self._current(wid, kind)
        blocked = sorted(h for h, s in self.live.items() if _foreign(s, wid))
        held = {
            h
            for h in self.live
            if current.get(h, 0) == 0 and waiting(self.failures, (key_kind, h, wid), self.now)
        }
        eligible = {h: s for h, s in self.live.items() if h not in blocked and h not in held}
        placements = _place_all(winners, eligible, current)
        targets: dict[str, int] = {}
        causes: dict[str, str] = {}
        ready = True
        for w, p in zip(winners, placements, strict=True):
            outcome = self.outcomes[(w.app, w.name)]
            outcome.desired = p.desired
            outcome.failures.extend(p.failures)
            outcome.notes.extend(p.notes)
            if blocked:
                outcome.notes.append(
                    f"{wid} also runs on {', '.join(blocked)} but not started by the "
                    "controller; those hosts are left alone"
                )
            for name in w.config:
                if name not in configs:
                    ready = False
                    outcome.failures.append(
                        f"config {name!r} does not exist: create it with "
                        f"`lattice config put {name} KEY=VALUE`"
                    )
            if w.config != winners[0].config:
                outcome.notes.append(
                    f"shares provider {wid} as started with application {winners[0].app!r}'s config"
                )
            for h, n in p.targets.items():
                targets[h] = max(targets.get(h, 0), n)
            for h, why in p.causes.items():
                causes.setdefault(h, why)
        if not ready:
            return  # nothing starts without its config; the reason says how to fix it
        owners = tuple((w.app, w.name) for w in winners)
        if kind == "component":
            self._components(winners[0], current, targets, owners, causes)
        else:
            self._providers(winners[0], current, targets, owners, causes)

    def _current(self, wid: str, kind: str) -> dict[str, int]:
        """Host → instances of `wid` the controller started, on live hosts."""
        found: dict[str, int] = {}
        for h, host in self.live.items():
            if kind == "component":
                comp = host.components.get(wid)
                if comp is not None and naming.is_managed(comp.annotations) and comp.count > 0:
                    found[h] = comp.count
            else:
                prov = host.providers.get(wid)
                if prov is not None and naming.is_managed(prov.annotations):
                    found[h] = 1
        return found

    def _components(
        self,
        w: Workload,
        current: Mapping[str, int],
        targets: Mapping[str, int],
        owners: tuple[Owner, ...],
        causes: Mapping[str, str],
    ) -> None:
        ann = naming.annotations(w.app, w.config)
        for h in sorted(set(current) | set(targets)):
            inst = self.live[h].components.get(w.id)
            want, have = targets.get(h, 0), current.get(h, 0)
            cmd: Command | None = None
            why = causes.get(h, f"{w.id} wants {want} on {h}, {have} run there")
            if want == 0:
                assert inst is not None
                cmd = ScaleComponent(
                    h,
                    inst.image_ref,
                    w.id,
                    0,
                    dict(inst.annotations),
                    phase=Phase.SCALE_DOWN,
                    reason=why,
                )
            elif inst is None or have == 0:
                swap = inst is not None and inst.image_ref != w.image
                cmd = ScaleComponent(h, w.image, w.id, want, ann, w.config, swap)
            else:
                phase = Phase.SCALE_UP if want >= have else Phase.SCALE_DOWN
                same_config = inst.annotations.get(naming.CONFIG_NAMES_KEY) == ",".join(w.config)
                if inst.image_ref != w.image and want == have and same_config:
                    cmd = UpdateComponent(h, w.id, w.image, ann)
                elif inst.image_ref != w.image:
                    cmd = ScaleComponent(h, w.image, w.id, want, ann, w.config, True, phase)
                elif want != have or dict(inst.annotations) != ann:
                    reason = why if want < have else ""
                    cmd = ScaleComponent(
                        h, w.image, w.id, want, ann, w.config, phase=phase, reason=reason
                    )
            if cmd is not None:
                self.out.append((cmd, owners))

    def _providers(
        self,
        w: Workload,
        current: Mapping[str, int],
        targets: Mapping[str, int],
        owners: tuple[Owner, ...],
        causes: Mapping[str, str],
    ) -> None:
        ann = naming.annotations(w.app)
        for h in sorted(set(current) | set(targets)):
            inst = self.live[h].providers.get(w.id)
            start = StartProvider(h, w.image, w.id, w.config, ann)
            if h not in targets:
                why = causes.get(h, f"no deployed application wants {w.id} on {h}")
                self.out.append((StopProvider(h, w.id, reason=why), owners))
            elif inst is None:
                self.out.append((start, owners))
            elif inst.image_ref != w.image or inst.config not in (None, w.config):
                why = (
                    f"{w.id} on {h} runs {inst.image_ref} with config {list(inst.config or ())}; "
                    f"the manifest wants {w.image} with config {list(w.config)} (restart)"
                )
                self.out.append((StopProvider(h, w.id, Phase.RESTART_PROVIDER, why), owners))
                self.out.append((start, owners))

    def _strays(self, owners: Mapping[str, list[Workload]]) -> None:
        """Stop what the controller started and no deployed app wants any more."""
        kinds = {wid: ws[0].kind for wid, ws in owners.items()}
        for h, host in sorted(self.live.items()):
            for wid, comp in sorted(host.components.items()):
                if not naming.is_managed(comp.annotations) or comp.count == 0:
                    continue
                if kinds.get(wid) != "component":
                    app = naming.owner_app(comp.annotations) or ""
                    stop = ScaleComponent(
                        h,
                        comp.image_ref,
                        wid,
                        0,
                        dict(comp.annotations),
                        phase=Phase.SCALE_DOWN,
                        reason=self._unwanted(app, wid),
                    )
                    self.out.append((stop, ((app, wid),)))
            for wid, prov in sorted(host.providers.items()):
                if naming.is_managed(prov.annotations) and kinds.get(wid) != "capability":
                    app = naming.owner_app(prov.annotations) or ""
                    stop_p = StopProvider(h, wid, reason=self._unwanted(app, wid))
                    self.out.append((stop_p, ((app, wid),)))

    def _unwanted(self, app: str, wid: str) -> str:
        """Why a managed `wid` that no deployed app wants is stopped."""
        spec = next((s for s in self.specs if s.name == app), None)
        if spec is None:
            return f"application {app!r} is not deployed, and {wid} was started for it"
        return f"manifest {spec.version or '(unversioned)'} of {app!r} no longer has {wid}"

    # -- backoff ---------------------------------------------------------------------

    def _backoff(
        self,
    ) -> tuple[list[tuple[Command, tuple[Owner, ...]]], list[tuple[Command, tuple[Owner, ...]]]]:
        emitted, withheld = [], []
        for item in self.out:
            (withheld if waiting(self.failures, item[0].key, self.now) else emitted).append(item)
        starting = {_workload_id(c) for c, _ in withheld if c.phase in _STARTS}
        starting.discard(None)
        keep, stops = [], []
        for item in emitted:
            waits = item[0].phase in _STOPS and _workload_id(item[0]) in starting
            (stops if waits else keep).append(item)
        return keep, withheld + stops


def _place_all(
    winners: list[Workload], eligible: Mapping[str, HostSnapshot], current: Mapping[str, int]
) -> list[Placement]:
    """Each winner's placement. For a provider shared by several apps, the union of their
    choices must be a fixed point (placing again from it gives it back), or the next plan
    would move it: iterate from what runs until it is one, else use the choice made as if
    nothing ran, which is one (each app's first hosts by id are in the union)."""
    placements = [place(w, eligible, current) for w in winners]
    if len(winners) == 1:
        return placements
    hosts = dict(current)
    for _ in range(_SHARED_ROUNDS):
        union = {h: 1 for p in placements for h in p.targets}
        if union == hosts:
            return placements
        hosts = union
        placements = [place(w, eligible, hosts) for w in winners]
    return [place(w, eligible, {}) for w in winners]


def _id(spec: AppSpec, config: DesiredConfig) -> str:
    """The lattice id of the component that declares `config`."""
    return next(w.id for w in spec.workloads if w.name == config.component)


def _foreign(host: HostSnapshot, wid: str) -> bool:
    """True when `host` runs something with id `wid` that the controller did not start."""
    return any(
        inst is not None and not naming.is_managed(inst.annotations)
        for inst in (host.components.get(wid), host.providers.get(wid))
    )


def _workload_id(cmd: Command) -> str | None:
    if isinstance(cmd, ScaleComponent | UpdateComponent):
        return cmd.component_id
    if isinstance(cmd, StartProvider | StopProvider):
        return cmd.provider_id
    return None
