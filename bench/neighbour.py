"""`python -m bench neighbour`: a runaway component next door must not slow its neighbours.

One `lattice up` host runs a neighbour (the componentize-py echo) and two runaway
components (components/src/runaway): `spinner`, whose `spin` loops forever and is
stopped by its time limit, and `hog`, whose `hog` keeps what it allocates and is
stopped by its memory limit (the instance is dropped and the next call gets a fresh
one). Each runaway runs one instance at a time (`count` 1), as a component's scale bounds
it. The caller is this process, on NATS connections of its own.

The neighbour's latency is measured one call at a time and with a few calls in flight,
quiet and then while a stream of runaway calls keeps both runaways busy (each stopped
call is followed at once by the next), in alternating rounds so that whatever else the
shared machine does falls on both. The figures are the loaded p50/p99 beside the quiet
ones (the ratio is loaded / quiet; the issue's target is a p99 within 2×), how many
runaway calls were stopped and by which limit, and how long after its start a spin was
stopped beside its time limit.

On a 2-core machine the two runaways, one core each while they run, are the worst case
for the neighbour: the host, NATS and this process share what is left.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Cluster
from bench.invoke import CpuMeter, sequential
from bench.results import Figure, pct
from lattice.client import LatticeClient
from lattice.protocol.invocation import ErrorKind, InvocationError

BENCH = "neighbour"
QUIET = "quiet"
ECHO = "lattice:examples/echo.echo"
ROOT = Path(__file__).resolve().parent.parent
# Compiled components for this bench's host, kept between runs (keyed by digest and
# engine): the figures are about calls, not about compiling two 18 MB components.
COMPILE_CACHE = ROOT / ".cache" / "bench-neighbour"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench neighbour")
    ap.add_argument("--calls", type=int, default=2000, help="one-at-a-time calls per phase")
    ap.add_argument("--total", type=int, default=4000, help="calls per phase with some in flight")
    ap.add_argument("--inflight", type=int, default=8, help="neighbour calls in flight")
    ap.add_argument("--count", type=int, default=4, help="instances of the neighbour")
    ap.add_argument("--spin-ms", type=int, default=200, help="the spinner's time limit")
    ap.add_argument("--hog-mb", type=int, default=96, help="the hog's memory limit")
    ap.add_argument("--hog-step", type=int, default=16, help="MB the hog allocates per call")
    ap.add_argument("--rounds", type=int, default=6, help="quiet/loaded alternations")
    ap.add_argument(
        "--runaways", default="spinner,hog", help="which runaways run: spinner, hog or both"
    )
    return ap


async def in_flight(fn: Callable[[], Awaitable[object]], total: int, inflight: int) -> list[float]:
    """Latency of each of `total` calls made by `inflight` callers at once."""
    samples: list[float] = []
    left = total

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t = time.perf_counter()
            await fn()
            samples.append(time.perf_counter() - t)

    await asyncio.gather(*(caller() for _ in range(inflight)))
    return samples


@dataclass
class Phase:
    """The neighbour's samples (seconds) under one condition, over every round."""

    seq: list[float] = field(default_factory=list)
    conc: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # the host's CPU seconds meanwhile
    calls: int = 0


