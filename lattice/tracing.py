"""OpenTelemetry traces: W3C trace context in NATS headers, spans exported over OTLP/HTTP.

Off unless an endpoint is given (`lattice up --otlp-endpoint`, a provider's start-up
data). Off means off: the call path holds `None` where it would hold a `Tracing`, pays
one `is None` check per call, reads no header, adds no `traceparent`, and the
OpenTelemetry SDK is not even imported (it costs ~0.1 s).

On, each process (host or provider) has its own `TracerProvider` (several hosts may
share a test process; the global provider is never set). Spans are created and ended on
the process's event loop — the wasm worker threads only carry the parent context along
— and a `BatchSpanProcessor` exports them from its own thread, so neither the loop nor a
worker waits on the collector. A collector that is down costs dropped spans, never a
failed or slower call. Which spans exist and their attributes: docs/operations.md.

The trace context is the W3C one (`traceparent`, `tracestate`), extracted from and
injected into NATS message headers with OpenTelemetry's own propagator. A span carries
identities only (lattice, host, component, provider, link name, function, outcome),
never arguments, config values, error messages or credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from lattice.protocol.invocation import ERROR_HEADER, TRACEPARENT_HEADER

TRACESTATE_HEADER = "tracestate"
TRACES_PATH = "/v1/traces"
SCHEDULE_DELAY_MS = 500  # how long a finished span may wait to be batched
EXPORT_TIMEOUT_S = 5.0  # one export to the collector; it runs in the processor's thread

log = structlog.get_logger("lattice.tracing")

Done = Callable[[Any, Any], None]  # (result, InvocationError | None), as the pool calls it


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for `--otlp-endpoint` (ValueError naming the problem).

    A base URL (`http://collector:4318`) gets `/v1/traces`, as OTEL_EXPORTER_OTLP_ENDPOINT
    does; a URL already ending in it is used as it is. Credentials belong in
    OTEL_EXPORTER_OTLP_HEADERS, so a URL with a user or password is refused (and the
    message never repeats the URL).
    """
    parts = urllib.parse.urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "--otlp-endpoint must be an http:// or https:// URL of an OTLP/HTTP receiver, "
            "such as http://localhost:4318"
            + (f" (got scheme {parts.scheme!r})" if parts.scheme else "")
        )
    if parts.username or parts.password:
        raise ValueError(
            "--otlp-endpoint must not carry credentials; put them in "
            "OTEL_EXPORTER_OTLP_HEADERS (e.g. 'authorization=Bearer …')"
        )
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError("--otlp-endpoint has an invalid port") from None
    path = parts.path.rstrip("/")
    if not path.endswith(TRACES_PATH):
        path += TRACES_PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class Tracing:
    """One process's tracer and exporter; every method is for the event loop's thread
    except `shutdown`, and the span methods (`client`, `inbound`, `headers`, `finish`),
    which a same-host link call runs on a worker thread (host/runtime/imports.py): the
    SDK's spans and batch processor take locks of their own."""

    def __init__(
        self,
        endpoint: str,
        *,
        service: str,
        instance_id: str,
        attributes: Mapping[str, str] | None = None,
        schedule_delay_ms: int = SCHEDULE_DELAY_MS,
    ) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.url = traces_url(endpoint)
        _quiet_sdk_logs()
        resource = Resource.create(
            {
                "service.name": service,
                "service.instance.id": instance_id,
                "process.pid": os.getpid(),
                **(attributes or {}),
            }
        )
        # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on),
        # so a caller that sends an unsampled traceparent gets no spans recorded here.
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=self.url, timeout=EXPORT_TIMEOUT_S),
                schedule_delay_millis=schedule_delay_ms,
            )
        )
        self.tracer = self._provider.get_tracer("lattice")
        self._propagator = TraceContextTextMapPropagator()
        self._trace = trace
        self._server = trace.SpanKind.SERVER
        self._client = trace.SpanKind.CLIENT
        self._error = trace.StatusCode.ERROR

    # -- context --------------------------------------------------------------

    def extract(self, headers: Mapping[str, str] | None) -> Any:
        """The caller's context from `traceparent`/`tracestate` (None: a new trace)."""
        if not headers or TRACEPARENT_HEADER not in headers:
            return None
        return self._propagator.extract(headers)

    def context(self, span: Any) -> Any:
        """The context whose children are `span`'s (what worker threads carry)."""
        return self._trace.set_span_in_context(span)

    def headers(self, span: Any, base: Mapping[str, str]) -> dict[str, str]:
        """`base` plus `span`'s `traceparent` (and `tracestate`), for an outgoing request."""
        out = dict(base)
        self._propagator.inject(out, context=self._trace.set_span_in_context(span))
        return out

    # -- spans ----------------------------------------------------------------

    def server(self, name: str, headers: Mapping[str, str] | None, attrs: dict[str, Any]) -> Any:
        """A span for a request this process serves, the caller's span its parent."""
        return self.tracer.start_span(
            name, context=self.extract(headers), kind=self._server, attributes=attrs
        )

    def client(self, name: str, parent: Any, attrs: dict[str, Any]) -> Any:
        """A span for a request this process sends; `parent` is a context or None."""
        return self.tracer.start_span(name, context=parent, kind=self._client, attributes=attrs)

    def finish(self, span: Any, outcome: str | None) -> None:
        """End `span` with `lattice.outcome` (`ok`, or the error kind, which marks it failed)."""
        span.set_attribute("lattice.outcome", outcome or "ok")
        if outcome:
            span.set_status(self._error, outcome)
        span.end()

    # -- the host's call path -------------------------------------------------

    def inbound(
        self, attrs: dict[str, Any], operation: str, headers: Mapping[str, str] | None, done: Done
    ) -> tuple[Done, Any]:
        """A server span for one invocation of a component export, ended when `done`
        runs; returns the wrapped `done` and the context a worker carries to the
        component's link calls."""
        span = self.server(f"invoke {operation}", headers, {**attrs, "lattice.function": operation})

        def traced(body: Any, error: Any) -> None:
            self.finish(span, None if error is None else str(error.kind))
            done(body, error)

        return traced, self.context(span)

    def refused(
        self, attrs: dict[str, Any], operation: str, headers: Mapping[str, str] | None, kind: str
    ) -> None:
        """A span for an invocation refused before it ran (no such function, not running)."""
        span = self.server(f"invoke {operation}", headers, {**attrs, "lattice.function": operation})
        self.finish(span, kind)

    async def request(
        self,
        nc: Any,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        timeout: float,
        parent: Any,
        attrs: dict[str, Any],
    ) -> Any:
        """`nc.request` in a client span (a link call), its context in the headers."""
        span = self.client(f"call {attrs.get('lattice.function', '')}", parent, attrs)
        try:
            msg = await nc.request(
                subject, payload, timeout=timeout, headers=self.headers(span, headers)
            )
        except BaseException as exc:
            self.finish(span, _failure(exc))
            raise
        self.finish(span, (msg.headers or {}).get(ERROR_HEADER))
        return msg

    # -- stop -----------------------------------------------------------------

    def shutdown(self) -> None:
        """Export what is still queued and stop the exporter thread. Blocking (bounded by
        the export timeout): `close` is the loop's way to call it."""
        try:
            self._provider.shutdown()
        except Exception as exc:
            log.warning("could not flush the last spans", error=type(exc).__name__)

    async def close(self, timeout: float) -> None:
        """`shutdown` in a daemon thread, waited for at most `timeout` seconds: a collector
        that is down never holds a stop (asyncio's own executor would be joined at exit)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def flush() -> None:
            self.shutdown()
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        threading.Thread(target=flush, name="otlp-flush", daemon=True).start()
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            log.warning("spans not flushed at stop", timeout_s=timeout)


class _OncePerInterval(logging.Filter):
    """Lets the SDK's "Queue full, dropping …" through once per `interval` seconds: it
    is logged for every span dropped, which with a dead receiver under load would be one
    log line per call, on the event loop."""

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._next = 0.0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Queue full"):
            return True
        self._dropped += 1
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval
        record.msg = (
            f"span queue full (is the OTLP receiver down?): {self._dropped} span(s) dropped; "
            f"said at most once per {self.interval:g}s"
        )
        record.args = ()
        self._dropped = 0
        return True


_QUIET = _OncePerInterval()


def _quiet_sdk_logs() -> None:
    """Install the filter on the SDK's batch-processor logger (idempotent)."""
    logger = logging.getLogger("opentelemetry.sdk._shared_internal")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


def _failure(exc: BaseException) -> str:
    """An outcome word for a request that raised (its message may name a subject)."""
    name = type(exc).__name__
    if "Timeout" in name:
        return "timeout"
    if "NoResponders" in name:
        return "no-responders"
    if "Cancelled" in name:
        return "cancelled"
    return "error"


def start(
    endpoint: str | None,
    *,
    service: str,
    instance_id: str,
    attributes: Mapping[str, str] | None = None,
) -> Tracing | None:
    """A `Tracing` when an endpoint is set, else None (tracing off, nothing imported)."""
    if not endpoint:
        return None
    t = Tracing(endpoint, service=service, instance_id=instance_id, attributes=attributes)
    shown = urllib.parse.urlsplit(t.url)  # a query string may hold a key: leave it out
    log.info("exporting traces", url=f"{shown.scheme}://{shown.netloc}{shown.path}")
    return t
