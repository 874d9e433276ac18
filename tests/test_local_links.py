"""Same-host links: a component calling a component that runs on the same host is served
in-process (host/runtime/imports.py, `InstancePool.run_inline`), and a keyvalue `open`
is answered by the host. Each test proves which path a call took by counting the
messages on the target's RPC subject with a plain (non-queue) NATS subscription."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from host.config import HostConfig
from host.host import Host
from host.runtime.exports import resolve
from host.runtime.imports import MAX_INLINE_DEPTH
from lattice import codec
from lattice.client import LatticeClient
from lattice.protocol.invocation import ErrorKind, InvocationError
from lattice.protocol.spy import SpyRecord, SpyWatch, watch_subject
from lattice.tracing import Tracing
from tests.conftest import CACHE, precompile
from tests.otlp import CLIENT, SERVER, OtlpReceiver, Received

RELAY = "lattice:examples/relay"
HOP = "lattice:hop/chain.hop"
GREET_HELLO = "lattice:examples/greet.hello"


@pytest.fixture(scope="session")
def hop_ref() -> str:
    from components.build import build

    path = build("hop")
    precompile(path)
    return path.as_uri()


@dataclass
class Tap:
    """Every message published on one target's RPC subjects, whoever serves them."""

    subjects: list[str] = field(default_factory=list)
    sub: Subscription | None = None

    async def settle(self, nc: NATS) -> int:
        await nc.flush()
        await asyncio.sleep(0.1)
        return len(self.subjects)


@pytest.fixture
async def tap(nc: NATS, lattice_name: str) -> AsyncIterator[object]:
    taps: list[Tap] = []

    async def on(target: str) -> Tap:
        t = Tap()

        async def cb(msg: Msg) -> None:
            t.subjects.append(msg.subject)

        t.sub = await nc.subscribe(f"{lattice_name}.{target}.rpc.>", cb=cb)
        await nc.flush()
        taps.append(t)
        return t

    yield on
    for t in taps:
        if t.sub is not None:
            await t.sub.unsubscribe()


def link_calls(host, source: str, target: str) -> tuple[int, dict[str, int]]:
    """(calls, errors by kind) the host counted for link calls source → target."""
    calls, errors = 0, {}
    for (src, _name, tgt, _fn), s in host.metrics.link_calls.items():
        if src == source and tgt == target:
            calls += s.calls
            for k, n in s.errors.items():
                errors[k] = errors.get(k, 0) + n
    return calls, errors


def served(host, component: str, source: str | None = None) -> int:
    return sum(
        s.calls
        for (cid, _fn, src), s in host.metrics.invocations.items()
        if cid == component and (source is None or src == source)
    )


async def test_same_host_call_is_in_process_and_a_remote_one_crosses_nats(
    start_host, client: LatticeClient, linked_refs: dict[str, str], tap, nc: NATS
) -> None:
    a = await start_host()
    b = await start_host()
    await client.scale_component(a.host_id, linked_refs["caller"], "caller", 2)
    await client.scale_component(a.host_id, linked_refs["greeter"], "greeter", 2)
    await client.scale_component(b.host_id, linked_refs["greeter"], "greeter-far", 2)
    await client.put_link("caller", "greeter", "lattice", "examples", ["greet"])
    near, far = await tap("greeter"), await tap("greeter-far")

    assert await client.call("caller", f"{RELAY}.relay-hello", ["Ada"]) == "Hello, Ada!"
    assert await client.call("caller", f"{RELAY}.relay-shout", [["a", "b"]]) == {"ok": "A B"}
    assert await client.call("caller", f"{RELAY}.relay-shout", [[]]) == {"err": "nothing to shout"}
    assert await near.settle(nc) == 0  # nothing crossed NATS to reach the greeter
    # both sides were counted as over NATS: a link call of the caller, a call served
    assert link_calls(a, "caller", "greeter") == (3, {})
    assert served(a, "greeter", source="caller") == 3

    await client.put_link("caller", "greeter-far", "lattice", "examples", ["greet"], replace=True)
    assert await client.call("caller", f"{RELAY}.relay-hello", ["Bo"]) == "Hello, Bo!"
    assert await far.settle(nc) == 1  # the target runs on the other host only
    assert served(b, "greeter-far", source="caller") == 1


