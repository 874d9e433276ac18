"""A real OTLP/HTTP trace receiver for tests: aiohttp on a free loopback port.

It answers `POST /v1/traces` as a collector does (protobuf `ExportTraceServiceRequest`
in, `ExportTraceServiceResponse` out, gzip accepted) and keeps every span it decoded,
flattened with its resource's attributes, so a test can follow parent/child ids.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

SERVER = PbSpan.SpanKind.SPAN_KIND_SERVER
CLIENT = PbSpan.SpanKind.SPAN_KIND_CLIENT


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


@dataclass(frozen=True)
class Received:
    """One span as the receiver got it (ids as hex, as in a traceparent)."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        self.requests += 1
        for rs in req.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        Received(
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            resource=resource,
                            status_code=s.status.code,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def wait_for(self, check: Any, timeout: float = 10.0) -> list[Received]:
        """The spans once `check(spans)` holds; fails naming what did arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check(self.spans):
            if loop.time() > deadline:
                got = [(s.name, s.resource.get("service.name")) for s in self.spans]
                raise AssertionError(f"spans never complete within {timeout}s; got {got}")
            await asyncio.sleep(0.1)
        return list(self.spans)
