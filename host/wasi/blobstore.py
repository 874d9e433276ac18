"""`wasi:blobstore@0.2.0-draft` for components, served by the provider their link names.

Theory of operation
-------------------
Blobstore has resources (containers, values, name streams) and `wasi:io` streams, which
the generic import bridge (host/runtime/imports.py) cannot forward. So a component
that imports it runs on the host's Python WASI layer (its streams are Python objects,
host/wasi/io.py), and this module defines the three interfaces (and
`lattice:blobstore/upload`, below) per component with host-owned resources whose
methods become the provider operations of docs/blobstore.md. Every call goes
through the bridge's `_invoke`: the link is resolved at call time (a `lattice link
put` reaches the next call), a `not-linked` answer re-reads the link, and a failure
names the component, interface and link name.

Memory stays bounded on this hop too; nothing holds an object:

* **writing**: `outgoing-value`'s output stream fills one part (`PART`, 512 KiB) and
  sends it as `write-data` part N before accepting more; `finish` sends the rest with
  `last`, which commits the object. Bytes written before `container.write-data` names
  the object go to a spooled temp file (in memory up to one part), so either call order
  of wasmCloud's examples works. Dropped without `finish`: `abort-write`.
* **reading**: `get-data` fetches the first chunk (so a missing object is an `err`
  there); the input stream fetches the next chunk (≤ 256 KiB) when the guest has read
  the last one, and fails if the object's `version` changes mid-read.
  `incoming-value-consume-sync` takes the whole value in one list, so it is refused above
  `SYNC_LIMIT`: read large objects as a stream.
* **listing**: a page of names at a time from `list-objects`.

An upload's parts and a read's chunks all go to the target the first one reached (the
bridge's `pin`), so a relink meanwhile lets them finish at the old store while its link
drains (docs/protocol.md); operations started after the relink go to the new one.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime.component import Component, Linker, Record

from host.wasi import io
from host.wasi.binding import Err, HostResource, Interface, Ok, define_imports, resource
from host.wasi.binding import imported_instances as _imported
from host.wasi.state import WasiState

PREFIX = "wasi:blobstore/"
UPLOAD = "lattice:blobstore/upload"
"""`write-data` naming its container: wasmtime-py 50 traps on host calls that borrow two
handles, as wasi:blobstore's `container.write-data` does (components/wit-blobstore)."""
PART = 512 * 1024
"""Bytes per `write-data` part (the providers' most, `MAX_PART`)."""
SYNC_LIMIT = 16 * 1024 * 1024
"""Most bytes `incoming-value-consume-sync` returns (one list: guest and host hold it)."""
LIST_PAGE = 1000


class BlobFailure(Exception):
    """A blobstore operation failed; the message is the WIT `error` the guest gets."""


def imports_blobstore(engine: wasmtime.Engine, component: Component) -> bool:
    """Whether the component imports any wasi:blobstore interface (it then needs the host's
    Python WASI layer: its values are streams the host must own)."""
    return any(is_blobstore(name) for name in _imported(engine, component))


def is_blobstore(interface_name: str) -> bool:
    """Served here, not by the generic bridge."""
    return interface_name.startswith((PREFIX, UPLOAD))


# -- talking to the provider ---------------------------------------------------------------


@dataclass(frozen=True)
class _Iface:
    """What the bridge's `_invoke` reads of an imported interface."""

    namespace: str
    package: str
    interface: str

    @property
    def short(self) -> str:
        return f"{self.namespace}:{self.package}/{self.interface}"


BLOBSTORE = _Iface("wasi", "blobstore", "blobstore")
CONTAINER = _Iface("wasi", "blobstore", "container")


@dataclass(frozen=True)
class Route:
    """One component's way to its blobstore link: the host's import bridge."""

    bridge: Any  # host.runtime.imports.ImportBridge (not imported: host/wasi stays below it)
    component_id: str
    timeout_ms: Callable[[], int]

    def call(
        self,
        state: WasiState,
        iface: _Iface,
        op: str,
        args: list[Any],
        pin: list[Any] | None = None,
    ) -> Any:
        """One provider operation; its `ok` value, or BlobFailure with the `err` text."""
        timeout = self.timeout_ms()
        left = state.remaining()
        if left is not None:
            timeout = max(1, min(timeout, int(left * 1000)))
        try:
            reply = self.bridge._invoke(
                self.component_id, iface, f"{iface.short}.{op}", args, timeout, pin=pin
            )
        except Exception as exc:  # ImportFailure: no link, timeout, target down
            raise BlobFailure(str(exc)) from None
        if isinstance(reply, dict) and "err" in reply:
            raise BlobFailure(str(reply["err"]))
        if not isinstance(reply, dict) or "ok" not in reply:
            raise BlobFailure(f"{iface.short}.{op}: the provider answered {type(reply).__name__}")
        return reply["ok"]


