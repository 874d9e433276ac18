"""fetch_http: a standard `wasi:http/proxy` component that makes one outgoing request.

`GET /?url=http://host:port/path` fetches the URL with `wasi:http/outgoing-handler` and
answers 200 with the upstream body and `x-upstream-status`; when the host refuses the
request (outgoing HTTP is denied unless the component's config allows the host) it
answers 502 naming the error code (and its text, for `internal-error`).

`POST /?url=…` sends the request body on upstream as it arrives, while the outgoing
request is in flight, and streams the upstream body back as it comes (neither is held
whole), with the upstream's `x-*` headers: the streaming case of both directions.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import poll_loop
from componentize_py_types import Err, Ok
from poll_loop import PollLoop, Sink, Stream
from wit_world import exports
from wit_world.imports import outgoing_handler
from wit_world.imports.types import (
    Fields,
    FutureIncomingResponse,
    IncomingRequest,
    IncomingResponse,
    Method_Get,
    Method_Post,
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
    post = isinstance(request.method(), Method_Post)
    out = OutgoingRequest(Fields.from_list([]))
    out.set_method(Method_Post() if post else Method_Get())
    out.set_scheme(Scheme_Https() if target.scheme == "https" else Scheme_Http())
    out.set_authority(target.netloc)
    out.set_path_with_query((target.path or "/") + (f"?{target.query}" if target.query else ""))
    out_body = out.body() if post else None
    # handle() first, then the upload, then wait: componentize-py's PollLoop blocks in
    # poll() while any waker is pending, so a concurrent send task would never start.
    try:
        future = outgoing_handler.handle(out, None)
    except Err as err:  # refused at once (the host's own allowlist)
        await refused(response_out, err)
        return
    if out_body is not None:
        try:  # upload while the request is in flight; a refusal closes our stream
            sink = Sink(out_body)
            incoming = Stream(request.consume())
            while (chunk := await incoming.next()) is not None:
                await sink.send(chunk)
            sink.close()
        except Err:
            pass  # the outcome is in `future`
    try:
        upstream = await response_of(future)
    except Err as err:
        await refused(response_out, err)
        return
    status = upstream.status()
    headers = [(k, v) for k, v in upstream.headers().entries() if k.startswith("x-")]
    response = OutgoingResponse(
        Fields.from_list(
            [
                ("content-type", b"text/plain; charset=utf-8"),
                ("x-upstream-status", str(status).encode()),
                *headers,
            ]
        )
    )
    response.set_status_code(200)
    response_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    sink = Sink(response_body)
    stream = Stream(upstream.consume())
    while (chunk := await stream.next()) is not None:
        await sink.send(chunk)
    sink.close()


async def refused(response_out: ResponseOutparam, err: Err) -> None:
    """502 naming the error code, and its text when it has one (internal-error)."""
    code = err.value
    detail = getattr(code, "value", None)
    text = f"refused: {type(code).__name__}" + (f": {detail}" if detail else "")
    await respond(response_out, 502, [], text.encode())


async def response_of(future: FutureIncomingResponse) -> IncomingResponse:
    """The response once the host has it (poll_loop.send without the handle call)."""
    while (answer := future.get()) is None:
        await poll_loop.register(asyncio.get_event_loop(), future.subscribe())
    if isinstance(answer, Ok) and isinstance(answer.value, Ok):
        return answer.value.value
    raise answer.value if isinstance(answer, Ok) else answer


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
