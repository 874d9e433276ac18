"""`wasi:http/types` in Python, and serving a component's `wasi:http/incoming-handler`.

Why this exists: wasmtime-py 50 offers WASI HTTP only for *outgoing* requests
(`Linker.add_wasi_http`); nothing in its API creates an `incoming-request` or reads an
`outgoing-response`. So the host defines `wasi:http/types` itself — and, because those
types use `wasi:io` streams and pollables, all of WASI that shares those resource types
(see `host.wasi`).

Theory of operation
-------------------
`serve_request` (on the event loop) builds an `IncomingRequest` whose body is a byte
source, wraps it in an `Exchange`, and hands the exchange to a runner — a `WasiPool`
(a pool worker) or a `WasiInstance` (a thread). The worker calls the component's
`handle(request, response-out)` (`run_handler`). When the guest calls
`response-outparam.set`, the exchange's `head` future resolves with the status, the
headers and the response body `Pipe`; `serve_request` returns right then, while the
guest is still writing the body. The caller iterates the body asynchronously; the guest
writes through `output-stream`, whose `check-write` is the pipe's free space, so a slow
reader makes the guest wait in `poll` (on the worker thread, GIL released) and memory
stays bounded: request and response each buffer at most `PIPE_CAPACITY` plus one chunk
of at most `WRITE_BUDGET` (64 KiB).

Request bodies come from bytes (sliced into 64 KiB pieces), a sync iterable (pulled on
the worker thread when the guest reads) or an async iterable (a feeder task on the loop
writes into a pipe, waiting for space). Failures:

* the handler traps (or times out, or the instance cannot be created) before setting a
  response → the head is a 500 and the instance is discarded;
* it fails after the head went out → the response body iterator raises
  `ResponseBodyError` after the bytes that were written (the client sees a truncated
  response, as with any server that fails mid-body);
* it returns without setting a response → 500; without finishing the body, or dropping
  the `outgoing-body` unfinished → `ResponseBodyError` at the end of the body;
* `response-outparam.set` with an `error-code` → 500.

Field names are lower-cased; names and values are checked as the `http` crate (and so
wasmtime) does, and the hop-by-hop headers wasmtime forbids are refused in guest-made
fields and left out of incoming requests (`host` becomes the authority). Trailers are
accepted and ignored. Outgoing HTTP (`outgoing-handler.handle`) is sent only to hosts
the component's policy allows (`host.wasi.outgoing`, config `allowed_hosts`); anything
else — and everything when no policy is set — is refused with `HTTP-request-denied`;
when the component's `outgoing-handler` import is linked, the request goes to the link's
provider instead, both bodies streamed (`host.wasi.outgoing_link`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import structlog
import wasmtime
from wasmtime import WasmtimeError
from wasmtime.component import Component, Variant

from host.runtime.call import BoundFunc
from host.wasi import outgoing, outgoing_link
from host.wasi.binding import Err, HostResource, Interface, Ok, lower_own, resource
from host.wasi.io import (
    ALWAYS,
    CALLER_GONE,
    WRITE_BUDGET,
    ByteSource,
    CallerGone,
    Condition,
    EmptySource,
    InputStream,
    IoError,
    IterSource,
    OutputStream,
    Pipe,
    Pollable,
    Signal,
    StreamClosed,
    StreamFailure,
)
from host.wasi.state import WasiState, state_of
from lattice.protocol import http_out

log = structlog.get_logger("lattice.wasi.http")

HANDLER_INTERFACE = "wasi:http/incoming-handler"
TYPES_INTERFACE = "wasi:http/types"

# What wasmtime's WASI HTTP refuses in guest-made fields (wasmtime-wasi-http
# DEFAULT_FORBIDDEN_HEADERS); `host` travels as the authority instead.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
        "http2-settings",
    }
)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # no control characters, no DEL
_METHODS = {
    "GET": "get",
    "HEAD": "head",
    "POST": "post",
    "PUT": "put",
    "DELETE": "delete",
    "CONNECT": "connect",
    "OPTIONS": "options",
    "TRACE": "trace",
    "PATCH": "patch",
}
ERROR_BODY = b"internal server error\n"

Headers = list[tuple[str, bytes]]


class ResponseBodyError(Exception):
    """The component failed after it had sent the response head."""


# -- fields -----------------------------------------------------------------------------


def _valid_name(name: str) -> bool:
    return _TOKEN.fullmatch(name.encode("utf-8")) is not None


def _valid_value(value: bytes) -> bool:
    return _VALUE.fullmatch(value) is not None


def _header_error(name: str, value: bytes | None = None) -> Variant | None:
    """`header-error` for a guest-supplied field, None when acceptable."""
    if not _valid_name(name) or (value is not None and not _valid_value(value)):
        return Variant("invalid-syntax")
    if name.lower() in FORBIDDEN_HEADERS:
        return Variant("forbidden")
    return None


@resource(TYPES_INTERFACE, "fields")
class Fields(HostResource):
    """Header or trailer fields: ordered (name, value) pairs, names lower-cased."""

    def __init__(self, entries: Headers | None = None, *, mutable: bool = True) -> None:
        self.entries: Headers = entries if entries is not None else []
        self.mutable = mutable

    def frozen(self) -> Fields:
        """An immutable view (a child handle such as `incoming-request.headers`)."""
        return Fields(self.entries, mutable=False)


def _fields_new(state: WasiState) -> Fields:
    return Fields()


def _fields_from_list(state: WasiState, entries: list[tuple[str, bytes]]) -> Any:
    out: Headers = []
    for name, value in entries:
        error = _header_error(name, value)
        if error is not None:
            return Err(error)
        out.append((name.lower(), bytes(value)))
    return Ok(Fields(out))


def _fields_get(state: WasiState, f: Fields, name: str) -> list[bytes]:
    key = name.lower()
    return [v for k, v in f.entries if k == key]


def _fields_has(state: WasiState, f: Fields, name: str) -> bool:
    key = name.lower()
    return any(k == key for k, _ in f.entries)


def _fields_set(state: WasiState, f: Fields, name: str, values: list[bytes]) -> Any:
    if not f.mutable:
        return Err(Variant("immutable"))
    for value in values or [b""]:
        error = _header_error(name, value)
        if error is not None:
            return Err(error)
    key = name.lower()
    f.entries[:] = [(k, v) for k, v in f.entries if k != key] + [(key, bytes(v)) for v in values]
    return Ok(None)


def _fields_delete(state: WasiState, f: Fields, name: str) -> Any:
    if not f.mutable:
        return Err(Variant("immutable"))
    error = _header_error(name)
    if error is not None:
        return Err(error)
    key = name.lower()
    f.entries[:] = [(k, v) for k, v in f.entries if k != key]
    return Ok(None)


def _fields_append(state: WasiState, f: Fields, name: str, value: bytes) -> Any:
    if not f.mutable:
        return Err(Variant("immutable"))
    error = _header_error(name, value)
    if error is not None:
        return Err(error)
    f.entries.append((name.lower(), bytes(value)))
    return Ok(None)


def _fields_entries(state: WasiState, f: Fields) -> list[tuple[str, bytes]]:
    return list(f.entries)


def _fields_clone(state: WasiState, f: Fields) -> Fields:
    return Fields(list(f.entries))


# -- the incoming request -----------------------------------------------------------------


@resource(TYPES_INTERFACE, "incoming-request")
class IncomingRequest(HostResource):
    def __init__(
        self,
        method: str,
        path_with_query: str | None,
        scheme: str | None,
        authority: str | None,
        headers: Headers,
        body: ByteSource,
    ) -> None:
        self.method = method
        self.path_with_query = path_with_query
        self.scheme = scheme
        self.authority = authority
        self.headers = headers
        self.body = body
        self.consumed = False


@resource(TYPES_INTERFACE, "incoming-body")
class IncomingBody(HostResource):
    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.streamed = False


@resource(TYPES_INTERFACE, "future-trailers")
class FutureTrailers(HostResource):
    def __init__(self) -> None:
        self.taken = False


def method_variant(method: str) -> Variant:
    case = _METHODS.get(method.upper())
    return Variant(case) if case is not None else Variant("other", method)


def scheme_variant(scheme: str | None) -> Variant | None:
    if scheme is None:
        return None
    lower = scheme.lower()
    if lower == "http":
        return Variant("HTTP")
    if lower == "https":
        return Variant("HTTPS")
    return Variant("other", scheme)


def _request_method(state: WasiState, r: IncomingRequest) -> Variant:
    return method_variant(r.method)


def _request_path(state: WasiState, r: IncomingRequest) -> str | None:
    return r.path_with_query


def _request_scheme(state: WasiState, r: IncomingRequest) -> Variant | None:
    return scheme_variant(r.scheme)


def _request_authority(state: WasiState, r: IncomingRequest) -> str | None:
    return r.authority


def _request_headers(state: WasiState, r: IncomingRequest) -> Fields:
    return Fields(r.headers, mutable=False)


def _request_consume(state: WasiState, r: IncomingRequest) -> Ok[IncomingBody] | Err[None]:
    if r.consumed:
        return Err(None)
    r.consumed = True
    return Ok(IncomingBody(r.body))


def _body_stream(state: WasiState, b: IncomingBody) -> Ok[InputStream] | Err[None]:
    if b.streamed:
        return Err(None)
    b.streamed = True
    return Ok(InputStream(b.source))


def _body_finish(state: WasiState, b: IncomingBody) -> FutureTrailers:
    return FutureTrailers()


def _trailers_subscribe(state: WasiState, t: FutureTrailers) -> Pollable:
    return Pollable(ALWAYS)


def _trailers_get(state: WasiState, t: FutureTrailers) -> Any:
    """`some(ok(ok(none)))` once — there are no trailers — then `some(err)`."""
    if t.taken:
        return Err(None)
    t.taken = True
    return Ok(Ok(None))


# -- the outgoing response ----------------------------------------------------------------


@resource(TYPES_INTERFACE, "outgoing-body")
class OutgoingBody(HostResource):
    def __init__(self) -> None:
        self.pipe = Pipe()
        self.stream_taken = False

    def on_drop(self) -> None:  # dropped, not finished: the response is incomplete
        self.pipe.finish(error="the component dropped the response body without finishing it")


@resource(TYPES_INTERFACE, "outgoing-response")
class OutgoingResponse(HostResource):
    def __init__(self, headers: Fields) -> None:
        headers.mutable = False
        self.headers = headers
        self.status = 200
        self.body: OutgoingBody | None = None


@resource(TYPES_INTERFACE, "response-outparam")
class ResponseOutparam(HostResource):
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange


def _response_new(state: WasiState, headers: Fields) -> OutgoingResponse:
    return OutgoingResponse(headers)


def _response_status(state: WasiState, r: OutgoingResponse) -> int:
    return r.status


def _response_set_status(state: WasiState, r: OutgoingResponse, status: int) -> Any:
    if not 100 <= status <= 999:
        return Err(None)
    r.status = status
    return Ok(None)


def _response_headers(state: WasiState, r: OutgoingResponse) -> Fields:
    return r.headers.frozen()


def _response_body(state: WasiState, r: OutgoingResponse) -> Ok[OutgoingBody] | Err[None]:
    if r.body is not None:
        return Err(None)
    r.body = OutgoingBody()
    return Ok(r.body)


def _outgoing_body_write(state: WasiState, b: OutgoingBody) -> Ok[OutputStream] | Err[None]:
    if b.stream_taken:
        return Err(None)
    b.stream_taken = True
    return Ok(OutputStream(b.pipe))


def _outgoing_body_finish(state: WasiState, b: OutgoingBody, trailers: Fields | None) -> Any:
    b.pipe.finish()  # trailers are accepted and ignored
    return Ok(None)


def _outparam_set(state: WasiState, out: ResponseOutparam, response: Ok[Any] | Err[Any]) -> None:
    if isinstance(response, Ok):
        resp: OutgoingResponse = response.value
        if resp.body is None:  # body() was never asked for: the body is empty
            resp.body = OutgoingBody()
            resp.body.pipe.finish()
        out.exchange.respond(resp.status, list(resp.headers.entries), resp.body.pipe)
    else:
        out.exchange.fail(f"the component answered with error {_describe(response.value)}")


def _describe(code: Any) -> str:
    if isinstance(code, Variant):
        return code.tag if code.payload is None else f"{code.tag}({code.payload!r})"
    return repr(code)


def _http_error_code(state: WasiState, err: IoError) -> None:
    return None


# -- outgoing requests (allowed per component: host.wasi.outgoing) ---------------------


@resource(TYPES_INTERFACE, "outgoing-request")
class OutgoingRequest(HostResource):
    def __init__(self, headers: Fields) -> None:
        self.headers = headers.frozen()
        self.method = "GET"
        self.path_with_query: str | None = None
        self.scheme: str | None = None
        self.authority: str | None = None
        self.body: OutgoingBody | None = None


@resource(TYPES_INTERFACE, "request-options")
class RequestOptions(HostResource):
    def __init__(self) -> None:
        self.timeouts: dict[str, int | None] = {
            "connect": None,
            "first-byte": None,
            "between": None,
        }


@resource(TYPES_INTERFACE, "incoming-response")
class IncomingResponse(HostResource):
    def __init__(self, response: outgoing.Response) -> None:
        self.response = response
        self.consumed = False

    def on_drop(self) -> None:  # never consumed: a streaming body is not wanted
        if not self.consumed and not isinstance(self.response.body, bytes):
            self.response.body.close_reader()


class StreamedResponseBody(IncomingBody):
    """A response body streaming in from a provider: dropping it unread ends the stream."""

    def on_drop(self) -> None:
        if not self.streamed:
            self.source.close_reader()


@resource(TYPES_INTERFACE, "future-incoming-response")
class FutureIncomingResponse(HostResource):
    """Ready at once when the host sent the request itself inside `handle`; with
    `pending` (a linked provider's exchange) ready when its response head arrives."""

    def __init__(
        self,
        result: IncomingResponse | Variant | None,
        pending: outgoing_link.Pending | None = None,
    ) -> None:
        self.result: IncomingResponse | Variant | None = result
        self.pending = pending
        self.readiness = ALWAYS if pending is None else self._watch(pending)

    def _watch(self, pending: outgoing_link.Pending) -> Condition:
        signal = Signal()
        pending.head.add_done_callback(lambda _f: signal.notify())
        return Condition(pending.head.done, signal)

    def take(self) -> IncomingResponse | Variant | None:
        """The answer once it is there (and only once: None afterwards)."""
        if self.pending is not None:
            if not self.pending.head.done():
                return None
            answer = self.pending.head.result()
            self.pending = None
            self.result = (
                IncomingResponse(answer) if isinstance(answer, outgoing.Response) else answer
            )
        result, self.result = self.result, None
        return result

    def on_drop(self) -> None:  # dropped before its answer: the exchange is abandoned
        if self.pending is not None and not self.pending.head.done():
            self.pending.cancel()


def _out_new(state: WasiState, headers: Fields) -> OutgoingRequest:
    return OutgoingRequest(headers)


def _out_body(state: WasiState, r: OutgoingRequest) -> Ok[OutgoingBody] | Err[None]:
    if r.body is not None:
        return Err(None)
    r.body = OutgoingBody()
    return Ok(r.body)


def _out_method(state: WasiState, r: OutgoingRequest) -> Variant:
    return method_variant(r.method)


def _out_set_method(state: WasiState, r: OutgoingRequest, m: Variant) -> Ok[None]:
    r.method = str(m.payload) if m.tag == "other" else m.tag.upper()
    return Ok(None)


def _out_path(state: WasiState, r: OutgoingRequest) -> str | None:
    return r.path_with_query


def _out_set_path(state: WasiState, r: OutgoingRequest, p: str | None) -> Ok[None]:
    r.path_with_query = p
    return Ok(None)


def _out_scheme(state: WasiState, r: OutgoingRequest) -> Variant | None:
    return scheme_variant(r.scheme)


def _out_set_scheme(state: WasiState, r: OutgoingRequest, v: Variant | None) -> Ok[None]:
    r.scheme = None if v is None else (str(v.payload) if v.tag == "other" else v.tag.lower())
    return Ok(None)


def _out_authority(state: WasiState, r: OutgoingRequest) -> str | None:
    return r.authority


def _out_set_authority(state: WasiState, r: OutgoingRequest, a: str | None) -> Ok[None]:
    r.authority = a
    return Ok(None)


def _out_headers(state: WasiState, r: OutgoingRequest) -> Fields:
    return r.headers.frozen()


def _options_new(state: WasiState) -> RequestOptions:
    return RequestOptions()


def _option_getter(key: str) -> Callable[..., int | None]:
    def get(state: WasiState, o: RequestOptions) -> int | None:
        return o.timeouts[key]

    return get


def _option_setter(key: str) -> Callable[..., Ok[None]]:
    def set_(state: WasiState, o: RequestOptions, ns: int | None) -> Ok[None]:
        o.timeouts[key] = ns
        return Ok(None)

    return set_


def _outgoing_handle(
    state: WasiState, request: OutgoingRequest, options: RequestOptions | None
) -> Ok[FutureIncomingResponse] | Err[Variant]:
    """Send the request if the component may reach its host (else HTTP-request-denied);
    through the linked provider when its outgoing-handler import is linked."""
    if not request.authority:
        return Err(Variant("HTTP-request-URI-invalid"))
    scheme = request.scheme or "https"
    host, port = http_out.split_authority(request.authority, scheme)
    policy = state.outgoing
    if isinstance(policy, outgoing_link.LinkedOutgoing) and (link := policy.route()) is not None:
        if policy.egress is not None and not policy.egress(host, port):  # its `egress` list
            log.info("outgoing HTTP denied by policy", authority=request.authority)
            return Err(Variant("HTTP-request-denied"))
        return Ok(_linked_handle(state, policy, link, request, options, scheme))
    if policy is None or not policy(host, port):
        log.info("outgoing HTTP denied", authority=request.authority)
        return Err(Variant("HTTP-request-denied"))
    try:  # a path such as "@other.host/" must not reach a host the allowlist never saw
        url = http_out.url_of(scheme, request.authority, request.path_with_query or "/")
    except ValueError as exc:
        log.info("outgoing HTTP refused", authority=request.authority, reason=str(exc))
        return Err(Variant("HTTP-request-URI-invalid"))
    body = b""
    if request.body is not None:
        pipe = request.body.pipe
        parts = []
        while (chunk := pipe.read(WRITE_BUDGET)) is not None and chunk:
            parts.append(chunk)
        body = b"".join(parts)
    timeout = outgoing.DEFAULT_TIMEOUT
    if state.deadline is not None:
        timeout = max(0.1, min(timeout, state.deadline - time.monotonic()))
    if options is not None and options.timeouts["first-byte"]:
        timeout = min(timeout, options.timeouts["first-byte"] / 1e9)
    with state.blocking():
        result = outgoing.send(request.method, url, list(request.headers.entries), body, timeout)
    if isinstance(result, outgoing.Response):
        return Ok(FutureIncomingResponse(IncomingResponse(result)))
    return Ok(FutureIncomingResponse(result))


def _linked_handle(
    state: WasiState,
    linked: outgoing_link.LinkedOutgoing,
    link: Any,
    request: OutgoingRequest,
    options: RequestOptions | None,
    scheme: str,
) -> FutureIncomingResponse:
    """Hand the request to the link's provider; the body streams as the guest writes it."""
    timeouts = options.timeouts if options is not None else {}
    spec = outgoing_link.Request(
        method=request.method,
        scheme=scheme,
        authority=str(request.authority),
        path=request.path_with_query or "/",
        headers=list(request.headers.entries),
        connect_ns=timeouts.get("connect"),
        first_byte_ns=timeouts.get("first-byte"),
        between_bytes_ns=timeouts.get("between"),
    )
    body = request.body.pipe if request.body is not None else None
    return FutureIncomingResponse(None, linked.send(link, spec, body, state.deadline))


def _future_subscribe(state: WasiState, f: FutureIncomingResponse) -> Pollable:
    return Pollable(f.readiness)


def _future_get(state: WasiState, f: FutureIncomingResponse) -> Any:
    """`none` while pending; `some(ok(ok(response)))` or `some(ok(err(code)))` once,
    then `some(err)`."""
    if f.pending is not None and not f.pending.head.done():
        return None
    result = f.take()
    if result is None:
        return Err(None)
    return Ok(Ok(result)) if isinstance(result, IncomingResponse) else Ok(Err(result))


def _in_status(state: WasiState, r: IncomingResponse) -> int:
    return r.response.status


def _in_headers(state: WasiState, r: IncomingResponse) -> Fields:
    return Fields(list(r.response.headers), mutable=False)


def _in_consume(state: WasiState, r: IncomingResponse) -> Ok[IncomingBody] | Err[None]:
    if r.consumed:
        return Err(None)
    r.consumed = True
    data = r.response.body
    if not isinstance(data, bytes):  # streaming in from a provider
        return Ok(StreamedResponseBody(data))
    step = WRITE_BUDGET
    return Ok(IncomingBody(IterSource(data[i : i + step] for i in range(0, len(data), step))))


TYPES = Interface(
    TYPES_INTERFACE,
    resources=(
        Fields,
        IncomingRequest,
        OutgoingRequest,
        RequestOptions,
        ResponseOutparam,
        IncomingResponse,
        IncomingBody,
        FutureTrailers,
        OutgoingResponse,
        OutgoingBody,
        FutureIncomingResponse,
    ),
    functions={
        "http-error-code": _http_error_code,
        "[constructor]fields": _fields_new,
        "[static]fields.from-list": _fields_from_list,
        "[method]fields.get": _fields_get,
        "[method]fields.has": _fields_has,
        "[method]fields.set": _fields_set,
        "[method]fields.delete": _fields_delete,
        "[method]fields.append": _fields_append,
        "[method]fields.entries": _fields_entries,
        "[method]fields.clone": _fields_clone,
        "[method]incoming-request.method": _request_method,
        "[method]incoming-request.path-with-query": _request_path,
        "[method]incoming-request.scheme": _request_scheme,
        "[method]incoming-request.authority": _request_authority,
        "[method]incoming-request.headers": _request_headers,
        "[method]incoming-request.consume": _request_consume,
        "[method]incoming-body.stream": _body_stream,
        "[static]incoming-body.finish": _body_finish,
        "[method]future-trailers.subscribe": _trailers_subscribe,
        "[method]future-trailers.get": _trailers_get,
        "[constructor]outgoing-response": _response_new,
        "[method]outgoing-response.status-code": _response_status,
        "[method]outgoing-response.set-status-code": _response_set_status,
        "[method]outgoing-response.headers": _response_headers,
        "[method]outgoing-response.body": _response_body,
        "[method]outgoing-body.write": _outgoing_body_write,
        "[static]outgoing-body.finish": _outgoing_body_finish,
        "[static]response-outparam.set": _outparam_set,
        "[constructor]outgoing-request": _out_new,
        "[method]outgoing-request.body": _out_body,
        "[method]outgoing-request.method": _out_method,
        "[method]outgoing-request.set-method": _out_set_method,
        "[method]outgoing-request.path-with-query": _out_path,
        "[method]outgoing-request.set-path-with-query": _out_set_path,
        "[method]outgoing-request.scheme": _out_scheme,
        "[method]outgoing-request.set-scheme": _out_set_scheme,
        "[method]outgoing-request.authority": _out_authority,
        "[method]outgoing-request.set-authority": _out_set_authority,
        "[method]outgoing-request.headers": _out_headers,
        "[constructor]request-options": _options_new,
        "[method]request-options.connect-timeout": _option_getter("connect"),
        "[method]request-options.set-connect-timeout": _option_setter("connect"),
        "[method]request-options.first-byte-timeout": _option_getter("first-byte"),
        "[method]request-options.set-first-byte-timeout": _option_setter("first-byte"),
        "[method]request-options.between-bytes-timeout": _option_getter("between"),
        "[method]request-options.set-between-bytes-timeout": _option_setter("between"),
        "[method]future-incoming-response.subscribe": _future_subscribe,
        "[method]future-incoming-response.get": _future_get,
        "[method]incoming-response.status": _in_status,
        "[method]incoming-response.headers": _in_headers,
        "[method]incoming-response.consume": _in_consume,
    },
)

OUTGOING_HANDLER = Interface("wasi:http/outgoing-handler", functions={"handle": _outgoing_handle})

INTERFACES = (TYPES, OUTGOING_HANDLER)


# -- one request/response -----------------------------------------------------------------


@dataclass(frozen=True)
class ResponseHead:
    status: int
    headers: Headers
    body: Pipe


def error_head(status: int = 500) -> ResponseHead:
    pipe = Pipe()
    pipe.write(ERROR_BODY)
    pipe.finish()
    return ResponseHead(status, [("content-type", b"text/plain; charset=utf-8")], pipe)


class Exchange:
    """One request and its response, between `serve_request` and the worker running it.

    `head` resolves once: with the component's response head, or with a 500 when the
    handler failed first. `failure` is the reason the handler failed, if it did.
    """

    def __init__(self, request: IncomingRequest) -> None:
        self.request = request
        self.head: concurrent.futures.Future[ResponseHead] = concurrent.futures.Future()
        self.failure: str | None = None

    def respond(self, status: int, headers: Headers, body: Pipe) -> None:
        if self.head.done():
            raise WasmtimeError("the response was already set")
        self.head.set_result(ResponseHead(status, headers, body))

    def fail(self, reason: str) -> None:
        """The handler failed: a 500 if nothing was sent yet, else a broken body."""
        if self.failure is None:
            self.failure = reason
        if not self.head.done():
            self.head.set_result(error_head())
        else:
            self.head.result().body.finish(error=reason)
        self.request.body.close_reader()

    @property
    def client_gone(self) -> bool:
        """Whether the client left mid-exchange: its request body's sender went away,
        or whoever reads the response stopped reading it. A guest failing to read or
        write then is not its bug."""
        if getattr(self.request.body, "error", None) == CALLER_GONE:
            return True  # the request body's sender left
        return self.head.done() and self.head.result().body.reader_gone

    def complete(self) -> None:
        """The handler returned: anything it left unfinished is an error."""
        if not self.head.done():
            self.fail("the component returned without setting a response")
        elif not self.head.result().body.finished:
            self.fail("the component returned without finishing the response body")
        self.request.body.close_reader()


def handler_export(engine: wasmtime.Engine, component: Component) -> tuple[str, str] | None:
    """(instance export name, function) of the component's incoming handler, if any."""
    for name in component.type.exports(engine):
        if name.partition("@")[0] == HANDLER_INTERFACE:
            return name, "handle"
    return None


def run_handler(
    store: wasmtime.Store,
    handle: BoundFunc,
    exchange: Exchange,
    explain: Callable[[BaseException], str] | None = None,
) -> None:
    """Call `handle(request, response-out)` on this (worker) thread; blocking.

    The caller has set the store's epoch deadline and `WasiState.deadline`. A failure is
    re-raised after the exchange was failed with `explain(exc)` (default: the last line
    of the error); the instance must then be discarded.
    """
    state = state_of(store)
    request = lower_own(state, exchange.request)
    outparam = lower_own(state, ResponseOutparam(exchange))
    try:
        handle.call(store, request, outparam)
    except BaseException as exc:
        exchange.fail(explain(exc) if explain is not None else last_line(exc))
        raise
    exchange.complete()


def last_line(exc: BaseException) -> str:
    """The last line of an error (wasmtime puts the reason after the backtrace)."""
    text = str(exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__


# -- serving ------------------------------------------------------------------------------


class ExchangeRunner(Protocol):
    """Something that runs `handle` for an exchange off the event loop (`WasiPool`,
    `WasiInstance`). Called on the event loop; raises when it cannot take the request."""

    def start_exchange(self, exchange: Exchange) -> None: ...


class HttpResponse(NamedTuple):
    status: int
    headers: Headers
    body: AsyncIterator[bytes]


Body = bytes | Iterable[bytes] | AsyncIterable[bytes] | None


def _request_source(body: Body) -> tuple[ByteSource, Callable[[], Any] | None]:
    """The body as a byte source, and (for async iterables) the feeder to start."""
    if body is None or body == b"":
        return EmptySource(), None
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        pieces = (data[i : i + WRITE_BUDGET] for i in range(0, len(data), WRITE_BUDGET))
        return IterSource(pieces), None
    if isinstance(body, AsyncIterable):
        pipe = Pipe()

        async def feed() -> None:
            try:
                async for chunk in body:
                    view = memoryview(bytes(chunk))
                    while view:
                        await pipe.wait_writable()
                        piece, view = view[:WRITE_BUDGET], view[WRITE_BUDGET:]
                        pipe.write(bytes(piece))
            except StreamClosed:
                return  # the component stopped reading
            except (CallerGone, ConnectionError):  # its sender's connection broke
                pipe.finish(error=CALLER_GONE)
            except Exception as exc:
                pipe.finish(error=f"request body failed: {type(exc).__name__}: {exc}")
            else:
                pipe.finish()

        return pipe, feed
    return IterSource(body), None


def _request_headers_and_authority(
    headers: Iterable[tuple[str, str | bytes]] | Mapping[str, str | bytes],
    authority: str | None,
) -> tuple[Headers, str | None]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: Headers = []
    for name, value in items:
        key = name.lower()
        raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        if key == "host":
            authority = authority or raw.decode("latin-1")
        elif key not in FORBIDDEN_HEADERS:
            out.append((key, raw))
    return out, authority


async def serve_request(
    target: ExchangeRunner,
    method: str,
    path_with_query: str,
    scheme: str | None = "http",
    authority: str | None = None,
    headers: Iterable[tuple[str, str | bytes]] | Mapping[str, str | bytes] = (),
    body: Body = None,
) -> HttpResponse:
    """Serve one HTTP request with a component's `wasi:http/incoming-handler`.

    Returns as soon as the component has set its response: `(status, headers, body)`,
    where `body` is an async iterator of chunks (each at most 64 KiB) that streams while
    the component is still writing. Iterate it to the end, or `aclose()` it to abandon
    the response (the component then sees its output stream closed). A component that
    fails before responding gives a 500; one that fails mid-body makes the iterator
    raise `ResponseBodyError`. Raises what `target` raises when it cannot take the
    request at all (e.g. `PoolClosed`, `InvocationError` when overloaded).
    """
    hdrs, authority = _request_headers_and_authority(headers, authority)
    sources: list[ByteSource] = []
    feeder: asyncio.Future[None] | None = None
    exchange: Exchange | None = None

    def new_exchange() -> Exchange:
        nonlocal feeder
        source, feed = _request_source(body)
        sources.append(source)
        if feed is not None:
            feeder = asyncio.ensure_future(feed())
        return Exchange(IncomingRequest(method, path_with_query, scheme, authority, hdrs, source))

    try:
        on_loop = getattr(target, "serve_on_loop", None)
        if on_loop is not None and (body is None or isinstance(body, bytes | bytearray)):
            # a request held whole can be made again: for its run on a worker after a stop
            exchange = on_loop(new_exchange)
        if exchange is None:
            exchange = new_exchange()
            target.start_exchange(exchange)
        if exchange.head.done():  # served on the loop
            head = exchange.head.result()
        else:
            head = await asyncio.wrap_future(exchange.head)
    except BaseException:
        for source in sources:
            source.close_reader()
        if feeder is not None:
            feeder.cancel()
        if exchange is not None:
            exchange.head.add_done_callback(_abandon)
        raise
    whole = head.body.take_whole() if feeder is None else None
    if whole is not None:
        return HttpResponse(head.status, head.headers, WholeBody(whole))
    return HttpResponse(head.status, head.headers, _stream(head.body, feeder))


class WholeBody:
    """A response body the component had finished by the time it responded (an exchange
    on the loop always has): an async iterator of its one chunk (none when empty), and
    `whole`, for a server to send in one write with its length."""

    def __init__(self, whole: bytes) -> None:
        self.whole = whole
        self._sent = not whole

    def __aiter__(self) -> WholeBody:
        return self

    async def __anext__(self) -> bytes:
        if self._sent:
            raise StopAsyncIteration
        self._sent = True
        return self.whole

    async def aclose(self) -> None:
        self._sent = True


def _abandon(head: concurrent.futures.Future[ResponseHead]) -> None:
    with contextlib.suppress(Exception):
        head.result().body.close_reader()


async def _stream(pipe: Pipe, feeder: asyncio.Future[None] | None) -> AsyncIterator[bytes]:
    """The response body. The request feeder stops by itself when the handler ends (its
    pipe's reader closes); it is cancelled here only if the response is abandoned."""
    complete = False
    try:
        while True:
            try:
                chunk = await pipe.aread_chunk()
            except StreamFailure as exc:
                raise ResponseBodyError(str(exc)) from None
            if chunk is None:
                complete = True
                return
            yield chunk
    finally:
        pipe.close_reader()
        if not complete and feeder is not None and not feeder.done():
            feeder.cancel()


async def read_body(body: AsyncIterator[bytes]) -> bytes:
    """The whole body of a response (for tests and small responses)."""
    return b"".join([chunk async for chunk in body])
