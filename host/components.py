"""Running components on this host: scale, update, stop, and serving their exports.

Operations on one component id are serialised by a per-id lock (kopf's per-entity
ordering), different ids proceed in parallel. Each running component has one NATS
subscription on `{lattice}.{id}.rpc.>` in a queue group shared by every host running
that id, so calls balance across hosts. An update swaps the pool under the
subscription: new calls go to the new pool while the old one drains, so no call fails.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import wasmtime
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from host import http_serve
from host.config import Limits
from host.runtime.engine import CompileCache
from host.runtime.exports import UnknownFunction, resolve
from host.runtime.imports import ImportBridge
from host.runtime.loader import LoadError, load_pool
from host.runtime.pool import InstancePool, PoolClosed
from lattice import codec, subscriptions
from lattice.protocol import events, subjects
from lattice.protocol.invocation import (
    ERROR_HEADER,
    HOST_HEADER,
    SOURCE_HEADER,
    ErrorKind,
    InvocationError,
)
from lattice.protocol.messages import (
    ComponentDescription,
    ComponentLimits,
    ScaleComponentRequest,
    UpdateComponentRequest,
)

log = structlog.get_logger("lattice.components")

# How long a stopping component waits for NATS to confirm its subscriptions are gone.
SUBSCRIPTION_DRAIN_S = 5.0

PublishEvent = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class RunningComponent:
    id: str
    image_ref: str
    pool: InstancePool
    annotations: dict[str, str]
    config: list[str]
    limits: Limits
    digest: str
    requested: int = 0  # the scale count for this host; with --workers the pool holds a share
    revision: int = 0
    subscription: Subscription | None = None
    http_subscription: Subscription | None = None
    started_at: float = field(default_factory=time.time)

    def describe(self, warm_elsewhere: int = 0) -> ComponentDescription:
        return ComponentDescription(
            id=self.id,
            image_ref=self.image_ref,
            name=self.annotations.get("name"),
            annotations=self.annotations,
            max_instances=self.requested or self.pool.max_instances,
            revision=self.revision,
            instances_warm=self.pool.warm + warm_elsewhere,
            limits={"timeout_ms": self.limits.timeout_ms, "memory_mb": self.limits.memory_mb},
            exports=sorted(self.pool.exports),
        )


class ComponentManager:
    def __init__(
        self,
        *,
        nc: NATS,
        lattice: str,
        host_id: str,
        engine: wasmtime.Engine,
        cache: CompileCache,
        default_limits: Limits,
        publish_event: PublishEvent,
        bridge: ImportBridge | None = None,
    ) -> None:
        self.nc = nc
        self.lattice = lattice
        self.host_id = host_id
        self.engine = engine
        self.cache = cache
        self.default_limits = default_limits
        self.publish_event = publish_event
        self.bridge = bridge
        self.running: dict[str, RunningComponent] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._outbox: collections.deque[tuple[str, bytes, dict[str, str] | None]] = (
            collections.deque()
        )
        self._publisher: asyncio.Task[None] | None = None
        self._ok_headers = {HOST_HEADER: host_id}
        self._log = log.bind(host_id=host_id, lattice=lattice)
        self.spy: Any = None  # host/spy.py, set when the host starts: taps spied components
        self.metrics: Any = None  # host/metrics.py: counts each call served
        self.tracing: Any = None  # lattice/tracing.py with --otlp-endpoint; None: off
        self.workers: Any = None  # host/workers.py with --workers N > 1: they hold shares

    def pool_of(self, component_id: str) -> InstancePool | None:
        rc = self.running.get(component_id)
        return rc.pool if rc is not None else None

    def _pool_getter(self, component_id: str) -> Callable[[], InstancePool | None]:
        return functools.partial(self.pool_of, component_id)

    def _lock(self, component_id: str) -> asyncio.Lock:
        return self._locks.setdefault(component_id, asyncio.Lock())

    def config_names(self, component_id: str) -> list[str]:
        rc = self.running.get(component_id)
        return rc.config if rc is not None else []

    def describe(self) -> list[ComponentDescription]:
        if self.workers is None:
            return [rc.describe() for rc in self.running.values()]
        return [rc.describe(self.workers.warm(rc.id)) for rc in self.running.values()]

    def _local_count(self, count: int) -> int:
        """This process's share of `count` instances (all of them without workers)."""
        return count if self.workers is None else self.workers.local_share(count)

    def _limits(self, override: ComponentLimits | None) -> Limits:
        if override is None:
            return self.default_limits
        return self.default_limits.merged(override.timeout_ms, override.memory_mb)

    # -- scale ----------------------------------------------------------------

    def check_scale(self, req: ScaleComponentRequest) -> str | None:
        """A reason to refuse the request outright, checked before it is acknowledged."""
        rc = self.running.get(req.component_id)
        changing = rc is not None and req.count > 0 and rc.image_ref != req.component_ref
        if changing and not req.allow_update:
            assert rc is not None
            return (
                f"component {req.component_id} already runs {rc.image_ref} on this host; "
                "use component.update (or allow_update: true) to change its image"
            )
        return None

    async def scale(self, req: ScaleComponentRequest) -> None:
        """Bring component `req.component_id` to `req.count` instances; emits the outcome."""
        async with self._lock(req.component_id):
            try:
                await self._scale_locked(req)
            except LoadError as exc:
                await self._scale_failed(req, str(exc))
            except Exception as exc:  # never let a bad component take the host down
                self._log.exception("scale failed", component_id=req.component_id)
                await self._scale_failed(req, f"internal error: {exc}")

    async def _scale_locked(self, req: ScaleComponentRequest) -> None:
        rc = self.running.get(req.component_id)
        limits = self._limits(req.limits)
        if req.count == 0:
            if rc is not None:
                await self._stop(rc)
            if self.workers is not None:
                await self.workers.scale(req)
            await self._scaled(req.component_id, req.component_ref, 0, req.annotations)
            return
        local = self._local_count(req.count)
        if rc is None:
            pool, stats = await load_pool(
                component_id=req.component_id,
                ref=req.component_ref,
                engine=self.engine,
                cache=self.cache,
                limits=limits,
                max_instances=local,
                bridge=self.bridge,
            )
            rc = RunningComponent(
                id=req.component_id,
                image_ref=req.component_ref,
                pool=pool,
                annotations=dict(req.annotations),
                config=list(req.config),
                limits=limits,
                digest=stats.digest,
                requested=req.count,
            )
            rc.subscription = await self.nc.subscribe(
                subjects.rpc_wildcard(self.lattice, rc.id),
                queue=f"rpc.{self.lattice}.{rc.id}",
                cb=self._dispatcher(rc.id),
            )
            self.running[rc.id] = rc
            rc.http_subscription = await http_serve.attach(
                self.nc, self.lattice, rc.id, http_serve.PoolRef(self._pool_getter(rc.id))
            )
            self._log.info(
                "component started",
                component_id=rc.id,
                image_ref=rc.image_ref,
                max_instances=req.count,
                local_instances=local,
                cached=stats.cached,
                compile_s=round(stats.compile_s, 3),
                exports=len(pool.exports),
            )
        elif rc.image_ref != req.component_ref:
            await self._swap_image(rc, req.component_ref, local, limits)
        else:
            await rc.pool.resize(local)
        rc.requested = req.count
        rc.annotations = dict(req.annotations) or rc.annotations
        rc.config = list(req.config) or rc.config
        if self.workers is not None:  # after the local pool: its compile fills the cache
            await self.workers.scale(req)
        await self._scaled(rc.id, rc.image_ref, rc.requested, rc.annotations)

    async def _scaled(self, cid: str, ref: str, count: int, ann: dict[str, str]) -> None:
        await self.publish_event(
            "component_scaled", events.component_scaled(self.host_id, cid, ref, count, ann)
        )

    async def _scale_failed(self, req: ScaleComponentRequest, error: str) -> None:
        self._log.warning("component scale failed", component_id=req.component_id, error=error)
        await self.publish_event(
            "component_scale_failed",
            events.component_scale_failed(
                self.host_id, req.component_id, req.component_ref, req.count, req.annotations, error
            ),
        )

    # -- update ---------------------------------------------------------------

    async def update(self, req: UpdateComponentRequest) -> None:
        async with self._lock(req.component_id):
            rc = self.running.get(req.component_id)
            if rc is None:
                return
            try:
                if rc.image_ref != req.new_component_ref:
                    await self._swap_image(
                        rc, req.new_component_ref, rc.pool.max_instances, rc.limits
                    )
                if req.annotations is not None:
                    rc.annotations = dict(req.annotations)
                if self.workers is not None:
                    await self.workers.update(req)
            except LoadError as exc:
                await self.publish_event(
                    "component_scale_failed",
                    events.component_scale_failed(
                        self.host_id,
                        rc.id,
                        req.new_component_ref,
                        rc.requested,
                        rc.annotations,
                        str(exc),
                    ),
                )
                return
            await self._scaled(rc.id, rc.image_ref, rc.requested, rc.annotations)

    async def _swap_image(self, rc: RunningComponent, ref: str, count: int, limits: Limits) -> None:
        """Start the new image's pool, route new calls to it, then drain the old one."""
        new_pool, stats = await load_pool(
            component_id=rc.id,
            ref=ref,
            engine=self.engine,
            cache=self.cache,
            limits=limits,
            max_instances=count,
            bridge=self.bridge,
        )
        old = rc.pool
        rc.pool, rc.image_ref, rc.digest, rc.limits = new_pool, ref, stats.digest, limits
        rc.revision += 1
        self._log.info(
            "component image swapped", component_id=rc.id, image_ref=ref, revision=rc.revision
        )
        await old.drain()

    # -- stop -----------------------------------------------------------------

    async def _stop(self, rc: RunningComponent) -> None:
        # Drained while the component still runs, so the calls nats-server routed here
        # before it saw the UNSUB are answered (tests/test_stop_drains.py lost 37-42 of
        # 48 callers' calls in 12 stops when this unsubscribed).
        await subscriptions.drain(
            (s for s in (rc.subscription, rc.http_subscription) if s is not None),
            connected=self.nc.is_connected,
            timeout=SUBSCRIPTION_DRAIN_S,
        )
        self.running.pop(rc.id, None)
        await rc.pool.drain()
        if self.bridge is not None and self.bridge.scoped is not None:
            await self.bridge.scoped.forget(rc.id)
        self._log.info("component stopped", component_id=rc.id)

    async def stop_all(self) -> None:
        for cid in list(self.running):
            async with self._lock(cid):
                rc = self.running.get(cid)
                if rc is not None:
                    await self._stop(rc)
                    await self._scaled(rc.id, rc.image_ref, 0, rc.annotations)
        if self._publisher is not None:
            await asyncio.gather(self._publisher, return_exceptions=True)

    # -- serving --------------------------------------------------------------

    def _dispatcher(self, component_id: str) -> Callable[[Msg], Awaitable[None]]:
        """Route one call to the component's pool without awaiting it.

        nats-py runs one callback at a time per subscription, so this only resolves the
        function and queues the call; the reply goes out when the pool hands it back.
        """

        async def dispatch(msg: Msg) -> None:
            try:
                self._accept(component_id, msg)
            except InvocationError as exc:
                self._send(msg.reply, None, exc)
                if self.metrics is not None:  # refused before a pool saw it: no function name
                    self.metrics.invoked(component_id, "other", "", str(exc.kind), 0.0)
                if self.tracing is not None:  # a span of its own, for the refusal
                    op = subjects.rpc_operation(msg.subject, self.lattice, component_id)
                    self.tracing.refused(
                        self._span_attrs(component_id, msg), op, msg.headers, str(exc.kind)
                    )

        return dispatch

    def _accept(self, component_id: str, msg: Msg) -> None:
        operation = subjects.rpc_operation(msg.subject, self.lattice, component_id)
        reply, traced = msg.reply, bool(msg.headers)
        metrics, started = self.metrics, time.perf_counter()

        def done(body: Any, error: InvocationError | None) -> None:
            self._send(reply, body, error, traced)
            if metrics is not None:
                source = msg.headers.get(SOURCE_HEADER, "") if msg.headers else ""
                kind = None if error is None else str(error.kind)
                elapsed = time.perf_counter() - started
                metrics.invoked(component_id, operation, source, kind, elapsed)

        if self.spy is not None and self.spy.active(component_id):  # `lattice spy`
            done = self.spy.inbound(component_id, operation, msg, done)
        trace = None
        for _ in range(3):  # a pool swapped out under us: retry on the current one
            rc = self.running.get(component_id)
            if rc is None:
                raise InvocationError(
                    ErrorKind.UNAVAILABLE, f"component {component_id} is not running on this host"
                )
            try:
                export = resolve(rc.pool.exports, operation)
            except UnknownFunction as exc:
                raise InvocationError(
                    ErrorKind.UNKNOWN_FUNCTION, f"{component_id}: {exc}"
                ) from None
            if self.tracing is not None and trace is None:  # --otlp-endpoint: ended by `done`
                done, trace = self.tracing.inbound(
                    self._span_attrs(component_id, msg), export.operation, msg.headers, done
                )
            try:
                if not rc.pool.run_on_loop(export, msg.data, done, trace):
                    rc.pool.submit(export, msg.data, done, raw=True, trace=trace)
                return
            except PoolClosed:
                continue
        raise InvocationError(ErrorKind.UNAVAILABLE, f"component {component_id} is stopping")

    def _span_attrs(self, component_id: str, msg: Msg) -> dict[str, str]:
        """What the invocation span says (identities only: no arguments, no config)."""
        attrs = {
            "lattice.name": self.lattice,
            "lattice.host_id": self.host_id,
            "lattice.component_id": component_id,
        }
        source = msg.headers.get(SOURCE_HEADER) if msg.headers else None
        if source:
            attrs["lattice.source_id"] = source
        return attrs

    def _send(
        self,
        reply: str | None,
        body: bytes | None,
        error: InvocationError | None,
        traced: bool = True,
    ) -> None:
        """Queue a reply; one task publishes whatever has accumulated.

        A plain success reply carries no headers: header framing and parsing were a
        measurable share of a call's cost. Callers that send headers (source-id,
        traceparent) get `lattice-host` back; errors always say who answered.
        """
        if not reply:
            return
        headers: dict[str, str] | None
        if error is not None:
            headers = {HOST_HEADER: self.host_id, ERROR_HEADER: str(error.kind)}
            body = codec.pack(error.to_body())
        else:
            headers = self._ok_headers if traced else None
        self._outbox.append((reply, body or b"", headers))
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_replies())

    async def _publish_replies(self) -> None:
        while self._outbox:
            subject, body, headers = self._outbox.popleft()
            try:
                await self.nc.publish(subject, body, headers=headers)
            except Exception as exc:
                self._log.warning("could not send reply", subject=subject, error=str(exc))
