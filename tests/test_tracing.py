"""OpenTelemetry: one call through a provider is one trace of connected spans.

A caller (the test, with its own tracer) calls the counter component on host A; its
`increment` goes through the wasi:keyvalue link to the keyvalue-nats provider on host B.
Both hosts export to a real OTLP/HTTP receiver started here (tests/otlp.py), and so
does the provider (it gets the endpoint in its start-up data). The spans must form one
trace: caller → A's invocation (server) → A's link calls (client) → the provider's
handling (server, in the provider's process), checked by span and parent ids, and the
`traceparent` each link call carried on the wire is its own span's. With tracing off,
nothing reaches the receiver (even with OTEL_* variables pointing at it) and no link
call carries a `traceparent`.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from host.config import HostConfig
from host.host import Host
from lattice import codec
from lattice.client import LatticeClient
from lattice.protocol.invocation import ERROR_HEADER, TRACEPARENT_HEADER
from lattice.tracing import Tracing, traces_url
from tests.conftest import CACHE
from tests.otlp import CLIENT, SERVER, OtlpReceiver, Received

COUNTER = "lattice:examples/counter"
SECRET = "s3cr3t-token-never-in-a-span"


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = await OtlpReceiver().start()
    try:
        yield r
    finally:
        await r.stop()


async def _hosts(nats_url: str, lattice: str, endpoint: str | None) -> list[Host]:
    hosts = []
    for role in ("component", "provider"):
        host = Host(
            HostConfig(
                nats_url=nats_url,
                lattice=lattice,
                labels={"role": role},
                data_dir=CACHE / "test-host",
                embedded_nats=False,
                otlp_endpoint=endpoint,
            )
        )
        await host.start()
        hosts.append(host)
    return hosts


async def _setup(client: LatticeClient, a: Host, b: Host, counter_ref: str) -> None:
    """counter on A, linked to a keyvalue-nats provider on B (config with a secret)."""
    bucket = f"kv_{uuid.uuid4().hex[:8]}"
    await client.put_config("store", {"bucket": bucket, "token": SECRET}, ["token"])
    await client.start_provider(b.host_id, "builtin://keyvalue-nats", "kv")
    await client.scale_component(a.host_id, counter_ref, "counter", 1)
    await client.put_link(
        "counter", "kv", "wasi", "keyvalue", ["store", "atomics"], target_config=["store"]
    )


async def _stop(hosts: list[Host]) -> None:
    await asyncio.gather(*(h.stop("test finished") for h in hosts), return_exceptions=True)


def _spy(seen: list[Msg]) -> object:
    async def cb(msg: Msg) -> None:
        seen.append(msg)

    return cb


@pytest.mark.parametrize("provider_on", ["another host", "the same host"])
async def test_one_call_through_a_provider_is_one_connected_trace(
    provider_on: str,
    nats_url: str,
    lattice_name: str,
    client: LatticeClient,
    nc: NATS,
    receiver: OtlpReceiver,
    linked_refs: dict[str, str],
) -> None:
    a, b = hosts = await _hosts(nats_url, lattice_name, receiver.url)
    if provider_on == "the same host":  # its calls go through the provider's socket
        b = a
    try:
        await _setup(client, a, b, linked_refs["counter"])
        # a plain subscriber gets a copy of every link call the provider's queue group gets
        wire: list[Msg] = []
        spy = await nc.subscribe(f"{lattice_name}.kv.rpc.>", cb=_spy(wire))  # type: ignore[arg-type]
        await nc.flush()

        caller = Tracing(receiver.url, service="test-caller", instance_id="pytest")
        root = caller.client("pytest counter.increment", None, {"test": "tracing"})
        subject = f"{lattice_name}.counter.rpc.{COUNTER}.increment"
        msg = await nc.request(
            subject, codec.pack(["hits"]), timeout=10, headers=caller.headers(root, {})
        )
        caller.finish(root, None)
        await caller.close(5.0)
        assert codec.unpack(msg.data) == {"ok": 1}
        trace_id = format(root.get_span_context().trace_id, "032x")
        root_id = format(root.get_span_context().span_id, "016x")

        def complete(spans: list[Received]) -> bool:
            mine = [s for s in spans if s.trace_id == trace_id]
            links = [s for s in mine if s.name.startswith("call ") and s.kind == CLIENT]
            served = [s for s in mine if s.name.startswith("serve ")]
            return (
                any(s.span_id == root_id for s in mine)
                and any(s.name.startswith("invoke ") for s in mine)
                and bool(links)
                and len(served) >= len(links)
            )

        spans = await receiver.wait_for(complete)
        await spy.unsubscribe()
    finally:
        await _stop(hosts)

    assert {s.trace_id for s in spans} == {trace_id}, "every span exported is in one trace"
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans)
    caller_span = by_id[root_id]
    assert caller_span.parent_id == "" and caller_span.resource["service.name"] == "test-caller"

    invokes = [s for s in spans if s.name.startswith("invoke ")]
    assert len(invokes) == 1
    inv = invokes[0]
    assert inv.kind == SERVER and inv.parent_id == root_id
    assert inv.resource["service.name"] == "lattice-host"
    assert inv.resource["service.instance.id"] == a.host_id
    assert inv.attributes == {
        "lattice.name": lattice_name,
        "lattice.host_id": a.host_id,
        "lattice.component_id": "counter",
        "lattice.function": f"{COUNTER}.increment",
        "lattice.outcome": "ok",
    }

    links = [s for s in spans if s.name.startswith("call ")]
    served = [s for s in spans if s.name.startswith("serve ")]
    assert links and len(served) == len(links), (links, served)
    for link in links:
        assert link.kind == CLIENT and link.parent_id == inv.span_id
        assert link.resource["service.instance.id"] == a.host_id
        assert link.attributes["lattice.link_name"] == "default"
        assert link.attributes["lattice.target"] == "kv"
        assert link.attributes["lattice.source_id"] == "counter"
        assert link.attributes["lattice.function"].startswith("wasi:keyvalue/")
        assert link.attributes["lattice.outcome"] == "ok"
        children = [s for s in served if s.parent_id == link.span_id]
        assert len(children) == 1, f"{link.name} has {len(children)} provider spans"
        child = children[0]
        assert child.kind == SERVER
        assert child.resource["service.name"] == "lattice-provider"
        assert child.resource["service.instance.id"] == "kv"
        assert child.resource["lattice.host_id"] == b.host_id
        assert child.attributes["lattice.function"] == link.attributes["lattice.function"]
        assert child.attributes["lattice.outcome"] == "ok"
    assert any(s.attributes["lattice.function"].endswith(".increment") for s in links)

    # identities only: no config value, no secret, anywhere in what was exported
    for s in spans:
        for value in [*s.attributes.values(), *s.resource.values()]:
            assert SECRET not in str(value) and "kv_" not in str(value), (s.name, value)

    if b is a:  # nothing crossed NATS, and the context still reached the provider
        assert wire == []
        assert all(s.attributes.get("lattice.transport") == "unix" for s in links)
        return
    # on the wire: each link call carried its own span's context, in this trace
    carried = [m.headers.get(TRACEPARENT_HEADER, "") for m in wire if m.headers]
    # version-trace-parent-flags; flags are sampled (01), maybe with the random bit (02)
    assert {tuple(tp.split("-")[:3]) for tp in carried} == {
        ("00", trace_id, s.span_id) for s in links
    }
    assert all(int(tp.rsplit("-", 1)[1], 16) & 1 for tp in carried)
    assert len(wire) == len(links)


async def test_tracing_off_exports_nothing_and_adds_no_traceparent(
    nats_url: str,
    lattice_name: str,
    client: LatticeClient,
    nc: NATS,
    receiver: OtlpReceiver,
    linked_refs: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the SDK's own variables point at the receiver: without --otlp-endpoint they are ignored
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_url(receiver.url))
    a, b = hosts = await _hosts(nats_url, lattice_name, None)
    try:
        assert a.tracing is None and a.components.tracing is None and a.bridge.tracing is None
        await _setup(client, a, b, linked_refs["counter"])
        wire: list[Msg] = []
        spy = await nc.subscribe(f"{lattice_name}.kv.rpc.>", cb=_spy(wire))  # type: ignore[arg-type]
        await nc.flush()
        subject = f"{lattice_name}.counter.rpc.{COUNTER}.increment"
        caller_tp = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        for headers in (None, {TRACEPARENT_HEADER: caller_tp}):
            msg = await nc.request(subject, codec.pack(["hits"]), timeout=10, headers=headers)
            assert "ok" in codec.unpack(msg.data)
            assert TRACEPARENT_HEADER not in (msg.headers or {})
        await asyncio.sleep(1.5)  # three times the batch delay a tracing host would wait
        await spy.unsubscribe()
    finally:
        await _stop(hosts)
    assert wire, "the spy saw the link calls"
    assert all(TRACEPARENT_HEADER not in (m.headers or {}) for m in wire)
    assert receiver.requests == 0 and receiver.spans == []


async def test_lattice_call_show_trace_names_the_trace_the_host_exported(
    nats_url: str,
    lattice_name: str,
    client: LatticeClient,
    receiver: OtlpReceiver,
    echo_ref: str,
) -> None:
    host, other = await _hosts(nats_url, lattice_name, receiver.url)
    try:
        await other.stop("not needed")
        await client.scale_component(host.host_id, echo_ref, "echo", 1)
        env = {**os.environ, "LATTICE_CONFIG_DIR": "/nonexistent-lattice"}
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "lattice", "call", "echo", "echo", '"hi"', "--show-trace"),
            *("--nats-url", nats_url, "--lattice", lattice_name),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == '"hi"'
        found = re.search(r"trace id ([0-9a-f]{32})", err.decode())
        assert found, err.decode()
        trace_id = found[1]
        # a call refused before any pool saw it gets a span too, with the error's kind
        refused_trace, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        msg = await client.nc.request(
            f"{lattice_name}.echo.rpc.no-such-function",
            codec.pack([]),
            timeout=10,
            headers={TRACEPARENT_HEADER: f"00-{refused_trace}-{parent}-01"},
        )
        assert (msg.headers or {}).get(ERROR_HEADER) == "unknown-function"
        spans = await receiver.wait_for(
            lambda ss: {trace_id, refused_trace} <= {s.trace_id for s in ss}
        )
    finally:
        await _stop([host])
    (inv,) = [s for s in spans if s.trace_id == trace_id]
    assert inv.name == "invoke lattice:examples/echo.echo" and inv.parent_id
    assert inv.attributes["lattice.source_id"] == "lattice-cli"
    assert inv.attributes["lattice.outcome"] == "ok"
    (refused,) = [s for s in spans if s.trace_id == refused_trace]
    assert refused.parent_id == parent and refused.kind == SERVER
    assert refused.attributes["lattice.function"] == "no-such-function"
    assert refused.attributes["lattice.outcome"] == "unknown-function"
    assert refused.status_code == 2  # STATUS_CODE_ERROR


async def test_a_dead_receiver_fails_no_call_and_holds_no_stop(
    nats_url: str, lattice_name: str, client: LatticeClient, echo_ref: str
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    host, other = await _hosts(nats_url, lattice_name, dead)
    try:
        await other.stop("not needed")
        await client.scale_component(host.host_id, echo_ref, "echo", 2)
        calls = [client.call("echo", "echo", [f"m{i}"], timeout=10) for i in range(100)]
        assert await asyncio.gather(*calls) == [f"m{i}" for i in range(100)]
        await asyncio.sleep(0.7)  # an export was tried and refused
    finally:
        t0 = time.monotonic()
        await _stop([host])
    assert time.monotonic() - t0 < 5.0, "the last flush is bounded"


def test_bad_endpoints_are_refused_by_name() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("https://c.example/otlp/") == "https://c.example/otlp/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    for bad, words in (
        ("collector:4318", "http:// or https://"),
        ("grpc://c:4317", "got scheme 'grpc'"),
        ("http://user:pw@c:4318", "OTEL_EXPORTER_OTLP_HEADERS"),
        ("http://c:99999", "invalid port"),
    ):
        with pytest.raises(ValueError, match=words) as err:
            HostConfig(otlp_endpoint=bad)
        assert "pw" not in str(err.value)
