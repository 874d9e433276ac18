"""The `lattice` command line: one module per noun over a shared layer.

`main()` builds the command tree (lattice.cli.groups plus every noun module), gives
every parameter a metavar that reads as a word, and runs it with its own error
handling, so every command exits the same way: 0 ok, 1 failed, 2 usage error (an
unknown subcommand suggests the closest one), 3 timed out waiting for an outcome; one
line on stderr with a hint, a traceback only with `--debug` (or LATTICE_DEBUG=1).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Any

import typer
from typer import _click as click
from typer.core import TyperArgument, TyperOption
from typer.exceptions import Abort

from lattice.cli import (  # noqa: F401  (importing a noun module registers its commands)
    apps,
    components,
    config,
    events,
    hosts,
    links,
    providers,
    secure,
    spy,
    up,
)
from lattice.cli import ctx as ctx_module
from lattice.cli.common import EXIT_FAILED, EXIT_USAGE, CliError, err, show_error
from lattice.cli.groups import app, delete_app, get_app

__all__ = ["app", "build", "main"]

app.add_typer(ctx_module.app, name="ctx")

with contextlib.suppress(ImportError):  # issue 9's artifacts commands, when present
    from lattice.artifacts.commands import register as _register_artifacts

    _register_artifacts(app, get_app, delete_app)


def _word(param: Any) -> str:
    """A metavar for a parameter that set none: the option's name in capitals."""
    name = (param.name or "value").upper()
    return "N" if name in ("COUNT",) else name


def humanize(command: Any) -> Any:
    """Metavars as words: typer shows `<str>`, `<list[str]>`, `<bool>` otherwise.

    Options without a metavar get their name in capitals, flags none, arguments show
    their name only. Checked by tests/test_cli_help.py, which fails if typer's help
    starts showing Python types again."""
    for param in getattr(command, "params", []):
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = _word(param)
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
        elif isinstance(param, TyperOption):
            if param.is_flag or param.count:
                param.metavar = ""
            elif param.metavar is None:
                param.metavar = _word(param)
    get_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:
        opt = get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        humanize(sub)
    return command


def build() -> Any:
    """The click command tree of `lattice`, metavars made readable."""
    return humanize(typer.main.get_command(app))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("LATTICE_DEBUG", "") not in ("", "0")
    if "--debug" in args and args.index("--debug") > 0:
        args.remove("--debug")  # accepted after any command, too
    try:
        code = run_main(args, debug)
    except KeyboardInterrupt:  # while the command tree is built, before a command runs
        code = 130
    sys.exit(code)


def command_words(root: Any, args: list[str]) -> list[str]:
    """The subcommand names at the start of `args` (`get hosts` of `get hosts -o json`)."""
    words, cmd = [], root
    for a in args:
        sub = getattr(cmd, "commands", {}).get(a)
        if sub is None:
            break
        words.append(a)
        cmd = sub
    return words


def run_main(args: list[str], debug: bool) -> int:
    root = build()
    try:
        rv = root.main(args=args, prog_name="lattice", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except CliError as exc:
        if debug:
            traceback.print_exc()
        if exc.code == EXIT_USAGE and exc.hint is None:
            exc.hint = f"see `{' '.join(['lattice', *command_words(root, args)])} --help`"
        show_error(exc)
        return exc.code
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.exceptions.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "lattice"
        show_error(CliError(exc.format_message(), f"see `{cmd} --help`", EXIT_USAGE))
        return EXIT_USAGE
    except Abort:
        err.print("aborted")
        return 130
    except click.ClickException as exc:
        show_error(CliError(exc.format_message()))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line unless --debug
        if debug:
            traceback.print_exc()
        show_error(
            CliError(
                f"internal error: {type(exc).__name__}: {exc}",
                "run again with --debug for a traceback",
                EXIT_FAILED,
            )
        )
        return EXIT_FAILED
