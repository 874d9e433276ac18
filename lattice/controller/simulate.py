"""A model lattice: what executing commands would do to a snapshot. For tests.

`apply(commands, snapshot)` returns the snapshot the lattice would report after the
commands ran, each one as a host does it — and refuses, like a host, what a host would
refuse (`SimulationError`): a scale that changes the image without `allow_update`, an
update of a component that is not there, a provider started twice with different
images, a stop of something not running, a second link target without `replace`, a
link naming config that does not exist, deleting config a link uses, a command for a
host that is gone. A plan that passes through `apply` is one real hosts accept.

The async adapter may also use it as an optimistic overlay: after sending commands,
plan against `apply(sent, snapshot)` until events and heartbeats catch up, so the same
commands are not sent twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from lattice.controller.commands import (
    Command,
    DeleteConfig,
    DeleteLink,
    PutConfig,
    PutLink,
    ScaleComponent,
    StartProvider,
    StopProvider,
    UpdateComponent,
)
from lattice.controller.snapshot import (
    ComponentInstance,
    HostSnapshot,
    LatticeSnapshot,
    ProviderInstance,
)
from lattice.protocol.links import Link, LinkPutRequest, check_put


class SimulationError(ValueError):
    """A command a real host would refuse."""


def apply(
    commands: Iterable[Command], snapshot: LatticeSnapshot, *, strict: bool = True
) -> LatticeSnapshot:
    """The snapshot after `commands`, in order. A command a host would refuse raises
    SimulationError, or with `strict=False` is skipped (as a refused command changes
    nothing on a real host) — the form for an optimistic overlay."""
    for cmd in commands:
        try:
            snapshot = _apply(cmd, snapshot)
        except SimulationError:
            if strict:
                raise
    return snapshot


def _apply(cmd: Command, snap: LatticeSnapshot) -> LatticeSnapshot:
    if isinstance(cmd, PutConfig):
        return replace(snap, configs={**snap.configs, cmd.name: dict(cmd.values)})
    if isinstance(cmd, DeleteConfig):
        users = [
            lk.describe() for lk in snap.links if cmd.name in (*lk.source_config, *lk.target_config)
        ]
        if users:
            raise SimulationError(f"config {cmd.name!r} is used by links: {'; '.join(users)}")
        return replace(snap, configs={k: v for k, v in snap.configs.items() if k != cmd.name})
    if isinstance(cmd, PutLink):
        return _put_link(cmd, snap)
    if isinstance(cmd, DeleteLink):
        ident = (cmd.source_id, cmd.wit_namespace, cmd.wit_package, cmd.name)
        if not any(lk.identity == ident for lk in snap.links):
            raise SimulationError(f"no link {ident}")
        return replace(snap, links=tuple(lk for lk in snap.links if lk.identity != ident))
    host = snap.hosts.get(cmd.host_id)
    if host is None:
        raise SimulationError(f"{type(cmd).__name__} for host {cmd.host_id}, which is not there")
    return snap.with_host(_on_host(cmd, host))


def _on_host(cmd: Command, host: HostSnapshot) -> HostSnapshot:
    comps, provs = dict(host.components), dict(host.providers)
    if isinstance(cmd, ScaleComponent):
        running = comps.get(cmd.component_id)
        if cmd.count == 0:
            comps.pop(cmd.component_id, None)
        else:
            if running and running.image_ref != cmd.image_ref and not cmd.allow_update:
                raise SimulationError(
                    f"{cmd.component_id} already runs {running.image_ref} on {host.id}"
                )
            ann = dict(cmd.annotations) or (dict(running.annotations) if running else {})
            comps[cmd.component_id] = ComponentInstance(cmd.image_ref, cmd.count, ann)
    elif isinstance(cmd, UpdateComponent):
        running = comps.get(cmd.component_id)
        if running is None:
            raise SimulationError(f"{cmd.component_id} is not running on {host.id}")
        ann = dict(cmd.annotations) or dict(running.annotations)
        comps[cmd.component_id] = ComponentInstance(cmd.image_ref, running.count, ann)
    elif isinstance(cmd, StartProvider):
        running_p = provs.get(cmd.provider_id)
        if running_p is not None and running_p.image_ref != cmd.image_ref:
            raise SimulationError(
                f"provider {cmd.provider_id} already runs {running_p.image_ref} on {host.id}"
            )
        if running_p is None:
            provs[cmd.provider_id] = ProviderInstance(
                cmd.image_ref, dict(cmd.annotations), tuple(cmd.config)
            )
    elif isinstance(cmd, StopProvider):
        if cmd.provider_id not in provs:
            raise SimulationError(f"provider {cmd.provider_id} is not running on {host.id}")
        del provs[cmd.provider_id]
    return replace(host, components=comps, providers=provs)


def _put_link(cmd: PutLink, snap: LatticeSnapshot) -> LatticeSnapshot:
    req = LinkPutRequest(
        source_id=cmd.source_id,
        target=cmd.target,
        name=cmd.name,
        wit_namespace=cmd.wit_namespace,
        wit_package=cmd.wit_package,
        interfaces=list(cmd.interfaces),
        source_config=list(cmd.source_config),
        target_config=list(cmd.target_config),
        replace=cmd.replace,
    )
    existing = next((lk for lk in snap.links if lk.identity == cmd.key[1:]), None)
    refusal = check_put(req, existing, snap.configs)
    if refusal is not None:
        raise SimulationError(refusal)
    link = Link.model_validate(req.model_dump(exclude={"replace"}))
    others = tuple(lk for lk in snap.links if lk.identity != link.identity)
    return replace(snap, links=(*others, link))
