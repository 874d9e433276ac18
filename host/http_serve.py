"""Serving a component's `wasi:http/incoming-handler` over the lattice, with streamed bodies.

`attach` is called by the component manager for every running component. When the
component's pool is a `host.wasi.WasiPool` whose exports contain the incoming handler,
it subscribes to `{lattice}.{component_id}.http` in the queue group
`http.{lattice}.{component_id}` (so exchanges balance across every host running the
component) and returns that subscription; otherwise it returns None.

`local_server` is the other way in: the in-host http-server (providers.http_server run
in this process) hands a request for a component running here straight to its pool.

Theory of operation (the contract is docs/http.md, "The streaming protocol"):

1. A caller (the http-server provider) sends a NATS *request* with the msgpack request
   head: `{v, id, method, path, scheme, authority, headers, reply, body}`. `reply` is the
   caller's inbox for this exchange. No host running the component → NATS "no
   responders" at once, which the caller turns into a 503.
2. The subscription callback only spawns a task (nats-py runs one callback at a time per
   subscription). The task looks up the component's *current* pool (an image update
   swaps it), registers the exchange under a host inbox and answers the request with
   `{inbox, window}` — or `{status, message}` when it cannot serve.
3. Request body chunks (`{t: data, d}` … `{t: end}`) arrive on the host inbox; every
   inbox of this process shares one wildcard subscription (`_Inboxes`) that routes by
   exchange id. The caller may have at most `window` chunks unacknowledged; the host
   acknowledges (`{t: ack, n: consumed}`) as the guest reads, so at most `window`
   chunks (512 KiB) wait here per exchange.
4. `host.wasi.serve_request` runs the handler on a pool worker. The response head
   (`{t: head, status, headers}`) goes to the caller's inbox as soon as the guest sets
   it; body chunks (≤ 64 KiB) follow under the same credit rule in the other direction,
   then `{t: end}`, or `{t: err, message}` when the guest fails mid-body.
5. `{t: cancel}` from the caller (its client went away) cancels the exchange's task
   wherever it waits: the request body fails, the response body generator is closed,
   which closes the guest's pipes (its next write sees `closed`). A caller that goes
   silent is given up on after `IDLE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import msgpack
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from host.runtime.pool import InstancePool, PoolClosed
from host.wasi import ResponseBodyError, WasiPool, serve_request
from host.wasi.http import WholeBody
from host.wasi.io import CallerGone
from lattice.protocol.invocation import InvocationError
from providers.http_server.provider import LocalRequest, LocalResponse, LocalServe

log = structlog.get_logger("lattice.http")

HANDLER_OPERATION = "wasi:http/incoming-handler.handle"
WINDOW = 8
"""Chunks (of ≤ 64 KiB) a sender may have unacknowledged, in each direction."""
IDLE_TIMEOUT = 30.0
"""Seconds without progress from the caller (data or credit) before the exchange is dropped."""
COALESCE = 0.002
"""Seconds the head waits for the first body chunk and the end, to go in one message."""
PROTOCOL_VERSION = 1


class PoolRef:
    """The component's current pool; an image update swaps it under the subscription."""

    def __init__(self, get: Callable[[], InstancePool | None]) -> None:
        self.get = get


def _pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _serves_http(pool: InstancePool | None) -> TypeGuard[WasiPool]:
    return isinstance(pool, WasiPool) and HANDLER_OPERATION in pool.exports


_END = object()
"""The response body ended (see `_ready`)."""


async def _next(body: AsyncIterator[bytes]) -> Any:
    try:
        return await anext(body)
    except StopAsyncIteration:
        return _END


async def _ready(body: AsyncIterator[bytes]) -> Any:
    """The body's next chunk or `_END` if it comes within `COALESCE`, else a future of it.

    A task, not `wait_for`: cancelling the generator's `__anext__` would close it.
    Raises what the body raises (`ResponseBodyError`) when that comes within the wait.
    """
    task = asyncio.ensure_future(_next(body))
    try:
        await asyncio.wait({task}, timeout=COALESCE)
    except asyncio.CancelledError:
        task.cancel()  # `wait` leaves it running; the generator must see the cancel
        raise
    return task.result() if task.done() else task


class _Cancelled(CallerGone):
    """The caller abandoned the exchange (the guest's next read of its body says so)."""


