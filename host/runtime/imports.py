"""Import bridging: satisfy a component's imports by forwarding calls over the lattice.

For every imported interface the host does not implement itself (WASI's cli, io,
clocks, filesystem, random and sockets come from wasmtime), the bridge defines one
forwarding function per imported function, generically, from the component's own
import types. Each call resolves its link at call time — so `lattice link put` reaches
the next call — and sends the arguments, msgpack-encoded by the value codec, to the
link's target on `{lattice}.{target}.rpc.{ns}:{pkg}/{iface}.{fn}` with the headers
`source-id` and `link-name`.

`wasi:keyvalue` buckets are resources the host owns: `open` asks the target to accept
the identifier and hands the guest a handle; methods on the handle are forwarded with
the identifier as their first argument (docs/protocol.md).

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

from host.runtime import services
from host.runtime.pool import blocked, current_trace
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
from lattice.valtype import FuncSig, Prim, ResourceT, ResultT, ValT, VariantT

# Everything either WASI layer (wasmtime's native one, or the host's for HTTP components)
# provides; the bridge never forwards these.
WASI_HOST_PREFIXES = HOST_PREFIXES
KEYVALUE_STORE = "wasi:keyvalue/store"
OPEN_CACHE_SECONDS = 5.0  # a bucket the target accepted is not asked about again this soon
BUCKET_TYPE_ID = 1
_IFACE = re.compile(r"^(?P<ns>[a-z0-9-]+):(?P<pkg>[a-z0-9-]+)/(?P<iface>[a-z0-9-]+)(@.+)?$")
# (wasi:config/store and wasi:logging/logging are served by the host: see services.py)


class ImportFailure(Exception):
    """A forwarded import call that failed; the message is for the component's caller."""


@dataclass(frozen=True)
class ImportedFunction:
    name: str  # as imported: "hello", "[method]bucket.get", "[static]r.make", "[constructor]r"
    sig: FuncSig

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
                funcs.append(ImportedFunction(fname, FuncSig.from_wasmtime(fitem)))
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
    metrics: Any = None  # host/metrics.py: counts link calls by source, link name, target
    tracing: Any = None  # lattice/tracing.py with --otlp-endpoint: a client span per link call

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
        self._accepted: dict[tuple[str, str, str, str], float] = {}
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
                            [(f.name, f.sig) for f in iface.functions],
                            component_id,
                            self.component_config,
                        )
                    continue
                with root.add_instance(iface.full_name) as inst:
                    for res in iface.resources:
                        inst.add_resource(res, ResourceType.host(BUCKET_TYPE_ID), self._drop)
                    for fn in iface.functions:
                        inst.add_func(fn.name, self._forwarder(component_id, iface, fn, timeout_ms))

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
                if is_open and self._recently_accepted(component_id, iface, args[0]):
                    return self._opened(sig, {"ok": None}, args[0])
                reply = self._invoke(component_id, iface, operation, wire, timeout_ms())
                if is_open and reply == {"ok": None}:
                    self._remember_accepted(component_id, iface, args[0])
                if is_open:
                    return self._opened(sig, reply, args[0])
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

    def _open_key(
        self, component_id: str, iface: ImportedInterface, identifier: str
    ) -> tuple[str, str, str, str] | None:
        name = self.link_name(component_id, iface.namespace, iface.package)
        link = find_link(
            self.links, component_id, iface.namespace, iface.package, iface.interface, name
        )
        return None if link is None else (component_id, link.target, name, identifier)

    def _recently_accepted(
        self, component_id: str, iface: ImportedInterface, identifier: str
    ) -> bool:
        """Skip the `open` round trip for a bucket this target accepted moments ago."""
        key = self._open_key(component_id, iface, identifier)
        return key is not None and self._accepted.get(key, 0.0) > time.monotonic()

    def _remember_accepted(
        self, component_id: str, iface: ImportedInterface, identifier: str
    ) -> None:
        key = self._open_key(component_id, iface, identifier)
        if key is not None:
            if len(self._accepted) > 10_000:
                self._accepted.clear()
            self._accepted[key] = time.monotonic() + OPEN_CACHE_SECONDS

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
                self._invoke, component_id, iface, operation, wire_args, timeout_ms
            )
        name = self.link_name(component_id, iface.namespace, iface.package)
        ident: Identity = (component_id, iface.namespace, iface.package, name)
        link = find_link(
            self.links, component_id, iface.namespace, iface.package, iface.interface, name
        )
        if pin:
            link = pin[0]
        where = f"component {component_id} import {iface.short} (link name {name!r})"
        if link is None:
            link = self._fresh(ident, iface.interface, timeout_ms)  # the copy may lag
        if link is None:
            raise ImportFailure(
                f"{where}: no link; add one with `lattice link put {component_id} <target> "
                f"{iface.namespace} {iface.package} --interface {iface.interface}"
                + ("" if name == "default" else f" --name {name}")
                + "`"
            )
        headers = {SOURCE_HEADER: component_id, LINK_NAME_HEADER: name}
        payload = codec.pack(wire_args)
        deadline = time.monotonic() + timeout_ms / 1000
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            target = link.target
            try:
                msg = self._request(
                    f"{self.lattice}.{target}.rpc.{operation}", payload, headers, remaining
                )
                miss = None
            except nats.errors.NoRespondersError:
                msg, miss = None, handoff.Miss.NO_RESPONDERS
            except (nats.errors.TimeoutError, concurrent.futures.TimeoutError, TimeoutError):
                self._count(component_id, name, target, operation, "timeout")
                raise ImportFailure(
                    f"{where}: target {target} did not answer {operation} within "
                    f"{timeout_ms / 1000:g}s (the outcome is unknown)"
                ) from None
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

    def _request(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout: float
    ) -> Any:
        """One NATS request from a worker thread, on the host's loop."""
        if timeout <= 0:
            raise TimeoutError
        if self.tracing is None:
            coro = self.nc.request(subject, payload, timeout=timeout, headers=headers)
        else:  # the span is made on the loop; this worker only hands over its call's context
            coro = self.tracing.request(
                self.nc,
                subject,
                payload,
                headers,
                timeout,
                current_trace(),
                _link_attrs(subject, headers),
            )
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            with blocked():
                return fut.result(timeout + 1)
        except BaseException:
            fut.cancel()
            raise

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
