"""The OCI client against a real CNCF distribution registry (Debian's `docker-registry`).

Each test module that needs it starts `docker-registry serve` on a free port with a
temporary storage directory and a generated config (optionally with htpasswd basic
auth). A machine without the package FAILS these tests naming it: they never pass
silently. `.ci/run` installs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from lattice.artifacts import layout
from lattice.artifacts.cache import LocalCache
from lattice.artifacts.fetch import Fetcher, FetchError, FetchPolicy
from lattice.artifacts.oci import Credentials, OciClient, OciError
from lattice.artifacts.refs import OciRef, parse, sha256_digest
from lattice.natsd import free_port
from tests.servers import ServerError, _until_ready, _wait_exit

with warnings.catch_warnings():  # bcrypt for htpasswd, from the standard library
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

REGISTRY_PACKAGE = "docker-registry"


def registry_binary() -> str:
    found = shutil.which("docker-registry")
    if found is None:
        pytest.fail(
            f"the distribution registry binary `docker-registry` is not installed; install "
            f"Debian's {REGISTRY_PACKAGE!r} package (apt-get install -y {REGISTRY_PACKAGE}), "
            "as .ci/run does"
        )
    return found


@dataclass
class DistributionRegistry:
    """`docker-registry serve` on 127.0.0.1 with its own storage; stoppable, restartable."""

    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.workdir / 'storage'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.address}",
        ]
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(
                "".join(
                    f"{u}:{crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"
                    for u, p in self.users.items()
                )
            )
            lines += ["auth:", "  htpasswd:", "    realm: lattice-test", f"    path: {htpasswd}"]
        path = self.workdir / "config.yml"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def answers(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1.0) as c:
                r = await c.get(f"http://{self.address}/v2/")
            return r.status_code in (200, 401)
        except httpx.HTTPError:
            return False

    async def start(self, timeout: float = 30.0) -> DistributionRegistry:
        binary = registry_binary()
        config = self._config()
        log = (self.workdir / "registry.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "serve",
            str(config),
            stdout=log,
            stderr=log,
            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
        )
        log.close()
        await _until_ready(
            self.process,
            self.answers,
            "docker-registry",
            str(self.workdir / "registry.log"),
            timeout,
            self.stop,
        )
        return self

    async def stop(self) -> None:
        if self.process is not None:
            await _wait_exit(self.process, 10)
            self.process = None


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[DistributionRegistry]:
    reg = DistributionRegistry(tmp_path / "registry")
    try:
        await reg.start()
    except ServerError as exc:
        pytest.fail(f"docker-registry did not start: {exc}")
    try:
        yield reg
    finally:
        await reg.stop()


def _ref(reg: DistributionRegistry, repo: str = "lattice/echo", tag: str = "0.1.0") -> OciRef:
    parsed = parse(f"{reg.address}/{repo}:{tag}", allow_latest=True)
    assert isinstance(parsed, OciRef)
    return parsed


async def test_push_pull_inspect_round_trip(registry, built) -> None:
    wasm = built["echo"].read_bytes()
    client = OciClient(insecure={registry.address})
    ref = _ref(registry)
    manifest_digest, world = await client.push(ref, wasm)
    assert "lattice:examples/echo@0.1.0" in world.exports

    # what the registry stored is the CNCF layout, byte for byte what we hashed
    async with httpx.AsyncClient() as c:
        r = await c.get(
            f"http://{registry.address}/v2/lattice/echo/manifests/0.1.0",
            headers={"Accept": layout.MANIFEST_MEDIA_TYPE},
        )
    assert sha256_digest(r.content) == manifest_digest
    body = r.json()
    assert body["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert [x["mediaType"] for x in body["layers"]] == ["application/wasm"]

    assert await client.resolve(ref) == manifest_digest
    digest, layer, config = await client.pull_manifest(ref)
    assert digest == manifest_digest and layer.digest == sha256_digest(wasm)
    assert (
        config["os"] == "wasip2" and "lattice:examples/echo@0.1.0" in config["component"]["exports"]
    )

    pulled = await client.pull(ref.with_digest(manifest_digest))
    assert pulled.data == wasm and pulled.manifest_digest == manifest_digest


async def test_plain_http_needs_allow_insecure(registry, built) -> None:
    client = OciClient()  # HTTPS only
    with pytest.raises(OciError, match="--allow-insecure-registry " + registry.address) as exc:
        await client.resolve(_ref(registry))
    assert exc.value.unreachable


async def test_basic_auth_with_credentials_and_refusal_without(tmp_path, built) -> None:
    reg = DistributionRegistry(tmp_path / "authreg", users={"ada": "s3cret-pw"})
    await reg.start()
    try:
        ref = _ref(reg)
        wasm = built["echo"].read_bytes()
        anon = OciClient(insecure={reg.address})
        with pytest.raises(OciError, match="refused access") as exc:
            await anon.push(ref, wasm)
        assert "s3cret-pw" not in str(exc.value)
        wrong = OciClient(
            insecure={reg.address}, credentials={reg.address: Credentials("ada", "nope")}
        )
        with pytest.raises(OciError, match="check the credentials") as exc:
            await wrong.resolve(ref)
        assert "nope" not in str(exc.value)
        creds = Credentials("ada", "s3cret-pw")
        assert "s3cret-pw" not in repr(creds)
        ok = OciClient(insecure={reg.address}, credentials={reg.address: creds})
        digest, _ = await ok.push(ref, wasm)
        assert (await ok.pull(ref)).manifest_digest == digest
    finally:
        await reg.stop()


async def test_foreign_artifacts_are_refused_naming_media_types(registry) -> None:
    """A container image (gzip tar layer) is not a component; the error names what it is."""
    base = f"http://{registry.address}/v2/other/image"
    blob = b"not a tarball, but the registry does not care"
    config = b"{}"
    async with httpx.AsyncClient() as c:
        for data in (blob, config):
            start = await c.post(f"{base}/blobs/uploads/")
            loc = httpx.URL(start.headers["location"])
            put = await c.put(
                str(loc.copy_merge_params({"digest": sha256_digest(data)})), content=data
            )
            assert put.status_code == 201, put.text
        manifest = {
            "schemaVersion": 2,
            "mediaType": layout.MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256_digest(blob),
                    "size": len(blob),
                }
            ],
        }
        r = await c.put(
            f"{base}/manifests/1.0",
            content=json.dumps(manifest),
            headers={"Content-Type": layout.MANIFEST_MEDIA_TYPE},
        )
        assert r.status_code == 201, r.text
    fetcher = Fetcher(policy=FetchPolicy(insecure_registries=frozenset({registry.address})))
    with pytest.raises(FetchError, match=r"application/vnd\.oci\.image\.layer\.v1\.tar\+gzip"):
        await fetcher.fetch(f"{registry.address}/other/image:1.0")


async def test_latest_refused_unless_allowed(registry, built) -> None:
    wasm = built["echo"].read_bytes()
    client = OciClient(insecure={registry.address})
    await client.push(_ref(registry, tag="latest"), wasm)
    insecure = frozenset({registry.address})
    with pytest.raises(FetchError, match="--allow-latest"):
        await Fetcher(policy=FetchPolicy(insecure_registries=insecure)).fetch(
            f"{registry.address}/lattice/echo:latest"
        )
    got = await Fetcher(policy=FetchPolicy(True, insecure)).fetch(
        f"oci://{registry.address}/lattice/echo"
    )
    assert got.data == wasm and got.source == "oci"


async def test_cache_by_digest_and_offline_start(registry, built, tmp_path) -> None:
    wasm = built["echo"].read_bytes()
    client = OciClient(insecure={registry.address})
    manifest_digest, _ = await client.push(_ref(registry), wasm)
    policy = FetchPolicy(insecure_registries=frozenset({registry.address}))
    fetcher = Fetcher(LocalCache(tmp_path / "cache"), policy=policy)
    tag_ref = f"{registry.address}/lattice/echo:0.1.0"
    pinned = f"{registry.address}/lattice/echo@{manifest_digest}"
    assert (await fetcher.fetch(tag_ref)).source == "oci"
    assert (await fetcher.fetch(tag_ref)).source == "cache"  # tag re-resolved, bytes cached
    assert (await fetcher.fetch(pinned)).source == "cache"

    await registry.stop()
    again = Fetcher(LocalCache(tmp_path / "cache"), policy=policy)  # a restarted host
    got = await again.fetch(pinned)
    assert got.source == "cache" and got.data == wasm
    got = await again.fetch(tag_ref)
    assert got.source == "cache-offline" and got.digest == sha256_digest(wasm)
    with pytest.raises(FetchError, match="did not answer"):
        await Fetcher(LocalCache(tmp_path / "empty"), policy=policy).fetch(tag_ref)
