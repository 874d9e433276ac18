"""`python -m bench http`: HTTP through the http-server provider to `hello_http`, against a
plain aiohttp server answering the same request.

Measured in one run, every server in its own process (nats-server, a `lattice up` host
with the http-server provider it starts, and the baseline `python -m bench.http raw
PORT`), from an aiohttp client in this process:

1. `GET /` one request at a time: p50 and p99;
2. `GET /` requests/s with `--inflight` requests in flight;
3. a 5 MB `POST /echo` round trip (the baseline streams the body back too).

The lattice path is client → provider (aiohttp) → NATS → host → wasm guest (Python
WASI layer) and back, with bodies in 64 KiB chunks under credit-based flow control.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp
from aiohttp import web

from bench.harness import Cluster
from bench.invoke import CpuMeter, concurrent, sequential
from bench.results import Figure, latency_figures
from lattice.natsd import free_port

HELLO = b"hello from python"
ECHO_BYTES = 5 * 1024 * 1024


async def serve_raw(port: int) -> None:
    """The baseline: `GET /` → `hello from python`, `POST /echo` streams the body back."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=HELLO, content_type="text/plain", headers={"x-hello": "lattice"})

    async def echo(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        async for chunk in request.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def wait_routed(session: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never answered 200")


BENCH = "http"
BASE = "plain aiohttp"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench http")
    ap.add_argument("--requests", type=int, default=1000, help="sequential requests per side")
    ap.add_argument("--total", type=int, default=5000, help="requests in the in-flight run")
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--count", type=int, default=8, help="instances of hello_http")
    ap.add_argument("--echoes", type=int, default=5, help="5 MB echo round trips per side")
    return ap


async def measure(args: argparse.Namespace) -> list[Figure]:
    from components.build import build

    hello = build("hello_http")
    raw_port, lat_port = free_port(), free_port()
    async with Cluster() as cluster:
        raw_proc = cluster.spawn("bench.http", "raw", str(raw_port), wait_for_ready=True)
        host_id = await cluster.host()
        host_cpu, raw_cpu = CpuMeter(cluster.procs[-1].pid), CpuMeter(raw_proc.pid)
        client = await cluster.client()
        await client.start_provider(host_id, "builtin://http-server", "http")
        await client.scale_component(host_id, hello.as_uri(), "hello", args.count)
        await client.put_config("hello-route", {"address": f"127.0.0.1:{lat_port}"})
        await client.put_link(
            "http", "hello", "wasi", "http", ["incoming-handler"], source_config=["hello-route"]
        )
        connector = aiohttp.TCPConnector(limit=args.inflight)
        async with aiohttp.ClientSession(connector=connector) as session:
            raw_url, lat_url = f"http://127.0.0.1:{raw_port}", f"http://127.0.0.1:{lat_port}"
            await wait_routed(session, lat_url + "/")

            def getter(base: str):  # type: ignore[no-untyped-def]
                async def get() -> object:
                    async with session.get(base + "/") as r:
                        body = await r.read()
                        assert r.status == 200 and body == HELLO, (r.status, body[:100])
                    return body

                return get

            payload = bytes(range(256)) * (ECHO_BYTES // 256)

            async def echo_time(base: str) -> float:
                best = float("inf")
                for _ in range(args.echoes):
                    t = time.perf_counter()
                    async with session.post(base + "/echo", data=payload) as r:
                        body = await r.read()
                    best = min(best, time.perf_counter() - t)
                    assert body == payload
                return best

            raw_get, lat_get = getter(raw_url), getter(lat_url)
            raw_seq = await sequential(raw_get, args.requests)
            lat_seq = await sequential(lat_get, args.requests)
            raw_cpu.start()
            raw_tp = await concurrent(raw_get, args.total, args.inflight)
            raw_tp_cpu = raw_cpu.per_call(args.total)
            host_cpu.start()
            lat_tp = await concurrent(lat_get, args.total, args.inflight)
            lat_tp_cpu = host_cpu.per_call(args.total)
            raw_echo = await echo_time(raw_url)
            lat_echo = await echo_time(lat_url)
        await client.close()

    inflight = f"{args.inflight} in flight"
    return [
        *latency_figures(BENCH, "GET /", lat_seq, raw_seq, BASE, "ms"),
        Figure(
            BENCH, f"GET / requests/s, {inflight}", lat_tp, "requests/s", "higher", raw_tp, BASE
        ),
        # the host's CPU only: the http-server provider is a process of its own
        Figure(
            BENCH,
            f"GET / host CPU per request, {inflight}",
            lat_tp_cpu * 1e6,
            "µs",
            "lower",
            raw_tp_cpu * 1e6,
            BASE,
        ),
        Figure(
            BENCH,
            "5 MB POST /echo round trip (best)",
            lat_echo * 1e3,
            "ms",
            "lower",
            raw_echo * 1e3,
            BASE,
        ),
    ]


async def main(argv: list[str]) -> None:
    from bench.all import machine_facts, report

    args = parser().parse_args(argv)
    machine = machine_facts()
    report(BENCH, await measure(args), vars(args), machine)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "raw":
        asyncio.run(serve_raw(int(sys.argv[2])))
    else:
        asyncio.run(main(sys.argv[1:]))
