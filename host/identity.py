"""Who a host is: an nkey server key pair, a friendly name and its built-in labels."""

from __future__ import annotations

import hashlib
import platform
import sys
from dataclasses import dataclass

import nkeys

_ADJECTIVES = (
    "amber",
    "brisk",
    "calm",
    "dusky",
    "eager",
    "fierce",
    "gentle",
    "hidden",
    "icy",
    "jolly",
    "keen",
    "lively",
    "misty",
    "noble",
    "odd",
    "proud",
    "quiet",
    "rapid",
    "shy",
    "tidy",
)
_NOUNS = (
    "otter",
    "falcon",
    "maple",
    "comet",
    "harbor",
    "willow",
    "ember",
    "glacier",
    "meadow",
    "pine",
    "raven",
    "river",
    "summit",
    "thistle",
    "lynx",
    "heron",
    "cedar",
    "dune",
    "fjord",
)


@dataclass(frozen=True)
class HostIdentity:
    host_id: str
    friendly_name: str
    _seed: bytes

    def sign(self, data: bytes) -> bytes:
        return nkeys.from_seed(self._seed).sign(data)

    def __repr__(self) -> str:  # never show the seed
        return f"HostIdentity(host_id={self.host_id!r}, friendly_name={self.friendly_name!r})"


def new_server_seed() -> str:
    import os

    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_SERVER).decode()


def load_identity(seed: str | None) -> HostIdentity:
    """Identity from an nkey server seed (`SN…`), or a fresh one when `seed` is None."""
    raw = (seed or new_server_seed()).strip().encode()
    try:
        kp = nkeys.from_seed(raw)
        public = kp.public_key.decode()
    except Exception:
        raise ValueError("host seed is not a valid nkey seed") from None
    if not public.startswith("N"):
        raise ValueError("host seed must be a server nkey seed (starting with 'SN')")
    return HostIdentity(public, friendly_name(public), raw)


def friendly_name(host_id: str) -> str:
    digest = hashlib.sha256(host_id.encode()).digest()
    adjective = _ADJECTIVES[digest[0] % len(_ADJECTIVES)]
    noun = _NOUNS[digest[1] % len(_NOUNS)]
    return f"{adjective}-{noun}-{digest[2]:02x}"


def builtin_labels() -> dict[str, str]:
    arch = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    os_name = sys.platform
    os_name = {"darwin": "macos", "win32": "windows"}.get(os_name, os_name)
    family = "windows" if os_name == "windows" else "unix"
    return {"hostcore.arch": arch, "hostcore.os": os_name, "hostcore.osfamily": family}
