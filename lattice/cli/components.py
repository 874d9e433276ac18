"""Component commands: `scale component`, `update component`, `call`, `get components`.

Scale and update wait for the host's `component_scaled` (or `component_scale_failed`)
event; `call` prints the function's result as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lattice import codec
from lattice.cli.common import (
    AsJson,
    Format,
    LatticeName,
    NatsUrl,
    NoWait,
    OutputOpt,
    Timeout,
    Watch,
    dump,
    emit_done,
    err,
    fmt_of,
    parse_pairs,
    run_client,
    short,
    show_or_watch,
    target,
    usage,
    wait_option,
    waiting,
)
from lattice.cli.complete import live
from lattice.cli.groups import app, get_app, scale_app, update_app
from lattice.cli.hosts import inventories
from lattice.client import LatticeClient, LatticeError, new_traceparent

IdArg = Annotated[
    str,
    typer.Argument(
        metavar="ID", help="Component id (unique in the lattice).", autocompletion=live("component")
    ),
]


def local_ref(ref: str) -> str:
    """A path that exists becomes a file:// URL; anything else is passed on as given."""
    if ref and "://" not in ref and Path(ref).exists():
        return Path(ref).resolve().as_uri()
    return ref


async def pick_host(c: LatticeClient, host: str | None, ref: str, component_id: str) -> str:
    if host:
        return host
    hosts = await c.hosts(wait=1.0)
    if len(hosts) == 1:
        return hosts[0].id
    if not hosts:
        raise LatticeError(f"no host answered on lattice {c.lattice!r}")
    bids = await c.auction_component(ref, component_id)
    if not bids:
        raise LatticeError(f"no host offered to run {component_id}; pass --host")
    return bids[0]


async def hosts_running(c: LatticeClient, component_id: str) -> list[str]:
    return [
        inv.host_id
        for inv in await inventories(c)
        if any(x.id == component_id for x in inv.components)
    ]


@scale_app.command("component")
def scale_component(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF", help="Component reference: file:///path.wasm, a path, or https://…"
        ),
    ],
    component_id: IdArg,
    count: Annotated[
        int, typer.Option("--count", "-c", metavar="N", help="Most calls running at once; 0 stops.")
    ] = 1,
    host: Annotated[
        str | None, typer.Option("--host", metavar="HOST", help="Host id; auctioned when omitted.")
    ] = None,
    annotation: Annotated[
        list[str] | None,
        typer.Option("--annotation", "-a", metavar="KEY=VALUE", help="Annotation (repeatable)."),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option("--config", metavar="NAME", help="Named config for the component."),
    ] = None,
    timeout_ms: Annotated[
        int | None, typer.Option("--timeout-ms", metavar="MS", help="Execution deadline per call.")
    ] = None,
    memory_mb: Annotated[
        int | None,
        typer.Option("--memory-mb", metavar="MB", help="Linear-memory cap per instance."),
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(120.0, "--timeout")] = 120.0,
    output: OutputOpt = Format.table,
) -> None:
    """Run COUNT instances of a component on a host (0 stops it).

    Example: lattice scale component ./echo.wasm echo --count 4
    Example: lattice scale component file:///srv/echo.wasm echo --count 0
    """
    ref = local_ref(ref)
    if count < 0:
        raise usage("--count must be 0 or more")
    limits = {
        k: v for k, v in (("timeout_ms", timeout_ms), ("memory_mb", memory_mb)) if v is not None
    }
    annotations = parse_pairs(annotation or [], "annotation")

    async def go(c: LatticeClient) -> dict[str, Any]:
        target_host = await pick_host(c, host, ref, component_id)
        with waiting(f"waiting for component_scaled: {component_id} on {short(target_host)}"):
            data = await c.scale_component(
                target_host,
                ref,
                component_id,
                count,
                annotations=annotations,
                config=config,
                limits=limits,
                wait=None if no_wait else wait_timeout,
            )
        return {"host_id": target_host, **data}

    data = run_client(target(nats_url, lattice), 10.0, go)
    if no_wait:
        emit_done(output, f"scaling {component_id} to {count} on {data['host_id']}", data)
    else:
        emit_done(
            output, f"{component_id} scaled to {data['max_instances']} on {data['host_id']}", data
        )


