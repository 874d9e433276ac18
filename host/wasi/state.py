"""Per-store state of the Python WASI layer: the resource table, output, deadline.

Every wasmtime `Store` served by this layer carries one `WasiState` as its store data
(`new_store`). Host functions receive only a `StoreContext`; `state_of` turns that back
into the `WasiState` through wasmtime's store-data pointer, so the state lives and dies
with the store: no global registry, nothing to clean up, and two stores can never see
each other's resources.

The resource table maps the integer `rep` that wasmtime keeps in its own handle table
for a host resource (`ResourceHost.own(rep, type_id)`) to the Python object behind it.
wasmtime checks handle types and ownership; the table only has to answer "which object
is rep N of this store". A store is used by one thread at a time (the pool hands an
instance to one worker), so the table needs no lock.

The deadline is the host-side half of the call deadline: epoch interruption stops wasm
code, but not a host function waiting in `wasi:io/poll` for a slow HTTP client, so every
blocking wait in this layer gives up (trapping the call) once `deadline` has passed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import structlog
import wasmtime
from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime import _value as wasmtime_value

if TYPE_CHECKING:
    from host.wasi.binding import HostResource

log = structlog.get_logger("lattice.guest")

OutputHandler = Callable[[str, bytes], None]
"""Receives guest output: (`"stdout"` or `"stderr"`, the bytes written)."""


class ResourceTable:
    """rep → Python object for the host resources one store's guest holds."""

    __slots__ = ("_items", "_next")

    def __init__(self) -> None:
        self._items: dict[int, HostResource] = {}
        self._next = 1

    def push(self, obj: HostResource) -> int:
        rep = self._next
        self._next += 1
        self._items[rep] = obj
        return rep

    def get(self, rep: int) -> HostResource:
        try:
            return self._items[rep]
        except KeyError:
            raise WasmtimeError(f"unknown host resource handle (rep {rep})") from None

    def take(self, rep: int) -> HostResource:
        """Remove and return: ownership moved from the guest to the host."""
        try:
            return self._items.pop(rep)
        except KeyError:
            raise WasmtimeError(f"unknown host resource handle (rep {rep})") from None

    def discard(self, rep: int) -> HostResource | None:
        return self._items.pop(rep, None)

    def __len__(self) -> int:
        return len(self._items)

    def kinds(self) -> dict[str, int]:
        """How many live objects of each class, for tests and leak hunting."""
        out: dict[str, int] = {}
        for obj in self._items.values():
            name = type(obj).__name__
            out[name] = out.get(name, 0) + 1
        return out


class LineLogger:
    """Default output handler: logs guest output line by line (bounded per line)."""

    MAX_LINE = 4096

    def __init__(self, **context: Any) -> None:
        self._log = log.bind(**context)
        self._partial: dict[str, bytes] = {}

    def __call__(self, stream: str, data: bytes) -> None:
        buf = self._partial.get(stream, b"") + data
        *lines, rest = buf.split(b"\n")
        for line in lines:
            self._emit(stream, line)
        if len(rest) > self.MAX_LINE:
            self._emit(stream, rest)
            rest = b""
        self._partial[stream] = rest

    def _emit(self, stream: str, line: bytes) -> None:
        text = line[: self.MAX_LINE].decode("utf-8", "replace").rstrip("\r")
        # info, not warning, for stderr too: a trap is reported (with the stderr tail)
        # by whoever ran the call
        self._log.info("guest output", stream=stream, line=text)


class WasiState:
    """Everything the Python WASI layer keeps for one store."""

    def __init__(
        self,
        *,
        env: list[tuple[str, str]] | None = None,
        args: list[str] | None = None,
        on_output: OutputHandler | None = None,
        blocking: Callable[[], AbstractContextManager[Any]] | None = None,
        outgoing: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.table = ResourceTable()
        self.env = list(env or [])
        self.args = list(args or [])
        self.on_output: OutputHandler = on_output or LineLogger()
        # Wrapped around every wait on something outside the store (a client, a timer),
        # so a worker pool can tell a parked worker from a busy one.
        self.blocking: Callable[[], AbstractContextManager[Any]] = (
            blocking or contextlib.nullcontext
        )
        self.deadline: float | None = None  # time.monotonic() seconds
        # Set while a call runs on the event loop (`WasiPool.serve_on_loop`), where a
        # wait would wait for the loop itself: the wait fails at once and sets
        # `would_wait`, and the exchange runs again on a worker.
        self.on_loop = False
        self.would_wait = False
        # (host, port) -> may this component send HTTP there; None denies everything
        self.outgoing = outgoing
        self.insecure_seed = (
            int.from_bytes(os.urandom(8), "little"),
            int.from_bytes(os.urandom(8), "little"),
        )

    def __bool__(self) -> bool:  # wasmtime.Store(data=...) ignores falsy data
        return True

    def set_deadline(self, timeout_ms: int | None) -> None:
        self.deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline); traps once it passed."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            # "interrupted" makes host.runtime.traps classify this like an epoch interrupt
            raise WasmtimeError(
                "interrupted: the call's deadline passed while the component waited on the host"
            )
        return left

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        if self.on_loop:
            self.would_wait = True
            raise WasmtimeError("would wait on the event loop: the call runs again on a worker")
        with self.blocking():
            yield


def new_store(engine: wasmtime.Engine, state: WasiState | None = None) -> wasmtime.Store:
    """A store whose data is `state` (a fresh one by default), as this layer requires."""
    return wasmtime.Store(engine, data=state or WasiState())


def state_of(store: Any) -> WasiState:
    """The `WasiState` of a `Store` or of the `StoreContext` a host function receives."""
    data = ffi.wasmtime_context_get_data(store._context())
    state = wasmtime_value._unintern(data) if data else None
    if not isinstance(state, WasiState):
        raise WasmtimeError(
            "this store has no host WASI state: create it with host.wasi.new_store(engine)"
        )
    return state
