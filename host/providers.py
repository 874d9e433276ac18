"""Capability providers started by this host: processes, health, links, restarts.

A provider is its own process. The host gives it one base64 JSON line on stdin (the
lattice, NATS URL, its id, its links with their config resolved, its config), waits for
its first healthy answer before announcing `provider_started`, then health-checks it on
an interval. A provider that dies is restarted with exponential backoff and gets every
current link again in its fresh start-up data. Link and config changes that concern
it are pushed as `linkdefs.put` / `linkdefs.del` while it runs, so a link's config
change reaches the provider (wasmCloud v1 only sent links once). On stop the host asks
for a graceful `default.shutdown` first, then terminates, then kills.

A few built-in providers can run *in* the host process instead (`in_process`, e.g. the
http-server, so a request reaches a warm instance with no NATS hop). They get the same
start-up data, links, health checks, restarts and stop; only the child is a task on the
host's event loop running the provider SDK's `Runner`, not a process.

Secrets (config keys marked secret) travel only inside start-up data and link messages
to the provider; they never appear in events, inventory or logs.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from host.components import PublishEvent
from host.workers import release_child
from lattice import natsjwt
from lattice.natsauth import ANONYMOUS, NatsAuth
from lattice.protocol import handoff
from lattice.protocol.envelope import CtlReply
from lattice.protocol.links import Link, LinkResolveRequest, NamedConfig, merge_config
from lattice.protocol.local_rpc import socket_path
from lattice.protocol.messages import StartProviderRequest
from lattice.state import LatticeState
from providers.sdk import Provider, Runner, parse_host_data
from providers.sdk.hostdata import HostDataError

log = structlog.get_logger("lattice.providers")

BUILTIN = {
    "keyvalue-redis": "providers.keyvalue_redis",
    "keyvalue-vault": "providers.keyvalue_vault",
    "keyvalue-nats": "providers.keyvalue_nats",
    "messaging-nats": "providers.messaging_nats",
    "http-server": "providers.http_server",
    "http-client": "providers.http_client",
    "blobstore-fs": "providers.blobstore_fs",
    "blobstore-nats": "providers.blobstore_nats",
    "blobstore-s3": "providers.blobstore_s3",
    "sqldb-postgres": "providers.sqldb_postgres",
}
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
PREPARE_TIMEOUT = 2.0  # link.put waits this long for the new target to hold the link
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a provider up this long has its restart backoff reset


def _close_stdin(proc: asyncio.subprocess.Process) -> None:
    """Close our end of a provider's stdin: it reads EOF, which stops an SDK provider."""
    if proc.stdin is not None and not proc.stdin.is_closing():
        with contextlib.suppress(Exception):
            proc.stdin.close()


class ProviderError(ValueError):
    """A provider reference or request that cannot be honoured."""


def provider_command(ref: str) -> list[str]:
    """The command that runs the provider at `ref`."""
    parsed = urlparse(ref)
    if parsed.scheme == "builtin":
        name = parsed.netloc or parsed.path.lstrip("/")
        module = BUILTIN.get(name)
        if module is None:
            known = ", ".join(f"builtin://{n}" for n in sorted(BUILTIN))
            raise ProviderError(f"{ref}: no built-in provider {name!r}; built-in: {known}")
        return [sys.executable, "-m", module]
    if parsed.scheme in ("file", ""):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else ref)
        if not path.is_file():
            raise ProviderError(f"{ref}: no such file {path}")
        if not os.access(path, os.X_OK):
            raise ProviderError(f"{ref}: {path} is not executable (chmod +x it)")
        return [str(path)]
    raise ProviderError(
        f"{ref}: unsupported provider reference (use builtin://NAME or file:///path/to/exe)"
    )


def link_message(
    link: Link,
    state: LatticeState,
    provider_id: str,
    configs: Mapping[str, NamedConfig] | None = None,
) -> dict[str, Any]:
    """A link as `provider_id` receives it: config resolved (from `configs`, else the
    watched copy), secrets apart, and the target's secrets only when it is the target."""
    known = state.configs if configs is None else configs
    source_public, _ = merge_config(link.source_config, known)
    target_public, target_secrets = merge_config(link.target_config, known)
    return {
        **link_identity_message(link),
        "interfaces": list(link.interfaces),
        "source_config": source_public,
        "target_config": target_public,
        "target_secrets": target_secrets if provider_id == link.target else {},
    }


def link_identity_message(link: Link) -> dict[str, Any]:
    """What `linkdefs.del` carries: the link's identity, no config."""
    return {
        "source_id": link.source_id,
        "target": link.target,
        "name": link.name,
        "wit_namespace": link.wit_namespace,
        "wit_package": link.wit_package,
    }


