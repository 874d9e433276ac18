"""`wasi:cli` in Python: environment, exit, stdio and terminals.

stdin is empty (a component serving HTTP has no console); stdout and stderr are
`OutputStream`s over a `LogSink`, so everything the guest prints goes to the store's
output handler — by default the host log, one record per line; the pool also keeps the
tail for trap messages. No terminal is attached: `get-terminal-*` return `none`, as
wasmtime does for non-tty stdio. `exit` traps the call (the instance is discarded).
"""

from __future__ import annotations

from wasmtime import WasmtimeError

from host.wasi.binding import Err, HostResource, Interface, Ok, resource
from host.wasi.io import EmptySource, InputStream, LogSink, OutputStream
from host.wasi.state import WasiState


@resource("wasi:cli/terminal-input", "terminal-input")
class TerminalInput(HostResource):
    """Never handed out: there is no terminal."""


@resource("wasi:cli/terminal-output", "terminal-output")
class TerminalOutput(HostResource):
    """Never handed out: there is no terminal."""


def _get_environment(state: WasiState) -> list[tuple[str, str]]:
    return list(state.env)


def _get_arguments(state: WasiState) -> list[str]:
    return list(state.args)


def _initial_cwd(state: WasiState) -> str | None:
    return None


def _exit(state: WasiState, status: Ok[None] | Err[None]) -> None:
    code = 0 if isinstance(status, Ok) else 1
    raise WasmtimeError(f"the component called wasi:cli/exit with status {code}")


def _exit_with_code(state: WasiState, code: int) -> None:
    raise WasmtimeError(f"the component called wasi:cli/exit with status {code}")


def _no_terminal(state: WasiState) -> None:
    return None


INTERFACES = (
    Interface(
        "wasi:cli/environment",
        functions={
            "get-environment": _get_environment,
            "get-arguments": _get_arguments,
            "initial-cwd": _initial_cwd,
        },
    ),
    Interface("wasi:cli/exit", functions={"exit": _exit, "exit-with-code": _exit_with_code}),
    Interface("wasi:cli/stdin", functions={"get-stdin": lambda state: InputStream(EmptySource())}),
    Interface(
        "wasi:cli/stdout",
        functions={"get-stdout": lambda state: OutputStream(LogSink(state, "stdout"))},
    ),
    Interface(
        "wasi:cli/stderr",
        functions={"get-stderr": lambda state: OutputStream(LogSink(state, "stderr"))},
    ),
    Interface("wasi:cli/terminal-input", resources=(TerminalInput,)),
    Interface("wasi:cli/terminal-output", resources=(TerminalOutput,)),
    Interface("wasi:cli/terminal-stdin", functions={"get-terminal-stdin": _no_terminal}),
    Interface("wasi:cli/terminal-stdout", functions={"get-terminal-stdout": _no_terminal}),
    Interface("wasi:cli/terminal-stderr", functions={"get-terminal-stderr": _no_terminal}),
)
