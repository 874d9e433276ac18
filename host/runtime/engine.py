"""One wasmtime engine per host, its epoch ticker, and the on-disk compile cache.

Execution deadlines use epoch interruption: a daemon thread bumps the engine's epoch
every `TICK_SECONDS`; a store given a deadline of N ticks traps once N ticks pass.
Compiled components are serialized to `{cache_dir}/{sha256}-{wasmtime version}.cwasm`
so a second start of the same bytes deserializes in ~0.1 s instead of compiling for
seconds. The cache is written atomically (temp file + rename); a corrupt or stale
entry is recompiled, never trusted.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog
import wasmtime
from wasmtime.component import Component

TICK_SECONDS = 0.01
WASMTIME_VERSION = importlib.metadata.version("wasmtime")
# Bump when the engine configuration changes: artifacts are only valid for the config
# that produced them.
ENGINE_FLAVOUR = "epoch1"

log = structlog.get_logger("lattice.runtime")


def deadline_ticks(timeout_ms: int) -> int:
    """Epoch ticks for `timeout_ms`, rounded up, plus one for the tick in progress."""
    return max(1, -(-timeout_ms // int(TICK_SECONDS * 1000))) + 1


class EpochTicker:
    """Advances an engine's epoch on a fixed period until stopped."""

    def __init__(self, engine: wasmtime.Engine, period: float = TICK_SECONDS) -> None:
        self._engine = engine
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="epoch-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._engine.increment_epoch()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)


def new_engine() -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True
    return wasmtime.Engine(cfg)


@dataclass(frozen=True)
class CompileResult:
    component: Component
    digest: str
    cached: bool


class CompileCache:
    """Content-addressed cache of compiled components: on disk, and in memory.

    Loads of the same bytes are single-flight (a lock per digest): fifty components
    started at once from one image compile it once, not fifty times. Compiled
    components are immutable and shared, so the last `MEMORY_ENTRIES` stay in memory
    and a second component from the same image costs no deserialization either.
    """

    MEMORY_ENTRIES = 16

    def __init__(self, engine: wasmtime.Engine, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._memory: collections.OrderedDict[str, Component] = collections.OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path_for(self, digest: str) -> Path:
        return self.directory / f"{digest}-wasmtime{WASMTIME_VERSION}-{ENGINE_FLAVOUR}.cwasm"

    def load(self, wasm: bytes) -> CompileResult:
        """Compile `wasm` or reuse its cached artifact. Blocking; call off the loop."""
        digest = hashlib.sha256(wasm).hexdigest()
        with self._guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            with self._guard:
                comp = self._memory.get(digest)
                if comp is not None:
                    self._memory.move_to_end(digest)
            if comp is not None:
                return CompileResult(comp, digest, cached=True)
            result = self._load_uncached(wasm, digest)
            with self._guard:
                self._memory[digest] = result.component
                while len(self._memory) > self.MEMORY_ENTRIES:
                    self._memory.popitem(last=False)
            return result

    def _load_uncached(self, wasm: bytes, digest: str) -> CompileResult:
        path = self.path_for(digest)
        if path.exists():
            try:
                comp = Component.deserialize_file(self.engine, str(path))
                return CompileResult(comp, digest, cached=True)
            except wasmtime.WasmtimeError as exc:
                log.warning(
                    "compile cache entry unusable, recompiling", path=str(path), error=str(exc)
                )
                path.unlink(missing_ok=True)
        comp = Component(self.engine, wasm)
        self._store(path, comp.serialize())
        return CompileResult(comp, digest, cached=False)

    def _store(self, path: Path, data: bytes | bytearray) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".cwasm")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write compile cache", path=str(path), error=str(exc))
            Path(tmp).unlink(missing_ok=True)
