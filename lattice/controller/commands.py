"""The commands a plan consists of: frozen values, one per control-interface operation.

The planner returns these; one command worker alone sends them. Each command knows

- `phase`: where it goes in a plan. Plans are sorted by phase, and the worker runs the
  phases in order: named config before the links that use it, links before the
  components and providers that need them, starts before stops (so an upgrade or a
  move never drops below the desired count), deletions last.
- `key`: what it acts on — ("component", host, id), ("provider", host, id),
  ("link", source, namespace, package, name) or ("config", name). Failures and their
  backoff are recorded per key (`backoff.py`); a key in backoff holds its commands back.
- `request()`: the control-interface operation as (noun, verb, subject target, JSON
  body), exactly the bodies `lattice.protocol.messages` and `links` validate, so the
  worker sends `subjects.ctl(lattice, noun, verb, target)` with that body.
- `describe()`: one line for logs and status reasons.
- `reason`: for what stops or deletes, the plan's cause in words (which rule, which
  observed fact). Not part of equality; the controller records it in the app's history.

Maps are typed `Mapping` and excluded from the hash, so commands can go in sets; `phase`
is not part of equality (a test compares what a command does, not where it was put).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

CommandKey = tuple[str, ...]
Request = tuple[str, str, str | None, dict[str, Any]]


class Phase(IntEnum):
    """Execution order within a plan. Run phase by phase; before SCALE_DOWN, wait until
    the START_PROVIDER and SCALE_UP commands are confirmed by their events
    (`provider_started`, `component_scaled`), so replicas start before others stop."""

    PUT_CONFIG = 0
    PUT_LINK = 1
    RESTART_PROVIDER = 2  # the stop half of a provider restart on the same host
    START_PROVIDER = 3
    SCALE_UP = 4  # new replicas, more replicas, image updates
    DELETE_LINK = 5
    SCALE_DOWN = 6  # fewer replicas, stops (count 0)
    STOP_PROVIDER = 7
    DELETE_CONFIG = 8


@dataclass(frozen=True)
class ScaleComponent:
    """Run `count` instances (max concurrent) of a component on one host; 0 stops it.
    `allow_update` is set when the host runs another image of it (swap and resize)."""

    host_id: str
    image_ref: str
    component_id: str
    count: int
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    config: tuple[str, ...] = ()
    allow_update: bool = False
    phase: Phase = field(default=Phase.SCALE_UP, compare=False)
    reason: str = field(default="", compare=False)

    @property
    def key(self) -> CommandKey:
        return ("component", self.host_id, self.component_id)

    def request(self) -> Request:
        body: dict[str, Any] = {
            "component_ref": self.image_ref,
            "component_id": self.component_id,
            "count": self.count,
            "annotations": dict(self.annotations),
            "config": list(self.config),
        }
        if self.allow_update:
            body["allow_update"] = True
        return ("component", "scale", self.host_id, body)

    def describe(self) -> str:
        if self.count == 0:
            return f"stop {self.component_id} on {self.host_id}"
        return f"scale {self.component_id} to {self.count} on {self.host_id}"


@dataclass(frozen=True)
class UpdateComponent:
    """Swap a running component's image on one host (no failed call)."""

    host_id: str
    component_id: str
    image_ref: str
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    phase: ClassVar[Phase] = Phase.SCALE_UP

    @property
    def key(self) -> CommandKey:
        return ("component", self.host_id, self.component_id)

    def request(self) -> Request:
        body = {
            "component_id": self.component_id,
            "new_component_ref": self.image_ref,
            "annotations": dict(self.annotations),
        }
        return ("component", "update", self.host_id, body)

    def describe(self) -> str:
        return f"update {self.component_id} on {self.host_id} to {self.image_ref}"


@dataclass(frozen=True)
class StartProvider:
    host_id: str
    image_ref: str
    provider_id: str
    config: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    phase: ClassVar[Phase] = Phase.START_PROVIDER

    @property
    def key(self) -> CommandKey:
        return ("provider", self.host_id, self.provider_id)

    def request(self) -> Request:
        body = {
            "provider_ref": self.image_ref,
            "provider_id": self.provider_id,
            "config": list(self.config),
            "annotations": dict(self.annotations),
        }
        return ("provider", "start", self.host_id, body)

    def describe(self) -> str:
        return f"start provider {self.provider_id} on {self.host_id}"


