"""`python -m bench invoke`: what the lattice adds on top of raw NATS request/reply.

Measured in one run on this machine, every server in its own process:
1. raw nats-py echo (a responder that answers with the request body) against the echo
   component called through a `lattice up` host: p50/p99 one call at a time, and calls/s
   with 100 in flight;
2. starting a component with a cold and then a warm compile cache;
3. scaling one component from 0 to 100 warm instances: time, and RSS per instance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats

from bench.harness import Cluster
from lattice import codec

RESULTS = Path(__file__).parent / "results"


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


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


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench invoke")
    ap.add_argument("--calls", type=int, default=2000, help="sequential calls per side")
    ap.add_argument("--total", type=int, default=10000, help="calls in the in-flight run")
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--count", type=int, default=100, help="instances of the echo component")
    args = ap.parse_args(argv)

    from components.build import build

    echo = build("echo", "v1")
    rows: list[tuple[str, str, str, str]] = []
    async with Cluster() as cluster:
        cluster.spawn("bench.raw_echo", cluster.url, "raw.echo", wait_for_ready=True)
        host_id = await cluster.host()
        client = await cluster.client()
        nc = await nats.connect(cluster.url)
        tmp = cluster.tmp

        # -- start: cold then warm compile cache --------------------------------
        ref = echo.as_uri()
        t = time.perf_counter()
        await client.scale_component(host_id, ref, "echo", 1)
        cold = time.perf_counter() - t
        await client.scale_component(host_id, ref, "echo", 0)
        # a second host process on the same data dir: the compile cache is on disk only
        second = await cluster.host()
        t = time.perf_counter()
        await client.scale_component(second, ref, "echo-warm", 1)
        warm = time.perf_counter() - t
        await client.scale_component(second, ref, "echo-warm", 0)
        await client.scale_component(host_id, ref, "echo", args.count)

        # -- latency and throughput ---------------------------------------------
        payload = codec.pack(["hello"])

        async def raw_call() -> object:
            return await nc.request("raw.echo", payload, timeout=10)

        async def lattice_call() -> object:
            return await client.call("echo", "lattice:examples/echo.echo", ["hello"], timeout=10)

        raw_seq = await sequential(raw_call, args.calls)
        lat_seq = await sequential(lattice_call, args.calls)
        raw_tp = await concurrent(raw_call, args.total, args.inflight)
        lat_tp = await concurrent(lattice_call, args.total, args.inflight)

        # -- 0 -> 100 warm instances (in this process, to read memory precisely) ---
        scale_s, idle_inst, used_inst = await scale_to_100(echo, tmp / "inproc")

        p50r, p50l = pct(raw_seq, 0.5), pct(lat_seq, 0.5)
        rows = [
            (
                "p50, one at a time",
                f"{p50r * 1e6:.0f} µs",
                f"{p50l * 1e6:.0f} µs",
                f"+{(p50l - p50r) * 1e6:.0f} µs",
            ),
            (
                "p99, one at a time",
                f"{pct(raw_seq, 0.99) * 1e6:.0f} µs",
                f"{pct(lat_seq, 0.99) * 1e6:.0f} µs",
                "",
            ),
            (
                f"calls/s, {args.inflight} in flight",
                f"{raw_tp:,.0f}",
                f"{lat_tp:,.0f}",
                f"{lat_tp / raw_tp:.2f}×",
            ),
            ("component start, cold compile cache", "", f"{cold:.2f} s", ""),
            ("component start, warm disk cache (new host)", "", f"{warm:.2f} s", ""),
            ("0 → 100 warm instances", "", f"{scale_s:.2f} s", ""),
            ("memory per warm instance, idle", "", f"{idle_inst / 2**20:.2f} MiB", ""),
            ("memory per instance after one call", "", f"{used_inst / 2**20:.2f} MiB", ""),
        ]
        await nc.close()
        await client.close()
    print_table(rows)
    save("invoke", rows)


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
