"""The in-host http-server: `builtin://http-server` run inside the host process.

Two hosts on the session's nats-server: `edge` runs the server (in its own process, the
default), `worker` runs components only. A request for a component that runs on the
edge host goes straight to one of its warm instances: nothing crosses the component's
`{lattice}.{id}.http` subject, which a plain NATS subscriber here watches (it is not in
the hosts' queue group, so it sees every exchange that crosses NATS). A component that
runs only on the worker host is reached over NATS, as with the provider process.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
import structlog.testing

from lattice.client import LatticeClient
from lattice.natsd import free_port
from tests.http_checks import until
from tests.test_examples import port_free
from tests.test_http_server import (
    MB5,
    PROVIDER,
    _chunks,
    route,
    wait_ok,
    walk_away_mid_download,
    walk_away_mid_upload,
)


@pytest.fixture(scope="module")
def hello_ref() -> str:
    from components.build import build

    return build("hello_http").as_uri()


class Crossings:
    """Counts the exchanges that cross NATS to a component. While it listens, a request
    for a component nobody runs gets no "no responders": `close` it first."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.sub: Any = None
        self.count = 0

    async def on(self, _msg: Any) -> None:
        self.count += 1

    async def close(self) -> None:
        """Unsubscribe and flush first: the server forgets a closed connection's interest
        only when it gets to it, and until then a request still finds a "responder"."""
        if not self.nc.is_closed:
            if self.sub is not None:
                await self.sub.unsubscribe()
                await self.nc.flush()  # the server has processed the UNSUB
            await self.nc.close()


@pytest.fixture
async def crossings(nats_url: str, lattice_name: str) -> AsyncIterator[Crossings]:
    seen = Crossings(await nats.connect(nats_url))
    seen.sub = await seen.nc.subscribe(f"{lattice_name}.hello.http", cb=seen.on)
    await seen.nc.flush()
    yield seen
    await seen.close()


@pytest.fixture
async def edge_and_worker(start_host: Any, client: LatticeClient) -> tuple[Any, Any]:
    edge = await start_host(labels={"role": "edge"})
    worker = await start_host(labels={"role": "worker"})
    await client.start_provider(edge.host_id, "builtin://http-server", PROVIDER)
    return edge, worker


