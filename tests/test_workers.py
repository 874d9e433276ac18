"""`--workers N`: one host identity, several processes serving its components."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from host.config import HostConfig
from host.host import Host
from host.workers import cpu_for, shares
from lattice.client import LatticeClient
from lattice.natsd import free_port
from tests.conftest import CACHE
from tests.test_examples import port_free
from tests.test_http_server import PROVIDER, route, wait_ok

ECHO = "lattice:examples/echo.echo"


def test_shares_split_the_count_and_the_host_takes_the_remainder() -> None:
    assert shares(4, 2) == [2, 2]
    assert shares(5, 2) == [3, 2]
    assert shares(1, 3) == [1, 0, 0]
    assert shares(0, 2) == [0, 0]
    for count in range(0, 40):
        for n in range(1, 9):
            got = shares(count, n)
            assert sum(got) == count and len(got) == n
            assert max(got) - min(got) <= 1 and got == sorted(got, reverse=True)


def test_workers_out_of_range_is_refused_naming_the_flag() -> None:
    with pytest.raises(ValueError, match="--workers must be between 1 and 256, not 0"):
        HostConfig(workers=0)


@pytest.fixture
async def two_workers(nats_url: str, lattice_name: str) -> AsyncIterator[Host]:
    host = Host(
        HostConfig(
            nats_url=nats_url,
            lattice=lattice_name,
            data_dir=CACHE / "test-host",
            embedded_nats=False,
            workers=2,
        )
    )
    await host.start()
    try:
        yield host
    finally:
        if not host._stopping:
            await asyncio.wait_for(host.stop("test finished"), 30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _until(what: str, check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_calls_spread_over_both_processes_and_inventory_counts_the_host(
    two_workers: Host, client: LatticeClient, echo_ref: str
) -> None:
    host = two_workers
    assert host.workers is not None
    data = await client.scale_component(host.host_id, echo_ref, "echo", 4)
    assert data["max_instances"] == 4  # the host's count, not this process's share
    assert host.components.running["echo"].pool.max_instances == 2
    await _until("the worker's share", lambda: "echo" in host.workers.describe()[0]["warm"])
    got = await asyncio.gather(*(client.call("echo", ECHO, [f"m{i}"]) for i in range(300)))
    assert got == [f"m{i}" for i in range(300)]
    worker_warm = host.workers.warm("echo")
    assert worker_warm >= 1, "no call reached the worker process"
    assert host.components.running["echo"].pool.warm >= 1, "no call reached the host process"
    (desc,) = host.inventory().components
    assert desc.max_instances == 4
    assert desc.instances_warm == host.components.running["echo"].pool.warm + worker_warm


async def test_scale_to_zero_and_update_reach_the_worker(
    two_workers: Host, client: LatticeClient, echo_ref: str, echo_v2_ref: str
) -> None:
    host = two_workers
    assert host.workers is not None
    await client.scale_component(host.host_id, echo_ref, "echo", 2)
    await _until("the worker's share", lambda: "echo" in host.workers.describe()[0]["warm"])
    await client.update_component(host.host_id, "echo", echo_v2_ref)
    # every process answers with the new image: 40 calls spread over both
    versions = await asyncio.gather(*(client.call("echo", "echo.version", []) for _ in range(40)))
    assert set(versions) == {"v2"}
    await client.scale_component(host.host_id, echo_ref, "echo", 0)
    await _until("the worker to stop it", lambda: host.workers.describe()[0]["warm"] == {})


async def test_a_killed_worker_is_restarted_with_its_share(
    two_workers: Host, client: LatticeClient, echo_ref: str
) -> None:
    host = two_workers
    assert host.workers is not None
    await client.scale_component(host.host_id, echo_ref, "echo", 2)
    await _until("the worker's share", lambda: "echo" in host.workers.describe()[0]["warm"])
    pid = host.workers.describe()[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    await _until("a new worker", lambda: host.workers.describe()[0]["pid"] not in (pid, None))
    await _until("its share back", lambda: "echo" in host.workers.describe()[0]["warm"])
    assert host.workers.describe()[0]["restarts"] == 1
    # the host kept serving throughout; both answer again
    got = await asyncio.gather(*(client.call("echo", ECHO, [str(i)]) for i in range(50)))
    assert got == [str(i) for i in range(50)]


async def test_workers_exit_when_the_host_stops(
    two_workers: Host, client: LatticeClient, echo_ref: str
) -> None:
    host = two_workers
    assert host.workers is not None
    await client.scale_component(host.host_id, echo_ref, "echo", 2)
    pid = host.workers.describe()[0]["pid"]
    assert _alive(pid)
    await host.stop("test")
    assert not _alive(pid)


def test_up_refuses_a_bad_worker_count(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "lattice", "up", "--workers", "0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--workers must be between 1 and 256, not 0" in r.stderr


async def test_workers_exit_soon_after_their_host_is_killed(
    tmp_path: Path, nats_url: str, lattice_name: str, client: LatticeClient, echo_ref: str
) -> None:
    """`lattice up --workers 2` as a user runs it, then SIGKILL: nothing is left behind."""
    log_path = tmp_path / "host.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "lattice", "up", "--nats-url", nats_url),
            *("--lattice", lattice_name, "--data-dir", str(tmp_path / "data")),
            *("--log-format", "json", "--no-embedded-nats", "--workers", "2"),
            stdout=log,
            stderr=log,
            env={**os.environ, "LATTICE_COMPILE_CACHE": str(CACHE / "test-host" / "cache")},
        )
    worker_pid: int | None = None
    try:
        deadline = time.monotonic() + 60
        while worker_pid is None:
            assert proc.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, "no worker started:\n" + log_path.read_text()
            for line in log_path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("event") == "worker started":
                        worker_pid = int(entry["pid"])
            await asyncio.sleep(0.2)
        (h,) = await client.hosts(wait=1.0)
        await client.scale_component(h.id, echo_ref, "echo", 2)
        got = await asyncio.gather(*(client.call("echo", ECHO, [str(i)]) for i in range(20)))
        assert got == [str(i) for i in range(20)]
        if len(os.sched_getaffinity(0)) >= 2:  # --pin-cpus is on with 2 workers: a CPU each
            host_cpus, worker_cpus = _thread_cpus(proc.pid), _thread_cpus(worker_pid)
            assert len(host_cpus) == 1 and len(worker_cpus) == 1, (host_cpus, worker_cpus)
            assert host_cpus != worker_cpus
            # a provider process the host starts is not held to the host's CPU
            await client.start_provider(h.id, "builtin://keyvalue-redis", "kv-unpinned")
            (prov,) = (await client.inventory(h.id)).providers
            await _until("the provider's threads", lambda: len(_thread_cpus(prov["pid"])) > 0)
            assert _thread_cpus(prov["pid"]) == {frozenset(os.sched_getaffinity(0))}
        proc.kill()
        await proc.wait()
        pid = worker_pid
        await _until("the worker to exit after its host", lambda: not _alive(pid), 10.0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if worker_pid is not None and _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def _thread_cpus(pid: int) -> set[frozenset[int]]:
    """The distinct CPU sets the threads of `pid` may run on."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread ended
            found.add(frozenset(os.sched_getaffinity(int(task.name))))
    return found


