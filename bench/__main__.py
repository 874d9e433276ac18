"""`python -m bench NAME` runs one benchmark and prints its table."""

from __future__ import annotations

import asyncio
import sys

BENCHES = {
    "invoke": "bench.invoke",
    "provider": "bench.provider",
    "links": "bench.links",  # component → component: in-process on one host vs over NATS
    "transport": "bench.transport",  # a same-host hop: Unix socket vs NATS loopback
    "controller": "bench.controller",
    "http": "bench.http",
    "deploy": "bench.deploy",
    "soak": "bench.soak",
    "blobstore": "bench.blobstore",
    "http_client": "bench.http_client",
    "neighbour": "bench.neighbour",  # a neighbour's latency while runaways are stopped
    "all": "bench.all",  # invoke + provider + http: one table, one .bench-results/ record
    "compare": "bench.compare",  # two records: ratio of every figure, flags beyond ±10 %
    "ab": "bench.ab",  # this checkout and a commit at once, in alternating blocks
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHES:
        print(f"usage: python -m bench {{{'|'.join(BENCHES)}}} [options]", file=sys.stderr)
        sys.exit(2)
    import importlib

    mod = importlib.import_module(BENCHES[sys.argv[1]])
    asyncio.run(mod.main(sys.argv[2:]))


main()
