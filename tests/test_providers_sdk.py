"""The provider SDK: host data parsing and secrecy, call dispatch, and the example provider.

Host data and dispatch are tested in-process (no NATS: `invoke` is pure). The example
from docs/providers.md (`providers.examples.memory_kv`) runs as a real subprocess
against the session's nats-server and is driven like a host drives it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest
from nats.aio.client import Client as NATS

from lattice import codec, natsd
from lattice.protocol.invocation import (
    ERROR_HEADER,
    HOST_HEADER,
    LINK_NAME_HEADER,
    SOURCE_HEADER,
    ErrorKind,
    InvocationError,
)
from providers.sdk import (
    HostData,
    HostDataError,
    Link,
    LinkError,
    Provider,
    invoke,
    operation,
    parse_host_data,
    read_host_data,
)
from tests.servers import ROOT, ProviderProcess, control, link, link_body, rpc

SEED = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU"
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.secret-jwt-body"
TOKEN = "hvs.super-secret-token"


def raw_host_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "lattice": "default",
        "nats_url": "nats://127.0.0.1:4222",
        "nats_credentials": {"jwt": JWT, "seed": SEED},
        "provider_id": "toy",
        "host_id": "NHOST",
        "link_definitions": [
            {
                "source_id": "comp-a",
                "target": "toy",
                "wit_namespace": "example",
                "wit_package": "toy",
                "interfaces": ["api"],
                "target_config": {"k": "v"},
                "target_secrets": {"token": TOKEN},
            }
        ],
        "config": {"greeting": "hi"},
        "log_level": "INFO",
        "log_format": "json",
    }
    data.update(overrides)
    return data


def line(data: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode() + "\n"


# ---------------------------------------------------------------------- host data


def test_host_data_from_text_binary_and_json_lines() -> None:
    hd = read_host_data(io.StringIO(line(raw_host_data())))
    assert hd.provider_id == "toy" and hd.log_level == "info" and hd.config == {"greeting": "hi"}
    (lk,) = hd.link_definitions
    assert lk.name == "default" and lk.secret("token") == TOKEN and lk.secret("nope") is None
    assert read_host_data(io.BytesIO(line(raw_host_data()).encode())) == hd
    assert parse_host_data(json.dumps(raw_host_data())) == hd
    assert parse_host_data(hd.encode()) == hd, "encode() is what a host writes"
    assert read_host_data(io.StringIO(line(raw_host_data()) + "ignored second line")) == hd


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("", "no host data on stdin"),
        ("%%%not base64%%%", "neither base64 nor a JSON object"),
        (base64.b64encode(b"[1, 2]").decode(), "must be a JSON object, got list"),
        (base64.b64encode(b"{nope").decode(), "not valid JSON"),
        (line({k: v for k, v in raw_host_data().items() if k != "provider_id"}), "provider_id"),
        (line(raw_host_data(log_level="loud")), "log_level"),
        (line(raw_host_data(lattice="a.b")), "lattice"),
        (line(raw_host_data(config={"n": 5})), "config.n"),
        (
            line(raw_host_data(link_definitions=[{"target": "toy", "wit_namespace": "x"}])),
            "link_definitions.0.source_id: Field required",
        ),
    ],
)
def test_malformed_host_data_names_the_field(data: str, expected: str) -> None:
    with pytest.raises(HostDataError) as info:
        parse_host_data(data)
    assert expected in str(info.value)


def test_secrets_never_show() -> None:
    hd = parse_host_data(line(raw_host_data()))
    (lk,) = hd.link_definitions
    shown = [repr(hd), str(hd), repr(lk), str(lk), hd.model_dump_json(), json.dumps(lk.describe())]
    for text in shown:
        for secret in (SEED, JWT, TOKEN):
            assert secret not in text
    bad = raw_host_data(nats_credentials={"jwt": JWT})  # no seed: the error must not echo
    with pytest.raises(HostDataError) as info:
        parse_host_data(line(bad))
    assert "nats_credentials.seed" in str(info.value) and JWT not in str(info.value)


# ---------------------------------------------------------------------- dispatch


class Toy(Provider):
    call_timeout = 0.3

    async def on_link_put(self, link: Link) -> None:
        if "fail" in link.target_config:
            raise RuntimeError(f"backend refused: {link.target_config['fail']}")

    @operation("example:toy/api.echo", params=("text",))
    async def echo(self, link: Link, args: list[Any]) -> dict[str, Any]:
        return {"text": args[0], "source": link.source_id, "link": link.name}

    @operation("example:toy/api.boom")
    async def boom(self, link: Link, args: list[Any]) -> None:
        raise RuntimeError("kaput")

    @operation("example:toy/api.typed")
    async def typed(self, link: Link, args: list[Any]) -> None:
        raise InvocationError(ErrorKind.BAD_ARGUMENT, "no thanks")

    @operation("example:toy/api.slow")
    async def slow(self, link: Link, args: list[Any]) -> None:
        await asyncio.sleep(5)

    @operation("example:toy/api.weird")
    async def weird(self, link: Link, args: list[Any]) -> object:
        return object()


@pytest.fixture
async def toy() -> Toy:
    provider = Toy(parse_host_data(line(raw_host_data())))
    for lk in provider.host_data.link_definitions:
        await provider.add_link(lk)
    return provider


async def call(
    p: Provider, op: str, args: Any = (), source: str | None = "comp-a", name: str | None = None
) -> tuple[dict[str, str] | None, Any]:
    headers = {}
    if source is not None:
        headers[SOURCE_HEADER] = source
    if name is not None:
        headers[LINK_NAME_HEADER] = name
    data = codec.pack(list(args)) if not isinstance(args, bytes) else args
    reply_headers, body = await invoke(p, op, headers, data)
    return reply_headers, codec.unpack(body)


def failure(reply: tuple[dict[str, str] | None, Any]) -> tuple[str, str]:
    headers, body = reply
    assert headers is not None and ERROR_HEADER in headers, body
    assert headers[ERROR_HEADER] == body["kind"] and headers[HOST_HEADER] == "NHOST"
    return body["kind"], body["message"]


async def test_calls_reach_handlers_with_their_link(toy: Toy) -> None:
    headers, body = await call(toy, "example:toy/api.echo", ["hi"])
    assert body == {"text": "hi", "source": "comp-a", "link": "default"}
    assert headers == {HOST_HEADER: "NHOST"}
    _, body = await invoke(toy, "example:toy/api.echo", {SOURCE_HEADER: "comp-a"}, b"")
    assert codec.unpack(body)["kind"] == "bad-argument"  # nil: zero arguments, one expected
    by_name = codec.pack({"text": "named"})
    _, body = await invoke(toy, "example:toy/api.echo", {SOURCE_HEADER: "comp-a"}, by_name)
    assert codec.unpack(body)["text"] == "named"


async def test_every_failure_is_a_typed_reply(toy: Toy) -> None:
    kind, msg = failure(await call(toy, "example:toy/api.nope"))
    assert kind == "unknown-function" and "example:toy/api.echo" in msg and "toy" in msg
    kind, msg = failure(await call(toy, "example:toy/api.echo", ["a", "b"]))
    assert kind == "bad-argument" and "expected 1 argument(s) (text), got 2" in msg
    kind, msg = failure(await call(toy, "example:toy/api.echo", b"\xc1"))
    assert kind == "bad-argument" and "malformed msgpack" in msg
    kind, msg = failure(await call(toy, "example:toy/api.echo", codec.pack({"txt": 1})))
    assert kind == "bad-argument" and "unknown argument(s) txt" in msg
    kind, msg = failure(await call(toy, "example:toy/api.boom"))
    assert kind == "internal" and "RuntimeError: kaput" in msg
    assert failure(await call(toy, "example:toy/api.typed")) == ("bad-argument", "no thanks")
    kind, msg = failure(await call(toy, "example:toy/api.slow"))
    assert kind == "timeout" and "0.3s" in msg
    kind, msg = failure(await call(toy, "example:toy/api.weird"))
    assert kind == "internal" and "cannot be encoded" in msg


async def test_calls_need_a_link(toy: Toy) -> None:
    # no such link: `not-linked`, the hand-off's promise that nothing was done
    kind, msg = failure(await call(toy, "example:toy/api.echo", ["x"], source="stranger"))
    assert kind == "not-linked" and "nothing was done" in msg
    assert "'stranger'" in msg and "'default'" in msg and "'toy'" in msg
    kind, msg = failure(await call(toy, "example:toy/api.echo", ["x"], name="other"))
    assert kind == "not-linked" and "'other'" in msg
    kind, msg = failure(await call(toy, "example:toy/api.echo", ["x"], source=None))
    assert kind == "unavailable" and "source-id" in msg


async def test_link_table(toy: Toy) -> None:
    (first,) = toy.links.values()
    await toy.add_link(first)  # the same link again: no-op
    assert len(toy.links) == 1
    other = link("comp-a", "toy", {"x": "1"}, name="second")
    other = other.model_copy(update={"wit_namespace": "example", "wit_package": "toy"})
    await toy.add_link(other)
    assert (await call(toy, "example:toy/api.echo", ["x"], name="second"))[1]["link"] == "second"
    with pytest.raises(LinkError, match="targets 'elsewhere'"):
        await toy.add_link(other.model_copy(update={"target": "elsewhere"}))
    failing = other.model_copy(update={"source_id": "comp-f", "target_config": {"fail": "nope"}})
    with pytest.raises(LinkError, match="backend refused: nope"):
        await toy.add_link(failing)
    kind, msg = failure(
        await call(toy, "example:toy/api.echo", ["x"], source="comp-f", name="second")
    )
    assert kind == "unavailable" and "backend refused: nope" in msg
    toy.link_drain_seconds = 0.05
    assert await toy.remove_link(other.key) == other  # draining: still in force
    assert (await call(toy, "example:toy/api.echo", ["x"], name="second"))[1]["link"] == "second"
    await toy.drained()
    assert await toy.remove_link(other.key) is None


async def test_serve_registers_at_runtime(toy: Toy) -> None:
    async def shout(link: Link, args: list[Any]) -> str:
        return str(args[0]).upper()

    toy.serve("example:toy/api.shout", shout, params=["text"])
    assert (await call(toy, "example:toy/api.shout", ["hey"]))[1] == "HEY"
    with pytest.raises(ValueError, match="NATS subject"):
        toy.serve("bad name", shout)


# ---------------------------------------------------------------------- example provider


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_url)
    try:
        yield conn
    finally:
        await conn.close()


def kv_link(source: str) -> Link:
    return link(source, "memkv", interfaces=("store",))


async def test_example_memory_kv(
    nats_url: str, nc: NATS, lattice_name: str, tmp_path: Path
) -> None:
    hd = HostData(
        lattice=lattice_name,
        nats_url=nats_url,
        provider_id="memkv",
        host_id="NHOST",
        link_definitions=[kv_link("comp-a"), kv_link("comp-b")],
        log_format="console",
        link_drain_seconds=0.3,
    )
    proc = ProviderProcess("providers.examples.memory_kv", hd, tmp_path / "memkv.log")
    await proc.start()
    try:
        assert await proc.wait_ready(nc) == {"healthy": True, "message": "2 link(s)"}

        async def kv(op: str, *args: Any, source: str = "comp-a") -> Any:
            return await rpc(
                nc, lattice_name, "memkv", f"wasi:keyvalue/store.bucket.{op}", list(args), source
            )

        assert await kv("set", "", "greeting", b"hello") == {"ok": None}
        assert await kv("get", "", "greeting") == {"ok": b"hello"}
        assert await kv("exists", "", "greeting") == {"ok": True}
        assert await kv("get", "", "greeting", source="comp-b") == {"ok": None}
        with pytest.raises(InvocationError) as info:
            await kv("set", "", "greeting", "not bytes")
        assert info.value.kind == ErrorKind.BAD_ARGUMENT
        with pytest.raises(InvocationError) as info:
            await kv("list-keys", "", None)
        assert info.value.kind == ErrorKind.UNKNOWN_FUNCTION

        ctl = f"wasmbus.rpc.{lattice_name}.memkv"
        assert (await control(nc, f"{ctl}.config.update", {"config": {"a": "b"}})).success
        bad = await control(nc, f"{ctl}.config.update", {"config": {"a": 1}})
        assert not bad.success and "config.a" in bad.message
        assert (await control(nc, f"{ctl}.linkdefs.put", link_body(kv_link("comp-c")))).success
        assert await kv("get", "", "x", source="comp-c") == {"ok": None}
        del_body = {"source_id": "comp-b", "wit_namespace": "wasi", "wit_package": "keyvalue"}
        assert (await control(nc, f"{ctl}.linkdefs.del", del_body)).success
        # draining: calls routed before the delete are still served …
        assert await kv("get", "", "greeting", source="comp-b") == {"ok": None}
        await asyncio.sleep(0.6)
        # … then the link is gone: `not-linked` (no host here to resolve it from)
        with pytest.raises(InvocationError) as info:
            await kv("get", "", "greeting", source="comp-b")
        assert info.value.kind == ErrorKind.NOT_LINKED
        health = await control(nc, f"{ctl}.health", {})
        assert health.response == {"healthy": True, "message": "2 link(s)"}
    finally:
        await proc.stop()  # SIGTERM: graceful
    assert proc.process is not None and proc.process.returncode == 0
    assert "stopped" in proc.stderr()


async def test_bad_host_data_exits_2_naming_the_field() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "providers.examples.memory_kv",
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    bad = {k: v for k, v in raw_host_data().items() if k != "nats_url"}
    _, err = await asyncio.wait_for(child.communicate(line(bad).encode()), 30)
    assert child.returncode == 2
    assert b"nats_url: Field required" in err and SEED.encode() not in err


async def test_connects_with_nkey_credentials(tmp_path: Path, lattice_name: str) -> None:
    """A provider uses the host's NATS credentials (here an nkey seed, no JWT)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
    public = nkeys.from_seed(seed.encode()).public_key.decode()
    port = natsd.free_port()
    conf = tmp_path / "auth.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\nauthorization {{ users = [ {{ nkey: "{public}" }} ] }}\n'
    )
    server = await asyncio.create_subprocess_exec(
        natsd.find_binary(),
        "-c",
        str(conf),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"nats://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if await natsd.answers(url, timeout=0.5):
                break
            await asyncio.sleep(0.05)
        raw = raw_host_data(
            lattice=lattice_name,
            nats_url=url,
            provider_id="memkv",
            nats_credentials={"seed": seed},
            link_definitions=[],
        )
        hd = parse_host_data(line(raw))
        proc = ProviderProcess("providers.examples.memory_kv", hd, tmp_path / "memkv.log")
        await proc.start()
        conn = await nats.connect(url, nkeys_seed_str=seed)
        try:
            assert (await proc.wait_ready(conn))["healthy"] is True
        finally:
            await proc.stop()
            await conn.close()
        assert proc.process is not None and proc.process.returncode == 0
        assert seed not in proc.stderr()
    finally:
        server.terminate()
        await server.wait()


def test_docs_show_the_example_as_it_is() -> None:
    """docs/providers.md embeds providers/examples/memory_kv.py verbatim (and it is short)."""
    source = (ROOT / "providers" / "examples" / "memory_kv.py").read_text()
    doc = (ROOT / "docs" / "providers.md").read_text()
    assert f"```python\n{source}```" in doc
    assert len(source.splitlines()) < 60
