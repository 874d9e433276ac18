"""The `lattice` command tree: the root and its verb groups, nothing else.

Noun modules (hosts, components, …) add their commands to these groups; keeping the
groups here lets two nouns share a verb (`get hosts`, `get links`) and lets the
artifacts module (lattice/artifacts/commands.py) mount its commands on `get` and
`delete` without importing any noun.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lattice.version import VERSION

EPILOG = "Docs: docs/cli.md. Exit codes: 0 ok, 1 failed, 2 usage error, 3 timed out waiting."

app = typer.Typer(
    name="lattice",
    help="Run WebAssembly components on a lattice of hosts joined over NATS.\n\n"
    "Start here: `lattice up`, then `lattice app deploy manifests/kvcounter.yaml`.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _group(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True)


get_app = _group("Show hosts, what they run, links, config, apps and artifacts.")
delete_app = _group("Delete things from the lattice (see also `lattice app delete`).")
scale_app = _group("Scale components on a host.")
update_app = _group("Swap the image of a running component.")
stop_app = _group("Stop hosts and providers.")
start_app = _group("Start capability providers.")
label_app = _group("Set or remove host labels.")
link_app = _group("Link component imports to targets (hot-swappable).")
config_app = _group("Named config for links, components and providers.")
app_app = _group("Declarative applications (OAM manifests) kept running by the controller.")

for group, name in (
    (get_app, "get"),
    (delete_app, "delete"),
    (scale_app, "scale"),
    (update_app, "update"),
    (stop_app, "stop"),
    (start_app, "start"),
    (label_app, "label"),
    (link_app, "link"),
    (config_app, "config"),
    (app_app, "app"),
):
    app.add_typer(group, name=name)


def _version(value: bool) -> None:
    if value:
        print(f"lattice {VERSION}")
        raise typer.Exit(0)


@app.callback()
def root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="LATTICE_DEBUG",
            help="Show a traceback on failure (also accepted after any command).",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    # --debug is read in lattice.cli.main (it must work after any command, too).
    return None
