"""Conformance and failure tests of the three wasi:keyvalue providers, as real processes.

Each provider runs as `python -m providers.keyvalue_{redis,vault,nats}` with host data on
stdin and is driven over NATS exactly as a host drives it: msgpack calls on
`{lattice}.{provider_id}.rpc.wasi:keyvalue/…` with `source-id` / `link-name` headers,
JSON control requests on `wasmbus.rpc.{lattice}.{provider_id}.…`.

`SCENARIOS` is the one conformance list; every scenario runs against every backend, so
the three must answer identically. Two links are set up per provider: "comp-a" and
"comp-b" with a different store (Redis db 1, Vault mount `kv-b`, JetStream bucket
`kv_b`), to prove per-link isolation. Failure tests stop, seal and restart backends.
Every server is started here on a free port (tests/servers.py) and stopped afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from lattice import natsd
from lattice.protocol.invocation import ErrorKind, InvocationError
from providers.keyvalue_nats import NatsKeyValueProvider
from providers.keyvalue_redis import RedisKeyValueProvider
from providers.keyvalue_vault import VaultKeyValueProvider
from providers.sdk import HostData, Link
from tests.servers import (
    ProviderProcess,
    RedisServer,
    VaultServer,
    control,
    link,
    link_body,
    rpc,
)

OPS = {
    "open": "wasi:keyvalue/store.open",
    "get": "wasi:keyvalue/store.bucket.get",
    "set": "wasi:keyvalue/store.bucket.set",
    "delete": "wasi:keyvalue/store.bucket.delete",
    "exists": "wasi:keyvalue/store.bucket.exists",
    "list-keys": "wasi:keyvalue/store.bucket.list-keys",
    "increment": "wasi:keyvalue/atomics.increment",
    "get-many": "wasi:keyvalue/batch.get-many",
    "set-many": "wasi:keyvalue/batch.set-many",
    "delete-many": "wasi:keyvalue/batch.delete-many",
}
U64_MAX = 2**64 - 1
BACKENDS = ["redis", "vault", "nats"]

DRAIN = 0.2  # seconds a deleted link keeps serving here (the hand-off's drain)


@dataclass
class KV:
    """A running provider and a NATS connection to drive it."""

    backend: str
    nc: NATS
    proc: ProviderProcess
    config_a: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def lattice(self) -> str:
        return self.proc.host_data.lattice

    @property
    def provider_id(self) -> str:
        return self.proc.host_data.provider_id

    async def call(
        self, op: str, *args: Any, source: str = "comp-a", link_name: str | None = None
    ) -> Any:
        return await rpc(
            self.nc,
            self.lattice,
            self.provider_id,
            OPS.get(op, op),
            list(args),
            source=source,
            link_name=link_name,
        )

    async def ok(self, op: str, *args: Any, source: str = "comp-a") -> Any:
        reply = await self.call(op, *args, source=source)
        assert isinstance(reply, dict) and set(reply) == {"ok"}, (
            f"{op}{args!r:.200}: {reply!r:.300}"
        )
        return reply["ok"]

    async def err(self, op: str, *args: Any, source: str = "comp-a") -> Any:
        reply = await self.call(op, *args, source=source)
        assert isinstance(reply, dict) and set(reply) == {"err"}, f"{op}: {reply!r:.300}"
        return reply["err"]

    async def all_keys(self, bucket: str, source: str = "comp-a") -> list[str]:
        keys: list[str] = []
        cursor = None
        for _ in range(10_000):
            page = await self.ok("list-keys", bucket, cursor, source=source)
            keys += page["keys"]
            cursor = page["cursor"]
            if cursor is None:
                return keys
        raise AssertionError("list-keys never ended")

    async def ctl(self, verb: str, body: Any) -> Any:
        return await control(self.nc, f"{self.proc.ctl}.{verb}", body)

    async def health(self) -> dict[str, Any]:
        reply = await self.ctl("health", {})
        assert reply.success, reply.message
        return dict(reply.response)


def host_data(lattice: str, nats_url: str, provider_id: str, links: list[Link]) -> HostData:
    return HostData(
        lattice=lattice,
        nats_url=nats_url,
        provider_id=provider_id,
        host_id="NTESTHOST",
        link_definitions=links,
        log_level="debug",
        log_format="json",
        link_drain_seconds=DRAIN,
    )


async def start_provider(
    backend: str,
    nc: NATS,
    nats_url: str,
    workdir: Path,
    config_a: dict[str, str],
    config_b: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
) -> KV:
    lattice = f"kv{uuid.uuid4().hex[:8]}"
    provider_id = f"kv-{backend}"
    links = [link("comp-a", provider_id, config_a, secrets_=secrets)]
    if config_b is not None:
        links.append(link("comp-b", provider_id, config_b, secrets_=secrets))
    proc = ProviderProcess(
        f"providers.keyvalue_{backend}",
        host_data(lattice, nats_url, provider_id, links),
        workdir / f"{provider_id}-{lattice}.log",
    )
    await proc.start()
    await proc.wait_ready(nc)
    return KV(backend, nc, proc, config_a, dict(secrets or {}))


async def backend_configs(
    backend: str, redis: RedisServer, vault: VaultServer
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(comp-a config, comp-b config, secrets) for one backend; comp-b uses another store."""
    if backend == "redis":
        return {"url": redis.url(0), "page_size": "2"}, {"url": redis.url(1)}, {}
    if backend == "vault":
        await vault.enable_kv("kv-b")
        return (
            {"addr": vault.addr, "page_size": "2"},
            {"addr": vault.addr, "mount": "kv-b"},
            {"token": vault.token},
        )
    return {"bucket": "kv_a", "page_size": "2"}, {"bucket": "kv_b"}, {}


