"""`lattice up --workers N`: N processes behind one host identity, one per core.

One Python event loop uses one core, and wasmtime calls need the GIL to enter and leave
the guest. The Rust hosts use every core; so does this: the host process (worker 0)
keeps the identity, the control interface, the inventory, the events, the providers and
the in-host HTTP server, and starts N-1 worker processes (host/worker.py). Each worker
has its own NATS connection and joins each component's RPC queue group with its own
instance pool, so NATS spreads calls across the workers as it does across hosts.

The scale count stays the host's: a component scaled to `count` gets `shares(count, N)`
instances, this process first (it always runs at least one, for the in-host HTTP path),
so the sum over workers is `count` and memory per instance does not grow.

The in-host http-server runs in every worker too (`provider_start`/`provider_stop`):
each copy listens on the same ports with SO_REUSEPORT, so the kernel spreads the HTTP
connections over the processes and a request goes to the warm instances of the process
that accepted it, with no NATS hop and no hand-over between processes.

The pipe protocol is one JSON object per line: the host writes commands on a worker's
stdin (`scale`, `update`, `provider_start`, `provider_stop`) and closes stdin to stop
it; the worker writes `ready`, `event` (what its component manager would have
published) and `status` (warm instances per component) on its stdout. A pipe rather
than NATS: it needs no subject permissions, and its end of file tells a worker that its
host is gone, even after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from lattice.protocol.messages import ScaleComponentRequest, UpdateComponentRequest

log = structlog.get_logger("lattice.workers")

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 120.0  # a first compile of a big component, if a worker must do one
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order (empty where that is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []


def cpu_for(index: int, first: int, cpus: list[int]) -> int:
    """Process `index` of a host's set, the host's own (0) on `cpus[first]`: hosts of one
    machine start at different CPUs (`first` from their pid), so they spread out too."""
    return cpus[(first + index) % len(cpus)]


def cpu_plan(pin: bool) -> Callable[[int], int | None]:
    """`--pin-cpus`: the CPU of each process of this host by index (0: the host's own),
    or None for all of them when it is off or the CPUs cannot be read."""
    cpus = usable_cpus() if pin else []
    if not cpus:
        return lambda _index: None
    first = os.getpid() % len(cpus)
    return lambda index: cpu_for(index, first, cpus)


_UNPINNED: set[int] = set()  # the CPUs this process had before pin_this_process


def pin_this_process(cpu: int) -> bool:
    """Every thread of this process on `cpu`; threads it starts later inherit it.

    Why: the event loop and the wasm threads hand the GIL to each other many times per
    request, and between two cores every hand-off wakes the other core. Measured with
    `wrk -c16` on the in-host hello_http, 2 cores, one process: 590 requests/s at
    2,016 µs CPU each unpinned, 1,413 at 705 µs pinned to one CPU."""
    try:
        _UNPINNED.update(os.sched_getaffinity(0))
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setaffinity(int(task), {cpu})
    except (AttributeError, OSError):
        return False
    return True


def release_child(pid: int) -> None:
    """Give a child process (a provider) the CPUs this one had before it was pinned: it
    inherited the pin, and its own threads, started later, inherit what it has then."""
    if _UNPINNED:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(pid, _UNPINNED)


def shares(count: int, workers: int) -> list[int]:
    """`count` instances over `workers` processes, the first ones taking the remainder:
    shares(5, 2) == [3, 2], shares(1, 3) == [1, 0, 0]."""
    base, extra = divmod(count, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[None] | None = None
    warm: dict[str, int] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    restarter: asyncio.Task[None] | None = None
    pending: dict[int, asyncio.Future[None]] = field(default_factory=dict)  # by command seq
    restarts: int = 0


class WorkerSet:
    """The host's side of its worker processes: start, tell, watch, restart, stop."""

    def __init__(
        self,
        n: int,
        start_data: dict[str, Any],
        host_id: str,
        lattice: str,
        cpu_of: Callable[[int], int | None] = lambda _index: None,
    ) -> None:
        self.n = n
        self._cpu_of = cpu_of  # --pin-cpus: the CPU of worker `index`
        self._data = start_data  # secrets included (host seed): written to a pipe only
        self._workers = [_Worker(i) for i in range(1, n)]
        self._desired: dict[str, ScaleComponentRequest] = {}  # what every worker should run
        # in-process providers every worker runs a copy of (the http-server), by id:
        # their start-up data, credentials included, written to the pipes only
        self._providers: dict[str, dict[str, Any]] = {}
        self._stopping = False
        self._seq = 0
        self._log = log.bind(host_id=host_id, lattice=lattice)

    # -- the arithmetic ---------------------------------------------------------

    def local_share(self, count: int) -> int:
        return shares(count, self.n)[0]

    def warm(self, component_id: str) -> int:
        return sum(w.warm.get(component_id, 0) for w in self._workers)

    def describe(self) -> list[dict[str, Any]]:
        """Per worker: pid, restarts and warm instances (for logs and tests)."""
        return [
            {
                "worker": w.index,
                "pid": w.proc.pid if w.proc else None,
                "restarts": w.restarts,
                "warm": dict(w.warm),
            }
            for w in self._workers
        ]

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start every worker in the background: the host serves alone until they are
        ready, and commands sent meanwhile wait in their pipes."""
        for w in self._workers:
            w.restarter = asyncio.create_task(self._spawn(w))

    async def _spawn(self, w: _Worker) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "host.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**20,
        )
        assert proc.stdin is not None
        w.proc, w.warm = proc, {}
        w.ready = asyncio.get_running_loop().create_future()
        data = {**self._data, "worker": w.index, "host_pid": os.getpid()}
        data["cpu"] = self._cpu_of(w.index)
        proc.stdin.write(base64.b64encode(json.dumps(data).encode()) + b"\n")
        for req in self._desired.values():  # its shares, whether new or restarted
            self._send(w, "scale", self._share(req, w))
        for provider in self._providers.values():
            self._send(w, "provider_start", provider)
        w.reader = asyncio.create_task(self._read(w, proc))
        try:
            await asyncio.wait_for(asyncio.shield(w.ready), START_TIMEOUT_S)
        except TimeoutError:  # its reader sees the exit and starts it again
            self._log.error("worker did not start in time", worker=w.index, s=START_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return
        except RuntimeError as exc:
            self._log.error("worker could not start", worker=w.index, error=str(exc))
            return
        self._log.info("worker started", worker=w.index, pid=proc.pid)

    async def _read(self, w: _Worker, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # not ours (a stray print in a library): ignore it
            if "ready" in msg and w.ready is not None and not w.ready.done():
                if msg.get("error"):
                    w.ready.set_exception(RuntimeError(f"worker {w.index}: {msg['error']}"))
                else:
                    w.ready.set_result(None)
            elif "done" in msg:
                done = w.pending.pop(int(msg["done"]), None)
                if done is not None and not done.done():
                    done.set_result(None)
            elif "status" in msg:
                w.warm = {str(k): int(v) for k, v in msg["status"].items()}
            elif msg.get("event") == "component_scale_failed":
                data = msg.get("data", {})
                self._log.warning(
                    "a worker could not run its share",
                    worker=w.index,
                    component_id=data.get("component_id"),
                    error=data.get("error"),
                )
        code = await proc.wait()
        w.warm = {}
        for done in w.pending.values():  # a dead worker finishes nothing: stop waiting
            if not done.done():
                done.set_result(None)
        w.pending.clear()
        if w.ready is not None and not w.ready.done():
            w.ready.set_exception(RuntimeError(f"worker {w.index} exited with code {code}"))
        if not self._stopping:
            w.restarter = asyncio.create_task(self._restart(w, code))

    async def _restart(self, w: _Worker, code: int) -> None:
        """A worker that died is started again and given its shares back."""
        delay = RESTART_BACKOFF_S[min(w.restarts, len(RESTART_BACKOFF_S) - 1)]
        w.restarts += 1
        self._log.warning("worker exited; restarting it", worker=w.index, code=code, delay=delay)
        await asyncio.sleep(delay)
        if not self._stopping:
            await self._spawn(w)

    async def stop(self) -> None:
        """Close every worker's stdin (they drain their calls and exit), then wait."""
        self._stopping = True
        starting = [w.restarter for w in self._workers if w.restarter is not None]
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        procs = [w.proc for w in self._workers if w.proc is not None]
        for proc in procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                with contextlib.suppress(Exception):
                    proc.stdin.close()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self._log.warning("worker did not stop in time; killing it", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        readers = [w.reader for w in self._workers if w.reader is not None]
        await asyncio.gather(*readers, return_exceptions=True)

    # -- commands ---------------------------------------------------------------

    def _share(self, req: ScaleComponentRequest, w: _Worker) -> dict[str, Any]:
        count = shares(req.count, self.n)[w.index]
        return req.model_copy(update={"count": count}).model_dump(mode="json")

    def _send(self, w: _Worker, op: str, body: dict[str, Any]) -> asyncio.Future[None] | None:
        """Write one command; the future ends when the worker has carried it out."""
        proc = w.proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return None  # a restart sends it again from _desired
        self._seq += 1
        done = asyncio.get_running_loop().create_future()
        w.pending[self._seq] = done
        line = json.dumps({"op": op, "seq": self._seq, "req": body}).encode() + b"\n"
        try:
            proc.stdin.write(line)
        except Exception:
            w.pending.pop(self._seq, None)
            return None
        return done

    async def scale(self, req: ScaleComponentRequest) -> None:
        if req.count == 0:
            self._desired.pop(req.component_id, None)
        else:
            self._desired[req.component_id] = req
        await self._wait([self._send(w, "scale", self._share(req, w)) for w in self._workers])

    async def update(self, req: UpdateComponentRequest) -> None:
        old = self._desired.get(req.component_id)
        if old is not None:
            change: dict[str, Any] = {"component_ref": req.new_component_ref}
            if req.annotations is not None:
                change["annotations"] = dict(req.annotations)
            self._desired[req.component_id] = old.model_copy(update=change)
        body = req.model_dump(mode="json")
        await self._wait([self._send(w, "update", body) for w in self._workers])

    async def start_provider(self, host_data: dict[str, Any]) -> None:
        """Every worker runs its own copy of an in-process provider (the http-server, on
        the same ports with SO_REUSEPORT), so the kernel spreads HTTP connections over
        the processes and each hands its requests to its own pools."""
        self._providers[str(host_data["provider_id"])] = host_data
        await self._wait([self._send(w, "provider_start", host_data) for w in self._workers])

    async def stop_provider(self, provider_id: str) -> None:
        if self._providers.pop(provider_id, None) is None:
            return
        body = {"provider_id": provider_id}
        await self._wait([self._send(w, "provider_stop", body) for w in self._workers])

    async def _wait(self, sent: list[asyncio.Future[None] | None]) -> None:
        """Until every worker has done what it was told, so the host's outcome event
        (component_scaled) speaks for all of them; bounded, a stuck worker is logged."""
        futures = [f for f in sent if f is not None]
        if not futures:
            return
        _, late = await asyncio.wait(futures, timeout=COMMAND_TIMEOUT_S)
        if late:
            self._log.warning("workers did not confirm a command in time", late=len(late))
