"""JetStream object stores as a wasi:blobstore store, through nats-py's object store.

Layout: container `c` is the object store bucket `{prefix}c` (stream `OBJ_{prefix}c`);
an object is stored as nats-py stores it: chunks on `$O.{bucket}.C.{nuid}` and one
meta message on `$O.{bucket}.M.{base64(name)}`. A write is `ObjectStore.put` fed part
by part through a blocking reader (`_PartReader`, at most two parts queued), so memory
stays bounded; the object appears when put publishes its meta message, which replaces
the old one in one step (a reader sees the old object or the new one). An aborted
write makes the reader fail, and put purges the chunks it had sent.

Reads fetch only the chunks a range needs, by sequence number (`STREAM.MSG.GET` with
`next_by_subj`); the sequence of each chunk found is remembered per object version
(`_ChunkMap`, the last 64 objects) so sequential reads cost one request per chunk.
Copy streams the source's chunks into a new put; move is copy, then delete.
"""

from __future__ import annotations

import asyncio
import bisect
import calendar
import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nats.errors as nx
import nats.js.errors as jx
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.object_store import ObjectStore

from providers.blobstore.backend import Backend, ObjectMeta, Writer
from providers.blobstore.semantics import (
    CHUNK,
    BlobError,
    Indeterminate,
    Unavailable,
    container_exists,
    no_container,
    no_object,
)

JS_TIMEOUT = 5.0
READER_WAIT = 600.0  # a parked reader gives up after this long (the janitor aborts sooner)
_EOF = object()
_ABORT = object()


@contextlib.contextmanager
def _errors(*, write: bool = False) -> Iterator[None]:
    lost = Indeterminate if write else Unavailable
    try:
        yield
    except (nx.TimeoutError, TimeoutError):
        raise lost("nats", "no answer from JetStream") from None
    except (nx.NoRespondersError, jx.NoStreamResponseError):
        raise Unavailable("nats", "JetStream is not available") from None
    except jx.ServiceUnavailableError as exc:
        raise Unavailable("nats", f"JetStream: {exc.description}") from None
    except (nx.ConnectionDrainingError, nx.OutboundBufferLimitError) as exc:
        raise Unavailable("nats", f"not connected ({type(exc).__name__})") from None
    except (
        nx.ConnectionClosedError,
        nx.ConnectionReconnectingError,
        nx.StaleConnectionError,
    ) as exc:
        raise lost("nats", f"connection lost ({type(exc).__name__})") from None
    except jx.NotFoundError:
        raise
    except jx.APIError as exc:
        raise BlobError(f"nats error: {exc.description or exc}") from None


def _epoch(text: str | datetime | None) -> int:
    """Seconds since the epoch of an RFC 3339 UTC time (any fraction); 0 if unreadable."""
    if isinstance(text, datetime):
        return int(text.timestamp())
    if not text:
        return 0
    try:
        return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0


class _PartReader:
    """A blocking reader (run by put in a worker thread) over parts queued by the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2)
        self._rest = memoryview(b"")
        self._done = False

    async def _next(self) -> Any:
        return await self.queue.get()

    def readinto(self, buf: bytearray) -> int:
        while not self._rest:
            if self._done:
                return 0
            item = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result(READER_WAIT)
            if item is _EOF:
                self._done = True
                return 0
            if item is _ABORT:
                raise BlobError("upload aborted")
            self._rest = memoryview(item)
        n = min(len(buf), len(self._rest))
        buf[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


class _NatsWriter(Writer):
    def __init__(self, obs: ObjectStore, name: str) -> None:
        self._reader = _PartReader(asyncio.get_running_loop())
        self._task = asyncio.ensure_future(obs.put(name, self._reader))  # type: ignore[arg-type]

    async def _send(self, item: Any) -> None:
        put = asyncio.ensure_future(self._reader.queue.put(item))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            self._failed()

    def _failed(self) -> None:
        exc = self._task.exception() if self._task.done() else None
        if exc is None:
            return
        with _errors(write=True):
            raise exc

    async def write(self, data: bytes) -> None:
        if self._task.done():
            self._failed()
            raise BlobError("nats error: the object store write stopped")
        await self._send(data)

    async def commit(self) -> None:
        await self._send(_EOF)
        with _errors(write=True):
            await self._task

    async def abort(self) -> None:
        if self._task.done():
            with contextlib.suppress(BaseException):
                self._task.result()
            return
        q = self._reader.queue
        while q.full():
            q.get_nowait()
        q.put_nowait(_ABORT)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._task, JS_TIMEOUT)


@dataclass(slots=True)
class _ChunkMap:
    """Where one object version's chunks are: sequence, offset and length of each."""

    seqs: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.offsets[-1] + self.lengths[-1] if self.offsets else 0

    def find(self, pos: int) -> int | None:
        i = bisect.bisect_right(self.offsets, pos) - 1
        if i >= 0 and pos < self.offsets[i] + self.lengths[i]:
            return i
        return None


