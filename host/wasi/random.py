"""`wasi:random` in Python: secure bytes from `os.urandom`, insecure ones from `random`.

`insecure-seed` returns the same pair for the life of the store, as WASI asks.
Requests are capped at `MAX_BYTES` per call (a guest asking for more traps).
"""

from __future__ import annotations

import os
import random as _random

from wasmtime import WasmtimeError

from host.wasi.binding import Interface
from host.wasi.state import WasiState

MAX_BYTES = 16 * 1024 * 1024


def _check(n: int) -> int:
    if n > MAX_BYTES:
        raise WasmtimeError(f"wasi:random: {n} bytes asked for; at most {MAX_BYTES} per call")
    return n


def _random_bytes(state: WasiState, n: int) -> bytes:
    return os.urandom(_check(n))


def _random_u64(state: WasiState) -> int:
    return int.from_bytes(os.urandom(8), "little")


def _insecure_bytes(state: WasiState, n: int) -> bytes:
    return _random.randbytes(_check(n))


def _insecure_u64(state: WasiState) -> int:
    return _random.getrandbits(64)


def _insecure_seed(state: WasiState) -> tuple[int, int]:
    return state.insecure_seed


INTERFACES = (
    Interface(
        "wasi:random/random",
        functions={"get-random-bytes": _random_bytes, "get-random-u64": _random_u64},
    ),
    Interface(
        "wasi:random/insecure",
        functions={
            "get-insecure-random-bytes": _insecure_bytes,
            "get-insecure-random-u64": _insecure_u64,
        },
    ),
    Interface("wasi:random/insecure-seed", functions={"insecure-seed": _insecure_seed}),
)
