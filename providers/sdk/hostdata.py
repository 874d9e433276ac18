"""What a provider learns at start-up: the host data line and the links in it.

The host writes one line to the provider's stdin: base64 of a JSON object (see
docs/protocol.md, "Capability providers"). `read_host_data` reads exactly that line and
validates it into `HostData`; any problem is one `HostDataError` whose message names the
field at fault and never echoes a value (the line carries credentials and secrets).

Secrets are held as pydantic `SecretStr`: NATS credentials and a link's
`target_secrets` print as `**********` in repr, str, logs and `model_dump_json`, and
are read only on purpose with `Link.secret(name)` / `.get_secret_value()`.
This module never does network I/O and never logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from typing import IO, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from lattice.protocol.subjects import SubjectError, check_token

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class HostDataError(ValueError):
    """The start-up data is missing or malformed; the message names the field."""


class LinkKey(NamedTuple):
    """What identifies a link to a provider (and what `linkdefs.del` sends)."""

    source_id: str
    name: str
    wit_namespace: str
    wit_package: str


class Link(BaseModel):
    """A link from a component (`source_id`) to this provider, config already resolved."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    source_id: str = Field(min_length=1)
    target: str = Field(min_length=1)
    name: str = Field(default="default", min_length=1)
    wit_namespace: str
    wit_package: str
    interfaces: list[str] = Field(default_factory=list)
    source_config: dict[str, str] = Field(default_factory=dict)
    target_config: dict[str, str] = Field(default_factory=dict)
    target_secrets: dict[str, SecretStr] = Field(default_factory=dict, repr=False)

    @property
    def key(self) -> LinkKey:
        return LinkKey(self.source_id, self.name, self.wit_namespace, self.wit_package)

    def secret(self, name: str) -> str | None:
        """The plain value of target secret `name`, or None. Never log what this returns."""
        value = self.target_secrets.get(name)
        return None if value is None else value.get_secret_value()

    def describe(self) -> dict[str, Any]:
        """Fields safe to log: identity, interfaces and config *names* (values may hold
        passwords, e.g. in a URL), secret names only."""
        return {
            "source_id": self.source_id,
            "link_name": self.name,
            "wit": f"{self.wit_namespace}:{self.wit_package}/{','.join(self.interfaces)}",
            "target_config_keys": sorted(self.target_config),
            "target_secret_keys": sorted(self.target_secrets),
        }

    def __str__(self) -> str:
        return (
            f"{self.source_id} -({self.name})-> {self.target} "
            f"[{self.wit_namespace}:{self.wit_package}/{','.join(self.interfaces)}]"
        )


class NatsCredentials(BaseModel):
    """A user JWT and its nkey seed (or just a seed for nkey-only auth)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    jwt: SecretStr | None = None
    seed: SecretStr


class HostData(BaseModel):
    """The start-up JSON object a host hands its provider."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    lattice: str = Field(min_length=1)
    nats_url: str = Field(min_length=1)
    nats_credentials: NatsCredentials | None = Field(default=None, repr=False)
    nats_tls: dict[str, str] | None = None
    nats_inbox_prefix: str | None = None
    """Its own inbox prefix, when its identity may subscribe to no other inboxes."""
    """Paths of the host's `ca`, `cert`, `key` for TLS to NATS (the same machine)."""
    provider_id: str = Field(min_length=1)
    host_id: str
    link_definitions: list[Link] = Field(default_factory=list)
    config: dict[str, str] = Field(default_factory=dict)
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"
    host_pid: int | None = None
    """The pid of the host process that started this provider, so it can tell when
    that host is gone (providers.sdk.lifetime); None when started by hand."""
    link_drain_seconds: float | None = Field(default=None, ge=0, le=300)
    """How long a deleted or replaced link keeps serving calls routed to it (the link
    hand-off, docs/protocol.md); None: the provider's own default."""
    otlp_endpoint: str | None = None
    """The host's `--otlp-endpoint`: export a span per call served (lattice/tracing.py)."""
    local_socket: str | None = None
    """A Unix socket path to serve the starting host's own link calls on, besides NATS
    (lattice/protocol/local_rpc.py); None: NATS only."""

    @field_validator("lattice", "provider_id")
    @classmethod
    def _token(cls, value: str) -> str:
        try:
            return check_token(value, "the value")
        except SubjectError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.lower()

    @field_validator("log_format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def encode(self) -> bytes:
        """The stdin line a host writes (secrets included: this is for the host side)."""
        raw = self.model_dump(mode="python")
        if self.nats_credentials is not None:
            creds = self.nats_credentials
            raw["nats_credentials"] = {
                "jwt": creds.jwt.get_secret_value() if creds.jwt else None,
                "seed": creds.seed.get_secret_value(),
            }
        raw["link_definitions"] = [
            {**link.model_dump(), "target_secrets": _plain(link.target_secrets)}
            for link in self.link_definitions
        ]
        return base64.b64encode(json.dumps(raw).encode()) + b"\n"


def _plain(secrets: dict[str, SecretStr]) -> dict[str, str]:
    return {k: v.get_secret_value() for k, v in secrets.items()}


def describe_errors(err: ValidationError, prefix: str = "") -> str:
    """`field.path: problem; …` without the offending input (it may be a secret)."""
    parts = []
    for e in err.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{prefix}{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_host_data(line: str | bytes) -> HostData:
    """Decode one host data line: base64 of JSON (a bare JSON object is accepted too)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        raise HostDataError(
            "no host data on stdin: expected one line of base64-encoded JSON (docs/providers.md)"
        )
    if not text.startswith("{"):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise HostDataError(
                "host data is neither base64 nor a JSON object "
                f"(got {len(text)} characters starting {text[:8]!r})"
            ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HostDataError(
            f"host data is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(raw, dict):
        raise HostDataError(f"host data must be a JSON object, got {type(raw).__name__}")
    try:
        return HostData.model_validate(raw)
    except ValidationError as exc:
        raise HostDataError(f"host data: {describe_errors(exc)}") from None


def read_host_data(stream: IO[str] | IO[bytes] | None = None) -> HostData:
    """Read and validate the one host data line from `stream` (default: stdin).

    Works on a terminal, a file and a pipe (e.g. from `asyncio.create_subprocess_exec`
    with `stdin=PIPE`): it reads up to the first newline, or to end of input if the
    host closes stdin without one.
    """
    source = sys.stdin if stream is None else stream
    return parse_host_data(source.readline())
