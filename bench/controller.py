"""`python -m bench controller`: deploy 50 applications of 4 replicas over 3 hosts, time
until all are `deployed`; then kill one host (SIGKILL) and time until all are `deployed`
again with every replica on the two hosts left (the heal time).

Both are measured twice in the same run, side by side: with liveness beats (the
default: hosts beat every second, the controller loses a host after 3 missed beats)
and with the old setting (`lattice up --beat-interval 0`, so only heartbeats and the
5 s ping resync tell, and a host is lost after the 15 s expiry). Hosts are `lattice up`
processes; the controller runs in this process with its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time

from bench.harness import Cluster
from bench.invoke import print_table, save
from lattice.client import LatticeClient
from lattice.controller.run.service import Controller


def manifest(name: str, image: str, replicas: int) -> bytes:
    return json.dumps(
        {
            "apiVersion": "core.oam.dev/v1beta1",
            "kind": "Application",
            "metadata": {"name": name, "annotations": {"version": "v1"}},
            "spec": {
                "components": [
                    {
                        "name": "echo",
                        "type": "component",
                        "properties": {"image": image},
                        "traits": [{"type": "spreadscaler", "properties": {"instances": replicas}}],
                    }
                ]
            },
        }
    ).encode()


async def all_deployed(client: LatticeClient, names: set[str]) -> bool:
    models = (await client.model("list"))["models"]
    states = {m["name"]: m["state"] for m in models}
    return all(states.get(n) == "deployed" for n in names)


async def replicas_on(client: LatticeClient, hosts: list[str]) -> int:
    total = 0
    for h in hosts:
        with contextlib.suppress(Exception):
            total += sum(c.max_instances for c in (await client.inventory(h)).components)
    return total


async def measure(image: str, apps: int, replicas: int, *, beats: bool) -> tuple[float, float]:
    """(seconds to deploy, seconds to heal after a SIGKILL) on a fresh 3-host lattice."""
    async with Cluster(lattice="beats" if beats else "nobeats") as cluster:
        url, lattice = cluster.url, cluster.lattice
        beat = () if beats else ("--beat-interval", "0")
        procs = [
            cluster.start_host(
                "--heartbeat-interval", "5", *beat, "--label", f"n={i}", data_dir="shared"
            )
            for i in range(3)
        ]
        client = await LatticeClient.connect(url, lattice, timeout=30)
        while len(await client.hosts(wait=0.5)) < 3:
            await asyncio.sleep(0.2)
        hosts = {h.labels["n"]: h.id for h in await client.hosts(wait=1.0)}
        ctl = Controller(url, lattice, beats=beats)
        await ctl.start()
        names = {f"app{i:02d}" for i in range(apps)}

        t0 = time.perf_counter()
        for n in sorted(names):
            put = await client.model("put", body=manifest(n, image, replicas))
            await client.model("deploy", n, {"version": put["version"]})
        while not await all_deployed(client, names):
            await asyncio.sleep(0.1)
        deploy_s = time.perf_counter() - t0

        procs[0].send_signal(signal.SIGKILL)
        t1 = time.perf_counter()
        left = [hosts["1"], hosts["2"]]
        want = apps * replicas
        while not (await replicas_on(client, left) == want and await all_deployed(client, names)):
            await asyncio.sleep(0.1)
        heal_s = time.perf_counter() - t1
        await ctl.stop()
        await client.close()
    return deploy_s, heal_s


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench controller")
    ap.add_argument("--apps", type=int, default=50)
    ap.add_argument("--replicas", type=int, default=4)
    args = ap.parse_args(argv)

    from components.build import build

    image = build("echo", "v1").as_uri()
    deploy_new, heal_new = await measure(image, args.apps, args.replicas, beats=True)
    deploy_old, heal_old = await measure(image, args.apps, args.replicas, beats=False)
    want = args.apps * args.replicas
    rows = [
        (
            f"deploy {args.apps} apps x {args.replicas} replicas on 3 hosts",
            f"{deploy_old:.1f} s",
            f"{deploy_new:.1f} s",
            "until every app is deployed",
        ),
        (
            "heal after SIGKILL of one host",
            f"{heal_old:.1f} s",
            f"{heal_new:.1f} s",
            f"until all {want} replicas run on the 2 hosts left and every app is deployed",
        ),
    ]
    print_table(rows, ("measure", "no beats (15 s expiry)", "beats (1 s, 3 missed)", "what"))
    save("controller", rows)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
