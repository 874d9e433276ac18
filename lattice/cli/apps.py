"""Application commands (`lattice app …`, `lattice get apps`): the controller's API.

`app deploy` stores the manifest, asks for the deploy, then follows the app's status
until it is `deployed` (exit 0) or `failed` (exit 1, with the reason), drawing each
component's progress; `app undeploy` waits until no host runs the app's components.
`app status --watch` redraws in place. The status table fits 80 columns.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lattice.cli.common import (
    AsJson,
    CliError,
    Format,
    LatticeName,
    NatsUrl,
    NoWait,
    OutputOpt,
    Timeout,
    Watch,
    emit,
    emit_done,
    err,
    fail,
    fmt_of,
    out,
    run_client,
    short,
    show_or_watch,
    target,
    wait_option,
    waiting,
)
from lattice.cli.complete import live
from lattice.cli.groups import app_app, get_app
from lattice.cli.hosts import inventories
from lattice.client import LatticeClient, WaitTimeout

AppName = Annotated[
    str, typer.Argument(metavar="NAME", help="Application name.", autocompletion=live("app"))
]
Version = Annotated[str | None, typer.Option("--version", metavar="VERSION")]


def show_problems(title: str, problems: list[str], style: str) -> None:
    if problems:
        err.print(f"[{style}]{title}:[/{style}]", markup=True)
        for p in problems:
            err.print(f"  {p}")


@app_app.command("validate")
def app_validate(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Manifest file (YAML or JSON).")],
    output: OutputOpt = Format.table,
) -> None:
    """Check a manifest: every error with its path and reason, plus warnings.

    Needs no lattice.

    Example: lattice app validate manifests/kvcounter.yaml
    """
    from lattice.controller.validate import validate

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    report = validate(text)
    errors, warnings = [str(e) for e in report.errors], [str(w) for w in report.warnings]
    if output is not Format.table:
        emit({"valid": not errors, "errors": errors, "warnings": warnings}, output, str)
        if errors:
            raise typer.Exit(1)
        return
    show_problems("warnings", warnings, "yellow")
    if errors:
        show_problems("errors", errors, "red")
        raise typer.Exit(1)
    m = report.manifest
    assert m is not None
    out.print(f"{file}: {m.name} {m.version or '(no version)'} is valid")


def progress(status: dict[str, Any]) -> str:
    """One line: `hello v1: reconciling — echo 1/2, kv 0/1`."""
    parts = [f"{c['name']} {c['running']}/{c['desired']}" for c in status.get("components", [])]
    return (
        f"{status['name']} {status.get('version') or ''}: {status['state']}"
        + (f" — {', '.join(parts)}" if parts else "")
        + (f" ({status['reason']})" if status.get("reason") else "")
    )


async def follow_deploy(
    c: LatticeClient, name: str, version: str, wait: float, show: Any
) -> dict[str, Any]:
    """Poll the app's status until `version` is deployed or failed; `show` gets each new
    progress line. WaitTimeout names the state it was left in."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    last = ""
    while True:
        status = (await c.model("status", name))["status"]
        line = progress(status)
        if line != last:
            show(line)
            last = line
        if status.get("version") == version and status["state"] in ("deployed", "failed"):
            return dict(status)
        if loop.time() > deadline:
            raise WaitTimeout(f"{name} {version} did not reach deployed within {wait:g}s ({line})")
        await asyncio.sleep(0.3)


