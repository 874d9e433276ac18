"""How manifest names become lattice ids, config names and ownership annotations.

Pure string rules, shared by validation (to catch collisions before deploying) and the
planner (to name what it creates).

- A component's or provider's lattice id is `{app}-{component name}` made into one
  NATS subject token: lowercased, every character other than `a-z`, `0-9`, `-` and `_`
  replaced by `-`. `properties.id` overrides it verbatim (it must already be a token).
- Inline config (`config: [{name, properties}]`) becomes the named config
  `{app}-{component}-{config name}`, normalised the same way; a config entry without
  `properties` names a config that exists on its own and is never created or deleted.
- Everything the controller starts carries `wasmcloud.dev/managed-by:
  lattice-controller` and `wasmcloud.dev/appspec: <app>` (wadm's keys), plus
  `lattice.dev/config: <names>` on components, because a host's inventory does not
  report a component's config names and the planner must notice when they change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MANAGED_BY_KEY = "wasmcloud.dev/managed-by"
MANAGED_BY = "lattice-controller"
APPSPEC_KEY = "wasmcloud.dev/appspec"
CONFIG_NAMES_KEY = "lattice.dev/config"

_NOT_TOKEN_CHAR = re.compile(r"[^a-z0-9_-]")


def normalize(name: str) -> str:
    """`name` as one lowercase subject token: other characters become '-'."""
    return _NOT_TOKEN_CHAR.sub("-", name.lower())


def workload_id(app: str, component: str, explicit: str | None = None) -> str:
    """The lattice id of a manifest component (a Wasm component or a provider)."""
    return explicit if explicit else normalize(f"{app}-{component}")


def config_name(app: str, component: str, config: str) -> str:
    """The named config that a component's inline config entry becomes."""
    return normalize(f"{app}-{component}-{config}")


def annotations(app: str, config: Iterable[str] | None = None) -> dict[str, str]:
    """The annotations the controller puts on what it starts for `app`."""
    ann = {MANAGED_BY_KEY: MANAGED_BY, APPSPEC_KEY: app}
    if config is not None:
        ann[CONFIG_NAMES_KEY] = ",".join(config)
    return ann


def is_managed(ann: Mapping[str, str]) -> bool:
    return ann.get(MANAGED_BY_KEY) == MANAGED_BY


def owner_app(ann: Mapping[str, str]) -> str | None:
    """The app a managed resource was started for (None when not managed)."""
    return ann.get(APPSPEC_KEY) if is_managed(ann) else None
