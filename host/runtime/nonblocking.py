"""Which components can never block their caller's thread: the pure core of loop calls.

A call of such a component, once its export has proven short, runs on the event loop
itself (`InstancePool.run_on_loop`) instead of crossing to a worker thread and back. It
must never wait: a forwarded import (a link, a provider) waits for the loop, so on the
loop it would wait for itself; `wasi:io/poll`, sockets, files and outgoing HTTP wait on
the world. So only components whose every import is in `NEVER_WAITS` qualify. Those
imports also have no effect outside the instance (output is captured per instance), so
a call stopped by the loop's budget can run again on a worker with nothing done twice.
"""

from __future__ import annotations

from collections.abc import Iterable

NEVER_WAITS = (
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-",
    "wasi:clocks/wall-clock",
    "wasi:random/",
    "wasi:io/error",
    "wasi:io/streams",
)
"""Interface prefixes whose functions return at once and touch nothing outside the
instance. `wasi:io/streams` is safe only because nothing here hands out a stream that
waits: stdout and stderr are captured in memory, and stdin, files and sockets are not
in the list. Not `wasi:clocks/monotonic-clock` and `wasi:io/poll`: a clock's pollable
exists to be waited on."""


SERVES_ON_LOOP = (*NEVER_WAITS, "wasi:http/types")
"""What a component may import for its HTTP exchanges to run on the loop
(`WasiPool.serve_on_loop`). `wasi:http/types` waits only on the exchange's own body
pipes, and only for a request with no body, whose response fits the response pipe: a
wait that would come fails at once on the loop (`WasiState.on_loop`) and the exchange
runs again on a worker. That is safe because nothing outside the instance happened: the
response went nowhere yet, and without `wasi:http/outgoing-handler` no request left."""


def never_blocks(imports: Iterable[str]) -> bool:
    """Whether a component importing `imports` (versioned interface names) can run on
    the event loop: each one is in `NEVER_WAITS`."""
    return all(name.startswith(NEVER_WAITS) for name in imports)


def serves_without_waiting(imports: Iterable[str]) -> bool:
    """Whether a component importing `imports` may serve HTTP exchanges on the event
    loop: each one is in `SERVES_ON_LOOP`."""
    return all(name.startswith(SERVES_ON_LOOP) for name in imports)
