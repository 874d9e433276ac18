"""What the artifact commands do, as library calls: push, pull, inspect, list, delete.

The CLI (`lattice.artifacts.commands`) is a thin layer over these. Deleting refuses an
artifact that a running component or a deployed manifest uses, and says which one —
found from every host's inventory and the controller's stored manifests.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from lattice import paths
from lattice.artifacts import claims, refs
from lattice.artifacts.fetch import Fetcher, FetchPolicy
from lattice.artifacts.oci import Credentials, OciClient
from lattice.artifacts.refs import LatticeRef, OciRef, RefError, sha256_digest
from lattice.artifacts.store import ArtifactStore, StoreError
from lattice.artifacts.wasm import World, check_component, world
from lattice.kvkeys import bucket_keys

CONTROLLER_APPS_BUCKET = "CONTROLLER_APPS_{lattice}"


@dataclass(frozen=True)
class Described:
    ref: str
    digest: str
    size: int
    world: World | None
    extra: dict[str, Any]
    signature: dict[str, Any] | str | None = "not read (pull the component to check it)"
    """The claims (`lattice sign`), None when unsigned, or why they are invalid."""

    def as_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "digest": self.digest,
            "size": self.size,
            "imports": list(self.world.imports) if self.world else [],
            "exports": list(self.world.exports) if self.world else [],
            "signature": self.signature,
            **self.extra,
        }


async def read_file(path: Path) -> bytes:
    try:
        return await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise RefError(f"cannot read {path}: {exc.strerror or exc}") from None


def describe_bytes(ref: str, data: bytes, **extra: Any) -> Described:
    check_component(data, ref)
    try:
        found = claims.read(data)
        signature: dict[str, Any] | str | None = found.as_json() if found else None
    except claims.ClaimsError as exc:
        signature = f"invalid: {exc}"
    return Described(ref, sha256_digest(data), len(data), world(data), extra, signature)


def resume_dir() -> Path:
    """Where an interrupted `lattice push lattice://…` notes how to resume: under the
    data dir (`LATTICE_DATA_DIR`, as `lattice up --data-dir` sets it, or the default)."""
    base = os.environ.get("LATTICE_DATA_DIR")
    return (Path(base) if base else paths.default_data_dir()) / "push-resume"


async def push(
    ref: str,
    file: Path,
    *,
    nc: NATS | None,
    lattice: str,
    policy: FetchPolicy,
    credentials: Credentials | None = None,
) -> Described:
    parsed = refs.parse(ref, allow_latest=policy.allow_latest)
    data = await read_file(file)
    check_component(data, str(file))
    if isinstance(parsed, LatticeRef):
        if nc is None:
            raise RefError(f"{ref}: pushing to the lattice needs a NATS connection")
        w = world(data)
        info = await ArtifactStore(nc, lattice).push(parsed, data, w, resume_dir())
        return Described(str(parsed), info.digest, info.size, w, {"stored_in": "lattice"})
    if isinstance(parsed, OciRef):
        client = OciClient(
            insecure=policy.insecure_registries,
            credentials={parsed.registry: credentials} if credentials else None,
        )
        manifest_digest, w = await client.push(parsed, data)
        return Described(
            f"{parsed}@{manifest_digest}",
            sha256_digest(data),
            len(data),
            w,
            {"manifest_digest": manifest_digest, "stored_in": parsed.registry},
        )
    raise RefError(f"{ref}: push to lattice://NAME:VERSION or an OCI reference")


async def pull(
    ref: str,
    *,
    nc: NATS | None,
    lattice: str,
    policy: FetchPolicy,
    credentials: Credentials | None = None,
) -> tuple[Described, bytes]:
    parsed = refs.parse(ref, allow_latest=policy.allow_latest)
    registry = parsed.registry if isinstance(parsed, OciRef) else ""
    fetcher = Fetcher(
        nc=nc,
        lattice=lattice,
        policy=policy,
        credentials=lambda r: credentials if r == registry else None,
    )
    got = await fetcher.fetch(ref)
    return describe_bytes(ref, got.data, source=got.source), got.data


async def inspect(
    target: str,
    *,
    nc: NATS | None,
    lattice: str,
    policy: FetchPolicy,
    credentials: Credentials | None = None,
) -> Described:
    """A local file, a lattice artifact (info only) or an OCI manifest + config."""
    path = Path(target[len("file://") :] if target.startswith("file://") else target)
    local = "://" not in target or target.startswith("file://")
    if local and await asyncio.to_thread(path.is_file):
        return describe_bytes(str(path), await read_file(path))
    parsed = refs.parse(target, allow_latest=policy.allow_latest)
    if isinstance(parsed, LatticeRef):
        if nc is None:
            raise RefError(f"{target}: inspecting a lattice artifact needs a NATS connection")
        info = await ArtifactStore(nc, lattice).info(parsed)
        if info is None:
            raise StoreError(f"the lattice holds no artifact {parsed.object_name}")
        return Described(
            str(parsed), info.digest, info.size, info.world, {"modified": info.modified}
        )
    if isinstance(parsed, OciRef):
        client = OciClient(
            insecure=policy.insecure_registries,
            credentials={parsed.registry: credentials} if credentials else None,
        )
        manifest_digest, layer, config = await client.pull_manifest(parsed)
        comp = config.get("component") if isinstance(config.get("component"), dict) else {}
        w = World(tuple(comp.get("imports", ())), tuple(comp.get("exports", ()))) if comp else None
        return Described(
            f"{parsed.with_digest(manifest_digest)}",
            layer.digest,
            layer.size,
            w,
            {"manifest_digest": manifest_digest, "layer_media_type": layer.media_type},
        )
    raise RefError(f"{target}: no such file")


# -- deleting, and who holds an artifact ----------------------------------------------


def _same(image: str, target: LatticeRef) -> bool:
    try:
        return refs.parse(image, allow_latest=True) == target
    except RefError:
        return False


async def holders(nc: NATS, lattice: str, target: LatticeRef) -> list[str]:
    """Who uses `target`: running components (every host's inventory) and deployed
    manifests (the controller's store). Empty when nobody does."""
    from lattice.client import LatticeClient

    found: list[str] = []
    client = LatticeClient(nc, lattice, timeout=5.0)
    for ping in await client.hosts(wait=1.0):
        try:
            inv = await client.inventory(ping.id)
        except Exception:
            continue
        for comp in inv.components:
            if _same(comp.image_ref, target):
                found.append(
                    f"component {comp.id} running on host {inv.friendly_name} ({inv.host_id})"
                )
    found.extend(await _manifest_holders(nc, lattice, target))
    return found


async def _manifest_holders(nc: NATS, lattice: str, target: LatticeRef) -> list[str]:
    js = nc.jetstream()
    try:
        bucket = CONTROLLER_APPS_BUCKET.format(lattice=lattice)
        kv = await js.key_value(bucket)
        keys = await bucket_keys(nc, bucket)
    except Exception:  # no controller ever ran here, or no apps yet
        return []
    found: list[str] = []
    for key in keys:
        try:
            entry = await kv.get(key)
            record = json.loads(entry.value or b"{}")
        except Exception:
            continue
        deployed = record.get("deployed")
        for version in record.get("versions", []):
            if version.get("version") != deployed:
                continue
            spec = version.get("manifest", {}).get("spec", {})
            for comp in spec.get("components", []):
                image = comp.get("properties", {}).get("image", "")
                if _same(image, target):
                    name, part = record.get("name"), comp.get("name")
                    found.append(f"application {name} {deployed} (component {part})")
    return found


async def delete(nc: NATS, lattice: str, ref: str) -> None:
    parsed = refs.parse(ref)
    if not isinstance(parsed, LatticeRef):
        raise RefError(f"{ref}: only lattice://NAME:VERSION artifacts can be deleted here")
    store = ArtifactStore(nc, lattice)
    if await store.info(parsed) is None:
        raise StoreError(f"the lattice holds no artifact {parsed.object_name}")
    users = await holders(nc, lattice, parsed)
    if users:
        raise StoreError(f"{parsed} is in use and was not deleted: " + "; ".join(users))
    await store.delete(parsed)


async def list_artifacts(nc: NATS, lattice: str) -> list[dict[str, Any]]:
    return [a.as_json() for a in await ArtifactStore(nc, lattice).list()]