async def test_self_call_and_cycle_run_in_process_without_deadlock(
    host, client: LatticeClient, hop_ref: str, tap, nc: NATS
) -> None:
    await client.scale_component(host.host_id, hop_ref, "hop", 4)
    await client.put_link("hop", "hop", "lattice", "hop", ["chain"])
    self_tap = await tap("hop")
    # the client's call, then three calls of hop to itself, each on a seat of its own
    assert await client.call("hop", HOP, [3, "x"], timeout=10) == {"ok": "3>2>1>x"}
    assert await self_tap.settle(nc) == 1  # only the client's call crossed NATS

    await client.scale_component(host.host_id, hop_ref, "hop-a", 2)
    await client.scale_component(host.host_id, hop_ref, "hop-b", 2)
    await client.put_link("hop-a", "hop-b", "lattice", "hop", ["chain"])
    await client.put_link("hop-b", "hop-a", "lattice", "hop", ["chain"])
    ta, tb = await tap("hop-a"), await tap("hop-b")
    assert await client.call("hop-a", HOP, [3, "y"], timeout=10) == {"ok": "3>2>1>y"}
    assert (await ta.settle(nc), await tb.settle(nc)) == (1, 0)  # a → b → a → b, in-process


async def test_nesting_past_the_inline_depth_goes_over_nats(
    host, client: LatticeClient, hop_ref: str, tap, nc: NATS
) -> None:
    hops = MAX_INLINE_DEPTH + 2
    await client.scale_component(host.host_id, hop_ref, "hop", hops + 2)
    await client.put_link("hop", "hop", "lattice", "hop", ["chain"])
    t = await tap("hop")
    want = ">".join(str(n) for n in range(hops, 0, -1)) + ">z"
    assert await client.call("hop", HOP, [hops, "z"], timeout=10) == {"ok": want}
    # the client's call, and the one link call that found MAX_INLINE_DEPTH nested already
    assert await t.settle(nc) == 2


async def test_a_busy_target_is_called_over_nats_where_another_host_serves_it(
    start_host, client: LatticeClient, hop_ref: str, tap, nc: NATS
) -> None:
    a = await start_host()
    b = await start_host()
    await client.scale_component(a.host_id, hop_ref, "hop", 1)
    await client.scale_component(b.host_id, hop_ref, "hop", 1)
    await client.put_link("hop", "hop", "lattice", "hop", ["chain"])
    # host a's only seat is taken by the call below, so its call to itself must leave
    # this host; take a out of the queue group so that NATS can only pick b for it
    rc = a.components.running["hop"]
    assert rc.subscription is not None
    await rc.subscription.unsubscribe()
    t = await tap("hop")
    pool = rc.pool
    got = await pool.call(resolve(pool.exports, HOP), [1, "w"])
    assert got == {"ok": "1>w"}
    assert await t.settle(nc) == 1  # the self-call, over NATS, served by b
    assert served(b, "hop", source="hop") == 1
    assert served(a, "hop", source="hop") == 0


