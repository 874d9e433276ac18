"""`lattice events`: recent lattice events replayed, then new ones as they come.

Hosts keep a bounded JetStream stream of `wasmbus.evt.{lattice}.>`
(host/events_stream.py), so `--since 10m` replays what happened before the command
started: the first place to look when something went wrong. Heartbeats (a full
inventory every 30 s per host) are left out unless asked for with `--type
host_heartbeat` or `--heartbeats`.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from lattice.cli.common import (
    Format,
    LatticeName,
    NatsUrl,
    OutputOpt,
    dump,
    out,
    run_client,
    short,
    target,
    usage,
)
from lattice.cli.groups import app
from lattice.client import LatticeClient
from lattice.protocol.events import short_type

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# The fields worth a glance, in the order they are shown.
SUMMARY_FIELDS = (
    "component_id",
    "provider_id",
    "image_ref",
    "max_instances",
    "source_id",
    "target",
    "config_name",
    "friendly_name",
    "reason",
    "error",
)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `30s`, `1d`, or an ISO time; the moment it names."""
    now = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m:
        return now - timedelta(seconds=float(m[1]) * _UNITS[m[2]])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise usage(
            f"--since {text!r} is neither a duration (30s, 10m, 2h, 1d) nor an ISO time"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def host_of(ev: dict[str, Any]) -> str:
    data = ev.get("data") or {}
    return str(data.get("host_id") or ev.get("source") or "")


def summary(data: dict[str, Any]) -> str:
    parts = []
    for k in SUMMARY_FIELDS:
        v = data.get(k)
        if v not in (None, "", {}, []):
            parts.append(f"{k}={v}")
    return " ".join(parts)


def event_line(ev: dict[str, Any]) -> str:
    when = str(ev.get("time", ""))[11:19]
    return f"{when}  {short_type(str(ev.get('type', ''))):<24} {short(host_of(ev)):<8}  " + summary(
        ev.get("data") or {}
    )


def keep(ev: dict[str, Any], types: list[str], host: str | None, heartbeats: bool) -> bool:
    kind = short_type(str(ev.get("type", "")))
    if types and kind not in types:
        return False
    if not types and not heartbeats and kind == "host_heartbeat":
        return False
    return host is None or host_of(ev).startswith(host)


@app.command()
def events(
    event_type: Annotated[
        list[str] | None,
        typer.Option(
            "--type", "-t", metavar="TYPE", help="Only this event type, e.g. component_scaled."
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", metavar="HOST", help="Only events from this host id.")
    ] = None,
    since: Annotated[
        str,
        typer.Option("--since", metavar="DURATION", help="Replay events this recent (or 0)."),
    ] = "10m",
    follow: Annotated[
        bool,
        typer.Option("--follow/--no-follow", "-f", help="Keep printing new events until Ctrl-C."),
    ] = True,
    heartbeats: Annotated[
        bool, typer.Option("--heartbeats", help="Show host_heartbeat events too.")
    ] = False,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    output: OutputOpt = Format.table,
) -> None:
    """Print lattice events: the recent ones, then new ones as they come.

    Example: lattice events
    Example: lattice events --type component_scale_failed --since 1h --no-follow
    Example: lattice events --host NBXYZ -o json
    With -o json each event is one CloudEvent per line.
    """
    types = [t.removeprefix("com.wasmcloud.lattice.") for t in event_type or []]
    start = None if since.strip() in ("0", "") else parse_since(since)
    only = types[0] if len(types) == 1 else None

    async def go(c: LatticeClient) -> int:
        n = 0
        async for ev in c.events(event_type=only, since=start, follow=follow):
            if not keep(ev, types, host, heartbeats):
                continue
            n += 1
            if output is Format.table:
                out.print(event_line(ev))
            elif output is Format.json:
                print(dump(ev, Format.json, compact=True), flush=True)
            else:
                print("---\n" + dump(ev, Format.yaml), flush=True)
        return n

    with contextlib.suppress(KeyboardInterrupt):
        run_client(target(nats_url, lattice), 10.0, go)
