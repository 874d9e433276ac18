"""`wasi:clocks` in Python: monotonic time with timer pollables, and wall-clock time.

`monotonic-clock` is `time.monotonic_ns()`; `subscribe-instant`/`subscribe-duration`
return pollables over an `io.Timer`, which `poll` sleeps on (bounded by the store's
deadline). `wall-clock` is `time.time_ns()` as a `datetime` record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from host.wasi.binding import Interface
from host.wasi.io import Pollable, Timer
from host.wasi.state import WasiState


@dataclass(frozen=True, slots=True)
class Datetime:
    """`wasi:clocks/wall-clock.datetime` (wasmtime-py lowers records by attribute)."""

    seconds: int
    nanoseconds: int


def _now(state: WasiState) -> int:
    return time.monotonic_ns()


def _resolution(state: WasiState) -> int:
    return max(1, int(time.get_clock_info("monotonic").resolution * 1e9))


def _subscribe_instant(state: WasiState, when: int) -> Pollable:
    return Pollable(Timer(when))


def _subscribe_duration(state: WasiState, duration: int) -> Pollable:
    return Pollable(Timer(time.monotonic_ns() + duration))


def _wall_now(state: WasiState) -> Datetime:
    ns = time.time_ns()
    return Datetime(ns // 1_000_000_000, ns % 1_000_000_000)


def _wall_resolution(state: WasiState) -> Datetime:
    ns = max(1, int(time.get_clock_info("time").resolution * 1e9))
    return Datetime(ns // 1_000_000_000, ns % 1_000_000_000)


INTERFACES = (
    Interface(
        "wasi:clocks/monotonic-clock",
        functions={
            "now": _now,
            "resolution": _resolution,
            "subscribe-instant": _subscribe_instant,
            "subscribe-duration": _subscribe_duration,
        },
    ),
    Interface(
        "wasi:clocks/wall-clock", functions={"now": _wall_now, "resolution": _wall_resolution}
    ),
)
