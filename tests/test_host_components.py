"""A host running real components on a real nats-server: scale, call, update, stop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from host.config import Limits
from lattice.client import LatticeClient, LatticeError
from lattice.protocol.invocation import ErrorKind, InvocationError
from tests.events import EventRecorder

ECHO = "lattice:examples/echo.echo"
DEMO = "lattice:examples/types-demo"


async def test_scale_call_and_scale_to_zero(host, client: LatticeClient, echo_ref: str) -> None:
    data = await client.scale_component(host.host_id, echo_ref, "echo", 2)
    assert data["max_instances"] == 2 and data["image_ref"] == echo_ref

    assert await client.call("echo", ECHO, ["hello lattice"]) == "hello lattice"
    assert await client.call("echo", "echo", ["short name"]) == "short name"
    assert await client.call("echo", "echo.version", []) == "v1"

    inv = await client.inventory(host.host_id)
    (desc,) = inv.components
    assert desc.id == "echo" and desc.max_instances == 2
    assert ECHO in desc.exports and f"{DEMO}.greet" in desc.exports

    gone = await client.scale_component(host.host_id, echo_ref, "echo", 0)
    assert gone["max_instances"] == 0
    assert (await client.inventory(host.host_id)).components == []
    with pytest.raises(LatticeError, match="no host runs component 'echo'"):
        await client.call("echo", ECHO, ["anyone?"], timeout=2)


async def test_scale_is_idempotent_and_resizes(host, client: LatticeClient, echo_ref: str) -> None:
    await client.scale_component(host.host_id, echo_ref, "echo", 2)
    await client.scale_component(host.host_id, echo_ref, "echo", 2)
    await client.scale_component(host.host_id, echo_ref, "echo", 5)
    (desc,) = (await client.inventory(host.host_id)).components
    assert desc.max_instances == 5 and desc.revision == 0


async def test_every_value_kind_crosses_the_lattice(
    host, client: LatticeClient, echo_ref: str
) -> None:
    await client.scale_component(host.host_id, echo_ref, "demo", 1)

    async def call(fn: str, *args: object) -> object:
        return await client.call("demo", f"{DEMO}.{fn}", list(args))

    person = {"name": "Ada", "age": 36, "email": "ada@example.org", "tags": ["math"]}
    assert await call("greet", person) == "Hello, Ada (36) <ada@example.org>"
    # a missing option field is none
    assert await call("greet", {"name": "Bo", "age": 3, "tags": []}) == "Hello, Bo (3)"
    assert await call("area", {"rectangle": {"x": 3, "y": -4}}) == 12.0
    assert await call("area", "empty") == 0.0
    assert await call("divide", 7, 2) == {"ok": 3}
    assert await call("divide", 1, 0) == {"err": "division by zero"}
    assert await call("sum", [1, 2, -3, 2**40]) == 2**40
    bob = {"name": "Bob", "age": 7, "email": None, "tags": []}
    assert await call("find", [person, bob], "Bob") == bob
    assert await call("find", [person], "Zed") is None
    assert await call("swap", ["x", 9]) == [9, "x"]
    assert await call("next-color", "blue") == "red"
    assert await call("grant", ["exec"], ["read"]) == ["read", "exec"]
    assert await call("reverse-bytes", b"\x00\x01\xff") == b"\xff\x01\x00"
    assert await call("first-char", "λx") == "λ"
    assert await call("first-char", "") is None
    assert await call("nested", None) is None
    assert await call("nested", [None]) == [None]
    assert await call("nested", [5]) == [5]
    assert await call("extremes", 2**64 - 1, -(2**63), 255, -128) == [
        2**64 - 1,
        -(2**63),
        255,
        -128,
    ]
    assert await call("check", True) == {"ok": None}
    assert await call("check", False) == {"err": "not ok"}


async def test_bad_arguments_name_the_parameter(host, client: LatticeClient, echo_ref: str) -> None:
    await client.scale_component(host.host_id, echo_ref, "demo", 1)
    with pytest.raises(InvocationError) as bad:
        await client.call("demo", f"{DEMO}.greet", [{"name": "x", "age": 300, "tags": []}])
    assert bad.value.kind is ErrorKind.BAD_ARGUMENT
    assert "age" in bad.value.message and "u8" in bad.value.message

    with pytest.raises(InvocationError) as wrong_count:
        await client.call("demo", f"{DEMO}.divide", [1])
    assert wrong_count.value.kind is ErrorKind.BAD_ARGUMENT
    assert "b: s32" in wrong_count.value.message

    with pytest.raises(InvocationError) as unknown:
        await client.call("demo", "lattice:examples/echo.nope", [])
    assert unknown.value.kind is ErrorKind.UNKNOWN_FUNCTION
    assert ECHO in unknown.value.message

    # a body that is not msgpack at all
    msg = await client.nc.request(f"{client.lattice}.demo.rpc.{ECHO}", b"\xc1\xc1", timeout=5)
    assert msg.headers["lattice-error"] == "bad-argument"
    # the component keeps serving
    assert await client.call("demo", ECHO, ["still here"]) == "still here"


async def test_trap_is_reported_and_instance_replaced(
    host, client: LatticeClient, echo_ref: str
) -> None:
    await client.scale_component(host.host_id, echo_ref, "echo", 1)
    before = await client.call("echo", f"{DEMO}.hits", [])
    assert await client.call("echo", f"{DEMO}.hits", []) == before + 1  # warm instance reused
    with pytest.raises(InvocationError) as trap:
        await client.call("echo", f"{DEMO}.fail", ["kaboom-42"])
    assert trap.value.kind is ErrorKind.TRAP
    assert "kaboom-42" in trap.value.message
    # a fresh instance took the trapped one's place: its counter starts again
    assert await client.call("echo", f"{DEMO}.hits", []) == 1
    assert await client.call("echo", ECHO, ["after trap"]) == "after trap"


async def test_runaway_call_hits_deadline_and_host_keeps_answering(
    host, client: LatticeClient, runaway_ref: str, echo_ref: str
) -> None:
    await client.scale_component(
        host.host_id, runaway_ref, "runaway", 2, limits={"timeout_ms": 500}
    )
    await client.scale_component(host.host_id, echo_ref, "echo", 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    spin = asyncio.create_task(client.call("runaway", "spin", [], timeout=20))
    await asyncio.sleep(0.1)
    # while the runaway call burns its thread, the host and other components answer
    assert [h.id for h in await client.hosts(wait=0.5, expect=1)] == [host.host_id]
    assert await client.call("echo", ECHO, ["meanwhile"]) == "meanwhile"
    with pytest.raises(InvocationError) as timeout:
        await spin
    elapsed = loop.time() - started
    assert timeout.value.kind is ErrorKind.TIMEOUT
    assert "500 ms" in timeout.value.message
    assert elapsed < 5, f"deadline of 0.5 s took {elapsed:.1f} s to enforce"
    assert await client.call("runaway", "ping", []) == "pong"


async def test_memory_cap_discards_instance(host, client: LatticeClient, runaway_ref: str) -> None:
    await client.scale_component(host.host_id, runaway_ref, "hog", 1, limits={"memory_mb": 96})
    assert await client.call("hog", "hog", [8]) == 8
    with pytest.raises(InvocationError) as oom:
        await client.call("hog", "hog", [200])
    assert oom.value.kind is ErrorKind.RESOURCE_LIMIT, oom.value
    assert "ran out of memory (limit 96 MiB): MemoryError" in oom.value.message
    assert await client.call("hog", "ping", []) == "pong"
    assert await client.call("hog", "hog", [1]) == 1  # fresh instance: nothing kept


async def test_update_under_load_has_no_failed_call(
    host, client: LatticeClient, echo_ref: str, echo_v2_ref: str
) -> None:
    await client.scale_component(host.host_id, echo_ref, "echo", 4)
    failures: list[BaseException] = []
    versions: list[str] = []
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                versions.append(await client.call("echo", "echo.version", []))
            except Exception as exc:  # recorded: the assertion below must see it
                failures.append(exc)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    await asyncio.sleep(0.5)
    data = await client.update_component(host.host_id, "echo", echo_v2_ref)
    assert data["image_ref"] == echo_v2_ref
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*workers)
    assert failures == []
    assert "v1" in versions and versions[-1] == "v2"
    first_v2 = versions.index("v2")
    assert all(v == "v2" for v in versions[first_v2 + 50 :])
    (desc,) = (await client.inventory(host.host_id)).components
    assert desc.image_ref == echo_v2_ref and desc.revision == 1


async def test_scale_failures_are_clear(
    host, client: LatticeClient, echo_ref: str, tmp_path
) -> None:
    rec = await EventRecorder.start(client.nc, client.lattice)
    missing = (tmp_path / "nope.wasm").as_uri()
    with pytest.raises(LatticeError, match="no such file"):
        await client.scale_component(host.host_id, missing, "x", 1)
    ev = await rec.wait_for("component_scale_failed", lambda d: d["component_id"] == "x")
    assert "no such file" in ev["data"]["error"]

    core = tmp_path / "core.wasm"
    core.write_bytes(b"\0asm\x01\0\0\0")
    with pytest.raises(LatticeError, match="core WebAssembly module"):
        await client.scale_component(host.host_id, core.as_uri(), "core", 1)

    corrupt = tmp_path / "corrupt.wasm"
    corrupt.write_bytes(b"\0asm\x0d\0\x01\0" + b"\xff" * 64)
    with pytest.raises(LatticeError, match="not a valid component"):
        await client.scale_component(host.host_id, corrupt.as_uri(), "corrupt", 1)

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(LatticeError, match="not a WebAssembly file"):
        await client.scale_component(host.host_id, text.as_uri(), "text", 1)

    await client.scale_component(host.host_id, echo_ref, "echo", 1)
    with pytest.raises(LatticeError, match="already runs"):
        await client.scale_component(host.host_id, corrupt.as_uri(), "echo", 1)
    assert await client.call("echo", ECHO, ["fine"]) == "fine"
    await rec.stop()


async def test_two_hosts_share_the_calls(start_host, client: LatticeClient, echo_ref: str) -> None:
    a = await start_host(labels={"zone": "a"})
    b = await start_host(labels={"zone": "b"})
    for h in (a, b):
        await client.scale_component(h.host_id, echo_ref, "echo", 2)
    served: set[str | None] = set()
    for i in range(60):
        value, who = await client.call_traced("echo", ECHO, [f"m{i}"])
        assert value == f"m{i}"
        served.add(who)
    assert served == {a.host_id, b.host_id}
    hosts = {h.id: h for h in await client.hosts(wait=1.0, expect=2)}
    assert hosts[a.host_id].labels["zone"] == "a" and hosts[b.host_id].labels["zone"] == "b"
    # one host leaves: its calls go to the other, none fail
    await a.stop("test")
    for i in range(10):
        value, who = await client.call_traced("echo", ECHO, [f"n{i}"])
        assert who == b.host_id


async def test_heartbeat_and_stop_events(start_host, client: LatticeClient, echo_ref: str) -> None:
    rec = await EventRecorder.start(client.nc, client.lattice)
    h = await start_host(heartbeat_interval=0.2, labels={"role": "edge"})
    await client.scale_component(h.host_id, echo_ref, "echo", 1)
    beat = await rec.wait_for("host_heartbeat", lambda d: bool(d["components"]))
    assert beat["source"] == h.host_id and beat["specversion"] == "1.0"
    assert beat["data"]["labels"]["role"] == "edge"
    assert beat["data"]["labels"]["hostcore.os"]
    assert beat["data"]["components"][0]["id"] == "echo"
    started = rec.of_type("host_started")
    assert started and started[0]["data"]["host_id"] == h.host_id
    await h.stop("test over")
    stopped = await rec.wait_for("host_stopped")
    scaled_down = [e for e in rec.of_type("component_scaled") if e["data"]["max_instances"] == 0]
    assert scaled_down, "components stop (and say so) before host_stopped"
    assert rec.events.index(scaled_down[-1]) < rec.events.index(stopped)
    await rec.stop()


async def test_host_stop_over_control_interface(start_host, client: LatticeClient) -> None:
    h = await start_host()
    rec = await EventRecorder.start(client.nc, client.lattice)
    assert "stopping" in await client.stop_host(h.host_id)
    await rec.wait_for("host_stopped", lambda d: d["host_id"] == h.host_id)
    await asyncio.sleep(0.2)
    assert await client.hosts(wait=0.5) == []
    await rec.stop()


async def test_many_calls_in_flight(host, client: LatticeClient, echo_ref: str) -> None:
    await client.scale_component(host.host_id, echo_ref, "echo", 8)
    results = await asyncio.gather(*(client.call("echo", ECHO, [str(i)]) for i in range(200)))
    assert results == [str(i) for i in range(200)]
    (desc,) = (await client.inventory(host.host_id)).components
    assert 1 <= desc.instances_warm <= 8


async def test_limits_from_host_defaults(
    start_host, client: LatticeClient, runaway_ref: str
) -> None:
    h = await start_host(limits=Limits(timeout_ms=300, memory_mb=256))
    await client.scale_component(h.host_id, runaway_ref, "r", 1)
    (desc,) = (await client.inventory(h.host_id)).components
    assert desc.limits == {"timeout_ms": 300, "memory_mb": 256}
    with pytest.raises(InvocationError) as t:
        await client.call("r", "spin", [], timeout=10)
    assert t.value.kind is ErrorKind.TIMEOUT
    with contextlib.suppress(Exception):
        await client.scale_component(h.host_id, runaway_ref, "r", 0)


async def test_component_from_http_url(host, client: LatticeClient, built, tmp_path) -> None:
    """An http:// reference is downloaded (here from a throw-away local server)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(built["echo"].parent)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        await client.scale_component(host.host_id, f"{base}/{built['echo'].name}", "web", 1)
        assert await client.call("web", ECHO, ["over http"]) == "over http"
        with pytest.raises(LatticeError, match="HTTP 404"):
            await client.scale_component(host.host_id, f"{base}/missing.wasm", "web404", 1)
    finally:
        server.shutdown()
