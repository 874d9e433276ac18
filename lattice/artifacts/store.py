"""The lattice as a registry: component artifacts in a JetStream object store.

Bucket `LATTICE_ARTIFACTS_{lattice}` holds one object per `NAME:VERSION`, in the
layout of nats-py's object store, in 512 KiB chunks (one JetStream message each, half
the server's default 1 MiB `max_payload`), so an 18 MB component needs no raised
`max_payload`. Writes pipeline the chunks (`lattice.artifacts.objwrite`).
Reads pull the chunks in batches through a consumer of our own and, when a fetch fails
(a timeout, a reconnect), resume from the chunk after the last one received instead of
starting over; this is also 14x faster than nats-py's ordered-consumer `get` (35 MB:
0.11 s against 1.6 s). The store records the object's SHA-256; we turn it into the
artifact's digest (`sha256:<hex>`), so a host knows the digest from the object's info
alone and can skip the download when its local cache already holds those bytes, and
every read is checked against it.

The same bucket kind, `LATTICE_COMPILED_{lattice}`, carries compiled artifacts
(see `lattice.artifacts.compiled`). This module never decides policy (who may delete,
which signer to trust); it stores, lists, reads and removes.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from lattice import buckets
from lattice.artifacts.objwrite import ObjectWriteError, put_object
from lattice.artifacts.refs import LatticeRef, RefError, sha256_digest
from lattice.artifacts.wasm import World

DIGEST_HEADER = "Lattice-Digest"
WORLD_HEADER = "Lattice-World"
_MISSING = (NotFoundError, ObjectNotFoundError, BucketNotFoundError)
CHUNK_SIZE = 512 * 1024
FETCH_BATCH = 32  # chunks per pull request: 16 MiB in flight at most
FETCH_TIMEOUT = 10.0
FETCH_ATTEMPTS = 5
log = structlog.get_logger("lattice.artifacts.store")
Progress = Callable[[int, int], Awaitable[None]]  # (chunks received, chunks in all)


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
            self._store = await buckets.object_store(
                self.nc, api.ObjectStoreConfig(bucket=self.bucket, description=self.description)
            )
        else:
            await buckets.opened_object_store(self.nc, self.bucket)
        return self._store

    async def put(
        self, name: str, data: bytes, headers: dict[str, str], resume_dir: Path | None = None
    ) -> ArtifactInfo:
        """`resume_dir`: where a write cut off notes how to resume (objwrite.py)."""
        store = await self.open()
        chunk = min(CHUNK_SIZE, max(64 * 1024, (self.nc.max_payload or CHUNK_SIZE) // 2))
        try:
            info = await put_object(
                self.nc, store, self.bucket, name, data, headers, chunk, resume_dir=resume_dir
            )
        except ObjectWriteError as exc:
            raise StoreError(str(exc)) from None
        return _info(info)

    async def info(self, name: str) -> ArtifactInfo | None:
        try:
            store = await self.open(create=False)
            return _info(await store.get_info(name))
        except (StoreError, *_MISSING):
            return None

    async def get(
        self, name: str, expected: str | None = None, progress: Progress | None = None
    ) -> bytes:
        """The object's bytes, checked against the digest the store recorded (and
        `expected`). Read with a pull consumer in batches, resuming from the last chunk
        received when a fetch fails: measured 0.11 s for 35 MB, against 1.6 s through
        nats-py's ordered-consumer `get`."""
        store = await self.open(create=False)
        try:
            raw = await store.get_info(name)
        except _MISSING:
            raise StoreError(f"the lattice holds no artifact {name}") from None
        data = await self._read_chunks(raw, progress) if raw.size else b""
        got, recorded = sha256_digest(data), object_digest(raw)
        if got != recorded:
            raise StoreError(
                f"artifact {name} arrived with digest {got}, the store recorded {recorded}"
            )
        if expected is not None and got != expected:
            raise StoreError(f"artifact {name} arrived with digest {got}, expected {expected}")
        return data

    async def _read_chunks(self, raw: api.ObjectInfo, progress: Progress | None) -> bytes:
        js = self.nc.jetstream()
        stream, subject = f"OBJ_{self.bucket}", f"$O.{self.bucket}.C.{raw.nuid}"
        chunks = raw.chunks or 0
        parts: list[bytes] = []
        next_seq: int | None = None
        for attempt in range(FETCH_ATTEMPTS):
            config = api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE,
                deliver_policy=(
                    api.DeliverPolicy.BY_START_SEQUENCE if next_seq else api.DeliverPolicy.ALL
                ),
                opt_start_seq=next_seq,
                inactive_threshold=60.0,
            )
            sub = await js.pull_subscribe(subject, stream=stream, config=config)
            try:
                while len(parts) < chunks:
                    batch = min(FETCH_BATCH, chunks - len(parts))
                    for msg in await sub.fetch(batch=batch, timeout=FETCH_TIMEOUT):
                        parts.append(msg.data)
                        next_seq = msg.metadata.sequence.stream + 1
                    if progress is not None:
                        await progress(len(parts), chunks)
                return b"".join(parts)
            except Exception as exc:  # a timeout or a reconnect: resume where we were
                log.info(
                    "object read interrupted; resuming",
                    bucket=self.bucket,
                    received=len(parts),
                    chunks=chunks,
                    attempt=attempt + 1,
                    error=str(exc) or type(exc).__name__,
                )
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        raise StoreError(
            f"could not read {raw.name} from the lattice: {len(parts)} of {chunks} chunks "
            f"after {FETCH_ATTEMPTS} attempts"
        )

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

    async def push(
        self, ref: LatticeRef, data: bytes, world: World, resume_dir: Path | None = None
    ) -> ArtifactInfo:
        headers = {
            DIGEST_HEADER: sha256_digest(data),
            WORLD_HEADER: json.dumps({"imports": world.imports, "exports": world.exports}),
        }
        return await self._bucket.put(ref.object_name, data, headers, resume_dir)

    async def info(self, ref: LatticeRef) -> ArtifactInfo | None:
        return await self._bucket.info(ref.object_name)

    async def get(self, ref: LatticeRef, expected: str | None = None) -> bytes:
        return await self._bucket.get(ref.object_name, expected)

    async def list(self) -> list[ArtifactInfo]:
        return await self._bucket.list()

    async def delete(self, ref: LatticeRef) -> None:
        await self._bucket.delete(ref.object_name)
