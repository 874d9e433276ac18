"""Manifests, every version, what is deployed, and what happened: JetStream KV.

One entry per application in `CONTROLLER_APPS_{lattice}` holds its versions (the
manifest as submitted, parsed), the deployed version (or none) and a short history.
Every write is compare-and-set on the entry's revision and retried on conflict, so two
controller replicas answering API calls at once cannot lose each other's writes. The
data survives a controller and a NATS restart (JetStream keeps it on disk).

A manifest without `metadata.annotations.version` gets `v{n}`. Putting a version that
exists with the same content changes nothing; with different content it is refused, so
a version always means one manifest — which is what makes rollback (deploying an older
version) trustworthy.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from lattice import buckets
from lattice.controller.manifest import Manifest
from lattice.kvkeys import bucket_keys

MAX_VERSIONS = 100
MAX_HISTORY = 200


class StoreError(ValueError):
    """A request the store refuses; the message says why."""


@dataclass
class AppRecord:
    name: str
    versions: list[dict[str, Any]] = field(default_factory=list)
    deployed: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "versions": self.versions,
                "deployed": self.deployed,
                "history": self.history,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AppRecord:
        raw = json.loads(data)
        return cls(
            raw["name"], raw.get("versions", []), raw.get("deployed"), raw.get("history", [])
        )

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.versions[-1] if self.versions else None

    def find(self, version: str | None) -> dict[str, Any] | None:
        if version is None:
            return self.latest
        return next((v for v in self.versions if v["version"] == version), None)

    def manifest(self, version: str | None = None) -> Manifest | None:
        entry = self.find(version)
        return Manifest.model_validate(entry["manifest"]) if entry else None

    def note(self, action: str, version: str | None, **extra: Any) -> None:
        self.history.append({"at": time.time(), "action": action, "version": version, **extra})
        del self.history[:-MAX_HISTORY]

    def summary(self) -> dict[str, Any]:
        latest = self.latest or {}
        return {
            "name": self.name,
            "latest_version": latest.get("version"),
            "deployed_version": self.deployed,
            "description": (
                latest.get("manifest", {})
                .get("metadata", {})
                .get("annotations", {})
                .get("description")
            ),
            "versions": len(self.versions),
        }


class ManifestStore:
    def __init__(self, nc: NATS, lattice: str) -> None:
        self.nc = nc
        self.lattice = lattice
        self._kv: KeyValue | None = None

    @property
    def bucket(self) -> str:
        return f"CONTROLLER_APPS_{self.lattice}"

    async def start(self) -> None:
        self._kv = await buckets.key_value(self.nc, api.KeyValueConfig(self.bucket, history=1))

    @staticmethod
    def _key(name: str) -> str:
        return f"app.{name}"

    async def _read(self, name: str) -> tuple[AppRecord | None, int | None]:
        assert self._kv is not None
        try:
            entry = await self._kv.get(self._key(name))
        except (KeyNotFoundError, NotFoundError):
            return None, None
        if not entry.value:
            return None, None
        return AppRecord.from_json(entry.value), entry.revision

    async def get(self, name: str) -> AppRecord:
        record, _ = await self._read(name)
        if record is None:
            raise StoreError(f"no application named {name!r}")
        return record

    async def _change(self, name: str, mutate: Any, *, create: bool = False) -> Any:
        """Read, mutate, write with compare-and-set; retried when another writer wins."""
        assert self._kv is not None
        for _ in range(10):
            record, revision = await self._read(name)
            if record is None:
                if not create:
                    raise StoreError(f"no application named {name!r}")
                record = AppRecord(name)
            result = mutate(record)
            try:
                if revision is None:
                    await self._kv.create(self._key(name), record.to_json())
                else:
                    await self._kv.update(self._key(name), record.to_json(), last=revision)
                return result
            except KeyWrongLastSequenceError:
                continue
        raise StoreError(f"application {name!r} kept changing; try again")

    async def put(self, manifest: Manifest, raw: dict[str, Any]) -> tuple[str, str, int]:
        """Store a version; returns (result, version, number of versions).
        result is "created" (a new application), "newversion" or "unchanged"."""

        def mutate(rec: AppRecord) -> tuple[str, str, int]:
            version = manifest.version or f"v{len(rec.versions) + 1}"
            existing = rec.find(version) if rec.versions else None
            if existing is not None:
                if existing["manifest"] == raw:
                    return "unchanged", version, len(rec.versions)
                raise StoreError(
                    f"version {version} of {rec.name} exists with other content; "
                    "set a new metadata.annotations.version"
                )
            result = "created" if not rec.versions else "newversion"
            rec.versions.append({"version": version, "manifest": raw, "stored_at": time.time()})
            del rec.versions[:-MAX_VERSIONS]
            rec.note("put", version)
            return result, version, len(rec.versions)

        return await self._change(manifest.name, mutate, create=True)

    async def deploy(self, name: str, version: str | None = None) -> str:
        def mutate(rec: AppRecord) -> str:
            entry = rec.find(version)
            if entry is None:
                known = ", ".join(v["version"] for v in rec.versions) or "none"
                raise StoreError(f"{name} has no version {version!r}; versions: {known}")
            action = "rollback" if rec.versions.index(entry) < len(rec.versions) - 1 else "deploy"
            rec.deployed = entry["version"]
            rec.note(action, entry["version"])
            return str(entry["version"])

        return await self._change(name, mutate)

    async def undeploy(self, name: str) -> None:
        def mutate(rec: AppRecord) -> None:
            if rec.deployed is None:
                raise StoreError(f"{name} is not deployed")
            rec.note("undeploy", rec.deployed)
            rec.deployed = None

        await self._change(name, mutate)

    async def record(self, name: str, action: str, **extra: Any) -> None:
        """Add a history entry for what the controller did (e.g. `reconcile` with the
        stops it sent and their causes); an app deleted meanwhile is skipped."""

        def mutate(rec: AppRecord) -> None:
            rec.note(action, rec.deployed, **extra)

        with contextlib.suppress(StoreError):
            await self._change(name, mutate)

    async def delete(self, name: str, version: str | None = None) -> None:
        """Delete one version, or the whole application (which must be undeployed)."""
        assert self._kv is not None
        if version is None:
            record = await self.get(name)
            if record.deployed is not None:
                raise StoreError(f"{name} is deployed ({record.deployed}); undeploy it first")
            await self._kv.delete(self._key(name))
            return

        def mutate(rec: AppRecord) -> None:
            if rec.deployed == version:
                raise StoreError(f"version {version} of {name} is deployed; undeploy it first")
            if rec.find(version) is None:
                raise StoreError(f"{name} has no version {version!r}")
            rec.versions = [v for v in rec.versions if v["version"] != version]
            rec.note("delete-version", version)

        await self._change(name, mutate)

    async def all(self) -> list[AppRecord]:
        """Every application, read in full, or `StoreError` — never a partial list.

        The keys come from one stream-info request (`lattice.kvkeys`), not from
        nats-py's `kv.keys()`: that creates an ephemeral consumer per call which
        lives on the server for five minutes, so a controller listing once a second
        piled up ~1000 of them and the server refused the next one. An empty list here
        means "no application", so a failed read must raise instead: the planner would
        read it as "everything undeployed" and stop every managed workload.
        """
        assert self._kv is not None
        try:
            keys = await bucket_keys(self.nc, self.bucket)
        except Exception as exc:
            raise StoreError(
                f"cannot list the applications in {self.bucket}: {exc or type(exc).__name__}"
            ) from None
        records = []
        for key in keys:
            try:
                rec, _ = await self._read(key.removeprefix("app."))
            except Exception as exc:
                raise StoreError(
                    f"cannot read {key} from {self.bucket}: {exc or type(exc).__name__}"
                ) from None
            if rec is not None:
                records.append(rec)
        return sorted(records, key=lambda r: r.name)
