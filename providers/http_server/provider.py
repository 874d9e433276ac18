"""The http-server provider: HTTP in, `wasi:http/incoming-handler` over the lattice out.

The provider is the *source* of its links: provider → component, `wasi:http`,
interface `incoming-handler`, with source config `address`, `path`, `host`
(`routes.py`). Each distinct address gets one aiohttp low-level server; several links
(components) share it and are told apart by Host header, then longest path prefix. The
server is started by the first link that needs the address (a port that cannot be bound
refuses the link) and closed when the last one goes.

Per request: pick the route (none → 404), open an exchange (`stream.py`): the head goes
as a NATS request to `{lattice}.{component_id}.http` (no responders → 503 at once),
the request body streams in 64 KiB chunks under the host's credit while the response
head and body chunks stream back; each response chunk is written to the client
(aiohttp applies TCP back-pressure) before its credit is returned, so a slow client
slows the component instead of filling memory. A host `err` after the head aborts the
connection (the client sees a truncated chunked body, never a clean end). A client
that goes away cancels the exchange; the host then frees the guest's streams.

In the host (`lattice up`, unless `--no-http-in-host`) the same provider runs inside the
host process with a `LocalServe` hook: a request for a component this host runs goes
straight to one of its warm instances, with no NATS hop; only a component that runs
elsewhere is reached over the exchange protocol. The provider knows nothing of the host:
the hook is all it sees.

Health: healthy when every address in use has a listening socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import nats.errors
from aiohttp import web
from multidict import CIMultiDict

from providers.http_server.routes import Route, parse_address, route_from_config, select
from providers.http_server.stream import (
    CHUNK,
    Exchanges,
    Refused,
    Stalled,
)
from providers.sdk import HostData, Link, LinkKey, Provider

NAMESPACE = "wasi"
PACKAGE = "http"
INTERFACE = "incoming-handler"
HEAD_TIMEOUT = 120.0
"""Seconds to wait for the response head (the component's own deadline is shorter)."""
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te"}
)


class LocalResponse(NamedTuple):
    """A response from a component on this host; `body` streams while the guest writes
    (iterate it to the end, or `aclose()` it to abandon the response). `whole` is the
    whole body when the guest had finished it already: sent in one write, with its
    Content-Length."""

    status: int
    headers: Sequence[tuple[str, bytes]]
    body: AsyncIterator[bytes]
    whole: bytes | None = None


class LocalRequest(NamedTuple):
    """A request as the in-host path hands it on (headers lower-cased, no Host)."""

    method: str
    path: str
    scheme: str | None
    authority: str | None
    headers: list[tuple[str, bytes]]
    body: AsyncIterable[bytes] | None


LocalServe = Callable[[str, LocalRequest], Awaitable[LocalResponse] | None]
"""`(component_id, request)` → the response, or None (not an awaitable) when the
component does not run on this host."""


def _request_headers(request: web.BaseRequest) -> list[tuple[str, bytes]]:
    """The request's headers for the component: names lower-cased, Host left out (it
    travels as the authority)."""
    return [
        (k.decode("latin-1").lower(), v) for k, v in request.raw_headers if k.lower() != b"host"
    ]


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


@dataclass(eq=False)
class Listener:
    """One listening address and the routes on it."""

    address: str
    runner: web.ServerRunner
    site: web.TCPSite
    routes: list[Route] = field(default_factory=list)