InProcessFactory = Callable[[Any], Provider]
"""Host data → a provider object to run in the host's own process."""


@dataclass(eq=False)
class InProcess:
    """A provider running as a task in this process: its exit code is the runner's."""

    runner: Runner
    task: asyncio.Task[int]

    @property
    def returncode(self) -> int | None:
        if not self.task.done():
            return None
        if self.task.cancelled() or self.task.exception() is not None:
            return 1
        return self.task.result()

    async def wait(self) -> int:
        with contextlib.suppress(BaseException):
            await asyncio.shield(self.task)
        code = self.returncode
        return 1 if code is None else code

    async def stop(self, timeout: float) -> None:
        """Graceful stop within `timeout`, then cancelled."""
        self.runner.stop(0)
        try:
            await asyncio.wait_for(self.wait(), timeout)
        except TimeoutError:
            self.task.cancel()
            await self.wait()


@dataclass
class RunningProvider:
    id: str
    image_ref: str
    command: list[str]
    config: list[str]
    annotations: dict[str, str]
    process: asyncio.subprocess.Process | InProcess | None = None
    factory: InProcessFactory | None = None
    started_at: float = field(default_factory=time.time)
    restarts: int = 0
    healthy: bool | None = None
    health_message: str = ""
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=50))
    stopping: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image_ref": self.image_ref,
            "name": self.annotations.get("name"),
            "annotations": self.annotations,
            "config": self.config,
            "healthy": self.healthy,
            "restarts": self.restarts,
            "pid": self.pid,
            "in_process": self.factory is not None,
        }

    @property
    def pid(self) -> int | None:
        if isinstance(self.process, InProcess):
            return os.getpid()
        return self.process.pid if self.process else None


class ProviderMirror(Protocol):
    """Who else runs this host's in-process providers: its worker processes
    (host/workers.py), each with a copy of its own on the same ports."""

    async def start_provider(self, host_data: dict[str, Any]) -> None: ...

    async def stop_provider(self, provider_id: str) -> None: ...


