"""Hostile input, bounded: Hypothesis throws payloads at every control operation and at
a component's RPC subject of a live host, and the host must answer each one with a
clear error (or a success), never die, and keep its state usable.

The host runs on an event loop of its own (a thread), so Hypothesis can drive it from
plain test functions. Payloads are raw bytes, arbitrary JSON values, and JSON objects
made of the request models' own field names with values of any type, which is where a
handler that trusts a field would break. `host.stop` gets only malformed payloads (a
well-formed one would stop the host under test). A reply that shows an unexpected
exception (`… failed: SomeError: …`, the generic catch in host/ctl.py) fails the test:
every input gets an error that says what was wrong.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import msgpack
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.build import build
from host.config import HostConfig
from host.ctl import ROUTES, Scope
from host.host import Host
from lattice.protocol import subjects
from lattice.protocol.envelope import CtlReply
from lattice.protocol.links import LinkDelRequest, LinkPutRequest, LinkResolveRequest
from lattice.protocol.messages import (
    ComponentAuctionRequest,
    LabelDelRequest,
    LabelPutRequest,
    ProviderAuctionRequest,
    ScaleComponentRequest,
    StartProviderRequest,
    StopProviderRequest,
    UpdateComponentRequest,
)
from providers.sdk.hostdata import HostDataError, parse_host_data

MODELS = (
    ScaleComponentRequest,
    UpdateComponentRequest,
    ComponentAuctionRequest,
    StartProviderRequest,
    StopProviderRequest,
    ProviderAuctionRequest,
    LabelPutRequest,
    LabelDelRequest,
    LinkPutRequest,
    LinkDelRequest,
    LinkResolveRequest,
)
FIELDS = sorted({name for m in MODELS for name in m.model_fields})
UNEXPECTED = re.compile(r" failed: [A-Z]\w*(Error|Exception|Warning)\b")

Run = Callable[[Coroutine[Any, Any, Any]], Any]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
model_like = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    model_like.map(lambda v: json.dumps(v).encode()),
)


@pytest.fixture(scope="module")
def live(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Run, Host, Any]]:
    """A host and a client connection on a loop of their own, with `echo` running."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    lattice = "fuzz" + tmp_path_factory.mktemp("x").name[-6:].replace("-", "")
    host = Host(
        HostConfig(
            nats_url=nats_url,
            lattice=lattice,
            data_dir=tmp_path_factory.mktemp("fuzz-host"),
            embedded_nats=False,
        )
    )
    run(host.start())
    nc = run(nats.connect(nats_url))
    from lattice.client import LatticeClient

    client = LatticeClient(nc, lattice, timeout=30)
    run(client.scale_component(host.host_id, build("echo_min").as_uri(), "echo", 2))
    run(client.start_provider(host.host_id, "builtin://http-server", "web"))  # in process
    try:
        yield run, host, nc
    finally:
        run(nc.close())
        run(host.stop("test finished"))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _subject(host: Host, op: str) -> str:
    noun, verb = op.split(".")
    scope = ROUTES[op].scope
    target = host.host_id if scope is Scope.HOST else "fuzzed" if scope is Scope.NAMED else None
    return subjects.ctl(host.lattice, noun, verb, target)


OPS = sorted(op for op in ROUTES if op != "host.stop")


@settings(FUZZ, max_examples=400)
@given(op=st.sampled_from(OPS), payload=payloads)
def test_every_control_operation_answers_hostile_input_clearly(
    live: tuple[Run, Host, Any], op: str, payload: bytes
) -> None:
    run, host, nc = live
    msg = run(nc.request(_subject(host, op), payload, timeout=10))
    reply = CtlReply.from_bytes(msg.data)  # always the control envelope
    if not reply.success:
        assert reply.message, f"{op}: an error with no message"
        assert not UNEXPECTED.search(reply.message), f"{op} {payload!r}: {reply.message}"
        assert "Traceback" not in reply.message


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.binary(max_size=200).filter(lambda b: not b.startswith((b"{", b"\x80"))))
def test_host_stop_refuses_what_it_cannot_read(live: tuple[Run, Host, Any], payload: bytes) -> None:
    run, host, nc = live
    if not payload.strip():
        return  # an empty body is a real stop request
    reply = CtlReply.from_bytes(
        run(nc.request(_subject(host, "host.stop"), payload, timeout=10)).data
    )
    assert not reply.success and "invalid host.stop request" in reply.message


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    function=st.sampled_from(["echo", "lattice:examples/echo.echo", "nope", "x.y.z"]),
    payload=st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    ),
)
def test_rpc_codec_answers_hostile_arguments(
    live: tuple[Run, Host, Any], function: str, payload: bytes
) -> None:
    run, host, nc = live
    msg = run(nc.request(f"{host.lattice}.echo.rpc.{function}", payload, timeout=10))
    error = (msg.headers or {}).get("error")
    if error is None:  # a well-formed call: echo answers with what it got
        return
    body = msgpack.unpackb(msg.data, raw=False)
    text = json.dumps(body, default=repr)
    assert error in ("bad-argument", "unknown-function", "not-found"), (error, text)
    assert "Traceback" not in text


@settings(FUZZ, max_examples=200)
@given(
    op=st.sampled_from(["linkdefs.put", "linkdefs.del", "config.update", "health"]),
    payload=payloads,
)
def test_a_provider_answers_hostile_link_and_config_messages(
    live: tuple[Run, Host, Any], op: str, payload: bytes
) -> None:
    """The link hand-off's messages as a provider receives them (the http-server, run in
    the host): an envelope every time, a clear error for what it cannot use."""
    run, host, nc = live
    msg = run(nc.request(f"wasmbus.rpc.{host.lattice}.web.{op}", payload, timeout=10))
    reply = CtlReply.from_bytes(msg.data)
    if not reply.success:
        assert reply.message and not UNEXPECTED.search(reply.message), (op, reply.message)


