"""The http-server provider end to end: real host, real provider process, real HTTP.

Each test starts a host (in process, on the session's nats-server, `http_in_host` off),
the http-server provider as a subprocess (`builtin://http-server`), so every request
crosses NATS (the in-host server is tests/test_http_in_host.py), scales the HTTP components
(`hello_http`, `kvcounter`) and links provider → component with a named source config
naming a free port; requests go through httpx (or a raw socket, to walk away mid-body).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import nats
import pytest
import structlog.testing

from lattice.client import LatticeClient
from lattice.natsd import free_port
from tests.servers import RedisServer, control

PROVIDER = "http"
MB5 = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def http_refs() -> dict[str, str]:
    from components.build import build

    return {name: build(name).as_uri() for name in ("hello_http", "kvcounter")}


async def route(
    client: LatticeClient, component: str, port: int, cfg: str, **settings: str
) -> None:
    await client.put_config(cfg, {"address": f"127.0.0.1:{port}", **settings})
    await client.put_link(
        PROVIDER, component, "wasi", "http", ["incoming-handler"], source_config=[cfg], name=cfg
    )


async def wait_ok(url: str, headers: dict[str, str] | None = None, timeout: float = 15.0) -> None:
    """Until the provider has the route (the link is pushed just after put_link returns)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            try:
                r = await http.get(url, headers=headers)
                if r.status_code not in (404, 503):
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{url} never became routable")
            await asyncio.sleep(0.05)


async def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listens on {port}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def lattice_up(start_host: Any, client: LatticeClient) -> AsyncIterator[Any]:
    host = await start_host(http_in_host=False)
    await client.start_provider(host.host_id, "builtin://http-server", PROVIDER)
    yield host


def _chunks(data: bytes, size: int = 100_000) -> Any:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    return gen()


