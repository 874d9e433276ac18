"""The application manifest: wadm's OAM format as frozen pydantic models.

These models check the *shape* of one manifest — field names, types, ranges, identifier
syntax — so pydantic can report every such problem at once with its location. Rules
that relate several parts of a manifest (duplicate names, one scaler per component,
weights that add up to 0, link targets) live in `validate.py`, which turns both kinds of
problem into `path: reason` lines. The JSON schema in manifests/schema.json is generated
from these models (`schema.py`).

Where wadm accepts a shorthand, so do we: `replicas` for `instances`, `actor` for
`component`, a link `target` given as a bare name. Unknown fields are errors (a typo
such as `instaces` must not be silently ignored). Config values, label requirements and
annotations are strings; YAML scalars such as `8080` or `true` are taken as their text.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from lattice import policy
from lattice.artifacts import refs
from lattice.protocol.subjects import SubjectError, check_token

API_VERSION = "core.oam.dev/v1beta1"
KIND = "Application"
VERSION_KEY = "version"
DESCRIPTION_KEY = "description"
DEFAULT_WEIGHT = 100  # wadm's default spread weight
MAX_INSTANCES = 10_000  # the host's own limit for one component on one host

_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_WIT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9_=-]+$")


def _scalar_text(value: Any) -> Any:
    """YAML reads `8080`, `true` and `1.5` as numbers and booleans; keep their text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_scalar_text)]
Count = Annotated[int, Field(ge=0, le=MAX_INSTANCES, strict=True)]


def _token(value: str, what: str) -> str:
    try:
        return check_token(value, what)
    except SubjectError as exc:
        raise ValueError(str(exc)) from None


def _wit_id(value: str, what: str) -> str:
    if not _WIT_ID.match(value):
        raise ValueError(f"{what} {value!r} must be a WIT identifier (letters, digits, '-')")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ConfigProperty(_Model):
    """A config for a component, provider or link: created from `properties` when
    given (and owned by the app), otherwise the name of a config that exists already."""

    name: str = Field(min_length=1, description="Config name (unique within the component).")
    properties: dict[str, Text] | None = Field(
        default=None,
        description="Values to create the config with; omit to use an existing config.",
    )

    @model_validator(mode="after")
    def _external_name(self) -> ConfigProperty:
        if self.properties is None and not _CONFIG_NAME.match(self.name):
            raise ValueError(
                f"config name {self.name!r} may hold only letters, digits, '-', '_', '='"
            )
        return self


