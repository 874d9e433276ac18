"""The observed lattice, as the planner reads it: a frozen snapshot.

The async adapter builds one from host inventories and heartbeats (`HostSnapshot.
from_inventory`), the link list (`link.get` or the link bucket) and the named configs;
the planner never looks anywhere else. `last_seen` is on the same clock as the `now`
given to `plan()`: a host not seen for longer than the expiry counts as gone. A host
that sends liveness beats carries its own, shorter `expiry` (a few beat intervals).

Maps are typed `Mapping` and must be treated as read-only; `simulate.apply` returns a
new snapshot instead of changing one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lattice.protocol.links import Link


@dataclass(frozen=True)
class ComponentInstance:
    image_ref: str
    count: int  # max concurrent instances on this host
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderInstance:
    image_ref: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    config: tuple[str, ...] | None = None  # None: not reported, so never compared


@dataclass(frozen=True)
class HostSnapshot:
    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    components: Mapping[str, ComponentInstance] = field(default_factory=dict)
    providers: Mapping[str, ProviderInstance] = field(default_factory=dict)
    last_seen: float = 0.0
    expiry: float | None = None  # seconds of silence before it is lost; None: the default

    def matches(self, requirements: Mapping[str, str]) -> bool:
        """True when every required label is present with that value."""
        return all(self.labels.get(k) == v for k, v in requirements.items())

    @classmethod
    def from_inventory(cls, inventory: Mapping[str, Any], *, last_seen: float) -> HostSnapshot:
        """From a `host.get` reply or `host_heartbeat` data (see docs/protocol.md)."""
        components = {
            c["id"]: ComponentInstance(
                image_ref=c["image_ref"],
                count=int(c.get("max_instances", c.get("count", 0))),
                annotations=dict(c.get("annotations") or {}),
            )
            for c in inventory.get("components", [])
        }
        providers = {
            p["id"]: ProviderInstance(
                image_ref=p["image_ref"],
                annotations=dict(p.get("annotations") or {}),
                config=tuple(p["config"]) if p.get("config") is not None else None,
            )
            for p in inventory.get("providers", [])
        }
        host_id = inventory.get("host_id") or inventory["id"]
        return cls(
            id=host_id,
            labels=dict(inventory.get("labels") or {}),
            components=components,
            providers=providers,
            last_seen=last_seen,
        )


@dataclass(frozen=True)
class LatticeSnapshot:
    hosts: Mapping[str, HostSnapshot] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    configs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        hosts: Iterable[HostSnapshot] = (),
        links: Iterable[Link | Mapping[str, Any]] = (),
        configs: Mapping[str, Mapping[str, str]] | None = None,
    ) -> LatticeSnapshot:
        """A snapshot from hosts, links (models or dicts as `link.get` returns them) and
        config values by name."""
        return cls(
            hosts={h.id: h for h in hosts},
            links=tuple(lk if isinstance(lk, Link) else Link.model_validate(lk) for lk in links),
            configs={k: dict(v) for k, v in (configs or {}).items()},
        )

    def live_hosts(self, now: float, expiry: float) -> dict[str, HostSnapshot]:
        """Hosts seen within their own expiry (else `expiry`) seconds of `now`, by id."""
        return {
            h: s
            for h, s in self.hosts.items()
            if now - s.last_seen <= (s.expiry if s.expiry is not None else expiry)
        }

    def with_host(self, host: HostSnapshot) -> LatticeSnapshot:
        return replace(self, hosts={**self.hosts, host.id: host})

    def without_host(self, host_id: str) -> LatticeSnapshot:
        return replace(self, hosts={h: s for h, s in self.hosts.items() if h != host_id})
