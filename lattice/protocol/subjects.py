"""Subject names for the control interface, events and invocations.

Control:     wasmbus.ctl.v1.{lattice}.{noun}.{verb}[.{host_id|name}]
Events:      wasmbus.evt.{lattice}.{event_type}
Invocations: {lattice}.{component_id}.rpc.{namespace}:{package}/{interface}.{function}

Subject tokens may not contain '.', '*', '>' or white space; identifiers that become
tokens are checked with `check_token` before use so a bad id is refused with a message
instead of silently subscribing to the wrong thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CTL_PREFIX = "wasmbus.ctl.v1"
EVT_PREFIX = "wasmbus.evt"

_TOKEN = re.compile(r"^[^.\s*>]+$")
_HOST_ID = re.compile(r"^N[A-Z2-7]{55}$")


class SubjectError(ValueError):
    """A name that cannot be used as a subject token."""


def check_token(value: str, what: str) -> str:
    """Return `value` if it can stand as one subject token, else raise naming `what`."""
    if not isinstance(value, str) or not value:
        raise SubjectError(f"{what} must be a non-empty string")
    if not _TOKEN.match(value):
        raise SubjectError(
            f"{what} {value!r} cannot be used in a NATS subject "
            "(no '.', '*', '>' or white space allowed)"
        )
    return value


def is_host_id(value: str) -> bool:
    return bool(_HOST_ID.match(value))


def ctl(lattice: str, noun: str, verb: str, target: str | None = None) -> str:
    parts = [CTL_PREFIX, lattice, noun, verb]
    if target is not None:
        parts.append(target)
    return ".".join(parts)


def ctl_wildcard(lattice: str) -> str:
    return f"{CTL_PREFIX}.{lattice}.>"


@dataclass(frozen=True, slots=True)
class CtlSubject:
    """A parsed control subject."""

    lattice: str
    noun: str
    verb: str
    target: str | None

    @property
    def operation(self) -> str:
        return f"{self.noun}.{self.verb}"


def parse_ctl(subject: str) -> CtlSubject | None:
    """Split a control subject; None when it is not one (too short or wrong prefix)."""
    parts = subject.split(".")
    if len(parts) < 6 or ".".join(parts[:3]) != CTL_PREFIX:
        return None
    target = ".".join(parts[6:]) if len(parts) > 6 else None
    return CtlSubject(lattice=parts[3], noun=parts[4], verb=parts[5], target=target)


def event(lattice: str, event_type: str) -> str:
    return f"{EVT_PREFIX}.{lattice}.{event_type}"


def events_wildcard(lattice: str) -> str:
    return f"{EVT_PREFIX}.{lattice}.>"


def strip_version(interface: str) -> str:
    """`wasi:keyvalue/store@0.2.0-draft` → `wasi:keyvalue/store` (versions hold dots)."""
    return interface.split("@", 1)[0]


def rpc(lattice: str, component_id: str, interface: str | None, function: str) -> str:
    """Invocation subject; `interface` None means a function exported at the world level."""
    if interface is None:
        return f"{lattice}.{component_id}.rpc.{function}"
    return f"{lattice}.{component_id}.rpc.{strip_version(interface)}.{function}"


def rpc_wildcard(lattice: str, component_id: str) -> str:
    return f"{lattice}.{component_id}.rpc.>"


def rpc_operation(subject: str, lattice: str, component_id: str) -> str:
    """The part after `{lattice}.{component_id}.rpc.`: `ns:pkg/iface.fn` or `fn`."""
    prefix = f"{lattice}.{component_id}.rpc."
    return subject[len(prefix) :] if subject.startswith(prefix) else subject
