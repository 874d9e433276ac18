"""Links and named config: what to put, change and remove (part of the plan).

Ownership. Links and configs carry no annotations, so the controller owns exactly what a
manifest it knows would create:

- configs named by an inline `properties` entry (`{app}-{component}-{name}`) of a
  deployed manifest, or of a *retired* one (an undeployed app, an earlier version);
- links declared by a deployed or retired manifest (by identity: source, namespace,
  package, link name), plus every link whose source is an id the controller manages but
  no deployed app wants any more (its component is gone, so its links are too).

Links someone put by hand from a managed component are left alone, and so are configs
referred to by name only (`config: [{name: shared-redis}]`): those must exist, and a
link or workload needing a missing one waits with a reason saying how to create it.

Changes. A wanted link that is absent is put; one that differs is put again, with
`replace` when its target changed (the host refuses a silent target swap). A retired
link is deleted; a retired config is deleted once no link left after this plan uses it
(the host refuses to delete config a link uses) and nothing deployed refers to it.

Conflicts between applications (the same link identity or config name with different
contents) go to the application deployed first (listed first); the other gets a reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lattice.controller.commands import Command, DeleteConfig, DeleteLink, PutConfig, PutLink
from lattice.controller.desired import AppSpec, DesiredConfig, DesiredLink
from lattice.controller.snapshot import LatticeSnapshot
from lattice.protocol.links import Link

Owner = tuple[str, str]  # (application, manifest component name; "" for the app itself)
Identity = tuple[str, str, str, str]


@dataclass(frozen=True)
class Wiring:
    commands: list[tuple[Command, tuple[Owner, ...]]] = field(default_factory=list)
    problems: list[tuple[Owner, str]] = field(default_factory=list)  # each one a failure
    available_configs: frozenset[str] = frozenset()


def plan_wiring(
    links: Sequence[DesiredLink],
    configs: Sequence[DesiredConfig],
    retired: Sequence[AppSpec],
    observed: LatticeSnapshot,
    *,
    orphan_sources: Mapping[str, str],
    in_use: Iterable[str],
) -> Wiring:
    """Commands for links and configs.

    `links` and `configs` are those of deployed apps' owned workloads, in deploy order
    (the first wins a conflict); `orphan_sources` maps ids the controller manages but no
    deployed app wants to the app that started them; `in_use` are the config names that
    deployed workloads and links refer to."""
    commands: list[tuple[Command, tuple[Owner, ...]]] = []
    problems: list[tuple[Owner, str]] = []
    want_cfg = _configs(configs, problems)
    for name, c in sorted(want_cfg.items()):
        if observed.configs.get(name) != c.values:
            commands.append((PutConfig(name, dict(c.values)), ((c.app, c.component),)))
    available = frozenset(observed.configs) | frozenset(want_cfg)

    have = {lk.identity: lk for lk in observed.links}
    want, owners = _links(links, problems)
    final: dict[Identity, tuple[str, ...]] = {}  # config names of links after this plan
    for ident, d in sorted(want.items()):
        missing = [n for n in (*d.source_config, *d.target_config) if n not in available]
        if missing:
            for n in dict.fromkeys(missing):
                problems.append(((d.app, d.source_name), _missing_config(d, n)))
            continue
        final[ident] = (*d.source_config, *d.target_config)
        current = have.get(ident)
        if current is None or not _same(current, d):
            replace = current is not None and current.target != d.target
            commands.append((_put(d, replace), owners[ident]))

    retired_links = {lk.identity: lk.app for spec in retired for lk in spec.links}
    stale = {
        ident: retired_links.get(ident) or orphan_sources.get(ident[0], "")
        for ident in have
        if ident not in want and (ident in retired_links or ident[0] in orphan_sources)
    }
    for ident, app in sorted(stale.items()):
        if ident in retired_links:
            why = f"no deployed manifest declares this link (an earlier or undeployed {app!r} did)"
        else:
            why = f"its source {ident[0]} is no longer wanted by a deployed application"
        commands.append((DeleteLink(*ident, reason=why), ((app, ""),)))
    for ident, lk in have.items():
        if ident not in stale and ident not in final:
            final[ident] = (*lk.source_config, *lk.target_config)

    used = set(in_use) | {n for names in final.values() for n in names} | set(want_cfg)
    retired_cfg = {c.name: c.app for spec in retired for c in spec.configs}
    for name, app in sorted(retired_cfg.items()):
        if name in observed.configs and name not in used:
            why = f"config {name} came from a retired manifest of {app!r}; nothing deployed uses it"
            commands.append((DeleteConfig(name, why), ((app, ""),)))
    return Wiring(commands, problems, available)


def _configs(
    configs: Sequence[DesiredConfig], problems: list[tuple[Owner, str]]
) -> dict[str, DesiredConfig]:
    want: dict[str, DesiredConfig] = {}
    for c in configs:
        first = want.setdefault(c.name, c)
        if first is not c and dict(first.values) != dict(c.values):
            problems.append(
                (
                    (c.app, c.component),
                    f"config {c.name!r} is also defined by application {first.app!r} with "
                    "other values; rename the component or the config",
                )
            )
    return want


def _links(
    links: Sequence[DesiredLink], problems: list[tuple[Owner, str]]
) -> tuple[dict[Identity, DesiredLink], dict[Identity, tuple[Owner, ...]]]:
    want: dict[Identity, DesiredLink] = {}
    owners: dict[Identity, tuple[Owner, ...]] = {}
    for d in links:
        first = want.setdefault(d.identity, d)
        if first is d or _content(first) == _content(d):
            owners[d.identity] = (*owners.get(d.identity, ()), (d.app, d.source_name))
            continue
        problems.append(
            (
                (d.app, d.source_name),
                f"the link from {d.source_id} for {d.wit_namespace}:{d.wit_package} named "
                f"{d.name!r} is also declared by application {first.app!r} with another "
                "target or config; give one of them a different link `name`",
            )
        )
    return want, owners


def _content(d: DesiredLink) -> tuple[object, ...]:
    return (d.target, sorted(d.interfaces), d.source_config, d.target_config)


def _same(current: Link, d: DesiredLink) -> bool:
    return (
        current.target == d.target
        and sorted(current.interfaces) == sorted(d.interfaces)
        and tuple(current.source_config) == d.source_config
        and tuple(current.target_config) == d.target_config
    )


def _put(d: DesiredLink, replace: bool) -> PutLink:
    return PutLink(
        source_id=d.source_id,
        target=d.target,
        wit_namespace=d.wit_namespace,
        wit_package=d.wit_package,
        interfaces=d.interfaces,
        name=d.name,
        source_config=d.source_config,
        target_config=d.target_config,
        replace=replace,
    )


def _missing_config(d: DesiredLink, name: str) -> str:
    return (
        f"the link to {d.target} ({d.wit_namespace}:{d.wit_package}) needs config "
        f"{name!r}, which does not exist: create it with `lattice config put {name} KEY=VALUE`"
    )