class NatsBackend(Backend):
    backend = "nats"

    def __init__(self, nc: NATS, prefix: str) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=JS_TIMEOUT)
        self._prefix = prefix
        self._stores: dict[str, ObjectStore] = {}
        self._chunks: OrderedDict[tuple[str, str], _ChunkMap] = OrderedDict()

    @property
    def where(self) -> str:
        return f"nats object stores {self._prefix}*"

    def _bucket(self, container: str) -> str:
        return f"{self._prefix}{container}"

    def _ready(self) -> None:
        if not self._nc.is_connected:
            raise Unavailable("nats", "not connected")

    async def _store(self, container: str) -> ObjectStore:
        self._ready()
        obs = self._stores.get(container)
        if obs is not None:
            return obs
        with _errors():
            try:
                obs = await self._js.object_store(self._bucket(container))
            except jx.NotFoundError:
                raise no_container(container) from None
        self._stores[container] = obs
        return obs

    async def _gone(self, container: str) -> bool:
        """After a not-found answer: is the container itself gone? (drops it if so)"""
        self._stores.pop(container, None)
        return not await self.container_exists(container)

    async def _info(self, container: str, name: str) -> tuple[ObjectStore, api.ObjectInfo]:
        obs = await self._store(container)
        with _errors():
            try:
                return obs, await obs.get_info(name)
            except jx.NotFoundError:
                pass
        if await self._gone(container):
            raise no_container(container)
        raise no_object(container, name)

    # ------------------------------------------------------------------ containers

    async def create_container(self, container: str) -> None:
        self._ready()
        if await self.container_exists(container):
            raise container_exists(container)
        with _errors(write=True):
            bucket = self._bucket(container)
            self._stores[container] = await self._js.create_object_store(bucket)

    async def delete_container(self, container: str) -> None:
        self._ready()
        self._stores.pop(container, None)
        with _errors(write=True):
            try:
                await self._js.delete_object_store(self._bucket(container))
            except jx.NotFoundError:
                raise no_container(container) from None

    async def container_exists(self, container: str) -> bool:
        self._ready()
        with _errors():
            try:
                await self._js.stream_info(f"OBJ_{self._bucket(container)}")
            except jx.NotFoundError:
                return False
        return True

    async def container_created(self, container: str) -> int:
        self._ready()
        with _errors():
            try:
                info = await self._js.stream_info(f"OBJ_{self._bucket(container)}")
            except jx.NotFoundError:
                raise no_container(container) from None
        return _epoch(info.created)

    async def _names(self, container: str) -> list[str]:
        obs = await self._store(container)
        with _errors():
            try:
                infos = await obs.list(ignore_deletes=True)
            except jx.NotFoundError:
                if await self._gone(container):
                    raise no_container(container) from None
                return []
        return sorted(i.name for i in infos if not i.deleted)

    async def list_objects(
        self, container: str, after: str | None, limit: int
    ) -> tuple[list[str], bool]:
        names = await self._names(container)
        if after is not None:
            names = names[bisect.bisect_right(names, after) :]
        return names[:limit], len(names) > limit

    async def clear(self, container: str) -> None:
        await self.delete_objects(container, await self._names(container))

    # ------------------------------------------------------------------ objects

    async def object_info(self, container: str, name: str) -> ObjectMeta:
        _, info = await self._info(container, name)
        return ObjectMeta(size=info.size or 0, created_at=_epoch(info.mtime))

    def _map(self, bucket: str, nuid: str) -> _ChunkMap:
        key = (bucket, nuid)
        chunks = self._chunks.pop(key, None) or _ChunkMap()
        self._chunks[key] = chunks
        while len(self._chunks) > 64:
            self._chunks.popitem(last=False)
        return chunks

    async def _chunk(
        self, bucket: str, nuid: str, chunks: _ChunkMap, pos: int
    ) -> tuple[int, bytes]:
        """(offset, data) of the chunk holding byte `pos`."""
        stream, subject = f"OBJ_{bucket}", f"$O.{bucket}.C.{nuid}"
        i = chunks.find(pos)
        with _errors():
            if i is not None:
                msg = await self._js.get_msg(stream, seq=chunks.seqs[i])
                return chunks.offsets[i], msg.data or b""
            while True:
                seq = chunks.seqs[-1] + 1 if chunks.seqs else 1
                try:
                    msg = await self._js.get_msg(stream, seq=seq, subject=subject, next=True)
                except jx.NotFoundError:
                    raise BlobError(f"nats error: chunks of {bucket}/{nuid} are missing") from None
                data = msg.data or b""
                offset = chunks.end
                chunks.seqs.append(msg.seq or 0)
                chunks.offsets.append(offset)
                chunks.lengths.append(len(data))
                if pos < offset + len(data) or not data:
                    return offset, data

    async def read(
        self, container: str, name: str, start: int, length: int
    ) -> tuple[bytes, int, str]:
        _, info = await self._info(container, name)
        size = info.size or 0
        stop = min(start + length, size)
        out = bytearray()
        if start >= stop:
            return b"", size, info.nuid or ""
        bucket = self._bucket(container)
        chunks = self._map(bucket, info.nuid or "")
        pos = start
        while pos < stop:
            offset, data = await self._chunk(bucket, info.nuid or "", chunks, pos)
            if not data:
                raise BlobError(f"nats error: object {name!r} is shorter than its size")
            out += data[pos - offset : stop - offset]
            pos = offset + len(data) if offset + len(data) < stop else stop
        return bytes(out), size, info.nuid or ""

    async def delete_object(self, container: str, name: str) -> None:
        obs = await self._store(container)
        with _errors(write=True):
            try:
                await obs.delete(name)
            except jx.NotFoundError:
                if await self._gone(container):
                    raise no_container(container) from None

    async def begin_write(self, container: str, name: str) -> Writer:
        obs = await self._store(container)
        return _NatsWriter(obs, name)

    async def copy(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        _, info = await self._info(*src)
        if src == dest:
            return
        writer = await self.begin_write(*dest)
        try:
            pos, size = 0, info.size or 0
            while pos < size:
                data, _, version = await self.read(src[0], src[1], pos, CHUNK)
                if version != info.nuid:
                    raise BlobError(f"object {src[1]!r} was replaced while it was copied")
                if not data:
                    break
                await writer.write(data)
                pos += len(data)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def ping(self) -> None:
        self._ready()
        with _errors():
            await self._js.account_info()
