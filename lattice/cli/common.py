"""What every `lattice` command shares: connection options, output, waiting and errors.

Each noun module (hosts, components, …) is a set of thin functions over
`lattice.client`; this module turns their results into output and their failures into
exit codes, so every command behaves the same way:

- output: `-o table|json|yaml` (`--json` stays as a hidden alias). JSON and YAML carry
  the same stable field names (docs/cli.md lists them); tables are for people.
- exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 timed out waiting for an
  outcome. A failure is one line on stderr, with a hint when there is one; a traceback
  only with `--debug`.
- waiting: a command that changes the lattice waits for the outcome event while a
  spinner (in a terminal only) says what it waits for; `--no-wait` returns after the
  acknowledgement and `--wait-timeout` bounds the wait.

It never talks to NATS itself: that is `lattice.client`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.live import Live

from lattice import loops
from lattice.client import LatticeClient, LatticeError, WaitTimeout
from lattice.protocol.invocation import InvocationError
from lattice.protocol.subjects import SubjectError

T = TypeVar("T")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_LATTICE = "default"

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3


class CliError(Exception):
    """A failure to show as one line (plus an optional hint) and an exit code."""

    def __init__(self, message: str, hint: str | None = None, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


def fail(message: str, hint: str | None = None) -> CliError:
    return CliError(message, hint)


def usage(message: str, hint: str | None = None) -> CliError:
    return CliError(message, hint, EXIT_USAGE)


# Hints for the failures people meet most, matched on the client's wording.
_HINTS = (
    ("no host runs component", "see `lattice get components`"),
    ("no host runs provider", "see `lattice get providers`"),
    ("cannot reach NATS", "start a host with `lattice up`, or pick a context: `lattice ctx use`"),
    ("no controller runs", "`lattice up` runs one with its embedded NATS; or `lattice controller`"),
    ("no host answered", "start one with `lattice up`"),
    ("no host offered", "see `lattice get hosts` for labels, or pass --host"),
    ("no config named", "see `lattice get config`"),
    ("no application named", "see `lattice get apps`"),
    ("nobody answers on", "see `lattice get hosts` for host ids"),
)


def hint_for(message: str) -> str | None:
    return next((h for needle, h in _HINTS if needle in message), None)


def show_error(e: CliError) -> None:
    err.print(f"[red]error:[/red] {e.message}", markup=True)
    if e.hint:
        err.print(f"[dim]hint:[/dim] {e.hint}", markup=True)


# -- connection options ----------------------------------------------------------

NatsUrl = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        envvar="LATTICE_NATS_URL",
        metavar="URL",
        help="NATS server to talk to; comma-separate several nodes of a cluster to start "
        f"on any that answers (default: the context's, else {DEFAULT_URL}).",
        show_default=False,
    ),
]
LatticeName = Annotated[
    str | None,
    typer.Option(
        "--lattice",
        envvar="LATTICE_LATTICE",
        metavar="NAME",
        help="Lattice name (default: the context's, else default).",
        show_default=False,
    ),
]
Timeout = Annotated[
    float, typer.Option("--timeout", metavar="SECONDS", help="Seconds to wait for answers.")
]


class Format(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OutputOpt = Annotated[
    Format,
    typer.Option(
        "--output",
        "-o",
        envvar="LATTICE_OUTPUT",
        metavar="table|json|yaml",
        help="Output format.",
        case_sensitive=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", hidden=True, help="Same as -o json.")]
NoWait = Annotated[
    bool,
    typer.Option(
        "--no-wait", help="Return after the acknowledgement, not waiting for the outcome."
    ),
]
Watch = Annotated[bool, typer.Option("--watch", "-w", help="Keep redrawing until Ctrl-C.")]


def fmt_of(output: Format, as_json: bool) -> Format:
    return Format.json if as_json else output


def wait_option(default: float, *aliases: str) -> Any:
    """`--wait-timeout SECONDS` (with older spellings kept working as aliases)."""
    return typer.Option(
        "--wait-timeout",
        *aliases,
        metavar="SECONDS",
        help="Seconds to wait for the outcome event.",
    )


@dataclass(frozen=True)
class Target:
    """Where a command connects: flags and LATTICE_* win over the current context."""

    nats_url: str
    lattice: str
    creds: str | None = None
    tls_ca: str | None = None


def target(nats_url: str | None, lattice: str | None) -> Target:
    from lattice.cli import ctx

    current = ctx.current()
    return Target(
        nats_url=nats_url or (current.nats_url if current else None) or DEFAULT_URL,
        lattice=lattice or (current.lattice if current else None) or DEFAULT_LATTICE,
        creds=os.environ.get("LATTICE_CREDS") or (current.creds if current else None),
        tls_ca=os.environ.get("LATTICE_TLS_CA") or (current.tls_ca if current else None),
    )


def run_client(
    where: Target | tuple[str | None, str | None],
    timeout: float,
    fn: Callable[[LatticeClient], Awaitable[T]],
) -> T:
    """Connect, run `fn`, close; map every failure to a CliError with the right code."""
    t = where if isinstance(where, Target) else target(*where)

    async def go() -> T:
        client = await LatticeClient.connect(
            t.nats_url, t.lattice, timeout, creds=t.creds, tls_ca=t.tls_ca
        )
        async with client:
            return await fn(client)

    return run(go())


def run(coro: Awaitable[T], *, host_loop: bool = False) -> T:
    """`host_loop`: a long-running host process's loop (lattice/loops.py: uvloop)."""
    try:
        if host_loop:
            return loops.run(coro)  # type: ignore[arg-type]
        return asyncio.run(coro)  # type: ignore[arg-type]
    except WaitTimeout as exc:
        hint = "raise --wait-timeout, or see `lattice events`"
        raise CliError(str(exc), hint, EXIT_TIMEOUT) from None
    except (LatticeError, SubjectError, ValueError) as exc:
        raise CliError(str(exc), hint_for(str(exc))) from None
    except InvocationError as exc:
        raise CliError(f"call failed ({exc.kind}): {exc.message}") from None