@app_app.command("deploy")
def app_deploy(
    target_arg: Annotated[
        str,
        typer.Argument(
            metavar="FILE|NAME", help="A manifest file, or the name of a stored application."
        ),
    ],
    version: Annotated[
        str | None,
        typer.Option(
            "--version", metavar="VERSION", help="Version to deploy (an older one rolls back)."
        ),
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(300.0)] = 300.0,
    output: OutputOpt = Format.table,
) -> None:
    """Deploy a manifest FILE (stored first) or a stored NAME, then follow it.

    Each component's progress shows until the app is deployed or failed.

    Example: lattice app deploy manifests/hello.yaml
    Example: lattice app deploy hello --version v1
    """
    path = Path(target_arg)
    manifest = path.read_bytes() if path.is_file() else None
    tty = err.is_terminal

    async def go(c: LatticeClient) -> dict[str, Any]:
        name, ver, warnings = target_arg, version, []
        if manifest is not None:
            put = await c.model("put", body=manifest)
            name, ver, warnings = put["name"], version or put["version"], put.get("warnings", [])
        reply = await c.model("deploy", name, {"version": ver} if ver else {})
        ver = reply["version"]
        show_problems("warnings", warnings, "yellow")
        if output is Format.table:
            out.print(f"deploying {name} {ver} (lattice app status {name})")
        if no_wait:
            return {"name": name, "version": ver, "state": "reconciling"}
        with waiting(f"waiting for {name} {ver} to be deployed") as update:
            show = update if tty else (lambda line: err.print(line))
            return await follow_deploy(c, name, ver, wait_timeout, show)

    status = run_client(target(nats_url, lattice), timeout, go)
    if status["state"] == "failed":
        why = status.get("reason") or progress(status)
        raise CliError(
            f"{status['name']} {status['version']} failed: {why}",
            f"see `lattice app status {status['name']}` and `lattice events`",
        )
    if no_wait:
        if output is not Format.table:
            emit(status, output, str)
        return
    if output is Format.table:
        out.print(f"{status['name']} {status['version']} deployed")
    else:
        emit(status, output, str)


@app_app.command("undeploy")
def app_undeploy(
    name: AppName,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    no_wait: NoWait = False,
    wait_timeout: Annotated[float, wait_option(120.0)] = 120.0,
    output: OutputOpt = Format.table,
) -> None:
    """Stop everything the application owns (what it shares with others stays).

    Waits until no host runs its components.

    Example: lattice app undeploy hello
    """
    from lattice.controller.naming import APPSPEC_KEY

    async def go(c: LatticeClient) -> None:
        await c.model("undeploy", name)
        if no_wait:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_timeout
        with waiting(f"waiting for {name}'s components to stop"):
            while True:
                left = [
                    x.id
                    for inv in await inventories(c)
                    for x in inv.components
                    if x.annotations.get(APPSPEC_KEY) == name
                ]
                if not left:
                    return
                if loop.time() > deadline:
                    raise WaitTimeout(
                        f"{name}: components still running after {wait_timeout:g}s: "
                        + ", ".join(sorted(set(left)))
                    )
                await asyncio.sleep(0.3)

    run_client(target(nats_url, lattice), timeout, go)
    emit_done(output, f"{'undeploying' if no_wait else 'undeployed'} {name}", {"name": name})


def apps_table(models: list[dict[str, Any]]) -> Table:
    t = Table("name", "latest", "deployed", "state", "description", box=None)
    for m in models:
        t.add_row(
            m["name"],
            str(m["latest_version"]),
            str(m["deployed_version"] or "-"),
            m["state"],
            m.get("description") or "",
        )
    return t


def show_apps(
    nats_url: str | None, lattice: str | None, timeout: float, fmt: Format, watch: bool
) -> None:
    async def fetch(c: LatticeClient) -> list[dict[str, Any]]:
        return list((await c.model("list"))["models"])

    show_or_watch(target(nats_url, lattice), fetch, fmt, apps_table, watch=watch, timeout=timeout)


@app_app.command("list")
def app_list(
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
    watch: Watch = False,
) -> None:
    """Every stored application with its deployed version and state.

    Example: lattice app list -o json
    """
    show_apps(nats_url, lattice, timeout, fmt_of(output, as_json), watch)


@get_app.command("apps")
def get_apps(
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
    watch: Watch = False,
) -> None:
    """Every stored application (the same as `lattice app list`).

    Example: lattice get apps
    """
    show_apps(nats_url, lattice, timeout, fmt_of(output, as_json), watch)


