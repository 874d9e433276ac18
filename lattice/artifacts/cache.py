"""A host's local artifact cache: component bytes by digest, and what refs last meant.

Layout under `{data_dir}/artifacts/`: `sha256/{hex}.wasm` (bytes, written atomically,
checked against the name on every read), and `refs.json`, which remembers the digest a
tag or `lattice://` reference resolved to last time. That index is what lets a host
restart with its registry down and start what it ran before — a pinned digest needs
no registry at all, a tag falls back to the digest it last resolved to. Entries are
small and written whole (temp file + rename); a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

import structlog

from lattice.artifacts.refs import check_digest, sha256_digest

log = structlog.get_logger("lattice.artifacts.cache")


def write_atomic(path: Path, data: bytes | bytearray, what: str = "artifact cache") -> bool:
    """Write via a temp file + rename, so a reader never sees half a file; False (and a
    warning) when the disk refuses — a cache that cannot be written is not an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning(f"could not write {what}", path=str(path), error=str(exc))
        Path(tmp).unlink(missing_ok=True)
        return False


class LocalCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._blobs = directory / "sha256"
        self._index_path = directory / "refs.json"
        self._guard = threading.Lock()

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self._blobs / f"{digest.split(':', 1)[1]}.wasm"

    def get(self, digest: str) -> bytes | None:
        """The bytes for `digest`, or None; a corrupt entry is deleted, never returned."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if sha256_digest(data) != digest:
            log.warning("artifact cache entry corrupt; removed", path=str(path))
            path.unlink(missing_ok=True)
            return None
        return data

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = digest or sha256_digest(data)
        path = self.path(digest)
        if path.exists():
            return digest
        write_atomic(path, data)
        return digest

    # -- what references resolved to --------------------------------------------------

    def _index(self) -> dict[str, str]:
        try:
            raw = json.loads(self._index_path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in raw.items() if isinstance(v, str)} if isinstance(raw, dict) else {}

    def remembered(self, key: str) -> str | None:
        return self._index().get(key)

    def remember(self, key: str, digest: str) -> None:
        with self._guard:
            index = self._index()
            if index.get(key) == digest:
                return
            index[key] = digest
            write_atomic(self._index_path, json.dumps(index, indent=1, sort_keys=True).encode())
