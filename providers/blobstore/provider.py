"""`BlobstoreProvider`: wasi:blobstore@0.2.0-draft on the wire, for any `Backend`.

It serves the operations of docs/blobstore.md, validates every argument with
`providers.blobstore.semantics`, and answers each call with a `result`: `{"ok": value}`
or `{"err": "message"}`. A backend subclass only opens a `Backend` per link
(`open_backend`); validation, chunking, uploads, timeouts and health are here, once,
so the three built-in backends cannot drift apart.

Data never moves as one message: `get-data` answers at most `CHUNK` bytes (the caller
asks again from `next`), and `write-data` is an upload of numbered parts, committed on
the last one. An upload belongs to its link; one that gets no part for
`upload_timeout` seconds (default 60) is aborted and what it wrote is removed.

Accounting, as for keyvalue (`_result`): an `err` promises nothing was applied; a
write whose outcome is unknown is an invocation error of kind `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from providers.blobstore import semantics as bs
from providers.blobstore.backend import Backend, Writer
from providers.blobstore.semantics import BlobError, Indeterminate, Unavailable
from providers.sdk import HostData, Link, LinkKey, Provider, operation
from providers.sdk.backend import BackendGuard, Errors

T = TypeVar("T")

BLOBSTORE = "wasi:blobstore/blobstore"
CONTAINER = "wasi:blobstore/container"
DEFAULT_UPLOAD_TIMEOUT = 60.0
MAX_UPLOADS = 64
"""Uploads in progress per provider; with at most one part held each, memory is bounded."""


@dataclass(slots=True)
class _Linked:
    backend: Backend
    page_size: int
    upload_timeout: float


@dataclass(slots=True)
class _Upload:
    link: LinkKey
    container: str
    name: str
    writer: Writer
    next_part: int = 0
    size: int = 0
    touched: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


ERRORS = Errors(BlobError, Unavailable, Indeterminate, Indeterminate)


class BlobstoreProvider(Provider):
    """Base for wasi:blobstore providers; subclasses implement `open_backend`."""

    backend: ClassVar[str] = "blobstore"
    op_timeout: float = 20.0
    """Seconds one backend operation may take before the call reports it unavailable."""
    sweep_every: float = 1.0

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self._linked: dict[LinkKey, _Linked] = {}
        self._uploads: dict[tuple[LinkKey, str], _Upload] = {}
        self._janitor: asyncio.Task[None] | None = None
        self._guard = BackendGuard(self.backend, ERRORS, self.log)

    # ------------------------------------------------------------------ backend hooks

    async def open_backend(self, link: Link) -> Backend:
        """Open the backend for `link`. Raise ValueError naming the setting to refuse it."""
        raise NotImplementedError(f"{type(self).__name__} must implement open_backend")

    def setting(self, link: Link, name: str, default: str | None = None) -> str | None:
        """A per-link setting: the link's target config, else the provider's config."""
        value = link.target_config.get(name)
        if value is None or value == "":
            value = self.config.get(name)
        return default if value is None or value == "" else value

    def required(self, link: Link, name: str, what: str) -> str:
        value = self.setting(link, name)
        if not value:
            raise ValueError(f"link target config {name!r} is required ({what})")
        return value

    # ------------------------------------------------------------------ provider hooks

    async def on_link_put(self, link: Link) -> None:
        size = bs.page_size(self.setting(link, "page_size"))
        timeout = bs.seconds(
            self.setting(link, "upload_timeout"), "upload_timeout", DEFAULT_UPLOAD_TIMEOUT
        )
        backend = await self.open_backend(link)
        self._linked[link.key] = _Linked(backend, size, timeout)
        self.log.info("blobstore opened", source_id=link.source_id, store=backend.where)

    async def on_link_del(self, link: Link) -> None:
        for key, up in list(self._uploads.items()):
            if up.link == link.key:
                await self._abort(key, "its link was removed")
        linked = self._linked.pop(link.key, None)
        if linked is not None:
            await linked.backend.close()

    async def on_shutdown(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        for key in list(self._uploads):
            await self._abort(key, "the provider is stopping")
        for key in list(self._linked):
            await self._linked.pop(key).backend.close()

    async def health(self) -> tuple[bool, str]:
        if not self._linked:
            return True, f"{self.backend}: no links"

        async def probe(lk: _Linked) -> str | None:
            try:
                await asyncio.wait_for(lk.backend.ping(), 5.0)
            except BlobError as exc:
                return f"{lk.backend.where}: {exc}"
            except TimeoutError:
                return f"{lk.backend.where}: {self.backend} unavailable: no answer"
            return None

        problems = [p for p in await asyncio.gather(*map(probe, self._linked.values())) if p]
        if problems:
            return False, "; ".join(sorted(set(problems)))
        stores = len({lk.backend.where for lk in self._linked.values()})
        return True, f"{self.backend}: {stores} store(s) ok for {len(self._linked)} link(s)"

    # ------------------------------------------------------------------ plumbing

    async def _result(
        self, link: Link, fn: Callable[[_Linked], Awaitable[T]], *, read_only: bool = False
    ) -> dict[str, Any]:
        """Run `fn` against the link's backend; wrap the outcome as a wasi `result`
        (accounting rule: see the module docstring and providers.keyvalue)."""
        linked = self._linked.get(link.key)
        if linked is None:
            return {"err": f"no blobstore for link {link.source_id}/{link.name}"}
        return await self._guard.result(
            linked.backend.where, lambda: fn(linked), self.op_timeout, read_only=read_only
        )

    async def _container_meta(self, b: Backend, container: str) -> dict[str, Any]:
        return {"name": container, "created-at": await b.container_created(container)}

    # ------------------------------------------------------------------ uploads

    def _sweeping(self) -> None:
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Abort uploads that got no part within their link's `upload_timeout`."""
        while self._uploads:
            await asyncio.sleep(self.sweep_every)
            now = time.monotonic()
            for key, up in list(self._uploads.items()):
                linked = self._linked.get(up.link)
                limit = linked.upload_timeout if linked else 0.0
                if now - up.touched > limit and not up.lock.locked():
                    await self._abort(key, f"no part for {limit:g}s")

    async def _abort(self, key: tuple[LinkKey, str], why: str) -> None:
        up = self._uploads.pop(key, None)
        if up is None:
            return
        self.log.info(
            "upload aborted", upload=key[1], source_id=key[0].source_id, parts=up.next_part, why=why
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(up.writer.abort(), self.op_timeout)

    async def _write(
        self,
        link: Link,
        linked: _Linked,
        container: str,
        name: str,
        upload: str,
        part: int,
        data: bytes,
        last: bool,
    ) -> None:
        key = (link.key, upload)
        up = self._uploads.get(key)
        if part == 0:
            if up is not None:
                raise BlobError(f"upload {upload!r} was already started")
            if len(self._uploads) >= MAX_UPLOADS:
                raise BlobError(f"too many uploads in progress (at most {MAX_UPLOADS})")
            writer = await linked.backend.begin_write(container, name)
            up = _Upload(link.key, container, name, writer)
            self._uploads[key] = up
            self._sweeping()
        elif up is None:
            raise BlobError(f"upload {upload!r} is unknown (it expired, failed or never started)")
        if (up.container, up.name) != (container, name):
            raise BlobError(f"upload {upload!r} writes {up.name!r} in {up.container!r}")
        async with up.lock:
            if part != up.next_part:
                raise BlobError(f"upload {upload!r}: expected part {up.next_part}, got {part}")
            up.touched = time.monotonic()
            try:
                if data:
                    await up.writer.write(data)
                up.next_part += 1
                up.size += len(data)
                if last:
                    self._uploads.pop(key, None)
                    await up.writer.commit()
                    self.log.debug("object written", container=container, size=up.size)
            except BaseException:  # failed, timed out or cancelled: nothing is kept
                self._uploads.pop(key, None)
                with contextlib.suppress(Exception):
                    await asyncio.shield(up.writer.abort())
                raise
            finally:
                up.touched = time.monotonic()

    # ------------------------------------------------------------------ blobstore

    @operation(f"{BLOBSTORE}.create-container", params=("name",))
    async def op_create_container(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> dict[str, Any]:
            c = bs.check_container(args[0], "create-container")
            await s.backend.create_container(c)
            return await self._container_meta(s.backend, c)

        return await self._result(link, run)

    @operation(f"{BLOBSTORE}.get-container", params=("name",))
    async def op_get_container(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> dict[str, Any]:
            return await self._container_meta(
                s.backend, bs.check_container(args[0], "get-container")
            )

        return await self._result(link, run, read_only=True)

    @operation(f"{BLOBSTORE}.delete-container", params=("name",))
    async def op_delete_container(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            await s.backend.delete_container(bs.check_container(args[0], "delete-container"))

        return await self._result(link, run)

    @operation(f"{BLOBSTORE}.container-exists", params=("name",))
    async def op_container_exists(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> bool:
            return await s.backend.container_exists(bs.check_container(args[0], "container-exists"))

        return await self._result(link, run, read_only=True)

    @operation(f"{BLOBSTORE}.copy-object", params=("src", "dest"))
    async def op_copy_object(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            src = bs.check_object_id(args[0], "copy-object", "src")
            dest = bs.check_object_id(args[1], "copy-object", "dest")
            await s.backend.copy(src, dest)

        return await self._result(link, run)

    @operation(f"{BLOBSTORE}.move-object", params=("src", "dest"))
    async def op_move_object(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            src = bs.check_object_id(args[0], "move-object", "src")
            dest = bs.check_object_id(args[1], "move-object", "dest")
            await s.backend.move(src, dest)

        return await self._result(link, run)

    # ------------------------------------------------------------------ container

    @operation(f"{CONTAINER}.name", params=("container",))
    async def op_name(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> str:
            c = bs.check_container(args[0], "name")
            await s.backend.container_created(c)
            return c

        return await self._result(link, run, read_only=True)

    @operation(f"{CONTAINER}.info", params=("container",))
    async def op_info(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> dict[str, Any]:
            return await self._container_meta(s.backend, bs.check_container(args[0], "info"))

        return await self._result(link, run, read_only=True)

    @operation(f"{CONTAINER}.get-data", params=("container", "name", "start", "end"))
    async def op_get_data(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> dict[str, Any]:
            c = bs.check_container(args[0], "get-data")
            n = bs.check_object(args[1], "get-data")
            start, end = bs.check_range(args[2], args[3], "get-data")
            want = min(end - start + 1, bs.CHUNK)
            data, size, version = await s.backend.read(c, n, start, want)
            after = start + len(data)
            more = len(data) == want and after <= end and after < size
            nxt = after if more else None
            return {"data": data, "size": size, "next": nxt, "version": version}

        return await self._result(link, run, read_only=True)

    @operation(
        f"{CONTAINER}.write-data", params=("container", "name", "upload", "part", "data", "last")
    )
    async def op_write_data(self, link: Link, args: list[Any]) -> dict[str, Any]:
        upload = bs.check_upload(args[2], "write-data")
        part = bs.check_u64(args[3], "write-data", "part")
        last = bs.check_bool(args[5], "write-data", "last")

        async def run(s: _Linked) -> None:
            container = bs.check_container(args[0], "write-data")
            name = bs.check_object(args[1], "write-data")
            data = bs.check_data(args[4], "write-data")
            await self._write(link, s, container, name, upload, part, data, last)

        return await self._result(link, run)

    @operation(f"{CONTAINER}.abort-write", params=("container", "name", "upload"))
    async def op_abort_write(self, link: Link, args: list[Any]) -> dict[str, Any]:
        upload = bs.check_upload(args[2], "abort-write")
        await self._abort((link.key, upload), "the caller aborted it")
        return {"ok": None}

    @operation(f"{CONTAINER}.list-objects", params=("container", "cursor", "limit"))
    async def op_list_objects(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> dict[str, Any]:
            c = bs.check_container(args[0], "list-objects")
            after = bs.check_cursor(args[1], "list-objects")
            limit = bs.check_limit(args[2], "list-objects", s.page_size)
            names, more = await s.backend.list_objects(c, after, limit)
            names, cut = bs.page(names, limit)
            more = more or cut
            return {"names": names, "cursor": names[-1] if more and names else None}

        return await self._result(link, run, read_only=True)

    @operation(f"{CONTAINER}.delete-object", params=("container", "name"))
    async def op_delete_object(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            c = bs.check_container(args[0], "delete-object")
            await s.backend.delete_object(c, bs.check_object(args[1], "delete-object"))

        return await self._result(link, run)

    @operation(f"{CONTAINER}.delete-objects", params=("container", "names"))
    async def op_delete_objects(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            c = bs.check_container(args[0], "delete-objects")
            names = bs.check_objects(args[1], "delete-objects")
            if names:
                await s.backend.delete_objects(c, names)
            else:
                await s.backend.container_created(c)

        return await self._result(link, run)

    @operation(f"{CONTAINER}.has-object", params=("container", "name"))
    async def op_has_object(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> bool:
            c = bs.check_container(args[0], "has-object")
            return await s.backend.has_object(c, bs.check_object(args[1], "has-object"))

        return await self._result(link, run, read_only=True)

    @operation(f"{CONTAINER}.object-info", params=("container", "name"))
    async def op_object_info(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> dict[str, Any]:
            c = bs.check_container(args[0], "object-info")
            n = bs.check_object(args[1], "object-info")
            meta = await s.backend.object_info(c, n)
            return {"name": n, "container": c, "created-at": meta.created_at, "size": meta.size}

        return await self._result(link, run, read_only=True)

    @operation(f"{CONTAINER}.clear", params=("container",))
    async def op_clear(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            await s.backend.clear(bs.check_container(args[0], "clear"))

        return await self._result(link, run)
