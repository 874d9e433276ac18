"""Run a provider: host data in, NATS subscriptions, graceful stop, exit code out.

`run(ProviderClass)` is a provider's whole `__main__`: it reads the host data line from
stdin, configures structlog (stderr), connects to the lattice NATS (with the host's
credentials if any) and serves

    {lattice}.{provider_id}.rpc.>                        queue rpc.{lattice}.{provider_id}
    wasmbus.rpc.{lattice}.{provider_id}.linkdefs.*       put / del, applied in order
    wasmbus.rpc.{lattice}.{provider_id}.health
    wasmbus.rpc.{lattice}.{provider_id}.config.update
    wasmbus.rpc.{lattice}.{provider_id}.default.shutdown

and, when the host data names a `local_socket`, the same calls from its own host on that
Unix socket (providers.sdk.local_server). Control requests are answered with the control
envelope (lattice.protocol.envelope).
Each call runs in its own task (nats-py runs one callback at a time per subscription).
SIGTERM, SIGINT and `default.shutdown` stop it gracefully: answer, stop taking calls,
let in-flight calls finish, `on_shutdown`, drain NATS, exit 0, all within one budget
(`STOP_BUDGET`, shorter while NATS is down: nothing to drain), in any state, connecting
and reconnecting included. A second SIGTERM/SIGINT exits at once. As its own process
(`run`) it also stops when its host dies (`providers.sdk.lifetime`: stdin EOF, the
parent-death signal) and cannot outlive a stop request by more than `HARD_EXIT` seconds.
Losing NATS for good exits 1; unreadable host data exits 2. Nothing here knows what a
provider serves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import nats
import nkeys
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lattice import logs, natsauth, subscriptions, tracing
from lattice.protocol import subjects
from lattice.protocol.envelope import CtlReply, fail, ok
from lattice.protocol.invocation import ERROR_HEADER, LINK_NAME_HEADER, SOURCE_HEADER
from providers.sdk import lifetime
from providers.sdk.dispatch import invoke
from providers.sdk.hostdata import (
    HostData,
    HostDataError,
    Link,
    LinkKey,
    NatsCredentials,
    describe_errors,
    read_host_data,
)
from providers.sdk.local_server import LocalServer
from providers.sdk.provider import LinkError, Provider

CONNECT_TIMEOUT = 10.0
STOP_BUDGET = 3.5
"""Seconds a graceful stop may take in all (drain, in-flight calls, on_shutdown, close)."""
STOP_BUDGET_DISCONNECTED = 1.5
"""The same while NATS is down: no drain to wait for, replies could not leave anyway."""
HARD_EXIT = 4.5
"""Seconds after the first stop request at which a provider process exits regardless."""

T = TypeVar("T")


class _LinkDel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    source_id: str = Field(min_length=1)
    target: str = ""
    name: str = "default"
    wit_namespace: str
    wit_package: str


class _ConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    config: dict[str, str]


def _json(data: bytes, what: str) -> dict[str, Any]:
    if not data.strip():
        return {}
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{what} body must be a JSON object, got {type(raw).__name__}")
    return raw


def _model(model: type[BaseModel], data: bytes, what: str) -> Any:
    raw = _json(data, what)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{what}: {describe_errors(exc)}") from None


def _auth(creds: NatsCredentials | None) -> dict[str, Any]:
    """nats-py connect options for the host's credentials (read only when signing)."""
    if creds is None:
        return {}
    if creds.jwt is None:
        return {"nkeys_seed_str": creds.seed.get_secret_value()}
    jwt, seed = creds.jwt, creds.seed

    def user_jwt() -> bytearray:
        return bytearray(jwt.get_secret_value().encode())

    def sign(nonce: str) -> bytes:
        kp = nkeys.from_seed(bytearray(seed.get_secret_value().encode()))
        try:
            return base64.b64encode(kp.sign(nonce.encode()))
        finally:
            kp.wipe()

    return {"user_jwt_cb": user_jwt, "signature_cb": sign}


