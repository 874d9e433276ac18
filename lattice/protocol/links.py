"""Links and named config: their shapes, validation and resolution. Pure, no I/O.

A link says: calls from `source_id` to the WIT package `wit_namespace:wit_package`
(for the listed `interfaces`), under link name `name`, go to `target`. It is identified
by (source, namespace, package, name); at most one target per identity, so replacing a
target is an explicit act (`replace: true`), never an accident.

Named config is a map of strings stored under a name; some keys may be marked secret.
Secret values travel only to the provider that needs them (as `target_secrets`) and are
shown as "***" everywhere else.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lattice.protocol.subjects import SubjectError, check_token

REDACTED = "***"
SECRET_MARKER = "$secrets"  # config.put body key listing which keys are secret


def _token(value: str, what: str) -> str:
    try:
        return check_token(value, what)
    except SubjectError as exc:
        raise ValueError(str(exc)) from None


def _wit_name(value: str, what: str) -> str:
    if not value or not all(c.isalnum() or c == "-" for c in value):
        raise ValueError(f"{what} {value!r} must be a WIT identifier (letters, digits, '-')")
    return value


class _Checked(BaseModel):
    """Ids that become subject tokens, and WIT names, checked the same in every message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @field_validator("source_id", "target", "name", "provider_id", check_fields=False)
    @classmethod
    def _ids(cls, v: str, info: object) -> str:
        return _token(v, getattr(info, "field_name", "id"))

    @field_validator("wit_namespace", "wit_package", check_fields=False)
    @classmethod
    def _wit(cls, v: str, info: object) -> str:
        return _wit_name(v, getattr(info, "field_name", "name"))


class Link(_Checked):
    """A link as stored and exchanged on the control interface (config by name)."""

    source_id: str
    target: str
    name: str = "default"
    wit_namespace: str
    wit_package: str
    interfaces: list[str] = Field(min_length=1)
    source_config: list[str] = Field(default_factory=list)
    target_config: list[str] = Field(default_factory=list)

    @field_validator("interfaces")
    @classmethod
    def _ifaces(cls, v: list[str]) -> list[str]:
        return [_wit_name(i, "interface") for i in v]

    @property
    def identity(self) -> Identity:
        return (self.source_id, self.wit_namespace, self.wit_package, self.name)

    @property
    def key(self) -> str:
        return link_key(*self.identity)

    def describe(self) -> str:
        ifaces = ",".join(self.interfaces)
        return (
            f"{self.source_id} -> {self.target} "
            f"({self.wit_namespace}:{self.wit_package}/{{{ifaces}}}, link name {self.name})"
        )


class LinkPutRequest(Link):
    replace: bool = False


class LinkDelRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    source_id: str
    wit_namespace: str
    wit_package: str
    name: str = "default"

    @property
    def key(self) -> str:
        return link_key(self.source_id, self.wit_namespace, self.wit_package, self.name)


class LinkResolveRequest(_Checked):
    """A provider asks its host for a link it was called over but does not hold
    (`link.resolve.{host_id}`, docs/protocol.md "Link hand-off")."""

    provider_id: str
    source_id: str
    wit_namespace: str
    wit_package: str
    name: str = "default"

    @property
    def identity(self) -> Identity:
        return (self.source_id, self.wit_namespace, self.wit_package, self.name)


def link_key(source_id: str, namespace: str, package: str, name: str) -> str:
    """A JetStream KV key for a link identity (KV keys allow only [-/_=.a-zA-Z0-9])."""
    raw = json.dumps([source_id, namespace, package, name], separators=(",", ":")).encode()
    return "link." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


class NamedConfig(BaseModel):
    """A named config as stored: values plus which keys are secret."""

    model_config = ConfigDict(frozen=True)

    values: dict[str, str]
    secrets: list[str] = Field(default_factory=list)

    @classmethod
    def from_request(cls, body: Mapping[str, object]) -> NamedConfig:
        """A flat `{key: value}` map (wasmCloud's form), optionally with `"$secrets": [keys]`."""
        secrets = body.get(SECRET_MARKER, [])
        if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
            raise ValueError(f"{SECRET_MARKER}: must be a list of key names")
        values: dict[str, str] = {}
        for k, v in body.items():
            if k == SECRET_MARKER:
                continue
            if not isinstance(v, str):
                raise ValueError(f"{k}: config values must be strings, got {type(v).__name__}")
            values[k] = v
        missing = [s for s in secrets if s not in values]
        if missing:
            raise ValueError(f"{SECRET_MARKER}: {', '.join(missing)} not among the config keys")
        return cls(values=values, secrets=sorted(set(secrets)))

    def redacted(self) -> dict[str, str]:
        return {k: (REDACTED if k in self.secrets else v) for k, v in self.values.items()}

    def public(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if k not in self.secrets}

    def secret_values(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if k in self.secrets}


def config_key(name: str) -> str:
    _token(name, "config name")
    if not all(c.isalnum() or c in "-_=" for c in name):
        raise ValueError(f"config name {name!r} may hold only letters, digits, '-', '_', '='")
    return name


def merge_config(
    names: Iterable[str], configs: Mapping[str, NamedConfig]
) -> tuple[dict[str, str], dict[str, str]]:
    """(public values, secret values) of the named configs, later names winning."""
    public: dict[str, str] = {}
    secret: dict[str, str] = {}
    for n in names:
        c = configs.get(n)
        if c is None:
            continue
        public.update(c.public())
        secret.update(c.secret_values())
        for k in c.secrets:
            public.pop(k, None)
    return public, secret


Identity = tuple[str, str, str, str]  # (source_id, namespace, package, link name)


def find_link(
    links: Mapping[Identity, Link],
    source_id: str,
    namespace: str,
    package: str,
    interface: str,
    name: str,
) -> Link | None:
    """The link that carries `interface` for this source and link name, if any."""
    link = links.get((source_id, namespace, package, name))
    return link if link is not None and interface in link.interfaces else None


def check_put(
    new: LinkPutRequest, existing: Link | None, config_names: Iterable[str]
) -> str | None:
    """Why `new` may not be stored, or None. Pure, so the rule is tested without NATS."""
    known = set(config_names)
    missing = [c for c in [*new.source_config, *new.target_config] if c not in known]
    if missing:
        return f"link refers to config that does not exist: {', '.join(missing)}"
    if existing is not None and existing.target != new.target and not new.replace:
        return (
            f"a link {existing.describe()} already exists; delete it first or put the new "
            "one with replace (lattice link put --replace) to swap the target atomically"
        )
    return None
