"""The host-side (Python) WASI layer serving a standard `wasi:http/proxy` component.

Drives `host.wasi.serve_request` directly (no NATS) against `hello_http`, built by
componentize-py against the unmodified WASI 0.2.12 WIT, on a `WasiPool` (the host's
pool) and on a `WasiInstance`; checks streaming, traps, deadlines and the resource
table; runs an ordinary component (`echo`) on the layer; checks the value adapters
against real WASI types; and serves the same .wasm with `wasmtime serve` to show the
component is standard.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from wasmtime.component import Component, FuncType, Variant

from components.build import build
from host.config import Limits
from host.runtime.engine import CompileCache, EpochTicker, new_engine
from host.runtime.exports import list_exports
from host.wasi import (
    ResponseBodyError,
    WasiInstance,
    WasiPool,
    define,
    needs_host_wasi,
    new_linker,
    read_body,
    serve_request,
)
from host.wasi import http as wasi_http
from host.wasi.binding import Err, Ok, _lower_adapter
from host.wasi.io import CLOSED, Pipe, StreamClosed
from host.wasi.state import WasiState
from tests.http_checks import assert_streamed_echo, header, until, wasmtime_serve

ROOT = Path(__file__).resolve().parent.parent
MB5 = 5 * 1024 * 1024
CHUNK = 64 * 1024

pytestmark = pytest.mark.timeout(300)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[wasmtime.Engine]:
    engine = new_engine()
    ticker = EpochTicker(engine)
    ticker.start()
    yield engine
    ticker.stop()


def _compile(engine: wasmtime.Engine, name: str, variant: str | None = None) -> Component:
    cache = CompileCache(engine, ROOT / ".cache" / "test-host" / "cache")
    return cache.load(build(name, variant).read_bytes()).component


@pytest.fixture(scope="module")
def http_component(engine: wasmtime.Engine) -> Component:
    return _compile(engine, "hello_http")


@pytest.fixture(scope="module")
def echo_component(engine: wasmtime.Engine) -> Component:
    return _compile(engine, "echo", "v1")


def _pool(
    engine: wasmtime.Engine, component: Component, *, timeout_ms: int = 10_000, count: int = 4
) -> WasiPool:
    return WasiPool(
        component_id="hello-http",
        engine=engine,
        linker=new_linker(engine, component),
        component=component,
        exports=list_exports(engine, component),
        limits=Limits(timeout_ms=timeout_ms, memory_mb=256),
        max_instances=count,
    )


@pytest.fixture
async def pool(engine: wasmtime.Engine, http_component: Component) -> AsyncIterator[WasiPool]:
    pool = _pool(engine, http_component)
    await asyncio.to_thread(pool.warm_up, 1)
    yield pool
    await pool.drain()


@pytest.fixture
def instance(engine: wasmtime.Engine, http_component: Component) -> WasiInstance:
    return WasiInstance(engine, http_component, limits=Limits(timeout_ms=10_000, memory_mb=256))


# -- linking -----------------------------------------------------------------------------


def test_only_http_components_need_the_layer(
    engine: wasmtime.Engine, http_component: Component, echo_component: Component
) -> None:
    assert needs_host_wasi(engine, http_component)
    assert not needs_host_wasi(engine, echo_component)


def test_define_uses_the_exact_imported_versions(
    engine: wasmtime.Engine, http_component: Component
) -> None:
    defined = define(wasmtime.component.Linker(engine), engine, http_component)
    imported = {
        name
        for name, ext in http_component.type.imports(engine).items()
        if name.startswith("wasi:")
    }
    assert set(defined) == imported  # every WASI import, none left to anyone else
    # componentize-py's runtime imports 0.2.9, the world 0.2.12: both as imported
    assert "wasi:io/streams@0.2.12" in defined
    assert "wasi:cli/environment@0.2.9" in defined
    assert "wasi:http/types@0.2.12" in defined


# -- serving -----------------------------------------------------------------------------


async def test_get_root(pool: WasiPool) -> None:
    status, headers, body = await serve_request(pool, "GET", "/")
    assert status == 200
    assert await read_body(body) == b"hello from python"
    assert header(headers, "x-hello") == b"lattice"
    assert header(headers, "content-type") == b"text/plain; charset=utf-8"


async def test_request_details_reach_the_component(instance: WasiInstance) -> None:
    resp = await serve_request(
        instance,
        "GET",
        "/info?q=1&r=two",
        scheme="https",
        headers=[
            ("Host", "example.test:8443"),
            ("X-Custom", "a b"),
            ("x-custom", b"second"),
            ("Connection", "keep-alive"),  # hop-by-hop: not passed on, as wasmtime does
        ],
    )
    assert resp.status == 200
    assert header(resp.headers, "content-type") == b"application/json"
    info = json.loads(await read_body(resp.body))
    assert info == {
        "method": "GET",
        "path": "/info?q=1&r=two",
        "scheme": "https",
        "authority": "example.test:8443",
        "headers": [["x-custom", "a b"], ["x-custom", "second"]],
    }
    other = await serve_request(instance, "PURGE", "/anything")
    assert other.status == 404
    assert await read_body(other.body) == b"not found"


async def test_5mb_echo_streams_in_chunks(pool: WasiPool) -> None:
    await assert_streamed_echo(pool)


async def test_echo_takes_bytes_and_sync_iterables(instance: WasiInstance) -> None:
    data = os.urandom(300_000)
    for body in (data, [data[:1], data[1:200_000], b"", data[200_000:]], iter([data])):
        resp = await serve_request(instance, "POST", "/echo", body=body)
        assert resp.status == 200
        assert await read_body(resp.body) == data
    empty = await serve_request(instance, "POST", "/echo")
    assert empty.status == 200
    assert await read_body(empty.body) == b""


async def test_trap_gives_500_and_the_next_request_works(pool: WasiPool) -> None:
    status, _, body = await serve_request(pool, "GET", "/trap")
    assert status == 500
    assert await read_body(body) == wasi_http.ERROR_BODY
    await until(lambda: pool.discarded == 1)  # the 500 goes out before the slot is dropped
    status, _, body = await serve_request(pool, "GET", "/")
    assert status == 200
    assert await read_body(body) == b"hello from python"


async def test_trap_on_a_single_instance_replaces_it(
    engine: wasmtime.Engine, http_component: Component
) -> None:
    output: list[tuple[str, bytes]] = []
    inst = WasiInstance(engine, http_component, on_output=lambda s, d: output.append((s, d)))
    resp = await serve_request(inst, "GET", "/trap")
    assert resp.status == 500
    await read_body(resp.body)
    stderr = b"".join(d for s, d in output if s == "stderr").decode()
    assert "RuntimeError: trap requested by GET /trap" in stderr  # guest stderr captured
    resp = await serve_request(inst, "GET", "/")
    assert resp.status == 200
    assert await read_body(resp.body) == b"hello from python"
    assert inst.instantiated == 2


async def test_a_stalled_reader_runs_into_the_deadline(
    engine: wasmtime.Engine, http_component: Component
) -> None:
    inst = WasiInstance(engine, http_component, limits=Limits(timeout_ms=1500, memory_mb=256))
    resp = await serve_request(inst, "POST", "/echo", body=os.urandom(MB5))
    assert resp.status == 200
    first = await anext(resp.body)
    assert first
    await asyncio.sleep(2.5)  # the component waits for space in the response pipe
    with pytest.raises(ResponseBodyError, match="deadline"):
        async for _ in resp.body:
            pass
    again = await serve_request(inst, "GET", "/")
    assert again.status == 200
    assert await read_body(again.body) == b"hello from python"


async def test_an_abandoned_response_does_not_wedge_the_pool(pool: WasiPool) -> None:
    resp = await serve_request(pool, "POST", "/echo", body=os.urandom(MB5))
    assert await anext(resp.body)
    await resp.body.aclose()  # the client went away: the component sees a closed stream
    for _ in range(3):
        status, _, body = await asyncio.wait_for(serve_request(pool, "GET", "/"), 10)
        assert status == 200
        assert await read_body(body) == b"hello from python"


async def test_concurrent_requests_on_the_pool(
    engine: wasmtime.Engine, http_component: Component
) -> None:
    pool = _pool(engine, http_component, count=4)
    try:
        payloads = [os.urandom(n) for n in (0, 1, 70_000, 300_000)] * 3

        async def one(i: int) -> None:
            if i % 2:
                resp = await serve_request(pool, "GET", "/")
                assert (resp.status, await read_body(resp.body)) == (200, b"hello from python")
            else:
                data = payloads[i % len(payloads)]
                resp = await serve_request(pool, "POST", "/echo", body=data)
                assert (resp.status, await read_body(resp.body)) == (200, data)

        await asyncio.gather(*(one(i) for i in range(24)))
        assert 1 <= pool.instantiated <= 4
    finally:
        await pool.drain()


async def test_the_resource_table_stays_bounded(instance: WasiInstance) -> None:
    most = 0
    for i in range(700):
        path, body = ("/echo", b"x" * 1000) if i % 2 else ("/", None)
        resp = await serve_request(instance, "POST" if body else "GET", path, body=body)
        await read_body(resp.body)
        assert instance.store is not None
        most = max(most, len(instance.store.data().table))
    # componentize-py drops a request handle only when its cycle collector runs (every
    # few hundred requests here); what is left is some request handles, never streams,
    # bodies or fields, and never one per request for long
    assert most < 120
    table = instance.store.data().table
    assert set(table.kinds()) <= {"IncomingRequest"}
    for rep in range(1, 1 << 16):  # what is left holds no body data any more
        obj = table._items.get(rep)
        if isinstance(obj, wasi_http.IncomingRequest):
            assert obj.body.read(CHUNK) is None


# -- an ordinary component on the layer --------------------------------------------------


async def test_an_ordinary_component_runs_on_the_layer(
    engine: wasmtime.Engine, echo_component: Component
) -> None:
    pool = WasiPool(
        component_id="echo",
        engine=engine,
        linker=new_linker(engine, echo_component),
        component=echo_component,
        exports=list_exports(engine, echo_component),
        limits=Limits(timeout_ms=5000, memory_mb=256),
        max_instances=2,
    )
    try:
        assert await pool.call(pool.exports["lattice:examples/echo.echo"], ["hi"]) == "hi"
        assert await pool.call(pool.exports["lattice:examples/echo.version"], []) == "v1"
    finally:
        await pool.drain()
    inst = WasiInstance(engine, echo_component)
    data = bytes(range(256)) * 1000
    reversed_ = inst.call(("lattice:examples/types-demo@0.1.0", "reverse-bytes"), data)
    assert reversed_ == data[::-1]


# -- values and pipes --------------------------------------------------------------------


def _import_func(engine: wasmtime.Engine, component: Component, iface: str, fn: str) -> FuncType:
    for name, ext in component.type.imports(engine).items():
        if name.partition("@")[0] == iface:
            fty = ext.ty.exports(engine)[fn].ty
            assert isinstance(fty, FuncType)
            return fty
    raise LookupError(iface)


def test_results_follow_wasmtime_py_tagging(
    engine: wasmtime.Engine, http_component: Component
) -> None:
    st = WasiState()

    def lower(iface: str, fn: str) -> Any:
        result = _import_func(engine, http_component, iface, fn).result
        assert result is not None
        adapter = _lower_adapter(result)
        assert adapter is not None
        return lambda v: adapter(st, v)

    check_write = lower("wasi:io/streams", "[method]output-stream.check-write")
    assert check_write(Ok(5)) == 5  # result<u64, stream-error>: untagged
    assert check_write(Err(CLOSED)) is None  # stream-error.closed: untagged, no payload
    write = lower("wasi:io/streams", "[method]output-stream.write")
    assert write(Ok(None)) == Variant("ok", None)  # result<_, stream-error>: tagged
    assert write(Err(CLOSED)) == Variant("err", None)
    finish = lower("wasi:http/types", "[static]outgoing-body.finish")
    assert finish(Ok(None)) is None  # result<_, error-code>: untagged
    denied = Variant("HTTP-request-denied")
    assert finish(Err(denied)) == denied
    # result<option<directory-entry>, error-code>: an err would be lowered as the ok case
    read_entry = lower(
        "wasi:filesystem/types", "[method]directory-entry-stream.read-directory-entry"
    )
    assert read_entry(Ok(None)) is None
    with pytest.raises(wasmtime.WasmtimeError, match="unambiguously"):
        read_entry(Err("unsupported"))


def test_guest_made_fields_are_checked() -> None:
    st = WasiState()
    ok = wasi_http._fields_from_list(st, [("Content-Type", b"text/plain"), ("x-a", b"1\t2")])
    assert isinstance(ok, Ok)
    assert ok.value.entries == [("content-type", b"text/plain"), ("x-a", b"1\t2")]
    bad_name = wasi_http._fields_from_list(st, [("bad name", b"x")])
    assert bad_name == Err(Variant("invalid-syntax"))
    bad_value = wasi_http._fields_from_list(st, [("x-a", b"line\r\nbreak")])
    assert bad_value == Err(Variant("invalid-syntax"))
    forbidden = wasi_http._fields_from_list(st, [("Transfer-Encoding", b"chunked")])
    assert forbidden == Err(Variant("forbidden"))
    frozen = ok.value.frozen()
    assert wasi_http._fields_append(st, frozen, "x-b", b"1") == Err(Variant("immutable"))
    assert wasi_http._fields_set(st, ok.value, "X-A", [b"3", b"4"]) == Ok(None)
    assert wasi_http._fields_get(st, ok.value, "x-a") == [b"3", b"4"]


async def test_pipe_is_bounded_and_wakes_both_sides() -> None:
    pipe = Pipe(capacity=10)
    assert pipe.space() == 10
    pipe.write(b"0123456789")
    assert pipe.space() == 0
    assert not pipe.writable.ready()
    assert pipe.read(4) == b"0123"
    assert pipe.space() == 4
    writer_done = asyncio.Event()

    def writer() -> None:
        pipe.write(b"abcd")
        pipe.finish()
        writer_done.set()

    loop = asyncio.get_running_loop()
    assert await pipe.aread_chunk() == b"456789"
    loop.call_later(0.05, lambda: loop.run_in_executor(None, writer))
    assert await asyncio.wait_for(pipe.aread_chunk(), 5) == b"abcd"
    assert await pipe.aread_chunk() is None
    broken = Pipe()
    broken.write(b"x")
    broken.finish(error="boom")
    assert broken.read(10) == b"x"
    with pytest.raises(Exception, match="boom"):
        broken.read(10)
    gone = Pipe()
    gone.close_reader()
    with pytest.raises(StreamClosed):
        gone.space()


# -- the same component under wasmtime serve ---------------------------------------------


async def test_the_component_is_standard_under_wasmtime_serve() -> None:
    async with wasmtime_serve(build("hello_http")) as (client, url):
        resp = await client.get(url + "/")
        assert resp.status_code == 200
        assert resp.text == "hello from python"
        assert resp.headers["x-hello"] == "lattice"
        data = os.urandom(MB5)
        echoed = await client.post(url + "/echo", content=data)
        assert echoed.status_code == 200
        assert echoed.content == data
        info = (await client.get(url + "/info?x=1", headers={"x-custom": "v"})).json()
        assert info["path"] == "/info?x=1"
        assert ["x-custom", "v"] in info["headers"]
        assert (await client.get(url + "/trap")).status_code == 500
        assert (await client.get(url + "/")).status_code == 200


async def test_the_minimal_guest_is_standard_under_wasmtime_serve() -> None:
    async with wasmtime_serve(build("hello_min")) as (client, url):
        resp = await client.get(url + "/")
        assert (resp.status_code, resp.text) == (200, "hello from wat")
        assert resp.headers["x-hello"] == "lattice"
