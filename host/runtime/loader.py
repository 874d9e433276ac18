"""Turn a component reference into a ready pool: fetch, compile (cached), inspect, warm.

Bytes come from the compile cache's fetcher (local digest cache, the lattice's object
store, OCI registries, files, URLs); compiled code from memory, disk, the lattice's
signed compiled artifacts, or a compile here (`CompileCache.obtain`).

All blocking steps (compile/deserialize, the first instantiation) run in worker threads.
The first instance is created here, before the component is announced, so a component
whose imports the host cannot satisfy fails its scale with wasmtime's own message
naming the missing import, instead of failing its first call.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime.component import Linker

from host import wasi
from host.config import Limits
from host.runtime import artifact
from host.runtime.engine import CompileCache
from host.runtime.exports import Export, list_exports
from host.runtime.imports import ImportBridge, bridged_imports
from host.runtime.nonblocking import never_blocks, serves_without_waiting
from host.runtime.pool import InstancePool
from host.wasi import blobstore, outgoing
from host.wasi.outgoing_link import LinkedOutgoing
from lattice.protocol.invocation import InvocationError


class LoadError(RuntimeError):
    """The component could not be started; the message is meant for the user."""


@dataclass(frozen=True)
class LoadStats:
    fetch_s: float
    compile_s: float
    instantiate_s: float
    cached: bool
    digest: str
    source: str = "compiled"  # where the compiled code came from
    fetched_from: str = "file"  # where the bytes came from


def new_linker(engine: wasmtime.Engine) -> Linker:
    linker = Linker(engine)
    linker.add_wasip2()
    return linker


async def load_pool(
    *,
    component_id: str,
    ref: str,
    engine: wasmtime.Engine,
    cache: CompileCache,
    limits: Limits,
    max_instances: int,
    bridge: ImportBridge | None = None,
) -> tuple[InstancePool, LoadStats]:
    t0 = time.perf_counter()
    try:
        fetched = await cache.fetcher.fetch(ref)
    except artifact.ArtifactError as exc:
        raise LoadError(str(exc)) from None
    wasm = fetched.data
    admit = getattr(bridge, "admit", None)  # --policy-subject: the service decides (host/policy.py)
    if admit is not None and (refusal := await admit(component_id, ref, wasm)) is not None:
        raise LoadError(refusal)
    t1 = time.perf_counter()
    try:
        compiled = await cache.obtain(wasm, fetched.digest)
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise LoadError(f"{ref} is not a valid component: {first}") from None
    t2 = time.perf_counter()
    exports: dict[str, Export] = await asyncio.to_thread(list_exports, engine, compiled.component)
    # HTTP components need wasi:http/types from the host, hence the host's own WASI layer
    # (docs/wasi-http.md); everything else runs on wasmtime's native WASI, measured faster.
    host_wasi = await asyncio.to_thread(wasi.needs_host_wasi, engine, compiled.component)
    # wasi:blobstore's values are wasi:io streams the host owns: the same layer
    blobs = await asyncio.to_thread(blobstore.imports_blobstore, engine, compiled.component)
    host_wasi = host_wasi or blobs
    if host_wasi:
        linker = await asyncio.to_thread(wasi.new_linker, engine, compiled.component)
    else:
        linker = await asyncio.to_thread(new_linker, engine)
    if bridge is not None:
        imports = await asyncio.to_thread(bridged_imports, engine, compiled.component)
        imports = [i for i in imports if not blobstore.is_blobstore(i.full_name)]
        bridge.define(linker, component_id, imports, lambda: limits.timeout_ms)
        if blobs:
            blobstore.define(
                linker, engine, compiled.component, bridge, component_id, lambda: limits.timeout_ms
            )
    common: dict[str, Any] = {
        "component_id": component_id,
        "engine": engine,
        "linker": linker,
        "component": compiled.component,
        "exports": exports,
        "limits": limits,
        "max_instances": max_instances,
    }
    names = await asyncio.to_thread(lambda: list(compiled.component.type.imports(engine)))
    pool: InstancePool
    if host_wasi:
        # outgoing HTTP only to the hosts the component's policy allows (read per request)
        policy = None
        if bridge is not None:
            config = bridge.component_config
            # … or, when its wasi:http/outgoing-handler is linked, to the link's provider
            policy = LinkedOutgoing(
                outgoing.from_config(lambda: config(component_id)),
                nc=bridge.nc,
                loop=bridge.loop,
                lattice=bridge.lattice,
                component_id=component_id,
                links=bridge.links,
                link_name=bridge.link_name,
                fetch_link=bridge.fetch_link,
                egress=outgoing.policy_egress(lambda: config(component_id)),
            )
        pool = wasi.WasiPool(
            outgoing=policy, loop_exchanges=serves_without_waiting(names), **common
        )
    else:
        pool = InstancePool(**common, loop_safe=never_blocks(names))
    try:
        await asyncio.to_thread(pool.warm_up, 1)
    except InvocationError as exc:
        raise LoadError(exc.message) from None
    t3 = time.perf_counter()
    return pool, LoadStats(
        t1 - t0,
        t2 - t1,
        t3 - t2,
        compiled.cached,
        compiled.digest,
        compiled.source,
        fetched.source,
    )