@update_app.command("component")
def update_component(
    component_id: IdArg,
    ref: Annotated[str, typer.Argument(metavar="REF", help="New component reference.")],
    host: Annotated[
        str | None,
        typer.Option("--host", metavar="HOST", help="Host id; every host running ID when omitted."),
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(120.0, "--timeout")] = 120.0,
    output: OutputOpt = Format.table,
) -> None:
    """Swap a running component's image with no failed call.

    Example: lattice update component echo ./echo-v2.wasm
    """
    ref = local_ref(ref)

    async def go(c: LatticeClient) -> list[str]:
        targets = [host] if host else await hosts_running(c, component_id)
        if not targets:
            raise LatticeError(f"no host runs component {component_id!r}")
        for t in targets:
            with waiting(f"waiting for component_scaled: {component_id} on {short(t)}"):
                await c.update_component(
                    t, component_id, ref, wait=None if no_wait else wait_timeout
                )
        return targets

    targets = run_client(target(nats_url, lattice), 10.0, go)
    verb = "updating" if no_wait else "now runs"
    emit_done(
        output,
        f"{component_id} {verb} {ref} on {len(targets)} host(s)",
        {"component_id": component_id, "image_ref": ref, "hosts": targets},
    )


@app.command()
def call(
    component_id: IdArg,
    function: Annotated[
        str,
        typer.Argument(
            metavar="FUNCTION", help="ns:pkg/iface.fn, or a unique short form like echo.echo"
        ),
    ],
    args: Annotated[
        list[str] | None, typer.Argument(metavar="ARG…", help="Arguments, each as JSON.")
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.json,
    show_trace: Annotated[
        bool,
        typer.Option(
            "--show-trace",
            help="Print the call's trace id on stderr, to find its spans where hosts "
            "export them (lattice up --otlp-endpoint).",
        ),
    ] = False,
) -> None:
    """Call an exported function and print its result (JSON unless -o yaml).

    Example: lattice call echo echo '"hello, lattice"'
    Example: lattice call echo lattice:examples/types-demo.divide 7 0
    Bytes are written {"$bytes": "<base64>"}.
    """
    values = []
    for i, a in enumerate(args or []):
        try:
            values.append(codec.from_json(json.loads(a)))
        except json.JSONDecodeError as exc:
            raise usage(f"argument {i + 1} is not valid JSON ({exc.msg}): {a!r}") from None
    traceparent = new_traceparent()
    if show_trace:  # before the call: a failed call is the one worth looking up
        err.print(f"trace id {traceparent.split('-')[1]}")
    result = run_client(
        target(nats_url, lattice),
        timeout,
        lambda c: c.call_traced(
            component_id, function, values, timeout=timeout, traceparent=traceparent
        ),
    )
    value = codec.to_json_compatible(result[0])
    print(dump(value, Format.yaml if output is Format.yaml else Format.json), flush=True)


def component_rows(invs: list[Any]) -> list[dict[str, Any]]:
    return [{"host_id": inv.host_id, **c.model_dump()} for inv in invs for c in inv.components]


def components_table(rows: list[dict[str, Any]]) -> Table:
    t = Table("component", "host", "image", "max", "warm", "rev", box=None)
    for r in rows:
        t.add_row(
            r["id"],
            short(r["host_id"]),
            r["image_ref"],
            str(r["max_instances"]),
            str(r["instances_warm"]),
            str(r["revision"]),
        )
    return t


@get_app.command("components")
def get_components(
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 5.0,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
    watch: Watch = False,
) -> None:
    """Every running component, one row per host that runs it.

    Example: lattice get components -o json
    """

    async def fetch(c: LatticeClient) -> list[dict[str, Any]]:
        return component_rows(await inventories(c))

    show_or_watch(
        target(nats_url, lattice),
        fetch,
        fmt_of(output, as_json),
        components_table,
        watch=watch,
        timeout=timeout,
    )
