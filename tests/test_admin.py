"""Admin endpoints (host/admin.py): /livez, /readyz, /metrics on hosts and controllers,
against real hosts on a real nats-server."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from host.admin import parse_addr
from host.config import HostConfig
from host.host import Host
from host.metrics import MAX_SERIES, OTHER, HostMetrics
from lattice import natsd
from lattice.client import LatticeClient
from lattice.controller.run.service import Controller

ECHO = "lattice:examples/echo.echo"
RELAY = "lattice:examples/relay"
SECRET = "s3cr3t-do-not-export"

AdminHost = Callable[..., Awaitable[Host]]


@pytest.fixture
def admin_host(start_host: AdminHost) -> AdminHost:
    """The suite's host factory, with an admin server on a free port."""
    return functools.partial(start_host, admin_addr="127.0.0.1:0")


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name{labels…}` in a Prometheus text page (labels matched
    as a subset), or None."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(url)


def test_admin_addr_is_checked() -> None:
    assert parse_addr("127.0.0.1:9090") == ("127.0.0.1", 9090)
    assert parse_addr(":9090") == ("0.0.0.0", 9090)
    assert parse_addr("[::1]:9090") == ("::1", 9090)
    for bad in ("9090", "host:", "host:http", "host:70000"):
        with pytest.raises(ValueError, match="--admin-addr"):
            parse_addr(bad)


def test_admin_is_off_by_default() -> None:
    assert HostConfig().admin_addr is None


def test_label_sets_are_capped_and_fold_into_other() -> None:
    class Fake:
        pass

    m = HostMetrics(Fake())
    for i in range(MAX_SERIES + 50):
        m.invoked("echo", "echo.echo", f"caller-{i}", None, 0.001)
    assert len(m.invocations.series) == MAX_SERIES + 1
    folded = m.invocations.series[("echo", "echo.echo", OTHER)]
    assert folded.calls == 50
    for i in range(500):  # past the overflow every new label set shares one series
        m.invoked(f"c{i}", "f", "s", "trap", 0.5)
    assert len(m.invocations.series) <= MAX_SERIES + 201
    assert m.invocations.series[(OTHER, OTHER, OTHER)].errors["trap"] > 0


async def test_host_livez_readyz_and_metrics_after_calls(
    admin_host: AdminHost,
    client: LatticeClient,
    echo_ref: str,
    linked_refs: dict[str, str],
) -> None:
    host = await admin_host()
    base = host.admin.url
    assert (await get(f"{base}/livez")).status_code == 200
    ready = await get(f"{base}/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) >= {"nats", "jetstream", "state"}

    await client.put_config("admin-secret", {"token": SECRET, "plain": "x"}, secrets=["token"])
    await client.scale_component(host.host_id, echo_ref, "echo", 2, config=["admin-secret"])
    await client.scale_component(host.host_id, linked_refs["caller"], "caller", 1)
    await client.scale_component(host.host_id, linked_refs["greeter"], "greeter", 1)
    await client.put_link("caller", "greeter", "lattice", "examples", ["greet"])
    for _ in range(3):
        assert await client.call("echo", ECHO, ["hi"]) == "hi"
    value, _ = await client.call_traced("echo", ECHO, ["traced"])
    assert value == "traced"
    assert await client.call("caller", f"{RELAY}.relay-hello", ["Ada"]) == "Hello, Ada!"
    with pytest.raises(Exception, match=r"unknown-function|no such"):
        await client.call("echo", "lattice:examples/echo.nope", [])

    page = await get(f"{base}/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    text = page.text
    assert (
        sample(text, "lattice_host_invocations_total", component="echo", function=ECHO, source="")
        == 3
    )
    assert (
        sample(text, "lattice_host_invocations_total", component="echo", source="lattice-cli") == 1
    )
    assert sample(text, "lattice_host_invocations_total", component="echo", function=ECHO) == 3
    # the greeter was called by the caller, over the link named "default"
    assert sample(text, "lattice_host_invocations_total", component="greeter", source="caller")
    assert (
        sample(
            text,
            "lattice_host_link_calls_total",
            source="caller",
            link_name="default",
            target="greeter",
        )
        == 1
    )
    assert sample(text, "lattice_host_invocation_errors_total", component="echo") == 1
    assert (
        sample(text, "lattice_host_invocation_duration_seconds_count", component="echo", source="")
        == 3
    )
    assert sample(text, "lattice_host_instances_max", component="echo") == 2
    assert sample(text, "lattice_host_instances_warm", component="echo") is not None
    # componentize-py's echo imports poll, files and sockets: never on the event loop
    assert sample(text, "lattice_host_loop_runs_total", component="echo") == 0
    assert sample(text, "lattice_host_loop_stops_total", component="echo") == 0
    assert sample(text, "lattice_host_compile_cache_total", result="hit") is not None
    assert sample(text, "lattice_host_nats_connected") == 1
    assert sample(text, "lattice_host_nats_reconnects_total") == 0
    assert sample(text, "lattice_host_info", host_id=host.host_id) == 1
    assert SECRET not in text and "nats://" not in text and "password" not in text


async def test_two_hosts_in_one_process_report_their_own_calls(
    admin_host: AdminHost, client: LatticeClient, echo_ref: str
) -> None:
    a, b = await admin_host(), await admin_host()
    await client.scale_component(a.host_id, echo_ref, "echo-a", 1)
    assert await client.call("echo-a", ECHO, ["x"]) == "x"
    text_a = (await get(f"{a.admin.url}/metrics")).text
    text_b = (await get(f"{b.admin.url}/metrics")).text
    assert sample(text_a, "lattice_host_invocations_total", component="echo-a") == 1
    assert sample(text_b, "lattice_host_invocations_total", component="echo-a") is None


async def test_readyz_names_nats_once_its_server_is_gone(
    admin_host: AdminHost, tmp_path: Path
) -> None:
    server = natsd.EmbeddedNats(
        host="127.0.0.1",
        port=natsd.free_port(),
        store_dir=tmp_path / "js",
        log_file=tmp_path / "nats.log",
    )
    await server.start()
    try:
        host = await admin_host(url=server.url)
        assert (await get(f"{host.admin.url}/readyz")).status_code == 200
    finally:
        await server.stop()
    deadline = time.monotonic() + 20
    while True:
        r = await get(f"{host.admin.url}/readyz")
        if r.status_code == 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "not ready"
    assert "nats" in body["failing"] and "not connected" in body["failing"]["nats"]
    assert (await get(f"{host.admin.url}/livez")).status_code == 200  # alive, not ready
    text = (await get(f"{host.admin.url}/metrics")).text
    assert sample(text, "lattice_host_nats_connected") == 0


async def test_controller_serves_app_gauges_and_reconcile_histogram(
    start_host, nats_url: str, lattice_name: str, client: LatticeClient, echo_ref: str
) -> None:
    from tests.test_controller_live import deploy, deployed, echo_component, eventually, manifest
    from tests.test_controller_live import spread as spreadscaler

    await start_host()
    ctl = Controller(nats_url, lattice_name, tick=0.3, lease_ttl=2.0, admin_addr="127.0.0.1:0")
    await ctl.start()
    try:
        base = ctl.admin.url
        assert (await get(f"{base}/livez")).status_code == 200
        r = await get(f"{base}/readyz")
        assert r.status_code == 200, r.text
        await deploy(client, manifest("metered", [echo_component(echo_ref, [spreadscaler(3)])]))
        await eventually(await deployed(client, "metered"), what="metered deployed")

        async def gauges() -> bool:
            text = (await get(f"{base}/metrics")).text
            return (
                sample(text, "lattice_controller_app_desired_instances", app="metered") == 3
                and sample(text, "lattice_controller_app_running_instances", app="metered") == 3
            )

        await eventually(gauges, timeout=30, what="desired/running gauges")
        text = (await get(f"{base}/metrics")).text
        assert (sample(text, "lattice_controller_reconcile_duration_seconds_count") or 0) >= 1
        assert sample(text, "lattice_controller_leader") == 1
        assert "nats://" not in text
        await client.model("undeploy", "metered")
    finally:
        await asyncio.wait_for(ctl.stop(), 30)
    with pytest.raises(httpx.ConnectError):
        await get(f"{base}/livez")  # stopped with the controller
