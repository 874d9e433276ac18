"""Instance pools: bounded, warm, and isolated from the event loop.

A pool serves one component at one image. `count` (wasmCloud's max_instances) bounds
how many calls run at once; each running call owns one instance (a wasmtime Store and
its Instance) on one worker thread. After a clean return the instance goes back to the
idle list and serves the next call warm; after a trap, a deadline or a memory-limit
failure it is dropped, since a store whose call trapped cannot be entered again, and
the next call instantiates a fresh one.

The gate (an adjustable semaphore) keeps excess calls waiting on the event loop rather
than in the thread pool, so `resize` takes effect for queued calls at once and `drain`
can wait for exactly the in-flight ones.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
import wasmtime
from wasmtime.component import Component, ExportIndex, Func, Instance, Linker

from host.config import Limits
from host.runtime import traps
from host.runtime.engine import deadline_ticks
from host.runtime.exports import Export
from lattice import codec
from lattice.protocol.invocation import ErrorKind, InvocationError

STDERR_KEEP = 4096
INSTANTIATE_TIMEOUT_MS = 30_000

log = structlog.get_logger("lattice.pool")


class GateClosed(Exception):
    """The pool is draining; the caller should use the component's current pool."""


class Gate:
    """An asyncio semaphore whose capacity can change while calls wait on it.

    Waiters queue FIFO and each release wakes exactly one of them, so a burst of
    thousands of queued calls costs O(1) per release (a Condition's notify_all would
    wake them all each time).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.active = 0
        self.closed = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: asyncio.Event | None = None

    async def __aenter__(self) -> None:
        if self.closed:
            raise GateClosed
        if self.active < self.capacity and not self._waiters:
            self.active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # resolved by _wake with the slot already counted as ours
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self.active -= 1
        self._wake()
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    def _wake(self) -> None:
        while self._waiters and (self.closed or self.active < self.capacity):
            fut = self._waiters.popleft()
            if fut.done():
                continue
            if self.closed:
                fut.set_exception(GateClosed())
            else:
                self.active += 1
                fut.set_result(None)

    async def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._wake()

    async def close(self) -> None:
        self.closed = True
        self._wake()

    async def wait_idle(self) -> None:
        while self.active > 0:
            self._idle = asyncio.Event()
            await self._idle.wait()


@dataclass
class Slot:
    """One instance and the store it lives in; used by one thread at a time."""

    store: wasmtime.Store
    instance: Instance
    output: collections.deque[bytes]
    funcs: dict[str, Func] = field(default_factory=dict)
    calls: int = 0

    def stderr_tail(self) -> str:
        return b"".join(self.output).decode("utf-8", "replace")[-STDERR_KEEP:]


class InstancePool:
    def __init__(
        self,
        *,
        component_id: str,
        engine: wasmtime.Engine,
        linker: Linker,
        component: Component,
        exports: dict[str, Export],
        limits: Limits,
        max_instances: int,
    ) -> None:
        self.component_id = component_id
        self.engine = engine
        self.linker = linker
        self.component = component
        self.exports = exports
        self.limits = limits
        self.max_instances = max_instances
        self._gate = Gate(max_instances)
        self._executor = self._new_executor(max_instances)
        self._idle: list[Slot] = []
        self._lock = threading.Lock()
        self._indices = {op: self._export_index(e) for op, e in exports.items()}
        self._log = log.bind(component_id=component_id)
        self.instantiated = 0
        self.discarded = 0

    # -- sizing ---------------------------------------------------------------

    def _new_executor(self, n: int) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            max_workers=max(1, n), thread_name_prefix=f"wasm-{self.component_id}"
        )

    async def resize(self, max_instances: int) -> None:
        if max_instances == self.max_instances:
            return
        old = self._executor
        if max_instances > self.max_instances:
            self._executor = self._new_executor(max_instances)
            old.shutdown(wait=False)
        self.max_instances = max_instances
        await self._gate.resize(max_instances)
        with self._lock:
            del self._idle[max_instances:]

    @property
    def warm(self) -> int:
        return len(self._idle)

    @property
    def in_flight(self) -> int:
        return self._gate.active

    def warm_up(self, n: int) -> None:
        """Create up to `n` idle instances ahead of calls. Blocking."""
        n = min(n, self.max_instances)
        while self.warm < n:
            slot = self._instantiate()
            with self._lock:
                self._idle.append(slot)

    async def drain(self) -> None:
        """Wait for in-flight calls to end, then release every instance."""
        await self._gate.close()
        await self._gate.wait_idle()
        with self._lock:
            self._idle.clear()
        self._executor.shutdown(wait=False)

    # -- calls ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._gate.closed

    async def call(self, export: Export, wire_args: Any) -> Any:
        """Run `export` with msgpack-decoded `wire_args`; returns the wire result.

        Raises InvocationError for every failure, GateClosed when the pool is draining.
        """
        try:
            args = codec.lift_args(export.sig, wire_args)
        except codec.CodecError as exc:
            raise InvocationError(ErrorKind.BAD_ARGUMENT, f"{export.operation}: {exc}") from None
        async with self._gate:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._call_blocking, export, args)

    def _call_blocking(self, export: Export, args: list[Any]) -> Any:
        with self._lock:
            slot = self._idle.pop() if self._idle else None
        if slot is None:
            slot = self._instantiate()
        healthy = False
        try:
            result = self._invoke(slot, export, args)
            healthy = True
            return result
        finally:
            with self._lock:
                if healthy and len(self._idle) < self.max_instances:
                    self._idle.append(slot)
                elif not healthy:
                    self.discarded += 1

    def _invoke(self, slot: Slot, export: Export, args: list[Any]) -> Any:
        func = slot.funcs.get(export.operation)
        if func is None:
            func = slot.instance.get_func(slot.store, self._indices[export.operation])
            if func is None:
                raise InvocationError(ErrorKind.INTERNAL, f"export {export.operation} vanished")
            slot.funcs[export.operation] = func
        slot.output.clear()
        slot.store.set_epoch_deadline(deadline_ticks(self.limits.timeout_ms))
        started = time.perf_counter()
        try:
            value = func(slot.store, *args)
            func.post_return(slot.store)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise self._classify(exc, slot, export, time.perf_counter() - started) from None
        except (TypeError, ValueError) as exc:  # wasmtime-py refusing a lowered value
            raise InvocationError(ErrorKind.BAD_ARGUMENT, f"{export.operation}: {exc}") from None
        slot.calls += 1
        try:
            return codec.lower_result(export.sig, value)
        except codec.CodecError as exc:
            raise InvocationError(
                ErrorKind.INTERNAL, f"{export.operation}: result cannot be encoded: {exc}"
            ) from None

    def _classify(
        self, exc: Exception, slot: Slot, export: Export, elapsed: float
    ) -> InvocationError:
        text, tail = str(exc), slot.stderr_tail()
        if traps.is_interrupt(text):
            kind = ErrorKind.TIMEOUT
            msg = (
                f"{export.operation} exceeded its deadline of {self.limits.timeout_ms} ms "
                f"(ran {elapsed * 1000:.0f} ms); the instance was discarded"
            )
        elif traps.is_out_of_memory(text, tail):
            kind = ErrorKind.RESOURCE_LIMIT
            msg = (
                f"{export.operation} ran out of memory (limit {self.limits.memory_mb} MiB): "
                f"{traps.summarize(text, tail)}; the instance was discarded"
            )
        else:
            kind = ErrorKind.TRAP
            msg = f"{export.operation} trapped: {traps.summarize(text, tail)}"
        self._log.warning(
            "component call failed",
            operation=export.operation,
            kind=str(kind),
            reason=traps.summarize(text, tail),
            stderr=tail[-2000:] or None,
        )
        return InvocationError(kind, msg)

    # -- instances ------------------------------------------------------------

    def _export_index(self, export: Export) -> ExportIndex:
        parent: ExportIndex | None = None
        for name in export.path:
            idx = self.component.get_export_index(name, parent)
            if idx is None:
                raise LookupError(f"export {'/'.join(export.path)} not found")
            parent = idx
        assert parent is not None
        return parent

    def _instantiate(self) -> Slot:
        output: collections.deque[bytes] = collections.deque(maxlen=64)
        store = wasmtime.Store(self.engine)
        wasi = wasmtime.WasiConfig()

        def capture(data: bytes) -> None:
            output.append(data)

        wasi.stdout_custom = capture
        wasi.stderr_custom = capture
        store.set_wasi(wasi)
        store.set_limits(memory_size=self.limits.memory_mb * 1024 * 1024)
        store.set_epoch_deadline(deadline_ticks(INSTANTIATE_TIMEOUT_MS))
        try:
            instance = self.linker.instantiate(store, self.component)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise InvocationError(
                ErrorKind.INTERNAL, f"component {self.component_id} failed to instantiate: {exc}"
            ) from None
        with self._lock:
            self.instantiated += 1
        return Slot(store=store, instance=instance, output=output)
