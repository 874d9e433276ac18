"""`lattice spy COMPONENT`: a component's calls, live, in both directions.

Each line is one call the component served (`in`, with its caller) or made through a
link (`out`, with the link name and the target that served it): function, duration,
outcome, request and reply sizes, and short previews of both. Replies and calls that
never cross NATS are shown too, since the host taps them itself (host/spy.py). The
taps run only while this command runs.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any

import typer

from lattice.cli.common import (
    Format,
    LatticeName,
    NatsUrl,
    OutputOpt,
    dump,
    err,
    out,
    run_client,
    target,
)
from lattice.cli.complete import live
from lattice.cli.groups import app
from lattice.client import LatticeClient


def spy_line(r: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(r["at"]).strftime("%H:%M:%S.%f")[:-3]
    if r["direction"] == "in":
        who = f"{r['caller'] or '?'} → {r['component_id']}"
    else:
        who = f"{r['component_id']} → {r['target'] or '?'} ({r['link'] or 'default'})"
    result = r["reply"] if r["outcome"] == "ok" else r["error"]
    return (
        f"{when} {r['direction']:<3} {who}  {r['function']}  {r['duration_ms']:.1f}ms "
        f"{r['outcome']}  {r['request_bytes']}B→{r['reply_bytes']}B  {r['request']} → {result}"
    )


@app.command()
def spy(
    component_id: Annotated[
        str,
        typer.Argument(metavar="COMPONENT", help="Component id.", autocompletion=live("component")),
    ],
    count: Annotated[
        int | None,
        typer.Option("--count", "-n", metavar="N", help="Stop after N calls."),
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    output: OutputOpt = Format.table,
) -> None:
    """Show a component's calls live, in and out, with their replies.

    Each line: caller, function, link, duration, outcome, sizes, request and reply.

    Example: lattice spy echo
    Example: lattice spy counter -o json --count 10
    With -o json each call is one JSON object per line.
    """

    def ready() -> None:
        err.print(f"spying on {component_id} (Ctrl-C to stop)")

    async def go(c: LatticeClient) -> None:
        seen = 0
        records = c.spy(component_id, ready)
        async for r in records:
            seen += 1
            if output is Format.table:
                out.print(spy_line(r))
            else:
                print(dump(r, output, compact=output is Format.json), flush=True)
            if count is not None and seen >= count:
                break
        await records.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        run_client(target(nats_url, lattice), 10.0, go)
