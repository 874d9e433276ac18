"""Calls on the event loop: which components qualify, when an export's calls move there
and back, and what a loop call past its budget does.

In process (a real wasmtime pool, no NATS); the host path through NATS is covered by the
minimal-guest tests, whose echo calls take it once proven.
"""

from __future__ import annotations

import asyncio

import pytest

from components.build import build
from host.config import Limits
from host.runtime.nonblocking import never_blocks
from host.runtime.pool import LOOP_BUDGET_MS, LOOP_PROVEN, InstancePool
from lattice import codec
from lattice.protocol.invocation import ErrorKind, InvocationError

SPIN = "lattice:examples/spin.spin"
ECHO = "lattice:examples/echo.echo"
LONG_SPIN = 400_000_000  # well past LOOP_BUDGET_MS on any machine (~0.1-0.5 s of wasm)


@pytest.mark.parametrize(
    ("imports", "expected"),
    [
        ([], True),
        (["wasi:cli/stdout@0.2.9", "wasi:io/streams@0.2.9", "wasi:io/error@0.2.9"], True),
        (["wasi:random/random@0.2.9", "wasi:clocks/wall-clock@0.2.9"], True),
        (["wasi:cli/stdout@0.2.9", "wasi:io/poll@0.2.9"], False),  # poll waits
        (["wasi:clocks/monotonic-clock@0.2.9"], False),  # its pollables are waited on
        (["wasi:cli/stdin@0.2.9"], False),
        (["wasi:filesystem/types@0.2.9"], False),
        (["wasi:sockets/tcp@0.2.9"], False),
        (["wasi:keyvalue/store@0.2.0-draft"], False),  # forwarded to a provider
        (["lattice:examples/echo@0.1.0"], False),  # a link to another component
    ],
)
def test_only_components_whose_imports_never_wait_qualify(imports: list[str], expected: bool):
    assert never_blocks(imports) is expected


class Caller:
    """Calls the way the host's dispatcher does: on the loop when the pool takes it
    there, else through the workers; remembers which."""

    def __init__(self, pool: InstancePool, operation: str) -> None:
        self.pool, self.export = pool, pool.exports[operation]
        self.on_loop: list[bool] = []

    async def __call__(self, *args: object) -> object:
        fut: asyncio.Future[tuple[bytes | None, InvocationError | None]]
        fut = asyncio.get_running_loop().create_future()

        def done(body: bytes | None, error: InvocationError | None) -> None:
            fut.set_result((body, error))

        body = codec.pack(list(args))
        ran_here = self.pool.run_on_loop(self.export, body, done)
        if not ran_here:
            self.pool.submit(self.export, body, done, raw=True)
        self.on_loop.append(ran_here and fut.done())  # its outcome before it returned
        reply, error = await fut
        if error is not None:
            raise error
        assert reply is not None
        return codec.unpack(reply)


async def prove(call: Caller, *args: object) -> None:
    """Short calls until the export qualifies: the next call runs on the loop (the
    decision depends on nothing else while a warm instance is idle)."""
    for _ in range(LOOP_PROVEN * 8):
        if call.pool.fits_loop(call.export.operation):
            return
        await call(*args)
    raise AssertionError(f"{call.export.operation} never qualified for the loop")


async def test_short_calls_move_onto_the_loop_once_proven(load) -> None:
    pool = await load(build("echo_min"))
    assert pool.loop_safe
    echo = Caller(pool, ECHO)
    for i in range(LOOP_PROVEN):
        assert await echo(f"hello {i}") == f"hello {i}"
    assert not any(echo.on_loop)  # the workers prove the export first
    await prove(echo, "hi")
    for i in range(LOOP_PROVEN):
        assert await echo(f"again {i}") == f"again {i}"
    # on the loop from then on; a slow call on a busy machine moves it back only with
    # another right after it
    assert echo.on_loop[-LOOP_PROVEN] is True
    assert sum(echo.on_loop[-LOOP_PROVEN:]) >= LOOP_PROVEN // 2, echo.on_loop
    assert pool.instantiated == 1  # the loop reused the warm instance, never made one


async def test_a_component_that_may_wait_never_runs_on_the_loop(load) -> None:
    pool = await load(build("echo", "v1"))  # componentize-py: imports poll, files, sockets
    assert not pool.loop_safe
    echo = Caller(pool, ECHO)
    for _ in range(LOOP_PROVEN * 2):
        assert await echo("hi") == "hi"
    assert not any(echo.on_loop)


async def test_a_loop_call_past_its_budget_runs_again_on_a_worker(load) -> None:
    pool = await load(build("spin_min"))
    spin = Caller(pool, SPIN)
    await prove(spin, 10)
    loop = asyncio.get_running_loop()
    t = loop.time()
    assert await spin(LONG_SPIN) == LONG_SPIN  # an answer, not a deadline error
    assert spin.on_loop[-1] is False  # handed to a worker, not finished on the loop
    assert loop.time() - t > LOOP_BUDGET_MS / 1000
    assert pool.discarded == 1  # the instance it was stopped in
    # the export proves itself again before its next calls come back
    assert await spin(10) == 10
    assert spin.on_loop[-1] is False


async def test_a_deadline_shorter_than_the_budget_is_the_calls_own(load) -> None:
    pool = await load(build("spin_min"), limits=Limits(timeout_ms=LOOP_BUDGET_MS // 2))
    spin = Caller(pool, SPIN)
    await prove(spin, 10)
    with pytest.raises(InvocationError) as info:
        await spin(LONG_SPIN)
    assert info.value.kind is ErrorKind.TIMEOUT
    assert "exceeded its deadline of 5 ms" in info.value.message
    assert spin.on_loop[-1] is True  # failed where it ran: not run a second time


async def test_long_calls_send_an_export_back_to_the_workers(load) -> None:
    pool = await load(build("spin_min"))
    spin = Caller(pool, SPIN)
    await prove(spin, 10)
    # calls of ~0.1-0.5 ms: each over LOOP_CALL_S, under the budget, so they finish where
    # they run, and a few in a row raise the export's average past LOOP_CALL_S
    for _ in range(LOOP_PROVEN):
        assert await spin(500_000) == 500_000
    assert not pool.fits_loop(SPIN)
    assert await spin(10) == 10
    assert spin.on_loop[-1] is False
    assert pool.discarded == 0


async def test_bad_arguments_on_the_loop_are_the_callers_error(load) -> None:
    pool = await load(build("echo_min"))
    echo = Caller(pool, ECHO)
    await prove(echo, "hi")
    with pytest.raises(InvocationError) as info:
        await echo(42)
    assert info.value.kind is ErrorKind.BAD_ARGUMENT
    assert echo.on_loop[-1] is True
    assert await echo("still here") == "still here"