def _record(**fields: Any) -> Record:
    rec = Record()
    for key, value in fields.items():
        setattr(rec, key.replace("_", "-"), value)
    return rec


def _container_meta(ok: Any) -> Record:
    return _record(name=str(ok["name"]), created_at=int(ok["created-at"]))


def _object_id(rec: Any) -> dict[str, str]:
    return {"container": rec.container, "object": rec.object}


# -- resources -------------------------------------------------------------------------------


@resource("wasi:blobstore/container", "container")
class Container(HostResource):
    def __init__(self, link: Route, name: str) -> None:
        self.link = link
        self.name = name


@resource("wasi:blobstore/container", "stream-object-names")
class NameStream(HostResource):
    """A listing, a page at a time, from the store the first page came from."""

    def __init__(self, link: Route, state: WasiState, container: str) -> None:
        self.link, self.state, self.container = link, state, container
        self.pin: list[Any] = []
        self.names: list[str] = []
        self.cursor: str | None = None
        self.more = True
        self._page()

    def _page(self) -> None:
        ok = self.link.call(
            self.state,
            CONTAINER,
            "list-objects",
            [self.container, self.cursor, LIST_PAGE],
            self.pin,
        )
        self.names.extend(str(n) for n in ok["names"])
        self.cursor = ok.get("cursor")
        self.more = self.cursor is not None

    def take(self, n: int) -> tuple[list[str], bool]:
        while len(self.names) < n and self.more:
            self._page()
        out, self.names = self.names[:n], self.names[n:]
        return out, not self.names and not self.more


class UploadSink:
    """The output stream of an `outgoing-value`: parts to the provider as they fill."""

    writable: io.Readiness = io.ALWAYS

    def __init__(self) -> None:
        self.buf = bytearray()
        # bytes written before write-data named the object; closed by bind or abandon
        self.spool: Any = tempfile.SpooledTemporaryFile(max_size=PART)  # noqa: SIM115
        self.target: tuple[Route, WasiState, str, str] | None = None
        self.upload = secrets.token_hex(12)
        self.part = 0
        self.pin: list[Any] = []
        self.failure: str | None = None
        self.done = False

    # ByteSink
    def space(self) -> int:
        if self.failure is not None:
            raise io.StreamFailure(self.failure)
        if self.done:
            raise io.StreamFailure("the outgoing-value was already finished")
        return io.WRITE_BUDGET

    def write(self, data: bytes) -> None:
        self.space()
        if self.target is None:
            self.spool.write(data)
            return
        self.buf += data
        while len(self.buf) >= PART:
            self._send(bytes(self.buf[:PART]), last=False)
            del self.buf[:PART]

    # the object's side
    def bind(self, link: Route, state: WasiState, container: str, name: str) -> None:
        if self.target is not None:
            raise BlobFailure("this outgoing-value is already being written by write-data")
        self.target = (link, state, container, name)
        spool, self.spool = self.spool, None
        spool.seek(0)
        try:
            while piece := spool.read(PART):
                self.write(piece)
        except io.StreamFailure as exc:
            raise BlobFailure(str(exc)) from None
        finally:
            spool.close()

    def _send(self, data: bytes, *, last: bool) -> None:
        assert self.target is not None
        link, state, container, name = self.target
        try:
            link.call(
                state,
                CONTAINER,
                "write-data",
                [container, name, self.upload, self.part, data, last],
                self.pin,
            )
        except BlobFailure as exc:
            self.failure = str(exc)  # the provider aborted the upload
            raise io.StreamFailure(self.failure) from None
        self.part += 1

    def finish(self) -> None:
        if self.failure is not None:
            raise BlobFailure(self.failure)
        if self.target is None:
            self.abandon()
            raise BlobFailure("finish without write-data: the value was written to no object")
        try:
            self._send(bytes(self.buf), last=True)
        except io.StreamFailure as exc:
            raise BlobFailure(str(exc)) from None
        finally:
            self.done = True
            self.buf = bytearray()

    def abandon(self) -> None:
        """Dropped unfinished: the provider forgets the upload (nothing is stored)."""
        self.done = True
        self.buf = bytearray()
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if self.target is not None and self.part > 0 and self.failure is None:
            link, state, container, name = self.target
            # best effort: the provider expires it after upload_timeout anyway
            with contextlib.suppress(Exception):
                link.call(state, CONTAINER, "abort-write", [container, name, self.upload], self.pin)


@resource("wasi:blobstore/types", "outgoing-value")
class OutgoingValue(HostResource):
    def __init__(self) -> None:
        self.sink = UploadSink()
        self.stream_taken = False
        self.finished = False

    def on_drop(self) -> None:
        if not self.finished:
            self.sink.abandon()


