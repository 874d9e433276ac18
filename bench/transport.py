"""`python -m bench transport`: what a host → same-host provider hop could cost over
another local transport, next to NATS over loopback (what providers use today).

One responder process answers both ways, so the two paths differ only in transport:
a NATS request/reply through nats-server on 127.0.0.1 (nats-py on both ends, as the
host and the provider SDK use it), and length-prefixed frames `[id, body]` over a Unix
domain socket with asyncio streams (one connection, calls multiplexed by id). The body
is the msgpack of a keyvalue increment's arguments. p50 one at a time, and calls/s with
`--inflight` outstanding. docs/providers.md ("Same-host providers") reads these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import struct
import sys

import nats
from nats.aio.msg import Msg

from bench.harness import Cluster
from bench.invoke import concurrent, sequential
from bench.results import Figure, latency_figures
from lattice import codec

BENCH = "transport"
BASE = "NATS request/reply over loopback"
SUBJECT = "bench.transport.echo"
HEADER = struct.Struct("!IQ")  # frame length (of id + body), call id


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench transport")
    ap.add_argument("--calls", type=int, default=2000, help="sequential calls per transport")
    ap.add_argument("--total", type=int, default=10000, help="calls in the in-flight run")
    ap.add_argument("--inflight", type=int, default=100)
    return ap


# ---------------------------------------------------------------- responder process


async def serve(url: str, sock: str) -> None:
    nc = await nats.connect(url)

    async def on_nats(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(SUBJECT, cb=on_nats)

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length, call_id = HEADER.unpack(await reader.readexactly(HEADER.size))
                body = await reader.readexactly(length - 8)
                writer.write(HEADER.pack(length, call_id) + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_unix_server(on_conn, sock)
    await nc.flush()
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------- client side


class UnixClient:
    """Request/reply over one Unix socket connection, replies matched by call id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, path: str) -> UnixClient:
        return cls(*await asyncio.open_unix_connection(path))

    async def _read(self) -> None:
        while True:
            length, call_id = HEADER.unpack(await self.reader.readexactly(HEADER.size))
            body = await self.reader.readexactly(length - 8)
            fut = self.waiting.pop(call_id, None)
            if fut is not None and not fut.done():
                fut.set_result(body)

    async def request(self, body: bytes) -> bytes:
        call_id = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = fut
        self.writer.write(HEADER.pack(len(body) + 8, call_id) + body)
        return await fut

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()


async def measure(args: argparse.Namespace) -> list[Figure]:
    body = codec.pack(["", "bench", 1])
    async with Cluster() as cluster:
        sock = str(cluster.tmp / "echo.sock")
        cluster.spawn("bench.transport", "serve", cluster.url, sock, wait_for_ready=True)
        nc = await nats.connect(cluster.url)
        ux = await UnixClient.connect(sock)

        async def over_nats() -> object:
            return await nc.request(SUBJECT, body, timeout=10)

        async def over_unix() -> object:
            return await ux.request(body)

        nats_seq = await sequential(over_nats, args.calls)
        unix_seq = await sequential(over_unix, args.calls)
        nats_tp = await concurrent(over_nats, args.total, args.inflight)
        unix_tp = await concurrent(over_unix, args.total, args.inflight)
        await ux.close()
        await nc.close()
    return [
        *latency_figures(BENCH, "Unix socket request/reply", unix_seq, nats_seq, BASE, "µs"),
        Figure(
            BENCH,
            f"Unix socket calls/s, {args.inflight} in flight",
            unix_tp,
            "calls/s",
            "higher",
            nats_tp,
            BASE,
        ),
    ]


async def main(argv: list[str]) -> None:
    from bench.all import machine_facts, report

    args = parser().parse_args(argv)
    machine = machine_facts()
    report(BENCH, await measure(args), vars(args), machine)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(serve(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(main(sys.argv[1:]))