class Runaways:
    """Keeps both runaways busy: a new call as soon as the previous one is stopped."""

    def __init__(self, client: LatticeClient, hog_step: int, which: set[str]) -> None:
        self.client = client
        self.which = which
        self.hog_step = hog_step
        self.stopped: collections.Counter[str] = collections.Counter()
        self.returned: collections.Counter[str] = collections.Counter()
        self.other: list[str] = []
        self.spin_s: list[float] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self, component: str, function: str, args: list[int]) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                await self.client.call(component, function, args, timeout=30)
                self.returned[component] += 1
            except InvocationError as exc:
                self.stopped[f"{component}: {exc.kind}"] += 1
                if component == "spinner" and exc.kind is ErrorKind.TIMEOUT:
                    self.spin_s.append(time.perf_counter() - t)
            except Exception as exc:  # kept: a figure below says how many
                self.other.append(f"{component}: {type(exc).__name__}: {exc}")

    def start(self) -> None:
        self._stop.clear()
        calls = {"spinner": ("spin", []), "hog": ("hog", [self.hog_step])}
        self._tasks = [
            asyncio.create_task(self._loop(c, *calls[c])) for c in calls if c in self.which
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@contextlib.contextmanager
def compile_cache(path: Path):  # type: ignore[no-untyped-def]
    """LATTICE_COMPILE_CACHE for the processes started inside (the host), not after."""
    old = os.environ.get("LATTICE_COMPILE_CACHE")
    os.environ["LATTICE_COMPILE_CACHE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LATTICE_COMPILE_CACHE", None)
        else:
            os.environ["LATTICE_COMPILE_CACHE"] = old


async def measure(args: argparse.Namespace) -> list[Figure]:
    from components.build import build

    echo, runaway = build("echo", "v1"), build("runaway")
    figures: list[Figure] = []
    async with Cluster() as cluster:
        with compile_cache(COMPILE_CACHE):
            host_id = await cluster.host("--log-level", "error")  # the runaways' warnings
        host_cpu = CpuMeter(cluster.procs[-1].pid)
        client = await cluster.client()  # the neighbour's caller
        load_client = await cluster.client()  # the runaways' callers
        await client.scale_component(host_id, echo.as_uri(), "echo", args.count, wait=300)
        await client.scale_component(
            host_id, runaway.as_uri(), "spinner", 1, limits={"timeout_ms": args.spin_ms}, wait=300
        )
        await client.scale_component(
            host_id, runaway.as_uri(), "hog", 1, limits={"memory_mb": args.hog_mb}, wait=300
        )
        assert await client.call("spinner", "ping", []) == "pong"

        async def call() -> object:
            return await client.call("echo", ECHO, ["hello"], timeout=10)

        async def phase(into: Phase) -> None:
            host_cpu.start()
            into.seq += await sequential(call, args.calls // args.rounds)
            into.conc += await in_flight(call, args.total // args.rounds, args.inflight)
            into.cpu_s += host_cpu.per_call(1)
            into.calls += args.calls // args.rounds + 50 + args.total // args.rounds

        # quiet and loaded alternate, so what else the machine does falls on both
        quiet, loaded = Phase(), Phase()
        which = {w.strip() for w in args.runaways.split(",") if w.strip()}
        load = Runaways(load_client, args.hog_step, which)
        for _ in range(args.rounds):
            await phase(quiet)
            load.start()
            await asyncio.sleep(0.3)  # both runaways busy, the hog through an instance or two
            await phase(loaded)
            await load.stop()
        await client.close()
        await load_client.close()

    conc = f"{args.inflight} in flight"
    for what, q, lo in (
        ("one at a time", quiet.seq, loaded.seq),
        (conc, quiet.conc, loaded.conc),
    ):
        for p in (0.5, 0.99):
            figures.append(
                Figure(
                    BENCH,
                    f"neighbour p{round(p * 100)}, {what}, runaways running",
                    pct(lo, p) * 1e6,
                    "µs",
                    "lower",
                    pct(q, p) * 1e6,
                    QUIET,
                )
            )
    figures.append(
        Figure(
            BENCH,
            "host CPU per neighbour call, runaways' CPU included",
            loaded.cpu_s / loaded.calls * 1e6,
            "µs",
            "lower",
            quiet.cpu_s / quiet.calls * 1e6,
            QUIET,
        )
    )
    by_time = load.stopped.pop(f"spinner: {ErrorKind.TIMEOUT}", 0)
    by_memory = load.stopped.pop(f"hog: {ErrorKind.RESOURCE_LIMIT}", 0)
    load.other += [f"{k} ×{n}" for k, n in load.stopped.items()]  # stopped, but not so
    figures += [
        Figure(BENCH, "runaway calls stopped by the time limit", by_time, "calls"),
        Figure(BENCH, "runaway calls stopped by the memory limit", by_memory, "calls"),
        Figure(BENCH, "runaway calls with another outcome", len(load.other), "calls", "lower"),
    ]
    if load.spin_s:
        figures.append(
            Figure(
                BENCH,
                "spin stopped after, p50",
                pct(load.spin_s, 0.5) * 1e3,
                "ms",
                "lower",
                float(args.spin_ms),
                "time limit",
            )
        )
    print(
        f"runaway calls: {by_time} stopped by the time limit, {by_memory} by the memory limit,"
        f" {sum(load.returned.values())} returned (the hog below its cap)"
    )
    for line in load.other[:5]:
        print(f"  other: {line}", file=sys.stderr)
    return figures


async def main(argv: list[str]) -> None:
    from bench.all import machine_facts, report

    args = parser().parse_args(argv)
    machine = machine_facts()
    figures = await measure(args)
    report(BENCH, figures, vars(args), machine)
    for f in figures:
        if "p99" in f.name and f.ratio is not None:
            verdict = "within" if f.ratio <= 2 else "MISSES"
            print(f"{f.name}: {f.ratio:.2f}× quiet ({verdict} the 2× target)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
