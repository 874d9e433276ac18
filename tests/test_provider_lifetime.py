"""A provider never outlives its host and stops promptly when told to, in every state.

Real processes throughout: `lattice up` hosts as users start them, providers as hosts
start them (stdin a pipe, own session), a real nats-server that the tests stop to make
NATS unreachable. The bound checked everywhere is the one the product promises: a
provider is gone within 5 s of its host's death, of SIGTERM or of stdin EOF.

Run as a module (`python -m tests.test_provider_lifetime`), this file is a provider
with one slow operation, so a test can stop a provider in the middle of a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from lattice import codec, natsd
from lattice.client import LatticeClient
from lattice.controller.run.service import Controller
from lattice.protocol.invocation import ERROR_HEADER, HOST_HEADER, SOURCE_HEADER
from providers.sdk import HostData, Link, Provider, lifetime, operation, run
from tests.servers import ProviderProcess, control, nats_server

ROOT = Path(__file__).resolve().parent.parent
BOUND = 5.0  # seconds: the promise under test
SLEEP_OP = "example:slow/api.sleep"


class SlowProvider(Provider):
    """Sleeps as long as it is asked to, then says so."""

    @operation(SLEEP_OP, params=("seconds",))
    async def sleep(self, link: Link, args: list[Any]) -> str:
        await asyncio.sleep(float(args[0]))
        return "slept"


def slow_link(provider_id: str) -> Link:
    return Link(
        source_id="comp-a",
        target=provider_id,
        wit_namespace="example",
        wit_package="slow",
        interfaces=["api"],
    )


# ---------------------------------------------------------------------- helpers


async def exit_time(pids: list[int], timeout: float = 30.0) -> dict[int, float]:
    """Seconds until each pid is gone (a zombie counts as gone); inf if it never goes."""
    start = time.monotonic()
    gone: dict[int, float] = {}
    while time.monotonic() - start < timeout and len(gone) < len(pids):
        for pid in pids:
            if pid not in gone and not lifetime.alive(pid):
                gone[pid] = time.monotonic() - start
        await asyncio.sleep(0.02)
    return {pid: gone.get(pid, float("inf")) for pid in pids}


def reap(pids: list[int]) -> None:
    """Kill whatever a failed test left behind."""
    for pid in pids:
        if lifetime.alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def lattice_up(
    nats_url: str, lattice: str, tmp: Path, zone: str
) -> asyncio.subprocess.Process:
    """`lattice up` as a user runs it, on the test's nats-server, JSON logs to a file."""
    log = (tmp / f"host-{zone}.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lattice",
        "up",
        "--nats-url",
        nats_url,
        "--lattice",
        lattice,
        "--data-dir",
        str(tmp / f"data-{zone}"),
        "--log-format",
        "json",
        "--heartbeat-interval",
        "0.5",
        "--no-embedded-nats",
        "--label",
        f"zone={zone}",
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    log.close()
    return proc


async def host_id_of(client: LatticeClient, zone: str, proc: asyncio.subprocess.Process) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.returncode is None, f"lattice up (zone={zone}) exited with {proc.returncode}"
        for h in await client.hosts(wait=0.5):
            if h.labels.get("zone") == zone:
                return h.id
    raise AssertionError(f"host zone={zone} never answered host.ping")


async def provider_pids(client: LatticeClient, host_id: str) -> dict[str, int]:
    inv = await client.inventory(host_id)
    return {p["id"]: p["pid"] for p in inv.providers if p.get("pid")}


async def kill_host(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[natsd.EmbeddedNats]:
    """A nats-server of this test alone, so the test can take it away."""
    server = await nats_server(tmp_path).start()
    try:
        yield server
    finally:
        await server.stop()


def host_data(nats_url: str, provider_id: str, **extra: Any) -> HostData:
    return HostData(
        lattice=f"t{uuid.uuid4().hex[:8]}",
        nats_url=nats_url,
        provider_id=provider_id,
        host_id="NTESTHOST",
        log_format="json",
        **extra,
    )


async def started(
    tmp_path: Path, nats_url: str, nc: NATS | None, links: list[Link] | None = None
) -> ProviderProcess:
    hd = host_data(nats_url, "slow", link_definitions=links or [slow_link("slow")])
    proc = await ProviderProcess("tests.test_provider_lifetime", hd, tmp_path / "p.log").start()
    if nc is not None:
        await proc.wait_ready(nc)
    return proc


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, nats_url: str) -> AsyncIterator[tuple[NATS, ProviderProcess]]:
    """A connection to `nats_url` and the slow provider on it, ready; both stopped after."""
    nc = NATS()
    await nc.connect(nats_url)
    try:
        proc = await started(tmp_path, nats_url, nc)
        try:
            yield nc, proc
        finally:
            await proc.stop()
    finally:
        await nc.close()


async def timed_exit(proc: ProviderProcess) -> tuple[float, int]:
    assert proc.process is not None
    t0 = time.monotonic()
    code = await proc.wait_exit(30)
    return time.monotonic() - t0, code


def sigterm(proc: ProviderProcess) -> None:
    assert proc.process is not None
    proc.process.send_signal(signal.SIGTERM)


# ---------------------------------------------------------------------- host death


async def test_providers_exit_when_their_host_is_sigkilled(
    nats_url: str, lattice_name: str, tmp_path: Path
) -> None:
    host = await lattice_up(nats_url, lattice_name, tmp_path, "doomed")
    pids: list[int] = []
    try:
        async with await LatticeClient.connect(nats_url, lattice_name, timeout=10) as client:
            host_id = await host_id_of(client, "doomed", host)
            for ref, pid in (
                ("builtin://keyvalue-nats", "kv-a"),
                ("builtin://keyvalue-redis", "kv-b"),
            ):
                await client.start_provider(host_id, ref, pid, wait=60)
            found = await provider_pids(client, host_id)
            assert set(found) == {"kv-a", "kv-b"}
            pids = list(found.values())
            assert all(lifetime.alive(p) for p in pids)
            await kill_host(host)
            times = await exit_time(pids)
            print(f"provider exit after host SIGKILL: {times}")
            assert max(times.values()) < BOUND, f"providers outlived their host: {times}"
    finally:
        await kill_host(host)
        reap(pids)


async def test_the_replacement_elsewhere_is_the_only_one_serving(
    nats_url: str, lattice_name: str, tmp_path: Path, start_host
) -> None:
    """The controller places the app's provider on the doomed host; after the SIGKILL it
    starts one on the survivor, and only that one answers calls."""
    doomed = await lattice_up(nats_url, lattice_name, tmp_path, "doomed")
    pids: list[int] = []
    ctl = Controller(
        nats_url, lattice_name, host_expiry=3.0, tick=0.3, lease_ttl=3.0, resync_interval=1.0
    )
    try:
        async with await LatticeClient.connect(nats_url, lattice_name, timeout=10) as client:
            doomed_id = await host_id_of(client, "doomed", doomed)
            await ctl.start()
            body = {
                "apiVersion": "core.oam.dev/v1beta1",
                "kind": "Application",
                "metadata": {"name": "life", "annotations": {"version": "v1"}},
                "spec": {
                    "components": [
                        {
                            "name": "kv",
                            "type": "capability",
                            "properties": {"image": "builtin://keyvalue-nats", "id": "life-kv"},
                            "traits": [{"type": "spreadscaler", "properties": {"instances": 1}}],
                        }
                    ]
                },
            }
            put = await client.model("put", body=json.dumps(body).encode())
            await client.model("deploy", put["name"], {"version": put["version"]})

            async def on(host_id: str) -> int | None:
                return (await provider_pids(client, host_id)).get("life-kv")

            old_pid = await eventually(lambda: on(doomed_id), "provider on the doomed host")
            pids.append(old_pid)
            survivor = await start_host(labels={"zone": "survivor"}, heartbeat_interval=0.5)
            await client.put_config("life-kv-cfg", {"bucket": "life"})
            await client.put_link(
                "caller", "life-kv", "wasi", "keyvalue", ["atomics"], target_config=["life-kv-cfg"]
            )
            served = await eventually(lambda: served_by(client, lattice_name), "a first call")
            assert served == doomed_id

            killed = time.monotonic()
            await kill_host(doomed)
            times = await exit_time([old_pid])
            assert times[old_pid] < BOUND, f"the dead host's provider lingered: {times}"
            new_pid = await eventually(lambda: on(survivor.host_id), "replacement on the survivor")
            print(
                f"after host SIGKILL: its provider gone in {times[old_pid]:.2f}s, "
                f"replacement running in {time.monotonic() - killed:.2f}s"
            )
            assert new_pid != old_pid
            hosts = {await eventually(lambda: served_by(client, lattice_name)) for _ in range(20)}
            assert hosts == {survivor.host_id}, f"calls were served by {hosts}"
            assert not lifetime.alive(old_pid)
    finally:
        await kill_host(doomed)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctl.stop(), 30)
        reap(pids)