def _tls(paths: dict[str, str] | None) -> dict[str, Any]:
    """nats-py's `tls` option from the host's TLS settings (paths on this machine)."""
    return {"tls": natsauth.tls_context(**paths)} if paths else {}


def _shown(url: str) -> str:
    """A NATS URL without user, password or token, for logs."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    with contextlib.suppress(ValueError):
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 4222}"
    return f"{parts.scheme}://{parts.hostname}"


class Runner:
    """Connects one provider instance to the lattice and serves it until stopped."""

    def __init__(self, provider: Provider, *, own_process: bool = False) -> None:
        self.provider = provider
        self.log = provider.log
        self.exit_code = 0
        self.own_process = own_process
        """Running as the provider's process: watch the host, enforce HARD_EXIT."""
        self._stop = asyncio.Event()
        self._signals = 0
        self._calls: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._nc: NATS | None = None
        self._local: LocalServer | None = None
        hd = provider.host_data  # lattice and provider_id are checked subject tokens
        self._ctl = f"wasmbus.rpc.{hd.lattice}.{hd.provider_id}"
        self._rpc_prefix = f"{hd.lattice}.{hd.provider_id}.rpc."
        self.tracing = tracing.start(  # the host's --otlp-endpoint; None: off
            hd.otlp_endpoint,
            service="lattice-provider",
            instance_id=hd.provider_id,
            attributes={"lattice.name": hd.lattice, "lattice.host_id": hd.host_id},
        )

    def stop(self, exit_code: int = 0) -> None:
        """Ask the provider to stop (idempotent); the first exit code wins."""
        if not self._stop.is_set():
            self.exit_code = exit_code
            self._stop.set()
            if self.own_process:
                _arm_hard_exit(HARD_EXIT, exit_code)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # Signals belong to the process: a provider run inside a host is stopped by it.
        signals = (signal.SIGTERM, signal.SIGINT) if self.own_process else ()
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        watch = lifetime.HostWatch(self._on_host_gone, self.provider.host_data.host_pid)
        if self.own_process:
            watch.start()
        try:
            connected = await self._unless_stopped(self._connect())
            if connected is None:  # stopped while still connecting
                await self._close_nats(0.5)
                self.log.info("stopped before connecting", exit_code=self.exit_code)
                return self.exit_code
            if not connected:
                return 1
            await self._unless_stopped(self._start())
            await self._stop.wait()
            await self._shutdown()
        finally:
            watch.close()
            for sig in signals:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        return self.exit_code

    async def _unless_stopped(self, aw: Awaitable[T]) -> T | None:
        """`aw`'s result, or None (it is cancelled) if a stop request comes first, so
        a provider that is still connecting or starting stops as promptly as one that
        serves."""
        task = asyncio.ensure_future(aw)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return None

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:  # asked twice: the caller does not want to wait
            lifetime.silence_if_orphaned()
            with contextlib.suppress(Exception):
                self.log.warning("second signal, exiting now", signal=sig.name)
            os._exit(128 + int(sig))
        self.stop(0)  # before logging: a log line to a dead host's pipe must not stop us
        lifetime.silence_if_orphaned()
        self.log.info("signal received, stopping", signal=sig.name)

    def _on_host_gone(self, reason: str) -> None:
        self.stop(0)
        lifetime.silence_if_orphaned()
        self.log.warning("host gone, stopping", reason=reason)

    async def _connect(self) -> bool:
        hd = self.provider.host_data
        reported: set[str] = set()

        async def on_error(exc: Exception) -> None:
            text = f"{type(exc).__name__}: {exc}"
            if text not in reported:  # nats-py reports every retry; say it once
                reported.add(text)
                self.log.warning("nats error", error=text)

        async def on_disconnect() -> None:
            if not self._stop.is_set():
                self.log.warning("disconnected from NATS, reconnecting")

        async def on_reconnect() -> None:
            reported.clear()
            self.log.info("reconnected to NATS")

        async def on_closed() -> None:
            if not self._stop.is_set():
                self.log.error("NATS connection closed for good, exiting")
                self.stop(1)

        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    natsauth.server_list(hd.nats_url),
                    name=f"provider {hd.provider_id}",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                    closed_cb=on_closed,
                    **_auth(hd.nats_credentials),
                    **_tls(hd.nats_tls),
                    **({"inbox_prefix": hd.nats_inbox_prefix} if hd.nats_inbox_prefix else {}),
                ),
                CONNECT_TIMEOUT,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            self.log.error(
                "cannot connect to NATS",
                nats_url=_shown(hd.nats_url),
                error=str(exc) or "timed out",
            )
            return False
        self.provider._nc = self._nc
        self.provider.resolver = self._resolve_link
        return True

    async def _resolve_link(self, key: LinkKey) -> Link | None:
        """Ask this provider's host for a link it was called over but does not hold
        (docs/protocol.md, link hand-off); None when the lattice has no such link for us."""
        hd = self.provider.host_data
        body = {
            "provider_id": hd.provider_id,
            "source_id": key.source_id,
            "name": key.name,
            "wit_namespace": key.wit_namespace,
            "wit_package": key.wit_package,
        }
        subject = subjects.ctl(hd.lattice, "link", "resolve", hd.host_id)
        msg = await self.nats.request(subject, json.dumps(body).encode(), timeout=2.0)
        reply = CtlReply.from_bytes(msg.data)
        if not reply.success:
            raise LinkError(reply.message)
        found = (reply.response or {}).get("link")
        return None if found is None else Link.model_validate(found)

    async def _start(self) -> None:
        p, nc = self.provider, self.nats
        await p.on_start()
        for link in p.host_data.link_definitions:
            with contextlib.suppress(LinkError):  # logged by add_link; calls say why
                await p.add_link(link)
        self._subs = [
            await nc.subscribe(
                f"{self._rpc_prefix}>",
                queue=f"rpc.{p.lattice}.{p.provider_id}",
                cb=self._on_call,
            ),
            await nc.subscribe(f"{self._ctl}.linkdefs.*", cb=self._on_linkdef),
            await nc.subscribe(f"{self._ctl}.health", cb=self._on_health),
            await nc.subscribe(f"{self._ctl}.config.update", cb=self._on_config),
            await nc.subscribe(f"{self._ctl}.default.shutdown", cb=self._on_shutdown),
        ]
        await nc.flush()
        if p.host_data.local_socket:
            await self._serve_locally(Path(p.host_data.local_socket))
        self.log.info(
            "provider started",
            host_id=p.host_id,
            links=len(p.links),
            operations=sorted(p.operations),
        )

    async def _serve_locally(self, path: Path) -> None:
        """The host's own calls on its socket too; NATS alone when it cannot be made."""
        server = LocalServer(path, self._serve, self._track, self.log, self.provider.host_id)
        try:
            await server.start()
        except OSError as exc:
            self.log.warning("local socket not served; NATS only", error=str(exc))
            return
        self._local = server

    async def _shutdown(self) -> None:
        """Stop within one budget whatever NATS is doing: stop taking calls, let the
        in-flight ones finish while time is left (then cancel them: their callers time
        out, which says "outcome unknown"), `on_shutdown`, drain, close. A connection
        that is down is not drained: nothing could leave through it."""
        p, nc = self.provider, self._nc
        loop = asyncio.get_running_loop()
        connected = nc is not None and nc.is_connected
        budget = STOP_BUDGET if connected else STOP_BUDGET_DISCONNECTED
        deadline = loop.time() + min(p.shutdown_timeout, budget)

        def left(reserve: float = 0.0, least: float = 0.0) -> float:
            return max(least, deadline - loop.time() - reserve)

        self.log.info("stopping", in_flight=len(self._calls), nats_connected=connected)
        # stop deliveries; calls already delivered still run
        await subscriptions.drain(
            self._subs, connected=connected, timeout=left(reserve=1.0, least=0.1)
        )
        if self._local is not None:
            self._local.stop_taking()
        p.stop_draining()
        if self._calls:
            _, pending = await asyncio.wait(set(self._calls), timeout=left(reserve=0.8))
            for task in pending:
                task.cancel()
            if pending:
                self.log.warning("calls cancelled at stop", calls=len(pending))
                await asyncio.wait(pending, timeout=0.2)
        try:
            await asyncio.wait_for(p.on_shutdown(), left(reserve=0.3, least=0.2))
        except Exception as exc:
            self.log.warning("on_shutdown failed", error=f"{type(exc).__name__}: {exc}")
        if self._local is not None:
            await self._local.close()
        if nc is not None and nc.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), left(least=0.2))
        await self._close_nats(0.5)
        if self.tracing is not None:
            await self.tracing.close(0.5)
        self.log.info("stopped", exit_code=self.exit_code)

    async def _close_nats(self, timeout: float) -> None:
        nc = self._nc
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout)

    @property
    def nats(self) -> NATS:
        assert self._nc is not None
        return self._nc

    # ------------------------------------------------------------------ calls

    async def _on_call(self, msg: Msg) -> None:
        self._track(asyncio.create_task(self._serve_call(msg)))

    def _track(self, task: asyncio.Task[None]) -> None:
        """A call in flight, which a graceful stop lets finish."""
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _serve(
        self, op: str, headers: dict[str, str] | None, data: bytes
    ) -> tuple[dict[str, str] | None, bytes]:
        """One call, however it came (NATS or the local socket)."""
        if self.tracing is None:
            return await invoke(self.provider, op, headers, data)
        return await self._traced(op, headers or {}, data)

    async def _serve_call(self, msg: Msg) -> None:
        op = subjects.rpc_operation(msg.subject, self.provider.lattice, self.provider.provider_id)
        headers, body = await self._serve(op, msg.headers, msg.data)
        if msg.reply:
            try:
                await self.nats.publish(msg.reply, body, headers=headers)
            except Exception as exc:
                self.log.warning("could not send reply", operation=op, error=str(exc))

    async def _traced(
        self, op: str, got: dict[str, str], data: bytes
    ) -> tuple[dict[str, str] | None, bytes]:
        """`invoke` in a server span whose parent is the caller's (the host's link call)."""
        assert self.tracing is not None
        span = self.tracing.server(
            f"serve {op}",
            got,
            {
                "lattice.provider_id": self.provider.provider_id,
                "lattice.source_id": got.get(SOURCE_HEADER, ""),
                "lattice.link_name": got.get(LINK_NAME_HEADER) or "default",
                "lattice.function": op,
            },
        )
        try:
            headers, body = await invoke(self.provider, op, got, data)
        except BaseException:
            self.tracing.finish(span, "cancelled")
            raise
        self.tracing.finish(span, (headers or {}).get(ERROR_HEADER))
        return headers, body

    # ------------------------------------------------------------------ control

    async def _reply(self, msg: Msg, reply: CtlReply) -> None:
        if msg.reply:
            try:
                await self.nats.publish(msg.reply, reply.to_bytes())
            except Exception as exc:
                self.log.warning("could not send control reply", error=str(exc))

    async def _on_linkdef(self, msg: Msg) -> None:
        verb = msg.subject.rsplit(".", 1)[-1]
        try:
            if verb == "put":
                link = _model(Link, msg.data, "linkdefs.put")
                await self.provider.add_link(link)
                reply = ok(message=f"link {link.source_id}/{link.name} put")
            elif verb == "del":
                req = _model(_LinkDel, msg.data, "linkdefs.del")
                key = LinkKey(req.source_id, req.name, req.wit_namespace, req.wit_package)
                gone = await self.provider.remove_link(key)
                reply = ok(
                    message=f"link {req.source_id}/{req.name} "
                    + ("deleted" if gone else "was not linked")
                )
            else:
                reply = fail(f"unknown link operation {verb!r}: use linkdefs.put or linkdefs.del")
        except (ValueError, LinkError) as exc:
            reply = fail(str(exc))
        await self._reply(msg, reply)

    async def _on_health(self, msg: Msg) -> None:
        p = self.provider
        try:
            healthy, message = await asyncio.wait_for(p.health(), p.health_timeout)
        except TimeoutError:
            healthy, message = False, f"health check timed out after {p.health_timeout:g}s"
        except Exception as exc:
            healthy, message = False, f"health check failed: {type(exc).__name__}: {exc}"
        await self._reply(msg, ok({"healthy": bool(healthy), "message": str(message)}))

    async def _on_config(self, msg: Msg) -> None:
        p = self.provider
        try:
            update = _model(_ConfigUpdate, msg.data, "config.update")
            p.config = dict(update.config)
            await p.on_config_update(p.config)
            reply = ok(message="config updated")
        except ValueError as exc:
            reply = fail(str(exc))
        except Exception as exc:
            self.log.warning("on_config_update failed", error=str(exc))
            reply = fail(f"config update failed: {type(exc).__name__}: {exc}")
        await self._reply(msg, reply)

    async def _on_shutdown(self, msg: Msg) -> None:
        try:
            body = _json(msg.data, "default.shutdown")
        except ValueError as exc:
            await self._reply(msg, fail(str(exc)))
            return
        host_id = body.get("host_id")
        if host_id and host_id != self.provider.host_id:
            # Another host's instance of this provider: it answers, not us.
            self.log.debug("shutdown for another host ignored", for_host=host_id)
            return
        await self._reply(msg, ok(message=f"provider {self.provider.provider_id} stopping"))
        with contextlib.suppress(Exception):
            await self.nats.flush()
        self.log.info("shutdown requested", by_host=host_id or "")
        self.stop(0)


