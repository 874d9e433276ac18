"""The capability policy on real hosts: link put, config, egress, the policy service.

Each test runs real hosts on the session's nats-server with real components. The
policy record is the config `policy=<component id>` (lattice/policy.py); the external
policy service is a NATS responder in the test that records every request it gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nkeys
import pytest
from nats.aio.client import Client as NATS

from host.config import HostConfig
from host.host import Host
from host.policy import PolicySettings
from host.wasi import read_body, serve_request
from lattice import natsjwt
from lattice.artifacts import claims
from lattice.client import LatticeClient, LatticeError
from lattice.protocol.invocation import ErrorKind, InvocationError
from lattice.protocol.policy import PolicyRequest, PolicyResponse
from tests.conftest import CACHE
from tests.events import EventRecorder

RELAY = "lattice:examples/relay"
SETTINGS = "lattice:examples/settings"


# -- link put ---------------------------------------------------------------------------


async def test_link_put_beyond_the_policy_is_refused_and_an_allowed_one_carries_calls(
    host: Host, client: LatticeClient, linked_refs: dict[str, str]
) -> None:
    await client.scale_component(host.host_id, linked_refs["caller"], "caller", 1)
    await client.scale_component(host.host_id, linked_refs["greeter"], "greeter", 1)
    await client.put_config("policy=caller", {"imports": "wasi:keyvalue/*"})
    rec = await EventRecorder.start(client.nc, client.lattice)
    with pytest.raises(LatticeError) as refused:
        await client.put_link("caller", "greeter", "lattice", "examples", ["greet"])
    assert str(refused.value) == (
        "link put refused by the capability policy policy=caller: component caller may not "
        "import lattice:examples/greet (its policy allows imports: wasi:keyvalue/*)"
    )
    failed = await rec.wait_for("linkdef_set_failed")
    assert "policy=caller" in failed["data"]["error"]
    assert await client.get_links() == []
    await rec.stop()

    await client.put_config("policy=caller", {"imports": "lattice:examples/greet"})
    await client.put_link("caller", "greeter", "lattice", "examples", ["greet"])
    assert await client.call("caller", f"{RELAY}.relay-hello", ["Ada"]) == "Hello, Ada!"


async def test_a_bad_policy_record_is_refused_naming_the_field(
    host: Host, client: LatticeClient
) -> None:
    with pytest.raises(LatticeError, match=r"policy of caller: imports: 'wasi/keyvalue' is not"):
        await client.put_config("policy=caller", {"imports": "wasi/keyvalue"})
    with pytest.raises(LatticeError, match="imprts: unknown policy field"):
        await client.put_config("policy=caller", {"imprts": "*"})
    with pytest.raises(LatticeError, match="no config named"):
        await client.get_config("policy=caller")


# -- config -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings_ref() -> str:
    from components.build import build

    return build("settings").as_uri()


async def test_config_the_policy_does_not_allow_is_refused_at_start_link_and_read(
    host: Host, client: LatticeClient, settings_ref: str
) -> None:
    await client.put_config("base", {"greeting": "hello"})
    await client.put_config("private", {"greeting": "psst"})
    await client.put_config("policy=settings", {"config": "base"})
    with pytest.raises(LatticeError) as at_start:
        await client.scale_component(
            host.host_id, settings_ref, "settings", 1, config=["base", "private"]
        )
    assert str(at_start.value) == (
        "component start refused by the capability policy policy=settings: component "
        "settings may not read config private (its policy allows config: base)"
    )
    assert "settings" not in host.components.running

    with pytest.raises(LatticeError, match="policy=settings: component settings may not read"):
        await client.put_link(
            "settings", "kv", "wasi", "keyvalue", ["store"], source_config=["private"]
        )

    await client.scale_component(host.host_id, settings_ref, "settings", 1, config=["base"])
    assert await client.call("settings", f"{SETTINGS}.get", ["greeting"]) == "hello"

    # the policy narrows later: the attached config is withheld, every read says why
    await client.put_config("policy=settings", {"config": "other-*"})
    for fn, args in (("get", ["greeting"]), ("all", [])):
        with pytest.raises(InvocationError) as at_read:
            await client.call("settings", f"{SETTINGS}.{fn}", args)
        assert at_read.value.kind is ErrorKind.TRAP
        assert "config read refused by the capability policy policy=settings" in str(at_read.value)
        assert "may not read config base" in str(at_read.value)

    await client.del_config("policy=settings")  # no policy: open again
    assert await client.call("settings", f"{SETTINGS}.get", ["greeting"]) == "hello"


# -- egress -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("upstream")
    (root / "hi.txt").write_text("upstream says hi")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def fetch_ref() -> str:
    from components.build import build
    from tests.conftest import precompile

    path = build("fetch_http")
    precompile(path)
    return path.as_uri()


async def test_egress_is_denied_by_default_and_follows_the_policy(
    host: Host, client: LatticeClient, fetch_ref: str, upstream: str
) -> None:
    await client.put_config("fetch-cfg", {"greeting": "no allowed_hosts"})
    await client.scale_component(host.host_id, fetch_ref, "fetch", 1, config=["fetch-cfg"])
    pool = host.components.running["fetch"].pool
    url = f"http://{upstream}/hi.txt"

    async def status() -> tuple[int, bytes]:
        resp = await serve_request(pool, "GET", f"/?url={quote(url, safe='')}")
        return resp.status, await read_body(resp.body)

    code, body = await status()  # no policy, no allowed_hosts: denied
    assert code == 502 and b"HttpRequestDenied" in body

    await client.put_config("policy=fetch", {"imports": "*"})  # a policy without egress
    code, body = await status()
    assert code == 502 and b"HttpRequestDenied" in body

    await client.put_config("fetch-cfg", {"allowed_hosts": upstream})  # the compatible source
    code, body = await status()
    assert (code, body) == (200, b"upstream says hi")

    await client.put_config("policy=fetch", {"egress": "example.org"})  # the policy wins
    code, body = await status()
    assert code == 502 and b"HttpRequestDenied" in body

    await client.put_config("fetch-cfg", {"greeting": "no allowed_hosts again"})
    await client.put_config("policy=fetch", {"egress": f"example.org, {upstream}"})
    code, body = await status()
    assert (code, body) == (200, b"upstream says hi")


# -- the external policy service ---------------------------------------------------------


class PolicyService:
    """A policy service on `subject`: answers with `decide(request)`, records requests."""

    def __init__(self, decide: Callable[[PolicyRequest], PolicyResponse | None]) -> None:
        self.decide = decide
        self.requests: list[PolicyRequest] = []
        self._sub: Any = None

    async def serve(self, nc: NATS, subject: str) -> None:
        async def on_request(msg: Any) -> None:
            req = PolicyRequest.model_validate_json(msg.data)
            self.requests.append(req)
            answer = self.decide(req)
            if answer is not None:  # None: stay silent (a service that hangs)
                await msg.respond(answer.model_dump_json().encode())

        self._sub = await nc.subscribe(subject, cb=on_request)
        await nc.flush()


def permit(req: PolicyRequest) -> PolicyResponse:
    return PolicyResponse(request_id=req.request_id, permitted=True)


@pytest.fixture
async def policy_host(
    nats_url: str, lattice_name: str
) -> AsyncIterator[Callable[..., Awaitable[Host]]]:
    hosts: list[Host] = []

    async def start(subject: str, timeout: float = 1.0, cache_ttl: float = 60.0) -> Host:
        cfg = HostConfig(
            nats_url=nats_url,
            lattice=lattice_name,
            data_dir=CACHE / "test-host",
            embedded_nats=False,
            policy=PolicySettings(subject, timeout, cache_ttl),
        )
        h = Host(cfg)
        await h.start()
        hosts.append(h)
        return h

    yield start
    for h in hosts:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(h.stop("test finished"), 30)


@pytest.fixture
async def signed_client(nats_url: str, lattice_name: str) -> AsyncIterator[LatticeClient]:
    """A client that signs its control requests with a user nkey."""
    base = await LatticeClient.connect(nats_url, lattice_name, timeout=10.0)
    key = natsjwt.Key.new(nkeys.PREFIX_BYTE_USER)
    async with LatticeClient(base.nc, lattice_name, 10.0, signer=key) as c:
        yield c


async def test_the_policy_service_decides_with_the_callers_identity(
    policy_host: Callable[..., Awaitable[Host]],
    signed_client: LatticeClient,
    nc: NATS,
    lattice_name: str,
    tmp_path: Path,
) -> None:
    subject = f"policy.{lattice_name}"
    service = PolicyService(
        lambda r: PolicyResponse(
            request_id=r.request_id,
            permitted=r.target.target_id != "forbidden",
            message="no forbidden targets",
        )
    )
    await service.serve(nc, subject)
    host = await policy_host(subject)
    client = signed_client

    # starting a signed component: the service sees its claims and the host
    from components.build import build

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT).decode()
    signed, made = claims.sign(build("echo_min").read_bytes(), seed, name="echo")
    path = tmp_path / "echo-signed.wasm"
    path.write_bytes(signed)
    await client.put_config("echo-cfg", {"k": "v"})
    await client.scale_component(host.host_id, path.as_uri(), "echo", 1, config=["echo-cfg"])
    (start,) = [r for r in service.requests if r.action == "start_component"]
    assert start.source.component_id == "echo" and start.source.image_ref == path.as_uri()
    assert (start.source.issuer, start.source.subject) == (made.issuer, made.subject)
    assert start.target.config == ("echo-cfg",)
    assert start.host.host_id == host.host_id and start.host.lattice == lattice_name

    # a link put: the service sees the component's claims and who asked, verified; the
    # claims come from the lattice when the answering host did not start the component
    host.policy.seen.clear()
    await client.put_link("echo", "kv", "wasi", "keyvalue", ["store"])
    put = service.requests[-1]
    assert put.action == "put_link" and put.source.issuer == made.issuer
    assert put.source.subject == made.subject and put.source.image_ref == path.as_uri()
    assert put.requester is not None and put.requester.verified
    assert client.signer is not None and put.requester.identity == client.signer.public
    assert put.target.target_id == "kv" and put.target.interfaces == ("store",)

    with pytest.raises(LatticeError) as denied:
        await client.put_link("echo", "forbidden", "wasi", "blobstore", ["blobstore"])
    assert str(denied.value) == (
        f"put_link of echo denied by the policy service on {subject}: no forbidden targets"
    )
    assert [lk["target"] for lk in await client.get_links()] == ["kv"]

    # the capability policy is checked first: the service is not asked what it refuses
    asked = len(service.requests)
    await client.put_config("policy=echo", {"imports": "wasi:keyvalue/store"})
    with pytest.raises(LatticeError, match="capability policy policy=echo"):
        await client.put_link("echo", "kv", "wasi", "keyvalue", ["store", "atomics"], replace=True)
    assert len(service.requests) == asked


async def test_policy_decisions_are_cached_until_they_expire(
    policy_host: Callable[..., Awaitable[Host]],
    client: LatticeClient,
    nc: NATS,
    lattice_name: str,
) -> None:
    subject = f"policy.{lattice_name}"
    verdict = {"permitted": True}
    service = PolicyService(
        lambda r: PolicyResponse(request_id=r.request_id, message="closed now", **verdict)
    )
    await service.serve(nc, subject)
    host = await policy_host(subject, cache_ttl=30.0)
    now = [1000.0]
    host.policy.clock = lambda: now[0]

    await client.put_link("a", "b", "wasi", "keyvalue", ["store"])
    verdict["permitted"] = False  # the service changes its mind…
    await client.put_link("a", "b", "wasi", "keyvalue", ["store"])  # …cached: still permitted
    assert len(service.requests) == 1
    now[0] += 29.0
    await client.put_link("a", "b", "wasi", "keyvalue", ["store"])
    assert len(service.requests) == 1
    now[0] += 2.0  # past the TTL: asked again, and now denied
    with pytest.raises(LatticeError, match=r"denied by the policy service on .*: closed now"):
        await client.put_link("a", "b", "wasi", "keyvalue", ["store"])
    assert len(service.requests) == 2
    # a denial is cached as well
    verdict["permitted"] = True
    with pytest.raises(LatticeError, match="closed now"):
        await client.put_link("a", "b", "wasi", "keyvalue", ["store"])
    assert len(service.requests) == 2


async def test_no_policy_service_fails_closed_naming_the_subject(
    policy_host: Callable[..., Awaitable[Host]],
    client: LatticeClient,
    nc: NATS,
    lattice_name: str,
    linked_refs: dict[str, str],
) -> None:
    subject = f"policy.{lattice_name}.nobody"
    host = await policy_host(subject, timeout=0.3)
    with pytest.raises(LatticeError) as absent:
        await client.put_link("a", "b", "wasi", "keyvalue", ["store"])
    assert str(absent.value) == (
        f"put_link of a refused: the policy service on {subject} is unavailable (nobody "
        "serves that subject (no responders)); with --policy-subject set, changes are "
        "refused until it answers (fail closed)"
    )
    with pytest.raises(LatticeError, match=f"start_component of greeter refused: .* {subject}"):
        await client.scale_component(host.host_id, linked_refs["greeter"], "greeter", 1)
    assert "greeter" not in host.components.running

    silent = PolicyService(lambda r: None)  # subscribed, never answers
    await silent.serve(nc, subject)
    with pytest.raises(LatticeError, match=r"unavailable \(no answer within 0.3 s\)"):
        await client.put_link("a", "b", "wasi", "keyvalue", ["store"])
    assert silent.requests and await client.get_links() == []

    garbled = f"{subject}.garbled"
    host2 = await policy_host(garbled)

    async def nonsense(msg: Any) -> None:
        await msg.respond(json.dumps({"allowed": "sure"}).encode())

    await nc.subscribe(garbled, cb=nonsense)
    await nc.flush()
    with pytest.raises(LatticeError, match=f"on {garbled} is unavailable \\(the answer is not a"):
        await client.scale_component(host2.host_id, linked_refs["greeter"], "g2", 1)


async def test_egress_policy_bounds_a_linked_http_client_too(
    start_host: Any, client: LatticeClient, fetch_ref: str, upstream: str
) -> None:
    """With outgoing-handler linked to builtin://http-client (which checks the link's own
    allowed_hosts), the component's `egress` still decides first, on its host."""
    a = await start_host()
    b = await start_host()
    await client.start_provider(b.host_id, "builtin://http-client", "httpc")
    await client.scale_component(a.host_id, fetch_ref, "fetch", 1)
    await client.put_config("httpc-any", {"allowed_hosts": "*"})
    await client.put_link(
        "fetch", "httpc", "wasi", "http", ["outgoing-handler"], target_config=["httpc-any"]
    )
    pool = a.components.running["fetch"].pool
    url = f"http://{upstream}/hi.txt"

    async def status() -> tuple[int, bytes]:
        resp = await serve_request(pool, "GET", f"/?url={quote(url, safe='')}")
        return resp.status, await read_body(resp.body)

    assert await status() == (200, b"upstream says hi")  # no policy: the link's list
    await client.put_config("policy=fetch", {"egress": "example.org"})
    code, body = await status()
    assert code == 502 and b"HttpRequestDenied" in body
    await client.put_config("policy=fetch", {"egress": upstream})
    assert await status() == (200, b"upstream says hi")


