"""The component build is cached: a second build of the same inputs must not rebuild."""

from __future__ import annotations

import time

from components.build import artifact_path, build

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
