"""Conformance tests of the three wasi:blobstore providers, as real processes.

Each provider runs as `python -m providers.blobstore_{fs,nats,s3}` with host data on
stdin and is driven over NATS exactly as a host drives it (msgpack calls on
`{lattice}.{provider_id}.rpc.wasi:blobstore/…` with `source-id` / `link-name`
headers), like tests/test_providers_keyvalue.py. `SCENARIOS` is the one conformance
list; every scenario runs against every backend: a temp directory, the session's
nats-server (JetStream object stores) and a moto S3 server started here on a free port
(tests/s3server.py; moto is a compatibility server, not a production store).

Two links per provider: "comp-a" (page size 2) and "comp-b" (another root / bucket
prefix, uploads expiring after 0.5 s), to prove per-link isolation.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from nats.aio.client import Client as NATS

from lattice.protocol.invocation import ErrorKind, InvocationError
from providers.blobstore.semantics import CHUNK
from providers.sdk import HostData, Link
from tests.s3server import S3Server, s3_server  # noqa: F401 - the fixture
from tests.servers import ProviderProcess, control, link_body, rpc

BACKENDS = ["fs", "nats", "s3"]
BS = "wasi:blobstore/blobstore."
CT = "wasi:blobstore/container."
BS_OPS = {
    "create-container",
    "get-container",
    "delete-container",
    "container-exists",
    "copy-object",
    "move-object",
}
PART = 256 * 1024
U64_MAX = 2**64 - 1


def blob_link(
    source_id: str,
    target: str,
    config: dict[str, str],
    secrets: dict[str, str] | None = None,
    name: str = "default",
) -> Link:
    return Link.model_validate(
        {
            "source_id": source_id,
            "target": target,
            "name": name,
            "wit_namespace": "wasi",
            "wit_package": "blobstore",
            "interfaces": ["blobstore", "container"],
            "target_config": config,
            "target_secrets": dict(secrets or {}),
        }
    )


@dataclass
class Blob:
    backend: str
    nc: NATS
    proc: ProviderProcess
    config_a: dict[str, str]
    config_b: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def lattice(self) -> str:
        return self.proc.host_data.lattice

    @property
    def provider_id(self) -> str:
        return self.proc.host_data.provider_id

    async def call(self, op: str, *args: Any, source: str = "comp-a") -> Any:
        full = op if op.startswith("wasi:") else (BS if op in BS_OPS else CT) + op
        return await rpc(self.nc, self.lattice, self.provider_id, full, list(args), source=source)

    async def ok(self, op: str, *args: Any, source: str = "comp-a") -> Any:
        reply = await self.call(op, *args, source=source)
        assert isinstance(reply, dict) and set(reply) == {"ok"}, f"{op}: {reply!r:.300}"
        return reply["ok"]

    async def err(self, op: str, *args: Any, source: str = "comp-a") -> str:
        reply = await self.call(op, *args, source=source)
        assert isinstance(reply, dict) and set(reply) == {"err"}, f"{op}: {reply!r:.300}"
        assert isinstance(reply["err"], str)
        return reply["err"]

    async def ctl(self, verb: str, body: Any) -> Any:
        return await control(self.nc, f"{self.proc.ctl}.{verb}", body)

    async def put(self, c: str, name: str, data: bytes, source: str = "comp-a") -> None:
        """Write `data` as an upload of PART-sized parts."""
        upload = uuid.uuid4().hex
        parts = [data[i : i + PART] for i in range(0, len(data), PART)] or [b""]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            reply = await self.ok("write-data", c, name, upload, i, part, last, source=source)
            assert reply is None

    async def get(self, c: str, name: str, start: int = 0, end: int = U64_MAX) -> bytes:
        """Read `start..=end` chunk by chunk, as a host does."""
        out = bytearray()
        offset: int | None = start
        while offset is not None:
            reply = await self.ok("get-data", c, name, offset, end)
            assert len(reply["data"]) <= CHUNK
            out += reply["data"]
            offset = reply["next"]
        return bytes(out)

    async def all_names(self, c: str, limit: int | None = None) -> list[str]:
        names: list[str] = []
        cursor = None
        for _ in range(1000):
            page = await self.ok("list-objects", c, cursor, limit)
            names += page["names"]
            cursor = page["cursor"]
            if cursor is None:
                return names
        raise AssertionError("list-objects never ended")


def host_data(lattice: str, nats_url: str, provider_id: str, links: list[Link]) -> HostData:
    return HostData(
        lattice=lattice,
        nats_url=nats_url,
        provider_id=provider_id,
        host_id="NTESTHOST",
        link_definitions=links,
        log_level="debug",
        log_format="json",
        link_drain_seconds=0.2,
    )


def configs(
    backend: str, tmp: Path, s3: S3Server
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(comp-a config, comp-b config, secrets) for one backend."""
    tag = uuid.uuid4().hex[:6]
    if backend == "fs":
        return {"root": str(tmp / "a"), "page_size": "2"}, {"root": str(tmp / "b")}, {}
    if backend == "nats":
        return (
            {"bucket_prefix": f"a{tag}-", "page_size": "2"},
            {"bucket_prefix": f"b{tag}-"},
            {},
        )
    secrets = {
        "access_key_id": f"AKIA{uuid.uuid4().hex[:16].upper()}",
        "secret_access_key": f"secret-{uuid.uuid4().hex}",
    }
    base = {"endpoint": s3.endpoint, "region": "us-east-1"}
    return (
        {**base, "bucket_prefix": f"a{tag}-", "page_size": "2"},
        {**base, "bucket_prefix": f"b{tag}-"},
        secrets,
    )


