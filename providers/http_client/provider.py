"""The http-client provider: a component's `wasi:http/outgoing-handler`, sent with httpx.

A component → provider link (`wasi:http`, interface `outgoing-handler`) makes the
component's host send its outgoing requests here instead of sending them itself
(`host/wasi/outgoing_link.py`). Each link gets one `httpx.AsyncClient` (its connection
pool) built when the link is put, from the link's target config:

| setting | default | meaning |
|---|---|---|
| `allowed_hosts` | none (deny all) | comma-separated `host`, `host:port`, `*.suffix`, `*` |
| `connect_timeout_ms` | 10000 | TCP (and TLS) connect; 0: no limit |
| `first_byte_timeout_ms` | 60000 | request sent → response head |
| `between_bytes_timeout_ms` | 60000 | between two reads of the response body (and writes) |
| `max_connections` | 100 | the pool's size |

The allowlist is the host's own (`lattice.protocol.http_out.allowlist`), read from the
link so `lattice link put` with a new config changes it. A request's own
`request-options` apply where they are shorter than the link's timeouts.

Per exchange (the contract is `lattice.protocol.http_out`): the head arrives as a NATS
request on `{lattice}.{provider_id}.http.out`; the provider checks the link and the
allowlist, answers `{inbox, window}` (or `{code, message}`), and then streams: request
body chunks from the host are handed to httpx as an async iterator (acknowledged as
httpx takes them, so at most `WINDOW` chunks wait here), the response head and body go
back to the host, each chunk sent only under the host's credit, so a slow component
slows the upstream read instead of filling memory. The exchange holds its link
(`Provider.calling`), so a relink waits for it before the old pool is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgpack
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from lattice.protocol import http_out
from providers.sdk import HostData, Link, LinkKey, Provider

SETTINGS = frozenset({"allowed_hosts", "max_connections", *http_out.TIMEOUT_KEYS.values()})
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "host"}
)


def _pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class _BodyFailed(Exception):
    """The component's request body failed or stalled."""


class _Cancelled(Exception):
    """The host cancelled the exchange or stopped giving credit."""


@dataclass(frozen=True)
class Settings:
    allowed: http_out.OutgoingPolicy
    timeouts: http_out.Timeouts
    max_connections: int


def parse(config: dict[str, str]) -> Settings:
    """A link's settings; ValueError naming the setting when one is wrong."""
    unknown = sorted(set(config) - SETTINGS)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(SETTINGS))}"
        )
    raw = config.get("max_connections", "100")
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"max_connections={raw!r} must be a positive integer")
    return Settings(http_out.allowlist_of(config), http_out.Timeouts.from_config(config), int(raw))


