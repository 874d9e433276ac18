"""Photo-archive component: uploads go to wasi:blobstore, their index to wasi:keyvalue.

Built against `lattice:blobstore/archive-world`. Objects live in the container
`photos` of whatever store the component's blobstore link points at (a directory in
development, S3 or a NATS object store in production: only the link changes); the
keyvalue bucket "" records each upload's size under `photo:{name}`. Objects are written
and read as wasi:io streams in 64 KiB pieces, so neither `fill` nor `digest` ever holds
an object: the 100 MB bench goes through them (bench/blobstore.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import blobstore, container, store, streams, types, upload

CONTAINER = "photos"
PIECE = 64 * 1024
U64_MAX = 2**64 - 1


def _text(err: object) -> str:
    """Any imported error as a string (blobstore's is one; keyvalue's a variant)."""
    if isinstance(err, str):
        return err
    if isinstance(err, store.Error_Other):
        return err.value
    if isinstance(err, streams.StreamError_LastOperationFailed):
        return err.value.to_debug_string()
    return type(err).__name__


def _photos() -> container.Container:
    try:
        return blobstore.get_container(CONTAINER)
    except Err:
        return _create()


def _create() -> container.Container:
    try:
        return blobstore.create_container(CONTAINER)
    except Err:  # created meanwhile by another instance
        return blobstore.get_container(CONTAINER)


def _write(
    name: str,
    pieces: Callable[[], Iterable[bytes]],
    *,
    standard: bool = False,
    name_first: bool = True,
) -> int:
    """Stream `pieces()` into `name`; the object appears at finish. `name_first=False`
    writes the bytes before `write-data` names the object, as some wasmCloud examples do
    (the host keeps them in a spooled temp file until then).

    The link is resolved per import call, so a relink between `get-container` and the
    upload sends the upload to a store that may lack the container (a relink moves no
    data, not even containers): then the container is created there and the upload
    starts again, once.
    """
    for attempt in (1, 2):
        try:
            return _write_once(name, pieces(), standard, name_first)
        except Err as e:
            text = _text(e.value)
            if attempt == 2 or not ("container" in text and "does not exist" in text):
                raise
            _create()
    raise AssertionError("unreachable")


def _write_once(name: str, pieces: Iterable[bytes], standard: bool, name_first: bool) -> int:
    """`container.write-data` borrows two handles in one call, which wasmtime-py 50 traps
    on; `upload.write-data` names the container instead (components/wit-blobstore)."""
    box = _photos()
    value = types.OutgoingValue.new_outgoing_value()
    out = value.outgoing_value_write_body()

    def name_it() -> None:
        if standard:
            box.write_data(name, value)
        else:
            upload.write_data(CONTAINER, name, value)

    if name_first:
        name_it()
    size = 0
    for piece in pieces:
        out.blocking_write_and_flush(piece)
        size += len(piece)
    if not name_first:
        name_it()
    out.__exit__(None, None, None)  # drop the stream before finishing its value
    types.OutgoingValue.finish(value)
    return size


def _read(name: str) -> Iterator[bytes]:
    """The object's bytes, a piece at a time."""
    incoming = _photos().get_data(name, 0, U64_MAX)
    body = types.IncomingValue.incoming_value_consume_async(incoming)
    try:
        while True:
            try:
                piece = body.blocking_read(PIECE)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    return
                raise
            yield piece
    finally:
        body.__exit__(None, None, None)


def _split(data: bytes) -> Iterator[bytes]:
    return (data[i : i + PIECE] for i in range(0, len(data), PIECE))


def _index(name: str, size: int) -> None:
    with store.open("") as bucket:
        bucket.set(f"photo:{name}", str(size).encode())


class Archive(exports.Archive):
    def put(self, name: str, data: bytes) -> int:
        try:
            size = _write(name, lambda: _split(data), name_first=False)
            _index(name, size)
            return size
        except Err as e:
            raise Err(_text(e.value)) from None

    def put_wasi(self, name: str, data: bytes) -> int:
        try:
            return _write(name, lambda: _split(data), standard=True)
        except Err as e:
            raise Err(_text(e.value)) from None

    def get(self, name: str) -> bytes:
        try:
            return b"".join(_read(name))
        except Err as e:
            raise Err(_text(e.value)) from None

    def rename(self, name: str, to: str) -> None:
        src = types.ObjectId(container=CONTAINER, object=name)
        try:
            blobstore.move_object(src, types.ObjectId(container=CONTAINER, object=to))
        except Err as e:
            raise Err(_text(e.value)) from None

    def size(self, name: str) -> int:
        try:
            return _photos().object_info(name).size
        except Err as e:
            raise Err(_text(e.value)) from None

    def remove(self, name: str) -> bool:
        try:
            box = _photos()
            had = box.has_object(name)
            box.delete_object(name)
            return had
        except Err as e:
            raise Err(_text(e.value)) from None

    def names(self) -> list[str]:
        try:
            listing = _photos().list_objects()
            found: list[str] = []
            while True:
                batch, end = listing.read_stream_object_names(100)
                found.extend(batch)
                if end:
                    return found
        except Err as e:
            raise Err(_text(e.value)) from None

    def indexed(self, name: str) -> int | None:
        try:
            with store.open("") as bucket:
                raw = bucket.get(f"photo:{name}")
        except Err as e:
            raise Err(_text(e.value)) from None
        return None if raw is None else int(bytes(raw))

    def fill(self, name: str, size: int) -> str:
        digest = hashlib.sha256()

        def pieces() -> Iterator[bytes]:
            nonlocal digest
            digest = hashlib.sha256()  # afresh if the upload starts again
            block = bytes(range(256)) * (PIECE // 256)
            sent, n = 0, 0
            while sent < size:
                piece = (n.to_bytes(8, "little") + block[8:])[: size - sent]
                digest.update(piece)
                yield piece
                sent += len(piece)
                n += 1

        try:
            _write(name, pieces)  # not indexed: a bench object, not an upload
        except Err as e:
            raise Err(_text(e.value)) from None
        return digest.hexdigest()

    def digest(self, name: str) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        try:
            for piece in _read(name):
                digest.update(piece)
                size += len(piece)
        except Err as e:
            raise Err(_text(e.value)) from None
        return size, digest.hexdigest()
