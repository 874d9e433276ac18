"""Instance pools: bounded, warm, and isolated from the event loop.

A pool serves one component at one image. `count` (wasmCloud's max_instances) bounds
how many calls run at once: the pool runs at most that many worker threads, each owning
one instance (a wasmtime Store and its Instance) for the duration of a call. After a
clean return the instance goes back to the idle list and serves the next call warm;
after a trap, a deadline or a memory-limit failure it is dropped, since a store whose
call trapped cannot be entered again, and the next call instantiates a fresh one.

Why a work queue and not `run_in_executor` per call: the thread hop, not the wasm call,
dominated (a 20 µs call cost ~200 µs end to end). Here the event loop only enqueues;
workers decode msgpack, lift arguments, call, lower and encode the reply, and hand
finished calls back in batches with one loop wake-up per batch. Under load a worker
goes from one call to the next without sleeping.

How many workers: threads only help while a call runs wasm (the GIL is released
there); for short calls, extra threads just fight over the GIL (100 workers served
echo 8x slower than 2). So a pool starts up to one worker per CPU at once, and adds
more, up to `count`, only while every worker is stuck in one call — a slow or runaway
call never keeps queued calls waiting for long, and `count` calls can still run at once
when they need to.

Stuck means the call has burnt `STUCK_AFTER` of CPU (wasm or Python), has been out for
`SLOW_CALL` whatever it does, or waits on a forwarded import (`blocked`). A worker that
is merely waiting for the GIL or for a CPU is not stuck: under load every call waits so,
and counting wall time alone added a worker whenever the loop held the GIL for a batch
of messages (or found every worker between two calls); the workers never left, and the
~60 threads that a run of `bench invoke` piled up spent twice the host CPU per call
(383-430 µs against 203-210 µs for the componentize-py echo) at 0.6x the calls/s. A
worker above the eager number also leaves once no stuck call needs it: after a call
that left nothing queued, or after `IDLE_EXIT` without work.

Same-host link calls (`run_inline`): a component calling another component that has a
pool here runs the callee on the caller's own worker thread, with no NATS round trip and
no thread hop. The callee's `count` still bounds it: an inline call takes a *seat*
(running calls + queued calls + inline calls ≤ `count`), and with no seat free it raises
`PoolBusy` so the caller goes over NATS instead, where other hosts' replicas can take it
and a self-call or a cycle can never wait on a seat it holds itself. Its deadline is the
callee's own, capped by the time the caller's link call has left (what a NATS request
would still wait).

Calls on the event loop (`run_on_loop`): for a component whose imports can never wait
(host/runtime/nonblocking.py) and an export whose calls have proven shorter than
`LOOP_CALL_S`, the dispatcher runs the call on the loop itself, on a warm idle instance,
with no thread hop: the hop cost more than such a call. A loop call gets its own
deadline, `LOOP_BUDGET_MS`; past it the call is stopped and runs again on a worker (it
did nothing outside its instance), and the export must prove itself again. So the loop
is never held much longer than that budget (an epoch tick, 10 ms, at most), and a
component that only sometimes runs long costs the loop one budget now and then.

A worker whose call was stopped by a limit (its deadline or its memory cap) after
burning CPU for a quarter of it or more runs from then on at `RUNAWAY_NICE` (Linux threads
have a nice value each): a component that ran away once still gets every CPU cycle
nobody else wants, but its next runaway calls yield to its neighbours' when they
compete. A call that timed out waiting on an import is no runaway and demotes nothing.
The limits still stop it on time (the epoch ticker is not demoted). A thread's nice is
never raised again (that takes CAP_SYS_NICE); the worker leaves with its pool. Measured
with `python -m bench neighbour`: the neighbour's loaded p50 stays at its quiet one and
its one-at-a-time p99 drops by about a quarter (README, docs/security.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import structlog
import wasmtime
from wasmtime.component import Component, ExportIndex, Instance, Linker

from host.config import Limits
from host.runtime import traps
from host.runtime.call import BoundFunc
from host.runtime.engine import deadline_ticks
from host.runtime.exports import Export
from lattice import codec
from lattice.protocol.invocation import ErrorKind, InvocationError

STDERR_KEEP = 4096
INSTANTIATE_TIMEOUT_MS = 30_000
MAX_QUEUED = 10_000
EAGER_WORKERS = max(2, os.cpu_count() or 2)
STUCK_AFTER = 0.002  # CPU seconds a call burns before it counts as stuck
SLOW_CALL = 0.05  # seconds out in one call that count as stuck without burning CPU
IDLE_EXIT = 1.0  # seconds a surplus worker waits for work before it leaves
RUNAWAY_NICE = 19  # a worker's nice once a call of its was stopped by a limit
LOOP_CALL_S = 50e-6  # calls this short on average cost less than the thread hand-off
LOOP_PROVEN = 16  # calls of an export measured before its calls may run on the loop
LOOP_WEIGHT = 0.1  # a call's weight in its export's moving average of call times
LOOP_BUDGET_MS = 10  # a loop call's own deadline; past it the call runs again on a worker

log = structlog.get_logger("lattice.pool")

Done = Callable[[Any, InvocationError | None], None]


_worker_pool = threading.local()  # the pool a worker thread belongs to


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """Mark the calling worker as waiting on I/O (a forwarded import): its pool may add a
    worker at once instead of after `STUCK_AFTER`, so calls that wait on the network do
    not queue behind each other."""
    pool: InstancePool | None = getattr(_worker_pool, "pool", None)
    if pool is None:
        yield
        return
    ident = threading.get_ident()
    with pool._cv:
        pool._busy_since[ident] = float("-inf")
        pool._blocked += 1
        # only calls already queued need the recheck (`submit` counts blocked workers for
        # the ones that come later); skipping it spares the loop one wake-up per import
        queued = bool(pool._queue)
    if queued and pool._loop is not None:
        with contextlib.suppress(RuntimeError):
            pool._loop.call_soon_threadsafe(pool._recheck_spawn)
    try:
        yield
    finally:
        with pool._cv:
            pool._blocked -= 1
            if ident in pool._busy_since:
                pool._busy_since[ident] = time.monotonic()


def current_trace() -> Any:
    """The trace context of the call this worker thread runs (None: tracing off)."""
    return getattr(_worker_pool, "trace", None)


def _no_done(_result: Any, _error: InvocationError | None) -> None:
    """`Work.done` of an inline call, which returns its outcome instead."""


def _demote_this_thread() -> None:
    """Lower the calling worker thread's CPU priority to `RUNAWAY_NICE` (once; Linux)."""
    if getattr(_worker_pool, "demoted", False):
        return
    _worker_pool.demoted = True
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed
        tid = threading.get_native_id()
        nice = max(os.getpriority(os.PRIO_PROCESS, tid), RUNAWAY_NICE)
        os.setpriority(os.PRIO_PROCESS, tid, nice)


