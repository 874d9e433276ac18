"""The backend contract of a blobstore provider.

A `Backend` is what one link's config opens (a directory, a set of JetStream object
stores, a set of S3 buckets). It sees only validated input: container and object names
already checked, ranges already cut to at most `semantics.CHUNK` bytes. Its job is to
map containers and objects onto the store, keep every object write atomic (a reader
sees the old object or the whole new one, never half), hold at most one part of an
object in memory, and turn "cannot reach the store" into `Unavailable` (a write whose
outcome is unknown into `Indeterminate`). It never formats wire replies;
`providers.blobstore.provider` does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    size: int
    created_at: int
    """Seconds since the Unix epoch (when this version of the object was written)."""


class Writer(ABC):
    """One object being written: parts in order, then `commit` (atomic) or `abort`."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Append one part; may hold it until the store takes it (one part at most)."""

    @abstractmethod
    async def commit(self) -> None:
        """Make the object visible under its name, replacing any older one, atomically."""

    @abstractmethod
    async def abort(self) -> None:
        """Drop what was written; the object (or its old version) is untouched. Never
        raises."""


class Backend(ABC):
    """One link's view of a store. All methods may raise BlobError / Unavailable."""

    backend: ClassVar[str]

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the data lives, safe to show (no credentials)."""

    # containers
    @abstractmethod
    async def create_container(self, container: str) -> None:
        """Create it; `semantics.container_exists` if it is there already."""

    @abstractmethod
    async def delete_container(self, container: str) -> None:
        """Delete it and every object in it; `no_container` if missing."""

    @abstractmethod
    async def container_exists(self, container: str) -> bool: ...

    @abstractmethod
    async def container_created(self, container: str) -> int:
        """Seconds since the epoch it was created; `no_container` if missing."""

    @abstractmethod
    async def list_objects(
        self, container: str, after: str | None, limit: int
    ) -> tuple[list[str], bool]:
        """Up to `limit` names sorted by their UTF-8 bytes, all > `after`; (names, more)."""

    @abstractmethod
    async def clear(self, container: str) -> None: ...

    # objects
    @abstractmethod
    async def object_info(self, container: str, name: str) -> ObjectMeta:
        """`no_object` / `no_container` if missing."""

    async def has_object(self, container: str, name: str) -> bool:
        from providers.blobstore.semantics import BlobError, no_object

        try:
            await self.object_info(container, name)
        except BlobError as exc:
            if str(exc) == str(no_object(container, name)):
                return False
            raise
        return True

    @abstractmethod
    async def read(
        self, container: str, name: str, start: int, length: int
    ) -> tuple[bytes, int, str]:
        """Up to `length` bytes from `start` (fewer at the end), the object's size and its
        version: a tag that changes whenever the object is replaced (inode and mtime,
        JetStream nuid, S3 ETag), so a reader looping over chunks can tell it changed."""

    @abstractmethod
    async def delete_object(self, container: str, name: str) -> None:
        """Remove it; a missing object is not an error, a missing container is."""

    async def delete_objects(self, container: str, names: list[str]) -> None:
        for name in names:
            await self.delete_object(container, name)

    @abstractmethod
    async def copy(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        """Duplicate `src` as `dest` (replacing it), never holding more than a chunk."""

    async def move(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        """Copy, then delete the source; a backend may rename atomically instead."""
        if src == dest:
            await self.object_info(*src)
            return
        await self.copy(src, dest)
        await self.delete_object(*src)

    @abstractmethod
    async def begin_write(self, container: str, name: str) -> Writer:
        """Start writing `name`; `no_container` if the container is missing."""

    @abstractmethod
    async def ping(self) -> None:
        """Return if the store can serve, else raise Unavailable/BlobError."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what this backend alone holds."""
