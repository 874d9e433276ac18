"""A component's `wasi:http/outgoing-handler` linked to a provider (`builtin://http-client`).

Without a link, outgoing HTTP is the host's own (`host.wasi.outgoing`, the component's
`allowed_hosts`). With a link from the component, interface `outgoing-handler`, the
request goes to the link's target over NATS instead, with both bodies streamed under
credit (the contract is `lattice.protocol.http_out`; docs/wasi-http.md, "Outgoing HTTP
through a provider"). The link is looked up on every request, so a relink or a link
delete reaches the next one.

Threads: `handle` runs on the component's worker thread. It starts the exchange on the
host's event loop and returns at once with a pending future-incoming-response, which
becomes ready when the provider's response head (or its error) arrives. The guest writes
the request body into the outgoing body's `Pipe` meanwhile; a task on the loop sends its
chunks (at most `WINDOW` unacknowledged), another feeds the response chunks into the
incoming body's `Pipe` and acknowledges them as the guest's pipe takes them. So per
exchange at most `WINDOW` chunks plus one pipe (256 KiB) wait in each direction, however
large the bodies. Failures come back as WASI `error-code`s; their message, naming the
link and the host it was for, goes to the log, and to the guest where the code carries
text (`internal-error`) or as the io error of a body stream that fails midway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from wasmtime.component import Variant

from host.wasi.io import Pipe, StreamClosed, StreamFailure
from host.wasi.outgoing import OutgoingPolicy, Response
from lattice.protocol import handoff, http_out
from lattice.protocol.links import Identity, Link, find_link

log = structlog.get_logger("lattice.wasi.http")

NAMESPACE, PACKAGE = "wasi", "http"
_ids = itertools.count()


def _pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def error_code(code: str, message: str) -> Variant:
    """The WASI `error-code` for a wire code; only `internal-error` carries text."""
    if code == "internal-error" or code not in _PLAIN_CODES:
        return Variant("internal-error", message)
    return Variant(code)


# error-code cases without a payload that the provider may answer with
_PLAIN_CODES = frozenset(
    {
        "DNS-timeout",
        "destination-not-found",
        "destination-unavailable",
        "connection-refused",
        "connection-terminated",
        "connection-timeout",
        "connection-read-timeout",
        "connection-write-timeout",
        "connection-limit-reached",
        "TLS-protocol-error",
        "TLS-certificate-error",
        "HTTP-request-denied",
        "HTTP-request-method-invalid",
        "HTTP-request-URI-invalid",
        "HTTP-response-incomplete",
        "HTTP-response-timeout",
        "HTTP-protocol-error",
        "configuration-error",
    }
)


@dataclass(frozen=True)
class Request:
    """What the guest built: an `outgoing-request` and its `request-options` (ns)."""

    method: str
    scheme: str
    authority: str
    path: str
    headers: list[tuple[str, bytes]]
    connect_ns: int | None = None
    first_byte_ns: int | None = None
    between_bytes_ns: int | None = None


class Pending:
    """One exchange in flight: `head` resolves with the response or an error-code."""

    def __init__(self) -> None:
        self.head: concurrent.futures.Future[Response | Variant] = concurrent.futures.Future()
        self.task: concurrent.futures.Future[None] | None = None

    def cancel(self) -> None:
        """The guest dropped the future before its answer: stop the exchange."""
        if self.task is not None:
            self.task.cancel()


@dataclass(eq=False)
class _Exchange:
    """What arrives on this exchange's inbox, and the credit for the request body."""

    where: str
    messages: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    provider_inbox: str = ""
    window: int = http_out.WINDOW
    acked: int = 0  # request chunks the provider has taken
    credit: asyncio.Event = field(default_factory=asyncio.Event)

    async def route(self, msg: Msg) -> None:
        try:
            message = msgpack.unpackb(msg.data, raw=False)
        except Exception:
            message = {"t": "err", "code": "HTTP-protocol-error", "message": "malformed message"}
        if not isinstance(message, dict):
            return
        if message.get("t") == "ack":
            self.acked = max(self.acked, int(message.get("n", 0)))
            self.credit.set()
        self.messages.put_nowait(message)  # acks too: they count as progress

    async def next(self) -> dict[str, Any]:
        """The next message other than an ack; TimeoutError after `IDLE_TIMEOUT` silent."""
        while True:
            message = await asyncio.wait_for(self.messages.get(), http_out.IDLE_TIMEOUT)
            if message.get("t") != "ack":
                return message


