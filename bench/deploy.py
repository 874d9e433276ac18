"""`python -m bench deploy`: first deploy of an 18 MB component on 3 fresh hosts.

Side by side in one run, each on its own NATS server and three cold `lattice up`
processes (fresh data dirs: no artifact cache, no compile cache):

- before: shared compile off (`lattice up --no-shared-compile`),
  so every host compiles the same bytes at once on the machine's cores;
- after: shared compile on, so one host compiles under the lattice's lease and the
  others deserialize its signed artifact.

Each deploys one app with a 4-replica spreadscaler of the echo component (componentize-py,
~18 MB), pushed to the lattice as `lattice://bench-echo:1.0.0`, and times until the
controller reports `deployed`; then a second app using the same digest (another
name for the same bytes) on the now warm hosts. The controller runs in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.controller import manifest
from bench.harness import Cluster
from bench.invoke import print_table, save
from lattice.artifacts import ops
from lattice.artifacts.fetch import FetchPolicy
from lattice.client import LatticeClient
from lattice.controller.run.service import Controller


@contextlib.contextmanager
def env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


async def time_deploy(client: LatticeClient, name: str, image: str, replicas: int) -> float:
    t0 = time.perf_counter()
    put = await client.model("put", body=manifest(name, image, replicas))
    await client.model("deploy", name, {"version": put["version"]})
    while True:
        status = (await client.model("status", name))["status"]
        if status["state"] == "deployed":
            return time.perf_counter() - t0
        if status["state"] == "failed":
            raise RuntimeError(f"{name} failed: {status}")
        await asyncio.sleep(0.05)


async def scenario(shared: bool, replicas: int, path: Path) -> tuple[float, float]:
    async with Cluster() as cluster:
        flag = "--shared-compile" if shared else "--no-shared-compile"
        with env("LATTICE_NO_SHARED_COMPILE", None):  # the flag decides, not the caller's env
            for i in range(3):
                cluster.start_host(
                    "--heartbeat-interval", "2", "--label", f"n={i}", flag, data_dir=f"h{i}"
                )
        client = await LatticeClient.connect(cluster.url, cluster.lattice, timeout=60)
        try:
            while len(await client.hosts(wait=0.5)) < 3:
                await asyncio.sleep(0.2)
            policy = FetchPolicy()
            for ref in ("lattice://bench-echo:1.0.0", "lattice://bench-echo-copy:1.0.0"):
                await ops.push(ref, path, nc=client.nc, lattice=cluster.lattice, policy=policy)
            ctl = Controller(cluster.url, cluster.lattice)
            await ctl.start()
            try:
                first = await time_deploy(client, "first", "lattice://bench-echo:1.0.0", replicas)
                second = await time_deploy(
                    client, "second", "lattice://bench-echo-copy:1.0.0", replicas
                )
            finally:
                await ctl.stop()
        finally:
            await client.close()
    return first, second


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench deploy")
    ap.add_argument("--replicas", type=int, default=4)
    args = ap.parse_args(argv)

    from components.build import build

    path = build("echo", "v1")
    size_mb = path.stat().st_size / 1e6
    before = await scenario(False, args.replicas, path)
    after = await scenario(True, args.replicas, path)
    what = f"{size_mb:.0f} MB component, {args.replicas} replicas, 3 cold hosts"
    rows = [
        (
            "first deploy (until deployed)",
            f"{before[0]:.1f} s",
            f"{after[0]:.1f} s",
            f"{what}; goal < 8 s",
        ),
        (
            "second app, same digest",
            f"{before[1]:.1f} s",
            f"{after[1]:.1f} s",
            "same bytes under another name, hosts warm; goal < 2 s",
        ),
    ]
    print_table(rows, ("measure", "before: no shared compile", "after: shared compile", "what"))
    save("deploy", rows)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
