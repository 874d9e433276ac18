"""`wasi:io` in Python: errors, pollables and byte streams, and the pipes behind them.

Theory of operation
-------------------
Everything that can make a guest wait is a `Readiness`: it says whether it is ready
now, optionally when it will become ready by itself (timers), and which `Signal` fires
when its state may have changed (pipes). A `Pollable` resource is a handle on one
readiness; `poll` waits for any of a list: it subscribes one `threading.Event` to all
their signals, re-checks, and sleeps until a signal, the nearest timer or the store's
deadline. The wait releases the GIL, so other workers and the event loop keep running.

Bytes move through `Pipe`s: bounded, thread-safe queues of chunks between one writer
and one reader that may live on different threads (the wasm worker and the asyncio
loop). The writer learns how much it may write (`space`, which backs
`output-stream.check-write`) and is woken when the reader drains; the reader is woken
when chunks arrive or the writer finishes or fails. Nothing ever holds more than
`capacity` bytes plus one chunk, which is what lets a 5 MB HTTP body stream through in
64 KiB pieces. Both ends can be waited on from threads (`Signal` + `Event`) and from
asyncio (`Signal` + `call_soon_threadsafe`).

`InputStream`/`OutputStream` are the WIT resources over a `ByteSource`/`ByteSink`:
pipes, sync iterators (pulled on the reading thread), or the log sink behind
stdout/stderr. Stream errors are `stream-error.closed` at the end, or
`last-operation-failed(error)` carrying an `IoError` with a message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from wasmtime import WasmtimeError
from wasmtime.component import Variant

from host.wasi.binding import Err, HostResource, Interface, Ok, resource
from host.wasi.state import WasiState

MAX_READ = 1024 * 1024  # most bytes one read returns, whatever length the guest asks for
WRITE_BUDGET = 64 * 1024  # most bytes one check-write permits: the largest chunk written
PIPE_CAPACITY = 256 * 1024  # bytes a pipe buffers before check-write reports 0
LOG_BUDGET = 1024 * 1024


class StreamFailure(Exception):
    """The stream failed (not just ended); the message reaches the guest as an io error."""


class StreamClosed(Exception):
    """The other end is gone; the guest sees `stream-error.closed`."""


CALLER_GONE = "the caller went away"


class CallerGone(Exception):
    """Raised by a request body whose sender went away (its client closed the
    connection; a ConnectionError from the body counts the same): the guest's read
    fails with CALLER_GONE, which is not its bug."""


# -- waiting -----------------------------------------------------------------------------


class Signal:
    """Wakes every subscribed waker when the state it guards may have changed."""

    __slots__ = ("_lock", "_wakers")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakers: set[Callable[[], None]] = set()

    def subscribe(self, waker: Callable[[], None]) -> None:
        with self._lock:
            self._wakers.add(waker)

    def unsubscribe(self, waker: Callable[[], None]) -> None:
        with self._lock:
            self._wakers.discard(waker)

    def notify(self) -> None:
        with self._lock:
            wakers = list(self._wakers)
        for wake in wakers:
            wake()


class Readiness(Protocol):
    signal: Signal | None

    def ready(self) -> bool: ...

    def ready_at(self) -> int | None:
        """`time.monotonic_ns()` at which this becomes ready without a signal, if ever."""
        ...


class Always:
    """Ready now and forever."""

    signal: Signal | None = None

    def ready(self) -> bool:
        return True

    def ready_at(self) -> int | None:
        return None


ALWAYS = Always()


class Timer:
    """Ready once `time.monotonic_ns()` reaches `when`."""

    signal: Signal | None = None

    def __init__(self, when_ns: int) -> None:
        self.when = when_ns

    def ready(self) -> bool:
        return time.monotonic_ns() >= self.when

    def ready_at(self) -> int | None:
        return self.when


class Condition:
    """Ready when `check()` is true; `signal` fires when it may have become true."""

    def __init__(self, check: Callable[[], bool], signal: Signal) -> None:
        self.check = check
        self.signal: Signal | None = signal

    def ready(self) -> bool:
        return self.check()

    def ready_at(self) -> int | None:
        return None


def wait_any(state: WasiState, items: Sequence[Readiness]) -> list[int]:
    """Block until at least one item is ready; their indices. Traps at the deadline."""
    ready = [i for i, r in enumerate(items) if r.ready()]
    if ready:
        return ready
    event = threading.Event()
    signals = {id(r.signal): r.signal for r in items if r.signal is not None}
    for sig in signals.values():
        sig.subscribe(event.set)
    try:
        with state.waiting():
            while True:
                ready = [i for i, r in enumerate(items) if r.ready()]
                if ready:
                    return ready
                timeout = state.remaining()
                timers = [t for r in items if (t := r.ready_at()) is not None]
                if timers:
                    until = max(0.0, (min(timers) - time.monotonic_ns()) / 1e9)
                    timeout = until if timeout is None else min(timeout, until)
                event.wait(timeout)
                event.clear()
    finally:
        for sig in signals.values():
            sig.unsubscribe(event.set)


# -- pipes and sources -------------------------------------------------------------------


class ByteSource(Protocol):
    readable: Readiness

    def read(self, n: int) -> bytes | None:
        """Up to n bytes; b"" when none are available yet, None at the end."""
        ...

    def close_reader(self) -> None: ...


class ByteSink(Protocol):
    writable: Readiness

    def space(self) -> int:
        """Bytes that may be written now (raises StreamClosed when the reader is gone)."""
        ...

    def write(self, data: bytes) -> None: ...


class Pipe:
    """A bounded queue of byte chunks from one writer to one reader, on any threads."""

    def __init__(self, capacity: int = PIPE_CAPACITY) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._offset = 0  # bytes of _chunks[0] already read
        self._buffered = 0
        self._finished = False
        self._error: str | None = None
        self._reader_gone = False
        self.on_readable = Signal()
        self.on_writable = Signal()
        self.readable: Readiness = Condition(self._readable_now, self.on_readable)
        self.writable: Readiness = Condition(self._writable_now, self.on_writable)

    # -- state ----------------------------------------------------------------------

    def _readable_now(self) -> bool:
        return self._buffered > 0 or self._finished

    def _writable_now(self) -> bool:
        return self._reader_gone or self._buffered < self.capacity

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def reader_gone(self) -> bool:
        return self._reader_gone

    # -- writer ---------------------------------------------------------------------

    def space(self) -> int:
        if self._reader_gone:
            raise StreamClosed
        if self._finished:
            raise StreamFailure("the stream was already finished")
        return max(0, self.capacity - self._buffered)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._reader_gone:
                raise StreamClosed
            if self._finished:
                raise StreamFailure("write after the stream was finished")
            if data:
                self._chunks.append(bytes(data))
                self._buffered += len(data)
        self.on_readable.notify()

    def finish(self, error: str | None = None) -> None:
        """End the stream; with `error` the reader fails once it drained what came before."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._error = error
        self.on_readable.notify()

    async def wait_writable(self) -> None:
        """For an asyncio writer: until there is space or the reader is gone."""
        await _wait_async(self.on_writable, self._writable_now)

    # -- reader ---------------------------------------------------------------------

    def read(self, n: int) -> bytes | None:
        """Up to n bytes from the front; b"" when nothing is buffered yet; None at the end."""
        with self._lock:
            if not self._chunks:
                if self._finished:
                    if self._error is not None:
                        raise StreamFailure(self._error)
                    return None
                return b""
            head = self._chunks[0]
            start = self._offset
            end = min(len(head), start + n)
            data = head[start:end] if (start or end < len(head)) else head
            if end == len(head):
                self._chunks.popleft()
                self._offset = 0
            else:
                self._offset = end
            self._buffered -= len(data)
        self.on_writable.notify()
        return data

    def take_whole(self) -> bytes | None:
        """Everything, if the writer has finished without an error (the reader is then
        done: the pipe is closed); else None and nothing is read."""
        with self._lock:
            if not self._finished or self._error is not None or self._reader_gone:
                return None
            chunks = list(self._chunks)
            if chunks and self._offset:
                chunks[0] = chunks[0][self._offset :]
            self._chunks.clear()
            self._buffered = 0
            self._reader_gone = True
        return b"".join(chunks)

    def read_chunk(self) -> bytes | None:
        """The next chunk as written (or its unread rest), b"" if none yet, None at end."""
        return self.read(1 << 62)

    def close_reader(self) -> None:
        """The reader stops reading: buffered data is dropped and writes fail from now on."""
        with self._lock:
            self._reader_gone = True
            self._chunks.clear()
            self._buffered = 0
        self.on_writable.notify()

    def wait_readable(self, timeout: float | None = None) -> bool:
        """For a thread reader: wait until readable; False on timeout."""
        return _wait_thread(self.on_readable, self._readable_now, timeout)

    async def aread_chunk(self) -> bytes | None:
        """For an asyncio reader: the next chunk, None at the end (StreamFailure on error)."""
        while True:
            chunk = self.read_chunk()
            if chunk != b"":
                return chunk
            await _wait_async(self.on_readable, self._readable_now)


