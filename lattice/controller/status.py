"""Application and component status, as the planner reports it with every plan.

States, per component and per application:

- `deployed`: what runs matches the manifest and nothing is left to do.
- `reconciling`: commands are under way (or held back by backoff, below the failure
  threshold), or what runs does not match yet.
- `failed`: it cannot be met without a person acting; `reason` says what to do (label a
  host, create a config, pick another id). A failed component is still retried, at the
  backoff's capped pace, and whatever can run does run.
- `undeployed`: the application is not deployed; while resources it started remain,
  `reason` says what is being removed.

An application takes the worst state of its components (failed > reconciling >
deployed). `to_dict()` gives the JSON the adapter publishes on `wadm.status.{lattice}.
{name}` and `lattice app status` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class State(StrEnum):
    DEPLOYED = "deployed"
    RECONCILING = "reconciling"
    FAILED = "failed"
    UNDEPLOYED = "undeployed"


_SEVERITY = {State.DEPLOYED: 0, State.UNDEPLOYED: 0, State.RECONCILING: 1, State.FAILED: 2}


def worst(states: list[State], default: State = State.DEPLOYED) -> State:
    return max(states, key=_SEVERITY.__getitem__, default=default)


@dataclass(frozen=True)
class ComponentStatus:
    """One manifest component. For a Wasm component `desired`/`running` count instances
    (the sum of max-instances over hosts); for a provider, hosts."""

    name: str
    kind: str  # "component" or "capability"
    id: str
    desired: int
    running: int
    where: tuple[str, ...]  # host ids where it runs
    state: State
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "id": self.id,
            "desired": self.desired,
            "running": self.running,
            "where": list(self.where),
            "state": self.state.value,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class AppStatus:
    name: str
    version: str | None
    state: State
    reason: str = ""
    components: tuple[ComponentStatus, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "state": self.state.value,
            "reason": self.reason,
            "components": [c.to_dict() for c in self.components],
        }