async def start_provider(
    backend: str,
    nc: NATS,
    nats_url: str,
    workdir: Path,
    config_a: dict[str, str],
    config_b: dict[str, str] | None,
    secrets: dict[str, str],
) -> Blob:
    lattice = f"bs{uuid.uuid4().hex[:8]}"
    provider_id = f"blob-{backend}"
    links = [blob_link("comp-a", provider_id, config_a, secrets)]
    if config_b is not None:
        config_b = {**config_b, "upload_timeout": "0.5"}
        links.append(blob_link("comp-b", provider_id, config_b, secrets))
    proc = ProviderProcess(
        f"providers.blobstore_{backend}",
        host_data(lattice, nats_url, provider_id, links),
        workdir / f"{provider_id}-{lattice}.log",
    )
    await proc.start()
    await proc.wait_ready(nc)
    return Blob(backend, nc, proc, config_a, config_b or {}, secrets)


@pytest.fixture(scope="module")
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="module", params=BACKENDS)
async def blob(
    request: pytest.FixtureRequest,
    nats_url: str,
    nc: NATS,
    s3_server: S3Server,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Blob]:
    tmp = tmp_path_factory.mktemp("blob")
    a, b, secrets = configs(request.param, tmp, s3_server)
    harness = await start_provider(request.param, nc, nats_url, tmp, a, b, secrets)
    try:
        yield harness
    finally:
        await harness.proc.stop()
        log = harness.proc.stderr()
        for value in secrets.values():
            assert value not in log, "a secret reached the provider's log"


async def container(blob: Blob, source: str = "comp-a") -> str:
    name = f"c-{uuid.uuid4().hex[:10]}"
    meta = await blob.ok("create-container", name, source=source)
    assert meta["name"] == name
    return name


def data_of(size: int, seed: str = "x") -> bytes:
    block = hashlib.sha256(seed.encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def leftovers(blob: Blob, c: str, config: dict[str, str]) -> list[str]:
    """What unfinished uploads left in the store behind container `c`: temp files (fs),
    chunk subjects of no live object (nats), multipart uploads (s3)."""
    if blob.backend == "fs":
        return [p.name for p in (Path(config["root"]) / ".lattice" / "uploads").iterdir()]
    bucket = config["bucket_prefix"] + c
    if blob.backend == "nats":
        js = blob.nc.jetstream()
        info = await js.stream_info(f"OBJ_{bucket}", subjects_filter=f"$O.{bucket}.C.>")
        obs = await js.object_store(bucket)
        try:
            live = {i.nuid for i in await obs.list(ignore_deletes=True)}
        except nats.js.errors.NotFoundError:  # no object at all
            live = set()
        subjects = info.state.subjects or {}
        assert live <= {s.rsplit(".", 1)[-1] for s in subjects}, "the filter sees live chunks"
        return [s for s in subjects if s.rsplit(".", 1)[-1] not in live]
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=config["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=blob.secrets["access_key_id"],
        aws_secret_access_key=blob.secrets["secret_access_key"],
        config=AioConfig(s3={"addressing_style": "path"}),
    ) as s3:
        uploads = await s3.list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in uploads.get("Uploads", [])]


