"""A throw-away S3-compatible server for tests and benches: moto in server mode.

moto is a *compatibility* server (it keeps everything in memory and checks no
credentials); it stands in for S3 in tests, it is not a store to run in production.
`S3Server` runs `moto_server` from the virtualenv as a subprocess on a free port and
stops it afterwards; the `s3_server` fixture (module scope) starts one per test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from lattice.natsd import free_port


class S3ServerError(RuntimeError):
    pass


def moto_binary() -> str:
    local = Path(sys.executable).parent / "moto_server"
    if local.exists():
        return str(local)
    found = shutil.which("moto_server")
    if found is None:
        raise S3ServerError("no moto_server: pip install 'moto[server]'")
    return found


@dataclass
class S3Server:
    workdir: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                await http.get(f"{self.endpoint}/moto-api/")
        except httpx.HTTPError:
            return False
        return True

    async def start(self, timeout: float = 30.0) -> S3Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "moto.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            moto_binary(),
            "-H",
            "127.0.0.1",
            "-p",
            str(self.port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process.returncode is not None:
                raise S3ServerError(f"moto_server exited with {self.process.returncode}")
            if await self._ready():
                return self
            await asyncio.sleep(0.1)
        await self.stop()
        raise S3ServerError(f"moto_server did not answer within {timeout}s")

    async def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@pytest.fixture(scope="module")
async def s3_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