class PoolClosed(Exception):
    """The pool is draining; the caller should use the component's current pool."""


class OverBudget(Exception):
    """A call on the event loop had to stop (past `LOOP_BUDGET_MS`, or, for an HTTP
    exchange, about to wait): it runs again on a worker."""


class PoolBusy(Exception):
    """Every seat is taken (`run_inline`): send the call over NATS instead."""


@dataclass(slots=True)
class Work:
    export: Export
    args: Any  # msgpack bytes when `raw`, else already-decoded wire arguments
    raw: bool
    done: Done
    trace: Any = None  # the invocation's trace context (lattice/tracing.py), or None


@dataclass
class Slot:
    """One instance and the store it lives in; used by one thread at a time."""

    store: wasmtime.Store
    instance: Instance
    output: collections.deque[bytes]
    funcs: dict[str, BoundFunc] = field(default_factory=dict)
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
        loop_safe: bool = False,
    ) -> None:
        self.component_id = component_id
        self.engine = engine
        self.linker = linker
        self.component = component
        self.exports = exports
        self.limits = limits
        self.max_instances = max_instances
        self.closed = False
        # its calls never wait (host/runtime/nonblocking.py): short ones may run on the loop
        self.loop_safe = loop_safe
        # export -> (calls measured, moving average of their times) for `run_on_loop`;
        # written by any thread under the GIL: a lost update only shifts a switch a call
        self._speed: dict[str, tuple[int, float]] = {}
        self.instantiated = 0
        self.discarded = 0
        # calls and exchanges run on the event loop; those stopped there to run again on
        # a worker (the budget, or a wait): lattice_host_loop_runs/_stops_total
        self.loop_runs = 0
        self.loop_stops = 0
        self._indices = {op: self._export_index(e) for op, e in exports.items()}
        self._log = log.bind(component_id=component_id)
        # shared with worker threads, guarded by _cv
        self._cv = threading.Condition()
        self._queue: collections.deque[Work] = collections.deque()
        self._idle: list[Slot] = []
        self._workers = 0
        self._waiting_workers = 0
        self._busy_since: dict[int, float] = {}  # worker -> monotonic start of its call
        self._busy_cpu: dict[int, float] = {}  # worker -> its thread CPU time then
        self._clocks: dict[int, int] = {}  # worker -> its thread CPU clock
        self._blocked = 0
        self._inline = 0  # calls running on their callers' threads (run_inline)
        self._inline_drained: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._stopping = False
        # finished calls on their way back to the loop
        self._finished: collections.deque[tuple[Done, Any, InvocationError | None]] = (
            collections.deque()
        )
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # loop-thread only
        self._in_flight = 0
        self._drained: asyncio.Event | None = None
        self._spawn_check: asyncio.TimerHandle | None = None

    # -- sizing ---------------------------------------------------------------

    @property
    def warm(self) -> int:
        return len(self._idle)

    @property
    def in_flight(self) -> int:
        return self._in_flight + self._inline

    def call_timeout_ms(self) -> int:
        """The deadline of the call this thread runs: the component's own, capped for an
        inline call by the time its caller's link call has left (`run_inline`)."""
        cap = getattr(_worker_pool, "cap_ms", None)
        return self.limits.timeout_ms if cap is None else min(cap, self.limits.timeout_ms)

    async def resize(self, max_instances: int) -> None:
        with self._cv:
            self.max_instances = max_instances
            del self._idle[max_instances:]
            self._cv.notify_all()  # surplus workers notice and exit

    def warm_up(self, n: int) -> None:
        """Create up to `n` idle instances ahead of calls. Blocking."""
        n = min(n, self.max_instances)
        while self.warm < n:
            slot = self._instantiate()
            with self._cv:
                self._idle.append(slot)

    async def drain(self) -> None:
        """Refuse new calls, wait for queued and running ones, then release everything."""
        with self._cv:  # run_inline checks `closed` and takes its seat under the lock
            self.closed = True
        while self._in_flight > 0:
            self._drained = asyncio.Event()
            await self._drained.wait()
        loop = asyncio.get_running_loop()
        while True:  # inline calls, bounded by their deadlines
            with self._cv:
                if self._inline == 0:
                    break
                event = asyncio.Event()
                self._inline_drained = (loop, event)
            await event.wait()
        with self._cv:
            self._stopping = True
            self._idle.clear()
            self._cv.notify_all()

    # -- calls ----------------------------------------------------------------

    def submit(
        self, export: Export, args: Any, done: Done, *, raw: bool, trace: Any = None
    ) -> None:
        """Queue a call; `done(result, error)` runs later on this event loop.

        With `raw`, `args` is the msgpack request body and the result is the msgpack
        reply body. Raises PoolClosed when draining, InvocationError when overloaded.
        `trace` is what `current_trace()` answers on the worker while the call runs.
        """
        if self.closed:
            raise PoolClosed
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        with self._cv:
            if len(self._queue) >= MAX_QUEUED:
                raise InvocationError(
                    ErrorKind.UNAVAILABLE,
                    f"component {self.component_id} has {MAX_QUEUED} calls queued; try later",
                )
            self._queue.append(Work(export, args, raw, done, trace))
            if self._waiting_workers > 0:
                self._cv.notify()
            else:
                self._spawn_if_needed()
        self._in_flight += 1

    def _stuck(self, ident: int, since: float, now: float) -> bool:
        """Whether worker `ident`, in a call since `since`, is stuck in it. Holds _cv."""
        if now - since < STUCK_AFTER:
            return False
        if now - since >= SLOW_CALL:  # also a blocked worker (-inf)
            return True
        clock, cpu = self._clocks.get(ident), self._busy_cpu.get(ident)
        if clock is None or cpu is None:
            return True
        try:
            return time.clock_gettime(clock) - cpu >= STUCK_AFTER
        except OSError:  # the thread is gone
            return True

    def _surplus(self) -> bool:
        """More runnable workers than the eager number plus one per stuck call. Holds _cv."""
        runnable = self._workers - self._blocked
        if runnable <= EAGER_WORKERS:
            return False
        now = time.monotonic()
        stuck = sum(
            1
            for ident, since in self._busy_since.items()
            if since != float("-inf") and self._stuck(ident, since, now)
        )
        return runnable - stuck > EAGER_WORKERS

    def _spawn_if_needed(self) -> None:
        """Add a worker when calls wait and every worker is stuck in a call. Holds _cv."""
        if not self._queue or self._workers >= self.max_instances or self._stopping:
            return
        now = time.monotonic()
        busy = self._busy_since
        # a worker between two calls (not in `busy`) is about to take the next one
        stuck = len(busy) >= self._workers and all(
            self._stuck(ident, since, now) for ident, since in busy.items()
        )
        runnable = self._workers - self._blocked  # workers not parked on I/O
        if runnable < EAGER_WORKERS or (stuck and self._waiting_workers == 0):
            self._workers += 1
            threading.Thread(
                target=self._worker, name=f"wasm-{self.component_id}", daemon=True
            ).start()
        elif self._spawn_check is None and self._loop is not None:
            self._spawn_check = self._loop.call_later(STUCK_AFTER, self._recheck_spawn)

    def _recheck_spawn(self) -> None:
        self._spawn_check = None
        with self._cv:
            if self._waiting_workers == 0:
                self._spawn_if_needed()
            if self._queue and self._workers < self.max_instances and self._spawn_check is None:
                assert self._loop is not None
                self._spawn_check = self._loop.call_later(STUCK_AFTER, self._recheck_spawn)

    async def call(self, export: Export, wire_args: Any) -> Any:
        """Run `export` with decoded `wire_args`; returns the wire result.

        Raises InvocationError for every failure, PoolClosed when the pool is draining.
        """
        fut: Future[Any] = Future()

        def done(value: Any, error: InvocationError | None) -> None:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

        self.submit(export, wire_args, done, raw=False)
        return await asyncio.wrap_future(fut)

    def run_inline(
        self,
        export: Export,
        wire_args: Any,
        *,
        cap_ms: int | None = None,
        begin: Callable[[], Any] | None = None,
    ) -> tuple[Any, InvocationError | None]:
        """Run `export` on the calling thread (another pool's worker, in a same-host link
        call): `(wire result, None)`, or `(None, error)` for the call's own failure (not
        raised: the frozen InvocationError cannot pass through a `with` block's exit).
        Blocking; never on the event loop.

        Raises PoolClosed (draining: use the current pool), PoolBusy (no seat free: go
        over NATS). `cap_ms` caps the deadline at the time the caller's link call has
        left; `begin()` runs once the call has its seat, and what it returns is what
        `current_trace()` answers meanwhile, for the callee's own link calls.
        """
        with self._cv:
            if self.closed or self._stopping:
                raise PoolClosed
            if len(self._busy_since) + len(self._queue) + self._inline >= self.max_instances:
                raise PoolBusy
            self._inline += 1
        saved = getattr(_worker_pool, "trace", None), getattr(_worker_pool, "cap_ms", None)
        try:
            trace = begin() if begin is not None else None
            _worker_pool.trace, _worker_pool.cap_ms = trace, cap_ms
            result, error = self._run(Work(export, wire_args, False, _no_done, trace))
        finally:
            _worker_pool.trace, _worker_pool.cap_ms = saved
            self._leave_seat()
        return result, error

    def run_on_loop(self, export: Export, body: bytes, done: Done, trace: Any = None) -> bool:
        """Run a call here, on the event loop, and give `done` its outcome before
        returning True; or return False, and the caller `submit`s it to the workers.

        Only a component whose calls never wait (`loop_safe`), only an export whose
        calls have proven short (`_measured`), and only on a warm idle instance (the loop
        never instantiates). Calls queued meanwhile still go to the workers. For such a
        call the hand-off to a worker and back (two thread wake-ups, two GIL hand-overs)
        cost more than the call: `bench invoke` on the minimal echo measured the host's
        CPU per call at 100 in flight and the p50 overhead one at a time fall (README).
        A call that runs past `LOOP_BUDGET_MS` is stopped, its instance dropped, and it
        runs again on a worker with its full deadline (it did nothing outside the
        instance); the export proves itself again before its calls come back here.
        """
        op = export.operation
        slot = self._loop_seat() if self.fits_loop(op) else None
        if slot is None:
            return False
        over = False
        with self.on_loop(trace):
            try:
                result, error = self._run(Work(export, body, True, done, trace), slot)
            except OverBudget:
                result, error, over = None, None, True
        self.loop_runs += 1
        if over:
            self.loop_stops += 1
            self._speed.pop(op, None)  # the worker's run of it is the first measured again
            self.submit(export, body, done, raw=True, trace=trace)
        else:
            done(result, error)
        return True

    def _loop_seat(self) -> Slot | None:
        """A warm idle instance and a seat for a call on the event loop, or None when
        none is free now. The caller runs the call inside `on_loop`, which gives the
        seat back."""
        with self._cv:
            if self.closed or self._stopping or not self._idle:
                return None
            if len(self._busy_since) + self._inline >= self.max_instances:
                return None
            self._inline += 1  # a seat, as an inline call takes one
            return self._idle.pop()

    @contextlib.contextmanager
    def on_loop(self, trace: Any = None) -> Iterator[None]:
        """Around a call on the loop (after `_loop_seat`): its deadline is
        `LOOP_BUDGET_MS`, a stop there raises `OverBudget`, and the seat is given back."""
        saved = getattr(_worker_pool, "trace", None), getattr(_worker_pool, "cap_ms", None)
        _worker_pool.trace, _worker_pool.cap_ms = trace, LOOP_BUDGET_MS
        _worker_pool.budget = True
        try:
            yield
        finally:
            _worker_pool.trace, _worker_pool.cap_ms = saved
            _worker_pool.budget = False
            self._leave_seat()

    def fits_loop(self, operation: str) -> bool:
        """Whether `operation`'s calls have proven short enough for the loop (`_measured`)."""
        calls, average = self._speed.get(operation, (0, 0.0))
        return calls >= LOOP_PROVEN and average <= LOOP_CALL_S

    def _leave_seat(self) -> None:
        """An inline or loop call is over: wake a worker waiting for its seat, and
        `drain` if it waits for the last one."""
        with self._cv:
            self._inline -= 1
            if self._queue:
                self._cv.notify()  # a worker may have waited for this seat
            waiter = self._inline_drained if self._inline == 0 else None
            self._inline_drained = None if waiter else self._inline_drained
        if waiter is not None:
            with contextlib.suppress(RuntimeError):
                waiter[0].call_soon_threadsafe(waiter[1].set)

    # -- worker side ----------------------------------------------------------

    def _worker(self) -> None:
        _worker_pool.pool = self
        ident = threading.get_ident()
        with self._cv, contextlib.suppress(AttributeError, OSError):  # no clock: wall time only
            self._clocks[ident] = time.pthread_getcpuclockid(ident)
        try:
            self._take_calls(ident)
        finally:
            with self._cv:
                self._clocks.pop(ident, None)

    def _take_calls(self, ident: int) -> None:
        """Take calls until told to stop; `_workers` is decremented under the same lock
        hold that decides to leave, so two surplus workers never both leave for one."""
        while True:
            with self._cv:
                while True:
                    if self._stopping or self._workers > self.max_instances:
                        self._workers -= 1
                        return
                    # an inline call holds a seat too (only with inline calls can the
                    # running calls reach `count` while a worker is free)
                    if self._queue and len(self._busy_since) + self._inline < self.max_instances:
                        work = self._queue.popleft()
                        self._busy_since[ident] = time.monotonic()
                        self._busy_cpu[ident] = time.thread_time()
                        break
                    self._waiting_workers += 1
                    woken = self._cv.wait(IDLE_EXIT)
                    self._waiting_workers -= 1
                    if not woken and not self._queue and self._surplus():
                        self._workers -= 1
                        return
            _worker_pool.trace = work.trace  # for the call's forwarded imports
            result, error = self._run(work)
            with self._cv:
                self._busy_since.pop(ident, None)
                self._busy_cpu.pop(ident, None)
                # only with nothing queued: a worker back from a forwarded import would
                # otherwise leave and a new thread start for the next call that blocks
                leave = not self._queue and self._surplus()
                if leave:
                    self._workers -= 1
            self._finish(work.done, result, error)
            if leave:
                return

    def _run(self, work: Work, slot: Slot | None = None) -> tuple[Any, InvocationError | None]:
        op = work.export.operation
        try:
            if work.raw:
                try:
                    wire_args = codec.unpack(work.args) if work.args else []
                except codec.CodecError as exc:
                    raise InvocationError(
                        ErrorKind.BAD_ARGUMENT, f"body is not msgpack: {exc}"
                    ) from None
            else:
                wire_args = work.args
            try:
                args = codec.lift_args(work.export.sig, wire_args)
            except codec.CodecError as exc:
                raise InvocationError(ErrorKind.BAD_ARGUMENT, f"{op}: {exc}") from None
            value = self._call_blocking(work.export, args, slot)
            return (codec.pack(value) if work.raw else value), None
        except InvocationError as exc:
            return None, exc
        except OverBudget:
            raise
        except Exception as exc:  # a host bug must still answer the caller
            self._log.exception("call failed inside the host", operation=op)
            return None, InvocationError(ErrorKind.INTERNAL, f"{op}: {type(exc).__name__}: {exc}")

    def _finish(self, done: Done, result: Any, error: InvocationError | None) -> None:
        """Hand a finished call to the loop; one wake-up covers every call finished meanwhile."""
        self._finished.append((done, result, error))
        with self._cv:
            if self._wake_pending:
                return
            self._wake_pending = True
        assert self._loop is not None
        # a closed loop during shutdown has nobody waiting any more
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._cv:
            self._wake_pending = False
        while self._finished:
            done, result, error = self._finished.popleft()
            self._in_flight -= 1
            try:
                done(result, error)
            except Exception:
                self._log.exception("reply callback failed")
        if self._in_flight == 0 and self._drained is not None:
            self._drained.set()

    def _call_blocking(self, export: Export, args: list[Any], slot: Slot | None = None) -> Any:
        slot = slot or self._take_slot()
        healthy = False
        try:
            result = self._invoke(slot, export, args)
            healthy = True
            return result
        finally:
            self._return_slot(slot, healthy)

    def _take_slot(self) -> Slot:
        """A warm idle instance, or a fresh one. Worker threads only."""
        with self._cv:
            slot = self._idle.pop() if self._idle else None
        return slot if slot is not None else self._instantiate()

    def _return_slot(self, slot: Slot, healthy: bool) -> None:
        """Keep a healthy instance warm (within `count`); drop one that failed."""
        with self._cv:
            if healthy and len(self._idle) < self.max_instances and not self._stopping:
                self._idle.append(slot)
            elif not healthy:
                self.discarded += 1

    def _invoke(self, slot: Slot, export: Export, args: list[Any]) -> Any:
        func = slot.funcs.get(export.operation)
        if func is None:
            raw = slot.instance.get_func(slot.store, self._indices[export.operation])
            if raw is None:
                raise InvocationError(ErrorKind.INTERNAL, f"export {export.operation} vanished")
            func = slot.funcs[export.operation] = BoundFunc(raw, slot.store)
        slot.output.clear()
        slot.store.set_epoch_deadline(deadline_ticks(self.call_timeout_ms()))
        started = time.perf_counter()
        try:
            value = func.call(slot.store, *args)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            if self._over_budget(exc):
                raise OverBudget from None
            raise self._classify(exc, slot, export, time.perf_counter() - started) from None
        except (TypeError, ValueError) as exc:  # wasmtime-py refusing a lowered value
            raise InvocationError(ErrorKind.BAD_ARGUMENT, f"{export.operation}: {exc}") from None
        if self.loop_safe:
            self._measured(export.operation, time.perf_counter() - started)
        slot.calls += 1
        try:
            return codec.lower_result(export.sig, value)
        except codec.CodecError as exc:
            raise InvocationError(
                ErrorKind.INTERNAL, f"{export.operation}: result cannot be encoded: {exc}"
            ) from None

    def _measured(self, op: str, elapsed: float) -> None:
        """Add a finished call to its export's moving average (`LOOP_WEIGHT`), each
        call counted as at most `4 * LOOP_CALL_S`: one outlier (a first call on a
        thread, a preempted one on a busy machine) cannot take the export off the loop,
        a few long calls in a row do (three, after calls of a few microseconds). A call
        stopped by the loop's budget resets the average, and its run on a worker is the
        first call measured again."""
        elapsed = min(elapsed, 4 * LOOP_CALL_S)
        calls, average = self._speed.get(op, (0, 0.0))
        average = elapsed if calls == 0 else average + LOOP_WEIGHT * (elapsed - average)
        self._speed[op] = (calls + 1, average)

    def _over_budget(self, exc: Exception) -> bool:
        """A call on the loop stopped by `LOOP_BUDGET_MS`, not by its own deadline."""
        return (
            getattr(_worker_pool, "budget", False)
            and self.limits.timeout_ms > LOOP_BUDGET_MS
            and traps.is_interrupt(str(exc))
        )

    def _classify(
        self, exc: Exception, slot: Slot, export: Export, elapsed: float
    ) -> InvocationError:
        text, tail = str(exc), slot.stderr_tail()
        if traps.is_interrupt(text):
            kind = ErrorKind.TIMEOUT
            msg = (
                f"{export.operation} exceeded its deadline of {self.call_timeout_ms()} ms "
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
        if kind is not ErrorKind.TRAP and self._burnt_cpu(elapsed):
            _demote_this_thread()
        self._log.warning(
            "component call failed",
            operation=export.operation,
            kind=str(kind),
            reason=traps.summarize(text, tail),
            stderr=tail[-2000:] or None,
        )
        return InvocationError(kind, msg)

    def _burnt_cpu(self, elapsed: float) -> bool:
        """Whether this pool's own worker spent a quarter of the call or more on the CPU
        (a runaway, even on a crowded machine), not waiting on an import; an inline call
        runs on a caller's worker and demotes nothing."""
        if getattr(_worker_pool, "pool", None) is not self:
            return False
        since = self._busy_cpu.get(threading.get_ident())
        return since is not None and time.thread_time() - since >= elapsed / 4

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
        with self._cv:
            self.instantiated += 1
        return Slot(store=store, instance=instance, output=output)
