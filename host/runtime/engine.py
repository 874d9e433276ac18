"""One wasmtime engine per host, its epoch ticker, and the compile cache.

Execution deadlines use epoch interruption: a daemon thread bumps the engine's epoch
every `TICK_SECONDS`; a store given a deadline of N ticks traps once N ticks pass.
Compiled components are serialized to `{cache_dir}/{sha256}-{wasmtime version}.cwasm`
so a second start of the same bytes deserializes in ~0.1 s instead of compiling for
seconds. The cache is written atomically (temp file + rename); a corrupt or stale
entry is recompiled, never trusted.

With a lattice attached (`CompileCache.shared`), a miss asks the lattice first: a
compiled artifact another host of the lattice signed for the same `COMPILE_KEY` is
checked and used, and otherwise this host compiles under the lattice's lease and
publishes its own (`lattice.artifacts.compiled`).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import importlib.metadata
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog
import wasmtime
from wasmtime.component import Component

from lattice.artifacts.cache import write_atomic
from lattice.artifacts.compiled import CompileKey, SharedCompiles
from lattice.artifacts.fetch import Fetcher

TICK_SECONDS = 0.01
WASMTIME_VERSION = importlib.metadata.version("wasmtime")
# Bump when the engine configuration changes: artifacts are only valid for the config
# that produced them.
ENGINE_FLAVOUR = "epoch1"


def target_triple() -> str:
    arch = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    return f"{arch}-{sys.platform}"


# What a compiled artifact is valid for: shared only between hosts with the same key.
COMPILE_KEY = CompileKey(WASMTIME_VERSION, target_triple(), ENGINE_FLAVOUR)

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
    """An engine with epoch interruption, in a process whose wasmtime-py has the
    speed-ups (and the thread-safety fix) of `host.wasi._speedups` installed: plain
    components' calls make the cheap libwasmtime calls too (a store's epoch deadline,
    byte vectors, values), and without them each one gives up the GIL."""
    from host.wasi import _speedups  # here: host.wasi imports this module

    _speedups.install()
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True
    return wasmtime.Engine(cfg)


@dataclass(frozen=True)
class CompileResult:
    component: Component
    digest: str
    cached: bool
    source: str = "compiled"  # "memory", "disk", "lattice" or "compiled"


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
        self._async_locks: dict[str, asyncio.Lock] = {}
        # how many loads were served from where ("memory", "disk", "lattice", "compiled")
        self.sources: collections.Counter[str] = collections.Counter()
        # Set by the host once it has joined a lattice (host.runtime.artifact.bind): where
        # component bytes come from, and the lattice's compiled artifacts (None = compile
        # every miss here).
        self.fetcher = Fetcher()
        self.shared: SharedCompiles | None = None

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
                return CompileResult(comp, digest, cached=True, source="memory")
            result = self._from_disk(digest) or self._compile(wasm, digest)[0]
            self._remember(digest, result.component)
            return result

    def _remember(self, digest: str, comp: Component) -> None:
        with self._guard:
            self._memory[digest] = comp
            self._memory.move_to_end(digest)
            while len(self._memory) > self.MEMORY_ENTRIES:
                self._memory.popitem(last=False)

    def lookup(self, digest: str) -> CompileResult | None:
        """From memory or disk, or None. Blocking (deserializes); call off the loop."""
        with self._guard:
            comp = self._memory.get(digest)
        if comp is not None:
            return CompileResult(comp, digest, cached=True, source="memory")
        result = self._from_disk(digest)
        if result is not None:
            self._remember(digest, result.component)
        return result

    def _from_disk(self, digest: str) -> CompileResult | None:
        path = self.path_for(digest)
        if not path.exists():
            return None
        try:
            comp = Component.deserialize_file(self.engine, str(path))
            return CompileResult(comp, digest, cached=True, source="disk")
        except wasmtime.WasmtimeError as exc:
            log.warning("compile cache entry unusable, recompiling", path=str(path), error=str(exc))
            path.unlink(missing_ok=True)
            return None

    def _compile(self, wasm: bytes, digest: str) -> tuple[CompileResult, bytes]:
        comp = Component(self.engine, wasm)
        data = bytes(comp.serialize())
        self._store(self.path_for(digest), data)
        return CompileResult(comp, digest, cached=False, source="compiled"), data

    def _adopt(self, digest: str, data: bytes) -> CompileResult | None:
        """Deserialize a verified artifact from the lattice and keep it on disk."""
        self._store(self.path_for(digest), data)
        result = self._from_disk(digest)
        if result is None:
            return None
        self._remember(digest, result.component)
        return CompileResult(result.component, digest, cached=True, source="lattice")

    async def obtain(self, wasm: bytes, digest: str | None = None) -> CompileResult:
        result = await self._obtain(wasm, digest)
        self.sources[result.source] += 1
        return result

    async def _obtain(self, wasm: bytes, digest: str | None) -> CompileResult:
        """Like `load`, asking the lattice before compiling when `shared` is set.

        Single-flight per digest inside this host (an asyncio lock) and, through the
        lattice's lease, across hosts.
        """
        digest = digest or hashlib.sha256(wasm).hexdigest()
        digest = digest.split(":", 1)[-1]
        shared = self.shared
        if shared is None:
            return await asyncio.to_thread(self.load, wasm)
        lock = self._async_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            hit = await asyncio.to_thread(self.lookup, digest)
            if hit is not None:
                return hit
            compiled: list[CompileResult] = []

            async def compile_here() -> bytes:
                result, data = await asyncio.to_thread(self._compile, wasm, digest)
                self._remember(digest, result.component)
                compiled.append(result)
                return data

            data, _how = await shared.obtain(f"sha256:{digest}", compile_here)
            if compiled:
                return compiled[0]
            assert data is not None
            adopted = await asyncio.to_thread(self._adopt, digest, data)
            if adopted is not None:
                return adopted
            return await asyncio.to_thread(self.load, wasm)

    def _store(self, path: Path, data: bytes | bytearray) -> None:
        write_atomic(path, data, "compile cache")