@settings(FUZZ, max_examples=300)
@given(line=st.one_of(st.binary(max_size=300), model_like.map(lambda v: json.dumps(v).encode())))
def test_provider_start_up_data_is_refused_clearly(line: bytes) -> None:
    """What a provider reads on stdin: valid host data or a HostDataError naming a field."""
    import base64

    for data in (line, base64.b64encode(line)):
        try:
            parse_host_data(data)
        except HostDataError as exc:
            assert str(exc) and "Traceback" not in str(exc)


# -- the controller's API -----------------------------------------------------------

VALID = {
    "apiVersion": "core.oam.dev/v1beta1",
    "kind": "Application",
    "metadata": {"name": "fuzzed", "annotations": {"version": "v1"}},
    "spec": {
        "components": [
            {
                "name": "echo",
                "type": "component",
                "properties": {"image": "file:///nowhere/echo.wasm"},
                "traits": [{"type": "spreadscaler", "properties": {"instances": 1}}],
            }
        ]
    },
}
PATHS = [
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "annotations"),
    ("metadata", "annotations", "version"),
    ("spec",),
    ("spec", "components"),
    ("spec", "components", 0),
    ("spec", "components", 0, "name"),
    ("spec", "components", 0, "type"),
    ("spec", "components", 0, "properties"),
    ("spec", "components", 0, "properties", "image"),
    ("spec", "components", 0, "traits"),
    ("spec", "components", 0, "traits", 0, "type"),
    ("spec", "components", 0, "traits", 0, "properties"),
    ("spec", "components", 0, "traits", 0, "properties", "instances"),
]


def _mutated(path: tuple[Any, ...], value: Any) -> bytes:
    doc = json.loads(json.dumps(VALID))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(doc).encode()


manifests = st.one_of(
    st.builds(_mutated, st.sampled_from(PATHS), json_values),
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),  # YAML is text too
)
VERBS = ["get", "versions", "del", "deploy", "undeploy", "status", "history", "list", "nope"]


@pytest.fixture(scope="module")
def controller(live: tuple[Run, Host, Any]) -> Iterator[Any]:
    from lattice.controller.run.service import Controller

    run, host, _ = live
    ctl = Controller(host.nats_url, host.lattice, tick=0.3, lease_ttl=3.0, resync_interval=1.0)
    run(ctl.start())
    try:
        yield ctl
    finally:
        run(asyncio.wait_for(ctl.stop(), 30))


def _api(run: Run, nc: Any, subject: str, body: bytes) -> dict[str, Any]:
    reply = json.loads(run(nc.request(subject, body, timeout=10)).data)
    assert isinstance(reply, dict) and "result" in reply, reply
    if reply["result"] == "error":
        message = reply.get("message", "")
        assert message, f"{subject}: an error with no message"
        assert not UNEXPECTED.search(message) and "Traceback" not in message, (subject, message)
    return reply


@settings(FUZZ, max_examples=150)
@given(body=manifests)
def test_the_controller_answers_hostile_manifests_clearly(
    live: tuple[Run, Host, Any], controller: Any, body: bytes
) -> None:
    run, host, nc = live
    _api(run, nc, f"wadm.api.{host.lattice}.model.put", body)


@settings(FUZZ, max_examples=150)
@given(
    verb=st.sampled_from(VERBS),
    name=st.from_regex(r"[a-z0-9][a-z0-9-]{0,11}", fullmatch=True),
    body=payloads,
)
def test_the_controller_answers_hostile_requests_clearly(
    live: tuple[Run, Host, Any], controller: Any, verb: str, name: str, body: bytes
) -> None:
    run, host, nc = live
    suffix = "" if verb == "list" else f".{name}"
    _api(run, nc, f"wadm.api.{host.lattice}.model.{verb}{suffix}", body)


def test_the_controller_survived_and_still_takes_a_manifest(
    live: tuple[Run, Host, Any], controller: Any
) -> None:
    run, host, nc = live
    api = f"wadm.api.{host.lattice}.model"
    doc = {**VALID, "metadata": {"name": "after-fuzz", "annotations": {"version": "v1"}}}
    put = _api(run, nc, f"{api}.put", json.dumps(doc).encode())
    assert put["result"] in ("created", "newversion") and put["name"] == "after-fuzz"
    listed = _api(run, nc, f"{api}.list", b"")
    assert "after-fuzz" in {m["name"] for m in listed["models"]}


def test_the_host_survived_and_its_state_reads_back(live: tuple[Run, Host, Any]) -> None:
    """Runs after the fuzz (file order): the host answers, echo works, links read back."""
    run, host, nc = live
    from lattice.client import LatticeClient

    client = LatticeClient(nc, host.lattice, timeout=10)
    assert run(client.call("echo", "echo", ["still here"])) == "still here"
    assert {h.id for h in run(client.hosts(wait=0.5))} >= {host.host_id}
    for link in run(client.get_links()):  # whatever the fuzz stored is a valid link
        LinkPutRequest.model_validate(link)
    healthy = CtlReply.from_bytes(
        run(nc.request(f"wasmbus.rpc.{host.lattice}.web.health", b"{}", timeout=10)).data
    )
    assert healthy.success and host.providers.running["web"].process.returncode is None
