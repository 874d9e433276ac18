"""`python -m bench provider`: a component incrementing a Redis counter through the
keyvalue-redis provider, against a plain NATS handler doing the same INCR with redis-py.
Two guests do the same open + increment + drop: the componentize-py counter and
`counter_min` (WAT, no language runtime), so the gap between them is the guest's.

Both sides answer NATS requests from this process; both end in one Redis INCR. The
lattice path is client → host → component (wasm) → host import bridge → provider →
Redis, so the ratio shows what linking a capability at run time costs. The bridge
reaches a provider its host started through the provider's Unix socket
(host/provider_sockets.py); a second host started with `--no-provider-sockets` runs the
minimal counter with the NATS hop instead, to show what the socket saves.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import nats

from bench.harness import Cluster
from bench.invoke import CpuMeter, concurrent, sequential
from bench.results import Figure, latency_figures
from lattice import codec
from tests.servers import RedisServer

BENCH = "provider"
BASE = "plain handler + redis-py"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench provider")
    ap.add_argument("--calls", type=int, default=1000, help="sequential calls per side")
    ap.add_argument("--total", type=int, default=5000, help="calls in the in-flight run")
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--count", type=int, default=16, help="instances of the counter component")
    return ap


async def measure(args: argparse.Namespace) -> list[Figure]:
    from components.build import build

    counter, counter_min = build("counter"), build("counter_min")
    async with Cluster() as cluster:
        redis_server = await RedisServer(cluster.tmp / "redis").start()
        raw_proc = cluster.spawn(
            "bench.raw_incr", cluster.url, redis_server.url(0), "raw.incr", wait_for_ready=True
        )
        host_id = await cluster.host()
        host_cpu, raw_cpu = CpuMeter(cluster.procs[-1].pid), CpuMeter(raw_proc.pid)
        nats_host = await cluster.host("--no-provider-sockets", data_dir="over-nats")
        nats_cpu = CpuMeter(cluster.procs[-1].pid)
        client = await cluster.client()
        await client.put_config("redis", {"url": redis_server.url(1)})
        await client.start_provider(host_id, "builtin://keyvalue-redis", "kv-redis")
        await client.start_provider(nats_host, "builtin://keyvalue-redis", "kv-redis-nats")
        for on, cid, wasm, provider in (
            (host_id, "counter", counter, "kv-redis"),
            (host_id, "counter-min", counter_min, "kv-redis"),
            (nats_host, "counter-min-nats", counter_min, "kv-redis-nats"),
        ):
            await client.scale_component(on, wasm.as_uri(), cid, args.count)
            await client.put_link(
                cid, provider, "wasi", "keyvalue", ["store", "atomics"], target_config=["redis"]
            )
        nc = await nats.connect(cluster.url)
        body = codec.pack(["bench"])

        async def raw_call() -> object:
            return await nc.request("raw.incr", body, timeout=10)

        def caller(cid: str):  # type: ignore[no-untyped-def]
            async def call() -> object:
                return await client.call(cid, "lattice:examples/counter.increment", ["bench"])

            return call

        lattice_call, min_call = caller("counter"), caller("counter-min")
        nats_call = caller("counter-min-nats")
        raw_seq = await sequential(raw_call, args.calls)
        lat_seq = await sequential(lattice_call, args.calls)
        min_seq = await sequential(min_call, args.calls)
        nats_seq = await sequential(nats_call, args.calls)
        raw_cpu.start()
        raw_tp = await concurrent(raw_call, args.total, args.inflight)
        raw_tp_cpu = raw_cpu.per_call(args.total)
        host_cpu.start()
        lat_tp = await concurrent(lattice_call, args.total, args.inflight)
        lat_tp_cpu = host_cpu.per_call(args.total)
        host_cpu.start()
        min_tp = await concurrent(min_call, args.total, args.inflight)
        min_tp_cpu = host_cpu.per_call(args.total)
        nats_cpu.start()
        nats_tp = await concurrent(nats_call, args.total, args.inflight)
        nats_tp_cpu = nats_cpu.per_call(args.total)
        await nc.close()
        await client.close()
        await redis_server.stop()
    inflight = f"{args.inflight} in flight"
    figures = []
    # the componentize-py counter keeps the figures' earlier names; the minimal counter
    # (WAT: the same open + increment + drop, no runtime) shows what is not the guest's
    for name, seq, tp, tp_cpu in (
        ("counter", lat_seq, lat_tp, lat_tp_cpu),
        ("minimal counter", min_seq, min_tp, min_tp_cpu),
        ("minimal counter, provider over NATS", nats_seq, nats_tp, nats_tp_cpu),
    ):
        guest = "" if name == "counter" else f" ({name})"
        figures += [
            *latency_figures(BENCH, name, seq, raw_seq, BASE, "µs"),
            Figure(BENCH, f"{name} calls/s, {inflight}", tp, "calls/s", "higher", raw_tp, BASE),
            # the host's CPU only: the provider process and Redis are not counted
            Figure(
                BENCH,
                f"host CPU per call, {inflight}{guest}",
                tp_cpu * 1e6,
                "µs",
                "lower",
                raw_tp_cpu * 1e6,
                BASE,
            ),
        ]
    return figures


async def main(argv: list[str]) -> None:
    from bench.all import machine_facts, report

    args = parser().parse_args(argv)
    machine = machine_facts()
    report(BENCH, await measure(args), vars(args), machine)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
