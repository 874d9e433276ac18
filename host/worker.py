"""One worker process of a host started with `--workers N` (`python -m host.worker`).

It reads its start data (one base64 JSON line) and then commands on stdin, and answers
on stdout, as host/workers.py describes. It runs components the way its host does,
under the host's identity, but answers no control subject, sends no heartbeat and
publishes no event: the host does that for all its workers. End of stdin (the host
stopping, or dying) stops it after its in-flight calls end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import structlog

from host import http_serve
from host.config import ArtifactSettings, HostConfig, Limits
from host.host import Host
from host.identity import HostIdentity, load_identity
from host.workers import pin_this_process
from lattice import logs, loops
from lattice.natsauth import NatsAuth
from lattice.protocol.messages import ScaleComponentRequest, UpdateComponentRequest
from lattice.state import LatticeState
from providers.http_server.provider import HttpServerProvider
from providers.sdk import parse_host_data
from providers.sdk.runner import Runner

log = structlog.get_logger("lattice.worker")

STATUS_INTERVAL_S = 0.5
STOP_PROVIDER_S = 10.0


def start_data(
    config: HostConfig, nats_url: str, identity: HostIdentity, socket_dir: Path | None = None
) -> dict[str, Any]:
    """What a worker needs to serve as `identity` (the seed: it signs shared compiles)."""
    return {
        "provider_socket_dir": None if socket_dir is None else str(socket_dir),
        "seed": identity._seed.decode(),
        "nats_url": nats_url,
        "lattice": config.lattice,
        "data_dir": str(config.data_dir),
        "cache_dir": str(config.cache_dir),
        "limits": dataclasses.asdict(config.limits),
        "artifacts": dataclasses.asdict(config.artifacts),
        "nats_auth": {k: str(v) for k, v in dataclasses.asdict(config.nats_auth).items() if v},
        "otlp_endpoint": config.otlp_endpoint,
        "account_signing_key": str(config.account_signing_key or "") or None,
        "log": {"format": logs.current_format(), "level": logs.current_level()},
    }


def config_of(data: dict[str, Any]) -> HostConfig:
    artifacts = data["artifacts"]
    return HostConfig(
        nats_url=data["nats_url"],
        lattice=data["lattice"],
        data_dir=Path(data["data_dir"]),
        compile_cache_dir=Path(data["cache_dir"]),
        limits=Limits(**data["limits"]),
        artifacts=ArtifactSettings(
            insecure_registries=tuple(artifacts["insecure_registries"]),
            allow_latest=artifacts["allow_latest"],
            shared_compile=artifacts["shared_compile"],
            registry_configs=dict(artifacts["registry_configs"]),
            allowed_issuers=tuple(artifacts["allowed_issuers"]),
        ),
        nats_auth=NatsAuth(**{k: Path(v) for k, v in data["nats_auth"].items()}),
        otlp_endpoint=data.get("otlp_endpoint"),
        account_signing_key=Path(key) if (key := data.get("account_signing_key")) else None,
        embedded_nats=False,
        beat_interval=0,
        http_in_host=False,
    )


def _say(msg: dict[str, Any]) -> None:
    with contextlib.suppress(OSError, ValueError):  # the host is gone: nobody to tell
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()


class WorkerHost(Host):
    """A host's extra process: its component runtime without its control plane."""

    def __init__(self, config: HostConfig, identity: HostIdentity, index: int) -> None:
        super().__init__(config, identity)
        self.index = index
        self._log = log.bind(host_id=self.host_id, lattice=self.lattice, worker=index)
        self._sent: dict[str, int] = {}
        self._providers: dict[str, tuple[Runner, asyncio.Task[int]]] = {}

    async def start(self) -> None:
        name = f"lattice-host {self.friendly_name} worker {self.index}"
        self.nc = await self._connect(self.config.nats_url, name)
        self.state = LatticeState(self.nc, self.lattice)
        await self.state.start()
        await self._start_runtime(self.config.nats_url)
        self.started.set()

    async def stop(self, reason: str = "worker stopped") -> None:
        self._stopping = True
        for provider_id in list(self._providers):
            await self._stop_provider(provider_id)
        await self.components.stop_all()
        if self.bridge.sockets is not None:
            self.bridge.sockets.close()
        if self.bridge.scoped is not None:
            await self.bridge.scoped.close()
        await self.state.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), 5.0)
        self.ticker.stop()
        if self.tracing is not None:
            await self.tracing.close(2.0)
        self._log.info("worker stopped", reason=reason)

    async def publish_event(self, event_type: str, data: dict[str, Any]) -> None:
        """Told to the host, which speaks for the whole host on the lattice."""
        _say({"event": event_type, "data": data})

    def report_status(self) -> None:
        warm = {cid: rc.pool.warm for cid, rc in self.components.running.items()}
        if warm != self._sent:
            self._sent = warm
            _say({"status": warm})

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """Commands from stdin until it closes."""
        status = asyncio.create_task(self._status_loop())
        tasks: set[asyncio.Task[None]] = set()
        try:
            while line := await reader.readline():
                task = asyncio.create_task(self._command(line))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            status.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _command(self, line: bytes) -> None:
        msg: dict[str, Any] = {}
        try:
            msg = json.loads(line)
            if msg["op"] == "scale":
                await self.components.scale(ScaleComponentRequest.model_validate(msg["req"]))
            elif msg["op"] == "update":
                await self.components.update(UpdateComponentRequest.model_validate(msg["req"]))
            elif msg["op"] == "provider_start":
                await self._start_provider(msg["req"])
            elif msg["op"] == "provider_stop":
                await self._stop_provider(str(msg["req"]["provider_id"]))
        except Exception:
            self._log.exception("bad command from the host")
        self.report_status()
        _say({"done": msg.get("seq", 0)})

    async def _start_provider(self, data: dict[str, Any]) -> None:
        """This worker's copy of the host's in-process http-server (host/workers.py)."""
        provider_id = str(data["provider_id"])
        await self._stop_provider(provider_id)  # a restart of the host's own copy
        provider = HttpServerProvider(parse_host_data(json.dumps(data)))
        provider.local = http_serve.local_server(self.components.pool_of)
        provider.reuse_port = True
        runner = Runner(provider)
        self._providers[provider_id] = (runner, asyncio.create_task(runner.run()))
        self._log.info("serving HTTP beside the host", provider_id=provider_id)

    async def _stop_provider(self, provider_id: str) -> None:
        running = self._providers.pop(provider_id, None)
        if running is None:
            return
        runner, task = running
        runner.stop(0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, STOP_PROVIDER_S)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            self.report_status()


async def _main() -> int:
    reader = asyncio.StreamReader(limit=2**20)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    data = json.loads(base64.b64decode(await reader.readline()))
    logs.configure(data["log"]["format"], data["log"]["level"])
    if data.get("cpu") is not None:  # --pin-cpus
        pin_this_process(int(data["cpu"]))
    worker = WorkerHost(config_of(data), load_identity(data.pop("seed")), int(data["worker"]))
    if data.get("provider_socket_dir"):  # the host's provider processes, reached directly
        worker.socket_dir = Path(data["provider_socket_dir"])
    try:
        await worker.start()
    except Exception as exc:
        _say({"ready": False, "error": str(exc) or type(exc).__name__})
        return 1
    _say({"ready": True})
    try:
        await worker.serve(reader)
    finally:
        await worker.stop("stdin closed (host stopping or gone)")
    return 0


if __name__ == "__main__":
    sys.exit(loops.run(_main()))