async def _fresh_connection_gets(base: str, n: int) -> None:
    """`n` GETs, each on a new connection: the kernel picks a listener per connection."""
    for _ in range(n):
        async with httpx.AsyncClient() as http:
            r = await http.get(base + "/")
        assert r.status_code == 200 and r.text == "hello from python", (r.status_code, r.text)


async def test_http_in_host_is_served_by_every_process_on_one_port(
    two_workers: Host, client: LatticeClient, nats_url: str, lattice_name: str
) -> None:
    """Each worker runs its own copy of the in-host http-server on the host's ports
    (SO_REUSEPORT): connections land on either process and each serves them from its
    own pool, none crossing NATS; a killed worker gets its copy back; the provider's
    stop stops every copy, and the port is free."""
    from components.build import build

    host = two_workers
    assert host.workers is not None
    nc = await nats.connect(nats_url)
    crossed: list[str] = []

    async def crossing(msg: Any) -> None:
        crossed.append(msg.subject)

    await nc.subscribe(f"{lattice_name}.hello.http", cb=crossing)
    try:
        await client.start_provider(host.host_id, "builtin://http-server", PROVIDER)
        await client.scale_component(host.host_id, build("hello_http").as_uri(), "hello", 4)
        await _until("the worker's share", lambda: "hello" in host.workers.describe()[0]["warm"])
        port = free_port()
        await route(client, "hello", port, "hello-cfg")
        base = f"http://127.0.0.1:{port}"
        await wait_ok(base + "/")
        await _fresh_connection_gets(base, 60)
        await _until("the worker to report", lambda: host.workers.warm("hello") >= 1, 5)
        # instances made, not warm ones: an instance finishing a response is not idle yet
        assert host.components.running["hello"].pool.instantiated >= 1, "the host served none"

        pid = host.workers.describe()[0]["pid"]
        os.kill(pid, signal.SIGKILL)
        await _until("a new worker", lambda: host.workers.describe()[0]["pid"] not in (pid, None))
        await _until("its share back", lambda: "hello" in host.workers.describe()[0]["warm"], 30)
        await _fresh_connection_gets(base, 60)
        await _until("the new worker to serve", lambda: host.workers.warm("hello") >= 1, 5)
        await nc.flush()
        assert crossed == [], "a request for a component of this host crossed NATS"

        await client.stop_provider(host.host_id, PROVIDER)
        await _until("every copy to let go of the port", lambda: port_free(port), 10)
    finally:
        await nc.close()


def test_cpu_for_spreads_a_hosts_processes_from_its_first_cpu() -> None:
    assert [cpu_for(i, 1, [0, 1]) for i in range(3)] == [1, 0, 1]
    assert [cpu_for(i, 0, [2, 5, 7]) for i in range(4)] == [2, 5, 7, 2]
