"""Host commands: `get hosts`, `get inventory`, `label put|del`, `stop host`.

`get hosts` prints each host as it answers the ping (no waiting out a timeout before
the first line). Whether a host runs a controller and which NATS it joined come from
the labels `lattice up` sets: `hostcore.controller` and `hostcore.nats`.
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
    emit,
    emit_done,
    fail,
    fmt_of,
    out,
    parse_pairs,
    run_client,
    show_or_watch,
    target,
    wait_option,
    waiting,
)
from lattice.cli.complete import live
from lattice.cli.groups import get_app, label_app, stop_app
from lattice.client import LatticeClient
from lattice.protocol.messages import HostInventory, HostPing

CONTROLLER_LABEL = "hostcore.controller"
NATS_LABEL = "hostcore.nats"

HostArg = Annotated[
    str, typer.Argument(metavar="HOST", help="Host id.", autocompletion=live("host"))
]


def host_row(h: HostPing) -> dict[str, Any]:
    """A host as `get hosts -o json` prints it (stable field names)."""
    return {
        **h.model_dump(),
        "controller": h.labels.get(CONTROLLER_LABEL) == "true",
        "nats": h.labels.get(NATS_LABEL, "external"),
    }


def user_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if not k.startswith("hostcore."))


HOST_LINE = "{id:<56}  {name:<20} {up:<10} {ctl:<10} {nats:<8} {labels}"


def host_line(r: dict[str, Any]) -> str:
    return HOST_LINE.format(
        id=r["id"],
        name=r["friendly_name"],
        up=r["uptime_human"],
        ctl="yes" if r["controller"] else "no",
        nats=r["nats"],
        labels=user_labels(r["labels"]),
    )


def hosts_table(rows: list[dict[str, Any]]) -> Table:
    t = Table("host", "name", "up", "controller", "nats", "labels", box=None)
    for r in rows:
        t.add_row(
            r["id"],
            r["friendly_name"],
            r["uptime_human"],
            "yes" if r["controller"] else "no",
            r["nats"],
            user_labels(r["labels"]),
        )
    return t


@get_app.command("hosts")
def get_hosts(
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="Seconds to collect answers.")
    ] = 1.5,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
    watch: Watch = False,
) -> None:
    """List the hosts of the lattice, printing each as it answers.

    Example: lattice get hosts
    Example: lattice get hosts -o json
    """
    fmt = fmt_of(output, as_json)
    where = target(nats_url, lattice)
    if watch:

        async def fetch(c: LatticeClient) -> list[dict[str, Any]]:
            return [host_row(h) for h in await c.hosts(wait=timeout)]

        show_or_watch(where, fetch, fmt, hosts_table, watch=True, timeout=timeout + 5)
        return

    async def go(c: LatticeClient) -> list[dict[str, Any]]:
        rows = []
        if fmt is Format.table:
            out.print(
                HOST_LINE.format(
                    id="HOST", name="NAME", up="UP", ctl="CONTROLLER", nats="NATS", labels="LABELS"
                ).rstrip()
            )
        async for h in c.stream_hosts(wait=timeout):
            rows.append(host_row(h))
            if fmt is Format.table:
                out.print(host_line(rows[-1]).rstrip())
        return rows

    rows = run_client(where, timeout + 5, go)
    if not rows:
        raise fail(f"no host answered on lattice {where.lattice!r} within {timeout:g}s")
    if fmt is not Format.table:
        emit(rows, fmt, hosts_table)


def inventory_tables(invs: list[HostInventory]) -> Any:
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    for inv in invs:
        parts.append(Text.from_markup(f"[bold]{inv.host_id}[/bold] ({inv.friendly_name}) "))
        parts.append(f"up {inv.uptime_human}, labels: {user_labels(inv.labels) or '-'}")
        if inv.components:
            t = Table("component", "image", "max", "warm", "rev", "exports")
            for c in inv.components:
                t.add_row(
                    c.id,
                    c.image_ref,
                    str(c.max_instances),
                    str(c.instances_warm),
                    str(c.revision),
                    str(len(c.exports)),
                )
            parts.append(t)
        else:
            parts.append("no components")
        if inv.providers:
            pt = Table("provider", "image", "healthy", "restarts")
            for p in inv.providers:
                pt.add_row(
                    p["id"], p["image_ref"], str(p.get("healthy")), str(p.get("restarts", 0))
                )
            parts.append(pt)
    return Group(*parts)


async def inventories(c: LatticeClient, host: str | None = None) -> list[HostInventory]:
    ids = [host] if host else [h.id for h in await c.hosts(wait=1.5)]
    return [await c.inventory(i) for i in ids]


@get_app.command("inventory")
def get_inventory(
    host: Annotated[
        str | None, typer.Argument(metavar="HOST", help="Host id; every host when omitted.")
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 5.0,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
    watch: Watch = False,
) -> None:
    """Show what a host (or every host) runs.

    Example: lattice get inventory
    Example: lattice get inventory NBXYZ… -o yaml
    """
    fmt = fmt_of(output, as_json)

    async def fetch(c: LatticeClient) -> list[HostInventory]:
        invs = await inventories(c, host)
        if not invs:
            raise fail(f"no host answered on lattice {c.lattice!r}")
        return invs

    if watch:
        show_or_watch(target(nats_url, lattice), fetch, fmt, inventory_tables, watch=True)
        return
    invs = run_client(target(nats_url, lattice), timeout, fetch)
    # One host asked for: its inventory; every host: a list (stable since the first CLI).
    emit(invs if host is None else invs[0], fmt, lambda v: inventory_tables(invs))


@stop_app.command("host")
def stop_host(
    host: HostArg,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 5.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(60.0)] = 60.0,
    output: OutputOpt = Format.table,
) -> None:
    """Stop a host gracefully (its components finish in-flight calls first).

    Example: lattice stop host NBXYZ…
    """

    wait = None if no_wait else wait_timeout
    with waiting(f"waiting for host_stopped from {host}"):
        msg = run_client(target(nats_url, lattice), timeout, lambda c: c.stop_host(host, wait=wait))
    emit_done(output, msg, {"host_id": host})


@label_app.command("put")
def label_put(
    host: HostArg,
    pair: Annotated[str, typer.Argument(metavar="KEY=VALUE")],
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 5.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(10.0)] = 10.0,
    output: OutputOpt = Format.table,
) -> None:
    """Set a label on a host (hostcore.* labels are reserved).

    Example: lattice label put NBXYZ… zone=east
    """
    ((key, value),) = parse_pairs([pair], "label").items()
    wait = None if no_wait else wait_timeout
    with waiting(f"waiting for labels_changed from {host}"):
        run_client(
            target(nats_url, lattice), timeout, lambda c: c.put_label(host, key, value, wait=wait)
        )
    emit_done(output, f"label {key}={value} set on {host}", {"host_id": host, key: value})


@label_app.command("del")
def label_del(
    host: HostArg,
    key: Annotated[str, typer.Argument(metavar="KEY")],
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 5.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(10.0)] = 10.0,
    output: OutputOpt = Format.table,
) -> None:
    """Remove a label from a host.

    Example: lattice label del NBXYZ… zone
    """
    wait = None if no_wait else wait_timeout
    with waiting(f"waiting for labels_changed from {host}"):
        run_client(target(nats_url, lattice), timeout, lambda c: c.del_label(host, key, wait=wait))
    emit_done(output, f"label {key} removed from {host}", {"host_id": host, "key": key})