def _patterns(key: str, values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    out = []
    for v in values:
        try:
            out.extend(policy.check_patterns(key, [v]))
        except policy.PolicyError as exc:
            raise ValueError(str(exc).removeprefix(f"{key}: ")) from None
    return out


class CapabilityPolicy(_Model):
    """What a component may do (lattice/policy.py); each list left out stays open,
    except that egress without a list is its config's `allowed_hosts`, else none."""

    imports: list[str] | None = Field(
        default=None,
        description="Interfaces it may import through links: wasi:keyvalue/store, "
        "wasi:keyvalue/* (or wasi:keyvalue), wasi:*, *.",
    )
    egress: list[str] | None = Field(
        default=None,
        description="Hosts its outgoing HTTP may reach: host, host:port, *.domain, *.",
    )
    config: list[str] | None = Field(
        default=None,
        description="Named config it may read: this component's config entry names, "
        "other config names, prefix*, *.",
    )

    @field_validator("imports", "egress", "config")
    @classmethod
    def _lists(cls, v: list[str] | None, info: Any) -> list[str] | None:
        return _patterns(info.field_name, v)


class ComponentProperties(_Model):
    image: str = Field(
        min_length=1,
        description="Component or provider reference: lattice://NAME:VERSION, an OCI "
        "reference (registry/repo:tag or @sha256:…), file:///path, http(s)://…, builtin://name.",
    )
    id: str | None = Field(
        default=None,
        description="Lattice id; defaults to {app}-{name}. Providers with the same id and "
        "image in several applications are shared.",
    )
    config: list[ConfigProperty] = Field(default_factory=list)
    policy: CapabilityPolicy | None = Field(
        default=None,
        description="Capability policy of a Wasm component: what its links may grant, "
        "where its HTTP may go, which config it may read.",
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return None if v is None else _token(v, "id")

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if v.startswith(("lattice://", "oci://")) or refs.looks_like_oci(v):
            refs.parse(v, allow_latest=True)  # :latest is each host's policy, not the manifest's
        return v


class SpreadRule(_Model):
    name: str = Field(min_length=1)
    requirements: dict[str, Text] = Field(
        default_factory=dict, description="Host labels that must all match."
    )
    weight: int = Field(default=DEFAULT_WEIGHT, ge=0, strict=True)


class SpreadScalerProperties(_Model):
    instances: Count = Field(
        validation_alias=AliasChoices("instances", "replicas"),
        description="Total instances (components) or hosts (providers).",
    )
    spread: list[SpreadRule] = Field(default_factory=list)
    rebalance: bool = Field(
        default=False,
        description="Move replicas to reach an even split when hosts join "
        "(new ones start before old ones stop).",
        strict=True,
    )


class DaemonScalerProperties(_Model):
    instances: Count = Field(
        validation_alias=AliasChoices("instances", "replicas"),
        description="Instances on every matching host (providers: one per host).",
    )
    spread: list[SpreadRule] = Field(default_factory=list)


class LinkTarget(_Model):
    name: str = Field(
        min_length=1,
        description="A component in this manifest, or else a lattice id used as is.",
    )
    config: list[ConfigProperty] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        full = handler.resolve_ref_schema(handler(core_schema))
        bare = {"type": "string", "minLength": 1, "description": "Shorthand for {name: ...}."}
        return {"anyOf": [bare, full]}


class LinkSource(_Model):
    config: list[ConfigProperty] = Field(default_factory=list)


class LinkProperties(_Model):
    namespace: str
    package: str
    interfaces: list[str] = Field(min_length=1)
    target: LinkTarget
    source: LinkSource | None = None
    name: str = Field(default="default", description="Link name.")

    @field_validator("namespace", "package")
    @classmethod
    def _wit(cls, v: str, info: Any) -> str:
        return _wit_id(v, info.field_name)

    @field_validator("interfaces")
    @classmethod
    def _ifaces(cls, v: list[str]) -> list[str]:
        return [_wit_id(i, "interface") for i in v]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _token(v, "link name")


class SpreadScalerTrait(_Model):
    type: Literal["spreadscaler"]
    properties: SpreadScalerProperties


class DaemonScalerTrait(_Model):
    type: Literal["daemonscaler"]
    properties: DaemonScalerProperties


class LinkTrait(_Model):
    type: Literal["link"]
    properties: LinkProperties


Trait = Annotated[SpreadScalerTrait | DaemonScalerTrait | LinkTrait, Field(discriminator="type")]
ScalerTrait = SpreadScalerTrait | DaemonScalerTrait
TRAIT_TYPES = ("spreadscaler", "daemonscaler", "link")


class Component(_Model):
    name: str = Field(min_length=1)
    type: Literal["component", "capability"] = Field(
        description="`component` (WebAssembly) or `capability` (a provider process)."
    )
    properties: ComponentProperties
    traits: list[Trait] = Field(default_factory=list)

    @field_validator("type", mode="before")
    @classmethod
    def _actor(cls, v: Any) -> Any:
        return "component" if v == "actor" else v

    @field_validator("traits", mode="before")
    @classmethod
    def _null_traits(cls, v: Any) -> Any:
        return [] if v is None else v

    @property
    def scalers(self) -> list[ScalerTrait]:
        return [t for t in self.traits if not isinstance(t, LinkTrait)]

    @property
    def links(self) -> list[LinkProperties]:
        return [t.properties for t in self.traits if isinstance(t, LinkTrait)]


class Metadata(_Model):
    name: str = Field(description="Application name: letters, digits, '-', '_' (≤ 63).")
    annotations: dict[str, Text] = Field(
        default_factory=dict, description="`version` and `description`, and any others."
    )
    labels: dict[str, Text] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _APP_NAME.match(v):
            raise ValueError(
                f"application name {v!r} must start with a letter or digit and hold only "
                "letters, digits, '-' and '_' (at most 63)"
            )
        return v


class Spec(_Model):
    components: list[Component] = Field(min_length=1)
    policies: list[Any] | None = Field(
        default=None, description="Accepted for wadm compatibility and ignored."
    )


class Manifest(_Model):
    """One version of an application, as deployed (wadm's `Manifest`)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        title="Lattice application manifest",
    )

    api_version: Literal["core.oam.dev/v1beta1"] = Field(alias="apiVersion")
    kind: Literal["Application"]
    metadata: Metadata
    spec: Spec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str | None:
        return self.metadata.annotations.get(VERSION_KEY)

    @property
    def description(self) -> str | None:
        return self.metadata.annotations.get(DESCRIPTION_KEY)

    @property
    def components(self) -> list[Component]:
        return self.spec.components


Application = Manifest  # what the planner calls a deployed manifest