def _wait_thread(signal: Signal, check: Callable[[], bool], timeout: float | None) -> bool:
    if check():
        return True
    event = threading.Event()
    signal.subscribe(event.set)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not check():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            event.wait(left)
            event.clear()
        return True
    finally:
        signal.unsubscribe(event.set)


async def _wait_async(signal: Signal, check: Callable[[], bool]) -> None:
    if check():
        return
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(woken.set)

    signal.subscribe(wake)
    try:
        while not check():
            await woken.wait()
            woken.clear()
    finally:
        signal.unsubscribe(wake)


class IterSource:
    """A source pulling chunks from a sync iterator, on the reading (worker) thread.

    `next()` may block (a file, a socket): that is the point of pulling lazily on the
    worker instead of on the event loop. Always "readable": a read just pulls.
    `close_reader` drops the iterator (so a body held by a request handle the guest has
    not dropped yet does not keep its data alive) but does not call its `close()`: it
    may run on another thread while the reader is inside `next()`.
    """

    readable: Readiness = ALWAYS

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it: Iterator[bytes] | None = iter(chunks)
        self._head = b""
        self._offset = 0

    def read(self, n: int) -> bytes | None:
        while self._offset >= len(self._head):
            it = self._it
            if it is None:
                return None
            try:
                chunk = next(it)
            except StopIteration:
                self._it = None
                return None
            except Exception as exc:
                self._it = None
                raise StreamFailure(f"request body failed: {type(exc).__name__}: {exc}") from None
            if not isinstance(chunk, bytes | bytearray | memoryview):
                self._it = None
                raise StreamFailure(f"body chunks must be bytes, got {type(chunk).__name__}")
            if self._it is None:  # closed meanwhile
                return None
            self._head, self._offset = bytes(chunk), 0
        start = self._offset
        self._offset = min(len(self._head), start + n)
        return self._head[start : self._offset]

    def close_reader(self) -> None:
        self._it = None
        self._head, self._offset = b"", 0


