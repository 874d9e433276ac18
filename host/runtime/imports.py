"""Import bridging: satisfy a component's imports by forwarding calls over the lattice.

For every imported interface the host does not implement itself (WASI's cli, io,
clocks, filesystem, random and sockets come from wasmtime), the bridge defines one
forwarding function per imported function, generically, from the component's own
import types. Each call resolves its link at call time — so `lattice link put` reaches
the next call — and sends the arguments, msgpack-encoded by the value codec, to the
link's target on `{lattice}.{target}.rpc.{ns}:{pkg}/{iface}.{fn}` with the headers
`source-id` and `link-name`.

`wasi:keyvalue` buckets are resources the host owns: `open` hands the guest a handle,
and methods on the handle are forwarded with the identifier as their first argument
(docs/protocol.md). `open` asks the target to accept the identifier once per link:
while the link is the one that accepted it, later opens are answered here with no round
trip, so a get or a set costs one. (Answering every open here and leaving the refusal
to the first operation would lose it for `bucket.get`: wasmtime-py 50 cannot hand a
guest the `err` of its `result<option<list<u8>>, error>`, see docs/codec.md.)

A link whose target is a component with a pool on this host (`local`, the host's
component manager) is served in-process: the callee runs on the caller's worker thread
(`InstancePool.run_inline`), with the same errors, deadline, metrics, spy records and
spans as over NATS. It goes over NATS instead when the callee has no seat free (its
other hosts may have one, and a self-call or a cycle never waits on a seat it holds),
or when `MAX_INLINE_DEPTH` inline calls are already nested on this thread (each nests
a wasm stack on the thread's own).

Failures are never a hang. No link, or a target nobody serves, fails at once; a silent
target fails after the component's deadline. A target that answers `not-linked` (it
holds no such link and did nothing), or a target gone, makes the bridge read the link
from the bucket itself and send the call where it now points: the link hand-off of
docs/protocol.md. Nothing else is re-sent, since increments, sets and publishes are not
idempotent and any other outcome may have been applied. A function whose result is
`result<_, E>` with E a string or a variant with an `other(string)` case gets an
`err` naming the component, interface and link name; any other function traps with
that message. Host functions raise only `WasmtimeError` (wasmtime-py keeps other
exceptions in a process-wide slot, which is unsafe with calls on many threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import wasmtime
from nats.aio.client import Client as NATS
from wasmtime.component import (
    Component,
    ComponentInstanceType,
    FuncType,
    Linker,
    ResourceAny,
    ResourceHost,
    ResourceType,
)

from host.provider_sockets import LocalCallLost, ProviderSockets
from host.runtime import services
from host.runtime.exports import UnknownFunction, resolve
from host.runtime.pool import InstancePool, PoolBusy, PoolClosed, blocked, current_trace
from host.scoped import OutOfScope
from host.wasi._speedups import define_func
from host.wasi.layer import HOST_PREFIXES
from lattice import codec
from lattice.protocol import handoff
from lattice.protocol.invocation import (
    ERROR_HEADER,
    LINK_NAME_HEADER,
    SOURCE_HEADER,
    ErrorKind,
    InvocationError,
)
from lattice.protocol.links import Identity, Link, find_link
from lattice.protocol.local_rpc import Reply
from lattice.valtype import FuncSig, Prim, ResourceT, ResultT, ValT, VariantT

# Everything either WASI layer (wasmtime's native one, or the host's for HTTP components)
# provides; the bridge never forwards these.
WASI_HOST_PREFIXES = HOST_PREFIXES
KEYVALUE_STORE = "wasi:keyvalue/store"
BUCKET_TYPE_ID = 1
MAX_INLINE_DEPTH = 4
"""Same-host link calls nested on one thread before the next goes over NATS: each nests
a callee's wasm stack (up to wasmtime's 512 KiB) on the worker's 8 MiB one."""
_inline = threading.local()  # `depth`: inline link calls running on this thread
_IFACE = re.compile(r"^(?P<ns>[a-z0-9-]+):(?P<pkg>[a-z0-9-]+)/(?P<iface>[a-z0-9-]+)(@.+)?$")
# (wasi:config/store and wasi:logging/logging are served by the host: see services.py)


