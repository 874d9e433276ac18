"""hello_http: a standard `wasi:http/proxy` component, for the host-side WASI layer.

Built with componentize-py against the unmodified WASI 0.2.12 WIT in
`components/wit-proxy/` (world `wasi:http/proxy@0.2.12`), using componentize-py's own
bindings and its `poll_loop` helpers (an asyncio loop over `wasi:io/poll`), so the same
file runs under `wasmtime serve` and under the Lattice host's Python WASI layer.

Routes:

* `GET /`      → 200 `hello from python`, with `x-hello: lattice` and a content type.
* `POST /echo` → 200 with the request body streamed back chunk by chunk (never buffered
  whole: each chunk read from the request is written to the response before the next
  is read), echoing the request's content type.
* `GET /info`  → 200 JSON: method, path with query, scheme, authority and headers.
* `GET /trap`  → raises, which traps the instance; the host answers 500.
* anything else → 404.
"""

from __future__ import annotations

import asyncio
import json

import poll_loop
from componentize_py_types import Ok
from poll_loop import PollLoop, Sink, Stream
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method,
    Method_Get,
    Method_Other,
    Method_Post,
    OutgoingResponse,
    ResponseOutparam,
    Scheme,
    Scheme_Http,
    Scheme_Https,
    Scheme_Other,
)

# Read the request body in chunks of up to 64 KiB (poll_loop's default is 16 KiB).
poll_loop.READ_SIZE = 64 * 1024


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        loop = PollLoop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(route(request, response_out))


async def route(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    method = request.method()
    path = request.path_with_query() or "/"
    if isinstance(method, Method_Get) and path == "/":
        await respond(response_out, 200, [("x-hello", b"lattice")], b"hello from python")
    elif isinstance(method, Method_Post) and path == "/echo":
        await echo(request, response_out)
    elif isinstance(method, Method_Get) and path.startswith("/info"):
        info = {
            "method": method_name(method),
            "path": path,
            "scheme": scheme_name(request.scheme()),
            "authority": request.authority(),
            "headers": [[k, v.decode("latin-1")] for k, v in request.headers().entries()],
        }
        body = json.dumps(info).encode()
        await respond(response_out, 200, [("content-type", b"application/json")], body)
    elif path == "/trap":
        raise RuntimeError("trap requested by GET /trap")
    else:
        await respond(response_out, 404, [], b"not found")


async def respond(
    response_out: ResponseOutparam, status: int, headers: list[tuple[str, bytes]], body: bytes
) -> None:
    fields = headers
    if not any(name == "content-type" for name, _ in headers):
        fields = [("content-type", b"text/plain; charset=utf-8"), *headers]
    response = OutgoingResponse(Fields.from_list(fields))
    response.set_status_code(status)
    response_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    sink = Sink(response_body)
    await sink.send(body)
    sink.close()


async def echo(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    content_type = [(k, v) for k, v in request.headers().entries() if k == "content-type"]
    response = OutgoingResponse(Fields.from_list(content_type))
    response_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    stream = Stream(request.consume())
    sink = Sink(response_body)
    while True:
        chunk = await stream.next()
        if chunk is None:
            break
        await sink.send(chunk)
    sink.close()


def method_name(method: Method) -> str:
    if isinstance(method, Method_Other):
        return method.value
    return type(method).__name__.removeprefix("Method_").upper()


def scheme_name(scheme: Scheme | None) -> str | None:
    if scheme is None:
        return None
    if isinstance(scheme, Scheme_Http):
        return "http"
    if isinstance(scheme, Scheme_Https):
        return "https"
    if isinstance(scheme, Scheme_Other):
        return scheme.value
    return None
