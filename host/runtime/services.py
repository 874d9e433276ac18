"""Interfaces the host serves itself, per component: wasi:config/store and
wasi:logging/logging.

`wasi:config/store` answers from the component's named config (the `config` names of
its scale request, merged in order; secret keys are left out — they are for
providers). It is read on every call, so `lattice config put` reaches the next call.
Config attached to a component whose capability policy (lattice/policy.py) does not
let it read that config is withheld: every read traps with a message naming the policy
(the guest cannot be handed wasi:config's `error`: wasmtime-py 50 cannot pass a variant
whose cases all carry a string, they are untagged in its value model).
`wasi:logging/logging` writes to the host's structlog output with the component id
bound, so component logs sit beside the host's own and filter the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
import wasmtime
from wasmtime.component import FuncType, LinkerInstance

from host.wasi._speedups import define_func
from lattice import codec
from lattice.valtype import FuncSig

SERVED = ("wasi:config/store", "wasi:logging/logging")
_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "error": "error",
    "critical": "critical",
}

log = structlog.get_logger("lattice.component")

ComponentConfig = Callable[[str], Mapping[str, str]]


def serves(short_name: str) -> bool:
    return short_name in SERVED


def define(
    inst: LinkerInstance,
    short_name: str,
    functions: list[tuple[str, FuncSig, FuncType | None]],
    component_id: str,
    config: ComponentConfig,
) -> None:
    """Define the functions of one host-served interface in `inst`."""
    for name, sig, fty in functions:
        define_func(inst, name, _implementation(short_name, name, sig, component_id, config), fty)


def _implementation(
    short_name: str, name: str, sig: FuncSig, component_id: str, config: ComponentConfig
) -> Callable[..., Any]:
    clog = log.bind(component_id=component_id)
    if short_name == "wasi:config/store" and name == "get":

        def get(store: Any, key: str) -> Any:
            cfg = config(component_id)
            if (refused := getattr(cfg, "refused", None)) is not None:
                raise wasmtime.WasmtimeError(refused)
            return _guard(lambda: codec.lift(sig.result, {"ok": cfg.get(key)}))

        return get
    if short_name == "wasi:config/store" and name == "get-all":

        def get_all(store: Any) -> Any:
            cfg = config(component_id)
            if (refused := getattr(cfg, "refused", None)) is not None:
                raise wasmtime.WasmtimeError(refused)
            pairs = sorted(cfg.items())
            return _guard(lambda: codec.lift(sig.result, {"ok": [list(p) for p in pairs]}))

        return get_all
    if short_name == "wasi:logging/logging" and name == "log":

        def write(store: Any, level: str, context: str, message: str) -> None:
            method = getattr(clog, _LEVELS.get(level, "info"))
            method(message, context=context or None, level_from_component=level)

        return write

    def unknown(store: Any, *args: Any) -> Any:
        raise wasmtime.WasmtimeError(f"{short_name}.{name} is not implemented by this host")

    return unknown


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # only WasmtimeError may leave a host function
        raise wasmtime.WasmtimeError(f"{type(exc).__name__}: {exc}") from None
