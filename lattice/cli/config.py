"""Named-config commands: `config put|get|del` and `get config [NAME]`.

Secret values are never shown back (`***`). Put and del wait for `config_set` /
`config_deleted`.
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
    emit,
    emit_done,
    fmt_of,
    parse_pairs,
    run_client,
    target,
    wait_option,
    waiting,
)
from lattice.cli.groups import config_app, get_app
from lattice.client import LatticeClient

ConfigName = Annotated[str, typer.Argument(metavar="NAME", help="Config name.")]


@config_app.command("put")
def config_put(
    name: ConfigName,
    pairs: Annotated[list[str] | None, typer.Argument(metavar="KEY=VALUE…")] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret", metavar="KEY=VALUE", help="A secret entry (never shown back; repeatable)."
        ),
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(10.0)] = 10.0,
    output: OutputOpt = Format.table,
) -> None:
    """Create or replace a named config.

    Example: lattice config put redis url=redis://127.0.0.1:6380/0
    Example: lattice config put vault addr=http://127.0.0.1:8200 --secret token=dev-root
    """
    values = parse_pairs(pairs or [], "config entry")
    secrets = parse_pairs(secret or [], "secret")
    with waiting(f"waiting for config_set: {name}"):
        msg = run_client(
            target(nats_url, lattice),
            timeout,
            lambda c: c.put_config(
                name, {**values, **secrets}, list(secrets), wait=None if no_wait else wait_timeout
            ),
        )
    emit_done(output, msg, {"config_name": name})


def config_table(configs: dict[str, dict[str, str]]) -> Table:
    t = Table("config", "key", "value", box=None)
    for name, values in configs.items():
        for i, (k, v) in enumerate(sorted(values.items())):
            t.add_row(name if i == 0 else "", k, v)
        if not values:
            t.add_row(name, "", "")
    return t


@config_app.command("get")
def config_get(
    name: ConfigName,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.json,
) -> None:
    """Show a named config (secret values as ***); JSON unless -o says otherwise.

    Example: lattice config get vault
    """
    values = run_client(target(nats_url, lattice), timeout, lambda c: c.get_config(name))
    emit(values, output, lambda v: config_table({name: v}))


@get_app.command("config")
def get_config(
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Config name; every config when omitted.")
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
) -> None:
    """Show one named config, or every one (secret values as ***).

    Example: lattice get config
    Example: lattice get config redis -o json
    """

    async def fetch(c: LatticeClient) -> Any:
        if name is not None:
            return {name: await c.get_config(name)}
        return await c.list_configs()

    configs = run_client(target(nats_url, lattice), timeout, fetch)
    emit(
        configs if name is None else configs[name],
        fmt_of(output, as_json),
        lambda _v: config_table(configs),
    )


@config_app.command("del")
def config_del(
    name: ConfigName,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(10.0)] = 10.0,
    output: OutputOpt = Format.table,
) -> None:
    """Delete a named config (refused while a link uses it).

    Example: lattice config del redis
    """
    with waiting(f"waiting for config_deleted: {name}"):
        msg = run_client(
            target(nats_url, lattice),
            timeout,
            lambda c: c.del_config(name, wait=None if no_wait else wait_timeout),
        )
    emit_done(output, msg, {"config_name": name})