async def test_hello_echo_trap_and_unknown_route(
    lattice_up: Any, client: LatticeClient, http_refs: dict[str, str]
) -> None:
    await client.scale_component(lattice_up.host_id, http_refs["hello_http"], "hello", 4)
    port = free_port()
    await route(client, "hello", port, "hello-cfg", path="/", host="hello.test")
    base = f"http://127.0.0.1:{port}"
    await wait_ok(base + "/", {"host": "hello.test"})
    async with httpx.AsyncClient(base_url=base, headers={"host": "hello.test"}) as http:
        r = await http.get("/")
        assert r.status_code == 200 and r.text == "hello from python"
        assert r.headers["x-hello"] == "lattice"
        assert r.headers["content-type"].startswith("text/plain")

        info = (await http.get("/info?q=1", headers={"x-test": "yes"})).json()
        assert info["path"] == "/info?q=1" and info["authority"] == "hello.test"
        assert ["x-test", "yes"] in info["headers"]

        payload = bytes(range(256)) * (MB5 // 256)
        r = await http.post(
            "/echo",
            content=_chunks(payload),
            headers={"content-type": "application/octet-stream"},
            timeout=60,
        )
        assert r.status_code == 200 and r.content == payload
        assert r.headers["content-type"] == "application/octet-stream"

        for size in (0, 1, 65536, 65537, 300_000):  # chunk edges, and several chunks at once
            data = bytes(range(256)) * (size // 256) + b"t" * (size % 256)
            for _ in range(3):
                assert (await http.post("/echo", content=data)).content == data

        r = await http.get("/trap")
        assert r.status_code == 500
        assert (await http.get("/")).status_code == 200

        # another Host and no host-less route: 404 from the provider, saying why
        r = await http.get("/", headers={"host": "other.test"})
        assert r.status_code == 404 and "no route" in r.text


async def test_client_walking_away_mid_upload_wedges_nothing(
    lattice_up: Any, client: LatticeClient, http_refs: dict[str, str]
) -> None:
    await client.scale_component(lattice_up.host_id, http_refs["hello_http"], "hello", 2)
    port = free_port()
    await route(client, "hello", port, "hello-cfg")
    base = f"http://127.0.0.1:{port}"
    await wait_ok(base + "/")
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):  # more walk-aways than instances
            await walk_away_mid_upload(port)
        for _ in range(3):  # ... and mid-download, while the echo streams back
            await walk_away_mid_download(port)
        for _ in range(50):  # until the host has seen the provider's cancels
            if "HTTP client went away mid-exchange" in [e["event"] for e in logs]:
                break
            await asyncio.sleep(0.1)
    # the guest failing on a client that left is said as that, not as its trap
    events = [e["event"] for e in logs]
    failed = [e.get("reason") for e in logs if e["event"] == "component call failed"]
    assert failed == [], failed
    assert "HTTP client went away mid-exchange" in events, events
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        started = time.monotonic()
        for _ in range(4):
            assert (await http.get("/")).text == "hello from python"
        r = await http.post("/echo", content=b"y" * 200_000)
        assert r.content == b"y" * 200_000
        assert time.monotonic() - started < 10


async def walk_away_mid_upload(port: int) -> None:
    """Start a 5 MB echo, send 1 MB of it, then close the connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        + f"Content-Length: {MB5}\r\n\r\n".encode()
    )
    sock.sendall(b"x" * (1024 * 1024))
    await asyncio.sleep(0.3)
    sock.close()


async def walk_away_mid_download(port: int) -> None:
    """POST a 5 MB echo, read 300 KB of the answer, then drop the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {MB5}\r\n\r\n".encode())

    async def send(w: asyncio.StreamWriter = writer) -> None:
        for _ in range(MB5 // 65536):
            w.write(b"d" * 65536)
            await w.drain()

    sender = asyncio.create_task(send())
    await asyncio.wait_for(reader.readexactly(300_000), 10)
    writer.transport.abort()
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)


async def test_not_running_is_503_fast_health_and_link_del_closes_the_port(
    lattice_up: Any, client: LatticeClient, nats_url: str
) -> None:
    port = free_port()
    await route(client, "ghost", port, "ghost-cfg")
    base = f"http://127.0.0.1:{port}"
    await wait_listening(port)
    async with httpx.AsyncClient(base_url=base) as http:
        await http.get("/")  # a warm connection, so the timing below is the provider's
        started = time.monotonic()
        r = await http.get("/")
        assert r.status_code == 503 and "ghost is not running" in r.text
        assert time.monotonic() - started < 1.0

        nc = await nats.connect(nats_url)
        try:
            health = f"wasmbus.rpc.{client.lattice}.{PROVIDER}.health"
            reply = (await control(nc, health, {})).response
            assert reply == {
                "healthy": True,
                "message": f"listening on 127.0.0.1:{port} (1 route(s))",
            }
        finally:
            await nc.close()

        await client.del_link(PROVIDER, "wasi", "http", name="ghost-cfg")
        for _ in range(100):  # the last route gone: the port is closed
            try:
                await http.get("/")
            except httpx.TransportError:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the server kept listening after its last route went")


async def test_routing_by_path_and_host_and_kvcounter(
    lattice_up: Any,
    client: LatticeClient,
    http_refs: dict[str, str],
    redis_server: RedisServer,
) -> None:
    host_id = lattice_up.host_id
    await client.put_config("kv-redis-url", {"url": redis_server.url(5)})
    await client.start_provider(host_id, "builtin://keyvalue-redis", "kv-redis")
    await client.scale_component(host_id, http_refs["hello_http"], "hello", 2)
    await client.scale_component(host_id, http_refs["kvcounter"], "kvcounter", 2)
    await client.put_link(
        "kvcounter", "kv-redis", "wasi", "keyvalue", ["store", "atomics"],
        target_config=["kv-redis-url"],
    )  # fmt: skip
    port = free_port()
    await route(client, "kvcounter", port, "count-cfg")  # "/" on any host
    await route(client, "hello", port, "info-cfg", path="/info")  # longer prefix
    await route(client, "hello", port, "vhost-cfg", host="hello.test")  # by Host header
    base = f"http://127.0.0.1:{port}"
    await wait_ok(base + "/info")
    await wait_ok(base + "/", {"host": "hello.test"})
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        assert [(await http.get("/visits")).text for _ in range(3)] == ["1", "2", "3"]
        r = await http.get("/")
        assert r.status_code == 200 and r.text == "1"  # key "count"
        assert r.headers["content-type"].startswith("text/plain")
        assert (await http.get("/infoo")).text == "1"  # not the /info prefix
        assert (await http.get("/info/x")).json()["path"] == "/info/x"
        assert (await http.get("/", headers={"host": "hello.test:80"})).text == "hello from python"
        assert (await http.get("/visits", headers={"host": "other.test"})).text == "4"
        # a body the component never reads: answered, and nothing waits for it
        r = await http.post("/visits", content=_chunks(b"x" * MB5))
        assert r.text == "5"
        assert (await http.get("/visits")).text == "6"


# ------------------------------------------------------------------ the wire protocol


async def test_host_side_credit_bounds_what_it_sends_and_cancel_frees_it(
    lattice_up: Any, client: LatticeClient, http_refs: dict[str, str], nats_url: str
) -> None:
    """A caller that stops acknowledging gets at most `WINDOW` response chunks; a cancel
    frees the guest, and the component keeps serving."""
    from host import http_serve

    await client.scale_component(lattice_up.host_id, http_refs["hello_http"], "hello", 1)
    nc = await nats.connect(nats_url)
    try:
        inbox = nc.new_inbox()
        seen = {"ack": 0, "data": 0}
        credit = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            m = msgpack.unpackb(msg.data)
            if m["t"] == "ack":
                seen["ack"] = m["n"]
                credit.set()
            else:
                seen[m["t"]] = seen.get(m["t"], 0) + 1

        await nc.subscribe(inbox, cb=on_msg)
        head = {"v": 1, "id": "t1", "method": "POST", "path": "/echo", "scheme": "http",
                "authority": "x", "headers": [], "reply": inbox, "body": True}  # fmt: skip
        accept = msgpack.unpackb(
            (await nc.request(f"{client.lattice}.hello.http", msgpack.packb(head))).data
        )
        window, host_inbox = accept["window"], accept["inbox"]
        sent = 0
        chunk = b"z" * 65536
        while sent < 80:  # 5 MiB, never more than `window` chunks ahead of the host's acks
            if sent >= seen["ack"] + window:
                credit.clear()
                try:
                    await asyncio.wait_for(credit.wait(), 1.0)
                except TimeoutError:
                    break  # stalled: the host stopped acknowledging because we do not read
                continue
            await nc.publish(host_inbox, msgpack.packb({"t": "data", "d": chunk}))
            sent += 1
        await asyncio.sleep(0.5)
        assert seen.get("head") == 1
        assert 0 < seen["data"] <= window, "the host sent beyond the credit it was given"
        assert sent < 80, "the request body was not back-pressured"

        await nc.publish(host_inbox, msgpack.packb({"t": "cancel"}))
        await asyncio.sleep(0.5)
        assert all(not i.exchanges for i in http_serve._Inboxes._by_conn.values())
    finally:
        await nc.close()
    port = free_port()
    await route(client, "hello", port, "hello-cfg")
    await wait_ok(f"http://127.0.0.1:{port}/")


async def test_provider_aborts_a_response_that_fails_mid_body(
    lattice_up: Any, client: LatticeClient, nats_url: str
) -> None:
    """A (fake) host that sends a head, some body and then `err`: the client must see a
    broken response, never a complete one."""
    nc = await nats.connect(nats_url)
    try:

        async def fake_host(msg: Any) -> None:
            head = msgpack.unpackb(msg.data)
            await msg.respond(msgpack.packb({"inbox": nc.new_inbox(), "window": 8}))
            reply = head["reply"]
            hdrs = [["content-type", b"text/plain"]]
            await nc.publish(reply, msgpack.packb({"t": "head", "status": 200, "headers": hdrs}))
            await nc.publish(reply, msgpack.packb({"t": "data", "d": b"partial "}))
            await nc.publish(reply, msgpack.packb({"t": "err", "message": "guest trapped"}))

        await nc.subscribe(f"{client.lattice}.fake.http", cb=fake_host)
        port = free_port()
        await route(client, "fake", port, "fake-cfg")
        await wait_listening(port)
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(f"http://127.0.0.1:{port}/")
    finally:
        await nc.close()


# ------------------------------------------------------------------ routing (pure)


def test_route_selection_and_config() -> None:
    from providers.http_server.routes import route_from_config, select
    from providers.sdk import LinkKey

    def r(cid: str, **cfg: str) -> Any:
        return route_from_config(LinkKey("http", cid, "wasi", "http"), cid, cfg)

    routes = [r("root"), r("api", path="/api/"), r("v2", path="/api/v2"), r("vh", host="A.test")]
    assert routes[1].prefix == "/api" and routes[0].address == "127.0.0.1:8080"

    def pick(host: str | None, path: str) -> str | None:
        found = select(routes, host, path)
        return found.component_id if found else None

    assert pick("x", "/") == "root"
    assert pick("x", "/api") == "api" and pick("x", "/api/v1?q") == "api"
    assert pick("x", "/api/v2/z") == "v2" and pick("x", "/apix") == "root"
    assert pick("a.test:8080", "/api") == "vh"  # a Host match wins over longer prefixes
    assert select([routes[1]], "x", "/other") is None
    for bad in ({"address": "nope"}, {"path": "api"}, {"port": "1"}, {"address": "h:99999"}):
        with pytest.raises(ValueError):
            r("bad", **bad)
