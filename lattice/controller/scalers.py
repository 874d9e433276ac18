"""Placement: where one workload should run, given the eligible hosts and what runs now.

`place(workload, hosts, current)` returns a `Placement`: a count per host (always 1 for
a provider), the total the manifest asks for, reasons it cannot be met, and notes.

spreadscaler: `instances` is split over the rules by weight (`spread.largest_remainder`);
each rule's share goes to the hosts that satisfy all its requirements, spread evenly
(`spread.fill`, or `spread.even` with `rebalance: true`). No rules means one rule that
every host satisfies.

Overlapping rules (a host that satisfies two rules) are resolved by a fixed partition:
each host serves only the *first* rule (in manifest order, among rules with a share)
that it satisfies. The partition depends only on the hosts and their labels, never on
what runs, so the result is a fixed point and two rules can never pull replicas back
and forth. A rule left without hosts that way fails with a reason naming the rule that
took them; a note names every host that matched more than one rule.

A rule without a host fails with a reason naming its requirements; its share is *not*
moved to other rules (that would silently break the requested proportions).

daemonscaler: `instances` on every host that satisfies any rule (all hosts without
rules); a provider runs once per such host.

Providers run at most once per host: a spread rule asking for more hosts than it has
gets all it has, and a reason.

Every host that is to run fewer than it runs now gets a `cause` in words (which rule,
which fact), so the stop that follows explains itself in `lattice app history`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from lattice.controller import spread
from lattice.controller.desired import Rule, Workload
from lattice.controller.snapshot import HostSnapshot

ANYWHERE = Rule("default", {})


@dataclass(frozen=True)
class Placement:
    targets: Mapping[str, int] = field(default_factory=dict)  # host → count (providers: 1)
    desired: int = 0  # instances (components) or hosts (providers) asked for
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    causes: Mapping[str, str] = field(default_factory=dict)  # host → why it runs fewer


def _causes(
    targets: Mapping[str, int], current: Mapping[str, int], why: Mapping[str, str]
) -> dict[str, str]:
    """A cause for each host that is to run fewer than now (`why`, else a default)."""
    return {
        h: why.get(h, f"host {h} is not eligible for it")
        for h, n in current.items()
        if targets.get(h, 0) < n
    }


def place(
    workload: Workload, hosts: Mapping[str, HostSnapshot], current: Mapping[str, int]
) -> Placement:
    """Where `workload` should run on the eligible `hosts`, given `current` counts."""
    if workload.scaler.kind == "daemon":
        p = _daemon(workload, hosts)
        why = _unmatched(workload, hosts, current)
        per_host = f"the daemonscaler asks for {workload.scaler.instances} per host"
        why.update({h: per_host for h in p.targets if h not in why})
    else:
        p, why = _spread(workload, hosts, current)
    if workload.scaler.instances == 0:
        why = {h: "the manifest asks for 0 instances" for h in current}
    causes = _causes(p.targets, current, why)
    return replace(p, causes=causes) if causes else p


def _unmatched(
    workload: Workload, hosts: Mapping[str, HostSnapshot], current: Mapping[str, int]
) -> dict[str, str]:
    """Why hosts that run it match none of the rules (labels, or not eligible)."""
    rules = workload.scaler.rules
    why: dict[str, str] = {}
    for h in current:
        if h not in hosts:
            why[h] = f"host {h} is not eligible for it"
        elif rules and not any(hosts[h].matches(r.requirements) for r in rules):
            labels = ", ".join(f"{k}={v}" for k, v in sorted(hosts[h].labels.items()))
            wanted = " or ".join(r.describe() for r in rules)
            why[h] = f"host {h} ({labels or 'no labels'}) no longer matches {wanted}"
    return why


def _daemon(workload: Workload, hosts: Mapping[str, HostSnapshot]) -> Placement:
    scaler = workload.scaler
    matched = [
        h
        for h in sorted(hosts)
        if not scaler.rules or any(hosts[h].matches(r.requirements) for r in scaler.rules)
    ]
    if scaler.instances == 0:
        return Placement()
    if not matched and not scaler.rules:
        return Placement(failures=("no live host to run it on",))
    if not matched:
        rules = " or ".join(r.describe() for r in scaler.rules)
        return Placement(failures=(f"no live host matches {rules}{_hint(scaler.rules[0])}",))
    per_host = 1 if workload.kind == "capability" else scaler.instances
    return Placement(targets={h: per_host for h in matched}, desired=per_host * len(matched))


def _spread(
    workload: Workload, hosts: Mapping[str, HostSnapshot], current: Mapping[str, int]
) -> tuple[Placement, dict[str, str]]:
    """The placement, and why each host runs what it runs (for `causes`)."""
    scaler = workload.scaler
    rules = scaler.rules or (ANYWHERE,)
    why = _unmatched(workload, hosts, current)
    if scaler.instances == 0:
        return Placement(), why
    weights = [r.weight for r in rules]
    if sum(weights) == 0:
        failure = ("the spread weights add up to 0",)
        return Placement(desired=scaler.instances, failures=failure), why
    shares = spread.largest_remainder(scaler.instances, weights)
    active = [i for i, n in enumerate(shares) if n > 0]
    assigned: dict[int, list[str]] = {i: [] for i in active}
    notes: list[str] = []
    for h in sorted(hosts):
        matching = [i for i in active if hosts[h].matches(rules[i].requirements)]
        if matching:
            assigned[matching[0]].append(h)
        if len(matching) > 1:
            names = " and ".join(repr(rules[i].name) for i in matching)
            notes.append(f"host {h} matches rules {names}; it serves {rules[matching[0]].name!r}")
    targets: dict[str, int] = {}
    failures: list[str] = []
    for i in active:
        rule, share, mine = rules[i], shares[i], assigned[i]
        if not mine:
            earlier = tuple(rules[j] for j in active if j < i)
            failures.append(_no_host(rule, earlier, hosts, scaler.rules == ()))
            continue
        here = {h: current.get(h, 0) for h in mine}
        running = (
            sum(here.values()) if workload.kind == "component" else sum(map(bool, here.values()))
        )
        noun = "replica" if workload.kind == "component" else "provider host"
        why.update({h: f"{noun} surplus on {rule.describe()}: {running} > {share}" for h in mine})
        if workload.kind == "capability":
            chosen = spread.choose_hosts(share, mine, {h for h, c in here.items() if c > 0})
            targets.update({h: 1 for h in chosen})
            if share > len(mine):
                failures.append(
                    f"{rule.describe()} asks for {share} provider hosts but only "
                    f"{len(mine)} qualify (a provider runs once per host)"
                )
        else:
            split = spread.even if scaler.rebalance else spread.fill
            targets.update({h: n for h, n in split(share, mine, here).items() if n > 0})
    for h in current:
        if h in hosts and not any(h in assigned[i] for i in active):
            why.setdefault(h, f"host {h} matches no spread rule that has a share of the instances")
    placement = Placement(
        targets=targets, desired=scaler.instances, failures=tuple(failures), notes=tuple(notes)
    )
    return placement, why


def _hint(rule: Rule) -> str:
    pairs = [f"{k}={v}" for k, v in sorted(rule.requirements.items())]
    command = f"lattice label put HOST {pairs[0]}" if len(pairs) == 1 else "lattice label put"
    return f": label a host {', '.join(pairs)} ({command}) or change the requirements"


def _no_host(
    rule: Rule, earlier: tuple[Rule, ...], hosts: Mapping[str, HostSnapshot], implicit: bool
) -> str:
    if implicit:
        return "no live host to run it on"
    taken = sorted(h for h, s in hosts.items() if s.matches(rule.requirements))
    if taken:
        owners = sorted(
            {r.name for r in earlier for h in taken if hosts[h].matches(r.requirements)}
        )
        return (
            f"{rule.describe()} gets no host: every host it matches ({', '.join(taken)}) "
            f"already serves rule {', '.join(repr(o) for o in owners)} (overlapping "
            "requirements); make the rules' requirements disjoint"
        )
    return f"{rule.describe()} matches no live host{_hint(rule)}"