class ChunkSource:
    """An object read as a stream: the next `get-data` chunk once the last one is read."""

    readable: io.Readiness = io.ALWAYS

    def __init__(self, value: IncomingValue) -> None:
        self.v = value
        self.head, self.offset = value.first, 0
        value.first = b""

    def read(self, n: int) -> bytes | None:
        while self.offset >= len(self.head):
            if self.v.next is None:
                return None
            try:
                self.head, self.offset = self.v.fetch(), 0
            except BlobFailure as exc:
                self.v.next = None
                raise io.StreamFailure(str(exc)) from None
        start = self.offset
        self.offset = min(len(self.head), start + n)
        return self.head[start : self.offset]

    def close_reader(self) -> None:
        self.head, self.offset = b"", 0
        self.v.next = None


@resource("wasi:blobstore/types", "incoming-value")
class IncomingValue(HostResource):
    def __init__(
        self, link: Route, state: WasiState, container: str, name: str, start: int, end: int
    ) -> None:
        self.link, self.state = link, state
        self.container, self.name, self.end = container, name, end
        self.pin: list[Any] = []
        self.version: Any = None
        self.next: int | None = start
        self.first = self.fetch()

    def fetch(self) -> bytes:
        assert self.next is not None
        ok = self.link.call(
            self.state,
            CONTAINER,
            "get-data",
            [self.container, self.name, self.next, self.end],
            self.pin,
        )
        if self.version is None:
            self.version, self.object_size = ok.get("version"), int(ok["size"])
            begin = self.next
            self.size = max(0, min(self.end + 1, self.object_size) - begin)
        elif ok.get("version") != self.version:
            raise BlobFailure(
                f"object {self.name!r} in container {self.container!r} was replaced while it "
                "was read"
            )
        self.next = ok.get("next")
        return bytes(ok["data"])


# -- the interfaces, per component ---------------------------------------------------------