async def run_async(
    provider_cls: type[Provider], host_data: HostData, *, own_process: bool = False
) -> int:
    """Run `provider_cls` until it is stopped; returns the process exit code.
    `own_process`: this is the provider's process (see `Runner.own_process`)."""
    provider = provider_cls(host_data)
    return await Runner(provider, own_process=own_process).run()


def _arm_hard_exit(seconds: float, code: int) -> None:
    """Exit the process `seconds` from now if it is still here: a stop must end even if
    a library swallows a cancellation or a close never returns."""

    def exit_now() -> None:
        lifetime.silence_if_orphaned()
        with contextlib.suppress(Exception):
            print(f"provider: stop took over {seconds:g}s, exiting", file=sys.stderr)
        os._exit(code if code else 1)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()


def run(provider_cls: type[Provider], stream: Any = None) -> NoReturn:
    """A provider's `__main__`: read host data from stdin (or `stream`), serve, exit."""
    # First thing: from here on the kernel stops us when the host that forked us dies
    # (HostWatch then checks it had not died already).
    lifetime.set_parent_death_signal(signal.SIGTERM)
    try:
        host_data = read_host_data(stream)
        logs.configure(host_data.log_format, host_data.log_level)
    except (HostDataError, ValueError) as exc:
        print(f"{provider_cls.__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
    log = structlog.get_logger("lattice.provider").bind(
        provider_id=host_data.provider_id, lattice=host_data.lattice
    )
    try:
        code = asyncio.run(run_async(provider_cls, host_data, own_process=True))
    except KeyboardInterrupt:
        code = 0
    except Exception:
        log.exception("provider crashed")
        code = 1
    sys.exit(code)
