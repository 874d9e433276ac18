"""`python -m bench invoke`: what the lattice adds on top of raw NATS request/reply.

Measured in one run on this machine, every server in its own process:
1. raw nats-py echo (a responder that answers with the request body) against two echo
   components called through one `lattice up` host: the componentize-py echo (a Python
   interpreter in the guest) and the minimal echo (hand-written WAT, no language runtime,
   so what it costs is the host's). p50/p99 one call at a time, calls/s with 100 in
   flight, and CPU seconds per call of the serving process (the host, or the raw
   responder), read from /proc: wasm runs outside the GIL, so a GIL profile hides it;
2. starting a component with a cold and then a warm compile cache;
3. scaling one component from 0 to 100 warm instances: time, and RSS per instance;
4. every core (`--workers`, default 2): the in-flight calls again on a host with that
   many worker processes, against the `--workers 1` host's figure, with the CPU of all
   its processes per call, and memory per warm instance after load on both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import psutil

from bench.harness import Cluster
from bench.results import Figure, pct
from lattice import codec
from lattice.client import LatticeClient

RESULTS = Path(__file__).parent / "results"
BENCH = "invoke"
RAW = "raw nats-py"
ONE = "--workers 1"
# (component id, fixture name, variant, label in figure names)
GUESTS = (
    ("echo", "echo", "v1", "componentize-py echo"),
    ("echo-min", "echo_min", None, "minimal echo"),
)


async def sequential(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    for _ in range(50):
        await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def concurrent(fn: Callable[[], Awaitable[object]], total: int, inflight: int) -> float:
    sem = asyncio.Semaphore(inflight)

    async def one() -> None:
        async with sem:
            await fn()

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return total / (time.perf_counter() - t)


def cpu_seconds(proc: psutil.Process, tree: bool = False) -> float:
    """User + system CPU time of a process and its threads so far; with `tree`, of its
    worker processes too (a host's `--workers`, `python -m host.worker`), never of the
    providers it started."""
    t = proc.cpu_times()
    total = t.user + t.system
    if tree:
        for child in proc.children():
            try:
                if "host.worker" not in child.cmdline():
                    continue
                c = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += c.user + c.system
    return total


class CpuMeter:
    """CPU seconds per call of one process over a stretch of calls: `start()`, the calls,
    then `per_call(n)`."""

    def __init__(self, pid: int, tree: bool = False) -> None:
        self.proc = psutil.Process(pid)
        self.tree = tree
        self._since = 0.0

    def start(self) -> None:
        self._since = cpu_seconds(self.proc, self.tree)

    def per_call(self, calls: int) -> float:
        return (cpu_seconds(self.proc, self.tree) - self._since) / calls


def tree_rss(pid: int) -> int:
    """RSS of a process and its children (a host and its workers)."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench invoke")
    ap.add_argument("--calls", type=int, default=2000, help="sequential calls per side")
    ap.add_argument("--total", type=int, default=10000, help="calls in the in-flight run")
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--count", type=int, default=100, help="instances of each echo component")
    ap.add_argument(
        "--guests",
        default=",".join(g[0] for g in GUESTS),
        help="comma-separated guests to call: echo (componentize-py), echo-min (WAT)",
    )
    ap.add_argument("--no-start", action="store_true", help="skip the start and 0 → 100 figures")
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run the in-flight calls on a host with this many --workers "
        "(baseline: the same calls on a --workers 1 host); 1 skips it",
    )
    return ap


