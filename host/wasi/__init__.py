"""A host-side (Python) implementation of WASI 0.2, for serving `wasi:http/proxy` components.

wasmtime-py 50 can run WASI 0.2 natively (`Linker.add_wasip2`) but cannot hand a
component an *incoming* HTTP request. This package defines `wasi:http/types` in Python —
and with it every WASI interface whose resource types it shares (io, cli, clocks,
random; filesystem and sockets as refusing stubs) — so the host can call a standard
component's `wasi:http/incoming-handler.handle` with a request it built and stream the
response back. See docs/wasi-http.md for the design, the measurements and the decision
to use it only for components that need it.

Entry points:

* `define(linker, engine, component)` — instead of `add_wasip2()` for such components;
* `needs_host_wasi(engine, component)` — whether a component needs this layer;
* `WasiPool` (the host's pool) and `WasiInstance` (one instance, for tools and tests);
* `serve_request(pool_or_instance, method, path_with_query, scheme, authority, headers,
  body)` → `HttpResponse(status, headers, body)` with a streamed async body.

Modules: `binding` (WIT ⇄ Python value and resource plumbing), `state` (per-store
state: resource table, output, deadline), `io`, `cli`, `clocks`, `random`,
`filesystem`, `sockets`, `http`, `layer` (all of it as one linker definition),
`instance` (pool and single instance), `_speedups` (faster, thread-safe wasmtime-py
value conversion), `measure` (the numbers in docs/wasi-http.md).
"""

from host.wasi.http import HttpResponse, ResponseBodyError, read_body, serve_request
from host.wasi.instance import WasiInstance, WasiPool
from host.wasi.layer import HOST_PREFIXES, define, needs_host_wasi, new_linker
from host.wasi.state import WasiState, new_store, state_of

__all__ = [
    "HOST_PREFIXES",
    "HttpResponse",
    "ResponseBodyError",
    "WasiInstance",
    "WasiPool",
    "WasiState",
    "define",
    "needs_host_wasi",
    "new_linker",
    "new_store",
    "read_body",
    "serve_request",
    "state_of",
]
