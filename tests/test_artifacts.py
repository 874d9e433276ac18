"""Pure parts of lattice.artifacts: references, the OCI layout, component worlds, signing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from host.identity import load_identity
from lattice.artifacts import compiled, layout, oci, refs
from lattice.artifacts.cache import LocalCache
from lattice.artifacts.refs import LatticeRef, OciRef, RefError
from lattice.artifacts.wasm import NotAComponent, World, check_component, world

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("oci://ghcr.io/org/app:1.2.0", OciRef("ghcr.io", "org/app", "1.2.0")),
        ("localhost:5000/echo:0.1.0", OciRef("localhost:5000", "echo", "0.1.0")),
        (f"ghcr.io/org/app@{DIGEST}", OciRef("ghcr.io", "org/app", None, DIGEST)),
        (f"ghcr.io/a/b/c:v1@{DIGEST}", OciRef("ghcr.io", "a/b/c", "v1", DIGEST)),
        ("lattice://echo:0.1.0", LatticeRef("echo", "0.1.0")),
        ("lattice://my.app-x:1.0.0+build.5", LatticeRef("my.app-x", "1.0.0+build.5")),
        ("file:///tmp/x.wasm", refs.FileRef("file:///tmp/x.wasm")),
        ("/tmp/x.wasm", refs.FileRef("/tmp/x.wasm")),
        ("dir/x.wasm", refs.FileRef("dir/x.wasm")),
        ("https://example.com/x.wasm", refs.HttpRef("https://example.com/x.wasm")),
    ],
)
def test_references_parse(ref: str, expected: object) -> None:
    assert refs.parse(ref) == expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("ghcr.io/org/app", "has no tag"),
        ("ghcr.io/org/app:latest", "uses the tag 'latest'"),
        ("oci://ghcr.io/Org/app:1", "repository part 'Org'"),
        ("ghcr.io/org/app@sha256:xyz", "not of the form sha256"),
        ("lattice://echo", "lattice://NAME:VERSION"),
        ("lattice://echo:latest", "'latest' is not a version"),
        ("lattice://bad/name:1", "artifact name"),
        ("s3://bucket/x.wasm", "unsupported reference scheme 's3'"),
        ("", "empty artifact reference"),
    ],
)
def test_bad_references_are_refused_by_name(ref: str, message: str) -> None:
    with pytest.raises(RefError, match=message):
        refs.parse(ref)


def test_latest_is_allowed_only_when_asked() -> None:
    assert refs.parse("ghcr.io/org/app:latest", allow_latest=True).tag == "latest"
    untagged = refs.parse("ghcr.io/org/app", allow_latest=True)
    assert isinstance(untagged, OciRef) and untagged.reference == "latest"
    # a pinned digest never moves, so no tag is fine
    assert refs.parse(f"ghcr.io/org/app@{DIGEST}").pinned


def test_world_reads_names_without_compiling(built: dict[str, Path]) -> None:
    w = world(built["echo"].read_bytes())
    assert "lattice:examples/echo@0.1.0" in w.exports
    assert "lattice:examples/types-demo@0.1.0" in w.exports
    assert any(name.startswith("wasi:cli/environment@") for name in w.imports)
    assert len(w.imports) == len(set(w.imports))


def test_check_component_says_what_the_file_is() -> None:
    with pytest.raises(NotAComponent, match="core WebAssembly module"):
        check_component(b"\0asm\x01\0\0\0", "x.wasm")
    with pytest.raises(NotAComponent, match="not a WebAssembly file"):
        check_component(b"hello world", "x.txt")


def test_layout_is_the_cncf_wasm_artifact() -> None:
    wasm = b"\0asm\x0d\0\x01\0" + b"\0" * 16
    art = layout.build(wasm, World(("wasi:io/poll@0.2.0",), ("lattice:examples/echo@0.1.0",)))
    manifest = json.loads(art.manifest)
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert [x["mediaType"] for x in manifest["layers"]] == ["application/wasm"]
    config = json.loads(art.config)
    assert config["architecture"] == "wasm" and config["os"] == "wasip2"
    assert config["layerDigests"] == [refs.sha256_digest(wasm)]
    assert config["component"]["exports"] == ["lattice:examples/echo@0.1.0"]
    assert refs.sha256_digest(art.manifest) == art.manifest_digest
    layer = layout.component_layer(art.manifest, layout.MANIFEST_MEDIA_TYPE, "r")
    assert layer.digest == refs.sha256_digest(wasm) and layer.size == len(wasm)


def _manifest(*media_types: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": layout.MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": DIGEST,
                "size": 2,
            },
            "layers": [{"mediaType": m, "digest": DIGEST, "size": 1} for m in media_types],
        }
    ).encode()


@pytest.mark.parametrize("media_type", layout.ACCEPTED_LAYER_MEDIA_TYPES)
def test_wasmcloud_media_types_are_accepted(media_type: str) -> None:
    assert layout.component_layer(_manifest(media_type), "", "r").media_type == media_type


def test_other_artifacts_are_refused_naming_their_media_types() -> None:
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    with pytest.raises(
        layout.LayoutError, match=r"layers are application/vnd\.oci\.image\.layer\.v1\.tar\+gzip"
    ) as exc:
        layout.component_layer(_manifest(gz), "", "docker.io/library/nginx:1")
    assert "application/wasm" in str(exc.value)  # and says what would be accepted
    with pytest.raises(layout.LayoutError, match="has 2 layers"):
        layout.component_layer(_manifest("application/wasm", gz), "", "r")
    index = json.dumps({"mediaType": layout.INDEX_MEDIA_TYPE, "manifests": []}).encode()
    with pytest.raises(layout.LayoutError, match="image index"):
        layout.component_layer(index, "", "r")


def test_compiled_artifacts_are_signed_over_digest_key_and_content() -> None:
    me, other = load_identity(None), load_identity(None)
    key = compiled.CompileKey("50.0.1", "x86_64-linux", "epoch1")
    sig = compiled.sign(me.sign, DIGEST, key, b"native code")
    compiled.verify(me.host_id, sig, DIGEST, key, b"native code")
    with pytest.raises(compiled.SignatureError):
        compiled.verify(me.host_id, sig, DIGEST, key, b"native codf")  # content changed
    with pytest.raises(compiled.SignatureError):
        compiled.verify(other.host_id, sig, DIGEST, key, b"native code")  # another signer
    arm = compiled.CompileKey("50.0.1", "aarch64-linux", "epoch1")
    assert arm.id != key.id
    with pytest.raises(compiled.SignatureError):
        compiled.verify(me.host_id, sig, DIGEST, arm, b"native code")  # another key
    with pytest.raises(compiled.SignatureError, match="not a host"):
        compiled.verify("UABC", sig, DIGEST, key, b"native code")


def test_local_cache_is_keyed_by_digest_and_drops_corrupt_entries(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path)
    digest = cache.put(b"component bytes")
    assert digest == refs.sha256_digest(b"component bytes")
    assert cache.get(digest) == b"component bytes"
    cache.path(digest).write_bytes(b"tampered")
    assert cache.get(digest) is None and not cache.has(digest)
    cache.remember("lattice://echo:1", digest)
    assert LocalCache(tmp_path).remembered("lattice://echo:1") == digest


def test_bearer_challenge_is_parsed() -> None:
    scheme, params = oci.parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:org/app:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:org/app:pull",
    }


async def test_bearer_token_flow_sends_credentials_only_to_the_token_service() -> None:
    """The registry-side Bearer dance, on an in-memory transport (the real registry tests
    cover Basic): 401 → token service with basic credentials → retry with the token, and
    the token is sent up front afterwards."""
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization")))
        if request.url.host == "auth.example.com":
            assert request.headers["authorization"].startswith("Basic ")
            assert request.url.params["scope"] == "repository:org/app:pull"
            return httpx.Response(200, json={"token": "tok-123"})
        if request.headers.get("authorization") != "Bearer tok-123":
            return httpx.Response(
                401,
                headers={
                    "www-authenticate": 'Bearer realm="https://auth.example.com/token",'
                    'service="r.example.com",scope="repository:org/app:pull"'
                },
            )
        return httpx.Response(200, headers={"docker-content-digest": DIGEST})

    class Client(oci.OciClient):
        def _client(self) -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.MockTransport(handler))

    client = Client(credentials={"r.example.com": oci.Credentials("ada", "pw")})
    ref = refs.parse("r.example.com/org/app:1.0")
    assert isinstance(ref, OciRef)
    assert await client.resolve(ref) == DIGEST
    assert await client.resolve(ref) == DIGEST
    hosts = [url.split("/")[2] for url, _ in seen]
    assert hosts == ["r.example.com", "auth.example.com", "r.example.com", "r.example.com"]
    assert seen[-1][1] == "Bearer tok-123"  # up front the second time
    registry_auth = [auth or "" for url, auth in seen if "//r.example.com/" in url]
    assert not any(a.startswith("Basic") for a in registry_auth)  # creds only to the token service


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("lattice://echo", "lattice://NAME:VERSION"),
        ("ghcr.io/Org/app:1", "repository part 'Org'"),
        (f"ghcr.io/org/app@sha256:{'0' * 12}", "not of the form sha256"),
    ],
)
def test_manifest_validation_checks_artifact_references(image: str, message: str) -> None:
    from lattice.controller import validate

    text = json.dumps(
        {
            "apiVersion": "core.oam.dev/v1beta1",
            "kind": "Application",
            "metadata": {"name": "x", "annotations": {"version": "v1"}},
            "spec": {
                "components": [{"name": "c", "type": "component", "properties": {"image": image}}]
            },
        }
    )
    (problem,) = validate(text).errors
    assert problem.path == "spec.components[0].properties.image" and message in problem.message
    ok = text.replace(json.dumps(image), json.dumps("ghcr.io/org/app:latest"))
    assert validate(ok).errors == []  # :latest is each host's policy, not the manifest's


def test_lattice_up_artifact_flags_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from host.config import artifact_settings

    monkeypatch.setenv("LATTICE_REGISTRY_CONFIG", "r.example.com=regcreds")
    s = artifact_settings(["a:5000,b:5000", "c"], allow_latest=True, shared_compile=False)
    assert s.insecure_registries == ("a:5000", "b:5000", "c")
    assert s.allow_latest and not s.shared_compile
    assert s.registry_configs == {"r.example.com": "regcreds"}
    monkeypatch.setenv("LATTICE_NO_SHARED_COMPILE", "1")
    assert not artifact_settings(None, False, True).shared_compile
