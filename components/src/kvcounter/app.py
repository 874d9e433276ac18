"""kvcounter: an HTTP component that counts requests per path in wasi:keyvalue.

Built with componentize-py against `components/wit-kvcounter/` (world
`lattice:kvcounter/kvcounter-world`: the standard `wasi:http/proxy@0.2.12` world plus
`wasi:keyvalue/store` and `atomics` imports). Served by the host's Python WASI layer;
the keyvalue imports are forwarded over the lattice to whatever provider the component
is linked to (e.g. keyvalue-redis).

Every request increments the key named by the request path (without the query; `/`
counts under `count`) by 1 in bucket `""` and answers 200 `text/plain` with the new
count as ASCII decimal. A keyvalue error answers 500 with the error text.
"""

from __future__ import annotations

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, store
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

DEFAULT_BUCKET = ""
DEFAULT_KEY = "count"


def error_text(err: store.Error) -> str:
    if isinstance(err, store.Error_NoSuchStore):
        return "no-such-store"
    if isinstance(err, store.Error_AccessDenied):
        return "access-denied"
    if isinstance(err, store.Error_Other):
        return err.value
    return repr(err)


def key_for(path_with_query: str | None) -> str:
    path = (path_with_query or "/").split("?", 1)[0]
    return path if path not in ("", "/") else DEFAULT_KEY


def respond(response_out: ResponseOutparam, status: int, body: bytes) -> None:
    headers = Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    response_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    stream = response_body.write()
    stream.blocking_write_and_flush(body)
    stream.__exit__(None, None, None)
    OutgoingBody.finish(response_body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        key = key_for(request.path_with_query())
        try:
            with store.open(DEFAULT_BUCKET) as bucket:
                count = atomics.increment(bucket, key, 1)
        except Err as e:
            respond(response_out, 500, f"keyvalue error: {error_text(e.value)}\n".encode())
            return
        respond(response_out, 200, str(count).encode())