class LinkedOutgoing:
    """A component's outgoing HTTP policy (`state.outgoing`), aware of its link.

    Called as a policy it is the component's own allowlist (the host-sent path);
    `route()` is the provider link in force now, or None.
    """

    def __init__(
        self,
        policy: OutgoingPolicy,
        *,
        nc: NATS,
        loop: asyncio.AbstractEventLoop,
        lattice: str,
        component_id: str,
        links: Mapping[Identity, Link],
        link_name: Callable[[str, str, str], str],
        fetch_link: Callable[[Identity], Awaitable[Link | None]] | None = None,
        egress: OutgoingPolicy | None = None,
    ) -> None:
        self.policy = policy
        # the component's capability policy, which also bounds what the provider may do
        self.egress = egress
        self.nc = nc
        self.loop = loop
        self.lattice = lattice
        self.component_id = component_id
        self.links = links
        self.link_name = link_name
        self.fetch_link = fetch_link

    def __call__(self, host: str, port: int) -> bool:
        return self.policy(host, port)

    def route(self) -> Link | None:
        name = self.link_name(self.component_id, NAMESPACE, PACKAGE)
        return find_link(
            self.links, self.component_id, NAMESPACE, PACKAGE, http_out.INTERFACE, name
        )

    def send(
        self, link: Link, request: Request, body: Pipe | None, deadline: float | None
    ) -> Pending:
        """Start the exchange on the loop (from the worker thread); returns at once."""
        pending = Pending()
        pending.task = asyncio.run_coroutine_threadsafe(
            self._run(pending, link, request, body, deadline), self.loop
        )
        return pending

    # -- on the event loop ----------------------------------------------------------

    async def _run(
        self,
        pending: Pending,
        link: Link,
        request: Request,
        body: Pipe | None,
        deadline: float | None,
    ) -> None:
        where = (
            f"link {link.name!r} (wasi:http/outgoing-handler) to {link.target}, "
            f"request to {request.authority}"
        )
        head = pending.head
        try:
            timeout = (
                asyncio.timeout_at(deadline + 1.0)
                if deadline is not None
                else contextlib.nullcontext()
            )
            async with timeout:
                await self._exchange(head, link, request, body, where)
        except (TimeoutError, asyncio.CancelledError) as exc:
            why = (
                f"no answer from the provider within the call's deadline or "
                f"{http_out.IDLE_TIMEOUT:g}s of silence"
                if isinstance(exc, TimeoutError)
                else "the component abandoned the request"
            )
            self._fail(head, "HTTP-response-timeout", f"{where}: {why}")
            if isinstance(exc, asyncio.CancelledError):
                raise
        except Exception as exc:  # never leave the guest waiting on a future
            log.exception("outgoing exchange failed", where=where)
            self._fail(head, "internal-error", f"{where}: {type(exc).__name__}: {exc}")
        finally:
            if body is not None:
                body.close_reader()  # a guest still writing sees `closed`

    def _fail(
        self, head: concurrent.futures.Future[Response | Variant], code: str, message: str
    ) -> None:
        if not head.done():
            log.info("outgoing HTTP failed", code=code, reason=message)
            head.set_result(error_code(code, message))

    async def _exchange(
        self,
        head: concurrent.futures.Future[Response | Variant],
        link: Link,
        request: Request,
        body: Pipe | None,
        where: str,
    ) -> None:
        ex = _Exchange(where)
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=ex.route)
        sender: asyncio.Task[None] | None = None
        try:
            wire = http_out.Head(
                id=f"{self.component_id}-{next(_ids)}",
                source=self.component_id,
                link_name=link.name,
                method=request.method,
                scheme=request.scheme,
                authority=request.authority,
                path=request.path,
                headers=request.headers,
                reply=inbox,
                body=body is not None,
                connect_ns=request.connect_ns,
                first_byte_ns=request.first_byte_ns,
                between_bytes_ns=request.between_bytes_ns,
            )
            accepted = await self._start(ex, link, wire, head)
            if not accepted:
                return
            if body is not None:
                sender = asyncio.create_task(self._send_body(ex, body))
            await self._receive(ex, head)
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _start(
        self,
        ex: _Exchange,
        link: Link,
        wire: http_out.Head,
        head: concurrent.futures.Future[Response | Variant],
    ) -> bool:
        """Send the head until a provider accepts it (the link hand-off on a miss)."""
        ident: Identity = (self.component_id, NAMESPACE, PACKAGE, link.name)
        loop_deadline = self.loop.time() + http_out.IDLE_TIMEOUT
        attempt = 0
        while True:
            attempt += 1
            target = link.target
            where = ex.where
            try:
                reply = await self.nc.request(
                    http_out.subject(self.lattice, target),
                    _pack(wire.model_dump()),
                    timeout=http_out.ACCEPT_TIMEOUT,
                )
            except nats.errors.NoRespondersError:
                miss = handoff.Miss.NO_RESPONDERS
            except (nats.errors.TimeoutError, TimeoutError):
                self._fail(
                    head,
                    "internal-error",
                    f"{where}: the provider did not accept within {http_out.ACCEPT_TIMEOUT:g}s",
                )
                return False
            else:
                answer = msgpack.unpackb(reply.data, raw=False)
                if isinstance(answer, dict) and "inbox" in answer:
                    ex.provider_inbox = str(answer["inbox"])
                    ex.window = max(1, int(answer.get("window", http_out.WINDOW)))
                    return True
                code = str(answer.get("code", "internal-error")) if isinstance(answer, dict) else ""
                message = str(answer.get("message", "")) if isinstance(answer, dict) else ""
                if code != http_out.NOT_LINKED:
                    self._fail(head, code or "internal-error", f"{where}: {message or code}")
                    return False
                miss = handoff.Miss.NOT_LINKED
            fresh = await self.fetch_link(ident) if self.fetch_link is not None else None
            step = handoff.after_miss(
                target, miss, fresh, http_out.INTERFACE, attempt, loop_deadline - self.loop.time()
            )
            if isinstance(step, handoff.Fail):
                self._fail(head, "internal-error", f"{where}: {step.reason}")
                return False
            if step.wait:
                await asyncio.sleep(step.wait)
            link = step.link
            wire = wire.model_copy(update={"link_name": link.name})

    async def _send_body(self, ex: _Exchange, body: Pipe) -> None:
        """The guest's request body, as it writes it, under the provider's credit."""
        sent = 0
        try:
            while (chunk := await body.aread_chunk()) is not None:
                for i in range(0, len(chunk), http_out.CHUNK):
                    while sent >= ex.acked + ex.window:
                        ex.credit.clear()
                        await asyncio.wait_for(ex.credit.wait(), http_out.IDLE_TIMEOUT)
                    piece = chunk[i : i + http_out.CHUNK]
                    await self.nc.publish(ex.provider_inbox, _pack({"t": "data", "d": piece}))
                    sent += 1
        except StreamFailure as exc:  # the guest dropped the body unfinished
            message = f"request body failed: {exc}"
            await self.nc.publish(ex.provider_inbox, _pack({"t": "err", "message": message}))
            return
        except TimeoutError:
            await self.nc.publish(ex.provider_inbox, _pack({"t": "cancel"}))
            return
        await self.nc.publish(ex.provider_inbox, _pack({"t": "end"}))

    async def _receive(
        self, ex: _Exchange, head: concurrent.futures.Future[Response | Variant]
    ) -> None:
        """Head, then body chunks into the guest's pipe, acknowledged as it takes them."""
        message = await ex.next()
        if message.get("t") != "head":
            code = str(message.get("code") or "HTTP-protocol-error")
            self._fail(head, code, f"{ex.where}: {message.get('message') or code}")
            return
        pipe = Pipe()
        headers = [(str(k).lower(), bytes(v)) for k, v in message.get("headers") or []]
        head.set_result(Response(int(message.get("status", 502)), headers, pipe))
        consumed = 0
        step = max(1, ex.window // 2)
        try:
            while True:
                message = await ex.next()
                kind = message.get("t")
                if kind == "data":
                    await asyncio.wait_for(pipe.wait_writable(), http_out.IDLE_TIMEOUT)
                    pipe.write(bytes(message.get("d") or b""))
                    consumed += 1
                    if consumed % step == 0:
                        await self.nc.publish(ex.provider_inbox, _pack({"t": "ack", "n": consumed}))
                elif kind == "end":
                    pipe.finish()
                    return
                else:
                    code = message.get("code") or "HTTP-response-incomplete"
                    pipe.finish(error=f"{ex.where}: {code}: {message.get('message') or ''}")
                    return
        except (StreamClosed, TimeoutError, asyncio.CancelledError) as exc:
            # the guest dropped the response body, stopped reading, or the call ended
            pipe.finish(error=f"{ex.where}: the response was abandoned")
            pipe.close_reader()
            with contextlib.suppress(Exception):
                await self.nc.publish(ex.provider_inbox, _pack({"t": "cancel"}))
            if isinstance(exc, asyncio.CancelledError):
                raise