# ---------------------------------------------------------------------- scenarios

Scenario = Callable[[Blob], Awaitable[None]]


async def container_lifecycle(blob: Blob) -> None:
    name = f"c-{uuid.uuid4().hex[:10]}"
    assert await blob.ok("container-exists", name) is False
    err = await blob.err("get-container", name)
    assert err == f"container {name!r} does not exist"
    before = int(time.time()) - 120
    meta = await blob.ok("create-container", name)
    assert meta["name"] == name and before <= meta["created-at"] <= time.time() + 120
    assert await blob.ok("container-exists", name) is True
    assert await blob.err("create-container", name) == f"container {name!r} already exists"
    assert (await blob.ok("get-container", name))["name"] == name
    assert (await blob.ok("info", name))["created-at"] == meta["created-at"]
    assert await blob.ok("name", name) == name
    await blob.put(name, "x", b"data")
    assert await blob.ok("delete-container", name) is None
    assert await blob.ok("container-exists", name) is False
    assert "does not exist" in await blob.err("delete-container", name)
    assert "does not exist" in await blob.err("info", name)
    for bad in ("", "UPPER", "a b", "a.b", "-x", "x" * 49, "../etc", ".lattice"):
        assert "invalid container name" in await blob.err("create-container", bad), bad
        assert "invalid container name" in await blob.err("has-object", bad, "k"), bad


async def round_trip(blob: Blob) -> None:
    c = await container(blob)
    await blob.put(c, "hello.txt", b"hello world")
    assert await blob.get(c, "hello.txt") == b"hello world"
    assert await blob.ok("has-object", c, "hello.txt") is True
    assert await blob.ok("has-object", c, "nope") is False
    info = await blob.ok("object-info", c, "hello.txt")
    assert info["name"] == "hello.txt" and info["container"] == c and info["size"] == 11
    assert abs(info["created-at"] - time.time()) < 120
    await blob.put(c, "hello.txt", b"replaced")
    assert await blob.get(c, "hello.txt") == b"replaced"
    await blob.put(c, "empty", b"")
    assert (await blob.ok("object-info", c, "empty"))["size"] == 0
    reply = await blob.ok("get-data", c, "empty", 0, U64_MAX)
    assert {k: reply[k] for k in ("data", "size", "next")} == {"data": b"", "size": 0, "next": None}
    for name in ("dir/sub/file.bin", "with space.txt", "ünïcødé-😀.txt"):
        await blob.put(c, name, name.encode())
        assert await blob.get(c, name) == name.encode()