async def eventually(check: Any, what: str = "", timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if value := await check():
                return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def served_by(client: LatticeClient, lattice: str) -> str | None:
    """The host whose provider answered one increment over the caller's link."""
    msg = await client.nc.request(
        f"{lattice}.life-kv.rpc.wasi:keyvalue/atomics.increment",
        codec.pack(["", "n", 1]),
        timeout=5,
        headers={SOURCE_HEADER: "caller"},
    )
    headers = msg.headers or {}
    if ERROR_HEADER in headers or "ok" not in codec.unpack(msg.data):
        return None
    return headers.get(HOST_HEADER)


async def test_the_host_stops_even_a_provider_that_does_not_listen(
    start_host, client: LatticeClient
) -> None:
    """A frozen provider answers nothing and handles no signal: the host's stop goes
    through default.shutdown (no answer), stdin EOF, SIGTERM and SIGKILL, each bounded."""
    host = await start_host()
    await client.start_provider(host.host_id, "builtin://keyvalue-nats", "frozen", wait=60)
    proc = host.providers.running["frozen"].process
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        assert await host.providers.stop("frozen", "test")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    took = time.monotonic() - t0
    print(f"host stop of a frozen provider: {took:.1f}s")
    assert proc.returncode == -signal.SIGKILL
    assert took < 2 + 5 + 5 + 3  # request timeout + wait after EOF + wait after SIGTERM


# ---------------------------------------------------------------------- SIGTERM


async def test_sigterm_while_connected_and_mid_call(tmp_path: Path, own_nats) -> None:
    async with serving(tmp_path, own_nats.url) as (nc, proc):
        hd = proc.host_data
        subject = f"{hd.lattice}.slow.rpc.{SLEEP_OP}"
        headers = {SOURCE_HEADER: "comp-a"}
        short = asyncio.create_task(nc.request(subject, codec.pack([0.5]), 10, headers=headers))
        long = asyncio.create_task(nc.request(subject, codec.pack([60]), 8, headers=headers))
        await asyncio.sleep(0.2)  # both calls are in flight
        sigterm(proc)
        took, code = await timed_exit(proc)
        print(f"SIGTERM mid-call: exit {code} after {took:.2f}s")
        assert code == 0 and took < BOUND
        assert codec.unpack((await short).data) == "slept"  # finished before the stop
        with pytest.raises(Exception):  # noqa: B017 - cancelled at the budget: no reply
            await long


async def test_sigterm_while_nats_is_unreachable(tmp_path: Path, own_nats) -> None:
    async with serving(tmp_path, own_nats.url) as (_nc, proc):
        await own_nats.stop()  # the provider now sits reconnecting
        await asyncio.sleep(1.5)
        assert proc.process is not None and proc.process.returncode is None
        sigterm(proc)
        took, code = await timed_exit(proc)
        print(f"SIGTERM while reconnecting: exit {code} after {took:.2f}s")
        assert code == 0 and took < BOUND
        assert "reconnecting" in proc.stderr()


async def test_sigterm_while_still_connecting(tmp_path: Path) -> None:
    """A server that accepts TCP and never speaks: nats-py waits for its INFO."""
    dialled = asyncio.Event()
    silent = await asyncio.start_server(lambda r, w: dialled.set(), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    proc = await started(tmp_path, f"nats://127.0.0.1:{port}", None)
    try:
        await asyncio.wait_for(dialled.wait(), 30)  # it is connecting now
        await asyncio.sleep(0.3)
        assert proc.process is not None and proc.process.returncode is None
        sigterm(proc)
        took, code = await timed_exit(proc)
        print(f"SIGTERM while connecting: exit {code} after {took:.2f}s")
        assert code == 0 and took < BOUND
    finally:
        await proc.stop()
        silent.close()
        await silent.wait_closed()


async def test_a_second_sigterm_exits_at_once(tmp_path: Path, own_nats) -> None:
    async with serving(tmp_path, own_nats.url) as (nc, proc):
        subject = f"{proc.host_data.lattice}.slow.rpc.{SLEEP_OP}"
        call = asyncio.create_task(
            nc.request(subject, codec.pack([60]), 30, headers={SOURCE_HEADER: "comp-a"})
        )
        await asyncio.sleep(0.2)
        sigterm(proc)
        await asyncio.sleep(0.1)
        sigterm(proc)
        took, code = await timed_exit(proc)
        assert code == 128 + signal.SIGTERM and took < 1.0, (code, took)
        call.cancel()


# ---------------------------------------------------------------------- stdin and parent


async def test_stdin_eof_alone_stops_the_provider(tmp_path: Path, own_nats) -> None:
    async with serving(tmp_path, own_nats.url) as (nc, proc):
        health = await control(nc, f"{proc.ctl}.health", {})
        assert health.success
        assert proc.process is not None and proc.process.stdin is not None
        proc.process.stdin.close()
        took, code = await timed_exit(proc)
        print(f"stdin EOF: exit {code} after {took:.2f}s")
        assert code == 0 and took < BOUND
        assert "stdin closed" in proc.stderr()


async def test_a_provider_whose_output_nobody_reads_still_stops_cleanly(own_nats) -> None:
    """After its host died, the provider's stdout/stderr pipe has no reader: its last
    log lines must not turn the graceful stop into a BrokenPipeError crash."""
    for how in ("stdin EOF", "SIGTERM"):
        hd = host_data(own_nats.url, "slow", link_definitions=[slow_link("slow")])
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.test_provider_lifetime",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(hd.encode())
            await proc.stdin.drain()
            while b"provider started" not in await asyncio.wait_for(proc.stdout.readline(), 30):
                pass
            transport = proc._transport  # type: ignore[attr-defined]
            transport.get_pipe_transport(1).close()  # the reader goes, as with a dead host
            await asyncio.sleep(0.2)
            if how == "SIGTERM":
                proc.terminate()
            else:
                proc.stdin.close()
            assert await asyncio.wait_for(proc.wait(), BOUND) == 0, how
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_host_that_died_before_the_provider_looked_stops_it(
    tmp_path: Path, own_nats
) -> None:
    """Host data names a host pid that is gone (the host died between fork and prctl):
    the provider stops at once instead of serving as an orphan."""
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    hd = host_data(own_nats.url, "slow", host_pid=dead.pid)
    proc = await ProviderProcess("tests.test_provider_lifetime", hd, tmp_path / "p.log").start()
    try:
        took, code = await timed_exit(proc)
        assert code == 0 and took < BOUND + 5  # includes interpreter start-up
        assert f"host process {dead.pid} is gone" in proc.stderr()
    finally:
        await proc.stop()


def test_host_gone_reason() -> None:
    assert lifetime.host_gone_reason(None) is None  # started by hand: stdin decides
    assert lifetime.host_gone_reason(os.getppid()) is None  # our parent is the host
    assert lifetime.host_gone_reason(os.getpid()) is None  # a wrapper in between: alive
    beyond = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    assert f"host process {beyond} is gone" in (lifetime.host_gone_reason(beyond) or "")


if __name__ == "__main__":
    run(SlowProvider)
