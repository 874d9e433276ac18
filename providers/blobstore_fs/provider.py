"""The blobstore-fs provider: one directory per link (`root` in its target config)."""

from __future__ import annotations

from pathlib import Path

from providers.blobstore import Backend, BlobstoreProvider
from providers.blobstore_fs.store import FsBackend
from providers.sdk import Link


class FsBlobstoreProvider(BlobstoreProvider):
    backend = "fs"

    async def open_backend(self, link: Link) -> Backend:
        raw = self.required(link, "root", "the directory that holds the containers")
        return FsBackend(_root(raw))


def _root(raw: str) -> Path:
    """The `root` setting as a directory (created if missing); ValueError naming it."""
    root = Path(raw)
    if not root.is_absolute():
        raise ValueError(f"link target config 'root' must be an absolute path, got {raw!r}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ValueError(f"link target config 'root': cannot create {raw}: {why}") from None
    if not root.is_dir():
        raise ValueError(f"link target config 'root': {raw} is not a directory")
    return root
