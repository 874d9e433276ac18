"""Status from a plan: what the planner found and decided, per application component.

The planner records `Findings` per (application, component name): reasons the manifest
cannot be met (failures), things worth knowing (notes: overlapping rules, hosts left
alone), the desired count, and whether another app holds the component's id. With the
commands it emitted or held back (each tagged with the components it serves) and the
failure records, `assess` decides each component's state (`status.py`):

- failed: any failure, or a command whose key failed `failed_after` times or more;
- reconciling: commands emitted or held back for it;
- deployed: nothing to do.

An application takes its components' worst state; commands for things an earlier
version left behind (a dropped component, a retired link) make it `reconciling` too.
Applications that are not deployed but still have things to remove — or that were
retired — are reported `undeployed`, with a row per id still being stopped.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lattice.controller.backoff import Failure
from lattice.controller.commands import Command, CommandKey, StopProvider, order
from lattice.controller.desired import AppSpec, Workload
from lattice.controller.status import AppStatus, ComponentStatus, State, worst

Owner = tuple[str, str]  # (application, manifest component name or lattice id; "" = the app)
Tagged = list[tuple[Command, tuple[Owner, ...]]]
Running = Callable[[str, str], Mapping[str, int]]  # (id, kind) → host → count


@dataclass
class Findings:
    """What the planner learned about one manifest component."""

    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    desired: int | None = None
    conflict: bool = False  # another application holds its lattice id


def assess(
    specs: Sequence[AppSpec],
    retired: Sequence[AppSpec],
    findings: Mapping[Owner, Findings],
    emitted: Tagged,
    withheld: Tagged,
    *,
    running: Running,
    failures: Mapping[CommandKey, Failure],
    now: float,
    failed_after: int,
) -> dict[str, AppStatus]:
    pending, held = _by_owner(emitted), _by_owner(withheld)
    both = _merge(pending, held)
    statuses: dict[str, AppStatus] = {}
    for spec in specs:
        rows = [
            _row(spec.name, w, findings, pending, held, running, failures, now, failed_after)
            for w in spec.workloads
        ]
        names = {w.name for w in spec.workloads}
        earlier = [
            c
            for (app, n), cmds in both.items()
            if app == spec.name and n not in names
            for c in cmds
        ]
        state = worst([r.state for r in rows] + ([State.RECONCILING] if earlier else []))
        reason = "; ".join(f"{r.name}: {r.reason}" for r in rows if r.state == state and r.reason)
        if not reason and earlier:
            reason = "cleaning up after an earlier version: " + summary(earlier)
        statuses[spec.name] = AppStatus(spec.name, spec.version, state, reason, tuple(rows))
    deployed = {s.name for s in specs}
    leftovers: dict[str, list[Command]] = defaultdict(list)
    for (app, _), cmds in both.items():
        if app not in deployed:
            leftovers[app].extend(cmds)
    for app in sorted(({s.name for s in retired} | set(leftovers)) - deployed - {""}):
        version = next((s.version for s in retired if s.name == app), None)
        rows = _leftover_rows(app, both, running)
        reason = f"removing: {summary(leftovers[app])}" if leftovers.get(app) else ""
        statuses[app] = AppStatus(app, version, State.UNDEPLOYED, reason, tuple(rows))
    return statuses


def summary(cmds: list[Command]) -> str:
    """`pending: a, b, c and 2 more` for a status reason."""
    shown = [c.describe() for c in order(cmds)[:3]]
    more = f" and {len(cmds) - 3} more" if len(cmds) > 3 else ""
    return "pending: " + ", ".join(shown) + more


def _by_owner(tagged: Tagged) -> dict[Owner, list[Command]]:
    out: dict[Owner, list[Command]] = defaultdict(list)
    for cmd, owners in tagged:
        for owner in owners:
            out[owner].append(cmd)
    return out


def _merge(*maps: Mapping[Owner, list[Command]]) -> dict[Owner, list[Command]]:
    out: dict[Owner, list[Command]] = defaultdict(list)
    for owner, cmds in itertools.chain.from_iterable(m.items() for m in maps):
        out[owner].extend(cmds)
    return out


def _row(
    app: str,
    w: Workload,
    findings: Mapping[Owner, Findings],
    pending: Mapping[Owner, list[Command]],
    held: Mapping[Owner, list[Command]],
    running: Running,
    failures: Mapping[CommandKey, Failure],
    now: float,
    failed_after: int,
) -> ComponentStatus:
    found = findings.get((app, w.name), Findings())
    fails, notes = list(found.failures), list(found.notes)
    mine = pending.get((app, w.name), []) + held.get((app, w.name), [])
    for cmd in mine:
        f = failures.get(cmd.key)
        if f is None:
            continue
        line = f"{cmd.describe()} failed {f.attempts}x: {f.error}"
        if f.attempts >= failed_after:
            fails.append(line)
        else:
            retry = max(0.0, f.retry_at - now)
            notes.append(f"{line} (retrying in {retry:.0f}s)" if retry else line)
    current = {} if found.conflict else running(w.id, w.kind)
    if fails:
        state = State.FAILED
    elif mine:
        state = State.RECONCILING
        notes.append(summary(mine))
    else:
        state = State.DEPLOYED
    return ComponentStatus(
        name=w.name,
        kind=w.kind,
        id=w.id,
        desired=found.desired if found.desired is not None else w.scaler.instances,
        running=_count(current, w.kind),
        where=tuple(sorted(current)),
        state=state,
        reason="; ".join(dict.fromkeys(fails + notes)),
    )


def _leftover_rows(
    app: str, both: Mapping[Owner, list[Command]], running: Running
) -> list[ComponentStatus]:
    rows = []
    for (owner_app, wid), cmds in sorted(both.items(), key=lambda item: item[0]):
        if owner_app != app or not wid:
            continue
        kind = "capability" if any(isinstance(c, StopProvider) for c in cmds) else "component"
        current = running(wid, kind)
        rows.append(
            ComponentStatus(
                name=wid,
                kind=kind,
                id=wid,
                desired=0,
                running=_count(current, kind),
                where=tuple(sorted(current)),
                state=State.RECONCILING,
                reason=summary(cmds),
            )
        )
    return rows


def _count(current: Mapping[str, int], kind: str) -> int:
    return sum(current.values()) if kind == "component" else len(current)
