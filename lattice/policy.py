"""Capability policy: what a component may import through links, reach over HTTP, and
read of the named config. Pure: decisions from (policy, request), no I/O.

The record. A component's policy is the named config `policy=<component id>` in the
lattice's config bucket, so every host has it in the copy of the bucket it already
watches (no new state, no request per decision), `lattice config put` writes it, and
a manifest's `properties.policy` becomes it (the controller owns it like inline config).
Its keys, each a comma-separated list:

- `imports`: interface patterns, `wasi:keyvalue/store`, `wasi:keyvalue/*` (or
  `wasi:keyvalue`), `wasi:*`, `*`. Absent: any import may be linked.
- `egress`: host patterns, `api.example.com`, `host:port`, `*.example.com`, `*` (the
  `http_out.allowlist` language). Absent: the component's config `allowed_hosts`.
- `config`: config names, `settings`, `app-*` (a trailing `*`), `*`. Absent: any
  config may be attached.

An empty value is an empty list: `imports=` lets nothing be linked. Egress is denied
by default: with neither `egress` nor `allowed_hosts` no host may be reached, as before.

Where it is checked: `link put` (the interfaces the link grants and its source config),
`component.scale` (the config attached), every `wasi:config` read (config attached
earlier than a policy that now forbids it gets an error, not its values) and every
outgoing HTTP request. Checks are O(1) per call: a policy is parsed once per stored
revision (`policy_of` keeps the parsed copy beside the record it came from).

An external policy service (host flag `--policy-subject`) is asked as well; its
messages are `lattice.protocol.policy`, the asking and caching live in `host/policy.py`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import nkeys

from lattice import natsjwt
from lattice.protocol import http_out
from lattice.protocol.links import Link, NamedConfig

PREFIX = "policy="
KEYS = ("imports", "egress", "config")

_WIT = r"[a-z0-9][a-z0-9-]*"
_IMPORT = re.compile(rf"^(\*|{_WIT}:(\*|{_WIT}(/(\*|{_WIT}))?))$")
_CONFIG = re.compile(r"^(\*|[A-Za-z0-9_=-]+\*?)$")
_EGRESS = re.compile(r"^(\*|(\*\.)?[A-Za-z0-9.\-\[\]:]+)$")


class PolicyError(ValueError):
    """A policy record or field that cannot be read; the message names the field."""


def record_name(component_id: str) -> str:
    """The named config that holds `component_id`'s policy."""
    name = PREFIX + component_id
    if not all(c.isalnum() or c in "-_=" for c in name):
        raise PolicyError(
            f"component id {component_id!r}: a component with a capability policy needs an "
            "id of letters, digits, '-' and '_' (its policy is the config "
            f"'{PREFIX}<id>')"
        )
    return name


def component_of(config_name: str) -> str | None:
    """The component whose policy `config_name` is, or None for ordinary config."""
    return config_name[len(PREFIX) :] if config_name.startswith(PREFIX) else None


def check_patterns(key: str, patterns: Iterable[str]) -> list[str]:
    """`patterns` of policy field `key`, checked; PolicyError names the field and value."""
    shape = {"imports": _IMPORT, "egress": _EGRESS, "config": _CONFIG}.get(key)
    if shape is None:
        raise PolicyError(f"{key}: unknown policy field; expected one of: {', '.join(KEYS)}")
    out = []
    for raw in patterns:
        p = raw.strip()
        if not p:
            continue
        if key == "imports":
            p = p.split("@", 1)[0].lower()  # versions do not narrow a grant
        if not shape.match(p):
            raise PolicyError(f"{key}: {raw!r} is not {_SHAPES[key]}")
        out.append(p)
    return out


_SHAPES = {
    "imports": "an interface pattern (namespace:package/interface, namespace:package/*, "
    "namespace:*, or *)",
    "egress": "a host pattern (host, host:port, *.domain, or *)",
    "config": "a config name pattern (name, prefix*, or *)",
}


def _split(value: str) -> list[str]:
    return [p for p in (s.strip() for s in value.split(",")) if p]


