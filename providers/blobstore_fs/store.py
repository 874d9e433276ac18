"""A directory as a wasi:blobstore store.

Layout under `root`: container `c` is the directory `c/` (container names never start
with '.'), object `a/b.txt` the file `c/a/b.txt`; `.lattice/uploads/` holds writes in
progress and `.lattice/containers/c` marks when `c` was created.

Names never leave their container: an object name that is absolute, has an empty,
`.` or `..` segment, or resolves (through a symlink anywhere on its path) outside the
container directory is refused with an error naming the object, and so is a container
directory that is itself a symlink out of the root.

A write goes to a temp file under `.lattice/uploads/` (same filesystem), is fsynced and
renamed over the object on commit, so a reader sees the old file or the whole new one;
an aborted write unlinks its temp file. Move is one rename. All file I/O runs in
worker threads (`asyncio.to_thread`), one part or chunk at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import IO

from providers.blobstore.backend import Backend, ObjectMeta, Writer
from providers.blobstore.semantics import (
    BlobError,
    container_exists,
    no_container,
    no_object,
    short,
)

META = ".lattice"
COPY_BUFFER = 256 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(name: str, exc: OSError) -> BlobError:
    return BlobError(f"object {short(name)}: {exc.strerror or type(exc).__name__}")


class _FsWriter(Writer):
    def __init__(self, backend: FsBackend, container: str, name: str, tmp: Path) -> None:
        self._b, self._container, self._name, self._tmp = backend, container, name, tmp
        self._fh: IO[bytes] | None = tmp.open("wb")

    async def write(self, data: bytes) -> None:
        assert self._fh is not None
        try:
            await asyncio.to_thread(self._fh.write, data)
        except OSError as exc:
            raise _os_error(self._name, exc) from None

    def _commit(self) -> None:
        assert self._fh is not None
        fh, self._fh = self._fh, None
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        dest = self._b.object_path(self._container, self._name, creating=True)
        os.replace(self._tmp, dest)
        _fsync_dir(dest.parent)

    async def commit(self) -> None:
        try:
            await asyncio.to_thread(self._commit)
        except OSError as exc:
            raise _os_error(self._name, exc) from None

    async def abort(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()


class FsBackend(Backend):
    backend = "fs"

    def __init__(self, root: Path) -> None:
        self._root = root
        self._real = os.path.realpath(root)
        self._uploads = root / META / "uploads"
        self._marks = root / META / "containers"

    @property
    def where(self) -> str:
        return f"fs {self._root}"

    # ------------------------------------------------------------------ paths

    def _cdir(self, container: str, *, must_exist: bool = True) -> Path:
        path = self._root / container
        real = os.path.realpath(path)
        if os.path.dirname(real) != self._real:
            raise BlobError(f"container {short(container)} resolves outside the root")
        if must_exist and not path.is_dir():
            raise no_container(container)
        return path

    def object_path(self, container: str, name: str, *, creating: bool = False) -> Path:
        """The file for `name`, refused if it would leave the container directory."""
        cdir = self._cdir(container)
        if name.startswith("/"):
            raise BlobError(f"object name {short(name)} is absolute; names are relative")
        if any(seg in ("", ".", "..") for seg in name.split("/")):
            raise BlobError(
                f"object name {short(name)} has an empty, '.' or '..' path segment; "
                "it could leave its container"
            )
        path = cdir / name
        real = os.path.realpath(path)
        inside = os.path.realpath(cdir) + os.sep
        if not real.startswith(inside):
            raise BlobError(f"object name {short(name)} resolves outside its container")
        if creating:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not (os.path.realpath(path.parent) + os.sep).startswith(inside):
                raise BlobError(f"object name {short(name)} resolves outside its container")
        return path

    def _stat(self, container: str, name: str) -> os.stat_result:
        path = self.object_path(container, name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise no_object(container, name) from None
        except NotADirectoryError:
            raise no_object(container, name) from None
        if not path.is_file():
            raise no_object(container, name)
        return st

    # ------------------------------------------------------------------ containers

    async def create_container(self, container: str) -> None:
        def run() -> None:
            path = self._cdir(container, must_exist=False)
            self._marks.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir()
            except FileExistsError:
                raise container_exists(container) from None
            (self._marks / container).touch()

        await asyncio.to_thread(run)

    async def delete_container(self, container: str) -> None:
        def run() -> None:
            path = self._cdir(container)
            shutil.rmtree(path)
            with contextlib.suppress(FileNotFoundError):
                (self._marks / container).unlink()

        await asyncio.to_thread(run)

    async def container_exists(self, container: str) -> bool:
        return (self._root / container).is_dir()

    async def container_created(self, container: str) -> int:
        path = self._cdir(container)
        try:
            return int((self._marks / container).stat().st_mtime)
        except FileNotFoundError:
            return int(path.stat().st_mtime)

    def _names(self, container: str) -> list[str]:
        cdir = self._cdir(container)
        inside = os.path.realpath(cdir) + os.sep
        out: list[str] = []
        for dirpath, _dirs, files in os.walk(cdir):
            for f in files:
                full = os.path.join(dirpath, f)
                if os.path.realpath(full).startswith(inside) and os.path.isfile(full):
                    out.append(os.path.relpath(full, cdir).replace(os.sep, "/"))
        return sorted(out)

    async def list_objects(
        self, container: str, after: str | None, limit: int
    ) -> tuple[list[str], bool]:
        names = await asyncio.to_thread(self._names, container)
        if after is not None:
            names = [n for n in names if n > after]
        return names[:limit], len(names) > limit

    async def clear(self, container: str) -> None:
        def run() -> None:
            cdir = self._cdir(container)
            for entry in os.scandir(cdir):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)

        await asyncio.to_thread(run)

    # ------------------------------------------------------------------ objects

    async def object_info(self, container: str, name: str) -> ObjectMeta:
        st = await asyncio.to_thread(self._stat, container, name)
        return ObjectMeta(size=st.st_size, created_at=int(st.st_mtime))

    async def read(
        self, container: str, name: str, start: int, length: int
    ) -> tuple[bytes, int, str]:
        def run() -> tuple[bytes, int, str]:
            path = self.object_path(container, name)
            try:
                with path.open("rb") as fh:
                    st = os.fstat(fh.fileno())
                    fh.seek(start)
                    return fh.read(length), st.st_size, f"{st.st_ino}-{st.st_mtime_ns}"
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise no_object(container, name) from None

        return await asyncio.to_thread(run)

    async def delete_object(self, container: str, name: str) -> None:
        def run() -> None:
            path = self.object_path(container, name)
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                return
            except IsADirectoryError:
                return  # a directory of other objects, not an object
            cdir = self._root / container
            parent = path.parent
            while parent != cdir:  # drop directories the object alone needed
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

        await asyncio.to_thread(run)

    def _tmp(self) -> Path:
        self._uploads.mkdir(parents=True, exist_ok=True)
        return self._uploads / uuid.uuid4().hex

    async def begin_write(self, container: str, name: str) -> Writer:
        def run() -> Writer:
            self.object_path(container, name)
            return _FsWriter(self, container, name, self._tmp())

        return await asyncio.to_thread(run)

    async def copy(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        def run() -> None:
            source = self.object_path(*src)
            self._cdir(dest[0])
            self.object_path(*dest)
            tmp = self._tmp()
            try:
                try:
                    with source.open("rb") as fin, tmp.open("wb") as fout:
                        shutil.copyfileobj(fin, fout, COPY_BUFFER)
                        fout.flush()
                        os.fsync(fout.fileno())
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    raise no_object(*src) from None
                final = self.object_path(*dest, creating=True)
                os.replace(tmp, final)
                _fsync_dir(final.parent)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

        try:
            await asyncio.to_thread(run)
        except OSError as exc:
            raise _os_error(dest[1], exc) from None

    async def move(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        def run() -> None:
            source = self.object_path(*src)
            self._cdir(dest[0])
            if not source.is_file():
                raise no_object(*src)
            if src == dest:
                return
            final = self.object_path(*dest, creating=True)
            os.replace(source, final)
            _fsync_dir(final.parent)

        try:
            await asyncio.to_thread(run)
        except OSError as exc:
            raise _os_error(dest[1], exc) from None

    async def ping(self) -> None:
        if not self._root.is_dir() or not os.access(self._root, os.W_OK | os.X_OK):
            raise BlobError(f"fs unavailable: {self._root} is not a writable directory")
