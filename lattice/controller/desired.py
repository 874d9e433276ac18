"""A manifest compiled into what it asks the lattice for, with lattice names resolved.

`compile_app(manifest)` turns one validated manifest into an `AppSpec`:

- workloads: each component or capability with its lattice id, image, config names and
  one scaler (`spreadscaler`, `daemonscaler`, or — with neither — a spread of 1
  instance over all hosts);
- links: each `link` trait with source and target resolved to lattice ids (a target that
  names a component of the manifest becomes that component's id, any other name is
  used as an id as is) and config entries resolved to config names;
- configs: the named configs the app owns (inline `properties`), by name;
- external configs: names referred to without `properties`, which must exist already.

Naming follows `naming.py`. Nothing here knows about hosts; `scalers.py` places the
workloads and `plan.py` compares the result with the lattice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lattice import policy
from lattice.controller import naming
from lattice.controller.manifest import (
    DEFAULT_WEIGHT,
    Component,
    ConfigProperty,
    DaemonScalerTrait,
    Manifest,
    SpreadScalerTrait,
)

Kind = Literal["component", "capability"]


@dataclass(frozen=True)
class Rule:
    name: str
    requirements: Mapping[str, str] = field(default_factory=dict, hash=False)
    weight: int = DEFAULT_WEIGHT

    def describe(self) -> str:
        reqs = ", ".join(f"{k}={v}" for k, v in sorted(self.requirements.items()))
        return f"rule {self.name!r} ({reqs or 'no requirements'})"


@dataclass(frozen=True)
class Scaler:
    kind: Literal["spread", "daemon"]
    instances: int
    rules: tuple[Rule, ...] = ()
    rebalance: bool = False


DEFAULT_SCALER = Scaler("spread", 1)


@dataclass(frozen=True)
class Workload:
    app: str
    name: str  # the component's name in the manifest
    kind: Kind
    id: str
    image: str
    config: tuple[str, ...]
    scaler: Scaler
    shared: bool  # a capability with an explicit id: other apps may share it


@dataclass(frozen=True)
class DesiredLink:
    app: str
    source_name: str  # the manifest component carrying the link trait
    source_id: str
    target: str
    wit_namespace: str
    wit_package: str
    interfaces: tuple[str, ...]
    name: str
    source_config: tuple[str, ...]
    target_config: tuple[str, ...]

    @property
    def identity(self) -> tuple[str, str, str, str]:
        return (self.source_id, self.wit_namespace, self.wit_package, self.name)


@dataclass(frozen=True)
class DesiredConfig:
    app: str
    component: str  # the manifest component that declares it
    name: str
    values: Mapping[str, str] = field(hash=False)


@dataclass(frozen=True)
class AppSpec:
    name: str
    version: str | None
    workloads: tuple[Workload, ...]
    links: tuple[DesiredLink, ...]
    configs: tuple[DesiredConfig, ...]
    external_configs: Mapping[str, frozenset[str]]  # component name → config names


def compile_app(manifest: Manifest) -> AppSpec:
    app = manifest.name
    ids = {c.name: naming.workload_id(app, c.name, c.properties.id) for c in manifest.components}
    workloads: dict[str, Workload] = {}
    links: dict[tuple[str, str, str, str], DesiredLink] = {}
    configs: dict[str, DesiredConfig] = {}
    external: dict[str, frozenset[str]] = {}
    for comp in manifest.components:
        cid = ids[comp.name]
        if cid in workloads:
            continue  # a duplicate id; validation reports it, the first one wins here
        names, own, ext = _configs(app, comp.name, comp.properties.config)
        workloads[cid] = Workload(
            app=app,
            name=comp.name,
            kind=comp.type,
            id=cid,
            image=comp.properties.image,
            config=names,
            scaler=_scaler(comp),
            shared=comp.type == "capability" and comp.properties.id is not None,
        )
        all_ext = set(ext)
        for c in own:
            configs.setdefault(c.name, c)
        for lp in comp.links:
            src_names, src_own, src_ext = _configs(
                app, comp.name, lp.source.config if lp.source else []
            )
            tgt_names, tgt_own, tgt_ext = _configs(app, comp.name, lp.target.config)
            for c in (*src_own, *tgt_own):
                configs.setdefault(c.name, c)
            all_ext.update(src_ext, tgt_ext)
            link = DesiredLink(
                app=app,
                source_name=comp.name,
                source_id=cid,
                target=ids.get(lp.target.name, lp.target.name),
                wit_namespace=lp.namespace,
                wit_package=lp.package,
                interfaces=tuple(dict.fromkeys(lp.interfaces)),
                name=lp.name,
                source_config=src_names,
                target_config=tgt_names,
            )
            links.setdefault(link.identity, link)
        if all_ext:
            external[comp.name] = frozenset(all_ext)
        record = _policy_record(app, cid, comp)
        if record is not None:
            configs.setdefault(record.name, record)
    return AppSpec(
        name=app,
        version=manifest.version,
        workloads=tuple(workloads.values()),
        links=tuple(links.values()),
        configs=tuple(configs.values()),
        external_configs=external,
    )


def _configs(
    app: str, component: str, entries: list[ConfigProperty]
) -> tuple[tuple[str, ...], list[DesiredConfig], list[str]]:
    """(config names in order, configs the app owns, names that must exist already)."""
    names: list[str] = []
    own: list[DesiredConfig] = []
    external: list[str] = []
    for c in entries:
        if c.properties is None:
            names.append(c.name)
            external.append(c.name)
        else:
            name = naming.config_name(app, component, c.name)
            names.append(name)
            own.append(DesiredConfig(app, component, name, dict(c.properties)))
    return tuple(dict.fromkeys(names)), own, external


def _policy_record(app: str, cid: str, comp: Component) -> DesiredConfig | None:
    """A component's `properties.policy` as the config `policy=<id>` every host checks
    (lattice/policy.py); its config entries by manifest name become their config names."""
    spec = comp.properties.policy
    if spec is None or comp.type != "component":
        return None
    try:
        name = policy.record_name(cid)
    except policy.PolicyError:
        return None  # validation reports it
    inline = {c.name for c in comp.properties.config if c.properties is not None}
    for lp in comp.links:
        inline.update(c.name for c in (lp.source.config if lp.source else []) if c.properties)
    readable = None
    if spec.config is not None:
        readable = tuple(
            naming.config_name(app, comp.name, n) if n in inline else n for n in spec.config
        )
    imports = None if spec.imports is None else tuple(spec.imports)
    egress = None if spec.egress is None else tuple(spec.egress)
    values = policy.ComponentPolicy(cid, imports, egress, readable).to_values()
    return DesiredConfig(app, comp.name, name, values)


def _scaler(comp: Component) -> Scaler:
    for t in comp.traits:
        if isinstance(t, SpreadScalerTrait | DaemonScalerTrait):
            rules = tuple(Rule(r.name, dict(r.requirements), r.weight) for r in t.properties.spread)
            if isinstance(t, SpreadScalerTrait):
                return Scaler("spread", t.properties.instances, rules, t.properties.rebalance)
            return Scaler("daemon", t.properties.instances, rules)
    return DEFAULT_SCALER
