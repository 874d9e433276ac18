"""Artifact references and digests: parsing and policy, no I/O.

A reference names where a component's bytes come from:

- `file:///abs/path.wasm` or a plain path, `http(s)://…` — as before;
- `lattice://NAME:VERSION` — the lattice's own object store (NATS JetStream);
- `oci://registry/repo:tag`, `registry/repo:tag`, `registry/repo@sha256:…` — an OCI
  registry (the forms wadm manifests carry).

Every reference resolves to a digest (`sha256:<64 hex>`) before bytes are trusted.
Tags that move (`:latest`, or no tag at all) are refused unless the caller allows
them, because two hosts resolving the same reference at different times could run
different code.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlparse

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# OCI distribution spec: repository path components and tags
_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_LATTICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LATTICE_VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$")


class RefError(ValueError):
    """A reference that cannot be parsed or that policy refuses; the message says why."""


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str, what: str = "digest") -> str:
    if not DIGEST_RE.match(digest):
        raise RefError(f"{what} {digest!r} is not of the form sha256:<64 lowercase hex>")
    return digest


@dataclass(frozen=True)
class FileRef:
    path: str

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class HttpRef:
    url: str

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class LatticeRef:
    """`lattice://NAME:VERSION`: an artifact in the lattice's JetStream object store."""

    name: str
    version: str

    @property
    def object_name(self) -> str:
        return f"{self.name}:{self.version}"

    def __str__(self) -> str:
        return f"lattice://{self.name}:{self.version}"


@dataclass(frozen=True)
class OciRef:
    """An OCI reference; `tag` or `digest` (or both) is set after policy checks."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What the distribution API's `/manifests/{reference}` takes: digest beats tag."""
        return self.digest or self.tag or "latest"

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    def with_digest(self, digest: str) -> OciRef:
        return OciRef(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


ArtifactRef = FileRef | HttpRef | LatticeRef | OciRef


def parse(ref: str, *, allow_latest: bool = False) -> ArtifactRef:
    """The reference `ref` as one of the four kinds; refuses malformed ones by name."""
    ref = ref.strip()
    if not ref:
        raise RefError("empty artifact reference")
    parsed = urlparse(ref)
    scheme = parsed.scheme.lower()
    if scheme == "lattice":
        return parse_lattice(ref)
    if scheme == "oci":
        return parse_oci(ref[len("oci://") :], ref, allow_latest=allow_latest)
    if scheme in ("http", "https"):
        return HttpRef(ref)
    if scheme == "file":
        return FileRef(ref)
    if scheme and "/" not in scheme and ref[len(scheme) : len(scheme) + 3] == "://":
        raise RefError(
            f"{ref}: unsupported reference scheme {scheme!r} "
            "(use file://, http(s)://, lattice://NAME:VERSION or oci://registry/repo:tag)"
        )
    if looks_like_oci(ref):
        return parse_oci(ref, ref, allow_latest=allow_latest)
    return FileRef(ref)


def looks_like_oci(ref: str) -> bool:
    """`registry/repo[:tag|@digest]`: a first path part that names a host (has a dot or a
    port, or is localhost) — the rule container tools use. `./x.wasm`, `/abs/x.wasm` and
    `dir/x.wasm` stay file paths."""
    if "://" in ref or ref.startswith(("/", ".", "~")) or ref.endswith(".wasm"):
        return False
    first, sep, _ = ref.partition("/")
    if not sep:
        return False
    return "." in first or ":" in first or first == "localhost"


def parse_lattice(ref: str) -> LatticeRef:
    body = ref[len("lattice://") :]
    name, sep, version = body.rpartition(":")
    if not sep or not name:
        raise RefError(f"{ref}: a lattice reference is lattice://NAME:VERSION")
    if not _LATTICE_NAME.match(name) or "/" in name:
        raise RefError(
            f"{ref}: artifact name {name!r} may hold letters, digits, '.', '_', '-' "
            "and must start with a letter or digit"
        )
    if not _LATTICE_VERSION.match(version):
        raise RefError(f"{ref}: version {version!r} may hold letters, digits, '.', '_', '+', '-'")
    if version == "latest":
        raise RefError(f"{ref}: 'latest' is not a version; name one (e.g. 0.1.0)")
    return LatticeRef(name, version)


def parse_oci(body: str, original: str, *, allow_latest: bool = False) -> OciRef:
    if "://" in body:
        raise RefError(
            f"{original}: OCI references have no URL scheme inside (oci://host/repo:tag)"
        )
    registry, sep, rest = body.partition("/")
    if not sep or not rest or not registry:
        raise RefError(f"{original}: an OCI reference is registry/repository:tag")
    digest: str | None = None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        check_digest(digest, f"{original}: digest")
    tag: str | None = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, _, tag = rest.rpartition(":")
        if not _TAG.match(tag):
            raise RefError(f"{original}: tag {tag!r} is not a valid OCI tag")
    for part in rest.split("/"):
        if not _REPO_COMPONENT.match(part):
            raise RefError(
                f"{original}: repository part {part!r} must be lowercase letters, digits "
                "and single '.', '_' or '-' separators"
            )
    if digest is None and not allow_latest and tag in (None, "latest"):
        what = "has no tag" if tag is None else "uses the tag 'latest'"
        raise RefError(
            f"{original} {what}, which can name different bytes on each host; pin a tag or "
            "a digest (registry/repo:1.2.3 or @sha256:…), or allow it with --allow-latest"
        )
    return OciRef(registry.lower(), rest, tag, digest)
