"""Shared fixtures: a real nats-server per session, built components, in-process hosts.

Every server is started here from pip-installed binaries on a free port and stopped at
the end; nothing relies on services the machine may already run. Built components and
compiled artifacts are cached under `.cache/` (gitignored), so only the first session
on a machine pays for componentize-py and the wasmtime compile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from host.config import HostConfig, Limits
from host.host import Host
from host.runtime.engine import CompileCache, EpochTicker, new_engine
from host.runtime.loader import load_pool
from host.runtime.pool import InstancePool
from lattice import natsd
from lattice.client import LatticeClient

# Redis, OpenBao and provider-process fixtures (module-scoped, started only when asked for)
pytest_plugins = ("tests.servers",)

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
# `lattice up` processes the tests start (CLI, README, examples) use the in-process test
# hosts' compile cache too, instead of compiling each component again per data dir.
os.environ.setdefault("LATTICE_COMPILE_CACHE", str(CACHE / "test-host" / "cache"))
# A suite started in the background (`pytest &` in a script) inherits SIGINT ignored, and
# so would every CLI it starts: the Ctrl-C tests would then wait on a process that cannot
# hear them. A handler here becomes the default disposition in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Every process this test process starts inherits this mark, however far down (a CLI that
# starts `lattice up`, which starts workers and providers). Set, not defaulted: each xdist
# worker marks its own children, so one worker never blames another's live processes.
RUN_MARK = "LATTICE_TEST_RUN"
os.environ[RUN_MARK] = uuid.uuid4().hex
# A process orphaned by a killed host must exit within this (providers watch their host).
LEFTOVER_GRACE_S = 10.0


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per usable core, at most 4. Each worker runs hosts, providers
    and servers of its own, so more workers than cores only adds contention."""
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def marked_processes(mark: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process that carries `mark` in its environment."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get(RUN_MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.append((p.pid, " ".join(p.info["cmdline"] or [])[:200]))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """After every other fixture is torn down, nothing this run started may still be alive.

    Fails the run's last test naming each survivor (then kills them, so one leak doesn't
    leave a port taken for the next run)."""
    yield
    mark = os.environ[RUN_MARK]
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (left := marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, "processes the tests started are still running: " + "; ".join(
        f"pid {pid}: {cmd}" for pid, cmd in left
    )


def precompile(*paths: Path) -> None:
    """Compile into the test hosts' shared disk cache once, so hosts started later
    deserialize (~30 ms) instead of each compiling the same bytes (~5 s) at once."""
    from host.runtime.engine import CompileCache, new_engine

    cache = CompileCache(new_engine(), CACHE / "test-host" / "cache")
    for p in paths:
        cache.load(p.read_bytes())


@pytest.fixture(scope="session")
def built() -> dict[str, Path]:
    """Paths of the example components, built and compiled once per machine."""
    from components.build import build

    paths = {
        "echo": build("echo", "v1"),
        "echo-v2": build("echo", "v2"),
        "runaway": build("runaway"),
    }
    precompile(*paths.values())
    return paths


@pytest.fixture
async def load(built: dict[str, Path]) -> AsyncIterator[Any]:
    """`await load(path, count=4, limits=None)`: an instance pool in this process (a real
    engine and epoch ticker, no NATS), drained when the test ends."""
    engine = new_engine()
    ticker = EpochTicker(engine)
    ticker.start()
    cache = CompileCache(engine, CACHE / "test-host" / "cache")
    pools: list[InstancePool] = []

    async def loader(path: Path, count: int = 4, limits: Limits | None = None) -> InstancePool:
        pool, _ = await load_pool(
            component_id=path.stem,
            ref=path.as_uri(),
            engine=engine,
            cache=cache,
            limits=limits or Limits(),
            max_instances=count,
        )
        pools.append(pool)
        return pool

    yield loader
    for pool in pools:
        await pool.drain()
    ticker.stop()


@pytest.fixture(scope="session")
def echo_ref(built: dict[str, Path]) -> str:
    return built["echo"].as_uri()


@pytest.fixture(scope="session")
def echo_v2_ref(built: dict[str, Path]) -> str:
    return built["echo-v2"].as_uri()


@pytest.fixture(scope="session")
def runaway_ref(built: dict[str, Path]) -> str:
    return built["runaway"].as_uri()


@pytest.fixture(scope="session")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    d = tmp_path_factory.mktemp("nats")
    server = natsd.EmbeddedNats(
        host="127.0.0.1", port=natsd.free_port(), store_dir=d / "js", log_file=d / "nats.log"
    )
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


@pytest.fixture
def lattice_name() -> str:
    """A fresh lattice per test, so tests sharing one NATS server never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


HostFactory = Callable[..., Awaitable[Host]]


@pytest.fixture
async def start_host(nats_url: str, lattice_name: str) -> AsyncIterator[HostFactory]:
    hosts: list[Host] = []

    async def factory(
        labels: dict[str, str] | None = None,
        limits: Limits | None = None,
        heartbeat_interval: float = 30.0,
        lattice: str | None = None,
        url: str | None = None,
        admin_addr: str | None = None,
        http_in_host: bool = True,
        provider_sockets: bool = True,
    ) -> Host:
        cfg = HostConfig(
            nats_url=url or nats_url,
            lattice=lattice or lattice_name,
            labels=labels or {},
            heartbeat_interval=heartbeat_interval,
            data_dir=CACHE / "test-host",
            limits=limits or Limits(),
            embedded_nats=False,
            admin_addr=admin_addr,
            http_in_host=http_in_host,
            provider_sockets=provider_sockets,
        )
        host = Host(cfg)
        await host.start()
        hosts.append(host)
        return host

    yield factory
    for h in hosts:
        if not h._stopping:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(h.stop("test finished"), 30)


@pytest.fixture
async def host(start_host: HostFactory) -> Host:
    return await start_host()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    """A plain NATS connection to the session's server, closed after the test."""
    conn = await nats.connect(nats_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def client(nats_url: str, lattice_name: str) -> AsyncIterator[LatticeClient]:
    c = await LatticeClient.connect(nats_url, lattice_name, timeout=10.0)
    async with c:
        yield c


@pytest.fixture(scope="session")
def linked_refs() -> dict[str, str]:
    """The components that import interfaces the lattice links (built once, cached)."""
    from components.build import build

    paths = {name: build(name) for name in ("counter", "kvtool", "greeter", "caller")}
    precompile(*paths.values())
    return {name: p.as_uri() for name, p in paths.items()}