@dataclass(frozen=True)
class ComponentPolicy:
    """One component's three lists; None leaves a list open (see the module doc)."""

    component_id: str
    imports: tuple[str, ...] | None = None
    egress: tuple[str, ...] | None = None
    config: tuple[str, ...] | None = None
    _egress_rules: http_out.OutgoingPolicy | None = field(default=None, compare=False, repr=False)
    # attached config names -> (those readable, why not all): `readable` runs per call
    _reads: dict[tuple[str, ...], tuple[list[str], str | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.egress is not None:  # compiled once: checked on every request
            object.__setattr__(self, "_egress_rules", http_out.allowlist(self.egress))

    @property
    def name(self) -> str:
        return PREFIX + self.component_id

    @classmethod
    def from_values(cls, component_id: str, values: Mapping[str, str]) -> ComponentPolicy:
        """From a record's values; PolicyError names a bad or unknown key."""
        unknown = sorted(set(values) - set(KEYS))
        if unknown:
            raise PolicyError(
                f"{unknown[0]}: unknown policy field; expected one of: {', '.join(KEYS)}"
            )
        lists = {
            k: tuple(check_patterns(k, _split(values[k]))) if k in values else None for k in KEYS
        }
        return cls(component_id, **lists)

    def to_values(self) -> dict[str, str]:
        out = {}
        for k in KEYS:
            v = getattr(self, k)
            if v is not None:
                out[k] = ",".join(v)
        return out

    # -- the three questions ------------------------------------------------------

    def may_import(self, namespace: str, package: str, interface: str) -> bool:
        if self.imports is None:
            return True
        return any(_import_matches(p, namespace, package, interface) for p in self.imports)

    def may_read(self, config_name: str) -> bool:
        if self.config is None:
            return True
        return any(_name_matches(p, config_name) for p in self.config)

    def may_reach(self, host: str, port: int, fallback: Mapping[str, str]) -> bool:
        """Outgoing HTTP to host:port; `fallback` is the component's config, whose
        `allowed_hosts` applies when the policy sets no `egress`."""
        if self._egress_rules is not None:
            return self._egress_rules(host, port)
        return http_out.allowlist_of(fallback)(host, port)

    def describe(self, key: str) -> str:
        v = getattr(self, key)
        return "any" if v is None else (", ".join(v) or "none")


def _import_matches(pattern: str, namespace: str, package: str, interface: str) -> bool:
    if pattern == "*":
        return True
    ns, _, rest = pattern.partition(":")
    if ns != namespace:
        return False
    if rest == "*":
        return True
    pkg, _, iface = rest.partition("/")
    return pkg == package and (iface in ("", "*") or iface == interface)


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name


# -- the record in the config bucket ---------------------------------------------------

_parsed: dict[str, tuple[NamedConfig, ComponentPolicy | None]] = {}


def policy_of(configs: Mapping[str, NamedConfig], component_id: str) -> ComponentPolicy | None:
    """The policy of `component_id` in `configs` (the host's copy of the bucket), parsed
    once per stored record. A record that does not parse denies everything it could
    restrict (it was refused at `config put`; this is the belt to that brace)."""
    record = configs.get(PREFIX + component_id)
    if record is None:
        return None
    seen = _parsed.get(component_id)
    if seen is not None and seen[0] is record:
        return seen[1]
    try:
        policy: ComponentPolicy | None = ComponentPolicy.from_values(component_id, record.values)
    except PolicyError:
        policy = ComponentPolicy(component_id, (), (), ())
    _parsed[component_id] = (record, policy)
    return policy


# -- decisions -------------------------------------------------------------------------


def check_link(policy: ComponentPolicy | None, link: Link) -> str | None:
    """Why `link` grants its source more than its policy allows, or None."""
    if policy is None:
        return None
    denied = [
        f"{link.wit_namespace}:{link.wit_package}/{i}"
        for i in link.interfaces
        if not policy.may_import(link.wit_namespace, link.wit_package, i)
    ]
    if denied:
        return (
            f"link put refused by the capability policy {policy.name}: component "
            f"{link.source_id} may not import {', '.join(denied)} "
            f"(its policy allows imports: {policy.describe('imports')})"
        )
    return check_config(policy, link.source_config, "link put")


def check_config(policy: ComponentPolicy | None, names: Iterable[str], when: str) -> str | None:
    """Why config `names` may not be attached to the policy's component, or None."""
    if policy is None:
        return None
    denied = [n for n in names if not policy.may_read(n)]
    if not denied:
        return None
    return (
        f"{when} refused by the capability policy {policy.name}: component "
        f"{policy.component_id} may not read config {', '.join(denied)} "
        f"(its policy allows config: {policy.describe('config')})"
    )


def check_record(name: str, values: Mapping[str, str]) -> str | None:
    """Why a `config put` of `name` with `values` is not a readable policy, or None for
    ordinary config and good policies."""
    component = component_of(name)
    if component is None:
        return None
    try:
        ComponentPolicy.from_values(component, values)
    except PolicyError as exc:
        return f"config {name} is the capability policy of {component}: {exc}"
    return None


class ConfigView(dict[str, str]):
    """A component's merged config as the host serves it, with its policy beside it:
    `refused` says why some attached config is withheld (wasi:config answers with that
    error), `policy` is what outgoing HTTP checks."""

    refused: str | None = None
    policy: ComponentPolicy | None = None


def readable(
    configs: Mapping[str, NamedConfig], component_id: str, names: list[str]
) -> tuple[list[str], ComponentPolicy | None, str | None]:
    """(the attached config names the component may read, its policy, why some are not)."""
    policy = policy_of(configs, component_id)
    if policy is None or policy.config is None:
        return names, policy, None
    key = tuple(names)
    hit = policy._reads.get(key)
    if hit is None:
        allowed = [n for n in names if policy.may_read(n)]
        refusal = None if len(allowed) == len(names) else check_config(policy, names, "config read")
        hit = policy._reads[key] = (allowed, refusal)
    return hit[0], policy, hit[1]


def may_reach(view: Mapping[str, str], host: str, port: int) -> bool:
    """Outgoing HTTP from a component whose served config is `view`: its policy's
    `egress`, else its `allowed_hosts`, else nothing."""
    policy = getattr(view, "policy", None)
    if policy is not None:
        return bool(policy.may_reach(host, port, view))
    return http_out.allowlist_of(view)(host, port)


# -- who asked: a signed requester header ----------------------------------------------

REQUESTER_HEADER = "lattice-requester"
REQUESTER_TS_HEADER = "lattice-requester-ts"
REQUESTER_SIG_HEADER = "lattice-requester-sig"
REQUESTER_SKEW_S = 300.0


def _signed_text(subject: str, ts: str, body: bytes) -> bytes:
    return f"{subject}\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()


def requester_headers(key: natsjwt.Key, subject: str, body: bytes, now: float) -> dict[str, str]:
    """Headers by which a client says who sends `body` to `subject`: its public key and
    an Ed25519 signature, with its nkey, over the subject, the time and the body's hash
    (the seed never leaves the client)."""
    ts = f"{now:.3f}"
    sig = base64.urlsafe_b64encode(key.sign(_signed_text(subject, ts, body))).decode()
    return {REQUESTER_HEADER: key.public, REQUESTER_TS_HEADER: ts, REQUESTER_SIG_HEADER: sig}


def requester_of(
    headers: Mapping[str, str] | None, subject: str, body: bytes, now: float
) -> tuple[str, bool]:
    """(identity, verified) of a control request: the signer's public key when the
    signature verifies and is fresh, else what it claims (or "anonymous") unverified."""
    if not headers or not headers.get(REQUESTER_HEADER):
        return "anonymous", False
    public = headers[REQUESTER_HEADER]
    ts, sig = headers.get(REQUESTER_TS_HEADER, ""), headers.get(REQUESTER_SIG_HEADER, "")
    try:
        if abs(now - float(ts)) > REQUESTER_SKEW_S:
            return public, False
        verify = natsjwt.verify_key(public, public_prefix(public), "an nkey public key")
        verify.verify(_signed_text(subject, ts, body), base64.urlsafe_b64decode(sig))
    except Exception:  # malformed, wrong key, bad signature: a claim, not an identity
        return public, False
    return public, True


def public_prefix(public: str) -> int:
    """The nkey prefix byte of a public key by its first letter (U user, A account …)."""
    prefixes = {
        "U": nkeys.PREFIX_BYTE_USER,
        "A": nkeys.PREFIX_BYTE_ACCOUNT,
        "O": nkeys.PREFIX_BYTE_OPERATOR,
        "N": nkeys.PREFIX_BYTE_SERVER,
    }
    if not public or public[0] not in prefixes:
        raise ValueError(f"{public[:12]!r} is not an nkey public key")
    return prefixes[public[0]]