# -- from a manifest -------------------------------------------------------------------


async def test_a_manifests_policy_is_stored_and_refuses_its_own_link(
    start_host: Any, nats_url: str, lattice_name: str, client: LatticeClient, linked_refs: Any
) -> None:
    from lattice.controller.run.service import Controller
    from tests.test_controller_live import deploy, eventually, manifest

    host = await start_host(heartbeat_interval=0.5)
    ctl = Controller(
        nats_url, lattice_name, host_expiry=3.0, tick=0.3, lease_ttl=3.0, resync_interval=1.0
    )
    await ctl.start()

    def app(imports: list[str], version: str) -> bytes:
        caller = {
            "name": "caller",
            "type": "component",
            "properties": {"image": linked_refs["caller"], "policy": {"imports": imports}},
            "traits": [
                {
                    "type": "link",
                    "properties": {
                        "namespace": "lattice",
                        "package": "examples",
                        "interfaces": ["greet"],
                        "target": "greeter",
                    },
                }
            ],
        }
        greeter = {
            "name": "greeter",
            "type": "component",
            "properties": {"image": linked_refs["greeter"]},
        }
        return manifest("pol", [caller, greeter], version)

    try:
        await deploy(client, app(["wasi:keyvalue/*"], "v1"))

        async def refused() -> bool:
            status = json.dumps(await client.model("status", "pol"))
            return (
                "capability policy policy=pol-caller" in status
                and "lattice:examples/greet" in status
            )

        await eventually(refused, what="the link refused by the manifest's policy")
        assert host.state.configs["policy=pol-caller"].values == {"imports": "wasi:keyvalue/*"}
        assert await client.get_links() == []

        await deploy(client, app(["lattice:examples/*"], "v2"))

        async def linked() -> Any:
            return await client.get_links()

        await eventually(linked, what="the link allowed by v2's policy")
        assert await client.call("pol-caller", f"{RELAY}.relay-hello", ["Ada"]) == "Hello, Ada!"
    finally:
        await asyncio.wait_for(ctl.stop(), 30)


async def test_the_cli_writes_a_policy_as_documented(
    host: Host, client: LatticeClient, nats_url: str, lattice_name: str
) -> None:
    """docs/security.md's `lattice config put policy=…` line, verbatim, and a bad one."""
    from tests.test_cli_commands import lattice

    args = "config put policy=counter imports=wasi:keyvalue/store egress= config=settings"
    code, _, err = await lattice(nats_url, lattice_name, *args.split())
    assert code == 0, err
    assert (await client.get_config("policy=counter")) == {
        "imports": "wasi:keyvalue/store",
        "egress": "",
        "config": "settings",
    }
    code, _, err = await lattice(
        nats_url, lattice_name, "config", "put", "policy=counter", "imports=wasi/keyvalue"
    )
    assert code != 0
    assert "capability policy of counter: imports: 'wasi/keyvalue' is not an interface" in err
    doc = (Path(__file__).parents[1] / "docs" / "security.md").read_text()
    assert f"`lattice {args}`" in doc
