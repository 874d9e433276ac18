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
keyvalue-redis provider (its Unix socket), with one Redis server for both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psutil

from bench.harness import Cluster
from bench.invoke import concurrent, sequential
from bench.results import Figure

BENCH = "ab"
HERE = Path(__file__).resolve().parent.parent  # this checkout
ECHO = "lattice:examples/echo.echo"
INCREMENT = "lattice:examples/counter.increment"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench ab")
    ap.add_argument("base", metavar="REV", help="the commit to compare with, e.g. main or a sha")
    ap.add_argument("--what", choices=("invoke", "provider"), default="invoke")
    ap.add_argument("--guest", choices=("echo_min", "echo"), default="echo_min")
    ap.add_argument("--workers", type=int, default=1, help="--workers of both hosts")
    ap.add_argument("--rounds", type=int, default=6, help="blocks per commit")
    ap.add_argument("--total", type=int, default=10_000, help="calls in an in-flight block")
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--calls", type=int, default=500, help="calls in a one-at-a-time block")
    return ap


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
    here = HERE
    parent = Path(tempfile.mkdtemp(prefix="lattice-ab-"))
    path = parent / "tree"
    run = subprocess.run(
        ["git", "-C", str(here), "worktree", "add", "--detach", str(path), rev],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise SystemExit(f"bench ab: cannot check out {rev!r}: {run.stderr.strip()}")
    try:
        if (here / ".cache").is_dir():
            (path / ".cache").symlink_to(here / ".cache")
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(here), "worktree", "remove", "--force", str(path)],
            capture_output=True,
        )
        shutil.rmtree(parent, ignore_errors=True)


def cpu_seconds(proc: psutil.Process) -> float:
    """A host's CPU, its worker processes' included (`host.worker`), not its providers'."""
    total = 0.0
    for p in [proc, *proc.children()]:
        with contextlib.suppress(psutil.Error):
            if p is proc or "host.worker" in p.cmdline():
                t = p.cpu_times()
                total += t.user + t.system
    return total


async def start_host(cluster: Cluster, tree: Path, name: str, workers: int) -> tuple[str, int]:
    """`lattice up` from `tree`; its id and pid."""
    client = await cluster.client()
    try:
        known = {h.id for h in await client.hosts(wait=0.3)}
        argv = ["lattice", "up", "--nats-url", cluster.url, "--lattice", cluster.lattice]
        argv += ["--data-dir", str(cluster.tmp / name), "--log-level", "warning"]
        proc = subprocess.Popen(
            [sys.executable, "-m", *argv, "--workers", str(workers)],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
        )
        cluster.procs.append(proc)
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"bench ab: the {name} host exited during start-up")
            fresh = [h.id for h in await client.hosts(wait=0.3) if h.id not in known]
            if fresh:
                return fresh[0], proc.pid
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    raise SystemExit(f"bench ab: the {name} host did not answer within 30 s")


async def measure(args: argparse.Namespace) -> list[Figure]:
    from components.build import build
    from tests.servers import RedisServer

    here = HERE
    base, new = f"{args.base}", "this checkout"
    guest = "counter_min" if args.what == "provider" else args.guest
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
            procs: dict[str, psutil.Process] = {}
            try:
                for name, tree in ((base, base_tree), (new, here)):
                    tag = "base" if name == base else "new"
                    host_id, pid = await start_host(cluster, tree, tag, args.workers)
                    procs[name] = psutil.Process(pid)
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

                    def call(cid: str = cid) -> Awaitable[object]:
                        if args.what == "provider":
                            return client.call(cid, INCREMENT, ["bench"], timeout=10)
                        return client.call(cid, ECHO, ["hello"], timeout=10)

                    calls[name] = call
                await asyncio.sleep(3.0 if args.workers > 1 else 1.0)  # workers connect
                samples = {n: {"calls/s": [], "CPU": [], "p50": []} for n in calls}
                for r in range(args.rounds):
                    for name in block_order(list(calls), r):
                        fn, proc = calls[name], procs[name]
                        await concurrent(fn, args.total // 10, args.inflight)  # warm
                        before = cpu_seconds(proc)
                        rate = await concurrent(fn, args.total, args.inflight)
                        cpu = (cpu_seconds(proc) - before) / args.total * 1e6
                        seq = sorted(await sequential(fn, args.calls))
                        samples[name]["calls/s"].append(rate)
                        samples[name]["CPU"].append(cpu)
                        samples[name]["p50"].append(seq[len(seq) // 2] * 1e6)
            finally:
                await client.close()
                if redis is not None:
                    await redis.stop()
    label = f"{guest}, --workers {args.workers}"
    return figures(args.what, label, samples, base, new)


async def main(argv: list[str]) -> None:
    from bench.all import machine_facts, report

    args = parser().parse_args(argv)
    machine = machine_facts()
    report(BENCH, await measure(args), vars(args), machine)
