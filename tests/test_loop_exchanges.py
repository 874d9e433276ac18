"""HTTP exchanges on the event loop: which components qualify, what runs there, and
what an exchange that would wait or runs past the loop's budget does.

In process (a real wasmtime pool and the host's WASI layer, no NATS); the host path
through the in-host HTTP server is covered by tests/test_http_in_host.py, whose
hello_min requests take this path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from components.build import build
from host.config import Limits
from host.runtime.nonblocking import serves_without_waiting
from host.wasi import WasiPool, read_body, serve_request
from host.wasi import http as wasi_http
from host.wasi import instance as wasi_instance
from host.wasi.io import Pipe

HELLO_MIN = b"hello from wat"


@pytest.mark.parametrize(
    ("imports", "expected"),
    [
        (["wasi:http/types@0.2.12", "wasi:io/streams@0.2.12", "wasi:io/error@0.2.12"], True),
        (["wasi:http/types@0.2.12", "wasi:cli/stdout@0.2.12"], True),
        (["wasi:http/types@0.2.12", "wasi:http/outgoing-handler@0.2.12"], False),  # effects
        (["wasi:http/types@0.2.12", "wasi:io/poll@0.2.12"], False),  # waits on the world
        (["wasi:http/types@0.2.12", "wasi:clocks/monotonic-clock@0.2.12"], False),
        (["wasi:http/types@0.2.12", "wasi:filesystem/types@0.2.12"], False),
        (["wasi:http/types@0.2.12", "wasi:keyvalue/store@0.2.0-draft"], False),  # a provider
        (["wasi:http/types@0.2.12", "wasi:blobstore/blobstore@0.2.0-draft"], False),
    ],
)
def test_only_handlers_that_wait_on_nothing_but_their_own_bodies_qualify(
    imports: list[str], expected: bool
) -> None:
    assert serves_without_waiting(imports) is expected


async def get(pool: WasiPool, body: bytes | None = None) -> tuple[int, dict[str, bytes], bytes]:
    response = await serve_request(pool, "GET", "/", headers={"host": "example"}, body=body)
    return response.status, dict(response.headers), await read_body(response.body)


async def test_a_minimal_handler_is_served_on_the_loop(load) -> None:
    pool = await load(build("hello_min"))
    assert isinstance(pool, WasiPool) and pool.loop_exchanges
    for _ in range(20):
        status, headers, body = await get(pool)
        assert (status, body) == (200, HELLO_MIN)
        assert headers["x-hello"] == b"lattice"
    # every exchange ran on the loop, on the one warm instance: no worker made another
    assert (pool.loop_runs, pool.loop_stops) == (20, 0)
    assert pool.instantiated == 1
    # a request body held whole can be served again after a stop, so it qualifies too
    assert (await get(pool, b"ignored"))[0] == 200
    assert pool.loop_runs == 21


async def test_a_streamed_request_body_never_goes_on_the_loop(load) -> None:
    pool = await load(build("hello_min"))

    async def body() -> AsyncIterator[bytes]:
        yield b"a chunk the guest never reads"

    response = await serve_request(pool, "POST", "/", body=body())
    assert (response.status, await read_body(response.body)) == (200, HELLO_MIN)
    assert pool.loop_runs == 0  # it cannot be made again: a worker runs it


async def test_a_handler_with_a_language_runtime_never_runs_on_the_loop(load) -> None:
    pool = await load(build("hello_http"))  # componentize-py: poll, clocks, files
    assert not pool.loop_exchanges
    for _ in range(3):
        status, _, body = await get(pool)
        assert (status, body) == (200, b"hello from python")
    assert pool.loop_runs == 0


async def test_an_exchange_that_would_wait_runs_again_on_a_worker(load, monkeypatch) -> None:
    # response pipes of 4 bytes: the 14-byte body cannot fit while the loop is not reading
    monkeypatch.setattr(wasi_http, "Pipe", lambda: Pipe(capacity=4))
    pool = await load(build("hello_min"))
    status, headers, body = await get(pool)
    # the whole answer, once: the stopped run's response went nowhere
    assert (status, body) == (200, HELLO_MIN)
    assert headers["content-type"] == b"text/plain"
    assert (pool.loop_runs, pool.loop_stops) == (1, 1)
    assert pool.discarded == 1  # the instance it stopped in


async def test_an_exchange_past_the_loops_budget_runs_again_on_a_worker(load) -> None:
    pool = await load(build("spin_http_min"))
    assert pool.loop_exchanges
    # each stop counts as a long exchange: three put the handler off the loop (an
    # exchange that finds no warm instance idle, the last one's still being returned,
    # goes straight to a worker)
    for _ in range(12):
        status, _, body = await get(pool)
        assert (status, body) == (200, b"")  # an answer from the worker, not a timeout
        if pool.loop_stops == 3:
            break
    assert (pool.loop_runs, pool.loop_stops) == (3, 3)
    assert pool.discarded == 3  # the instances they stopped in
    for _ in range(2):
        assert (await get(pool))[0] == 200
    assert pool.loop_runs == 3  # off the loop now: straight to a worker


async def test_a_deadline_shorter_than_the_budget_is_the_exchanges_own(load) -> None:
    pool = await load(build("spin_http_min"), limits=Limits(timeout_ms=5))
    status, _, _ = await get(pool)
    assert status == 500  # failed where it ran: not run a second time
    assert (pool.loop_runs, pool.loop_stops) == (1, 0)
    assert pool.discarded == 1


async def test_a_handler_off_the_loop_is_measured_there_again_now_and_then(
    load, monkeypatch
) -> None:
    # any exchange is too long for the loop now: a few measured there take it off
    monkeypatch.setattr(wasi_instance, "LOOP_EXCHANGE_S", 1e-9)
    pool = await load(build("hello_min"), count=4)
    for _ in range(10):
        runs = pool.loop_runs
        assert (await get(pool))[0] == 200
        if pool.loop_runs == runs:
            break  # that one went to a worker
    else:
        raise AssertionError("the handler never left the loop")
    for _ in range(wasi_instance.LOOP_PROBE - 2):
        assert (await get(pool))[0] == 200
    assert pool.loop_runs == runs
    # the next one is a probe on the loop (a few more if no warm instance was idle then)
    for _ in range(8):
        assert (await get(pool))[0] == 200
        if pool.loop_runs > runs:
            break
    assert (pool.loop_runs, pool.loop_stops) == (runs + 1, 0)
