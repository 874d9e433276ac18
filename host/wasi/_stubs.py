"""Stub functions derived from WIT types, for interfaces this host refuses (fs, sockets)."""

from __future__ import annotations

from typing import Any

from wasmtime.component import EnumType, FuncType, ResultType

from host.wasi.binding import Err, Fallback, HostFn
from host.wasi.state import WasiState


def refuse_with(code: str) -> Fallback:
    """A fallback: functions returning `result<_, error-code>` (an enum with case `code`)
    return `err(code)`; any other function gets no stub (it traps when called)."""

    def fallback(name: str, fty: FuncType) -> HostFn | None:
        result = fty.result
        if not isinstance(result, ResultType):
            return None
        err = result.err
        if not isinstance(err, EnumType) or code not in err.names:
            return None

        def refuse(state: WasiState, *args: Any) -> Err[str]:
            return Err(code)

        return refuse

    return fallback
