"""The manifest controller's pure core: manifests, validation, placement and the plan.

Nothing in this package does I/O (except `validate_file` reading the file it is given,
and `schema` writing manifests/schema.json when run). The async adapter — NATS, the
manifest store, leases, the command worker — sits on top and feeds `plan()` snapshots.

| module | concern |
|---|---|
| `manifest` | the OAM manifest as frozen pydantic models |
| `validate`, `checks`, `source`, `report`, `wit` | validation: all problems, path and line |
| `schema` | the JSON schema of a manifest, written to manifests/schema.json |
| `naming` | lattice ids, config names, ownership annotations |
| `desired` | a manifest compiled into workloads, links and configs |
| `spread` | largest-remainder apportionment and per-host splits |
| `scalers` | spreadscaler and daemonscaler placement |
| `snapshot` | the observed lattice |
| `commands` | the commands a plan is made of, with phases and request bodies |
| `wiring` | links and named config in the plan |
| `plan` | desired + observed → commands and status |
| `assess`, `status` | application and component status |
| `backoff` | retries with exponential backoff and jitter |
| `simulate` | what commands do to a snapshot (tests, optimistic overlay) |
"""

from lattice.controller.backoff import Backoff, Failure, record_failure, record_success
from lattice.controller.commands import (
    Command,
    DeleteConfig,
    DeleteLink,
    Phase,
    PutConfig,
    PutLink,
    ScaleComponent,
    StartProvider,
    StopProvider,
    UpdateComponent,
)
from lattice.controller.manifest import Application, Manifest
from lattice.controller.plan import DEFAULT_HOST_EXPIRY, Plan, plan
from lattice.controller.report import ManifestError, Problem, ValidationReport
from lattice.controller.simulate import SimulationError, apply
from lattice.controller.snapshot import (
    ComponentInstance,
    HostSnapshot,
    LatticeSnapshot,
    ProviderInstance,
)
from lattice.controller.spread import largest_remainder
from lattice.controller.status import AppStatus, ComponentStatus, State
from lattice.controller.validate import load, validate, validate_file

__all__ = [
    "DEFAULT_HOST_EXPIRY",
    "AppStatus",
    "Application",
    "Backoff",
    "Command",
    "ComponentInstance",
    "ComponentStatus",
    "DeleteConfig",
    "DeleteLink",
    "Failure",
    "HostSnapshot",
    "LatticeSnapshot",
    "Manifest",
    "ManifestError",
    "Phase",
    "Plan",
    "Problem",
    "ProviderInstance",
    "PutConfig",
    "PutLink",
    "ScaleComponent",
    "SimulationError",
    "StartProvider",
    "State",
    "StopProvider",
    "UpdateComponent",
    "ValidationReport",
    "apply",
    "largest_remainder",
    "load",
    "plan",
    "record_failure",
    "record_success",
    "validate",
    "validate_file",
]
