"""The whole Python WASI layer as one set of interfaces, and the linker entry point.

`define(linker, engine, component)` is what a loader calls *instead of*
`linker.add_wasip2()` for a component that imports `wasi:http/types`: it defines every
WASI 0.2 import of that component this layer implements, under the exact names (and
versions) the component imports. It must be all of WASI, not just HTTP: a resource
type is identified by its definition, so once `wasi:io/streams.output-stream` is a
Python resource, `wasi:cli/stdout.get-stdout` (which returns one) must be Python too —
mixing with `add_wasip2` fails at instantiation with a resource type mismatch.
"""

from __future__ import annotations

import wasmtime
from wasmtime.component import Component, Linker

from host.wasi import _speedups, cli, clocks, filesystem, http, io, random, sockets
from host.wasi.binding import Interface, define_imports, imported_instances

INTERFACES: dict[str, Interface] = {
    spec.name: spec
    for spec in (
        *io.INTERFACES,
        *cli.INTERFACES,
        *clocks.INTERFACES,
        *random.INTERFACES,
        *filesystem.INTERFACES,
        *sockets.INTERFACES,
        *http.INTERFACES,
    )
}

# Import prefixes this layer answers; everything else is left to the import bridge.
HOST_PREFIXES = (
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:random/",
    "wasi:sockets/",
    "wasi:http/",
)


def define(linker: Linker, engine: wasmtime.Engine, component: Component) -> list[str]:
    """Define the component's WASI imports in `linker` (instead of `add_wasip2`).

    Returns the instance names defined. Stores instantiated with this linker must carry a
    `WasiState` (`host.wasi.new_store`). Also switches wasmtime-py to the fast
    value conversions (`host.wasi._speedups`).
    """
    _speedups.install()
    return define_imports(linker, engine, component, INTERFACES)


def new_linker(engine: wasmtime.Engine, component: Component) -> Linker:
    linker = Linker(engine)
    define(linker, engine, component)
    return linker


def needs_host_wasi(engine: wasmtime.Engine, component: Component) -> bool:
    """Whether the component needs this layer: it imports `wasi:http/types` or exports
    `wasi:http/incoming-handler` (which only this layer can call)."""
    if http.TYPES_INTERFACE in imported_instances(engine, component):
        return True
    return http.handler_export(engine, component) is not None
