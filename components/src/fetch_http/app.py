"""fetch_http: a standard `wasi:http/proxy` component that makes one outgoing request.

`GET /?url=http://host:port/path` fetches the URL with `wasi:http/outgoing-handler` and
answers 200 with the upstream body and `x-upstream-status`; when the host refuses the
request (outgoing HTTP is denied unless the component's config allows the host) it
answers 502 naming the error code.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import poll_loop
from componentize_py_types import Err, Ok
from poll_loop import PollLoop, Sink, Stream
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        loop = PollLoop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fetch(request, response_out))


async def fetch(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    query = parse_qs(urlsplit(request.path_with_query() or "/").query)
    target = urlsplit(query.get("url", [""])[0])
    if not target.netloc:
        await respond(response_out, 400, [], b"pass ?url=http://host:port/path")
        return
    out = OutgoingRequest(Fields.from_list([]))
    out.set_method(Method_Get())
    out.set_scheme(Scheme_Https() if target.scheme == "https" else Scheme_Http())
    out.set_authority(target.netloc)
    out.set_path_with_query((target.path or "/") + (f"?{target.query}" if target.query else ""))
    try:
        upstream = await poll_loop.send(out)
    except Err as err:
        await respond(response_out, 502, [], f"refused: {type(err.value).__name__}".encode())
        return
    status = upstream.status()
    stream = Stream(upstream.consume())
    chunks = []
    while (chunk := await stream.next()) is not None:
        chunks.append(chunk)
    await respond(
        response_out, 200, [("x-upstream-status", str(status).encode())], b"".join(chunks)
    )


async def respond(
    response_out: ResponseOutparam, status: int, headers: list[tuple[str, bytes]], body: bytes
) -> None:
    response = OutgoingResponse(
        Fields.from_list([("content-type", b"text/plain; charset=utf-8"), *headers])
    )
    response.set_status_code(status)
    response_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    sink = Sink(response_body)
    await sink.send(body)
    sink.close()
