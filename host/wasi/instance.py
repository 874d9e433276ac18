"""Running components on the Python WASI layer: a pool for the host, one instance for tools.

`WasiPool` is the host's `InstancePool` with three differences: its stores carry a
`WasiState` (the layer keeps its resource table there), every call sets the state's
host-side deadline next to the epoch deadline, and it can run HTTP exchanges
(`serve_request(pool, ...)`) as ordinary pool work — queued, bounded by `count`, on a
worker thread, with a trapped instance discarded like any other. Guest stdout/stderr go
to the host log and to the slot's output buffer (for trap messages).

`WasiInstance` is a single instance behind a lock, re-created after a failure, for
tests, benchmarks and tools that have no pool; its exchanges run on the default
executor.

The pool subclass reaches into `InstancePool` internals (`_idle`, `_cv`, `_classify`,
`_indices`); they are one module apart and tested together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import structlog
import wasmtime
from wasmtime.component import Component, Instance, Linker

from host.config import Limits
from host.runtime import pool as runtime_pool
from host.runtime import traps
from host.runtime.call import BoundFunc
from host.runtime.engine import deadline_ticks
from host.runtime.exports import Export
from host.runtime.pool import INSTANTIATE_TIMEOUT_MS, InstancePool, OverBudget, Slot, Work
from host.wasi.http import Exchange, handler_export, last_line, run_handler
from host.wasi.layer import new_linker
from host.wasi.state import LineLogger, OutputHandler, WasiState, new_store, state_of
from lattice.protocol.invocation import ErrorKind, InvocationError

log = structlog.get_logger("lattice.wasi")

HANDLER_OPERATION = "wasi:http/incoming-handler.handle"
LOOP_EXCHANGE_S = 500e-6
"""CPU seconds an exchange may take on average, measured on the loop, to keep running
there (`serve_on_loop`). Ten times a call's `LOOP_CALL_S`: every host function an
exchange calls takes the GIL back from the loop, so its hand-off costs far more. For
hello_min (nine host functions, ~150 µs of CPU) the CPU per exchange fell from ~370 to
~175 µs on the loop, in one process with no HTTP server."""
LOOP_EXCHANGE_WEIGHT = 0.1  # an exchange's weight in the moving average of their CPU
LOOP_PROBE = 64  # off the loop, one exchange in this many runs there again, measured


def _pool_blocking() -> Callable[[], AbstractContextManager[Any]]:
    """`host.runtime.pool.blocked` when the pool offers it: a worker waiting on a client
    is parked, not busy, so the pool may add a worker at once."""
    return getattr(runtime_pool, "blocked", contextlib.nullcontext)


def client_gone(export: Export) -> InvocationError:
    """A guest that trapped on reading from or writing to a client that had closed its
    connection: still a trap (the instance is discarded), but said as what happened,
    with no guest traceback."""
    return InvocationError(
        ErrorKind.TRAP,
        f"{export.operation}: the client closed the connection mid-exchange and the "
        "component failed on its next read or write; the instance was discarded",
    )


def _ignore(result: Any, error: InvocationError | None) -> None:
    """Exchange outcomes reach the caller through the exchange itself."""


class WasiPool(InstancePool):
    """An instance pool for components that run on the Python WASI layer."""

    def __init__(
        self,
        *,
        env: list[tuple[str, str]] | None = None,
        outgoing: Callable[[str, int], bool] | None = None,
        loop_exchanges: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.env = list(env or [])
        self.outgoing = outgoing
        # its exchanges can only wait on their own body pipes
        # (host/runtime/nonblocking.py): short ones may run on the loop
        self.loop_exchanges = loop_exchanges
        # moving average of the handler's CPU on the loop (on a worker it would count
        # the GIL hand-offs too); exchanges sent to workers since it went over the limit
        self._exchange_cpu = 0.0
        self._off_loop = 0

    # -- HTTP -------------------------------------------------------------------------

    def start_exchange(self, exchange: Exchange) -> None:
        """Queue an HTTP exchange (event loop only); see `host.wasi.serve_request`."""
        export = self.exports.get(HANDLER_OPERATION)
        if export is None:
            raise InvocationError(
                ErrorKind.UNKNOWN_FUNCTION,
                f"component {self.component_id} does not export wasi:http/incoming-handler",
            )
        self.submit(export, exchange, _ignore, raw=False)

    def serve_on_loop(self, new_exchange: Callable[[], Exchange]) -> Exchange | None:
        """Serve an exchange here, on the event loop, and return it with its head set;
        or return None, and the caller queues one with `start_exchange`.

        Only for a component whose exchanges never wait but on their own pipes
        (`loop_exchanges`), and only on a warm idle instance. The hand-off to a worker
        costs an exchange more than it costs a call: every host function the guest calls
        takes the GIL back from the loop. Its exchanges start on the loop; when their
        CPU there averages over `LOOP_EXCHANGE_S` they go to the workers, and one in
        `LOOP_PROBE` comes back to be measured again. An exchange that would wait (its
        response outgrew the pipe) fails at once (`WasiState.on_loop`); one that runs
        past `LOOP_BUDGET_MS` is stopped. Either way its instance is dropped and a fresh
        exchange (`new_exchange()`: the caller gives only requests it holds whole) goes
        to the workers and is returned before it ran. Raises what `start_exchange`
        raises for that one.
        """
        export = self.exports.get(HANDLER_OPERATION)
        if export is None or not self.loop_exchanges:
            return None
        if self._exchange_cpu > LOOP_EXCHANGE_S:
            self._off_loop += 1
            if self._off_loop < LOOP_PROBE:
                return None
        slot = self._loop_seat()
        if slot is None:
            return None
        self._off_loop = 0
        exchange, state, stopped = new_exchange(), state_of(slot.store), False
        with self.on_loop():
            state.on_loop, state.would_wait = True, False
            started = time.thread_time()
            try:
                self._serve(export, exchange, slot)
            except OverBudget:
                stopped = True
            finally:
                state.on_loop = False
            # a stop counts as the longest exchange the average takes in
            longest = 4 * LOOP_EXCHANGE_S
            spent = longest if stopped else min(time.thread_time() - started, longest)
            self._exchange_cpu += LOOP_EXCHANGE_WEIGHT * (spent - self._exchange_cpu)
        self.loop_runs += 1
        if not stopped:
            return exchange
        self.loop_stops += 1
        exchange = new_exchange()
        self.start_exchange(exchange)
        return exchange

    def _run(self, work: Work) -> tuple[Any, InvocationError | None]:
        if isinstance(work.args, Exchange):
            return self._serve(work.export, work.args)
        return super()._run(work)

    def _serve(
        self, export: Export, exchange: Exchange, slot: Slot | None = None
    ) -> tuple[None, InvocationError | None]:
        """Run one exchange on `slot` (a loop call's), or on a warm or new instance.
        Raises `OverBudget` for an exchange on the loop that had to stop (`serve_on_loop`)."""
        healthy = False
        try:
            slot = slot or self._take_slot()
            handle = slot.funcs.get(export.operation)
            if handle is None:
                raw = slot.instance.get_func(slot.store, self._indices[export.operation])
                if raw is None:
                    raise InvocationError(ErrorKind.INTERNAL, f"export {export.operation} vanished")
                handle = slot.funcs[export.operation] = BoundFunc(raw, slot.store)
            slot.output.clear()
            state = state_of(slot.store)
            timeout = self.call_timeout_ms()
            slot.store.set_epoch_deadline(deadline_ticks(timeout))
            state.set_deadline(timeout)
            started = time.perf_counter()
            failure: list[InvocationError] = []
            stopped: list[bool] = []

            def explain(exc: BaseException) -> str:
                if not isinstance(exc, wasmtime.WasmtimeError | wasmtime.Trap):
                    return last_line(exc)
                if state.would_wait or self._over_budget(exc):
                    stopped.append(True)  # on the loop: it runs again on a worker
                    return "stopped on the event loop"
                if exchange.client_gone and not traps.is_interrupt(str(exc)):
                    err = client_gone(export)  # its read or write failed: not its trap
                    self._log.info("HTTP client went away mid-exchange", operation=export.operation)
                else:
                    err = self._classify(exc, slot, export, time.perf_counter() - started)
                failure.append(err)
                return err.message

            try:
                run_handler(slot.store, handle, exchange, explain)
            except (wasmtime.WasmtimeError, wasmtime.Trap):
                if stopped:
                    raise OverBudget from None
                raise failure[0] from None
            finally:
                state.deadline = None
            slot.calls += 1
            healthy = True
            return None, None
        except OverBudget:
            raise
        except InvocationError as exc:
            exchange.fail(exc.message)
            return None, exc
        except Exception as exc:  # a host bug must still answer the client
            self._log.exception("HTTP exchange failed inside the host")
            exchange.fail(f"host error: {type(exc).__name__}: {exc}")
            return None, InvocationError(ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            if slot is not None:
                self._return_slot(slot, healthy)

    # -- ordinary calls and instances --------------------------------------------------

    def _invoke(self, slot: Slot, export: Export, args: list[Any]) -> Any:
        state = state_of(slot.store)
        state.set_deadline(self.call_timeout_ms())
        try:
            return super()._invoke(slot, export, args)
        finally:
            state.deadline = None

    def _instantiate(self) -> Slot:
        output: collections.deque[bytes] = collections.deque(maxlen=64)
        logger = LineLogger(component_id=self.component_id)

        def on_output(stream: str, data: bytes) -> None:
            output.append(data)
            logger(stream, data)

        state = WasiState(
            env=self.env, on_output=on_output, blocking=_pool_blocking(), outgoing=self.outgoing
        )
        store = new_store(self.engine, state)
        store.set_limits(memory_size=self.limits.memory_mb * 1024 * 1024)
        store.set_epoch_deadline(deadline_ticks(INSTANTIATE_TIMEOUT_MS))
        state.set_deadline(INSTANTIATE_TIMEOUT_MS)
        try:
            instance = self.linker.instantiate(store, self.component)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise InvocationError(
                ErrorKind.INTERNAL, f"component {self.component_id} failed to instantiate: {exc}"
            ) from None
        finally:
            state.deadline = None
        with self._cv:
            self.instantiated += 1
        return Slot(store=store, instance=instance, output=output)


class WasiInstance:
    """One instance of a component on the Python WASI layer; re-created after a failure.

    Calls and exchanges are serialised (one store, one thread at a time). Blocking
    methods run on the calling thread; `start_exchange` runs on the default executor.
    """

    def __init__(
        self,
        engine: wasmtime.Engine,
        component: Component,
        *,
        linker: Linker | None = None,
        limits: Limits | None = None,
        env: list[tuple[str, str]] | None = None,
        on_output: OutputHandler | None = None,
    ) -> None:
        self.engine = engine
        self.component = component
        self.linker = linker or new_linker(engine, component)
        self.limits = limits or Limits()
        self.env = list(env or [])
        self.on_output = on_output
        self.instantiated = 0
        self.output: collections.deque[bytes] = collections.deque(maxlen=64)
        self._lock = threading.Lock()
        self._live: tuple[wasmtime.Store, Instance] | None = None
        self._funcs: dict[tuple[str, ...], BoundFunc] = {}
        self._handler_path = handler_export(engine, component)

    @property
    def store(self) -> wasmtime.Store | None:
        return self._live[0] if self._live is not None else None

    def instantiate(self) -> tuple[wasmtime.Store, Instance]:
        """The live (store, instance), created if needed. Blocking; not thread-safe on
        its own (`call` and `handle_blocking` hold the instance's lock around it)."""
        if self._live is None:
            output = self.output
            forward = self.on_output or LineLogger()

            def on_output(stream: str, data: bytes) -> None:
                output.append(data)
                forward(stream, data)

            state = WasiState(env=self.env, on_output=on_output)
            store = new_store(self.engine, state)
            store.set_limits(memory_size=self.limits.memory_mb * 1024 * 1024)
            store.set_epoch_deadline(deadline_ticks(INSTANTIATE_TIMEOUT_MS))
            state.set_deadline(INSTANTIATE_TIMEOUT_MS)
            try:
                instance = self.linker.instantiate(store, self.component)
            finally:
                state.deadline = None
            self._live = (store, instance)
            self._funcs.clear()
            self.instantiated += 1
        return self._live

    def _discard(self) -> None:
        self._live = None
        self._funcs.clear()

    def _func(self, *path: str) -> BoundFunc:
        func = self._funcs.get(path)
        if func is None:
            store, instance = self.instantiate()
            parent = None
            for name in path:
                parent = self.component.get_export_index(name, parent)
                if parent is None:
                    raise LookupError(f"export {'/'.join(path)} not found")
            found = instance.get_func(store, parent)
            if found is None:
                raise LookupError(f"export {'/'.join(path)} is not a function")
            func = self._funcs[path] = BoundFunc(found, store)
        return func

    def call(self, path: tuple[str, ...], *args: Any) -> Any:
        """Call an export, e.g. `call(("lattice:examples/echo@0.1.0", "echo"), "hi")`.

        Blocking; a failure discards the instance (the next call creates a new one).
        """
        with self._lock:
            func = self._func(*path)
            assert self._live is not None
            store = self._live[0]
            self._arm(store)
            try:
                return func.call(store, *args)
            except BaseException:
                self._discard()
                raise
            finally:
                state_of(store).deadline = None

    def _arm(self, store: wasmtime.Store) -> None:
        store.set_epoch_deadline(deadline_ticks(self.limits.timeout_ms))
        state_of(store).set_deadline(self.limits.timeout_ms)

    def handle_blocking(self, exchange: Exchange) -> None:
        """Run one HTTP exchange to the end on this thread (a failure is reported through
        the exchange, and the instance is replaced next time)."""
        with self._lock:
            self.output.clear()
            try:
                if self._handler_path is None:
                    raise LookupError("the component does not export wasi:http/incoming-handler")
                handle = self._func(*self._handler_path)
                assert self._live is not None
                store = self._live[0]
                self._arm(store)
            except Exception as exc:
                self._discard()
                exchange.fail(f"cannot run the component: {last_line(exc)}")
                return
            try:
                run_handler(store, handle, exchange, self._explain)
            except Exception:
                log.warning("HTTP handler failed", reason=exchange.failure)
                self._discard()  # a trapped store cannot be entered again
            finally:
                state_of(store).deadline = None

    def _explain(self, exc: BaseException) -> str:
        stderr = b"".join(self.output).decode("utf-8", "replace")
        return f"the component failed: {traps.summarize(str(exc), stderr)}"

    def start_exchange(self, exchange: Exchange) -> None:
        asyncio.get_running_loop().run_in_executor(None, self.handle_blocking, exchange)