class EmptySource:
    """At its end from the start (stdin)."""

    readable: Readiness = ALWAYS

    def read(self, n: int) -> bytes | None:
        return None

    def close_reader(self) -> None:
        pass


class LogSink:
    """stdout/stderr: every write goes to the store's output handler; never full."""

    writable: Readiness = ALWAYS

    def __init__(self, state: WasiState, stream: str) -> None:
        self._state = state
        self._stream = stream

    def space(self) -> int:
        return LOG_BUDGET

    def write(self, data: bytes) -> None:
        self._state.on_output(self._stream, bytes(data))


# -- resources ---------------------------------------------------------------------------


@resource("wasi:io/error", "error")
class IoError(HostResource):
    def __init__(self, message: str) -> None:
        self.message = message


@resource("wasi:io/poll", "pollable")
class Pollable(HostResource):
    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness


@resource("wasi:io/streams", "input-stream")
class InputStream(HostResource):
    def __init__(self, source: ByteSource, *, on_drop: Callable[[], None] | None = None) -> None:
        self.source = source
        self._on_drop = on_drop

    def on_drop(self) -> None:
        self.source.close_reader()
        if self._on_drop is not None:
            self._on_drop()


@resource("wasi:io/streams", "output-stream")
class OutputStream(HostResource):
    def __init__(self, sink: ByteSink, *, on_drop: Callable[[], None] | None = None) -> None:
        self.sink = sink
        self.permit = 0  # bytes the last check-write allowed and no write used yet
        self._on_drop = on_drop

    def on_drop(self) -> None:
        if self._on_drop is not None:
            self._on_drop()


