"""`lattice ctx`: named connection contexts (NATS URL, lattice, credentials file).

Contexts live in one JSON file under the user's config directory
(`$LATTICE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/lattice`, else `~/.config/lattice`),
`contexts.json`: `{"current": NAME, "contexts": {NAME: {nats_url, lattice, creds, tls_ca}}}`.
A command uses the current context (or the one `LATTICE_CONTEXT` names) for what its
flags and LATTICE_* variables leave unset. The file holds a path to a credentials
file, never the credentials themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table

from lattice.cli.common import AsJson, Format, OutputOpt, emit, fail, fmt_of, usage
from lattice.protocol.subjects import SubjectError, check_token

app = typer.Typer(
    help="Named connection contexts: which NATS and lattice commands talk to.",
    no_args_is_help=True,
)


class Context(BaseModel):
    nats_url: str | None = None
    lattice: str | None = None
    creds: str | None = None
    tls_ca: str | None = None


class ContextFile(BaseModel):
    current: str | None = None
    contexts: dict[str, Context] = {}


def config_dir() -> Path:
    explicit = os.environ.get("LATTICE_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lattice"


def path() -> Path:
    return config_dir() / "contexts.json"


def load() -> ContextFile:
    p = path()
    if not p.is_file():
        return ContextFile()
    try:
        return ContextFile.model_validate_json(p.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError) as exc:
        raise fail(f"cannot read contexts from {p}: {exc}", "fix or remove the file") from None


def save(data: ContextFile) -> None:
    p = path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(data.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(p)


def current() -> Context | None:
    """The context in use: `LATTICE_CONTEXT`, else the one `lattice ctx use` chose."""
    data = load()
    name = os.environ.get("LATTICE_CONTEXT") or data.current
    if not name:
        return None
    if name not in data.contexts:
        raise fail(f"no context named {name!r}", "see `lattice ctx list`")
    return data.contexts[name]


@app.command("set")
def ctx_set(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Context name.")],
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", metavar="URL", help="NATS server.")
    ] = None,
    lattice: Annotated[
        str | None, typer.Option("--lattice", metavar="NAME", help="Lattice name.")
    ] = None,
    creds: Annotated[
        Path | None,
        typer.Option("--creds", metavar="FILE", help="NATS credentials file (its path is kept)."),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca", metavar="FILE", help="CA certificate the NATS server's TLS must chain to."
        ),
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Also make it the current context.")] = False,
) -> None:
    """Create or change a context (only the options given change).

    Example: lattice ctx set prod --nats-url nats://nats.example:4222 --lattice prod --use
    """
    try:
        check_token(name, "context name")
        if lattice:
            check_token(lattice, "lattice name")
    except SubjectError as exc:
        raise usage(str(exc)) from None
    for flag, path in (("--creds", creds), ("--tls-ca", tls_ca)):
        if path is not None and not path.is_file():
            raise usage(f"{flag} {path}: no such file")
    data = load()
    old = data.contexts.get(name, Context())
    data.contexts[name] = Context(
        nats_url=nats_url or old.nats_url,
        lattice=lattice or old.lattice,
        creds=str(creds.resolve()) if creds else old.creds,
        tls_ca=str(tls_ca.resolve()) if tls_ca else old.tls_ca,
    )
    if use or data.current is None:
        data.current = name
    save(data)
    print(f"context {name} set" + (" (current)" if data.current == name else ""))


@app.command("use")
def ctx_use(name: Annotated[str, typer.Argument(metavar="NAME", help="Context name.")]) -> None:
    """Make NAME the current context.

    Example: lattice ctx use prod
    """
    data = load()
    if name not in data.contexts:
        raise fail(f"no context named {name!r}", "create it with `lattice ctx set NAME …`")
    data.current = name
    save(data)
    print(f"now using context {name}")


@app.command("list")
def ctx_list(output: OutputOpt = Format.table, as_json: AsJson = False) -> None:
    """Every context; the current one is marked.

    Example: lattice ctx list -o json
    """
    data = load()
    rows = [
        {"name": n, "current": n == data.current, **c.model_dump()}
        for n, c in sorted(data.contexts.items())
    ]

    def table(rows: list[dict[str, object]]) -> Table:
        t = Table("", "name", "nats url", "lattice", "creds", box=None)
        for r in rows:
            t.add_row(
                "*" if r["current"] else "",
                str(r["name"]),
                str(r["nats_url"] or "-"),
                str(r["lattice"] or "-"),
                str(r["creds"] or "-"),
            )
        return t

    emit(rows, fmt_of(output, as_json), table)


@app.command("del")
def ctx_del(name: Annotated[str, typer.Argument(metavar="NAME", help="Context name.")]) -> None:
    """Delete a context.

    Example: lattice ctx del prod
    """
    data = load()
    if data.contexts.pop(name, None) is None:
        raise fail(f"no context named {name!r}", "see `lattice ctx list`")
    if data.current == name:
        data.current = None
    save(data)
    print(f"context {name} deleted")