class ImportFailure(Exception):
    """A forwarded import call that failed; the message is for the component's caller."""


@dataclass(frozen=True)
class ImportedFunction:
    name: str  # as imported: "hello", "[method]bucket.get", "[static]r.make", "[constructor]r"
    sig: FuncSig
    # wasmtime's own type, so the host function is defined with it (host.wasi._speedups)
    fty: FuncType | None = field(default=None, compare=False, repr=False)

    @property
    def operation(self) -> str:
        """`bucket.get` for `[method]bucket.get`, `r.new` for `[constructor]r`."""
        if self.name.startswith("[constructor]"):
            return self.name.removeprefix("[constructor]") + ".new"
        return re.sub(r"^\[(method|static)\]", "", self.name)


@dataclass(frozen=True)
class ImportedInterface:
    full_name: str  # "wasi:keyvalue/store@0.2.0-draft"
    namespace: str
    package: str
    interface: str
    functions: tuple[ImportedFunction, ...]
    resources: tuple[str, ...] = field(default=())

    @property
    def short(self) -> str:
        return f"{self.namespace}:{self.package}/{self.interface}"


def bridged_imports(engine: wasmtime.Engine, component: Component) -> list[ImportedInterface]:
    """Imported interfaces the lattice must satisfy (everything wasmtime's WASI does not)."""
    found = []
    for name, ext in component.type.imports(engine).items():
        if name.startswith(WASI_HOST_PREFIXES):
            continue
        item = ext.ty
        m = _IFACE.match(name)
        if not isinstance(item, ComponentInstanceType) or m is None:
            continue
        funcs, resources = [], []
        for fname, fext in item.exports(engine).items():
            fitem = fext.ty
            if isinstance(fitem, FuncType):
                funcs.append(ImportedFunction(fname, FuncSig.from_wasmtime(fitem), fitem))
            elif isinstance(fitem, ResourceType):
                resources.append(fname)
        found.append(
            ImportedInterface(name, m["ns"], m["pkg"], m["iface"], tuple(funcs), tuple(resources))
        )
    return found


CATCH_ALL_CASES = ("other", "unexpected", "internal", "unavailable", "unknown")
"""Error-variant cases taken to mean "something else went wrong": wasi:keyvalue and
wasi:blobstore say `other`, wasmcloud:postgres `unexpected`."""


def error_fallback(sig: FuncSig, message: str) -> Any | None:
    """The `err` value to return instead of trapping, when the result type allows one."""
    res = sig.result
    if not isinstance(res, ResultT) or res.err is None:
        return None
    err: ValT = res.err
    wire: Any = None
    if isinstance(err, Prim) and err.kind == "string":
        wire = {"err": message}
    elif isinstance(err, VariantT):
        cases = dict(err.cases)
        for name in CATCH_ALL_CASES:  # the WIT's own "anything else" case, if it has one
            case = cases.get(name)
            if isinstance(case, Prim) and case.kind == "string":
                wire = {"err": {name: message}}
                break
    if wire is None:
        return None
    try:
        return codec.lift(res, wire)
    except codec.UnsupportedValue:
        # wasmtime-py cannot lower an err for some result shapes (result<option<T>, E>:
        # its untagged ok case accepts anything); trapping with the message is the
        # honest alternative.
        return None


def _mentions_resource(t: ValT | None) -> bool:
    if t is None:
        return False
    if isinstance(t, ResourceT):
        return True
    return any(_mentions_resource(c) for c in _children(t))