async def measure(args: argparse.Namespace) -> list[Figure]:
    from components.build import build

    wanted = {g.strip() for g in args.guests.split(",") if g.strip()}
    unknown = wanted - {g[0] for g in GUESTS}
    if unknown:
        raise SystemExit(f"--guests: unknown guest(s) {sorted(unknown)}; known: echo, echo-min")
    guests = [
        (cid, build(name, variant), label) for cid, name, variant, label in GUESTS if cid in wanted
    ]
    figures: list[Figure] = []

    def fig(
        name: str,
        value: float,
        unit: str,
        better: str = "higher",
        baseline: float | None = None,
        against: str = RAW,
    ) -> None:
        label = against if baseline is not None else ""
        figures.append(Figure(BENCH, name, value, unit, better, baseline, label))  # type: ignore[arg-type]

    async with Cluster() as cluster:
        raw_proc = cluster.spawn("bench.raw_echo", cluster.url, "raw.echo", wait_for_ready=True)
        host_id = await cluster.host()
        host_pid = cluster.procs[-1].pid
        client = await cluster.client()
        nc = await nats.connect(cluster.url)
        tmp = cluster.tmp
        raw_cpu, host_cpu = CpuMeter(raw_proc.pid), CpuMeter(host_pid)

        if not args.no_start:
            # -- start: cold then warm compile cache (the componentize-py echo) ----------
            ref = guests[0][1].as_uri()
            t = time.perf_counter()
            await client.scale_component(host_id, ref, "echo-cold", 1)
            cold = time.perf_counter() - t
            await client.scale_component(host_id, ref, "echo-cold", 0)
            # a second host process on the same data dir: the compile cache is on disk only
            second = await cluster.host()
            t = time.perf_counter()
            await client.scale_component(second, ref, "echo-warm", 1)
            warm = time.perf_counter() - t
            await client.scale_component(second, ref, "echo-warm", 0)
            fig("component start, cold compile cache", cold, "s", "lower")
            fig("component start, warm disk cache (new host)", warm, "s", "lower")
        for cid, path, _ in guests:
            await client.scale_component(host_id, path.as_uri(), cid, args.count)

        # -- latency and throughput ---------------------------------------------
        payload = codec.pack(["hello"])

        async def raw_call() -> object:
            return await nc.request("raw.echo", payload, timeout=10)

        def lattice_call(cid: str) -> Callable[[], Awaitable[object]]:
            async def call() -> object:
                return await client.call(cid, "lattice:examples/echo.echo", ["hello"], timeout=10)

            return call

        Call = Callable[[], Awaitable[object]]

        async def seq(fn: Call, meter: CpuMeter) -> tuple[list[float], float]:
            meter.start()
            samples = await sequential(fn, args.calls)
            return samples, meter.per_call(args.calls + 50)  # sequential warms up with 50

        async def tp(fn: Call, meter: CpuMeter) -> tuple[float, float]:
            meter.start()
            rate = await concurrent(fn, args.total, args.inflight)
            return rate, meter.per_call(args.total)

        raw_seq, raw_seq_cpu = await seq(raw_call, raw_cpu)
        lat_seq = {cid: await seq(lattice_call(cid), host_cpu) for cid, _, _ in guests}
        raw_tp, raw_tp_cpu = await tp(raw_call, raw_cpu)
        lat_tp = {cid: await tp(lattice_call(cid), host_cpu) for cid, _, _ in guests}
        if args.workers > 1:
            w_tp, w_mem = await every_core(cluster, client, guests, args.workers, args.count, tp)
        p50r = pct(raw_seq, 0.5)
        for cid, _, label in guests:
            samples, cpu_seq = lat_seq[cid]
            rate, cpu_tp = lat_tp[cid]
            p50l = pct(samples, 0.5)
            fig(f"p50, one at a time ({label})", p50l * 1e6, "µs", "lower", p50r * 1e6)
            fig(f"p50 overhead, one at a time ({label})", (p50l - p50r) * 1e6, "µs", "lower")
            fig(
                f"p99, one at a time ({label})",
                pct(samples, 0.99) * 1e6,
                "µs",
                "lower",
                pct(raw_seq, 0.99) * 1e6,
            )
            fig(f"calls/s, {args.inflight} in flight ({label})", rate, "calls/s", "higher", raw_tp)
            fig(
                f"CPU per call, one at a time ({label})",
                cpu_seq * 1e6,
                "µs",
                "lower",
                raw_seq_cpu * 1e6,
            )
            fig(
                f"CPU per call, {args.inflight} in flight ({label})",
                cpu_tp * 1e6,
                "µs",
                "lower",
                raw_tp_cpu * 1e6,
            )
        if args.workers > 1:
            n = args.workers
            for cid, _, label in guests:
                (rate, cpu), (w_rate, w_cpu) = lat_tp[cid], w_tp[cid]
                name = f"{args.inflight} in flight, --workers {n} vs 1 ({label})"
                fig(f"calls/s, {name}", w_rate, "calls/s", "higher", rate, ONE)
                cpu_name = f"CPU per call, all processes, {name}"
                fig(cpu_name, w_cpu * 1e6, "µs", "lower", cpu * 1e6, ONE)
            one, many = w_mem
            mem = f"memory per warm instance after load, --workers {n} vs 1"
            fig(mem, many, "MiB", "lower", one, ONE)
        await nc.close()
        await client.close()

        if not args.no_start:
            # -- 0 -> 100 warm instances (in this process, to read memory precisely) ---
            scale_s, idle_inst, used_inst = await scale_to_100(guests[0][1], tmp / "inproc")
            fig("0 → 100 warm instances", scale_s, "s", "lower")
            fig("memory per warm instance, idle", idle_inst / 2**20, "MiB", "lower")
            fig("memory per instance after one call", used_inst / 2**20, "MiB", "lower")
    return figures


