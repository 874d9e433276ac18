"""Provider commands: `start provider`, `stop provider`, `get providers`.

Start waits for `provider_started` (or `provider_start_failed`), stop for
`provider_stopped`.
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
    short,
    show_or_watch,
    target,
    wait_option,
    waiting,
)
from lattice.cli.complete import live
from lattice.cli.groups import get_app, start_app, stop_app
from lattice.cli.hosts import inventories
from lattice.client import LatticeClient, LatticeError

ProviderId = Annotated[
    str,
    typer.Argument(
        metavar="ID", help="Provider id; links target it.", autocompletion=live("provider")
    ),
]


@start_app.command("provider")
def start_provider(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="REF",
            help="builtin://keyvalue-redis|keyvalue-vault|keyvalue-nats|messaging-nats|"
            "http-server|http-client|blobstore-fs|blobstore-nats|blobstore-s3|sqldb-postgres, "
            "or file:///path/to/executable",
        ),
    ],
    provider_id: ProviderId,
    host: Annotated[
        str | None, typer.Option("--host", metavar="HOST", help="Host id; auctioned when omitted.")
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config", metavar="NAME", help="Named config for the provider (repeatable)."
        ),
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(60.0, "--timeout")] = 60.0,
    output: OutputOpt = Format.table,
) -> None:
    """Start a capability provider process on a host.

    Example: lattice start provider builtin://keyvalue-redis kv-redis
    """

    async def go(c: LatticeClient) -> dict[str, Any]:
        where = host
        if where is None:
            bids = await c.auction_provider(ref, provider_id)
            if not bids:
                raise LatticeError(f"no host offered to run provider {provider_id}; pass --host")
            where = bids[0]
        with waiting(f"waiting for provider_started: {provider_id} on {short(where)}"):
            data = await c.start_provider(
                where, ref, provider_id, config=config or [], wait=None if no_wait else wait_timeout
            )
        return {"host_id": where, **data}

    data = run_client(target(nats_url, lattice), 10.0, go)
    verb = "starting" if no_wait else "started"
    emit_done(output, f"provider {provider_id} {verb} on {data['host_id']}", data)


async def hosts_with_provider(c: LatticeClient, provider_id: str) -> list[str]:
    return [
        inv.host_id
        for inv in await inventories(c)
        if any(p["id"] == provider_id for p in inv.providers)
    ]


@stop_app.command("provider")
def stop_provider(
    provider_id: ProviderId,
    host: Annotated[
        str | None,
        typer.Option("--host", metavar="HOST", help="Host id; every host running it when omitted."),
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(30.0)] = 30.0,
    output: OutputOpt = Format.table,
) -> None:
    """Stop a provider (gracefully: it is asked to shut down first).

    Example: lattice stop provider kv-redis
    """

    async def go(c: LatticeClient) -> list[str]:
        targets = [host] if host else await hosts_with_provider(c, provider_id)
        if not targets:
            raise LatticeError(f"no host runs provider {provider_id!r}")
        for t in targets:
            with waiting(f"waiting for provider_stopped: {provider_id} on {short(t)}"):
                await c.stop_provider(t, provider_id, wait=None if no_wait else wait_timeout)
        return targets

    targets = run_client(target(nats_url, lattice), timeout, go)
    verb = "stopping" if no_wait else "stopped"
    emit_done(
        output,
        f"provider {provider_id} {verb} on {len(targets)} host(s)",
        {"provider_id": provider_id, "hosts": targets},
    )


def providers_table(rows: list[dict[str, Any]]) -> Table:
    t = Table("provider", "host", "image", "healthy", "restarts", box=None)
    for r in rows:
        t.add_row(
            r["id"],
            short(r["host_id"]),
            r["image_ref"],
            str(r.get("healthy")),
            str(r.get("restarts", 0)),
        )
    return t


@get_app.command("providers")
def get_providers(
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 5.0,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
    watch: Watch = False,
) -> None:
    """Every running provider, one row per host that runs it.

    Example: lattice get providers
    """

    async def fetch(c: LatticeClient) -> list[dict[str, Any]]:
        return [{"host_id": i.host_id, **p} for i in await inventories(c) for p in i.providers]

    show_or_watch(
        target(nats_url, lattice),
        fetch,
        fmt_of(output, as_json),
        providers_table,
        watch=watch,
        timeout=timeout,
    )
