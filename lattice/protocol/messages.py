"""Control-interface request and response models.

Requests are validated with pydantic; `parse` turns any validation failure into one
`RequestError` whose message names every offending field, e.g.
`count: Input should be greater than or equal to 0`. Field names follow wasmCloud v1's
control interface where it names a thing (`component_ref`, `component_id`,
`annotations`, `config`), so its tools carry over; `count` is also accepted as
`max_instances`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from lattice.protocol.subjects import SubjectError, check_token

M = TypeVar("M", bound=BaseModel)

RESERVED_LABEL_PREFIX = "hostcore."


class RequestError(ValueError):
    """A control request that cannot be honoured as sent; the message names the field."""


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse(model: type[M], data: bytes) -> M:
    """Decode a JSON body into `model`, or raise RequestError naming what is wrong."""
    if not data.strip():
        raise RequestError(f"empty request body: expected a JSON object for {model.__name__}")
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise RequestError(f"request body must be a JSON object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RequestError(_describe(exc)) from None


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


def _token(value: str, what: str) -> str:
    try:
        return check_token(value, what)
    except SubjectError as exc:
        raise ValueError(str(exc)) from None


# Ids that become subject tokens, checked wherever a request carries one.
ComponentId = Annotated[str, AfterValidator(lambda v: _token(v, "component_id"))]
ProviderId = Annotated[str, AfterValidator(lambda v: _token(v, "provider_id"))]


class ComponentLimits(BaseModel):
    """Per-component execution limits; absent fields take the host's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_ms: int | None = Field(default=None, gt=0, le=3_600_000)
    memory_mb: int | None = Field(default=None, gt=0, le=65_536)


class ScaleComponentRequest(_Request):
    component_ref: str = Field(min_length=1)
    component_id: ComponentId
    count: int = Field(ge=0, le=10_000, validation_alias=AliasChoices("count", "max_instances"))
    annotations: dict[str, str] = Field(default_factory=dict)
    config: list[str] = Field(default_factory=list)
    allow_update: bool = False
    limits: ComponentLimits | None = None


class UpdateComponentRequest(_Request):
    component_id: ComponentId
    new_component_ref: str = Field(min_length=1)
    annotations: dict[str, str] | None = None


class ComponentAuctionRequest(_Request):
    component_ref: str = Field(min_length=1)
    component_id: ComponentId
    constraints: dict[str, str] = Field(default_factory=dict)


class StartProviderRequest(_Request):
    provider_ref: str = Field(min_length=1)
    provider_id: ProviderId
    config: list[str] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)


class StopProviderRequest(_Request):
    provider_id: ProviderId


class ProviderAuctionRequest(_Request):
    provider_ref: str = Field(min_length=1)
    provider_id: ProviderId
    constraints: dict[str, str] = Field(default_factory=dict)


class ComponentAuctionAck(BaseModel):
    component_ref: str
    component_id: ComponentId
    constraints: dict[str, str]
    host_id: str


class HostStopRequest(_Request):
    timeout_ms: int | None = Field(default=None, ge=0)


class LabelPutRequest(_Request):
    key: str = Field(min_length=1, max_length=256)
    value: str = Field(max_length=4096)

    @field_validator("key")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        return _check_label_key(v)


class LabelDelRequest(_Request):
    key: str = Field(min_length=1, max_length=256)

    @field_validator("key")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        return _check_label_key(v)


def _check_label_key(key: str) -> str:
    if key.startswith(RESERVED_LABEL_PREFIX):
        raise ValueError(f"labels starting with {RESERVED_LABEL_PREFIX!r} are set by the host")
    if any(c.isspace() for c in key) or "=" in key:
        raise ValueError("a label key may not contain white space or '='")
    return key


class ComponentDescription(BaseModel):
    """One component as a host reports it in its inventory and heartbeats."""

    id: str
    image_ref: str
    name: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    max_instances: int
    revision: int = 0
    instances_warm: int = 0
    limits: dict[str, int] = Field(default_factory=dict)
    exports: list[str] = Field(default_factory=list)


class HostInventory(BaseModel):
    host_id: str
    friendly_name: str
    lattice: str
    labels: dict[str, str]
    components: list[ComponentDescription] = Field(default_factory=list)
    providers: list[dict[str, Any]] = Field(default_factory=list)
    version: str
    uptime_seconds: int
    uptime_human: str


class HostPing(BaseModel):
    """What each host answers to `host.ping`."""

    id: str
    friendly_name: str
    labels: dict[str, str]
    lattice: str
    version: str
    uptime_seconds: int
    uptime_human: str
    js_domain: str | None = None