class ProviderManager:
    otlp_endpoint: str | None = None  # the host's --otlp-endpoint, handed to each provider
    socket_dir: Path | None = None  # each provider process serves this host on a socket there

    def __init__(
        self,
        *,
        nc: NATS,
        lattice: str,
        host_id: str,
        nats_url: str,
        state: LatticeState,
        publish_event: PublishEvent,
        health_interval: float = 30.0,
        log_format: str = "json",
        log_level: str = "info",
        in_process: Mapping[str, InProcessFactory] | None = None,
        nats_auth: NatsAuth = ANONYMOUS,
        signing: tuple[natsjwt.Key, str] | None = None,
    ) -> None:
        self.nats_auth = nats_auth
        self.signing = signing
        """(the account's signing key, the account): mint each provider an identity."""
        self.nc = nc
        self.in_process = dict(in_process or {})
        self.lattice = lattice
        self.host_id = host_id
        self.nats_url = nats_url
        self.state = state
        self.publish_event = publish_event
        self.health_interval = health_interval
        self.log_format = log_format
        self.log_level = log_level
        self.running: dict[str, RunningProvider] = {}
        self.mirror: ProviderMirror | None = None  # --workers N: they run in-process ones too
        self._locks: dict[str, asyncio.Lock] = {}
        self._log = log.bind(host_id=host_id, lattice=lattice)
        state.on_link_change(self._on_link_change)
        state.on_config_change(self._on_config_change)

    def _lock(self, provider_id: str) -> asyncio.Lock:
        return self._locks.setdefault(provider_id, asyncio.Lock())

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.running.values()]

    def subject(self, provider_id: str, op: str) -> str:
        return f"wasmbus.rpc.{self.lattice}.{provider_id}.{op}"

    # -- start ----------------------------------------------------------------

    async def start(self, req: StartProviderRequest) -> None:
        async with self._lock(req.provider_id):
            if req.provider_id in self.running:
                rp = self.running[req.provider_id]
                if rp.image_ref == req.provider_ref:
                    await self._started_event(rp)  # idempotent: say it is running
                    return
                await self._start_failed(
                    req, f"provider {req.provider_id} already runs {rp.image_ref} on this host"
                )
                return
            try:
                command = provider_command(req.provider_ref)
            except ProviderError as exc:
                await self._start_failed(req, str(exc))
                return
            rp = RunningProvider(
                id=req.provider_id,
                image_ref=req.provider_ref,
                command=command,
                config=list(req.config),
                annotations=dict(req.annotations),
                factory=self.in_process.get(req.provider_ref),
            )
            error = await self._spawn(rp)
            if error is not None:
                await self._start_failed(req, error)
                return
            self.running[rp.id] = rp
            rp.tasks.append(asyncio.create_task(self._supervise(rp)))
            rp.tasks.append(asyncio.create_task(self._health_loop(rp)))
            await self._started_event(rp)

    def host_data(self, rp: RunningProvider) -> dict[str, Any]:
        public, secret = merge_config(rp.config, self.state.configs)
        return {
            "lattice": self.lattice,
            "nats_url": self.nats_url,
            **self._identity(rp),  # start-up data only: never logged, never shown
            "nats_tls": self.nats_auth.tls_paths(),
            "provider_id": rp.id,
            "host_id": self.host_id,
            "link_definitions": [
                link_message(lk, self.state, rp.id)
                for lk in self.state.links.values()
                if rp.id in (lk.target, lk.source_id)
            ],
            "config": {**public, **secret},
            "log_level": self.log_level,
            "log_format": self.log_format,
            "otlp_endpoint": self.otlp_endpoint,
        }

    def _identity(self, rp: RunningProvider) -> dict[str, Any]:
        """The provider's NATS login: with the account's signing key, a fresh user of its
        own, allowed only its own subjects (lattice/natsjwt.py); else the host's own."""
        if self.signing is None:
            return {"nats_credentials": self.nats_auth.credentials()}
        key, account = self.signing
        jwt, seed = natsjwt.mint_provider(
            key, account, self.lattice, rp.id, self.host_id, rp.image_ref
        )
        user = natsjwt.decode_claims(jwt)["sub"]
        self._log.info("provider identity minted", provider_id=rp.id, nats_user=user)
        return {
            "nats_credentials": {"jwt": jwt, "seed": seed},
            "nats_inbox_prefix": natsjwt.provider_inbox(self.lattice, rp.id),
        }

    async def _spawn(self, rp: RunningProvider) -> str | None:
        """Start the process and wait for its first healthy answer; an error or None.

        Its stdin stays open after the host data line, for as long as this host runs:
        when the host dies, however it dies, the kernel closes the pipe and the provider
        reads EOF and stops (providers.sdk.lifetime). It runs in a session of its own, so
        a Ctrl-C on the host's terminal does not reach it; the host stops it itself."""
        if isinstance(rp.process, asyncio.subprocess.Process):
            _close_stdin(rp.process)  # the previous process of a restarted provider
        data = {**self.host_data(rp), "host_pid": os.getpid()}
        if rp.factory is not None:
            return await self._run_in_process(rp, rp.factory, data)
        if self.socket_dir is not None:  # host/provider_sockets.py
            data["local_socket"] = str(socket_path(self.socket_dir, rp.id))
        line = base64.b64encode(json.dumps(data).encode()) + b"\n"
        try:
            proc = await asyncio.create_subprocess_exec(
                *rp.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot run {rp.image_ref}: {exc.strerror or exc}"
        release_child(proc.pid)  # a provider is not held to the host's --pin-cpus CPU
        rp.process = proc
        rp.started_at = time.time()
        assert proc.stdin is not None and proc.stdout is not None
        rp.tasks = [t for t in rp.tasks if not t.done()]
        rp.tasks.append(asyncio.create_task(self._pump(rp, proc.stdout)))
        try:
            proc.stdin.write(line)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it died at once; the loop below reports its last words
        return await self._await_ready(rp)

    async def _run_in_process(
        self, rp: RunningProvider, factory: InProcessFactory, data: dict[str, Any]
    ) -> str | None:
        """Start the provider as a task of this process (same data, same readiness)."""
        try:
            provider = factory(parse_host_data(json.dumps(data)))
        except (HostDataError, ValueError) as exc:
            return f"cannot start {rp.image_ref} in the host: {exc}"
        runner = Runner(provider)
        task = asyncio.create_task(runner.run())

        def ended(t: asyncio.Task[int]) -> None:
            if not t.cancelled() and t.exception() is not None:
                rp.output.append(f"crashed: {type(t.exception()).__name__}: {t.exception()}")
                self._log.error(
                    "in-process provider crashed", provider_id=rp.id, error=str(t.exception())
                )

        task.add_done_callback(ended)
        rp.process = InProcess(runner, task)
        rp.started_at = time.time()
        rp.tasks = [t for t in rp.tasks if not t.done()]
        error = await self._await_ready(rp)
        if error is None and self.mirror is not None:
            await self.mirror.start_provider(data)
        return error

    async def _await_ready(self, rp: RunningProvider) -> str | None:
        proc = rp.process
        assert proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline:
            if proc.returncode is not None:
                await asyncio.sleep(0.05)  # let the pump collect its last words
                tail = " | ".join(list(rp.output)[-5:]) or "no output"
                return f"provider exited with code {proc.returncode} during start-up: {tail}"
            healthy, message = await self._check_health(rp, timeout=0.5)
            if healthy is not None:
                rp.healthy, rp.health_message = healthy, message
                return None
            await asyncio.sleep(0.1)
        await self._terminate(proc)
        return f"provider did not answer its health check within {READY_TIMEOUT:g}s"

    async def _pump(self, rp: RunningProvider, stream: asyncio.StreamReader) -> None:
        """Relay the provider's output into the host log, keeping a tail for errors."""
        plog = self._log.bind(provider_id=rp.id)
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip()
            rp.output.append(text)
            plog.info("provider output", line=text)

    async def _started_event(self, rp: RunningProvider) -> None:
        await self.publish_event(
            "provider_started",
            {
                "host_id": self.host_id,
                "provider_id": rp.id,
                "image_ref": rp.image_ref,
                "annotations": rp.annotations,
            },
        )

    async def _start_failed(self, req: StartProviderRequest, error: str) -> None:
        self._log.warning("provider start failed", provider_id=req.provider_id, error=error)
        await self.publish_event(
            "provider_start_failed",
            {
                "host_id": self.host_id,
                "provider_id": req.provider_id,
                "provider_ref": req.provider_ref,
                "error": error,
            },
        )

    # -- supervision ----------------------------------------------------------

    async def _supervise(self, rp: RunningProvider) -> None:
        """Restart the provider whenever it dies, backing off while it keeps dying."""
        backoff = 1.0
        while not rp.stopping:
            assert rp.process is not None
            code = await rp.process.wait()
            if rp.stopping:
                return
            uptime = time.time() - rp.started_at
            if uptime > STABLE_AFTER:
                backoff = 1.0
            self._log.warning(
                "provider exited; restarting", provider_id=rp.id, code=code, in_seconds=backoff
            )
            rp.healthy, rp.health_message = False, f"exited with code {code}"
            await self.publish_event(
                "health_check_failed",
                {"host_id": self.host_id, "provider_id": rp.id, "message": rp.health_message},
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            if rp.stopping:
                return
            rp.restarts += 1
            error = await self._spawn(rp)
            if error is not None:
                self._log.warning("provider restart failed", provider_id=rp.id, error=error)
                continue
            await self._started_event(rp)

    async def _check_health(
        self, rp: RunningProvider, timeout: float = 2.0
    ) -> tuple[bool | None, str]:
        """(healthy, message); healthy None when the provider did not answer at all."""
        try:
            msg = await self.nc.request(self.subject(rp.id, "health"), b"{}", timeout=timeout)
        except (NoRespondersError, NatsError, TimeoutError):
            return None, "no answer to health check"
        try:
            reply = CtlReply.from_bytes(msg.data)
            body = reply.response or {}
            return bool(body.get("healthy", reply.success)), str(body.get("message", ""))
        except (ValueError, AttributeError):
            return False, "malformed health answer"

    async def _health_loop(self, rp: RunningProvider) -> None:
        while not rp.stopping:
            await asyncio.sleep(self.health_interval)
            if rp.process is None or rp.process.returncode is not None:
                continue
            healthy, message = await self._check_health(rp)
            ok = bool(healthy)
            data = {"host_id": self.host_id, "provider_id": rp.id, "message": message}
            if ok != rp.healthy:
                await self.publish_event(
                    "health_check_passed" if ok else "health_check_failed", data
                )
            rp.healthy, rp.health_message = ok, message
            await self.publish_event("health_check_status", {**data, "healthy": ok})

    # -- links and config -----------------------------------------------------

    async def _on_link_change(self, old: Link | None, new: Link | None) -> None:
        """Tell every provider here that is a party to the link (as target or as source);
        the order and the drain are docs/protocol.md's link hand-off."""
        for notice in handoff.notices(old, new, self.running):
            if notice.verb is handoff.Verb.PUT:
                body = link_message(notice.link, self.state, notice.provider_id)
                await self._send(notice.provider_id, "linkdefs.put", body)
            else:
                await self._send(
                    notice.provider_id, "linkdefs.del", link_identity_message(notice.link)
                )

    async def prepare_link(self, link: Link) -> None:
        """Hand-off step 2: the new target holds the link before it is stored, so no
        source can route to a target that does not know it yet. Every running instance
        of the target hears this; the first answer is enough (the others catch up on
        their own, or resolve the link when a call finds them first)."""
        body = json.dumps(link_message(link, self.state, link.target)).encode()
        try:
            msg = await self.nc.request(
                self.subject(link.target, "linkdefs.put"), body, timeout=PREPARE_TIMEOUT
            )
        except NoRespondersError:
            return  # no provider of that id runs (a component target, or not started yet)
        except (NatsError, TimeoutError) as exc:
            self._log.warning(
                "link prepare got no answer",
                target=link.target,
                source_id=link.source_id,
                error=str(exc) or type(exc).__name__,
            )
            return
        with contextlib.suppress(ValueError):
            reply = CtlReply.from_bytes(msg.data)
            if not reply.success:
                self._log.warning("provider refused link", target=link.target, error=reply.message)

    async def resolve_link(self, req: LinkResolveRequest) -> dict[str, Any] | None:
        """A provider here asks for a link it was called over but does not hold: read it
        from the bucket itself (the watched copy may lag), with its config likewise."""
        if req.provider_id not in self.running:
            raise ProviderError(f"provider {req.provider_id} does not run on this host")
        link = await self.state.fetch_link(req.identity)
        if link is None or req.provider_id not in (link.target, link.source_id):
            return None
        configs = dict(self.state.configs)
        configs.update(await self.state.fetch_configs([*link.source_config, *link.target_config]))
        return link_message(link, self.state, req.provider_id, configs)

    async def _on_config_change(self, name: str, _cfg: object) -> None:
        for link in list(self.state.links.values()):
            if name not in (*link.source_config, *link.target_config):
                continue
            for pid in {link.target, link.source_id} & set(self.running):
                await self._send(pid, "linkdefs.put", link_message(link, self.state, pid))
        for rp in self.running.values():
            if name in rp.config:
                public, secret = merge_config(rp.config, self.state.configs)
                await self._send(rp.id, "config.update", {"config": {**public, **secret}})

    async def _send(self, provider_id: str, op: str, body: dict[str, Any]) -> None:
        try:
            msg = await self.nc.request(
                self.subject(provider_id, op), json.dumps(body).encode(), timeout=5
            )
            reply = CtlReply.from_bytes(msg.data)
            if not reply.success:
                self._log.warning(
                    "provider refused", provider_id=provider_id, op=op, error=reply.message
                )
        except (NatsError, TimeoutError, ValueError) as exc:
            # a restarting provider gets the link in its start-up data instead
            self._log.warning(
                "could not reach provider",
                provider_id=provider_id,
                op=op,
                error=str(exc) or type(exc).__name__,
            )

    # -- stop -----------------------------------------------------------------

    async def stop(self, provider_id: str, reason: str = "stop requested") -> bool:
        async with self._lock(provider_id):
            rp = self.running.pop(provider_id, None)
            if rp is None:
                return False
            rp.stopping = True
            for t in rp.tasks:
                t.cancel()
            proc = rp.process
            if isinstance(proc, InProcess):
                if self.mirror is not None:
                    await self.mirror.stop_provider(provider_id)
                await proc.stop(STOP_TIMEOUT)
            elif proc is not None and proc.returncode is None:
                # Bounded at every step: ask over NATS (answered at once), close stdin
                # (EOF stops it too, should NATS not carry the request), wait for its
                # own bounded stop, then SIGTERM, then SIGKILL.
                with contextlib.suppress(NatsError, TimeoutError):
                    await self.nc.request(
                        self.subject(provider_id, "default.shutdown"),
                        json.dumps({"host_id": self.host_id}).encode(),
                        timeout=2,
                    )
                _close_stdin(proc)
                try:
                    await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    await self._terminate(proc)
            if isinstance(proc, asyncio.subprocess.Process):
                _close_stdin(proc)
            for t in rp.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self._log.info("provider stopped", provider_id=provider_id, reason=reason)
            await self.publish_event(
                "provider_stopped",
                {"host_id": self.host_id, "provider_id": provider_id, "reason": reason},
            )
            return True

    async def _terminate(self, proc: asyncio.subprocess.Process | InProcess) -> None:
        """SIGTERM, and SIGKILL if it is still there STOP_TIMEOUT later (bounded)."""
        if isinstance(proc, InProcess):
            await proc.stop(STOP_TIMEOUT)
            return
        if proc.returncode is not None:
            _close_stdin(proc)
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        _close_stdin(proc)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(pid, "host stopping") for pid in list(self.running)))
