"""`python -m bench links`: a component calling a component, on one host and across two.

Two pairs of `hop` components (components/src/hop: `hop(n, name)` calls the imported
`hop(n - 1, name)`), each pair linked both ways into a cycle: `near-a`/`near-b` both on
host A, so each link call is served in-process (host/runtime/imports.py, `run_inline`);
`far-a` on host A and `far-b` on host B, so each crosses NATS between two processes.
The guest work is the same on both sides; only the way the call travels differs.

A link call's cost is `(p50 of hop(DEPTH) - p50 of hop(0)) / DEPTH`, one chain at a
time (the client's own call to the first hop is in both terms and cancels out);
`DEPTH` is `MAX_INLINE_DEPTH`, the deepest chain that stays in-process. Then chains of
DEPTH link calls with many in flight: link calls/s. There `near` runs out of seats
(`--count` per component, two per chain) only if `--inflight` asks for more than
`--count / 2` chains; the extra ones then go over NATS by design.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from bench.harness import Cluster
from bench.invoke import CpuMeter, concurrent, sequential
from bench.results import Figure, pct
from host.runtime.imports import MAX_INLINE_DEPTH

BENCH = "links"
BASE = "over NATS (target on another host)"
HOP = "lattice:hop/chain.hop"
DEPTH = MAX_INLINE_DEPTH


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench links")
    ap.add_argument("--calls", type=int, default=500, help="sequential chains per depth and side")
    ap.add_argument("--total", type=int, default=2000, help="chains in the in-flight run")
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument("--count", type=int, default=40, help="instances of each hop component")
    return ap


async def measure(args: argparse.Namespace) -> list[Figure]:
    from components.build import build

    ref = build("hop").as_uri()
    async with Cluster() as cluster:
        host_a = await cluster.host(data_dir="a")
        cpu_a = CpuMeter(cluster.procs[-1].pid)
        host_b = await cluster.host(data_dir="b")
        cpu_b = CpuMeter(cluster.procs[-1].pid)
        client = await cluster.client()
        placement = {"near-a": host_a, "near-b": host_a, "far-a": host_a, "far-b": host_b}
        for cid, host in placement.items():
            await client.scale_component(host, ref, cid, args.count)
        for a, b in (("near-a", "near-b"), ("far-a", "far-b")):
            await client.put_link(a, b, "lattice", "hop", ["chain"])
            await client.put_link(b, a, "lattice", "hop", ["chain"])

        def chain(cid: str, depth: int) -> Callable[[], Awaitable[object]]:
            async def call() -> object:
                got = await client.call(cid, HOP, [depth, "x"], timeout=30)
                assert isinstance(got, dict) and "ok" in got, got
                return got

            return call

        per_call: dict[str, float] = {}
        rate: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for side in ("far", "near"):
            zero = await sequential(chain(f"{side}-a", 0), args.calls)
            deep = await sequential(chain(f"{side}-a", DEPTH), args.calls)
            per_call[side] = (pct(deep, 0.5) - pct(zero, 0.5)) / DEPTH
            cpu_a.start()
            cpu_b.start()
            chains = await concurrent(chain(f"{side}-a", DEPTH), args.total, args.inflight)
            rate[side] = chains * DEPTH
            # both hosts' CPU per chain (B's is ~0 for `near`), over the link calls in it
            spent = (cpu_a.per_call(args.total) + cpu_b.per_call(args.total)) / DEPTH
            cpu[side] = spent
        await client.close()
    inflight = f"{args.inflight} chains in flight"
    return [
        Figure(
            BENCH,
            "component → component link call p50, same host (in-process)",
            per_call["near"] * 1e6,
            "µs",
            "lower",
            per_call["far"] * 1e6,
            BASE,
        ),
        Figure(
            BENCH,
            f"component → component link calls/s, same host, {inflight}",
            rate["near"],
            "calls/s",
            "higher",
            rate["far"],
            BASE,
        ),
        # a chain's client call and guest work are in both; the rest is the link calls'
        Figure(
            BENCH,
            f"hosts' CPU per link call (and its share of the chain), {inflight}",
            cpu["near"] * 1e6,
            "µs",
            "lower",
            cpu["far"] * 1e6,
            BASE,
        ),
    ]


async def main(argv: list[str]) -> None:
    from bench.all import machine_facts, report

    args = parser().parse_args(argv)
    machine = machine_facts()
    report(BENCH, await measure(args), vars(args), machine)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