async def multi_chunk_and_ranges(blob: Blob) -> None:
    c = await container(blob)
    big = data_of(3 * 1024 * 1024 + 7, "big")
    await blob.put(c, "big.bin", big)
    assert (await blob.ok("object-info", c, "big.bin"))["size"] == len(big)
    first = await blob.ok("get-data", c, "big.bin", 0, U64_MAX)
    assert first["data"] == big[:CHUNK] and first["next"] == CHUNK and first["size"] == len(big)
    second = await blob.ok("get-data", c, "big.bin", CHUNK, U64_MAX)
    assert second["version"] == first["version"] != ""
    assert await blob.get(c, "big.bin") == big
    assert await blob.get(c, "big.bin", 100, 199) == big[100:200]
    assert await blob.get(c, "big.bin", CHUNK - 10, CHUNK + 9) == big[CHUNK - 10 : CHUNK + 10]
    assert await blob.get(c, "big.bin", 5, 5) == big[5:6]
    tail = len(big) - 3
    assert await blob.get(c, "big.bin", tail, U64_MAX) == big[tail:]
    past = await blob.ok("get-data", c, "big.bin", len(big) + 10, len(big) + 20)
    assert past["data"] == b"" and past["next"] is None and past["version"] == first["version"]
    assert "after end" in await blob.err("get-data", c, "big.bin", 10, 9)
    # a reader never sees half an object: the old version until the last part
    upload = uuid.uuid4().hex
    new = data_of(3 * PART, "new")
    await blob.ok("write-data", c, "big.bin", upload, 0, new[:PART], False)
    await blob.ok("write-data", c, "big.bin", upload, 1, new[PART : 2 * PART], False)
    assert await blob.get(c, "big.bin", 0, 99) == big[:100]
    assert (await blob.ok("object-info", c, "big.bin"))["size"] == len(big)
    await blob.ok("write-data", c, "big.bin", upload, 2, new[2 * PART :], True)
    assert await blob.get(c, "big.bin") == new
    replaced = await blob.ok("get-data", c, "big.bin", 0, 0)
    assert replaced["version"] != first["version"], "a replaced object has a new version"
    # an object only being written does not exist yet
    upload = uuid.uuid4().hex
    await blob.ok("write-data", c, "fresh", upload, 0, b"abc", False)
    assert await blob.ok("has-object", c, "fresh") is False
    assert await blob.ok("abort-write", c, "fresh", upload) is None
    assert await blob.ok("has-object", c, "fresh") is False


async def larger_than_a_multipart_part(blob: Blob) -> None:
    """11 MiB: three S3 multipart parts (5 MiB each but the last); an upload aborted
    after a part went up leaves nothing behind."""
    c = await container(blob)
    big = data_of(11 * 1024 * 1024 + 3, "multi")
    await blob.put(c, "large", big)
    assert (await blob.ok("object-info", c, "large"))["size"] == len(big)
    assert await blob.get(c, "large") == big
    u = uuid.uuid4().hex
    for i in range(24):  # 6 MiB: one part is up on S3
        await blob.ok("write-data", c, "half", u, i, big[i * PART : (i + 1) * PART], False)
    await blob.ok("abort-write", c, "half", u)
    assert await blob.ok("has-object", c, "half") is False
    assert await blob.all_names(c) == ["large"]
    assert await leftovers(blob, c, blob.config_a) == [], "an aborted upload is cleaned up"


async def uploads_misused(blob: Blob) -> None:
    c = await container(blob)
    u = uuid.uuid4().hex
    assert "unknown" in await blob.err("write-data", c, "x", u, 1, b"a", False)
    await blob.ok("write-data", c, "x", u, 0, b"a", False)
    assert "already started" in await blob.err("write-data", c, "x", u, 0, b"a", False)
    assert "expected part 1, got 3" in await blob.err("write-data", c, "x", u, 3, b"a", False)
    assert "writes 'x'" in await blob.err("write-data", c, "y", u, 1, b"a", False)
    await blob.ok("abort-write", c, "x", u)
    assert "unknown" in await blob.err("write-data", c, "x", u, 1, b"b", True)
    assert await blob.ok("has-object", c, "x") is False
    too_big = b"\0" * (512 * 1024 + 1)
    assert "exceeds" in await blob.err("write-data", c, "x", uuid.uuid4().hex, 0, too_big, True)
    # comp-b's uploads expire after 0.5 s without a part
    cb = await container(blob, "comp-b")
    u = uuid.uuid4().hex
    await blob.ok("write-data", cb, "slow", u, 0, b"a" * 1000, False, source="comp-b")
    await asyncio.sleep(2.5)
    err = await blob.err("write-data", cb, "slow", u, 1, b"b", True, source="comp-b")
    assert "unknown (it expired" in err
    assert await blob.ok("has-object", cb, "slow", source="comp-b") is False
    assert await leftovers(blob, cb, blob.config_b) == [], "an expired upload leaves nothing"