class HttpServerProvider(Provider):
    """Serves HTTP on the addresses its source links name and forwards to components."""

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self.listeners: dict[str, Listener] = {}
        self.routes: dict[LinkKey, Route] = {}
        self._exchanges: Exchanges | None = None
        self.local: LocalServe | None = None
        # a host with --workers N runs one copy per process on the same ports
        self.reuse_port = False
        """Set by a host that runs this provider in its own process."""

    async def on_start(self) -> None:
        self._exchanges = Exchanges(self.nats)
        await self._exchanges.start()

    @property
    def exchanges(self) -> Exchanges:
        assert self._exchanges is not None, "on_start has not run"
        return self._exchanges

    # ------------------------------------------------------------------ links

    async def on_source_link_put(self, link: Link) -> None:
        if (link.wit_namespace, link.wit_package) != (NAMESPACE, PACKAGE):
            raise ValueError(
                f"http-server serves {NAMESPACE}:{PACKAGE} links only, "
                f"not {link.wit_namespace}:{link.wit_package}"
            )
        if INTERFACE not in link.interfaces:
            raise ValueError(
                f"the link's interfaces ({', '.join(link.interfaces) or 'none'}) "
                f"do not include {INTERFACE!r}"
            )
        route = route_from_config(link.key, link.target, link.source_config)
        listener = self.listeners.get(route.address)
        if listener is None:
            listener = await self._listen(route.address)
        for other in listener.routes:
            if (other.host, other.prefix) == (route.host, route.prefix):
                if not listener.routes:
                    await self._close(listener)
                raise ValueError(
                    f"{route.address} host={route.host or '*'} path={route.prefix} "
                    f"is already routed to {other.component_id}"
                )
        listener.routes.append(route)
        self.routes[link.key] = route
        self.log.info(
            "route added",
            component_id=route.component_id,
            address=route.address,
            path=route.prefix,
            host=route.host,
        )

    async def on_source_link_del(self, link: Link) -> None:
        route = self.routes.pop(link.key, None)
        if route is None:
            return
        listener = self.listeners.get(route.address)
        if listener is None:
            return
        listener.routes = [r for r in listener.routes if r.key != link.key]
        self.log.info("route removed", component_id=route.component_id, address=route.address)
        if not listener.routes:
            await self._close(listener)

    async def _listen(self, address: str) -> Listener:
        host, port = parse_address(address)
        runner = web.ServerRunner(web.Server(self._handler(address)), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=self.reuse_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ValueError(f"cannot listen on {address}: {exc.strerror or exc}") from None
        listener = Listener(address, runner, site)
        self.listeners[address] = listener
        self.log.info("listening", address=address)
        return listener

    async def _close(self, listener: Listener) -> None:
        self.listeners.pop(listener.address, None)
        await listener.runner.cleanup()
        self.log.info("stopped listening", address=listener.address)

    async def health(self) -> tuple[bool, str]:
        if not self.listeners:
            return True, "no routes"
        down = [a for a, lst in self.listeners.items() if not lst.runner.addresses]
        if down:
            return False, f"not listening on {', '.join(down)}"
        return True, "listening on " + ", ".join(
            f"{a} ({len(lst.routes)} route(s))" for a, lst in sorted(self.listeners.items())
        )

    async def on_shutdown(self) -> None:
        for listener in list(self.listeners.values()):
            await self._close(listener)
        if self._exchanges is not None:
            await self._exchanges.stop()

    # ------------------------------------------------------------------ requests

    def _handler(self, address: str) -> Any:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            listener = self.listeners.get(address)
            route = select(listener.routes if listener else [], request.host, request.path)
            if route is None:
                return _text(404, f"no route for host {request.host!r} path {request.path!r}")
            if self.local is not None:
                served = self._local(request, route.component_id)
                if served is not None:
                    return await self._respond_local(request, route, served)
            return await self._forward(request, route)

        return handle

    def _local(
        self, request: web.BaseRequest, component_id: str
    ) -> Awaitable[LocalResponse] | None:
        assert self.local is not None
        body = request.content.iter_chunked(CHUNK) if request.body_exists else None
        return self.local(
            component_id,
            LocalRequest(
                request.method,
                request.raw_path,
                request.scheme,
                request.host,
                _request_headers(request),
                body,
            ),
        )

    async def _respond_local(
        self, request: web.BaseRequest, route: Route, served: Awaitable[LocalResponse]
    ) -> web.StreamResponse:
        """Stream a local component's response; each chunk is written (TCP back-pressure)
        before the next is taken from the guest, as over the exchange protocol."""
        response = await served
        headers = _headers({"headers": response.headers})
        if response.whole is not None:
            # the length is the body's own (a guest's Content-Length cannot disagree)
            headers.popall("content-length", None)
            return web.Response(status=response.status, headers=headers, body=response.whole)
        body = response.body
        try:
            first = await anext(body, None)
            if first is None:
                headers.popall("content-length", None)
                return web.Response(status=response.status, headers=headers)
            out = web.StreamResponse(status=response.status, headers=headers)
            await out.prepare(request)
            await out.write(first)
            async for chunk in body:
                await out.write(chunk)
            await out.write_eof()
            return out
        except ConnectionError as exc:
            self.log.info(
                "local exchange abandoned", component_id=route.component_id, reason=str(exc)
            )
        except Exception as exc:  # the guest failed mid-body: cut the body, never end it
            self.log.warning(
                "response body failed", component_id=route.component_id, error=str(exc)
            )
        finally:
            with contextlib.suppress(Exception):
                await body.aclose()  # type: ignore[attr-defined]
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # goes nowhere: the connection is closed

    async def _forward(self, request: web.BaseRequest, route: Route) -> web.StreamResponse:
        ex = self.exchanges.new()
        log = self.log.bind(exchange_id=ex.id, component_id=route.component_id)
        started = time.perf_counter()
        head = {
            "v": 1,
            "method": request.method,
            "path": request.raw_path,
            "scheme": request.scheme,
            "authority": request.host,
            "headers": [list(h) for h in _request_headers(request)],
            "body": request.body_exists,
        }
        pump: asyncio.Task[None] | None = None
        finished = False
        try:
            try:
                await ex.start(f"{self.lattice}.{route.component_id}.http", head)
            except nats.errors.NoRespondersError:
                finished = True
                return _text(503, f"component {route.component_id} is not running")
            except (TimeoutError, nats.errors.TimeoutError):
                finished = True
                return _text(504, f"component {route.component_id} did not accept the request")
            except Refused as exc:
                finished = True
                return _text(exc.status, str(exc))
            if request.body_exists:
                pump = asyncio.create_task(ex.send_body(request.content.iter_chunked(CHUNK)))
            try:
                first = await ex.next(HEAD_TIMEOUT)
            except Stalled:
                log.warning("no response head in time", timeout_s=HEAD_TIMEOUT)
                return _text(504, f"component {route.component_id} sent no response in time")
            if first.get("t") != "head":
                finished = True
                log.warning("no response head", message=first.get("message"))
                return _text(502, f"component {route.component_id} sent no response")
            status, headers = int(first["status"]), _headers(first)
            if first.get("end"):  # a small response, head and body in one message
                finished = True
                headers.popall("content-length", None)
                return web.Response(status=status, headers=headers, body=first.get("d", b""))
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            message = first
            while True:
                kind = message.get("t")
                if kind not in ("head", "data"):  # err: abort, so the client sees a cut body
                    finished = True
                    log.warning("response body failed", error=message.get("message"))
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if "d" in message:
                    await response.write(message["d"])
                    await ex.ack()
                message = await ex.next()
                if message.get("t") == "end":
                    finished = True
                    await response.write_eof()
                    return response
        except (ConnectionError, Stalled) as exc:
            log.info("exchange abandoned", reason=f"{type(exc).__name__}: {exc}")
            if request.transport is not None:
                request.transport.abort()
            return _text(504, "abandoned")  # goes nowhere: the connection is closed
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    await ex.cancel()
            self.exchanges.close(ex)
            if pump is not None and not pump.done():
                pump.cancel()
            if pump is not None:
                with contextlib.suppress(BaseException):
                    await pump
            log.debug("exchange done", ms=round((time.perf_counter() - started) * 1000, 2))


def _headers(head: dict[str, Any]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in head.get("headers") or []:
        key = str(name)
        if key.lower() in HOP_BY_HOP:
            continue
        out.add(key, bytes(value).decode("latin-1"))
    return out