@pytest.fixture(scope="module")
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="module", params=BACKENDS)
async def kv(
    request: pytest.FixtureRequest,
    nats_url: str,
    nc: NATS,
    redis_server: RedisServer,
    vault_server: VaultServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[KV]:
    config_a, config_b, secrets = await backend_configs(request.param, redis_server, vault_server)
    harness = await start_provider(
        request.param, nc, nats_url, tmp_path_factory.mktemp("kv"), config_a, config_b, secrets
    )
    try:
        yield harness
    finally:
        await harness.proc.stop()
        for value in secrets.values():
            assert value not in harness.proc.stderr(), "a secret reached the provider's log"


def bucket() -> str:
    """A fresh wasi bucket per scenario, so scenarios never see each other's keys."""
    return f"b-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------- scenarios

Scenario = Callable[[KV, str], Awaitable[None]]


async def missing_keys(kv: KV, b: str) -> None:
    assert await kv.ok("get", b, "nope") is None
    assert await kv.ok("exists", b, "nope") is False
    assert await kv.ok("delete", b, "nope") is None
    assert await kv.ok("list-keys", b, None) == {"keys": [], "cursor": None}
    assert await kv.ok("open", b) is None


async def overwrite(kv: KV, b: str) -> None:
    assert await kv.ok("set", b, "k", b"one") is None
    assert await kv.ok("get", b, "k") == b"one"
    await kv.ok("set", b, "k", b"two")
    assert await kv.ok("get", b, "k") == b"two"
    assert await kv.ok("exists", b, "k") is True
    await kv.ok("set", b, "empty", b"")
    assert await kv.ok("get", b, "empty") == b""
    assert await kv.ok("exists", b, "empty") is True


async def delete(kv: KV, b: str) -> None:
    await kv.ok("set", b, "k", b"v")
    await kv.ok("set", b, "keep", b"v")
    assert await kv.ok("delete", b, "k") is None
    assert await kv.ok("get", b, "k") is None
    assert await kv.ok("exists", b, "k") is False
    assert await kv.all_keys(b) == ["keep"]
    assert await kv.ok("delete", b, "k") is None  # twice is fine
    await kv.ok("set", b, "k", b"back")
    assert await kv.ok("get", b, "k") == b"back"


async def list_with_cursor(kv: KV, b: str) -> None:
    keys = ["e", "a", "d", "b", "c"]
    for k in keys:
        await kv.ok("set", b, k, k.encode())
    first = await kv.ok("list-keys", b, None)
    assert first == {"keys": ["a", "b"], "cursor": 2}
    second = await kv.ok("list-keys", b, first["cursor"])
    assert second == {"keys": ["c", "d"], "cursor": 4}
    third = await kv.ok("list-keys", b, second["cursor"])
    assert third == {"keys": ["e"], "cursor": None}
    assert await kv.ok("list-keys", b, 0) == first
    assert await kv.ok("list-keys", b, 99) == {"keys": [], "cursor": None}
    assert await kv.all_keys(b) == sorted(keys)


async def increment(kv: KV, b: str) -> None:
    assert await kv.ok("increment", b, "n", 5) == 5
    assert await kv.ok("increment", b, "n", 3) == 8
    assert await kv.ok("increment", b, "n", 0) == 8
    assert await kv.ok("get", b, "n") == b"8"
    results = await asyncio.gather(*(kv.ok("increment", b, "n", 1) for _ in range(15)))
    assert sorted(results) == list(range(9, 24)), "increments must be atomic"
    assert await kv.ok("get", b, "n") == b"23"
    await kv.ok("set", b, "n", b"41")
    assert await kv.ok("increment", b, "n", 1) == 42
    await kv.ok("set", b, "big", str(U64_MAX - 1).encode())
    assert await kv.ok("increment", b, "big", 1) == U64_MAX
    err = await kv.err("increment", b, "big", 1)
    assert "overflows u64" in err["other"]
    assert await kv.ok("get", b, "big") == str(U64_MAX).encode()
    assert await kv.ok("increment", b, "fresh", U64_MAX) == U64_MAX


async def non_integer_increment(kv: KV, b: str) -> None:
    for bad in (b"abc", b"-1", b"1.5", b" 1", b"+1", b"", str(U64_MAX + 1).encode()):
        await kv.ok("set", b, "x", bad)
        err = await kv.err("increment", b, "x", 1)
        assert err == {"other": "value at key 'x' is not an integer"}, (bad, err)
        assert await kv.ok("get", b, "x") == bad


async def large_values(kv: KV, b: str) -> None:
    big = bytes(range(256)) * (500 * 1024 // 256)
    await kv.ok("set", b, "big", big)
    assert await kv.ok("get", b, "big") == big
    limit = b"\x00" * 524288
    await kv.ok("set", b, "limit", limit)
    assert await kv.ok("get", b, "limit") == limit
    too_big = b"x" * (600 * 1024)
    assert await kv.err("set", b, "huge", too_big) == {
        "other": "value of 614400 bytes exceeds 524288"
    }
    assert await kv.err("set-many", b, [["ok", b"1"], ["huge", too_big]]) == {
        "other": "value of 614400 bytes exceeds 524288"
    }
    assert await kv.ok("exists", b, "huge") is False
    assert await kv.ok("exists", b, "ok") is False, "a refused batch writes nothing"


ODD_KEYS = [
    "a/b/c",
    "/leading",
    "trailing/",
    "with space",
    "dots.in.key",
    ".",
    "..",
    "😀 emoji",
    "ünïcødé",
    "日本語",
    "=2F",  # looks like an escape
    "=H00",  # looks like a hashed key
    "*",
    ">",
    "tab\there",
    "x" * 1024,
    "😀" * 1024,  # 4 KiB of UTF-8: too long for a NATS subject as is
]


async def odd_keys(kv: KV, b: str) -> None:
    for i, k in enumerate(ODD_KEYS):
        await kv.ok("set", b, k, f"v{i}".encode())
    for i, k in enumerate(ODD_KEYS):
        assert await kv.ok("get", b, k) == f"v{i}".encode(), k[:20]
        assert await kv.ok("exists", b, k) is True
    assert await kv.all_keys(b) == sorted(ODD_KEYS)
    counter = "😀" * 1000 + " counter"
    assert await kv.ok("increment", b, counter, 2) == 2
    assert await kv.ok("increment", b, counter, 2) == 4
    await kv.ok("delete", b, "😀" * 1024)
    assert await kv.ok("get", b, "😀" * 1024) is None
    assert "😀" * 1024 not in await kv.all_keys(b)
    err = await kv.err("set", b, "y" * 1025, b"v")
    assert err == {"other": "key of 1025 characters exceeds 1024"}


async def bad_bucket_names(kv: KV, b: str) -> None:
    for name in ("with space", "a.b", "x" * 65, "../etc", "a/b", "ü", "*"):
        assert await kv.err("open", name) == {"no-such-store": None}, name
        assert await kv.err("get", name, "k") == {"no-such-store": None}, name
        assert await kv.err("set", name, "k", b"v") == {"no-such-store": None}, name
        assert await kv.err("list-keys", name, None) == {"no-such-store": None}, name
        assert await kv.err("increment", name, "k", 1) == {"no-such-store": None}, name
        assert await kv.err("get-many", name, ["k"]) == {"no-such-store": None}, name
    assert await kv.ok("open", "") is None
    assert await kv.ok("open", "x" * 64) is None
    assert await kv.ok("open", "Good_name-1") is None


async def default_bucket(kv: KV, b: str) -> None:
    key = f"k-{b}"
    await kv.ok("set", "", key, b"via empty")
    assert await kv.ok("get", "default", key) == b"via empty"
    assert key in await kv.all_keys("")
    await kv.ok("delete", "default", key)
    assert await kv.ok("get", "", key) is None


async def buckets_are_namespaces(kv: KV, b: str) -> None:
    other = bucket()
    await kv.ok("set", b, "same", b"first")
    await kv.ok("set", other, "same", b"second")
    assert await kv.ok("get", b, "same") == b"first"
    assert await kv.ok("get", other, "same") == b"second"
    await kv.ok("delete", other, "same")
    assert await kv.ok("get", b, "same") == b"first"
    assert await kv.all_keys(other) == []


async def empty_key(kv: KV, b: str) -> None:
    for op, args in (
        ("get", [""]),
        ("set", ["", b"v"]),
        ("delete", [""]),
        ("exists", [""]),
        ("increment", ["", 1]),
        ("get-many", [["ok", ""]]),
        ("set-many", [[["", b"v"]]]),
        ("delete-many", [[""]]),
    ):
        assert await kv.err(op, b, *args) == {"other": "key must not be empty"}, op


async def batch(kv: KV, b: str) -> None:
    assert await kv.ok("set-many", b, [["k1", b"v1"], ["k2", b"v2"], ["k/3", b"v3"]]) is None
    got = await kv.ok("get-many", b, ["k1", "missing", "k2", "k/3"])
    assert got == [["k1", b"v1"], None, ["k2", b"v2"], ["k/3", b"v3"]]
    assert await kv.ok("delete-many", b, ["k1", "missing", "k/3"]) is None
    assert await kv.ok("get-many", b, ["k1", "k2", "k/3"]) == [None, ["k2", b"v2"], None]
    assert await kv.ok("get-many", b, []) == []
    assert await kv.ok("set-many", b, []) is None
    assert await kv.ok("delete-many", b, []) is None
    assert await kv.all_keys(b) == ["k2"]


async def per_link_isolation(kv: KV, b: str) -> None:
    await kv.ok("set", b, "shared-name", b"from a")
    assert await kv.ok("get", b, "shared-name", source="comp-b") is None
    await kv.ok("set", b, "shared-name", b"from b", source="comp-b")
    assert await kv.ok("get", b, "shared-name") == b"from a"
    assert await kv.ok("get", b, "shared-name", source="comp-b") == b"from b"
    assert await kv.ok("increment", b, "n", 2, source="comp-b") == 2
    assert await kv.ok("get", b, "n") is None
    # comp-b has the default page size: all five keys come in one page
    for k in "abcde":
        await kv.ok("set", b, k, b"", source="comp-b")
    page = await kv.ok("list-keys", b, None, source="comp-b")
    assert page == {"keys": ["a", "b", "c", "d", "e", "n", "shared-name"], "cursor": None}


async def unlinked_source(kv: KV, b: str) -> None:
    with pytest.raises(InvocationError) as info:
        await kv.call("get", b, "k", source="comp-x")
    assert info.value.kind == ErrorKind.NOT_LINKED  # the hand-off's "nothing was done"
    for part in ("'comp-x'", "'default'", kv.provider_id):
        assert part in info.value.message
    with pytest.raises(InvocationError) as info:
        await kv.call("get", b, "k", source="comp-a", link_name="other")
    assert info.value.kind == ErrorKind.NOT_LINKED
    assert "'other'" in info.value.message and "'comp-a'" in info.value.message


async def bad_calls(kv: KV, b: str) -> None:
    with pytest.raises(InvocationError) as info:
        await kv.call("get", b)
    assert info.value.kind == ErrorKind.BAD_ARGUMENT
    assert "expected 2 argument(s) (bucket, key), got 1" in info.value.message
    with pytest.raises(InvocationError) as info:
        await kv.call("get", b, 5)
    assert (
        info.value.kind == ErrorKind.BAD_ARGUMENT and "key must be a string" in info.value.message
    )
    with pytest.raises(InvocationError) as info:
        await kv.call("set", b, "k", "not bytes")
    assert info.value.kind == ErrorKind.BAD_ARGUMENT
    with pytest.raises(InvocationError) as info:
        await kv.call("increment", b, "k", -1)
    assert info.value.kind == ErrorKind.BAD_ARGUMENT
    with pytest.raises(InvocationError) as info:
        await rpc(kv.nc, kv.lattice, kv.provider_id, OPS["get"], None, raw=b"\xc1garbage")
    assert info.value.kind == ErrorKind.BAD_ARGUMENT and "malformed msgpack" in info.value.message
    with pytest.raises(InvocationError) as info:
        await kv.call("wasi:keyvalue/store.bucket.frobnicate", b, "k")
    assert info.value.kind == ErrorKind.UNKNOWN_FUNCTION
    assert OPS["get"] in info.value.message
    # a map by parameter name is accepted too
    reply = await rpc(kv.nc, kv.lattice, kv.provider_id, OPS["get"], {"bucket": b, "key": "k"})
    assert reply == {"ok": None}


async def links_at_runtime(kv: KV, b: str) -> None:
    newcomer = link("comp-c", kv.provider_id, kv.config_a, secrets_=kv.secrets)
    with pytest.raises(InvocationError):
        await kv.call("get", b, "k", source="comp-c")
    reply = await kv.ctl("linkdefs.put", link_body(newcomer))
    assert reply.success, reply.message
    await kv.ok("set", b, "k", b"shared store", source="comp-c")
    assert await kv.ok("get", b, "k") == b"shared store", "same config, same store"
    key = {
        "source_id": "comp-c",
        "target": kv.provider_id,
        "name": "default",
        "wit_namespace": "wasi",
        "wit_package": "keyvalue",
    }
    assert (await kv.ctl("linkdefs.del", key)).success
    # the deleted link drains first: calls already routed to it are still served
    assert await kv.ok("get", b, "k", source="comp-c") == b"shared store"
    await asyncio.sleep(DRAIN + 0.4)
    with pytest.raises(InvocationError) as info:
        await kv.call("get", b, "k", source="comp-c")
    assert info.value.kind == ErrorKind.NOT_LINKED and "'comp-c'" in info.value.message
    assert (await kv.ctl("linkdefs.del", key)).success, "deleting twice is not an error"
    assert await kv.ok("get", b, "k") == b"shared store", "comp-a is untouched"
    # a link whose config is unusable is refused, and calls over it say why
    broken = link("comp-d", kv.provider_id, {"page_size": "zero"}, secrets_=kv.secrets)
    reply = await kv.ctl("linkdefs.put", link_body(broken))
    assert not reply.success and "page_size" in reply.message
    with pytest.raises(InvocationError) as info:
        await kv.call("get", b, "k", source="comp-d")
    assert "page_size" in info.value.message
    reply = await kv.ctl("linkdefs.put", {"source_id": "comp-e"})
    assert not reply.success and "target" in reply.message


async def health(kv: KV, b: str) -> None:
    status = await kv.health()
    assert status["healthy"] is True, status
    assert kv.backend in status["message"]
    for value in kv.secrets.values():
        assert value not in status["message"]


SCENARIOS: list[Scenario] = [
    missing_keys,
    overwrite,
    delete,
    list_with_cursor,
    increment,
    non_integer_increment,
    large_values,
    odd_keys,
    bad_bucket_names,
    default_bucket,
    buckets_are_namespaces,
    empty_key,
    batch,
    per_link_isolation,
    unlinked_source,
    bad_calls,
    links_at_runtime,
    health,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_conformance(kv: KV, scenario: Scenario) -> None:
    await scenario(kv, bucket())


# ---------------------------------------------------------------------- lifecycle


@pytest.mark.parametrize("backend", BACKENDS)
async def test_default_shutdown_exits_zero(
    backend: str,
    nats_url: str,
    nc: NATS,
    redis_server: RedisServer,
    vault_server: VaultServer,
    tmp_path: Path,
) -> None:
    config_a, _, secrets = await backend_configs(backend, redis_server, vault_server)
    kv = await start_provider(backend, nc, nats_url, tmp_path, config_a, secrets=secrets)
    try:
        await kv.ok("set", "", "k", b"v")
        with pytest.raises(nats.errors.TimeoutError):  # another host's: not ours to answer
            await nc.request(f"{kv.proc.ctl}.default.shutdown", b'{"host_id": "N2"}', timeout=0.5)
        assert kv.proc.process is not None and kv.proc.process.returncode is None
        reply = await kv.ctl("default.shutdown", {"host_id": "NTESTHOST"})
        assert reply.success, reply.message
        assert await kv.proc.wait_exit(15) == 0
    finally:
        await kv.proc.stop()
    for value in secrets.values():
        assert value not in kv.proc.stderr()


# ---------------------------------------------------------------------- failures


async def until_ok(kv: KV, *args: Any, timeout: float = 10.0) -> Any:
    """Call until the backend answers `ok` again (it is coming back)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await kv.call(*args)
        if "ok" in reply or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.2)


async def test_redis_down_and_back(nats_url: str, nc: NATS, tmp_path: Path) -> None:
    server = await RedisServer(tmp_path / "redis").start()
    kv = await start_provider("redis", nc, nats_url, tmp_path, {"url": server.url()})
    try:
        await kv.ok("set", "", "k", b"v")
        await server.stop()
        started = time.monotonic()
        err = await kv.err("get", "", "k")
        assert time.monotonic() - started < 3.0, "an unavailable backend must fail fast"
        assert err["other"].startswith("redis unavailable: "), err
        assert (await kv.err("set", "", "k", b"w"))["other"].startswith("redis unavailable: ")
        status = await kv.health()
        assert status["healthy"] is False and "redis unavailable" in status["message"]
        await server.start()  # same port, empty (no persistence)
        assert await until_ok(kv, "set", "", "k", b"again") == {"ok": None}
        assert await kv.ok("get", "", "k") == b"again"
        assert (await kv.health())["healthy"] is True
    finally:
        await kv.proc.stop()
        await server.stop()
    assert kv.proc.process is not None and kv.proc.process.returncode == 0


async def test_vault_sealed_down_and_back(nats_url: str, nc: NATS, tmp_path: Path) -> None:
    vault = await VaultServer(tmp_path / "bao").start()
    secrets = {"token": vault.token}
    kv = await start_provider("vault", nc, nats_url, tmp_path, {"addr": vault.addr}, None, secrets)
    try:
        await kv.ok("set", "", "k", b"v")
        await vault.seal()
        started = time.monotonic()
        err = await kv.err("get", "", "k")
        assert time.monotonic() - started < 3.0
        assert err == {"other": "vault unavailable: Vault is sealed"}
        status = await kv.health()
        assert status["healthy"] is False and "sealed" in status["message"]
        await vault.unseal()
        assert await until_ok(kv, "get", "", "k") == {"ok": b"v"}
        assert (await kv.health())["healthy"] is True

        await vault.stop()
        started = time.monotonic()
        err = await kv.err("get", "", "k")
        assert time.monotonic() - started < 3.0
        assert err["other"].startswith(f"vault unavailable: cannot reach {vault.addr}"), err
        assert (await kv.health())["healthy"] is False
        await vault.start()  # a fresh dev server: same port and token, no data
        assert await until_ok(kv, "set", "", "k", b"again") == {"ok": None}
        assert await kv.ok("get", "", "k") == b"again"

        # a wrong token is access-denied, and its value is not echoed anywhere
        wrong = {"token": "s.not-the-token-" + uuid.uuid4().hex}
        bad = link("comp-z", kv.provider_id, {"addr": vault.addr}, secrets_=wrong)
        assert (await kv.ctl("linkdefs.put", link_body(bad))).success
        assert await kv.err("get", "", "k", source="comp-z") == {"access-denied": None}
        status = await kv.health()
        assert status["healthy"] is False and "token rejected" in status["message"]
        secrets["wrong"] = wrong["token"]
    finally:
        await kv.proc.stop()
        await vault.stop()
    log = kv.proc.stderr()
    assert "vault unavailable" in log, "the outage is logged"
    for value in secrets.values():
        assert value not in log, "a Vault token reached the provider's log"


async def test_nats_kv_down_and_back(nats_url: str, nc: NATS, tmp_path: Path) -> None:
    other = natsd.EmbeddedNats(
        host="127.0.0.1",
        port=natsd.free_port(),
        store_dir=tmp_path / "js",
        log_file=tmp_path / "n.log",
    )
    await other.start()
    config = {"bucket": "elsewhere", "url": other.url}
    kv = await start_provider("nats", nc, nats_url, tmp_path, config)
    try:
        await kv.ok("set", "", "k", b"v")
        await other.stop()
        started = time.monotonic()
        err = await kv.err("get", "", "k")
        assert time.monotonic() - started < 3.0
        assert err["other"].startswith("nats unavailable: "), err
        assert (await kv.health())["healthy"] is False
        await other.start()  # same port and JetStream store: the data is still there
        assert await until_ok(kv, "get", "", "k") == {"ok": b"v"}
        assert (await kv.health())["healthy"] is True
    finally:
        await kv.proc.stop()
        await other.stop()


# ---------------------------------------------------------------------- client sharing


async def test_clients_are_shared_per_server_and_closed_with_the_last_link() -> None:
    """In-process: links naming the same server share one client (nothing is contacted)."""
    Case = tuple[type[Any], str, dict[str, str], dict[str, str], dict[str, str]]
    cases: list[Case] = [
        (RedisKeyValueProvider, "clients", {"url": "redis://h:1/0"}, {"url": "redis://h:1/1"}, {}),
        (
            VaultKeyValueProvider,
            "clients",
            {"addr": "http://h:1"},
            {"addr": "http://h:2", "mount": "other"},
            {"token": "t"},
        ),
        (
            NatsKeyValueProvider,
            "conns",
            {"url": "nats://127.0.0.1:1", "bucket": "b"},
            {"url": "nats://127.0.0.1:2", "bucket": "b"},
            {},
        ),
    ]
    for cls, attr, first, second, secrets in cases:
        one = next(iter(first.values()))
        provider = cls(host_data("l", "nats://127.0.0.1:1", "p", []))
        links = [
            link("a", "p", first, secrets_=secrets),
            link("b", "p", first, secrets_=secrets),
            link("c", "p", second, secrets_=secrets),
        ]
        for lk in links:
            await provider.add_link(lk)
        pool = getattr(provider, attr)
        assert len(pool) == 2 and pool.refs(one) == 2, cls.__name__
        await provider.remove_link(links[0].key)
        await provider.drained()
        assert pool.refs(one) == 1
        await provider.remove_link(links[1].key)
        await provider.drained()
        assert pool.refs(one) == 0 and len(pool) == 1, "closed with its last link"
        await provider.on_shutdown()
        assert len(pool) == 0
