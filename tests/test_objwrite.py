"""Pipelined object writes (`lattice.artifacts.objwrite`) against a real nats-server:
what nats-py's own object store reads back, replacement, and a refused write."""

from __future__ import annotations

import os
import uuid

import nats
import pytest
from nats.js.errors import NotFoundError

from lattice.artifacts.objwrite import ObjectWriteError, put_object

CHUNK = 64 * 1024


async def test_nats_py_reads_a_pipelined_object_and_a_replacement_frees_old_chunks(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    bucket = f"objw{uuid.uuid4().hex[:8]}"
    store = await js.create_object_store(bucket)
    try:
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
    finally:
        await js.delete_object_store(bucket)
        await nc.close()


async def test_a_chunk_the_store_refuses_commits_nothing(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    bucket = f"objw{uuid.uuid4().hex[:8]}"
    store = await js.create_object_store(bucket)
    try:
        # a stream capped below the object's size refuses chunks once full
        info = await js.stream_info(f"OBJ_{bucket}")
        info.config.max_bytes = CHUNK * 4
        await js.update_stream(info.config)
        with pytest.raises(ObjectWriteError, match="refused a chunk of big"):
            await put_object(nc, store, bucket, "big", os.urandom(CHUNK * 20), {}, CHUNK)
        with pytest.raises(NotFoundError):
            await store.get_info("big")
        assert (await js.stream_info(f"OBJ_{bucket}")).state.messages == 0
    finally:
        await js.delete_object_store(bucket)
        await nc.close()
