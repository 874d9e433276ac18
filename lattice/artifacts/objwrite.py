"""Write one object into a JetStream object store with its chunks pipelined.

nats-py's `ObjectStore.put` publishes each chunk and waits for its acknowledgement
before sending the next: one round trip and one server-side write per 512 KiB, so a
35 MB compiled artifact took ~1.2 s to publish, on the critical path of every other
host's first start. Here the chunks go out back to back from one task (so the stream
stores them in order) with up to `WINDOW` of them unacknowledged, and the acks are
collected by one subscription. The meta message, the digest and the clean-up of an
older version's chunks are exactly what nats-py writes, so nats-py (and the `nats`
CLI) read these objects unchanged. Written by hand because no kept client pipelines
object-store writes.

Resumable (with `resume_dir`): each chunk carries its index, and the write's chunk
subject (its NUID) is noted in a file named for the bucket, the object and the bytes,
held under an exclusive lock while the write runs. A write cut off part way (connection
lost, process stopped, cancelled) leaves its acknowledged chunks and that file; writing
the same bytes again reads which chunks the stream already holds (headers only, not
their data) and sends only the rest. The lock keeps two writers of the same bytes off
one subject (the second gets a fresh NUID). A chunk the store refused (full, over a
limit) commits nothing, is purged, and forgets the file. Without `resume_dir` every
write starts afresh, as nats-py's does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore
from nats.nuid import NUID

WINDOW = 32  # chunks sent and not yet acknowledged: 16 MiB at 512 KiB
ACK_TIMEOUT = 30.0
INDEX_HEADER = "Lattice-Chunk"  # i/n: what a resumed write checks before skipping


class ObjectWriteError(RuntimeError):
    """The store refused (`refused`) or did not acknowledge a chunk; nothing was
    committed."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class _Resume:
    """The note of one write's NUID, locked while the write runs (see the module doc)."""

    def __init__(self, resume_dir: Path | None, bucket: str, name: str, key: str) -> None:
        self.path: Path | None = None
        self._fd: int | None = None
        self.nuid = NUID().next().decode()
        if resume_dir is None:
            return
        resume_dir.mkdir(parents=True, exist_ok=True)
        tag = sha256(f"{bucket}\0{name}\0{key}".encode()).hexdigest()[:32]
        path = resume_dir / f"{tag}.json"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # the same bytes are being written now: go on a subject of our own
            os.close(fd)
            return
        self.path, self._fd = path, fd
        with contextlib.suppress(ValueError, OSError):
            noted = json.loads(os.pread(fd, 4096, 0) or b"{}").get("nuid")
            if isinstance(noted, str) and noted.isalnum() and len(noted) <= 64:
                self.nuid = noted
                return
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"bucket": bucket, "object": name, "nuid": self.nuid}).encode(), 0)

    def close(self, finished: bool) -> None:
        """`finished`: committed or refused, nothing to resume (the note goes)."""
        if self._fd is None:
            return
        if finished and self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = None