async def test_errors_come_back_the_same_in_process_and_over_nats(
    start_host, client: LatticeClient, hop_ref: str, linked_refs: dict[str, str]
) -> None:
    a = await start_host()
    b = await start_host()
    await client.scale_component(a.host_id, hop_ref, "hop", 2)
    await client.scale_component(a.host_id, hop_ref, "near", 2)
    await client.scale_component(b.host_id, hop_ref, "far", 2)
    await client.scale_component(a.host_id, linked_refs["caller"], "caller", 1)
    await client.scale_component(a.host_id, linked_refs["counter"], "counter-near", 1)
    await client.scale_component(b.host_id, linked_refs["counter"], "counter-far", 1)

    async def through(target: str, name: str) -> object:
        await client.put_link("hop", target, "lattice", "hop", ["chain"], replace=True)
        return await client.call("hop", HOP, [1, name], timeout=10)

    outcomes = {}
    for where in ("near", "far"):
        ok, err, trap = [await through(where, n) for n in ("v", "fail", "trap")]
        assert ok == {"ok": "1>v"}
        assert err == {"err": "failed at the end of the chain"}  # the callee's own err
        message = trap["err"]  # the callee trapped: the caller's import gets an err
        assert f"component hop import lattice:hop/chain (link name 'default'): {where} " in message
        assert f"failed {HOP}: trap: {HOP} trapped" in message
        outcomes[where] = message.replace(where, "TARGET")
        assert link_calls(a, "hop", where)[1] == {"trap": 1}
    assert outcomes["near"] == outcomes["far"]

    messages = {}
    for where in ("counter-near", "counter-far"):  # a target without the function
        await client.put_link("caller", where, "lattice", "examples", ["greet"], replace=True)
        with pytest.raises(InvocationError) as exc:
            await client.call("caller", f"{RELAY}.relay-hello", ["x"], timeout=10)
        assert exc.value.kind is ErrorKind.TRAP
        assert f"{where} failed {GREET_HELLO}: unknown-function: {where}: " in exc.value.message
        messages[where] = exc.value.message.replace(where, "TARGET")
        assert link_calls(a, "caller", where)[1] == {"unknown-function": 1}
    assert messages["counter-near"] == messages["counter-far"]


async def test_relink_and_stop_while_same_host_calls_run(
    host, client: LatticeClient, linked_refs: dict[str, str]
) -> None:
    await client.scale_component(host.host_id, linked_refs["caller"], "caller", 4)
    await client.scale_component(host.host_id, linked_refs["greeter"], "greeter-a", 4)
    await client.scale_component(host.host_id, linked_refs["greeter"], "greeter-b", 4)
    await client.put_link("caller", "greeter-a", "lattice", "examples", ["greet"])
    stop = asyncio.Event()
    failures: list[str] = []
    done = 0
    goal, reached = 50, asyncio.Event()

    async def load() -> None:
        nonlocal done
        while not stop.is_set():
            try:
                got = await client.call("caller", f"{RELAY}.relay-hello", ["r"], timeout=10)
                assert got == "Hello, r!", got
                done += 1
                if done >= goal:
                    reached.set()
            except Exception as exc:
                failures.append(repr(exc))

    workers = [asyncio.create_task(load()) for _ in range(8)]
    await asyncio.wait_for(reached.wait(), 60)
    await client.put_link("caller", "greeter-b", "lattice", "examples", ["greet"], replace=True)
    at_relink = served(host, "greeter-a")
    # greeter-a stops while calls routed to it before the relink may still run on it:
    # its pool drains them, and anything that finds it gone goes where the link points
    await client.scale_component(host.host_id, linked_refs["greeter"], "greeter-a", 0)
    goal = done + 50
    reached.clear()
    await asyncio.wait_for(reached.wait(), 60)
    stop.set()
    await asyncio.gather(*workers)
    assert failures == []
    # the relink took effect: at most the calls in flight at the put reached greeter-a
    assert served(host, "greeter-a") - at_relink <= 8
    assert served(host, "greeter-b") >= 50
    assert served(host, "greeter-a") + served(host, "greeter-b") == done