@dataclass(eq=False)
class _Exchange:
    """One exchange's host-side state: what arrived on its inbox, and the send credit."""

    id: str
    reply: str
    inbox: str
    incoming: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    acked: int = 0  # response chunks the caller has consumed
    credit_changed: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    task: asyncio.Task[Any] | None = None  # cancelled on the caller's cancel

    def deliver(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "ack":
            self.acked = max(self.acked, int(message.get("n", 0)))
            self.credit_changed.set()
        elif kind == "cancel":
            # Cancelling the task throws into the response body generator wherever it
            # waits, which closes the guest's pipes (its next write sees `closed`).
            self.cancelled = True
            self.credit_changed.set()
            self.incoming.put_nowait(message)
            if self.task is not None and not self.task.done():
                self.task.cancel()
        else:
            self.incoming.put_nowait(message)


class _Inboxes:
    """One wildcard subscription per NATS connection for every exchange's host inbox.

    Kept per connection (weakly: it lives and dies with the host's connection), created
    by the first `attach`, never unsubscribed before the connection closes.
    """

    _by_conn: weakref.WeakKeyDictionary[NATS, _Inboxes] = weakref.WeakKeyDictionary()

    def __init__(self, nc: NATS) -> None:
        self.prefix = f"{nc.new_inbox()}.http"
        self.exchanges: dict[str, _Exchange] = {}
        self._ids = itertools.count()

    @classmethod
    async def of(cls, nc: NATS) -> _Inboxes:
        inboxes = cls._by_conn.get(nc)
        if inboxes is None:
            inboxes = cls._by_conn[nc] = cls(nc)
            # no reference to the subscription: it refers to the connection, the weak key
            await nc.subscribe(f"{inboxes.prefix}.*", cb=inboxes._route)
        return inboxes

    def open(self, exchange_id: str, reply: str) -> _Exchange:
        token = f"x{next(self._ids)}"
        ex = _Exchange(id=exchange_id, reply=reply, inbox=f"{self.prefix}.{token}")
        self.exchanges[token] = ex
        return ex

    def close(self, ex: _Exchange) -> None:
        self.exchanges.pop(ex.inbox.rsplit(".", 1)[1], None)

    async def _route(self, msg: Msg) -> None:
        ex = self.exchanges.get(msg.subject.rsplit(".", 1)[1])
        if ex is None:
            return  # late message for a finished exchange
        try:
            message = msgpack.unpackb(msg.data, raw=False)
        except Exception:
            log.warning("malformed http stream message", exchange_id=ex.id)
            return
        if isinstance(message, dict):
            ex.deliver(message)


def local_server(pool_of: Callable[[str], InstancePool | None]) -> LocalServe:
    """The in-host http-server's way to a component running here (no NATS hop): None
    when this host does not run it (the server then uses the exchange protocol)."""

    def serve(component_id: str, request: LocalRequest) -> Awaitable[LocalResponse] | None:
        pool = pool_of(component_id)
        return _serve_local(pool, request) if _serves_http(pool) else None

    return serve


def _refusal(exc: PoolClosed | InvocationError) -> str:
    """Why a pool could not take a request (it answers 503 with this)."""
    return exc.message if isinstance(exc, InvocationError) else "component is stopping"


async def _serve_local(pool: WasiPool, request: LocalRequest) -> LocalResponse:
    try:
        response = await serve_request(pool, *request)
    except (PoolClosed, InvocationError) as exc:
        text = f"{_refusal(exc)}\n".encode()
        body = WholeBody(text)
        return LocalResponse(503, [("content-type", b"text/plain; charset=utf-8")], body, text)
    whole = response.body.whole if isinstance(response.body, WholeBody) else None
    return LocalResponse(response.status, response.headers, response.body, whole)


async def attach(nc: NATS, lattice: str, component_id: str, pool: PoolRef) -> Subscription | None:
    """Subscribe the component to HTTP exchanges when its current pool can serve them."""
    if not _serves_http(pool.get()):
        return None
    inboxes = await _Inboxes.of(nc)
    server = _Server(nc, lattice, component_id, pool, inboxes)
    sub = await nc.subscribe(
        f"{lattice}.{component_id}.http", queue=f"http.{lattice}.{component_id}", cb=server.accept
    )
    log.info("serving http", component_id=component_id, lattice=lattice)
    return sub


class _Server:
    """The HTTP exchanges of one component on this host."""

    def __init__(
        self, nc: NATS, lattice: str, component_id: str, pool: PoolRef, inboxes: _Inboxes
    ) -> None:
        self.nc = nc
        self.component_id = component_id
        self.pool = pool
        self.inboxes = inboxes
        self.tasks: set[asyncio.Task[None]] = set()
        self._log = log.bind(component_id=component_id, lattice=lattice)

    async def accept(self, msg: Msg) -> None:
        task = asyncio.create_task(self._exchange(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _refuse(self, msg: Msg, status: int, message: str) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, _pack({"status": status, "message": message}))

    async def _exchange(self, msg: Msg) -> None:
        try:
            head = msgpack.unpackb(msg.data, raw=False)
            reply = head["reply"]
            method, path = str(head["method"]), str(head.get("path") or "/")
        except Exception as exc:
            await self._refuse(msg, 400, f"malformed request head: {exc}")
            return
        xid = str(head.get("id", ""))
        if head.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
            await self._refuse(msg, 400, f"unsupported protocol version {head.get('v')!r}")
            return
        pool = self.pool.get()
        if not _serves_http(pool):
            await self._refuse(msg, 503, f"component {self.component_id} cannot serve HTTP here")
            return
        ex = self.inboxes.open(xid, reply)
        ex.task = asyncio.current_task()
        try:
            await self.nc.publish(msg.reply, _pack({"inbox": ex.inbox, "window": WINDOW}))
            await self._serve(ex, pool, head, method, path)
        except asyncio.CancelledError:
            if not ex.cancelled:
                raise
            self._log.info("http exchange cancelled by the caller", exchange_id=xid)
        except Exception as exc:
            self._log.exception("http exchange failed", exchange_id=xid, error=str(exc))
            with contextlib.suppress(Exception):
                await self.nc.publish(reply, _pack({"t": "err", "message": "host error"}))
        finally:
            self.inboxes.close(ex)

    async def _serve(
        self, ex: _Exchange, pool: WasiPool, head: dict[str, Any], method: str, path: str
    ) -> None:
        headers = [(str(k), bytes(v)) for k, v in head.get("headers") or []]
        body = self._request_body(ex) if head.get("body") else None
        try:
            response = await serve_request(
                pool, method, path, head.get("scheme"), head.get("authority"), headers, body
            )
        except (PoolClosed, InvocationError) as exc:
            await self._send_error_head(ex, 503, _refusal(exc))
            return
        if ex.cancelled:
            await response.body.aclose()  # type: ignore[attr-defined]
            return
        head: dict[str, Any] = {"t": "head", "status": response.status, "headers": response.headers}
        body = aiter(response.body)
        sent, head_sent = 0, False
        try:
            # A small response usually follows its head at once: wait up to COALESCE for
            # the first chunk and the end, and send them in the head message.
            step = await _ready(body)
            if isinstance(step, bytes):
                head["d"], sent = step, 1
                step = await _ready(body)
            if step is _END:
                head["end"] = True
            await self.nc.publish(ex.reply, _pack(head))
            head_sent = True
            if step is _END:
                return
            if isinstance(step, asyncio.Future):
                step = await step
            if step is not _END:
                await self._send_chunk(ex, step, sent)
                sent += 1
                async for chunk in body:
                    await self._send_chunk(ex, chunk, sent)
                    sent += 1
        except ResponseBodyError as exc:
            self._log.warning("response body failed", exchange_id=ex.id, error=str(exc))
            if not head_sent:  # the caller aborts the response it has started
                head.pop("end", None)
                await self.nc.publish(ex.reply, _pack(head))
            await self.nc.publish(ex.reply, _pack({"t": "err", "message": str(exc)}))
            return
        except _Cancelled as exc:
            self._log.info("http exchange abandoned", exchange_id=ex.id, reason=str(exc))
            await response.body.aclose()  # type: ignore[attr-defined]
            return
        await self.nc.publish(ex.reply, _pack({"t": "end"}))

    async def _send_chunk(self, ex: _Exchange, chunk: bytes, sent: int) -> None:
        """Send one response chunk once the caller's credit allows it."""
        while sent >= ex.acked + WINDOW and not ex.cancelled:
            ex.credit_changed.clear()
            try:
                await asyncio.wait_for(ex.credit_changed.wait(), IDLE_TIMEOUT)
            except TimeoutError:
                raise _Cancelled("no credit from the caller") from None
        if ex.cancelled:
            raise _Cancelled("the caller cancelled")
        await self.nc.publish(ex.reply, _pack({"t": "data", "d": chunk}))

    async def _send_error_head(self, ex: _Exchange, status: int, text: str) -> None:
        hdrs = [("content-type", b"text/plain; charset=utf-8")]
        await self.nc.publish(ex.reply, _pack({"t": "head", "status": status, "headers": hdrs}))
        await self.nc.publish(ex.reply, _pack({"t": "data", "d": f"{text}\n".encode()}))
        await self.nc.publish(ex.reply, _pack({"t": "end"}))

    async def _request_body(self, ex: _Exchange) -> AsyncIterator[bytes]:
        """The request body as it arrives; acknowledges every `WINDOW // 2` chunks read."""
        consumed = 0
        while True:
            try:
                message = await asyncio.wait_for(ex.incoming.get(), IDLE_TIMEOUT)
            except TimeoutError:
                raise _Cancelled("request body stalled") from None
            kind = message.get("t")
            if kind == "data":
                chunk = message.get("d") or b""
                consumed += 1
                if consumed % (WINDOW // 2) == 0:
                    await self.nc.publish(ex.reply, _pack({"t": "ack", "n": consumed}))
                yield bytes(chunk)
            elif kind == "end":
                return
            elif kind == "cancel":
                raise _Cancelled("the caller cancelled")
            else:
                raise _Cancelled(str(message.get("message") or "request body failed"))
