"""What every benchmark needs: a throw-away NATS server and child processes.

`Cluster` starts nats-server on a free port in a temporary directory, runs `lattice up`
hosts and baseline servers as separate processes (so the process being measured is
not the one measuring), and stops all of them on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from lattice import natsd
from lattice.client import LatticeClient


class Cluster:
    def __init__(self, lattice: str = "bench") -> None:
        self.lattice = lattice
        self.tmp = Path(tempfile.mkdtemp(prefix="lattice-bench-"))
        self.server = natsd.EmbeddedNats(
            "127.0.0.1", natsd.free_port(), self.tmp / "js", self.tmp / "nats.log"
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return self.server.url

    async def __aenter__(self) -> Cluster:
        await self.server.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=30)
        await self.server.stop()

    def spawn(
        self, *args: str, wait_for_ready: bool = False, tree: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """`python -m ARGS`; with `wait_for_ready`, until it prints a line saying ready;
        with `tree`, the code of that checkout (`bench ab`: another commit's)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.PIPE if wait_for_ready else None,
            cwd=tree,
            env=None if tree is None else {**os.environ, "PYTHONPATH": str(tree)},
        )
        self.procs.append(proc)
        if wait_for_ready:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return proc

    def start_host(
        self, *extra: str, data_dir: str = "host", tree: Path | None = None
    ) -> subprocess.Popen[bytes]:
        return self.spawn(
            "lattice",
            "up",
            "--nats-url",
            self.url,
            "--lattice",
            self.lattice,
            "--data-dir",
            str(self.tmp / data_dir),
            "--log-level",
            "warning",
            "--workers",  # one process unless a bench asks for more (a later flag wins)
            "1",
            *extra,
            tree=tree,
        )

    async def host(self, *extra: str, data_dir: str = "host", tree: Path | None = None) -> str:
        """Start a host and wait until it answers; returns its id."""
        proc = self.start_host(*extra, data_dir=data_dir, tree=tree)
        client = await LatticeClient.connect(self.url, self.lattice)
        try:
            known = {h.id for h in await client.hosts(wait=0.3)}
            for _ in range(300):
                if proc.poll() is not None:
                    raise RuntimeError("the host exited during start-up")
                fresh = [h.id for h in await client.hosts(wait=0.3) if h.id not in known]
                if fresh:
                    return fresh[0]
                await asyncio.sleep(0.1)
        finally:
            await client.close()
        raise RuntimeError("the host did not answer within 30 s")

    async def client(self, timeout: float = 60.0) -> LatticeClient:
        return await LatticeClient.connect(self.url, self.lattice, timeout=timeout)