def _children(t: ValT) -> list[ValT]:
    out: list[ValT] = []
    for attr in ("elem", "inner", "ok", "err"):
        v = getattr(t, attr, None)
        if v is not None and not isinstance(v, str):
            out.append(v)
    for attr in ("fields", "cases"):
        for _, v in getattr(t, attr, ()):
            if v is not None:
                out.append(v)
    out.extend(getattr(t, "elems", ()))
    return out


class ImportBridge:
    """Defines forwarding imports in a component's linker; one per host."""

    spy: Any = None  # host/spy.py sets it: taps the link calls of spied components
    local: Any = None  # host/components.py's manager: same-host targets run in-process
    metrics: Any = None  # host/metrics.py: counts link calls by source, link name, target
    tracing: Any = None  # lattice/tracing.py with --otlp-endpoint: a client span per link call
    scoped: Any = None  # host/scoped.py with --account-signing-key: per-component logins
    sockets: ProviderSockets | None = None  # this host's provider processes, not via NATS

    def __init__(
        self,
        *,
        nc: NATS,
        loop: asyncio.AbstractEventLoop,
        lattice: str,
        links: Mapping[Identity, Link],
        link_name: Callable[[str, str, str], str],
        component_config: services.ComponentConfig | None = None,
        fetch_link: Callable[[Identity], Awaitable[Link | None]] | None = None,
    ) -> None:
        self.nc = nc
        self.fetch_link = fetch_link
        self.loop = loop
        self.lattice = lattice
        self.links = links
        self.link_name = link_name
        self.component_config = component_config or (lambda _cid: {})
        self._buckets: dict[int, str] = {}
        # (component, link name, bucket) -> the link whose target accepted it: a link
        # put replaces the Link object, so any change of the link asks again
        self._accepted: dict[tuple[str, str, str], Link] = {}
        self._reps = itertools.count(1)
        self._lock = threading.Lock()

    # -- definition -----------------------------------------------------------

    def define(
        self,
        linker: Linker,
        component_id: str,
        imports: list[ImportedInterface],
        timeout_ms: Callable[[], int],
    ) -> None:
        with linker.root() as root:
            for iface in imports:
                if services.serves(iface.short):
                    with root.add_instance(iface.full_name) as inst:
                        services.define(
                            inst,
                            iface.short,
                            [(f.name, f.sig, f.fty) for f in iface.functions],
                            component_id,
                            self.component_config,
                        )
                    continue
                with root.add_instance(iface.full_name) as inst:
                    for res in iface.resources:
                        inst.add_resource(res, ResourceType.host(BUCKET_TYPE_ID), self._drop)
                    for fn in iface.functions:
                        forwarder = self._forwarder(component_id, iface, fn, timeout_ms)
                        define_func(inst, fn.name, forwarder, fn.fty)

    def _drop(self, store: Any, rep: int) -> None:
        with self._lock:
            self._buckets.pop(rep, None)

    def _forwarder(
        self,
        component_id: str,
        iface: ImportedInterface,
        fn: ImportedFunction,
        timeout_ms: Callable[[], int],
    ) -> Callable[..., Any]:
        operation = f"{iface.short}.{fn.operation}"
        sig = fn.sig
        keyvalue = iface.namespace == "wasi" and iface.package == "keyvalue"
        is_open = keyvalue and iface.short == KEYVALUE_STORE and fn.name == "open"
        unsupported = not keyvalue and (
            any(_mentions_resource(t) for _, t in sig.params) or _mentions_resource(sig.result)
        )

        def call(store: Any, *args: Any) -> Any:
            try:
                if unsupported:
                    raise ImportFailure(
                        f"{operation} passes resources, which this lattice cannot forward"
                    )
                wire = [
                    self._to_wire(store, t, a) for (_, t), a in zip(sig.params, args, strict=True)
                ]
                if is_open:
                    return self._open(component_id, iface, operation, sig, wire, timeout_ms())
                reply = self._invoke(component_id, iface, operation, wire, timeout_ms())
                if sig.result is None:
                    return None
                try:
                    return codec.lift(sig.result, reply)
                except codec.UnsupportedValue:
                    if isinstance(reply, dict) and "err" in reply:
                        raise ImportFailure(f"{operation} failed: {reply['err']}") from None
                    raise
            except ImportFailure as exc:
                fallback = error_fallback(sig, str(exc))
                if fallback is not None:
                    return fallback
                raise wasmtime.WasmtimeError(str(exc)) from None
            except wasmtime.WasmtimeError:
                raise
            except codec.CodecError as exc:
                msg = f"{operation}: the reply does not match the import's type: {exc}"
                raise wasmtime.WasmtimeError(msg) from None
            except Exception as exc:  # keep the process-wide exception slot empty
                raise wasmtime.WasmtimeError(f"{operation}: {type(exc).__name__}: {exc}") from None

        return call

    def _open(
        self,
        component_id: str,
        iface: ImportedInterface,
        operation: str,
        sig: FuncSig,
        wire: list[Any],
        timeout_ms: int,
    ) -> Any:
        """A bucket handle; the target is asked only about a bucket this link has not
        accepted yet (no link fails here, naming the import)."""
        identifier = wire[0]
        _, name, link = self._resolve(component_id, iface, timeout_ms)
        key = (component_id, name, identifier)
        if self._accepted.get(key) is link:
            return self._opened(sig, {"ok": None}, identifier)
        reply = self._invoke(component_id, iface, operation, wire, timeout_ms)
        if reply == {"ok": None}:
            if len(self._accepted) > 10_000:
                self._accepted.clear()
            self._accepted[key] = link
        return self._opened(sig, reply, identifier)

    # -- values ---------------------------------------------------------------

    def _to_wire(self, store: Any, t: ValT, value: Any) -> Any:
        if isinstance(t, ResourceT):  # a bucket handle: send its identifier
            rep = value.to_host(store).rep if isinstance(value, ResourceAny) else value.rep
            with self._lock:
                ident = self._buckets.get(rep)
            if ident is None:
                raise ImportFailure("unknown or closed bucket handle")
            return ident
        return codec.lower(t, value)

    def _opened(self, sig: FuncSig, reply: Any, identifier: str) -> Any:
        if isinstance(reply, dict) and "err" in reply:
            assert isinstance(sig.result, ResultT) and sig.result.err is not None
            return codec.lift(sig.result.err, reply["err"])
        rep = next(self._reps)
        with self._lock:
            self._buckets[rep] = identifier
        return ResourceHost.own(rep, BUCKET_TYPE_ID)

    # -- transport ------------------------------------------------------------

    def _invoke(
        self,
        component_id: str,
        iface: ImportedInterface,
        operation: str,
        wire_args: list[Any],
        timeout_ms: int,
        pin: list[Link] | None = None,
    ) -> Any:
        """`pin` (host/wasi/blobstore.py: the parts of one upload, the chunks of one read)
        holds the link the first call went over, and later calls go to the same target."""
        if self.spy is not None and self.spy.active(component_id):  # `lattice spy`
            return self.spy.outbound(
                self._route, component_id, iface, operation, wire_args, timeout_ms
            )
        return self._route(component_id, iface, operation, wire_args, timeout_ms, pin)

    def _resolve(
        self, component_id: str, iface: ImportedInterface, timeout_ms: int
    ) -> tuple[Identity, str, Link]:
        """The import's link name and link; ImportFailure naming the import when none."""
        name = self.link_name(component_id, iface.namespace, iface.package)
        ident: Identity = (component_id, iface.namespace, iface.package, name)
        link = find_link(
            self.links, component_id, iface.namespace, iface.package, iface.interface, name
        )
        if link is None:
            link = self._fresh(ident, iface.interface, timeout_ms)  # the copy may lag
        if link is None:
            raise ImportFailure(
                f"{_where(component_id, iface, name)}: no link; add one with "
                f"`lattice link put {component_id} <target> "
                f"{iface.namespace} {iface.package} --interface {iface.interface}"
                + ("" if name == "default" else f" --name {name}")
                + "`"
            )
        return ident, name, link

    def _route(
        self,
        component_id: str,
        iface: ImportedInterface,
        operation: str,
        wire_args: list[Any],
        timeout_ms: int,
        pin: list[Link] | None = None,
    ) -> Any:
        """One link call: in-process to a pool on this host, else over NATS."""
        if pin:
            name = self.link_name(component_id, iface.namespace, iface.package)
            ident: Identity = (component_id, iface.namespace, iface.package, name)
            link = pin[0]
        else:
            ident, name, link = self._resolve(component_id, iface, timeout_ms)
        where = _where(component_id, iface, name)
        headers = {SOURCE_HEADER: component_id, LINK_NAME_HEADER: name}
        payload: bytes | None = None
        deadline = time.monotonic() + timeout_ms / 1000
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            target = link.target
            pool = self.local.pool_of(target) if self.local is not None else None
            if pool is not None:
                done, value = self._call_local(
                    pool, target, operation, wire_args, headers, remaining, timeout_ms, where
                )
                if done:
                    return value
            if payload is None:
                payload = codec.pack(wire_args)
            try:
                msg = self._request(
                    f"{self.lattice}.{target}.rpc.{operation}",
                    payload,
                    headers,
                    remaining,
                    target,
                    operation,
                )
                miss = None
            except LocalCallLost as exc:
                self._count(component_id, name, target, operation, "lost")
                raise ImportFailure(
                    f"{where}: {operation}: {exc} (provider {target} on this host; "
                    "the outcome is unknown)"
                ) from None
            except nats.errors.NoRespondersError:
                msg, miss = None, handoff.Miss.NO_RESPONDERS
            except (nats.errors.TimeoutError, concurrent.futures.TimeoutError, TimeoutError):
                self._count(component_id, name, target, operation, "timeout")
                raise ImportFailure(_no_answer(where, target, operation, timeout_ms)) from None
            except nats.errors.Error as exc:
                raise ImportFailure(f"{where}: {operation} failed: {exc}") from None
            if msg is not None:
                body = codec.unpack(msg.data)
                kind = (msg.headers or {}).get(ERROR_HEADER)
                if kind != ErrorKind.NOT_LINKED:
                    self._count(component_id, name, target, operation, kind)
                if kind is None:
                    if pin is not None:
                        pin[:] = [link]
                    return body
                err = InvocationError.from_body(body, kind)
                if err.kind is not ErrorKind.NOT_LINKED:
                    raise ImportFailure(f"{where}: {target} failed {operation}: {err}")
                miss = handoff.Miss.NOT_LINKED
            # Not applied (docs/protocol.md, link hand-off): look at the link as the bucket
            # holds it now, and send again where it says. Nothing else is ever re-sent.
            assert miss is not None
            fresh = self._fresh(ident, iface.interface, timeout_ms)
            step = handoff.after_miss(
                target, miss, fresh, iface.interface, attempt, deadline - time.monotonic()
            )
            if isinstance(step, handoff.Fail):
                raise ImportFailure(f"{where}: {operation}: {step.reason}")
            if step.wait:
                with blocked():
                    time.sleep(step.wait)
            link = step.link

    def _count(self, source: str, name: str, target: str, op: str, kind: str | None) -> None:
        if self.metrics is not None:
            self.metrics.link_called(source, name, target, op, kind)

    def _call_local(
        self,
        pool: InstancePool,
        target: str,
        operation: str,
        wire_args: list[Any],
        headers: dict[str, str],
        remaining: float,
        timeout_ms: int,
        where: str,
    ) -> tuple[bool, Any]:
        """Serve a link call with `target`'s pool on this host, on this thread.

        `(True, wire result)` when it ran; `(False, None)` when it should go over NATS
        (no seat free, the pool draining, or too deeply nested). Failures raise
        ImportFailure worded as the NATS path words them, and are counted on both sides
        as a served call and a link call are, so metrics, `lattice spy` and traces see a
        same-host call as they see any other.
        """
        depth = getattr(_inline, "depth", 0)
        if depth >= MAX_INLINE_DEPTH or remaining <= 0:
            return False, None
        source, name = headers[SOURCE_HEADER], headers[LINK_NAME_HEADER]
        metrics, spy, tracing = self.metrics, self.spy, self.tracing
        spied = False
        started = 0.0
        function = [operation, source]  # a call refused before it ran: "other", no caller

        def finished(body: Any, error: InvocationError | None) -> None:  # the callee's side
            if metrics is not None:
                kind = None if error is None else str(error.kind)
                elapsed = time.perf_counter() - started if started else 0.0
                metrics.invoked(target, function[0], function[1], kind, elapsed)

        done: Callable[[Any, InvocationError | None], None] = finished
        client_span: Any = None

        def begin() -> Any:
            """Once the call has its seat: the taps, as the NATS path sets them up."""
            nonlocal done, client_span, spied, started
            started = time.perf_counter()
            if spy is not None and spy.active(target):
                spied = True
                done = spy.inbound(
                    target, operation, _LocalMsg(codec.pack(wire_args), headers), done
                )
            if tracing is None:
                return None
            # the caller's client span, and the callee's server span as its child
            attrs = _link_attrs(f"{self.lattice}.{target}.rpc.{operation}", headers)
            client_span = tracing.client(f"call {operation}", current_trace(), attrs)
            done, trace = tracing.inbound(
                self._server_attrs(target, source),
                operation,
                tracing.headers(client_span, headers),
                done,
            )
            return trace

        error: InvocationError | None = None
        try:
            export = resolve(pool.exports, operation)
        except UnknownFunction as exc:
            error = InvocationError(ErrorKind.UNKNOWN_FUNCTION, f"{target}: {exc}")
            value: Any = None
            function[:] = ["other", ""]
            begin()
        else:
            cap = int(remaining * 1000)
            _inline.depth = depth + 1
            try:  # (not `blocked()`: this thread computes, and its CPU time tells its pool)
                value, error = pool.run_inline(export, wire_args, cap_ms=cap, begin=begin)
            except (PoolBusy, PoolClosed):
                return False, None
            finally:
                _inline.depth = depth
            if (
                error is not None
                and error.kind is ErrorKind.TIMEOUT
                and cap < pool.limits.timeout_ms
            ):
                error = _CALLER_DEADLINE  # the caller's deadline, not the callee's, ran out
        done(codec.pack(value) if spied and error is None else value, error)
        if client_span is not None:
            tracing.finish(client_span, None if error is None else str(error.kind))
        if error is _CALLER_DEADLINE:
            self._count(source, name, target, operation, "timeout")
            raise ImportFailure(_no_answer(where, target, operation, timeout_ms))
        self._count(source, name, target, operation, None if error is None else str(error.kind))
        if error is not None:
            raise ImportFailure(f"{where}: {target} failed {operation}: {error}")
        return True, value

    def _server_attrs(self, target: str, source: str) -> dict[str, str]:
        """What the callee's invocation span says, as host/components.py says it."""
        return {
            "lattice.name": self.lattice,
            "lattice.host_id": getattr(self.local, "host_id", ""),
            "lattice.component_id": target,
            "lattice.source_id": source,
        }

    def _request(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        timeout: float,
        target: str,
        operation: str,
    ) -> Any:
        """One request from a worker thread: straight to the provider's socket when it
        runs on this host (host/provider_sockets.py), else over NATS on the host's loop,
        on the calling component's scoped connection when the host mints those
        (host/scoped.py)."""
        if timeout <= 0:
            raise TimeoutError
        if self.sockets is not None:
            reply = self._request_local(subject, payload, headers, timeout, target, operation)
            if reply is not None:
                return reply
        trace = current_trace() if self.tracing is not None else None
        fut = asyncio.run_coroutine_threadsafe(
            self._send(subject, payload, headers, timeout, target, trace), self.loop
        )
        try:
            with blocked():
                return fut.result(timeout + 1)
        except BaseException:
            fut.cancel()
            raise

    def _request_local(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        timeout: float,
        target: str,
        operation: str,
    ) -> Reply | None:
        """Through the target's socket on this thread; None when it is not on this host.
        The link names the target, so no scoped login is needed to reach it; a trace
        gets the same client span the NATS path makes."""
        assert self.sockets is not None
        if not self.sockets.reachable(target):
            return None
        tracing = self.tracing
        span = None
        if tracing is not None:
            span = tracing.client(
                f"call {operation}", current_trace(), _link_attrs(subject, headers)
            )
            headers = tracing.headers(span, headers)
        try:
            with blocked():
                reply = self.sockets.call(target, operation, headers, payload, timeout)
        except BaseException as exc:
            if span is not None:
                tracing.finish(span, "timeout" if isinstance(exc, TimeoutError) else "lost")
            raise
        if span is not None:
            # not delivered (the provider is stopping): over NATS next, in a span of its own
            span.set_attribute("lattice.transport", "unix" if reply else "unix, not delivered")
            tracing.finish(span, None if reply is None else (reply.headers or {}).get(ERROR_HEADER))
        return reply

    async def _send(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        timeout: float,
        target: str,
        trace: Any,
    ) -> Any:
        nc = self.nc
        if self.scoped is not None:
            try:
                nc = await asyncio.wait_for(
                    self.scoped.connection(headers[SOURCE_HEADER], target), timeout
                )
            except OutOfScope as exc:
                raise ImportFailure(str(exc)) from None
        if self.tracing is None:
            return await nc.request(subject, payload, timeout=timeout, headers=headers)
        # the span is made on the loop; the worker only handed over its call's context
        return await self.tracing.request(
            nc, subject, payload, headers, timeout, trace, _link_attrs(subject, headers)
        )

    def _fresh(self, ident: Identity, interface: str, timeout_ms: int) -> Link | None:
        """The link as the lattice's bucket holds it now (None: no such link)."""
        if self.fetch_link is None:
            return None
        fut = asyncio.run_coroutine_threadsafe(self.fetch_link(ident), self.loop)
        try:
            with blocked():
                link = fut.result(max(timeout_ms / 1000, 1.0))
        except Exception:
            fut.cancel()
            return None
        return link if link is not None and interface in link.interfaces else None


@dataclass(frozen=True, slots=True)
class _LocalMsg:
    """What `lattice spy`'s inbound tap reads of a call's message, for a same-host call."""

    data: bytes
    headers: dict[str, str]


_CALLER_DEADLINE = InvocationError(ErrorKind.TIMEOUT, "the caller's deadline passed")


def _where(component_id: str, iface: ImportedInterface, name: str) -> str:
    return f"component {component_id} import {iface.short} (link name {name!r})"


def _no_answer(where: str, target: str, operation: str, timeout_ms: int) -> str:
    return (
        f"{where}: target {target} did not answer {operation} within "
        f"{timeout_ms / 1000:g}s (the outcome is unknown)"
    )


def _link_attrs(subject: str, headers: Mapping[str, str]) -> dict[str, str]:
    """A link call's span attributes, from what `_invoke` put in its subject and headers
    (`{lattice}.{target}.rpc.{interface}.{function}`): identities only, never arguments."""
    _, target, _, operation = subject.split(".", 3)
    return {
        "lattice.source_id": headers.get(SOURCE_HEADER, ""),
        "lattice.link_name": headers.get(LINK_NAME_HEADER, ""),
        "lattice.target": target,
        "lattice.function": operation,
    }