@dataclass(frozen=True)
class StopProvider:
    """Stop a provider on one host; `phase` RESTART_PROVIDER when a start follows."""

    host_id: str
    provider_id: str
    phase: Phase = field(default=Phase.STOP_PROVIDER, compare=False)
    reason: str = field(default="", compare=False)

    @property
    def key(self) -> CommandKey:
        return ("provider", self.host_id, self.provider_id)

    def request(self) -> Request:
        return ("provider", "stop", self.host_id, {"provider_id": self.provider_id})

    def describe(self) -> str:
        return f"stop provider {self.provider_id} on {self.host_id}"


@dataclass(frozen=True)
class PutLink:
    """Create or change a link; `replace` when an existing link gets another target."""

    source_id: str
    target: str
    wit_namespace: str
    wit_package: str
    interfaces: tuple[str, ...]
    name: str = "default"
    source_config: tuple[str, ...] = ()
    target_config: tuple[str, ...] = ()
    replace: bool = False
    phase: ClassVar[Phase] = Phase.PUT_LINK

    @property
    def key(self) -> CommandKey:
        return ("link", self.source_id, self.wit_namespace, self.wit_package, self.name)

    def request(self) -> Request:
        body = {
            "source_id": self.source_id,
            "target": self.target,
            "name": self.name,
            "wit_namespace": self.wit_namespace,
            "wit_package": self.wit_package,
            "interfaces": list(self.interfaces),
            "source_config": list(self.source_config),
            "target_config": list(self.target_config),
            "replace": self.replace,
        }
        return ("link", "put", None, body)

    def describe(self) -> str:
        verb = "replace" if self.replace else "put"
        return (
            f"{verb} link {self.source_id} -> {self.target} "
            f"({self.wit_namespace}:{self.wit_package}, {self.name})"
        )


@dataclass(frozen=True)
class DeleteLink:
    source_id: str
    wit_namespace: str
    wit_package: str
    name: str = "default"
    reason: str = field(default="", compare=False)
    phase: ClassVar[Phase] = Phase.DELETE_LINK

    @property
    def key(self) -> CommandKey:
        return ("link", self.source_id, self.wit_namespace, self.wit_package, self.name)

    def request(self) -> Request:
        body = {
            "source_id": self.source_id,
            "wit_namespace": self.wit_namespace,
            "wit_package": self.wit_package,
            "name": self.name,
        }
        return ("link", "del", None, body)

    def describe(self) -> str:
        return (
            f"delete link from {self.source_id} "
            f"({self.wit_namespace}:{self.wit_package}, {self.name})"
        )


@dataclass(frozen=True)
class PutConfig:
    name: str
    values: Mapping[str, str] = field(default_factory=dict, hash=False)
    phase: ClassVar[Phase] = Phase.PUT_CONFIG

    @property
    def key(self) -> CommandKey:
        return ("config", self.name)

    def request(self) -> Request:
        return ("config", "put", self.name, dict(self.values))

    def describe(self) -> str:
        return f"put config {self.name}"


@dataclass(frozen=True)
class DeleteConfig:
    name: str
    reason: str = field(default="", compare=False)
    phase: ClassVar[Phase] = Phase.DELETE_CONFIG

    @property
    def key(self) -> CommandKey:
        return ("config", self.name)

    def request(self) -> Request:
        return ("config", "del", self.name, {})

    def describe(self) -> str:
        return f"delete config {self.name}"


Command = (
    ScaleComponent
    | UpdateComponent
    | StartProvider
    | StopProvider
    | PutLink
    | DeleteLink
    | PutConfig
    | DeleteConfig
)


def stops(cmd: Command) -> bool:
    """True for a command that stops or removes something (what the history explains)."""
    if isinstance(cmd, ScaleComponent):
        return cmd.phase == Phase.SCALE_DOWN
    return isinstance(cmd, StopProvider | DeleteLink | DeleteConfig)


def order(commands: list[Command]) -> list[Command]:
    """Commands in execution order: by phase, then by what they act on (deterministic)."""
    return sorted(commands, key=lambda c: (c.phase, c.key))