def failed(message: str) -> Variant:
    """`stream-error.last-operation-failed` with an io error carrying `message`."""
    return Variant("last-operation-failed", IoError(message))


CLOSED = Variant("closed")


# -- wasi:io/error and wasi:io/poll ------------------------------------------------------


def _to_debug_string(state: WasiState, err: IoError) -> str:
    return err.message


def _pollable_ready(state: WasiState, p: Pollable) -> bool:
    return p.readiness.ready()


def _pollable_block(state: WasiState, p: Pollable) -> None:
    wait_any(state, [p.readiness])


def _poll(state: WasiState, pollables: list[Pollable]) -> list[int]:
    if not pollables:
        raise WasmtimeError("wasi:io/poll#poll called with an empty list")
    return wait_any(state, [p.readiness for p in pollables])


# -- wasi:io/streams: input ---------------------------------------------------------------


def _read(state: WasiState, s: InputStream, n: int) -> Ok[bytes] | Err[Variant]:
    try:
        data = s.source.read(min(n, MAX_READ))
    except StreamFailure as exc:
        return Err(failed(str(exc)))
    return Err(CLOSED) if data is None else Ok(data)


def _blocking_read(state: WasiState, s: InputStream, n: int) -> Ok[bytes] | Err[Variant]:
    if n == 0:
        return _read(state, s, 0)
    while True:
        wait_any(state, [s.source.readable])
        result = _read(state, s, n)
        if not (isinstance(result, Ok) and result.value == b""):
            return result


def _skip(state: WasiState, s: InputStream, n: int) -> Ok[int] | Err[Variant]:
    result = _read(state, s, n)
    return Ok(len(result.value)) if isinstance(result, Ok) else result


def _blocking_skip(state: WasiState, s: InputStream, n: int) -> Ok[int] | Err[Variant]:
    result = _blocking_read(state, s, n)
    return Ok(len(result.value)) if isinstance(result, Ok) else result


def _input_subscribe(state: WasiState, s: InputStream) -> Pollable:
    return Pollable(s.source.readable)


# -- wasi:io/streams: output --------------------------------------------------------------


def _check_write(state: WasiState, s: OutputStream) -> Ok[int] | Err[Variant]:
    try:
        s.permit = min(s.sink.space(), WRITE_BUDGET)
    except StreamClosed:
        return Err(CLOSED)
    except StreamFailure as exc:
        return Err(failed(str(exc)))
    return Ok(s.permit)


def _write(state: WasiState, s: OutputStream, data: bytes) -> Ok[None] | Err[Variant]:
    if len(data) > s.permit:
        msg = f"write of {len(data)} bytes exceeds the {s.permit} bytes check-write permitted"
        return Err(failed(msg))
    try:
        s.sink.write(data)
    except StreamClosed:
        return Err(CLOSED)
    except StreamFailure as exc:
        return Err(failed(str(exc)))
    s.permit -= len(data)
    return Ok(None)