async def list_with_pagination(blob: Blob) -> None:
    c = await container(blob)
    names = ["e", "a", "d/x", "b", "c", "d/y"]
    for n in names:
        await blob.put(c, n, n.encode())
    first = await blob.ok("list-objects", c, None, None)
    assert first == {"names": ["a", "b"], "cursor": "b"}  # comp-a's page size is 2
    second = await blob.ok("list-objects", c, first["cursor"], None)
    assert second == {"names": ["c", "d/x"], "cursor": "d/x"}
    assert await blob.all_names(c) == sorted(names)
    assert await blob.all_names(c, limit=4) == sorted(names)
    whole = await blob.ok("list-objects", c, None, 100)
    assert whole == {"names": sorted(names), "cursor": None}
    assert await blob.ok("list-objects", c, "z", None) == {"names": [], "cursor": None}
    empty = await container(blob)
    assert await blob.ok("list-objects", empty, None, None) == {"names": [], "cursor": None}


async def copy_and_move(blob: Blob) -> None:
    c1, c2 = await container(blob), await container(blob)
    data = data_of(CHUNK * 2 + 5, "copy")
    await blob.put(c1, "src", data)

    def oid(c: str, o: str) -> dict[str, str]:
        return {"container": c, "object": o}

    assert await blob.ok("copy-object", oid(c1, "src"), oid(c2, "copy")) is None
    assert await blob.get(c2, "copy") == data and await blob.get(c1, "src") == data
    await blob.put(c2, "dest", b"old")
    assert await blob.ok("move-object", oid(c1, "src"), oid(c2, "dest")) is None
    assert await blob.get(c2, "dest") == data
    assert await blob.ok("has-object", c1, "src") is False
    assert await blob.ok("move-object", oid(c2, "dest"), oid(c2, "renamed/x")) is None
    assert await blob.all_names(c2) == ["copy", "renamed/x"]
    missing = "c-missing-" + uuid.uuid4().hex[:6]
    err = await blob.err("copy-object", oid(c2, "copy"), oid(missing, "x"))
    assert err == f"container {missing!r} does not exist"
    err = await blob.err("move-object", oid(c1, "nope"), oid(c2, "x"))
    assert err == f"object 'nope' does not exist in container {c1!r}"
    with pytest.raises(InvocationError) as info:
        await blob.call("copy-object", {"container": c1}, oid(c2, "x"))
    assert info.value.kind == ErrorKind.BAD_ARGUMENT


async def delete(blob: Blob) -> None:
    c = await container(blob)
    for n in ("a", "b", "c", "d/e"):
        await blob.put(c, n, b"v")
    assert await blob.ok("delete-object", c, "a") is None
    assert await blob.ok("delete-object", c, "a") is None  # twice is fine
    assert await blob.ok("has-object", c, "a") is False
    assert await blob.ok("delete-objects", c, ["b", "missing", "d/e"]) is None
    assert await blob.all_names(c) == ["c"]
    await blob.put(c, "z", b"v")
    assert await blob.ok("clear", c) is None
    assert await blob.all_names(c) == []
    assert await blob.ok("container-exists", c) is True


async def missing_things(blob: Blob) -> None:
    c = await container(blob)
    gone = f"c-gone-{uuid.uuid4().hex[:6]}"
    no_obj = f"object 'nope' does not exist in container {c!r}"
    assert await blob.err("get-data", c, "nope", 0, 10) == no_obj
    assert await blob.err("object-info", c, "nope") == no_obj
    no_c = f"container {gone!r} does not exist"
    for op, args in (
        ("get-data", ["x", 0, 1]),
        ("object-info", ["x"]),
        ("has-object", ["x"]),
        ("delete-object", ["x"]),
        ("delete-objects", [["x"]]),
        ("list-objects", [None, None]),
        ("clear", []),
        ("write-data", ["x", uuid.uuid4().hex, 0, b"v", True]),
    ):
        assert await blob.err(op, gone, *args) == no_c, op
    assert await blob.err("write-data", c, "", uuid.uuid4().hex, 0, b"", True) == (
        "object name must not be empty"
    )


async def per_link_isolation(blob: Blob) -> None:
    c = await container(blob)
    await blob.put(c, "mine", b"a")
    assert await blob.ok("container-exists", c, source="comp-b") is False
    await blob.ok("create-container", c, source="comp-b")
    assert await blob.ok("has-object", c, "mine", source="comp-b") is False