async def test_keyvalue_open_asks_once_per_link_not_per_operation(
    start_host, client: LatticeClient, linked_refs: dict[str, str], tap, nc: NATS
) -> None:
    # the provider runs on another host, so every call it gets crosses NATS and the tap
    # sees it (to one on this host, calls go over its socket: tests/test_provider_sockets.py)
    host, elsewhere = await start_host(), await start_host()
    kv_bucket = f"kv_{uuid.uuid4().hex[:8]}"
    await client.put_config("store", {"bucket": kv_bucket})
    await client.put_config("same-store", {"bucket": kv_bucket})
    await client.start_provider(elsewhere.host_id, "builtin://keyvalue-nats", "kv")
    await client.scale_component(host.host_id, linked_refs["kvtool"], "kvtool", 1)
    await client.put_link(
        "kvtool", "kv", "wasi", "keyvalue", ["store", "atomics", "batch"], target_config=["store"]
    )
    t = await tap("kv")
    bucket = f"b{uuid.uuid4().hex[:8]}"
    tool = "lattice:examples/kvtool"
    prefix = f"{host.lattice}.kv.rpc.wasi:keyvalue/store"

    async def get(name: str) -> object:
        return await client.call("kvtool", f"{tool}.get", [name, "missing"])

    assert await get(bucket) == {"ok": None}
    assert await t.settle(nc) == 2  # the first open of this bucket over this link asks
    assert t.subjects == [f"{prefix}.open", f"{prefix}.bucket.get"]
    t.subjects.clear()
    assert await get(bucket) == {"ok": None}
    assert await t.settle(nc) == 1  # then a get is one round trip
    # and stays one: the answer is kept for the link, not for a few seconds
    await asyncio.sleep(5.5)
    t.subjects.clear()
    assert await get(bucket) == {"ok": None}
    assert await t.settle(nc) == 1 and t.subjects == [f"{prefix}.bucket.get"]
    # a bucket the provider refuses is refused by `open` every time, as before
    t.subjects.clear()
    assert await get("bad bucket!") == {"err": "no-such-store"}
    assert await get("bad bucket!") == {"err": "no-such-store"}
    assert await t.settle(nc) == 2 and t.subjects == [f"{prefix}.open"] * 2
    # a changed link asks again
    await client.put_link(
        "kvtool",
        "kv",
        "wasi",
        "keyvalue",
        ["store", "atomics", "batch"],
        target_config=["same-store"],
    )
    t.subjects.clear()
    assert await get(bucket) == {"ok": None}
    assert await t.settle(nc) == 2
    # and with no link at all, `open` fails at once, naming the import
    await client.del_link("kvtool", "wasi", "keyvalue")
    got = await client.call("kvtool", f"{tool}.set", [bucket, "k", b"v"])
    assert "no link" in got["err"] and "wasi:keyvalue/store" in got["err"]


async def test_spy_sees_a_same_host_call_on_both_sides(
    host, client: LatticeClient, linked_refs: dict[str, str], nc: NATS, lattice_name: str
) -> None:
    await client.scale_component(host.host_id, linked_refs["caller"], "caller", 1)
    await client.scale_component(host.host_id, linked_refs["greeter"], "greeter", 1)
    await client.put_link("caller", "greeter", "lattice", "examples", ["greet"])
    inbox = nc.new_inbox()
    records: list[SpyRecord] = []

    async def on(msg: Msg) -> None:
        records.append(SpyRecord.model_validate_json(msg.data))

    sub = await nc.subscribe(inbox, cb=on)
    for cid in ("caller", "greeter"):
        await nc.publish(
            watch_subject(lattice_name, cid), SpyWatch(inbox=inbox).model_dump_json().encode()
        )
    await nc.flush()
    for _ in range(500):  # the host took both leases
        if host.spy.active("caller") and host.spy.active("greeter"):
            break
        await asyncio.sleep(0.01)
    assert await client.call("caller", f"{RELAY}.relay-hello", ["Spy"]) == "Hello, Spy!"
    await asyncio.sleep(0.3)
    await sub.unsubscribe()
    seen = {(r.component_id, r.direction, r.caller, r.function) for r in records}
    assert ("caller", "out", "caller", GREET_HELLO) in seen  # the caller's link call
    assert ("greeter", "in", "caller", GREET_HELLO) in seen  # the greeter serving it
    inbound = next(r for r in records if r.component_id == "greeter")
    assert inbound.outcome == "ok" and "Spy" in inbound.request and "Hello, Spy!" in inbound.reply