def _blocking_write_and_flush(
    state: WasiState, s: OutputStream, data: bytes
) -> Ok[None] | Err[Variant]:
    """Writes all of `data`, waiting for space as needed (WASI allows up to 4096 bytes per
    call; this layer accepts any size)."""
    view = memoryview(data)
    while True:
        result = _check_write(state, s)
        if isinstance(result, Err):
            return result
        if result.value == 0:
            wait_any(state, [s.sink.writable])
            continue
        piece, view = view[: result.value], view[result.value :]
        written = _write(state, s, bytes(piece))
        if isinstance(written, Err) or not view:
            return written


def _flush(state: WasiState, s: OutputStream) -> Ok[None] | Err[Variant]:
    """Writes reach the reader at once; there is nothing to flush. Reports a closed end."""
    result = _check_write(state, s)
    return result if isinstance(result, Err) else Ok(None)


def _output_subscribe(state: WasiState, s: OutputStream) -> Pollable:
    return Pollable(s.sink.writable)


def _write_zeroes(state: WasiState, s: OutputStream, n: int) -> Ok[None] | Err[Variant]:
    return _write(state, s, bytes(n))


def _blocking_write_zeroes_and_flush(
    state: WasiState, s: OutputStream, n: int
) -> Ok[None] | Err[Variant]:
    return _blocking_write_and_flush(state, s, bytes(n))


def _splice(
    state: WasiState, dst: OutputStream, src: InputStream, n: int
) -> Ok[int] | Err[Variant]:
    permit = _check_write(state, dst)
    if isinstance(permit, Err):
        return permit
    got = _read(state, src, min(n, permit.value))
    if isinstance(got, Err):
        return got
    written = _write(state, dst, got.value)
    return written if isinstance(written, Err) else Ok(len(got.value))


def _blocking_splice(
    state: WasiState, dst: OutputStream, src: InputStream, n: int
) -> Ok[int] | Err[Variant]:
    wait_any(state, [dst.sink.writable])
    permit = _check_write(state, dst)
    if isinstance(permit, Err):
        return permit
    got = _blocking_read(state, src, min(n, max(1, permit.value)))
    if isinstance(got, Err):
        return got
    written = _blocking_write_and_flush(state, dst, got.value)
    return written if isinstance(written, Err) else Ok(len(got.value))


ERROR = Interface(
    "wasi:io/error",
    resources=(IoError,),
    functions={"[method]error.to-debug-string": _to_debug_string},
)

POLL = Interface(
    "wasi:io/poll",
    resources=(Pollable,),
    functions={
        "[method]pollable.ready": _pollable_ready,
        "[method]pollable.block": _pollable_block,
        "poll": _poll,
    },
)

STREAMS = Interface(
    "wasi:io/streams",
    resources=(InputStream, OutputStream),
    functions={
        "[method]input-stream.read": _read,
        "[method]input-stream.blocking-read": _blocking_read,
        "[method]input-stream.skip": _skip,
        "[method]input-stream.blocking-skip": _blocking_skip,
        "[method]input-stream.subscribe": _input_subscribe,
        "[method]output-stream.check-write": _check_write,
        "[method]output-stream.write": _write,
        "[method]output-stream.blocking-write-and-flush": _blocking_write_and_flush,
        "[method]output-stream.flush": _flush,
        "[method]output-stream.blocking-flush": _flush,
        "[method]output-stream.subscribe": _output_subscribe,
        "[method]output-stream.write-zeroes": _write_zeroes,
        "[method]output-stream.blocking-write-zeroes-and-flush": _blocking_write_zeroes_and_flush,
        "[method]output-stream.splice": _splice,
        "[method]output-stream.blocking-splice": _blocking_splice,
    },
)

INTERFACES = (ERROR, POLL, STREAMS)