async def bad_calls(blob: Blob) -> None:
    with pytest.raises(InvocationError) as info:
        await blob.call("get-data", "c", "x")
    assert info.value.kind == ErrorKind.BAD_ARGUMENT
    assert "(container, name, start, end)" in info.value.message
    with pytest.raises(InvocationError) as info:
        await blob.call("get-data", "c", 5, 0, 1)
    assert info.value.kind == ErrorKind.BAD_ARGUMENT
    with pytest.raises(InvocationError) as info:
        await blob.call("write-data", "c", "x", "u", 0, "not bytes", True)
    assert info.value.kind == ErrorKind.BAD_ARGUMENT
    with pytest.raises(InvocationError) as info:
        await blob.call("write-data", "c", "x", "bad id!", 0, b"", True)
    assert info.value.kind == ErrorKind.BAD_ARGUMENT
    with pytest.raises(InvocationError) as info:
        await blob.call("has-object", "c", "x", source="comp-x")
    assert info.value.kind == ErrorKind.NOT_LINKED


async def health(blob: Blob) -> None:
    reply = await blob.ctl("health", {})
    assert reply.success and reply.response["healthy"] is True, reply
    assert blob.backend in reply.response["message"]
    for value in blob.secrets.values():
        assert value not in reply.response["message"]


SCENARIOS: list[Scenario] = [
    container_lifecycle,
    round_trip,
    multi_chunk_and_ranges,
    larger_than_a_multipart_part,
    uploads_misused,
    list_with_pagination,
    copy_and_move,
    delete,
    missing_things,
    per_link_isolation,
    bad_calls,
    health,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_conformance(blob: Blob, scenario: Scenario) -> None:
    await scenario(blob)


async def test_bad_config_is_refused_naming_the_setting(blob: Blob) -> None:
    broken = {"fs": {}, "nats": {"bucket_prefix": "UPPER"}, "s3": {"region": "x"}}[blob.backend]
    setting = {"fs": "root", "nats": "bucket_prefix", "s3": "endpoint"}[blob.backend]
    lk = blob_link("comp-bad", blob.provider_id, broken, blob.secrets)
    reply = await blob.ctl("linkdefs.put", link_body(lk))
    assert not reply.success and repr(setting) in reply.message, reply.message
    with pytest.raises(InvocationError) as info:
        await blob.call("container-exists", "c", source="comp-bad")
    assert info.value.kind == ErrorKind.UNAVAILABLE and repr(setting) in info.value.message
    for value in blob.secrets.values():
        assert value not in reply.message and value not in info.value.message


# ---------------------------------------------------------------------- fs only


async def test_fs_paths_cannot_escape_the_root(
    nats_url: str,
    nc: NATS,
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not yours")
    blob = await start_provider("fs", nc, nats_url, tmp_path, {"root": str(root)}, None, {})
    try:
        c = await container(blob)
        for name in ("../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/."):
            err = await blob.err("write-data", c, name, uuid.uuid4().hex, 0, b"v", True)
            assert repr(name) in err, (name, err)
            assert repr(name) in await blob.err("get-data", c, name, 0, 10)
        os.symlink(outside / "secret.txt", root / c / "link.txt")
        os.symlink(outside, root / c / "dir")
        err = await blob.err("get-data", c, "link.txt", 0, 100)
        assert err == "object name 'link.txt' resolves outside its container"
        err = await blob.err("write-data", c, "dir/new.txt", uuid.uuid4().hex, 0, b"v", True)
        assert err == "object name 'dir/new.txt' resolves outside its container"
        assert "dir/new.txt" not in os.listdir(outside)
        err = await blob.err("get-data", c, "dir/secret.txt", 0, 100)
        assert "resolves outside its container" in err
        assert await blob.all_names(c) == [], "links out of the root are not listed"
        os.symlink(outside, root / "evil")
        assert "outside the root" in await blob.err("list-objects", "evil", None, None)
        assert (outside / "secret.txt").read_bytes() == b"not yours"
    finally:
        await blob.proc.stop()
