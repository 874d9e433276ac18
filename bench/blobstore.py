"""`python -m bench blobstore`: a 100 MB object written and read through each blobstore
provider, as a host would move it: `write-data` parts of 256 KiB, then `get-data`
chunks of 256 KiB, one request at a time over NATS.

Each provider runs as its own process (`python -m providers.blobstore_{fs,nats,s3}`)
against a temp directory, a JetStream object store on the bench's nats-server, and a
moto S3 server (a compatibility server, not a production store). Reported: MB/s each
way and the provider process's RSS growth over its idle baseline, sampled every 20 ms
(the issue's bound: under 32 MB for a 100 MB object). The data is generated and hashed
on the fly, so this process holds no copy either.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import shutil
import time
import uuid

import nats
import psutil

from bench.harness import Cluster
from bench.invoke import print_table, save
from lattice import codec
from providers.sdk import HostData, Link
from tests.s3server import S3Server
from tests.servers import ProviderProcess

PART = 256 * 1024
MB = 1024 * 1024


def blob_link(provider_id: str, config: dict[str, str], secrets: dict[str, str]) -> Link:
    return Link.model_validate(
        {
            "source_id": "bench",
            "target": provider_id,
            "wit_namespace": "wasi",
            "wit_package": "blobstore",
            "interfaces": ["blobstore", "container"],
            "target_config": config,
            "target_secrets": secrets,
        }
    )


def block(i: int) -> bytes:
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    return seed * (PART // len(seed))


class Sampler:
    """Peak RSS of one process, sampled in the background."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)
            await asyncio.sleep(0.02)

    async def stop(self) -> float:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return (self.peak - self.base) / MB


async def one(
    backend: str, cluster: Cluster, config: dict[str, str], secrets: dict[str, str], size_mb: int
) -> tuple[float, float, float, float]:
    """(write MB/s, read MB/s, RSS growth MB writing, RSS growth MB reading)."""
    lattice, provider_id = f"bb{uuid.uuid4().hex[:6]}", f"blob-{backend}"
    hd = HostData(
        lattice=lattice,
        nats_url=cluster.url,
        provider_id=provider_id,
        host_id="NBENCH",
        link_definitions=[blob_link(provider_id, config, secrets)],
        log_level="warning",
    )
    proc = ProviderProcess(f"providers.blobstore_{backend}", hd, cluster.tmp / f"{backend}.log")
    nc = await nats.connect(cluster.url)
    await proc.start()
    try:
        await proc.wait_ready(nc)
        assert proc.process is not None
        headers = {"source-id": "bench"}

        async def call(op: str, *args: object) -> object:
            subject = f"{lattice}.{provider_id}.rpc.wasi:blobstore/{op}"
            msg = await nc.request(subject, codec.pack(list(args)), timeout=60, headers=headers)
            reply = codec.unpack(msg.data)
            assert isinstance(reply, dict) and "ok" in reply, f"{op}: {reply!r:.200}"
            return reply["ok"]

        await call("blobstore.create-container", "bench")
        await asyncio.sleep(0.5)
        parts = size_mb * MB // PART
        sampler = Sampler(proc.process.pid)
        digest = hashlib.sha256()
        started = time.perf_counter()
        for i in range(parts):
            data = block(i)
            digest.update(data)
            await call("container.write-data", "bench", "big", "u1", i, data, i == parts - 1)
        wrote = time.perf_counter() - started
        grow_w = await sampler.stop()

        sampler = Sampler(proc.process.pid)
        back = hashlib.sha256()
        offset: int | None = 0
        started = time.perf_counter()
        while offset is not None:
            reply = await call("container.get-data", "bench", "big", offset, 2**64 - 1)
            assert isinstance(reply, dict)
            back.update(reply["data"])
            offset = reply["next"]
        read = time.perf_counter() - started
        grow_r = await sampler.stop()
        assert back.digest() == digest.digest(), f"{backend}: read back other bytes"
        await call("blobstore.delete-container", "bench")
        return size_mb / wrote, size_mb / read, grow_w, grow_r
    finally:
        await proc.stop()
        await nc.close()


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench blobstore")
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--backends", default="fs,nats,s3")
    args = ap.parse_args(argv)
    rows: list[tuple[str, str, str, str]] = []
    async with Cluster() as cluster:
        s3 = await S3Server(cluster.tmp / "moto").start()
        try:
            configs = {
                "fs": ({"root": str(cluster.tmp / "fs")}, {}),
                "nats": ({"bucket_prefix": "bench-"}, {}),
                "s3": (
                    {"endpoint": s3.endpoint, "bucket_prefix": "bench-"},
                    {"access_key_id": "bench", "secret_access_key": "bench-secret"},
                ),
            }
            for backend in args.backends.split(","):
                config, secrets = configs[backend]
                w, r, gw, gr = await one(backend, cluster, config, secrets, args.size_mb)
                rows.append(
                    (
                        f"blobstore-{backend}",
                        f"{w:.1f} / {r:.1f}",
                        f"{gw:.1f} / {gr:.1f}",
                        "yes" if max(gw, gr) < 32 else "NO",
                    )
                )
        finally:
            await s3.stop()
    shutil.rmtree(cluster.tmp, ignore_errors=True)
    head = (
        f"provider ({args.size_mb} MB object)",
        "MB/s write / read",
        "RSS growth MB write / read",
        "< 32 MB",
    )
    print_table(rows, head)
    save("blobstore", rows)