async def test_local_requests_skip_nats_and_stream_both_ways(
    edge_and_worker: tuple[Any, Any],
    client: LatticeClient,
    hello_ref: str,
    crossings: Crossings,
) -> None:
    edge, _ = edge_and_worker
    provider = (await client.inventory(edge.host_id)).providers[0]
    assert provider["in_process"] is True and provider["pid"] == os.getpid()

    await client.scale_component(edge.host_id, hello_ref, "hello", 4)
    port = free_port()
    await route(client, "hello", port, "hello-cfg", path="/", host="hello.test")
    base = f"http://127.0.0.1:{port}"
    await wait_ok(base + "/", {"host": "hello.test"})
    async with httpx.AsyncClient(base_url=base, headers={"host": "hello.test"}) as http:
        for _ in range(20):
            r = await http.get("/")
            assert r.status_code == 200 and r.text == "hello from python"
            assert r.headers["x-hello"] == "lattice"
        info = (await http.get("/info?q=1", headers={"x-test": "yes"})).json()
        assert info["path"] == "/info?q=1" and info["authority"] == "hello.test"
        assert ["x-test", "yes"] in info["headers"]

        payload = bytes(range(256)) * (MB5 // 256)
        r = await http.post("/echo", content=_chunks(payload), timeout=60)
        assert r.status_code == 200 and r.content == payload
        for size in (0, 1, 65536, 65537):
            data = b"x" * size
            assert (await http.post("/echo", content=data)).content == data

        r = await http.get("/trap")  # the guest traps before its response: 500, and on
        assert r.status_code == 500
        assert (await http.get("/")).status_code == 200
        r = await http.get("/", headers={"host": "other.test"})
        assert r.status_code == 404 and "no route" in r.text
    assert crossings.count == 0, "a request for a local component crossed NATS"


async def test_the_minimal_guest_is_served_from_a_warm_instance_too(
    edge_and_worker: tuple[Any, Any], client: LatticeClient, crossings: Crossings
) -> None:
    """hello_min (WAT, no language runtime: bench http's second guest) through the same
    path, every request on one of its two warm instances."""
    from components.build import build

    edge, _ = edge_and_worker
    await client.scale_component(edge.host_id, build("hello_min").as_uri(), "hello", 2)
    pool = edge.components.pool_of("hello")
    assert pool is not None
    made = pool.instantiated
    port = free_port()
    await route(client, "hello", port, "hello-min-cfg", path="/")
    base = f"http://127.0.0.1:{port}"
    await wait_ok(base + "/")
    async with httpx.AsyncClient(base_url=base) as http:
        got = await asyncio.gather(*(http.get("/") for _ in range(40)))
        assert {(r.status_code, r.text) for r in got} == {(200, "hello from wat")}
        assert got[0].headers["x-hello"] == "lattice"
        assert got[0].headers["content-type"] == "text/plain"
        # served on the event loop, its body finished before the head went out: one
        # write with its length, not a chunked stream
        assert got[0].headers["content-length"] == "14"
        assert "transfer-encoding" not in got[0].headers
        r = await http.post("/anything", content=b"x" * 100_000)
        assert (r.status_code, r.text) == (200, "hello from wat")
    assert (pool.instantiated, pool.discarded) == (made, 0)  # no instance made per request
    # the GETs took the loop (the POST's streamed body took a worker)
    assert pool.loop_runs >= 20 and pool.loop_stops == 0
    assert crossings.count == 0, "a request for a local component crossed NATS"


async def test_a_client_walking_away_is_not_logged_as_a_trap(
    edge_and_worker: tuple[Any, Any], client: LatticeClient, hello_ref: str
) -> None:
    """Clients that close their connection mid-upload and mid-download of an echo: the
    guest's failed read or write is said as the client leaving, and the next request is
    served."""
    edge, _ = edge_and_worker
    await client.scale_component(edge.host_id, hello_ref, "hello", 2)
    port = free_port()
    await route(client, "hello", port, "hello-away-cfg", path="/")
    base = f"http://127.0.0.1:{port}"
    await wait_ok(base + "/")
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            await walk_away_mid_upload(port)
            await walk_away_mid_download(port)
        for _ in range(50):  # until the pool has seen each guest fail
            if sum(e["event"] == "HTTP client went away mid-exchange" for e in logs) >= 4:
                break
            await asyncio.sleep(0.1)
    events = [e["event"] for e in logs]
    failed = [e.get("reason") for e in logs if e["event"] == "component call failed"]
    assert failed == [], failed
    assert events.count("HTTP client went away mid-exchange") == 4, events  # one per client
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/")).text == "hello from python"


async def test_remote_component_goes_over_nats_and_local_wins_once_it_runs_here(
    edge_and_worker: tuple[Any, Any],
    client: LatticeClient,
    hello_ref: str,
    crossings: Crossings,
) -> None:
    edge, worker = edge_and_worker
    await client.scale_component(worker.host_id, hello_ref, "hello", 2)
    port = free_port()
    await route(client, "hello", port, "hello-cfg")
    base = f"http://127.0.0.1:{port}"
    await wait_ok(base + "/")
    async with httpx.AsyncClient(base_url=base) as http:
        before = crossings.count
        for _ in range(10):
            assert (await http.get("/")).text == "hello from python"
        await until(lambda: crossings.count >= before + 10)

        await client.scale_component(edge.host_id, hello_ref, "hello", 2)
        await until(lambda: edge.components.pool_of("hello") is not None, 30)
        await asyncio.sleep(0.1)  # let the last crossing's message arrive
        before = crossings.count
        for _ in range(10):
            assert (await http.get("/")).text == "hello from python"
        await asyncio.sleep(0.1)
        assert crossings.count == before, "the edge host runs hello: no NATS hop expected"

        await client.scale_component(edge.host_id, hello_ref, "hello", 0)
        await until(lambda: edge.components.pool_of("hello") is None, 30)
        for _ in range(5):  # back over NATS to the worker, with no failed request
            assert (await http.get("/")).text == "hello from python"
        await client.scale_component(worker.host_id, hello_ref, "hello", 0)
        await crossings.close()
        r = await http.get("/")
        for _ in range(50):  # the worker's stop reaches NATS interest shortly after
            if r.status_code == 503:
                break
            await asyncio.sleep(0.1)
            r = await http.get("/")
        assert r.status_code == 503 and "hello is not running" in r.text


async def test_host_stop_closes_the_server_and_the_flag_off_runs_a_process(
    start_host: Any, client: LatticeClient, hello_ref: str
) -> None:
    edge = await start_host()
    await client.start_provider(edge.host_id, "builtin://http-server", PROVIDER)
    await client.scale_component(edge.host_id, hello_ref, "hello", 1)
    port = free_port()
    await route(client, "hello", port, "hello-cfg")
    await wait_ok(f"http://127.0.0.1:{port}/")
    await edge.stop("test")
    assert port_free(port), "the in-host server kept listening after its host stopped"
    assert not edge.providers.running

    separate = await start_host(http_in_host=False)
    await client.start_provider(separate.host_id, "builtin://http-server", "http-proc")
    provider = (await client.inventory(separate.host_id)).providers[0]
    assert provider["in_process"] is False and provider["pid"] != os.getpid()