# -- output ----------------------------------------------------------------------


def to_plain(value: Any) -> Any:
    """Pydantic models and other objects as plain JSON-able data."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def dump(value: Any, fmt: Format, *, compact: bool = False) -> str:
    plain = to_plain(value)
    if fmt is Format.yaml:
        import yaml

        return str(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)).rstrip()
    if compact:
        return json.dumps(plain, ensure_ascii=False, default=str, separators=(",", ":"))
    return json.dumps(plain, ensure_ascii=False, default=str, indent=2)


def emit(value: Any, fmt: Format, table: Callable[[Any], RenderableType | str]) -> None:
    """Print `value` as JSON/YAML, or as the table `table` draws from it."""
    if fmt is Format.table:
        out.print(table(value))
    else:
        print(dump(value, fmt), flush=True)


def emit_done(fmt: Format, message: str, data: dict[str, Any] | None = None) -> None:
    """The outcome of a command that changed something: a sentence, or its data."""
    if fmt is Format.table:
        out.print(message)
    else:
        print(dump({"ok": True, "message": message, **(data or {})}, fmt), flush=True)


def show_or_watch(
    where: Target,
    fetch: Callable[[LatticeClient], Awaitable[T]],
    fmt: Format,
    table: Callable[[T], RenderableType | str],
    *,
    watch: bool = False,
    interval: float = 2.0,
    timeout: float = 10.0,
) -> T | None:
    """Show what `fetch` returns once, or (`--watch`) redraw it in place every
    `interval` seconds until Ctrl-C; JSON/YAML in watch mode print one document per
    change."""
    if not watch:
        data = run_client(where, timeout, fetch)
        emit(data, fmt, table)  # type: ignore[arg-type]
        return data

    async def loop(c: LatticeClient) -> None:
        last: str | None = None
        in_place = fmt is Format.table and out.is_terminal
        live = Live(console=out, auto_refresh=False) if in_place else None
        with live or contextlib.nullcontext():
            while True:
                data = await fetch(c)
                if live is not None:
                    live.update(table(data), refresh=True)
                    await asyncio.sleep(interval)
                    continue
                # Not a terminal: print each new state once (a blank line between
                # tables, one JSON document per line, YAML documents separated by ---).
                if fmt is Format.table:
                    with out.capture() as cap:
                        out.print(table(data))
                    text = cap.get()
                else:
                    text = dump(data, fmt, compact=fmt is Format.json)
                if text != last:
                    if fmt is Format.table:
                        out.file.write(text + "\n")
                        out.file.flush()
                    else:
                        print(text if fmt is Format.json else f"---\n{text}", flush=True)
                last = text
                await asyncio.sleep(interval)

    with contextlib.suppress(KeyboardInterrupt):
        run_client(where, timeout, loop)
    return None


@contextlib.contextmanager
def waiting(what: str) -> Iterator[Callable[[str], None]]:
    """A spinner saying what we wait for, on a terminal only; yields a function that
    updates its text."""
    if not err.is_terminal:
        yield lambda _text: None
        return
    with err.status(what) as status:
        yield lambda text: status.update(text)


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise usage(f"{what} {item!r} must look like key=value")
        pairs[key] = value
    return pairs


def short(host_id: str) -> str:
    return host_id[:8] if len(host_id) > 8 else host_id


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
