"""The event loop of the host's processes: uvloop where it is installed.

Measured with `python -m bench invoke --guests echo-min` (three alternating pairs of runs
on the 2-core dev machine, host processes only): the p50 overhead of a call, one at a
time, went from 236–308 µs to 121–205 µs, and the host's CPU per sequential call from
332–400 µs to 259–302 µs; calls/s at 100 in flight did not move beyond the machine's
noise. A provider process showed no change (its socket round trip 455 vs 457 µs), so
providers keep asyncio's own loop. `LATTICE_UVLOOP=0` turns it off.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, or None (asyncio's) when it is off or not installed."""
    if os.environ.get("LATTICE_UVLOOP", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        import uvloop
    except ImportError:  # an optional speed-up, never a requirement
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the loop above (Ctrl-C and cleanup as asyncio.run does them)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