def error_of(exc: BaseException) -> tuple[str, str]:
    """(WASI error-code case, message) for a failed request."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, _BodyFailed):
        return "internal-error", f"request body failed: {exc}"
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection-timeout", text
    if isinstance(exc, httpx.ConnectError):
        low = str(exc).lower()
        if "name or service" in low or "nodename" in low or "resolve" in low:
            return "internal-error", f"DNS lookup failed: {exc}"
        return "connection-refused", text
    if isinstance(exc, httpx.ReadTimeout | TimeoutError):
        return "connection-read-timeout", text
    if isinstance(exc, httpx.WriteTimeout):
        return "connection-write-timeout", text
    if isinstance(exc, httpx.PoolTimeout):
        return "connection-limit-reached", text
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return "HTTP-request-URI-invalid", text
    if isinstance(exc, httpx.RemoteProtocolError):
        return "HTTP-protocol-error", text
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.CloseError):
        return "connection-terminated", text
    return "internal-error", text


@dataclass(eq=False)
class _Exchange:
    head: http_out.Head
    task: asyncio.Task[Any] | None = None
    messages: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    acked: int = 0  # response chunks the host has taken
    credit: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False

    async def route(self, msg: Msg) -> None:
        try:
            message = msgpack.unpackb(msg.data, raw=False)
        except Exception:
            message = {"t": "err", "message": "malformed message from the host"}
        if not isinstance(message, dict):
            return
        kind = message.get("t")
        if kind == "ack":
            self.acked = max(self.acked, int(message.get("n", 0)))
            self.credit.set()
        elif kind == "cancel":
            self.cancelled = True
            self.credit.set()
            if self.task is not None and not self.task.done():
                self.task.cancel()
        else:
            self.messages.put_nowait(message)


class HttpClientProvider(Provider):
    """`wasi:http/outgoing-handler` over httpx, one connection pool per link."""

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self._clients: dict[LinkKey, tuple[httpx.AsyncClient, Settings]] = {}
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.served = 0

    # -- links ----------------------------------------------------------------------

    async def on_start(self) -> None:
        self._sub = await self.nats.subscribe(
            http_out.subject(self.lattice, self.provider_id),
            queue=http_out.queue(self.lattice, self.provider_id),
            cb=self._accept,
        )

    async def on_link_put(self, link: Link) -> None:
        if http_out.INTERFACE not in link.interfaces:
            raise ValueError(
                f"http-client serves wasi:http/{http_out.INTERFACE}, not {link.interfaces}"
            )
        settings = parse(link.target_config)
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=min(20, settings.max_connections),
        )
        client = httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False)
        self._clients[link.key] = (client, settings)

    async def on_link_del(self, link: Link) -> None:
        entry = self._clients.pop(link.key, None)
        if entry is not None:
            await entry[0].aclose()

    async def health(self) -> tuple[bool, str]:
        return True, (
            f"{len(self._clients)} link(s), {len(self._tasks)} request(s) in flight, "
            f"{self.served} served"
        )

    async def on_shutdown(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client, _ in list(self._clients.values()):
            await client.aclose()
        self._clients.clear()

    # -- exchanges ------------------------------------------------------------------

    async def _accept(self, msg: Msg) -> None:
        task = asyncio.create_task(self._exchange(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refuse(self, msg: Msg, code: str, message: str) -> None:
        if msg.reply:
            await self.nats.publish(msg.reply, _pack({"code": code, "message": message}))

    async def _exchange(self, msg: Msg) -> None:
        if not msg.reply:
            return  # a head must be a request: nobody would hear the answer
        try:
            head = http_out.Head.model_validate(msgpack.unpackb(msg.data, raw=False))
        except (ValidationError, ValueError, TypeError) as exc:
            await self._refuse(msg, "internal-error", f"malformed request head: {exc}")
            return
        if head.v != http_out.PROTOCOL_VERSION:
            await self._refuse(msg, "internal-error", f"unsupported protocol version {head.v}")
            return
        op = http_out.OPERATION
        link = self.find_link(head.source, head.link_name, op)
        if link is None:  # perhaps the hand-off's prepare has not reached us yet: ask
            link = await self.resolve_missing(head.source, head.link_name, op)
        where = f"provider {self.provider_id}"  # the host's message names link and source
        if link is None:
            why = self.link_failure(head.source, head.link_name)
            if why:
                await self._refuse(msg, "configuration-error", f"{where}: the link failed: {why}")
            else:
                await self._refuse(msg, http_out.NOT_LINKED, f"{where}: no such link")
            return
        async with self.calling(link) as current:
            entry = self._clients.get(current.key) if current is not None else None
            if entry is None:  # drained or replaced while we waited
                await self._refuse(msg, http_out.NOT_LINKED, f"{where}: the link went away")
                return
            client, settings = entry
            try:
                url = http_out.url_of(head.scheme, head.authority, head.path)
            except ValueError as exc:
                await self._refuse(msg, "HTTP-request-URI-invalid", f"{where}: {exc}")
                return
            host, port = http_out.split_authority(head.authority, head.scheme)
            if not settings.allowed(host, port):
                self.log.info("outgoing HTTP denied", source_id=head.source, host=host, port=port)
                why = f"{where}: {host}:{port} is not in the link's allowed_hosts"
                await self._refuse(msg, http_out.DENIED, why)
                return
            ex = _Exchange(head, task=asyncio.current_task())
            inbox = self.nats.new_inbox()
            sub = await self.nats.subscribe(inbox, cb=ex.route)
            try:
                await self.nats.publish(
                    msg.reply, _pack({"inbox": inbox, "window": http_out.WINDOW})
                )
                await self._proxy(ex, client, url, settings.timeouts.narrowed(head))
            except asyncio.CancelledError:
                if not ex.cancelled:
                    raise
                self.log.info("outgoing request cancelled by the host", source_id=head.source)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                self.served += 1

    async def _proxy(
        self, ex: _Exchange, client: httpx.AsyncClient, url: str, timeouts: http_out.Timeouts
    ) -> None:
        head = ex.head
        body_done = asyncio.Event()
        if not head.body:
            body_done.set()
        headers = [(k, v) for k, v in head.headers if k.lower() not in HOP_BY_HOP]
        io_timeout = httpx.Timeout(
            connect=timeouts.connect,
            read=None,  # first byte and between bytes are timed here, as wasi:http defines them
            write=timeouts.between_bytes,
            pool=timeouts.connect,
        )
        try:
            request = client.build_request(
                head.method,
                url,
                headers=headers,
                content=self._request_body(ex, body_done) if head.body else None,
                timeout=io_timeout,
            )
            response = await self._send(client, request, body_done, timeouts.first_byte)
        except Exception as exc:
            code, message = error_of(exc)
            self.log.info(
                "outgoing request failed", authority=head.authority, code=code, error=message
            )
            failure = {"t": "err", "code": code, "message": message}
            await self.nats.publish(head.reply, _pack(failure))
            return
        try:
            await self._respond(ex, response, timeouts.between_bytes)
        finally:
            await response.aclose()

    async def _send(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        body_done: asyncio.Event,
        first_byte: float | None,
    ) -> httpx.Response:
        """The response head; the first-byte timeout runs once the body has been sent."""
        send = asyncio.ensure_future(client.send(request, stream=True))
        sent = asyncio.ensure_future(body_done.wait())
        try:
            await asyncio.wait({send, sent}, return_when=asyncio.FIRST_COMPLETED)
            if send.done():
                return send.result()
            try:
                return await asyncio.wait_for(asyncio.shield(send), first_byte)
            except TimeoutError:
                raise TimeoutError(f"no response within {first_byte:g}s of the request") from None
        finally:
            sent.cancel()
            if not send.done():
                send.cancel()
                with contextlib.suppress(BaseException):
                    await send

    async def _request_body(self, ex: _Exchange, done: asyncio.Event) -> AsyncIterator[bytes]:
        """The host's chunks as httpx asks for them; credit back every `WINDOW // 2`."""
        consumed, step = 0, max(1, http_out.WINDOW // 2)
        while True:
            try:
                message = await asyncio.wait_for(ex.messages.get(), http_out.IDLE_TIMEOUT)
            except TimeoutError:
                raise _BodyFailed("the component's request body stalled") from None
            kind = message.get("t")
            if kind == "data":
                consumed += 1
                if consumed % step == 0:
                    await self.nats.publish(ex.head.reply, _pack({"t": "ack", "n": consumed}))
                yield bytes(message.get("d") or b"")
            elif kind == "end":
                done.set()
                return
            else:
                raise _BodyFailed(str(message.get("message") or "the component's body failed"))

    async def _respond(
        self, ex: _Exchange, response: httpx.Response, between: float | None
    ) -> None:
        reply = ex.head.reply
        headers = [
            (k.decode("latin-1").lower(), v)
            for k, v in response.headers.raw
            if k.decode("latin-1").lower() not in HOP_BY_HOP
        ]
        await self.nats.publish(
            reply, _pack({"t": "head", "status": response.status_code, "headers": headers})
        )
        chunks = response.aiter_raw(http_out.CHUNK)
        sent = 0
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(chunks, None), between)
                except TimeoutError:
                    raise TimeoutError(f"no response bytes for {between:g}s") from None
                if chunk is None:
                    break
                while sent >= ex.acked + http_out.WINDOW and not ex.cancelled:
                    ex.credit.clear()
                    try:
                        await asyncio.wait_for(ex.credit.wait(), http_out.IDLE_TIMEOUT)
                    except TimeoutError:
                        raise _Cancelled("no credit from the host") from None
                if ex.cancelled:
                    raise _Cancelled("the host cancelled")
                await self.nats.publish(reply, _pack({"t": "data", "d": chunk}))
                sent += 1
        except _Cancelled as exc:
            self.log.info("outgoing response abandoned", reason=str(exc))
            return
        except Exception as exc:
            code, message = error_of(exc)
            await self.nats.publish(reply, _pack({"t": "err", "code": code, "message": message}))
            return
        await self.nats.publish(reply, _pack({"t": "end"}))
