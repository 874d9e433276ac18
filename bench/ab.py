"""`python -m bench ab REV`: this checkout against commit REV, both running at once.

On a shared machine single runs move ±30 %, and of two back-to-back runs the second
starts at another load, so `bench compare` of two `bench all` runs can flag a change
WORSE that only met a busier minute. Here two `lattice up` hosts, one per commit (REV
checked out with `git worktree` in a temporary folder, sharing this checkout's component
cache), join one NATS server; the same calls go to each in alternating blocks, the order
flipped every round, so both see the same machine. Each figure is the median over the
rounds, with REV's as its baseline; the run is saved under `.bench-results/` like any
other (`bench compare` reads it).

`--what invoke`: the minimal echo (or `--guest echo`, the componentize-py one) at 100 in
flight and one at a time. `--what provider`: the minimal counter through each host's own
keyvalue-redis provider (its Unix socket), with one Redis server for both. `--what
http`: `GET /` of hello_min (or `--guest hello_http`) served in each host by its own
in-host http-server, requests/s from `wrk` (an aiohttp client without it) at
`--connections`, and p50 one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import Cluster
from bench.http import wait_routed, wrk
from bench.invoke import CpuMeter, concurrent, sequential
from bench.results import Figure
from lattice.natsd import free_port

BENCH = "ab"
HERE = Path(__file__).resolve().parent.parent  # this checkout
ECHO = "lattice:examples/echo.echo"
INCREMENT = "lattice:examples/counter.increment"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench ab")
    ap.add_argument("base", metavar="REV", help="the commit to compare with, e.g. main or a sha")
    ap.add_argument(
        "--what",
        choices=("invoke", "provider", "http"),
        default="invoke",
        help="echo calls, counter increments through each host's keyvalue-redis provider, "
        "or GET / served by each host's in-host http-server",
    )
    ap.add_argument(
        "--guest",
        choices=("echo_min", "echo", "hello_min", "hello_http"),
        default=None,
        help="the WAT guest (default) or the componentize-py one: echo_min or echo with "
        "--what invoke, hello_min or hello_http with --what http",
    )
    ap.add_argument("--workers", type=int, default=1, help="--workers of both hosts")
    ap.add_argument("--rounds", type=int, default=6, help="blocks per commit")
    ap.add_argument("--total", type=int, default=10_000, help="calls in an in-flight block")
    ap.add_argument("--inflight", type=int, default=100, help="calls in flight in those blocks")
    ap.add_argument("--calls", type=int, default=500, help="calls in a one-at-a-time block")
    ap.add_argument("--seconds", type=int, default=5, help="--what http: wrk run per block")
    ap.add_argument("--connections", type=int, default=32, help="--what http: wrk connections")
    return ap


def guest_of(what: str, guest: str | None) -> str:
    """The component measured: `--guest` when it fits `--what`, else its WAT default."""
    fits = {"invoke": ("echo_min", "echo"), "http": ("hello_min", "hello_http")}
    if what == "provider":
        if guest is not None:
            raise SystemExit("bench ab: --guest does not apply to --what provider")
        return "counter_min"
    if guest is None:
        return fits[what][0]
    if guest not in fits[what]:
        raise SystemExit(f"bench ab: --guest {guest} does not apply to --what {what}")
    return guest


def block_order(names: list[str], round_no: int) -> list[str]:
    """Who goes first flips every round: neither side always meets the other's wake."""
    return list(names) if round_no % 2 == 0 else list(reversed(names))


def figures(
    what: str, label: str, samples: dict[str, dict[str, list[float]]], base: str, new: str
) -> list[Figure]:
    """Medians of each side's blocks; the base's median is the baseline of the new one."""
    units = {"calls/s": ("calls/s", "higher"), "CPU": ("µs", "lower"), "p50": ("µs", "lower")}
    names = {
        "calls/s": "calls/s, in flight",
        "CPU": "host CPU per call, in flight",
        "p50": "p50, one at a time",
    }
    if what == "http":
        units["calls/s"] = ("requests/s", "higher")
        names = {k: v.replace("call", "request") for k, v in names.items()}
    out = []
    for key, (unit, better) in units.items():
        mine, theirs = samples[new][key], samples[base][key]
        if not mine or not theirs:
            continue
        out.append(
            Figure(
                BENCH,
                f"{what} {names[key]} ({label}), alternating blocks",
                statistics.median(mine),
                unit,
                better,  # type: ignore[arg-type]
                statistics.median(theirs),
                base,
            )
        )
    return out


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """REV checked out beside this one, with this checkout's built components."""
    parent = Path(tempfile.mkdtemp(prefix="lattice-ab-"))
    path = parent / "tree"
    run = subprocess.run(
        ["git", "-C", str(HERE), "worktree", "add", "--detach", str(path), rev],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise SystemExit(f"bench ab: cannot check out {rev!r}: {run.stderr.strip()}")
    try:
        if (HERE / ".cache").is_dir():
            (path / ".cache").symlink_to(HERE / ".cache")
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "remove", "--force", str(path)],
            capture_output=True,
        )
        shutil.rmtree(parent, ignore_errors=True)