async def stored_prefix(nc: NATS, stream: str, subject: str, chunks: int) -> int:
    """How many leading chunks (0..k-1, in order, of this many) the stream already holds
    on `subject`; 0 (after purging them) when what is there is not such a prefix."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(stream, subjects_filter=subject)
    except Exception:
        return 0
    held = (info.state.subjects or {}).get(subject, 0)
    if held == 0:
        return 0
    psub = await js.pull_subscribe(
        subject,
        config=api.ConsumerConfig(
            headers_only=True, ack_policy=api.AckPolicy.NONE, inactive_threshold=30.0
        ),
    )
    seen: list[str] = []
    try:
        while len(seen) < held:
            batch = await psub.fetch(min(held - len(seen), 256), timeout=5)
            seen += [(m.headers or {}).get(INDEX_HEADER, "") for m in batch]
    except Exception:
        seen = []
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
    if seen == [f"{i}/{chunks}" for i in range(len(seen))] and len(seen) <= chunks:
        return len(seen)
    with contextlib.suppress(Exception):
        await js.purge_stream(stream, subject=subject)
    return 0


async def put_object(
    nc: NATS,
    store: ObjectStore,
    bucket: str,
    name: str,
    data: bytes,
    headers: dict[str, str],
    chunk_size: int,
    on_chunk: Callable[[int, int], None] | None = None,
    resume_dir: Path | None = None,
) -> api.ObjectInfo:
    """Store `data` as object `name`; a reader sees the old version or the whole new one.
    `on_chunk(i, n)` is called as chunk i of n is sent (progress, and tests)."""
    key = f"{chunk_size}:{sha256(data).hexdigest()}"
    resume = _Resume(resume_dir, bucket, name, key)
    finished = False
    try:
        info = await _put(nc, store, bucket, name, data, headers, chunk_size, on_chunk, resume)
        finished = True
        return info
    except ObjectWriteError as exc:
        finished = exc.refused
        raise
    finally:
        resume.close(finished)


async def _put(
    nc: NATS,
    store: ObjectStore,
    bucket: str,
    name: str,
    data: bytes,
    headers: dict[str, str],
    chunk_size: int,
    on_chunk: Callable[[int, int], None] | None,
    resume: _Resume,
) -> api.ObjectInfo:
    try:
        previous: api.ObjectInfo | None = await store.get_info(name)
    except NotFoundError:
        previous = None
    nuid = resume.nuid
    chunk_subject = f"$O.{bucket}.C.{nuid}"
    stream = f"OBJ_{bucket}"
    view = memoryview(data)
    chunks = (len(data) + chunk_size - 1) // chunk_size
    skip = 0
    if resume.path is not None:
        skip = await stored_prefix(nc, stream, chunk_subject, chunks)
    window = asyncio.Semaphore(WINDOW)
    acked = skip
    sent = skip
    done = asyncio.get_running_loop().create_future()
    errors: list[str] = []
    answered = asyncio.Event()  # set on every ack

    async def on_ack(msg: Msg) -> None:
        nonlocal acked
        try:
            body = json.loads(msg.data)
        except ValueError:
            body = {"error": {"description": "unreadable acknowledgement"}}
        if isinstance(body, dict) and body.get("error"):
            errors.append(str(body["error"].get("description", body["error"])))
        acked += 1
        answered.set()
        window.release()
        if (acked >= chunks or errors) and not done.done():
            done.set_result(None)

    inbox = nc.new_inbox()
    sub = await nc.subscribe(f"{inbox}.*", cb=on_ack)
    digest = sha256()
    try:
        for i in range(chunks):
            part = view[i * chunk_size : (i + 1) * chunk_size]
            digest.update(part)
            if i < skip:
                continue  # stored by an earlier, interrupted write of these bytes
            await window.acquire()
            if errors:
                break
            index = {INDEX_HEADER: f"{i}/{chunks}"}
            await nc.publish(chunk_subject, bytes(part), reply=f"{inbox}.{i}", headers=index)
            sent += 1
            if on_chunk is not None:
                on_chunk(i, chunks)
        if chunks and acked < chunks:
            try:
                await asyncio.wait_for(done, ACK_TIMEOUT)
            except TimeoutError:
                raise ObjectWriteError(
                    f"the object store acknowledged {acked} of {chunks} chunks of {name} "
                    f"within {ACK_TIMEOUT:g}s (writing it again resumes after them)"
                ) from None
        if errors:
            raise ObjectWriteError(
                f"the object store refused a chunk of {name}: {errors[0]}", refused=True
            )
        info = api.ObjectInfo(
            name=name,
            headers=headers,
            options=api.ObjectMetaOptions(max_chunk_size=chunk_size),
            bucket=bucket,
            nuid=nuid,
            size=len(data),
            chunks=chunks,
            mtime=datetime.now(UTC).isoformat(),
            digest="SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode(),
        )
        meta_subject = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
        await nc.jetstream().publish(
            meta_subject,
            json.dumps(info.as_dict()).encode(),
            headers={api.Header.ROLLUP: "sub"},
        )
    except BaseException:
        if errors or resume.path is None:  # refused, or no retry will look for them
            # chunks still on their way would land after the purge: let them be answered
            deadline = time.monotonic() + 5.0
            with contextlib.suppress(TimeoutError):
                while acked < sent:
                    answered.clear()
                    await asyncio.wait_for(answered.wait(), max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(Exception):
                await nc.jetstream().purge_stream(stream, subject=chunk_subject)
        raise  # cut off: the acknowledged chunks stay for the next write to resume
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    if previous is not None and not previous.deleted and previous.nuid != nuid:
        with contextlib.suppress(Exception):
            await nc.jetstream().purge_stream(stream, subject=f"$O.{bucket}.C.{previous.nuid}")
    return info
