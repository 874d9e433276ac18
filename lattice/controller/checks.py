"""Rules that relate several parts of a manifest, beyond what each field's shape says.

Names and ids are compared on the raw data; every other rule runs over each component
whose shape is valid on its own, so one broken component does not hide problems
elsewhere. Returns findings as (path, message) pairs: errors (the
manifest cannot be deployed) and warnings (it can, but likely not as meant).

Errors: duplicate component names or lattice ids, more than one scaler on a component,
spread weights that add up to 0, duplicate spread rule names, two links with the same
identity from one component, a component linked to itself, a link target that is
neither a component of the manifest nor a valid id, one generated config name with two
different contents, version `latest`. Warnings: unknown `wasi`/`wasmcloud` interfaces
(`wit.py`), a link target outside the manifest, spread rules that can match the same
host, weight-0 rules, components without a scaler, a missing or numeric version,
settings that do nothing for providers, `spec.policies`. A capability `policy` on a
provider, or on a component whose id cannot name its policy record, is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from lattice import policy
from lattice.controller import naming, wit
from lattice.controller.manifest import (
    VERSION_KEY,
    Component,
    ConfigProperty,
    DaemonScalerTrait,
    LinkTrait,
    Metadata,
    SpreadRule,
    SpreadScalerTrait,
)
from lattice.protocol.subjects import SubjectError, check_token

Finding = tuple[str, str]


def check(data: Mapping[str, Any]) -> tuple[list[Finding], list[Finding]]:
    """(errors, warnings) about the meaning of the manifest `data` (parsed, not validated)."""
    errors: list[Finding] = []
    warnings: list[Finding] = []
    app = _app_name(data)
    raw = _raw_components(data)
    _check_metadata(data, errors, warnings)
    _check_names(app, raw, errors)
    valid = _valid_components(raw)
    names = {item["name"] for _, item in raw if isinstance(item.get("name"), str)}
    configs: dict[str, tuple[dict[str, str], str]] = {}
    for i, comp in valid:
        p = f"spec.components[{i}]"
        if app is not None:
            _collect_configs(app, comp, p, configs, errors)
        _check_scalers(comp, p, errors, warnings)
        _check_links(comp, p, names, errors, warnings)
        _check_policy(app, comp, p, errors)
    spec = data.get("spec")
    if isinstance(spec, Mapping) and spec.get("policies") is not None:
        warnings.append(("spec.policies", "policies are not supported and are ignored"))
    return errors, warnings


def _app_name(data: Mapping[str, Any]) -> str | None:
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if isinstance(name, str):
        try:
            return Metadata.model_validate({"name": name}).name
        except ValidationError:
            return None
    return None


def _raw_components(data: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    spec = data.get("spec")
    raw = spec.get("components") if isinstance(spec, Mapping) else None
    if not isinstance(raw, list):
        return []
    return [(i, item) for i, item in enumerate(raw) if isinstance(item, Mapping)]


def _valid_components(
    raw: list[tuple[int, Mapping[str, Any]]],
) -> list[tuple[int, Component]]:
    out = []
    for i, item in raw:
        try:
            out.append((i, Component.model_validate(item)))
        except ValidationError:
            continue
    return out


def _check_names(
    app: str | None, raw: list[tuple[int, Mapping[str, Any]]], errors: list[Finding]
) -> None:
    """Duplicate names and lattice ids, from the raw data: a component with another
    problem still takes part."""
    first_name: dict[str, int] = {}
    first_id: dict[str, tuple[int, str]] = {}
    for i, item in raw:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            continue
        p = f"spec.components[{i}]"
        if name in first_name:
            errors.append(
                (
                    f"{p}.name",
                    f"two components named {name!r} (the other is "
                    f"spec.components[{first_name[name]}])",
                )
            )
            continue
        first_name[name] = i
        props = item.get("properties")
        explicit = props.get("id") if isinstance(props, Mapping) else None
        explicit = explicit if isinstance(explicit, str) and explicit else None
        if app is None:
            continue
        cid = naming.workload_id(app, name, explicit)
        if cid in first_id:
            j, other = first_id[cid]
            where = f"{p}.properties.id" if explicit else f"{p}.name"
            errors.append(
                (where, f"lattice id {cid!r} is also the id of spec.components[{j}] ({other!r})")
            )
        first_id.setdefault(cid, (i, name))


def _check_metadata(
    data: Mapping[str, Any], errors: list[Finding], warnings: list[Finding]
) -> None:
    meta = data.get("metadata")
    ann = meta.get("annotations") if isinstance(meta, Mapping) else None
    version = ann.get(VERSION_KEY) if isinstance(ann, Mapping) else None
    path = f"metadata.annotations.{VERSION_KEY}"
    if version is None:
        if isinstance(meta, Mapping):
            warnings.append(
                (path, "no version: set one so versions can be told apart and rolled back to")
            )
    elif isinstance(version, bool | int | float):
        warnings.append(
            (path, f"read as a number ({version!r}); quote it to keep it exactly as written")
        )
    elif version == "latest":
        errors.append((path, "'latest' is reserved; use a real version"))


def _check_scalers(comp: Component, p: str, errors: list[Finding], warnings: list[Finding]) -> None:
    scalers = [(k, t) for k, t in enumerate(comp.traits) if not isinstance(t, LinkTrait)]
    if not scalers:
        warnings.append(
            (f"{p}.traits", "no spreadscaler or daemonscaler: runs 1 instance on one host")
        )
    if len(scalers) > 1:
        k0, first = scalers[0]
        for k, second in scalers[1:]:
            if first.type != second.type:
                why = (
                    f"a component takes one scaler, not a {first.type} (traits[{k0}]) "
                    f"and a {second.type}"
                )
            else:
                why = f"a component takes one scaler; traits[{k0}] is already a {first.type}"
            errors.append((f"{p}.traits[{k}]", why))
    provider = comp.type == "capability"
    for k, t in scalers:
        tp = f"{p}.traits[{k}].properties"
        rules = t.properties.spread
        _check_rule_names(rules, tp, errors)
        if isinstance(t, SpreadScalerTrait):
            if rules and sum(r.weight for r in rules) == 0:
                errors.append(
                    (f"{tp}.spread", "the weights add up to 0; give at least one rule a weight > 0")
                )
            elif len(rules) > 1:
                for n, r in enumerate(rules):
                    if r.weight == 0:
                        warnings.append(
                            (f"{tp}.spread[{n}].weight", "weight 0: this rule never gets instances")
                        )
            _check_overlaps(rules, tp, warnings)
            if provider and t.properties.rebalance:
                warnings.append(
                    (f"{tp}.rebalance", "has no effect on a capability (one provider per host)")
                )
        elif isinstance(t, DaemonScalerTrait) and provider and t.properties.instances > 1:
            warnings.append(
                (
                    f"{tp}.instances",
                    "a provider runs once per matching host; instances above 1 are ignored",
                )
            )


def _check_rule_names(rules: list[SpreadRule], tp: str, errors: list[Finding]) -> None:
    seen: dict[str, int] = {}
    for n, r in enumerate(rules):
        if r.name in seen:
            errors.append(
                (
                    f"{tp}.spread[{n}].name",
                    f"two spread rules named {r.name!r} (the other is spread[{seen[r.name]}])",
                )
            )
        seen.setdefault(r.name, n)


def _check_overlaps(rules: list[SpreadRule], tp: str, warnings: list[Finding]) -> None:
    live = [(n, r) for n, r in enumerate(rules) if r.weight > 0]
    for a, (_, ra) in enumerate(live):
        for n, rb in live[a + 1 :]:
            if not disjoint(ra.requirements, rb.requirements):
                warnings.append(
                    (
                        f"{tp}.spread[{n}]",
                        f"rules {ra.name!r} and {rb.name!r} can match the same host (no label "
                        f"tells them apart); such a host counts only for {ra.name!r}",
                    )
                )


def disjoint(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """True when no host can satisfy both requirement sets (a label key they disagree on)."""
    return any(k in b and b[k] != v for k, v in a.items())


def _check_policy(app: str | None, comp: Component, p: str, errors: list[Finding]) -> None:
    if comp.properties.policy is None:
        return
    where = f"{p}.properties.policy"
    if comp.type != "component":
        errors.append((where, "a capability policy applies to Wasm components, not providers"))
        return
    if app is not None:
        try:
            policy.record_name(naming.workload_id(app, comp.name, comp.properties.id))
        except policy.PolicyError as exc:
            errors.append((where, str(exc)))


def _check_links(
    comp: Component, p: str, names: set[str], errors: list[Finding], warnings: list[Finding]
) -> None:
    seen: dict[tuple[str, str, str], int] = {}
    for k, t in enumerate(comp.traits):
        if not isinstance(t, LinkTrait):
            continue
        lp, tp = t.properties, f"{p}.traits[{k}].properties"
        ident = (lp.namespace, lp.package, lp.name)
        if ident in seen:
            errors.append(
                (
                    f"{tp}.name",
                    f"a second link for {lp.namespace}:{lp.package} with link name {lp.name!r} "
                    f"(the first is traits[{seen[ident]}]); give one a different `name`",
                )
            )
        seen.setdefault(ident, k)
        target = lp.target.name
        if target == comp.name:
            errors.append((f"{tp}.target.name", "a component cannot link to itself"))
        elif target not in names:
            try:
                check_token(target, "target")
                warnings.append(
                    (
                        f"{tp}.target.name",
                        f"{target!r} is not a component in this manifest; it is linked to the "
                        "lattice id as is",
                    )
                )
            except SubjectError:
                errors.append(
                    (
                        f"{tp}.target.name",
                        f"{target!r} is neither a component in this manifest nor a valid "
                        "lattice id",
                    )
                )
        reported_package = False
        for m, iface in enumerate(lp.interfaces):
            problem = wit.check_interface(lp.namespace, lp.package, iface)
            if problem is None:
                continue
            if lp.package not in wit.KNOWN.get(lp.namespace, {}):
                if not reported_package:
                    warnings.append((f"{tp}.package", problem))
                    reported_package = True
            else:
                warnings.append((f"{tp}.interfaces[{m}]", problem))
        if len(set(lp.interfaces)) != len(lp.interfaces):
            warnings.append((f"{tp}.interfaces", "lists an interface twice"))


def _collect_configs(
    app: str,
    comp: Component,
    p: str,
    seen: dict[str, tuple[dict[str, str], str]],
    errors: list[Finding],
) -> None:
    entries: list[tuple[str, ConfigProperty]] = [
        (f"{p}.properties.config[{n}]", c) for n, c in enumerate(comp.properties.config)
    ]
    for k, t in enumerate(comp.traits):
        if isinstance(t, LinkTrait):
            tp = f"{p}.traits[{k}].properties"
            entries += [
                (f"{tp}.target.config[{n}]", c) for n, c in enumerate(t.properties.target.config)
            ]
            if t.properties.source is not None:
                entries += [
                    (f"{tp}.source.config[{n}]", c)
                    for n, c in enumerate(t.properties.source.config)
                ]
    for path, c in entries:
        if c.properties is None:
            continue
        name = naming.config_name(app, comp.name, c.name)
        if name in seen and seen[name][0] != c.properties:
            errors.append(
                (
                    f"{path}.name",
                    f"config {name!r} is defined twice with different properties (also "
                    f"{seen[name][1]}); use another name",
                )
            )
        seen.setdefault(name, (dict(c.properties), path))
