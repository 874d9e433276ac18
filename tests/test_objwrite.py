"""Pipelined object writes (`lattice.artifacts.objwrite`) against a real nats-server:
what nats-py's own object store reads back, replacement, and a refused write."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from lattice.artifacts.objwrite import ObjectWriteError, _Resume, put_object

CHUNK = 64 * 1024
ObjStore = tuple[Any, Any, str, Any]


@pytest.fixture
async def objstore(nats_url: str) -> AsyncIterator[ObjStore]:
    """(connection, JetStream, bucket name, object store) of a fresh bucket, removed after."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    bucket = f"objw{uuid.uuid4().hex[:8]}"
    store = await js.create_object_store(bucket)
    try:
        yield nc, js, bucket, store
    finally:
        await js.delete_object_store(bucket)
        await nc.close()


async def test_nats_py_reads_a_pipelined_object_and_a_replacement_frees_old_chunks(
    objstore: ObjStore,
) -> None:
    nc, js, bucket, store = objstore
    first = os.urandom(CHUNK * 40 + 123)  # 41 chunks, the last one short
    await put_object(nc, store, bucket, "a", first, {"X-Kind": "test"}, CHUNK)
    got = await store.get("a")
    assert got.data == first
    assert got.info.size == len(first) and got.info.chunks == 41
    assert got.info.headers and got.info.headers.get("X-Kind") in ("test", ["test"])

    second = os.urandom(CHUNK * 3)
    await put_object(nc, store, bucket, "a", second, {}, CHUNK)
    assert (await store.get("a")).data == second
    stream = await js.stream_info(f"OBJ_{bucket}")
    assert stream.state.messages == 3 + 1  # the new chunks and one meta: old ones purged

    await put_object(nc, store, bucket, "empty", b"", {}, CHUNK)
    assert (await store.get("empty")).data == b""


async def test_a_chunk_the_store_refuses_commits_nothing(objstore: ObjStore) -> None:
    nc, js, bucket, store = objstore
    # a stream capped below the object's size refuses chunks once full
    info = await js.stream_info(f"OBJ_{bucket}")
    info.config.max_bytes = CHUNK * 4
    await js.update_stream(info.config)
    with pytest.raises(ObjectWriteError, match="refused a chunk of big"):
        await put_object(nc, store, bucket, "big", os.urandom(CHUNK * 20), {}, CHUNK)
    with pytest.raises(NotFoundError):
        await store.get_info("big")
    assert (await js.stream_info(f"OBJ_{bucket}")).state.messages == 0


class _CutOff(Exception):
    """Stands in for a connection lost or a process stopped mid-write."""


async def test_a_write_cut_off_resumes_where_it_stopped(objstore: ObjStore, tmp_path) -> None:
    nc, js, bucket, store = objstore
    data = os.urandom(CHUNK * 30 + 7)  # 31 chunks

    def cut_after_ten(i: int, n: int) -> None:
        if i == 9:
            raise _CutOff

    with pytest.raises(_CutOff):
        await put_object(
            nc, store, bucket, "big", data, {}, CHUNK, cut_after_ten, resume_dir=tmp_path
        )
    await nc.flush()
    with pytest.raises(NotFoundError):  # nothing committed
        await store.get_info("big")
    assert len(list(tmp_path.iterdir())) == 1  # the note of how to resume

    sent: list[int] = []
    await put_object(
        nc, store, bucket, "big", data, {}, CHUNK, lambda i, n: sent.append(i), tmp_path
    )
    assert sent == list(range(10, 31)), sent  # only what the stream did not hold
    assert (await store.get("big")).data == data  # nats-py reads it whole
    assert (await js.stream_info(f"OBJ_{bucket}")).state.messages == 31 + 1  # no duplicate
    assert list(tmp_path.iterdir()) == []  # done: the note is gone


async def test_what_is_not_a_clean_prefix_is_written_again(objstore: ObjStore, tmp_path) -> None:
    nc, js, bucket, store = objstore
    data = os.urandom(CHUNK * 8)

    def cut(i: int, n: int) -> None:
        if i == 3:
            raise _CutOff

    with pytest.raises(_CutOff):
        await put_object(nc, store, bucket, "o", data, {}, CHUNK, cut, resume_dir=tmp_path)
    (note,) = tmp_path.iterdir()
    nuid = json.loads(note.read_text())["nuid"]
    # something else landed on that subject: the prefix is no longer the write's own
    await js.publish(f"$O.{bucket}.C.{nuid}", b"junk", headers={"Lattice-Chunk": "7/8"})
    sent: list[int] = []
    await put_object(nc, store, bucket, "o", data, {}, CHUNK, lambda i, n: sent.append(i), tmp_path)
    assert sent == list(range(8)) and (await store.get("o")).data == data


async def test_without_a_resume_dir_a_cut_off_write_leaves_nothing(objstore: ObjStore) -> None:
    nc, js, bucket, store = objstore

    def cut(i: int, n: int) -> None:
        if i == 2:
            raise _CutOff

    with pytest.raises(_CutOff):
        await put_object(nc, store, bucket, "o", os.urandom(CHUNK * 6), {}, CHUNK, cut)
    await nc.flush()
    assert (await js.stream_info(f"OBJ_{bucket}")).state.messages == 0


def test_two_writers_of_the_same_bytes_never_share_a_subject(tmp_path) -> None:
    first = _Resume(tmp_path, "b", "o", "key")
    second = _Resume(tmp_path, "b", "o", "key")  # while the first still runs
    assert first.path is not None and second.path is None and first.nuid != second.nuid
    first.close(finished=False)
    third = _Resume(tmp_path, "b", "o", "key")  # a later retry takes the noted subject
    assert third.nuid == first.nuid
    third.close(finished=True)
    assert list(tmp_path.iterdir()) == []