async def test_deadlines_are_the_same_in_process_and_over_nats(
    start_host, client: LatticeClient, hop_ref: str
) -> None:
    a = await start_host()
    b = await start_host()
    await client.scale_component(a.host_id, hop_ref, "hop", 1)
    await client.scale_component(a.host_id, hop_ref, "hasty", 1, limits={"timeout_ms": 500})
    for host, cid in ((a, "near"), (b, "far")):
        await client.scale_component(host.host_id, hop_ref, cid, 1, limits={"timeout_ms": 300})
        await client.scale_component(
            host.host_id, hop_ref, f"{cid}-slow", 1, limits={"timeout_ms": 3000}
        )
    loop = asyncio.get_running_loop()
    for where in ("near", "far"):
        # the callee's own deadline stops it: its timeout comes back as the call's error
        await client.put_link("hop", where, "lattice", "hop", ["chain"], replace=True)
        got = await client.call("hop", HOP, [1, "spin"], timeout=10)
        message = got["err"]
        assert f"{where} failed {HOP}: timeout: {HOP} exceeded its deadline of 300 ms" in message
        assert link_calls(a, "hop", where)[1] == {"timeout": 1}
        # the caller's timeout is the shorter: the link call gives up when it passes (the
        # in-process callee is stopped then, not at its own 3 s), as a NATS request
        # would; whether the caller, then at its own deadline, traps before it returns
        # the err depends on where the epoch tick falls, on either path
        slow = f"{where}-slow"
        await client.put_link("hasty", slow, "lattice", "hop", ["chain"], replace=True)
        started = loop.time()
        try:
            got = await client.call("hasty", HOP, [1, "spin"], timeout=10)
        except InvocationError as exc:
            assert exc.kind is ErrorKind.TIMEOUT
            assert "exceeded its deadline of 500 ms" in exc.message
        else:
            assert f"target {slow} did not answer {HOP} within 0.5s" in got["err"], got
        assert loop.time() - started < 2.5
        assert link_calls(a, "hasty", slow)[1] == {"timeout": 1}


async def test_a_same_host_call_is_one_trace_as_over_nats(
    nats_url: str, lattice_name: str, client: LatticeClient, nc: NATS, linked_refs: dict[str, str]
) -> None:
    receiver = await OtlpReceiver().start()
    host = Host(
        HostConfig(
            nats_url=nats_url,
            lattice=lattice_name,
            data_dir=CACHE / "test-host",
            embedded_nats=False,
            otlp_endpoint=receiver.url,
        )
    )
    await host.start()
    try:
        await client.scale_component(host.host_id, linked_refs["caller"], "caller", 1)
        await client.scale_component(host.host_id, linked_refs["greeter"], "greeter", 1)
        await client.put_link("caller", "greeter", "lattice", "examples", ["greet"])
        tracer = Tracing(receiver.url, service="test-caller", instance_id="pytest")
        root = tracer.client("pytest relay-hello", None, {})
        msg = await nc.request(
            f"{lattice_name}.caller.rpc.{RELAY}.relay-hello",
            codec.pack(["T"]),
            timeout=10,
            headers=tracer.headers(root, {}),
        )
        tracer.finish(root, None)
        await tracer.close(5.0)
        assert codec.unpack(msg.data) == "Hello, T!"
        trace_id = format(root.get_span_context().trace_id, "032x")

        def complete(spans: list[Received]) -> bool:
            return len([s for s in spans if s.trace_id == trace_id]) >= 4

        spans = await receiver.wait_for(complete)
    finally:
        await host.stop("test finished")
        await receiver.stop()
    mine = {s.name: s for s in spans if s.trace_id == trace_id}
    outer = mine[f"invoke {RELAY}.relay-hello"]
    link = mine[f"call {GREET_HELLO}"]
    inner = mine[f"invoke {GREET_HELLO}"]
    assert outer.parent_id == format(root.get_span_context().span_id, "016x")
    assert link.kind == CLIENT and link.parent_id == outer.span_id
    assert link.attributes["lattice.target"] == "greeter"
    assert link.attributes["lattice.outcome"] == "ok"
    assert inner.kind == SERVER and inner.parent_id == link.span_id
    assert inner.attributes == {
        "lattice.name": lattice_name,
        "lattice.host_id": host.host_id,
        "lattice.component_id": "greeter",
        "lattice.source_id": "caller",
        "lattice.function": GREET_HELLO,
        "lattice.outcome": "ok",
    }
