"""Link commands: `link put|del|get` and `get links`.

Put and del wait for `linkdef_set` / `linkdef_deleted` (a refused link fails with the
host's reason at once); the change reaches every host's next call.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from lattice.cli.common import (
    AsJson,
    Format,
    LatticeName,
    NatsUrl,
    NoWait,
    OutputOpt,
    Timeout,
    Watch,
    emit_done,
    fmt_of,
    run_client,
    show_or_watch,
    target,
    usage,
    wait_option,
    waiting,
)
from lattice.cli.groups import get_app, link_app
from lattice.client import LatticeClient

Package = Annotated[str, typer.Argument(metavar="NAMESPACE:PACKAGE", help="e.g. wasi:keyvalue")]
LinkName = Annotated[str, typer.Option("--name", metavar="NAME", help="Link name.")]


def split_package(package: str) -> tuple[str, str]:
    ns, sep, pkg = package.partition(":")
    if not sep or not ns or not pkg:
        raise usage(f"package {package!r} must look like namespace:package (e.g. wasi:keyvalue)")
    return ns, pkg


@link_app.command("put")
def link_put(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Source component id.")],
    target_id: Annotated[
        str, typer.Argument(metavar="TARGET", help="Target provider or component id.")
    ],
    package: Package,
    interface: Annotated[
        list[str],
        typer.Option(
            "--interface", "-i", metavar="IFACE", help="Interface of the package (repeatable)."
        ),
    ],
    name: LinkName = "default",
    source_config: Annotated[
        list[str] | None,
        typer.Option("--source-config", metavar="NAME", help="Named config (repeatable)."),
    ] = None,
    target_config: Annotated[
        list[str] | None,
        typer.Option(
            "--target-config",
            metavar="NAME",
            help="Named config for the target, e.g. which store (repeatable).",
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Atomically swap the target of an existing link.")
    ] = False,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(10.0)] = 10.0,
    output: OutputOpt = Format.table,
) -> None:
    """Link SOURCE's imports of NAMESPACE:PACKAGE to TARGET (reaches the next call).

    Example: lattice link put counter kv-redis wasi:keyvalue -i store --target-config redis
    Example: lattice link put counter kv-vault wasi:keyvalue -i store --replace
    """
    ns, pkg = split_package(package)
    with waiting(f"waiting for linkdef_set: {source} → {target_id}"):
        msg = run_client(
            target(nats_url, lattice),
            timeout,
            lambda c: c.put_link(
                source,
                target_id,
                ns,
                pkg,
                interface,
                name=name,
                source_config=source_config,
                target_config=target_config,
                replace=replace,
                wait=None if no_wait else wait_timeout,
            ),
        )
    emit_done(output, msg, {"source_id": source, "target": target_id, "name": name})


@link_app.command("del")
def link_del(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Source component id.")],
    package: Package,
    name: LinkName = "default",
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(10.0)] = 10.0,
    output: OutputOpt = Format.table,
) -> None:
    """Delete a link.

    Example: lattice link del counter wasi:keyvalue
    """
    ns, pkg = split_package(package)
    with waiting(f"waiting for linkdef_deleted: {source} {package}"):
        msg = run_client(
            target(nats_url, lattice),
            timeout,
            lambda c: c.del_link(source, ns, pkg, name, wait=None if no_wait else wait_timeout),
        )
    emit_done(output, msg, {"source_id": source, "name": name})


def links_table(links: list[dict[str, Any]]) -> Table:
    t = Table("source", "target", "package", "interfaces", "name", "target config", box=None)
    for lk in links:
        t.add_row(
            lk["source_id"],
            lk["target"],
            f"{lk['wit_namespace']}:{lk['wit_package']}",
            ",".join(lk["interfaces"]),
            lk["name"],
            ",".join(lk["target_config"]),
        )
    return t


def show_links(
    nats_url: str | None,
    lattice: str | None,
    timeout: float,
    output: Format,
    as_json: bool,
    watch: bool,
) -> None:
    async def fetch(c: LatticeClient) -> list[dict[str, Any]]:
        return await c.get_links()

    show_or_watch(
        target(nats_url, lattice),
        fetch,
        fmt_of(output, as_json),
        links_table,
        watch=watch,
        timeout=timeout,
    )


@link_app.command("get")
def link_get(
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
    watch: Watch = False,
) -> None:
    """List every link of the lattice (the same as `lattice get links`).

    Example: lattice link get -o json
    """
    show_links(nats_url, lattice, timeout, output, as_json, watch)


@get_app.command("links")
def get_links(
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
    watch: Watch = False,
) -> None:
    """List every link of the lattice.

    Example: lattice get links
    """
    show_links(nats_url, lattice, timeout, output, as_json, watch)