def interfaces(link: Route) -> dict[str, Interface]:
    """wasi:blobstore's three interfaces, their calls going over `link`."""

    def wit(fn: Callable[..., Any]) -> Callable[..., Any]:
        """BlobFailure → `err(message)`; everything else as returned."""

        def run(state: WasiState, *args: Any) -> Any:
            try:
                return fn(state, *args)
            except BlobFailure as exc:
                return Err(str(exc))

        return run

    # wasi:blobstore/types
    def new_outgoing_value(state: WasiState) -> OutgoingValue:
        return OutgoingValue()

    def write_body(state: WasiState, v: OutgoingValue) -> Ok[Any] | Err[None]:
        if v.stream_taken:
            return Err(None)
        v.stream_taken = True
        return Ok(io.OutputStream(v.sink))

    def finish(state: WasiState, v: OutgoingValue) -> Ok[None]:
        v.finished = True
        v.sink.finish()
        return Ok(None)

    def consume_sync(state: WasiState, v: IncomingValue) -> Ok[bytes]:
        if v.size > SYNC_LIMIT:
            raise BlobFailure(
                f"object {v.name!r} is {v.size} bytes: incoming-value-consume-sync returns at "
                f"most {SYNC_LIMIT}; read it with incoming-value-consume-async"
            )
        parts, src = [], ChunkSource(v)
        try:
            while (piece := src.read(io.MAX_READ)) is not None:
                parts.append(piece)
        except io.StreamFailure as exc:
            raise BlobFailure(str(exc)) from None
        return Ok(b"".join(parts))

    def consume_async(state: WasiState, v: IncomingValue) -> Ok[io.InputStream]:
        return Ok(io.InputStream(ChunkSource(v)))

    def value_size(state: WasiState, v: IncomingValue) -> int:
        return v.size

    # wasi:blobstore/container
    def c_call(state: WasiState, c: Container, op: str, *args: Any) -> Any:
        return link.call(state, CONTAINER, op, [c.name, *args])

    def c_name(state: WasiState, c: Container) -> Ok[str]:
        return Ok(str(c_call(state, c, "name")))

    def c_info(state: WasiState, c: Container) -> Ok[Record]:
        return Ok(_container_meta(c_call(state, c, "info")))

    def get_data(state: WasiState, c: Container, name: str, start: int, end: int) -> Ok[Any]:
        return Ok(IncomingValue(link, state, c.name, name, start, end))

    def write_data(state: WasiState, c: Container, name: str, v: OutgoingValue) -> Ok[None]:
        v.sink.bind(link, state, c.name, name)
        return Ok(None)

    def upload_write_data(
        state: WasiState, container: str, name: str, v: OutgoingValue
    ) -> Ok[None]:
        v.sink.bind(link, state, container, name)
        return Ok(None)

    def list_objects(state: WasiState, c: Container) -> Ok[NameStream]:
        return Ok(NameStream(link, state, c.name))

    def delete_object(state: WasiState, c: Container, name: str) -> Ok[None]:
        c_call(state, c, "delete-object", name)
        return Ok(None)

    def delete_objects(state: WasiState, c: Container, names: list[str]) -> Ok[None]:
        c_call(state, c, "delete-objects", list(names))
        return Ok(None)

    def has_object(state: WasiState, c: Container, name: str) -> Ok[bool]:
        return Ok(bool(c_call(state, c, "has-object", name)))

    def object_info(state: WasiState, c: Container, name: str) -> Ok[Record]:
        ok = c_call(state, c, "object-info", name)
        return Ok(
            _record(
                name=str(ok["name"]),
                container=str(ok["container"]),
                created_at=int(ok["created-at"]),
                size=int(ok["size"]),
            )
        )

    def clear(state: WasiState, c: Container) -> Ok[None]:
        c_call(state, c, "clear")
        return Ok(None)

    def read_names(state: WasiState, s: NameStream, n: int) -> Ok[tuple[list[str], bool]]:
        s.state = state
        return Ok(s.take(n))

    def skip_names(state: WasiState, s: NameStream, n: int) -> Ok[tuple[int, bool]]:
        s.state = state
        skipped, end = s.take(n)
        return Ok((len(skipped), end))

    # wasi:blobstore/blobstore
    def b_call(state: WasiState, op: str, *args: Any) -> Any:
        return link.call(state, BLOBSTORE, op, list(args))

    def create_container(state: WasiState, name: str) -> Ok[Container]:
        b_call(state, "create-container", name)
        return Ok(Container(link, name))

    def get_container(state: WasiState, name: str) -> Ok[Container]:
        b_call(state, "get-container", name)
        return Ok(Container(link, name))

    def delete_container(state: WasiState, name: str) -> Ok[None]:
        b_call(state, "delete-container", name)
        return Ok(None)

    def container_exists(state: WasiState, name: str) -> Ok[bool]:
        return Ok(bool(b_call(state, "container-exists", name)))

    def copy_object(state: WasiState, src: Any, dest: Any) -> Ok[None]:
        b_call(state, "copy-object", _object_id(src), _object_id(dest))
        return Ok(None)

    def move_object(state: WasiState, src: Any, dest: Any) -> Ok[None]:
        b_call(state, "move-object", _object_id(src), _object_id(dest))
        return Ok(None)

    types_fns: Mapping[str, Callable[..., Any]] = {
        "[static]outgoing-value.new-outgoing-value": new_outgoing_value,
        "[method]outgoing-value.outgoing-value-write-body": write_body,
        "[static]outgoing-value.finish": wit(finish),
        "[static]incoming-value.incoming-value-consume-sync": wit(consume_sync),
        "[static]incoming-value.incoming-value-consume-async": consume_async,
        "[method]incoming-value.size": value_size,
    }
    container_fns = {
        "[method]container.name": c_name,
        "[method]container.info": c_info,
        "[method]container.get-data": get_data,
        "[method]container.write-data": write_data,
        "[method]container.list-objects": list_objects,
        "[method]container.delete-object": delete_object,
        "[method]container.delete-objects": delete_objects,
        "[method]container.has-object": has_object,
        "[method]container.object-info": object_info,
        "[method]container.clear": clear,
        "[method]stream-object-names.read-stream-object-names": read_names,
        "[method]stream-object-names.skip-stream-object-names": skip_names,
    }
    blobstore_fns = {
        "create-container": create_container,
        "get-container": get_container,
        "delete-container": delete_container,
        "container-exists": container_exists,
        "copy-object": copy_object,
        "move-object": move_object,
    }
    return {
        "wasi:blobstore/types": Interface(
            "wasi:blobstore/types", (OutgoingValue, IncomingValue), types_fns
        ),
        "wasi:blobstore/container": Interface(
            "wasi:blobstore/container",
            (Container, NameStream),
            {k: wit(f) for k, f in container_fns.items()},
        ),
        "wasi:blobstore/blobstore": Interface(
            "wasi:blobstore/blobstore", (), {k: wit(f) for k, f in blobstore_fns.items()}
        ),
        UPLOAD: Interface(UPLOAD, (), {"write-data": wit(upload_write_data)}),
    }


def define(
    linker: Linker,
    engine: wasmtime.Engine,
    component: Component,
    bridge: Any,
    component_id: str,
    timeout_ms: Callable[[], int],
) -> list[str]:
    """Define the component's wasi:blobstore imports in `linker` (one built with
    `host.wasi.new_linker`), served over its blobstore link through `bridge`."""
    return define_imports(
        linker, engine, component, interfaces(Route(bridge, component_id, timeout_ms))
    )
