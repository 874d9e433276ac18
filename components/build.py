"""Build the example WebAssembly components with componentize-py, caching the outputs.

componentize-py takes several seconds per component, and the test suite needs the
same few artifacts over and over, so every output is named after a content hash of
everything that goes into it.  A file that already exists under that name is reused
as is.  Builds write to a temporary file and rename it into place while holding a
per-artifact `flock`, so concurrent pytest processes never see half-written files
and never build the same artifact twice.

Usage:  python -m components.build      (prints one `name: path` line per artifact)
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

COMPONENTS_DIR = Path(__file__).resolve().parent
WIT_DIR = COMPONENTS_DIR / "wit"
# Unmodified WASI 0.2 WIT (wasi:http/proxy and its deps), for standard HTTP components.
PROXY_WIT_DIR = COMPONENTS_DIR / "wit-proxy"
SRC_DIR = COMPONENTS_DIR / "src"
DEFAULT_CACHE_DIR = COMPONENTS_DIR.parent / ".cache" / "components"
CACHE_ENV_VAR = "LATTICE_COMPONENT_CACHE"
APP_MODULE = "app"


@dataclass(frozen=True)
class ComponentSpec:
    """One buildable component: its source folder, WIT world, variants and WIT folder."""

    name: str
    world: str
    variants: tuple[str | None, ...]
    wit_dir: Path = WIT_DIR

    @property
    def src_dir(self) -> Path:
        return SRC_DIR / self.name


COMPONENTS: dict[str, ComponentSpec] = {
    "echo": ComponentSpec("echo", "echo-world", ("v1", "v2")),
    "runaway": ComponentSpec("runaway", "runaway-world", (None,)),
    "counter": ComponentSpec("counter", "counter-world", (None,)),
    "kvtool": ComponentSpec("kvtool", "kvtool-world", (None,)),
    "greeter": ComponentSpec("greeter", "greeter-world", (None,)),
    "caller": ComponentSpec("caller", "caller-world", (None,)),
    "pingpong": ComponentSpec("pingpong", "pingpong-world", (None,)),
    "settings": ComponentSpec("settings", "settings-world", (None,)),
    # the standard WASI 0.2 HTTP world, served by the host's Python WASI layer (host/wasi)
    "hello_http": ComponentSpec("hello_http", "wasi:http/proxy@0.2.12", (None,), PROXY_WIT_DIR),
}


def cache_dir() -> Path:
    """The output folder; read at call time so tests can point it elsewhere via the env."""
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override) if override else DEFAULT_CACHE_DIR


def componentize_py_version() -> str:
    return importlib.metadata.version("componentize-py")


def _componentize_py() -> str:
    """Prefer the tool installed next to this interpreter, so the venv's version is used."""
    local = Path(sys.executable).parent / "componentize-py"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("componentize-py")
    if found is None:
        raise RuntimeError("componentize-py not found next to the interpreter or on PATH")
    return found


def _files(root: Path, pattern: str) -> list[Path]:
    """Files under root in a stable order, skipping bytecode caches."""
    return sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts)


def _key_parts(spec: ComponentSpec, variant: str | None) -> Iterator[bytes]:
    for root, pattern in ((spec.wit_dir, "*.wit"), (spec.src_dir, "*")):
        for path in _files(root, pattern):
            yield path.relative_to(root).as_posix().encode()
            yield path.read_bytes()
    for part in (spec.world, variant or "", componentize_py_version()):
        yield part.encode()


def cache_key(spec: ComponentSpec, variant: str | None) -> str:
    """sha256 over WIT, sources, world, variant and tool version: any change means a rebuild."""
    h = hashlib.sha256()
    for part in _key_parts(spec, variant):
        # Length-prefix every part so boundaries between files can't be shifted around.
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def artifact_name(name: str, variant: str | None) -> str:
    """Human-readable artifact id, e.g. `echo-v1` or `runaway`."""
    return f"{name}-{variant}" if variant else name


def _resolve(name: str, variant: str | None) -> tuple[ComponentSpec, str | None]:
    try:
        spec = COMPONENTS[name]
    except KeyError:
        raise ValueError(f"unknown component {name!r}; known: {sorted(COMPONENTS)}") from None
    return spec, variant if variant is not None else spec.variants[0]


def artifact_path(name: str, variant: str | None = None) -> Path:
    """Where `build(name, variant)` puts (or finds) its output; does not build anything."""
    spec, variant = _resolve(name, variant)
    key = cache_key(spec, variant)
    return cache_dir() / f"{artifact_name(name, variant)}-{key[:12]}.wasm"


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run_componentize(spec: ComponentSpec, variant: str | None, out: Path) -> None:
    """Copy the sources to a scratch dir (plus `_variant.py`) and componentize that."""
    with tempfile.TemporaryDirectory(prefix=f"lattice-{spec.name}-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(spec.src_dir, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if variant is not None:
            (src / "_variant.py").write_text(f"VARIANT = {variant!r}\n")
        cmd = [
            _componentize_py(),
            "-d",
            str(spec.wit_dir),
            "-w",
            spec.world,
            "componentize",
            "-p",
            str(src),
            APP_MODULE,
            "-o",
            str(out),
        ]
        # anyhow's backtraces would bury the Python error we actually want in the message.
        env = {**os.environ, "RUST_LIB_BACKTRACE": os.environ.get("RUST_LIB_BACKTRACE", "0")}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"componentize-py failed for {artifact_name(spec.name, variant)} "
            f"(exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}"
        )


def build(name: str, variant: str | None = None, *, force: bool = False) -> Path:
    """Return the path of the built component, building it only if it is not cached.

    `variant` defaults to the component's first variant (`v1` for echo); it is baked
    into the component as `_variant.VARIANT`.
    """
    spec, variant = _resolve(name, variant)
    out = artifact_path(name, variant)
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.with_suffix(".lock")):
        # Another process may have finished the same build while we waited for the lock.
        if out.exists() and not force:
            return out
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}-", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        started = time.perf_counter()
        try:
            _run_componentize(spec, variant, tmp)
            tmp.chmod(0o644)  # mkstemp creates 0600; the artifact is meant to be shared
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    log.info(
        "built %s in %.1fs (%d bytes)",
        out.name,
        time.perf_counter() - started,
        out.stat().st_size,
    )
    return out


def build_all(*, force: bool = False) -> dict[str, Path]:
    """Build every component variant; keys are artifact names like `echo-v1`."""
    return {
        artifact_name(spec.name, variant): build(spec.name, variant, force=force)
        for spec in COMPONENTS.values()
        for variant in spec.variants
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name, path in build_all(force=args.force).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