async def measure(args: argparse.Namespace) -> list[Figure]:
    from components.build import build
    from tests.servers import RedisServer

    base, new = args.base, "this checkout"
    guest = guest_of(args.what, args.guest)
    wasm = build(guest, "v1" if guest == "echo" else None)
    with worktree(args.base) as base_tree:
        async with Cluster() as cluster:
            redis = (
                await RedisServer(cluster.tmp / "redis").start()
                if args.what == "provider"
                else None
            )
            client = await cluster.client()
            calls: dict[str, Callable[[], Awaitable[object]]] = {}
            urls: dict[str, str] = {}
            meters: dict[str, CpuMeter] = {}
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.connections))
            try:
                for name, tree in ((base, base_tree), (new, None)):
                    tag = "base" if name == base else "new"
                    workers = ("--workers", str(args.workers))
                    host_id = await cluster.host(*workers, data_dir=tag, tree=tree)
                    # the host and its workers; not its provider (bench provider alike)
                    meters[name] = CpuMeter(cluster.procs[-1].pid, tree=True)
                    cid = f"{guest.replace('_', '-')}-{tag}"
                    await client.scale_component(host_id, wasm.as_uri(), cid, 16)
                    if redis is not None:
                        await client.put_config("redis", {"url": redis.url(1)})
                        await client.start_provider(
                            host_id, "builtin://keyvalue-redis", f"kv-{tag}"
                        )
                        await client.put_link(
                            cid,
                            f"kv-{tag}",
                            "wasi",
                            "keyvalue",
                            ["store", "atomics"],
                            target_config=["redis"],
                        )
                    if args.what == "http":
                        urls[name] = await serve_http(client, host_id, cid, tag)
                        await wait_routed(session, urls[name])

                    def call(cid: str = cid, name: str = name) -> Awaitable[object]:
                        if args.what == "provider":
                            return client.call(cid, INCREMENT, ["bench"], timeout=10)
                        if args.what == "http":
                            return http_get(session, urls[name])
                        return client.call(cid, ECHO, ["hello"], timeout=10)

                    calls[name] = call
                await asyncio.sleep(3.0 if args.workers > 1 else 1.0)  # workers connect
                samples = {n: {"calls/s": [], "CPU": [], "p50": []} for n in calls}
                for r in range(args.rounds):
                    for name in block_order(list(calls), r):
                        fn, meter = calls[name], meters[name]
                        await concurrent(fn, args.total // 10, args.inflight)  # warm
                        meter.start()
                        if args.what == "http":
                            rate, served = await wrk_block(args, urls[name], fn)
                        else:
                            rate = await concurrent(fn, args.total, args.inflight)
                            served = args.total
                        cpu = meter.per_call(served) * 1e6
                        seq = sorted(await sequential(fn, args.calls))
                        samples[name]["calls/s"].append(rate)
                        samples[name]["CPU"].append(cpu)
                        samples[name]["p50"].append(seq[len(seq) // 2] * 1e6)
            finally:
                await session.close()
                await client.close()
                if redis is not None:
                    await redis.stop()
    label = f"{guest}, --workers {args.workers}"
    return figures(args.what, label, samples, base, new)


async def serve_http(client: Any, host_id: str, cid: str, tag: str) -> str:
    """The host's in-host http-server routing a free port to `cid`; the URL of `GET /`."""
    port = free_port()
    await client.start_provider(host_id, "builtin://http-server", f"http-{tag}")
    await client.put_config(f"{cid}-route", {"address": f"127.0.0.1:{port}"})
    await client.put_link(
        f"http-{tag}",
        cid,
        "wasi",
        "http",
        ["incoming-handler"],
        source_config=[f"{cid}-route"],
    )
    return f"http://127.0.0.1:{port}/"


async def http_get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as r:
        body = await r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {url}: {r.status} {body[:100]!r}")
        return body


async def wrk_block(
    args: argparse.Namespace, url: str, fn: Callable[[], Awaitable[object]]
) -> tuple[float, int]:
    """(requests/s, requests served) of one block: wrk's, or an aiohttp client's."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    rate = await wrk(url, args.connections, args.seconds)
    if rate is None:
        rate = await concurrent(fn, args.total, args.connections)
        return rate, args.total
    return rate, round(rate * (loop.time() - started))


async def main(argv: list[str]) -> None:
    from bench.all import machine_facts, report

    args = parser().parse_args(argv)
    machine = machine_facts()
    report(BENCH, await measure(args), vars(args), machine)
