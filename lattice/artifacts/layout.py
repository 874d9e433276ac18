"""The OCI artifact layout of a Wasm component: building it and checking one. Pure.

What we write is the CNCF TAG Runtime "Wasm OCI Artifact" layout: an image manifest
whose config has media type `application/vnd.wasm.config.v0+json` (`architecture:
wasm`, `os: wasip2`, `layerDigests`, and the component's world) and exactly one
`application/wasm` layer holding the component's bytes.

What we read is that layout plus what wasmCloud v1 hosts accept for components
(`crates/host/src/oci.rs`, `fetch_component`): the legacy wasmCloud layer
`application/vnd.module.wasm.content.layer.v1+wasm` and `application/vnd.oci.image.layer.v1.tar`
(whose bytes wasmCloud, too, takes as the component itself). Anything else is refused
with the media types found, so the user sees at once what the artifact really is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lattice.artifacts.refs import RefError, check_digest, sha256_digest
from lattice.artifacts.wasm import World

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
WASM_CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
WASM_LAYER_MEDIA_TYPE = "application/wasm"
WASMCLOUD_LAYER_MEDIA_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
OCI_TAR_LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
ACCEPTED_LAYER_MEDIA_TYPES = (
    WASM_LAYER_MEDIA_TYPE,
    WASMCLOUD_LAYER_MEDIA_TYPE,
    OCI_TAR_LAYER_MEDIA_TYPE,
)
ACCEPTED_MANIFEST_MEDIA_TYPES = (MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE)
ACCEPT_HEADER = ", ".join(ACCEPTED_MANIFEST_MEDIA_TYPES)


class LayoutError(RefError):
    """A manifest that is not a Wasm component artifact; the message names what it holds."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Artifact:
    """A manifest ready to push: its bytes, the config blob, and the layer descriptor."""

    manifest: bytes
    manifest_digest: str
    config: bytes
    config_descriptor: Descriptor
    layer: Descriptor


def wasm_config(world: World, layer_digest: str, created: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
        "component": {"imports": list(world.imports), "exports": list(world.exports)},
    }
    if created:
        body["created"] = created
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def build(wasm: bytes, world: World, annotations: dict[str, str] | None = None) -> Artifact:
    """The manifest and config that publish `wasm` in the CNCF Wasm OCI layout."""
    layer = Descriptor(WASM_LAYER_MEDIA_TYPE, sha256_digest(wasm), len(wasm))
    config = wasm_config(world, layer.digest)
    config_desc = Descriptor(WASM_CONFIG_MEDIA_TYPE, sha256_digest(config), len(config))
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": WASM_CONFIG_MEDIA_TYPE,
        "config": config_desc.as_json(),
        "layers": [layer.as_json()],
    }
    if annotations:
        body["annotations"] = dict(sorted(annotations.items()))
    manifest = json.dumps(body, separators=(",", ":")).encode()
    return Artifact(manifest, sha256_digest(manifest), config, config_desc, layer)


def descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise LayoutError(f"{where} is not a descriptor object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or not isinstance(size, int):
        raise LayoutError(f"{where} lacks mediaType, digest or size")
    check_digest(digest, f"{where} digest")
    return Descriptor(media_type, digest, size)


def component_layer(manifest: bytes, content_type: str, ref: str) -> Descriptor:
    """The one layer of `manifest` that holds the component, or a refusal naming why."""
    try:
        body = json.loads(manifest)
    except ValueError:
        raise LayoutError(f"{ref}: the registry's manifest is not JSON") from None
    if not isinstance(body, dict):
        raise LayoutError(f"{ref}: the registry's manifest is not a JSON object")
    media_type = body.get("mediaType") or content_type.split(";")[0].strip()
    if media_type == INDEX_MEDIA_TYPE or "manifest.list" in media_type:
        raise LayoutError(
            f"{ref} is an image index ({media_type}), not a Wasm component artifact; "
            "reference one of its manifests by digest"
        )
    if media_type not in ACCEPTED_MANIFEST_MEDIA_TYPES:
        raise LayoutError(f"{ref}: unsupported manifest media type {media_type!r}")
    raw_layers = body.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise LayoutError(f"{ref}: the manifest has no layers")
    layers = [descriptor(x, f"{ref}: layer {i}") for i, x in enumerate(raw_layers)]
    config = body.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    wasm = [d for d in layers if d.media_type in ACCEPTED_LAYER_MEDIA_TYPES]
    found = ", ".join(sorted({d.media_type for d in layers}))
    if not wasm:
        raise LayoutError(
            f"{ref} is not a Wasm component artifact: its layers are {found} "
            f"(config {config_type}); accepted layer media types are "
            + ", ".join(ACCEPTED_LAYER_MEDIA_TYPES)
        )
    if len(layers) != 1:
        raise LayoutError(
            f"{ref} has {len(layers)} layers ({found}); a Wasm component artifact has exactly one"
        )
    return wasm[0]


def read_config(config: bytes) -> dict[str, Any]:
    try:
        body = json.loads(config)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