async def every_core(
    cluster: Cluster,
    client: LatticeClient,
    guests: list[tuple[str, Path, str]],
    n: int,
    count: int,
    tp: Callable[[Callable[[], Awaitable[object]], CpuMeter], Awaitable[tuple[float, float]]],
) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """The same in-flight calls on a host with `--workers n` (CPU of all its processes),
    and memory per warm instance after load on a fresh `--workers 1` host and on it."""
    rates: dict[str, tuple[float, float]] = {}
    memory: list[float] = []
    for workers in (1, n):
        host_id = await cluster.host("--workers", str(workers))
        pid = cluster.procs[-1].pid
        await asyncio.sleep(3.0 if workers > 1 else 0.5)  # its workers connect
        before = tree_rss(pid)
        for cid, path, _ in guests:
            await client.scale_component(host_id, path.as_uri(), f"{cid}-w{workers}", count)
        for cid, _, _ in guests:

            async def call(cid: str = f"{cid}-w{workers}") -> object:
                return await client.call(cid, "lattice:examples/echo.echo", ["hello"], timeout=10)

            got = await tp(call, CpuMeter(pid, tree=True))
            if workers > 1:
                rates[cid] = got
        await asyncio.sleep(1.0)  # the workers' warm counts reach the host
        inv = await client.inventory(host_id)
        warm = sum(c.instances_warm for c in inv.components)
        memory.append((tree_rss(pid) - before) / max(warm, 1) / 2**20)
        for cid, path, _ in guests:
            await client.scale_component(host_id, path.as_uri(), f"{cid}-w{workers}", 0)
    return rates, (memory[0], memory[1])


async def main(argv: list[str]) -> None:
    from bench.all import machine_facts, report

    args = parser().parse_args(argv)
    machine = machine_facts()
    report(BENCH, await measure(args), vars(args), machine)


async def scale_to_100(echo: Path, data_dir: Path) -> tuple[float, float, float]:
    from host.config import Limits
    from host.runtime.engine import CompileCache, EpochTicker, new_engine
    from host.runtime.loader import load_pool

    engine = new_engine()
    ticker = EpochTicker(engine)
    ticker.start()
    cache = CompileCache(engine, data_dir)
    pool, _ = await load_pool(
        component_id="echo",
        ref=echo.as_uri(),
        engine=engine,
        cache=cache,
        limits=Limits(),
        max_instances=100,
    )
    before = rss_bytes(os.getpid())
    t = time.perf_counter()
    await asyncio.to_thread(pool.warm_up, 100)
    elapsed = time.perf_counter() - t
    idle = (rss_bytes(os.getpid()) - before) / 99  # one instance existed already
    # An idle instance shares its pages copy-on-write with the compiled image; one call
    # each makes them touch what a serving instance touches.
    export = pool.exports["lattice:examples/echo.echo"]
    for slot in list(pool._idle):
        pool._invoke(slot, export, ["hello"])
    used = (rss_bytes(os.getpid()) - before) / 99
    await pool.drain()
    ticker.stop()
    return elapsed, idle, used


# -- the plain table and bench/results/NAME.json, still used by controller, deploy, soak


def print_table(
    rows: list[tuple[str, str, str, str]],
    head: tuple[str, str, str, str] = ("measure", "raw nats-py", "lattice", "ratio / overhead"),
) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def save(name: str, rows: list[tuple[str, str, str, str]]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(
        json.dumps(
            {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}, indent=1, ensure_ascii=False
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
