"""lattice/artifacts/compiled.py's SharedCompiles when the lattice cannot be asked: a
start compiles here instead of failing (CI saw an edge host's scale fail with "nats:
timeout" from the artifact lookup over its slow leaf). The server here is a real
nats-server without JetStream, so every bucket request fails at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nkeys
import pytest
from nats.aio.client import Client as NATS

from lattice import natsd
from lattice.artifacts.compiled import CompileKey, SharedCompiles

KEY = CompileKey(wasmtime="50.0.1", target="x86_64-linux", settings="test")
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
async def nc_without_jetstream(tmp_path: Path) -> AsyncIterator[NATS]:
    server = natsd.EmbeddedNats(
        "127.0.0.1", natsd.free_port(), tmp_path / "js", tmp_path / "nats.log", jetstream=False
    )
    await server.start()
    try:
        nc = await nats.connect(server.url)
        yield nc
        await nc.close()
    finally:
        await server.stop()


def shared(nc: NATS) -> SharedCompiles:
    seed = nkeys.from_seed(nkeys.encode_seed(b"\x01" * 32, nkeys.PREFIX_BYTE_SERVER))

    async def is_host(_: str) -> bool:
        return True

    return SharedCompiles(
        nc,
        "nojs",
        host_id=seed.public_key.decode(),
        sign_fn=seed.sign,
        key=KEY,
        is_lattice_host=is_host,
    )


async def test_without_jetstream_the_host_compiles_here_once(nc_without_jetstream: NATS) -> None:
    calls = []

    async def compile_fn() -> bytes:
        calls.append(1)
        return b"compiled"

    got = await asyncio.wait_for(shared(nc_without_jetstream).obtain(DIGEST, compile_fn), 30)
    assert got == (None, "compiled")
    assert calls == [1]


async def test_a_compile_error_is_raised_not_retried(nc_without_jetstream: NATS) -> None:
    calls = []

    async def compile_fn() -> bytes:
        calls.append(1)
        raise ValueError("not a component: bad magic")

    with pytest.raises(ValueError, match="bad magic"):
        await asyncio.wait_for(shared(nc_without_jetstream).obtain(DIGEST, compile_fn), 30)
    assert calls == [1]