@app_app.command("get")
def app_get(
    name: AppName,
    version: Version = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.json,
) -> None:
    """Print a stored manifest (the latest version unless --version).

    Example: lattice app get hello -o yaml
    """
    body = {"version": version} if version else {}
    reply = run_client(target(nats_url, lattice), timeout, lambda c: c.model("get", name, body))
    emit(reply["manifest"], Format.json if output is Format.table else output, str)


def where_text(hosts: list[str]) -> str:
    shown = ",".join(short(h) for h in hosts[:2])
    return shown + (f"+{len(hosts) - 2}" if len(hosts) > 2 else "")


def status_table(status: dict[str, Any]) -> Any:
    from rich.console import Group

    t = Table("component", "kind", "run", "where", "state", "reason", box=None, padding=(0, 1))
    t.columns[0].max_width = 18
    t.columns[0].overflow = "ellipsis"
    for col in t.columns[:5]:
        col.no_wrap = True  # everything but the reason stays on one line
    t.columns[5].overflow = "fold"
    for c in status.get("components", []):
        t.add_row(
            c["name"],
            "cap" if c["kind"] == "capability" else "comp",
            f"{c['running']}/{c['desired']}",
            where_text(c["where"]),
            c["state"],
            c.get("reason", ""),
        )
    reason = f" — {status['reason']}" if status.get("reason") else ""
    head = f"{status['name']} {status.get('version') or ''}: {status['state']}{reason}"
    return Group(head, t) if status.get("components") else head


@app_app.command("status")
def app_status(
    name: AppName,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
    watch: Watch = False,
) -> None:
    """Desired and running replicas per component, where, state and the reason.

    Example: lattice app status hello
    Example: lattice app status hello --watch
    """

    async def fetch(c: LatticeClient) -> dict[str, Any]:
        return dict((await c.model("status", name))["status"])

    show_or_watch(
        target(nats_url, lattice),
        fetch,
        fmt_of(output, as_json),
        status_table,
        watch=watch,
        interval=1.0,
        timeout=timeout,
    )


@app_app.command("versions")
def app_versions(
    name: AppName,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.table,
) -> None:
    """Every stored version; the deployed one is marked.

    Example: lattice app versions hello
    """
    versions = run_client(target(nats_url, lattice), timeout, lambda c: c.model("versions", name))
    emit(
        versions["versions"],
        output,
        lambda vs: "\n".join(
            f"{v['version']}{'  (deployed)' if v['deployed'] else ''}" for v in vs
        ),
    )


@app_app.command("history")
def app_history(
    name: AppName,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.table,
) -> None:
    """What was put, deployed, rolled back and undeployed, oldest first, and every
    reconciliation that stopped or removed something, with each stop's cause.

    Example: lattice app history hello
    """
    hist = run_client(target(nats_url, lattice), timeout, lambda c: c.model("history", name))

    def lines(items: list[dict[str, Any]]) -> str:
        return "\n".join(
            f"{datetime.datetime.fromtimestamp(h['at']).isoformat(timespec='seconds')}  "
            f"{h['action']:<15} {h.get('version') or ''}"
            + "".join(
                f"\n    {escape(s.get('command', ''))}: {escape(s.get('cause') or 'no cause')}"
                for s in h.get("stopped") or []
            )
            for h in items
        )

    emit(hist["history"], output, lines)


@app_app.command("delete")
def app_delete(
    name: AppName,
    version: Annotated[
        str | None, typer.Option("--version", metavar="VERSION", help="Delete only this version.")
    ] = None,
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    timeout: Timeout = 10.0,
    output: OutputOpt = Format.table,
) -> None:
    """Delete an undeployed application, or one of its versions.

    Example: lattice app delete hello
    """
    body = {"version": version} if version else {}
    reply = run_client(target(nats_url, lattice), timeout, lambda c: c.model("del", name, body))
    emit_done(output, reply["message"], {"name": name})
