"""CLI commands against a real host: waits for outcome events, exit 3 on a missing one,
-o json|yaml, get config/components/hosts, events filters, spy, --watch, completion.

The host runs in the test's event loop, so the CLI runs as an asyncio subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nats
import yaml

from host.host import Host
from lattice.cli.complete import live
from lattice.client import LatticeClient
from lattice.protocol import envelope


async def lattice(
    url: str, name: str, *args: str, config_dir: Path | None = None, timeout: float = 120
) -> tuple[int, str, str]:
    env = {**os.environ, "LATTICE_CONFIG_DIR": str(config_dir or Path("/nonexistent-lattice"))}
    env.pop("LATTICE_OUTPUT", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lattice",
        *args,
        "--nats-url",
        url,
        "--lattice",
        name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def spy_process(
    url: str, name: str, component: str, count: int
) -> asyncio.subprocess.Process:
    """`lattice spy COMPONENT --count N -o json`, returned once it says it is spying."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "lattice", "spy", component, "--count", str(count), "-o", "json"),
        *("--nats-url", url, "--lattice", name),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 60)
    assert f"spying on {component}".encode() in line, line
    return proc


async def spy_records(proc: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    """What the spy printed, once it has seen its count and exited (exit 0)."""
    try:
        assert proc.stdout is not None
        out = await asyncio.wait_for(proc.stdout.read(), 60)
        assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return [json.loads(x) for x in out.decode().splitlines()]


async def ok(url: str, name: str, *args: str) -> str:
    rc, out, err = await lattice(url, name, *args)
    assert rc == 0, f"{args}: {err}"
    assert "Traceback" not in err
    return out


async def test_changes_wait_for_their_outcome_and_print_data(
    host: Host, nats_url: str, lattice_name: str, echo_ref: str
) -> None:
    u, n = nats_url, lattice_name
    done = json.loads(
        await ok(
            u, n, "config", "put", "greet", "text=hi", "--secret", "token=s3cret", "-o", "json"
        )
    )
    assert done == {"ok": True, "message": "config greet set", "config_name": "greet"}
    assert json.loads(await ok(u, n, "get", "config", "-o", "json")) == {
        "greet": {"text": "hi", "token": "***"}
    }
    assert yaml.safe_load(await ok(u, n, "get", "config", "greet", "-o", "yaml")) == {
        "text": "hi",
        "token": "***",
    }

    scaled = json.loads(
        await ok(u, n, "scale", "component", echo_ref, "echo", "--count", "2", "-o", "json")
    )
    assert (scaled["host_id"], scaled["component_id"], scaled["max_instances"]) == (
        host.host_id,
        "echo",
        2,
    )
    rows = json.loads(await ok(u, n, "get", "components", "-o", "json"))
    assert [(r["id"], r["host_id"], r["max_instances"]) for r in rows] == [
        ("echo", host.host_id, 2)
    ]
    assert "scaling echo to 1" in await ok(
        u, n, "scale", "component", echo_ref, "echo", "--count", "1", "--no-wait"
    )

    assert "label zone=x set" in await ok(u, n, "label", "put", host.host_id, "zone=x")
    assert host.labels["zone"] == "x"  # it waited for labels_changed, so this already holds
    await ok(u, n, "label", "del", host.host_id, "zone")
    assert "zone" not in host.labels

    out = await ok(u, n, "link", "put", "echo", "greeter", "lattice:examples", "-i", "greet")
    assert "link echo lattice:examples (default) → greeter set" in out
    links = json.loads(await ok(u, n, "get", "links", "-o", "json"))
    assert [(lk["source_id"], lk["target"]) for lk in links] == [("echo", "greeter")]
    await ok(u, n, "link", "del", "echo", "lattice:examples")
    assert json.loads(await ok(u, n, "get", "links", "-o", "json")) == []

    hosts = yaml.safe_load(await ok(u, n, "get", "hosts", "-o", "yaml"))
    assert [(h["id"], h["controller"], h["nats"]) for h in hosts] == [
        (host.host_id, False, "external")
    ]
    assert json.loads(await ok(u, n, "get", "providers", "-o", "json")) == []

    lines = await ok(
        u, n, "events", "--no-follow", "--since", "5m", "--type", "config_set", "-o", "json"
    )
    evs = [json.loads(x) for x in lines.splitlines()]
    assert [e["data"]["config_name"] for e in evs] == ["greet"]
    assert all(e["type"] == "com.wasmcloud.lattice.config_set" for e in evs)
    table = await ok(u, n, "events", "--no-follow", "--since", "5m")
    kinds = [x.split()[1] for x in table.splitlines()]
    assert kinds[0] == "host_started" and "linkdef_deleted" in kinds
    assert "host_heartbeat" not in kinds
    assert await ok(u, n, "events", "--no-follow", "--since", "5m", "--host", "NOPE") == ""

    rc, _, err = await lattice(u, n, "config", "del", "nope")
    assert rc == 1 and "no config named 'nope'" in err and "hint: see `lattice get config`" in err


async def test_a_missing_outcome_exits_3_naming_the_event(nats_url: str, lattice_name: str) -> None:
    """A 'host' that acknowledges but never announces the change."""
    nc = await nats.connect(nats_url)
    try:

        async def ack(msg: Any) -> None:
            await msg.respond(envelope.ok(message="label a set").to_bytes())

        await nc.subscribe(f"wasmbus.ctl.v1.{lattice_name}.label.put.NFAKE", cb=ack)
        await nc.flush()
        rc, out, err = await lattice(
            nats_url, lattice_name, "label", "put", "NFAKE", "a=b", "--wait-timeout", "0.5"
        )
        assert rc == 3, err
        assert "label a: no labels_changed event from host NFAKE within 0.5s" in err
        assert "hint: raise --wait-timeout" in err and out == ""
        rc, out, _ = await lattice(
            nats_url, lattice_name, "label", "put", "NFAKE", "a=b", "--no-wait"
        )
        assert rc == 0 and "label a=b set on NFAKE" in out
    finally:
        await nc.close()


async def test_spy_shows_calls_with_replies_and_costs_nothing_after(
    host: Host, client: LatticeClient, nats_url: str, lattice_name: str, echo_ref: str
) -> None:
    await client.scale_component(host.host_id, echo_ref, "echo", 1)
    assert not host.spy.active("echo")
    proc = await spy_process(nats_url, lattice_name, "echo", 2)
    try:
        assert host.spy.active("echo")
        assert await client.call("echo", "echo", ["spied"]) == "spied"
        value, _ = await client.call_traced("echo", "types-demo.divide", [1, 0])
        assert value == {"err": "division by zero"}
    finally:
        first, second = await spy_records(proc)  # also ends the spy if a call failed
    assert first["direction"] == "in" and first["component_id"] == "echo"
    assert first["function"] == "echo" and first["outcome"] == "ok"
    assert (first["request"], first["reply"]) == ('["spied"]', '"spied"')
    assert first["request_bytes"] > 0 and first["reply_bytes"] > 0 and first["caller"] == ""
    assert first["host_id"] == host.host_id and first["duration_ms"] >= 0
    assert second["caller"] == "lattice-cli" and second["reply"] == '{"err": "division by zero"}'
    # The spy said goodbye: no lease is left, so the component is not tapped any more.
    for _ in range(100):
        if not host.spy.active("echo"):
            break
        await asyncio.sleep(0.05)
    assert not host.spy.active("echo") and host.spy._watching == {}


async def test_watch_redraws_until_interrupted(
    host: Host, nats_url: str, lattice_name: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lattice",
        "get",
        "hosts",
        "--watch",
        "-o",
        "json",
        "--timeout",
        "0.3",
        "--nats-url",
        nats_url,
        "--lattice",
        lattice_name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        assert [h["id"] for h in first] == [host.host_id]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_completion_offers_live_ids(
    host: Host, client: LatticeClient, nats_url: str, lattice_name: str, echo_ref: str
) -> None:
    await client.scale_component(host.host_id, echo_ref, "echo", 1)
    ctx = SimpleNamespace(params={"nats_url": nats_url, "lattice": lattice_name})
    assert await asyncio.to_thread(live("component"), ctx, "ec") == ["echo"]  # type: ignore[arg-type]
    assert await asyncio.to_thread(live("component"), ctx, "zz") == []  # type: ignore[arg-type]
    assert await asyncio.to_thread(live("host"), ctx, "") == [host.host_id]  # type: ignore[arg-type]
    gone = SimpleNamespace(params={"nats_url": "nats://127.0.0.1:1", "lattice": lattice_name})
    assert await asyncio.to_thread(live("app"), gone, "") == []  # type: ignore[arg-type]


async def test_spy_sees_calls_out_through_links_too(
    host: Host, client: LatticeClient, nats_url: str, lattice_name: str, linked_refs: dict[str, str]
) -> None:
    await client.scale_component(host.host_id, linked_refs["caller"], "caller", 1)
    await client.scale_component(host.host_id, linked_refs["greeter"], "greeter", 1)
    await client.put_link("caller", "greeter", "lattice", "examples", ["greet"])
    proc = await spy_process(nats_url, lattice_name, "caller", 2)
    relay = "lattice:examples/relay.relay-hello"
    try:
        assert await client.call("caller", relay, ["Ada"]) == "Hello, Ada!"
    finally:
        records = {r["direction"]: r for r in await spy_records(proc)}
    outbound, inbound = records["out"], records["in"]
    assert (outbound["caller"], outbound["target"], outbound["link"]) == (
        "caller",
        "greeter",
        "default",
    )
    assert outbound["function"].startswith("lattice:examples/greet.")
    assert outbound["outcome"] == "ok" and "Ada" in outbound["reply"]
    assert inbound["function"] == relay and inbound["reply"] == '"Hello, Ada!"'
    assert inbound["duration_ms"] >= outbound["duration_ms"]  # the call out is inside it


async def test_app_deploy_follows_until_failed_and_says_why(
    host: Host, nats_url: str, lattice_name: str, tmp_path: Path
) -> None:
    from lattice.controller.run.service import Controller

    ctl = Controller(nats_url, lattice_name)
    await ctl.start()
    try:
        bad = tmp_path / "bad.yaml"
        missing = tmp_path / "missing.wasm"
        bad.write_text(
            "apiVersion: core.oam.dev/v1beta1\nkind: Application\n"
            "metadata:\n  name: broken\n  annotations:\n    version: v1\n"
            "spec:\n  components:\n    - name: web\n      type: component\n"
            f"      properties:\n        image: {missing.as_uri()}\n"
            "      traits:\n        - type: spreadscaler\n          properties:\n"
            "            instances: 1\n"
        )
        rc, out, err = await lattice(nats_url, lattice_name, "app", "deploy", str(bad))
        assert rc == 1, (out, err)
        assert "deploying broken v1" in out
        assert "broken v1: failed — web 0/1" in err  # the progress, line by line off a tty
        assert "error: broken v1 failed: web: " in err  # the component's reason
        assert "hint: see `lattice app status broken`" in err
        rc, out, err = await lattice(
            nats_url, lattice_name, "app", "deploy", "broken", "--wait-timeout", "0.1"
        )
        assert rc in (1, 3), err  # failed again at once, or not settled within 0.1 s
    finally:
        await ctl.stop()
