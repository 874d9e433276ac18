"""The admin endpoints of a host or controller: `/livez`, `/readyz` and `/metrics`.

Served with aiohttp in the process's own event loop, on `--admin-addr HOST:PORT` (off by
default). `/livez` answering at all shows the process and its loop are alive. `/readyz`
runs the owner's checks (for a host: NATS connected, JetStream answering, the links and
config watchers running) and answers 200, or 503 with a JSON body naming each check
that failed. `/metrics` is the owner's Prometheus registry in the text format.

Nothing here reads secrets: the bodies hold check names, short reasons and counters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger("lattice.admin")

# name → None when fine, else a short reason
Check = Callable[[], Awaitable[str | None]]
CHECK_TIMEOUT = 2.0


def parse_addr(addr: str) -> tuple[str, int]:
    """`HOST:PORT` (or `:PORT`, meaning every interface) → (host, port); ValueError
    names the field."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--admin-addr {addr!r} must look like HOST:PORT, e.g. 0.0.0.0:9090")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class AdminServer:
    def __init__(
        self, addr: str, registry: CollectorRegistry, checks: dict[str, Check], what: str
    ) -> None:
        self.host, self.port = parse_addr(addr)
        self.registry = registry
        self.checks = checks
        self.what = what
        self._runner: web.AppRunner | None = None
        self._log = log.bind(component=what)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(f"cannot serve --admin-addr {self.host}:{self.port}: {exc}") from None
        if self.port == 0:  # a free port was asked for: say which
            server = site._server
            if server is not None and server.sockets:  # type: ignore[union-attr]
                self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._log.info("admin endpoints serving", url=self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _livez(self, _req: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "time": time.time()})

    async def _readyz(self, _req: web.Request) -> web.Response:
        failing = await self.failing()
        if failing:
            return web.json_response({"status": "not ready", "failing": failing}, status=503)
        return web.json_response({"status": "ready", "checks": sorted(self.checks)})

    async def failing(self) -> dict[str, str]:
        names = list(self.checks)
        results = await asyncio.gather(
            *(self._run(self.checks[n]) for n in names), return_exceptions=False
        )
        return {n: r for n, r in zip(names, results, strict=True) if r is not None}

    async def _run(self, check: Check) -> str | None:
        try:
            return await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT:g}s"
        except Exception as exc:
            return type(exc).__name__

    async def _metrics(self, _req: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- checks shared by hosts and controllers -------------------------------------


def nats_checks(nc: object) -> dict[str, Check]:
    """`nats`: the connection is up; `jetstream`: the server answers a JetStream request."""

    async def nats_connected() -> str | None:
        return None if getattr(nc, "is_connected", False) else "not connected to NATS"

    async def jetstream() -> str | None:
        if not getattr(nc, "is_connected", False):
            return "not connected to NATS"
        try:
            await nc.jetstream().account_info()  # type: ignore[attr-defined]
        except Exception as exc:
            return f"JetStream did not answer: {type(exc).__name__}"
        return None

    return {"nats": nats_connected, "jetstream": jetstream}


def host_checks(host: object) -> dict[str, Check]:
    """A host's readiness: NATS and JetStream, its links/config watchers, not stopping."""
    checks = nats_checks(host.nc)  # type: ignore[attr-defined]

    async def state_watched() -> str | None:
        state = getattr(host, "state", None)
        tasks = getattr(state, "_tasks", None)
        if not tasks:
            return "the links and config buckets are not watched yet"
        done = [t for t in tasks if t.done()]
        return f"{len(done)} of {len(tasks)} state watchers stopped" if done else None

    async def serving() -> str | None:
        return "the host is stopping" if getattr(host, "_stopping", False) else None

    return {**checks, "state": state_watched, "serving": serving}


def controller_checks(controller: object) -> dict[str, Check]:
    """A controller's readiness: NATS and JetStream, and its loops running."""
    checks = nats_checks(controller.nc)  # type: ignore[attr-defined]

    async def loops() -> str | None:
        tasks = getattr(controller, "_tasks", [])
        done = [t for t in tasks if t.done()]
        if not tasks:
            return "the controller loops have not started"
        return f"{len(done)} of {len(tasks)} controller loops stopped" if done else None

    return {**checks, "loops": loops}
