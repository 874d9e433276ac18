"""The lattice as a registry: component artifacts in a JetStream object store.

Bucket `LATTICE_ARTIFACTS_{lattice}` holds one object per `NAME:VERSION`. nats-py's
object store splits an object into chunks (one JetStream message each; we write 512
KiB chunks, half the server's default 1 MiB `max_payload`, measured 2.4x faster to read
than nats-py's default 128 KiB), so an 18 MB component needs no raised `max_payload`,
and a reader's ordered consumer picks up where it was after a reconnect (the transfer
resumes instead of restarting). The
store records the object's SHA-256; we turn it into the artifact's digest
(`sha256:<hex>`), so a host knows the digest from the object's info alone and can
skip the download when its local cache already holds those bytes.

The same bucket kind, `LATTICE_COMPILED_{lattice}`, carries compiled artifacts
(see `lattice.artifacts.compiled`). This module never decides policy (who may delete,
which signer to trust); it stores, lists, reads and removes.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from lattice.artifacts.refs import LatticeRef, RefError, sha256_digest
from lattice.artifacts.wasm import World

DIGEST_HEADER = "Lattice-Digest"
WORLD_HEADER = "Lattice-World"
_MISSING = (NotFoundError, ObjectNotFoundError, BucketNotFoundError)
CHUNK_SIZE = 512 * 1024


class StoreError(RefError):
    """The lattice store refused or does not hold what was asked; the message says which."""


def artifacts_bucket(lattice: str) -> str:
    return f"LATTICE_ARTIFACTS_{lattice}"


def compiled_bucket(lattice: str) -> str:
    return f"LATTICE_COMPILED_{lattice}"


def object_digest(info: api.ObjectInfo) -> str:
    """`SHA-256=<base64url>` as the object store keeps it → `sha256:<hex>`."""
    raw = (info.digest or "").split("=", 1)[-1]
    raw += "=" * (-len(raw) % 4)
    return "sha256:" + base64.urlsafe_b64decode(raw).hex()


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    digest: str
    size: int
    modified: str
    headers: dict[str, str]

    @property
    def world(self) -> World | None:
        raw = self.headers.get(WORLD_HEADER)
        if not raw:
            return None
        try:
            body = json.loads(raw)
            return World(tuple(body.get("imports", ())), tuple(body.get("exports", ())))
        except (ValueError, AttributeError):
            return None

    def as_json(self) -> dict[str, Any]:
        w = self.world
        return {
            "name": self.name,
            "ref": f"lattice://{self.name}",
            "digest": self.digest,
            "size": self.size,
            "modified": self.modified,
            "imports": list(w.imports) if w else [],
            "exports": list(w.exports) if w else [],
        }


def _info(info: api.ObjectInfo) -> ArtifactInfo:
    headers = {k: (v[0] if isinstance(v, list) else v) for k, v in (info.headers or {}).items()}
    return ArtifactInfo(info.name, object_digest(info), info.size or 0, info.mtime or "", headers)


class _Sink(io.RawIOBase):
    """A writable nats-py `get(writeinto=…)` accepts; avoids O(n²) bytes concatenation."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.parts.append(bytes(b))
        return len(b)


class ObjectBucket:
    """One object-store bucket of the lattice, opened (or created) on first use."""

    def __init__(self, nc: NATS, bucket: str, description: str) -> None:
        self.nc = nc
        self.bucket = bucket
        self.description = description
        self._store: ObjectStore | None = None

    async def open(self, create: bool = True) -> ObjectStore:
        if self._store is not None:
            return self._store
        js = self.nc.jetstream()
        try:
            self._store = await js.object_store(self.bucket)
        except _MISSING:
            if not create:
                raise StoreError(f"the lattice holds no artifacts yet ({self.bucket})") from None
            self._store = await js.create_object_store(
                self.bucket,
                config=api.ObjectStoreConfig(bucket=self.bucket, description=self.description),
            )
        return self._store

    async def put(self, name: str, data: bytes, headers: dict[str, str]) -> ArtifactInfo:
        store = await self.open()
        chunk = min(CHUNK_SIZE, max(64 * 1024, (self.nc.max_payload or CHUNK_SIZE) // 2))
        meta = api.ObjectMeta(
            name=name, headers=headers, options=api.ObjectMetaOptions(max_chunk_size=chunk)
        )
        info = await store.put(name, data, meta=meta)
        return _info(info)

    async def info(self, name: str) -> ArtifactInfo | None:
        try:
            store = await self.open(create=False)
            return _info(await store.get_info(name))
        except (StoreError, *_MISSING):
            return None

    async def get(self, name: str, expected: str | None = None) -> bytes:
        store = await self.open(create=False)
        sink = _Sink()
        try:
            await store.get(name, writeinto=sink)  # type: ignore[arg-type]
        except _MISSING:
            raise StoreError(f"the lattice holds no artifact {name}") from None
        data = b"".join(sink.parts)
        got = sha256_digest(data)
        if expected is not None and got != expected:
            raise StoreError(f"artifact {name} arrived with digest {got}, expected {expected}")
        return data

    async def list(self) -> list[ArtifactInfo]:
        try:
            store = await self.open(create=False)
            entries = await store.list(ignore_deletes=True)
        except (StoreError, *_MISSING):
            return []
        return sorted((_info(e) for e in entries if not e.deleted), key=lambda a: a.name)

    async def delete(self, name: str) -> None:
        store = await self.open(create=False)
        try:
            await store.delete(name)
        except _MISSING:
            raise StoreError(f"the lattice holds no artifact {name}") from None


class ArtifactStore:
    """Components of a lattice under `lattice://NAME:VERSION`."""

    def __init__(self, nc: NATS, lattice: str) -> None:
        self.lattice = lattice
        self._bucket = ObjectBucket(nc, artifacts_bucket(lattice), f"components of {lattice}")

    async def push(self, ref: LatticeRef, data: bytes, world: World) -> ArtifactInfo:
        headers = {
            DIGEST_HEADER: sha256_digest(data),
            WORLD_HEADER: json.dumps({"imports": world.imports, "exports": world.exports}),
        }
        return await self._bucket.put(ref.object_name, data, headers)

    async def info(self, ref: LatticeRef) -> ArtifactInfo | None:
        return await self._bucket.info(ref.object_name)

    async def get(self, ref: LatticeRef, expected: str | None = None) -> bytes:
        return await self._bucket.get(ref.object_name, expected)

    async def list(self) -> list[ArtifactInfo]:
        return await self._bucket.list()

    async def delete(self, ref: LatticeRef) -> None:
        await self._bucket.delete(ref.object_name)
