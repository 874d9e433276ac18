"""The `lattice` command line.

Every command that talks to a lattice takes `--nats-url` and `--lattice` (also from
LATTICE_NATS_URL and LATTICE_LATTICE). Errors are printed as one sentence on stderr
with exit code 1; a traceback is never shown to the user.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from lattice import codec
from lattice.client import LatticeClient, LatticeError
from lattice.protocol.invocation import InvocationError
from lattice.protocol.subjects import SubjectError

T = TypeVar("T")

app = typer.Typer(
    name="lattice",
    help="Run WebAssembly components on a lattice of hosts joined over NATS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
get_app = typer.Typer(help="Show hosts and what they run.", no_args_is_help=True)
scale_app = typer.Typer(help="Scale components on a host.", no_args_is_help=True)
update_app = typer.Typer(help="Swap the image of a running component.", no_args_is_help=True)
stop_app = typer.Typer(help="Stop hosts and providers.", no_args_is_help=True)
start_app = typer.Typer(help="Start capability providers.", no_args_is_help=True)
label_app = typer.Typer(help="Set or remove host labels.", no_args_is_help=True)
link_app = typer.Typer(
    help="Link component imports to targets (hot-swappable).", no_args_is_help=True
)
config_app = typer.Typer(
    help="Named config for links, components and providers.", no_args_is_help=True
)
app.add_typer(get_app, name="get")
app.add_typer(scale_app, name="scale")
app.add_typer(update_app, name="update")
app.add_typer(stop_app, name="stop")
app.add_typer(start_app, name="start")
app.add_typer(label_app, name="label")
app.add_typer(link_app, name="link")
app.add_typer(config_app, name="config")

out = Console()
err = Console(stderr=True)

NatsUrl = Annotated[
    str, typer.Option("--nats-url", envvar="LATTICE_NATS_URL", help="NATS server to talk to.")
]
LatticeName = Annotated[
    str, typer.Option("--lattice", envvar="LATTICE_LATTICE", help="Lattice name.")
]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for answers.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

DEFAULT_URL = "nats://127.0.0.1:4222"


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def run_client(
    url: str, lattice: str, timeout: float, fn: Callable[[LatticeClient], Awaitable[T]]
) -> T:
    async def go() -> T:
        client = await LatticeClient.connect(url, lattice, timeout)
        async with client:
            return await fn(client)

    try:
        return asyncio.run(go())
    except (LatticeError, SubjectError, ValueError) as exc:
        raise fail(str(exc)) from None
    except InvocationError as exc:
        raise fail(f"call failed ({exc.kind}): {exc.message}") from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"{what} {item!r} must look like key=value")
        pairs[key] = value
    return pairs


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value, ensure_ascii=False, default=str))


# -- up ------------------------------------------------------------------------


@app.command()
def up(
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label", "-l", envvar="LATTICE_LABELS", help="Host label key=value (repeatable)."
        ),
    ] = None,
    host_seed: Annotated[
        str | None,
        typer.Option(
            "--host-seed",
            envvar="LATTICE_HOST_SEED",
            help="nkey server seed (SN…) for a stable host id; generated when absent.",
            show_default=False,
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float,
        typer.Option(
            "--heartbeat-interval",
            envvar="LATTICE_HEARTBEAT_INTERVAL",
            help="Seconds between heartbeats.",
        ),
    ] = 30.0,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="LATTICE_DATA_DIR",
            help="Compile cache and embedded NATS store [default: ~/.local/share/lattice].",
        ),
    ] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", envvar="LATTICE_LOG_FORMAT", help="json or console.")
    ] = "console",
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level", envvar="LATTICE_LOG_LEVEL", help="debug, info, warning or error."
        ),
    ] = "info",
    timeout_ms: Annotated[
        int,
        typer.Option(
            "--timeout-ms", envvar="LATTICE_TIMEOUT_MS", help="Default execution deadline per call."
        ),
    ] = 10_000,
    memory_mb: Annotated[
        int,
        typer.Option(
            "--memory-mb",
            envvar="LATTICE_MEMORY_MB",
            help="Default linear-memory cap per instance.",
        ),
    ] = 512,
    controller: Annotated[
        bool,
        typer.Option(
            "--controller/--no-controller",
            envvar="LATTICE_CONTROLLER",
            help="Also run a manifest controller in this process.",
        ),
    ] = False,
    embedded_nats: Annotated[
        bool,
        typer.Option(
            "--embedded-nats/--no-embedded-nats",
            envvar="LATTICE_EMBEDDED_NATS",
            help="Start a nats-server when none answers at a local URL.",
        ),
    ] = True,
) -> None:
    """Start a host and join the lattice (starting an embedded NATS when none answers)."""
    from host.config import HostConfig, Limits, default_data_dir, parse_labels
    from host.host import Host, HostStartError
    from lattice import logs

    if log_format not in ("json", "console"):
        raise fail(f"--log-format must be json or console, not {log_format!r}")
    try:
        logs.configure(log_format, log_level)  # type: ignore[arg-type]
        labels = parse_labels([x for item in (label or []) for x in item.split(",") if x])
        if timeout_ms <= 0 or memory_mb <= 0:
            raise ValueError("--timeout-ms and --memory-mb must be positive")
        config = HostConfig(
            nats_url=nats_url,
            lattice=lattice,
            labels=labels,
            host_seed=host_seed,
            heartbeat_interval=heartbeat_interval,
            data_dir=data_dir or default_data_dir(),
            limits=Limits(timeout_ms=timeout_ms, memory_mb=memory_mb),
            embedded_nats=embedded_nats,
        )
        host = Host(config)
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def run_up() -> None:
        if not controller:
            await host.run()
            return
        from lattice.controller.run.service import Controller

        task = asyncio.create_task(host.run())
        started = asyncio.create_task(host.started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            started.cancel()
            await task  # start failed: raise its error
            return
        ctl = Controller(host.nats_url, lattice)
        host.before_stop.append(ctl.stop)
        await ctl.start()
        await task

    try:
        asyncio.run(run_up())
    except HostStartError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


# -- get -----------------------------------------------------------------------


@get_app.command("hosts")
def get_hosts(
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to collect answers.")] = 1.5,
    as_json: AsJson = False,
) -> None:
    """List the hosts of the lattice, printing each as it answers."""

    async def go(c: LatticeClient) -> int:
        n = 0
        async for h in c.stream_hosts(wait=timeout):
            n += 1
            if as_json:
                out.print(json.dumps(h.model_dump()), highlight=False, soft_wrap=True)
            else:
                labels = ",".join(
                    f"{k}={v}" for k, v in sorted(h.labels.items()) if not k.startswith("hostcore.")
                )
                out.print(
                    f"{h.id}  {h.friendly_name:<20} up {h.uptime_human:<10} {labels}",
                    highlight=False,
                    soft_wrap=True,
                )
        return n

    n = run_client(nats_url, lattice, timeout + 1, go)
    if n == 0:
        raise fail(f"no host answered on lattice {lattice!r} within {timeout:g}s")


@get_app.command("inventory")
def get_inventory(
    host: Annotated[str | None, typer.Argument(help="Host id; every host when omitted.")] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 5.0,
    as_json: AsJson = False,
) -> None:
    """Show what a host (or every host) runs."""

    async def go(c: LatticeClient) -> list[Any]:
        ids = [host] if host else [h.id for h in await c.hosts(wait=1.5)]
        return [await c.inventory(i) for i in ids]

    invs = run_client(nats_url, lattice, timeout, go)
    if not invs:
        raise fail(f"no host answered on lattice {lattice!r}")
    if as_json:
        print_json([i.model_dump() for i in invs] if host is None else invs[0].model_dump())
        return
    for inv in invs:
        out.print(
            f"[bold]{inv.host_id}[/bold] ({inv.friendly_name}) up {inv.uptime_human}",
            highlight=False,
        )
        out.print(
            "labels: " + ", ".join(f"{k}={v}" for k, v in sorted(inv.labels.items())),
            highlight=False,
        )
        table = Table("component", "image", "max", "warm", "rev", "exports")
        for c in inv.components:
            table.add_row(
                c.id,
                c.image_ref,
                str(c.max_instances),
                str(c.instances_warm),
                str(c.revision),
                str(len(c.exports)),
            )
        if inv.components:
            out.print(table)
        else:
            out.print("no components")
        if inv.providers:
            ptable = Table("provider", "image", "healthy", "restarts")
            for p in inv.providers:
                ptable.add_row(
                    p["id"], p["image_ref"], str(p.get("healthy")), str(p.get("restarts", 0))
                )
            out.print(ptable)


# -- scale / update --------------------------------------------------------------


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


@scale_app.command("component")
def scale_component(
    ref: Annotated[
        str, typer.Argument(help="Component reference: file:///path.wasm, a path, or https://…")
    ],
    component_id: Annotated[
        str, typer.Argument(metavar="ID", help="Component id (unique in the lattice).")
    ],
    count: Annotated[
        int, typer.Option("--count", "-c", help="Most calls running at once; 0 stops.")
    ] = 1,
    host: Annotated[
        str | None, typer.Option("--host", help="Host id; auctioned when omitted.")
    ] = None,
    annotation: Annotated[
        list[str] | None, typer.Option("--annotation", "-a", help="key=value (repeatable).")
    ] = None,
    timeout_ms: Annotated[
        int | None, typer.Option("--timeout-ms", help="Execution deadline per call.")
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option("--memory-mb", help="Linear-memory cap per instance.")
    ] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the outcome.")
    ] = 120.0,
) -> None:
    """Run COUNT instances of a component on a host (0 stops it)."""
    if ref and "://" not in ref and Path(ref).exists():
        ref = Path(ref).resolve().as_uri()
    limits = {
        k: v for k, v in (("timeout_ms", timeout_ms), ("memory_mb", memory_mb)) if v is not None
    }
    annotations = parse_pairs(annotation or [], "annotation")

    async def go(c: LatticeClient) -> dict[str, Any]:
        target = await pick_host(c, host, ref, component_id)
        return await c.scale_component(
            target, ref, component_id, count, annotations=annotations, limits=limits, wait=timeout
        )

    data = run_client(nats_url, lattice, 10.0, go)
    out.print(
        f"{component_id} scaled to {data['max_instances']} on {data['host_id']}", highlight=False
    )


async def hosts_running(c: LatticeClient, component_id: str) -> list[str]:
    found = []
    for h in await c.hosts(wait=1.0):
        inv = await c.inventory(h.id)
        if any(x.id == component_id for x in inv.components):
            found.append(h.id)
    return found


@update_app.command("component")
def update_component(
    component_id: Annotated[str, typer.Argument(metavar="ID")],
    ref: Annotated[str, typer.Argument(help="New component reference.")],
    host: Annotated[
        str | None, typer.Option("--host", help="Host id; every host running ID when omitted.")
    ] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the outcome.")
    ] = 120.0,
) -> None:
    """Swap a running component's image with no failed call."""
    if "://" not in ref and Path(ref).exists():
        ref = Path(ref).resolve().as_uri()

    async def go(c: LatticeClient) -> list[str]:
        targets = [host] if host else await hosts_running(c, component_id)
        if not targets:
            raise LatticeError(f"no host runs component {component_id!r}")
        for t in targets:
            await c.update_component(t, component_id, ref, wait=timeout)
        return targets

    targets = run_client(nats_url, lattice, 10.0, go)
    out.print(f"{component_id} now runs {ref} on {len(targets)} host(s)", highlight=False)


# -- call ------------------------------------------------------------------------


@app.command()
def call(
    component_id: Annotated[str, typer.Argument(metavar="ID")],
    function: Annotated[
        str, typer.Argument(help="ns:pkg/iface.fn, or a unique short form like echo.echo")
    ],
    args: Annotated[list[str] | None, typer.Argument(help="Arguments, each as JSON.")] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Call an exported function and print its result as JSON."""
    values = []
    for i, a in enumerate(args or []):
        try:
            values.append(codec.from_json(json.loads(a)))
        except json.JSONDecodeError as exc:
            raise fail(f"argument {i + 1} is not valid JSON ({exc.msg}): {a!r}") from None

    result = run_client(
        nats_url, lattice, timeout, lambda c: c.call(component_id, function, values)
    )
    print_json(codec.to_json_compatible(result))


# -- stop / label ------------------------------------------------------------------


@stop_app.command("host")
def stop_host(
    host: Annotated[str, typer.Argument(help="Host id.")],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 5.0,
) -> None:
    """Stop a host gracefully (its components finish in-flight calls first)."""
    out.print(run_client(nats_url, lattice, timeout, lambda c: c.stop_host(host)), highlight=False)


@label_app.command("put")
def label_put(
    host: Annotated[str, typer.Argument(help="Host id.")],
    pair: Annotated[str, typer.Argument(metavar="KEY=VALUE")],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 5.0,
) -> None:
    """Set a label on a host (hostcore.* labels are reserved)."""
    ((key, value),) = parse_pairs([pair], "label").items()
    run_client(nats_url, lattice, timeout, lambda c: c.put_label(host, key, value))
    out.print(f"label {key}={value} set on {host}", highlight=False)


@label_app.command("del")
def label_del(
    host: Annotated[str, typer.Argument(help="Host id.")],
    key: Annotated[str, typer.Argument()],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 5.0,
) -> None:
    """Remove a label from a host."""
    run_client(nats_url, lattice, timeout, lambda c: c.del_label(host, key))
    out.print(f"label {key} removed from {host}", highlight=False)


# -- providers ----------------------------------------------------------------------


@start_app.command("provider")
def start_provider(
    ref: Annotated[
        str,
        typer.Argument(
            help="builtin://keyvalue-redis|keyvalue-vault|keyvalue-nats|messaging-nats|"
            "http-server, or file:///path/to/executable"
        ),
    ],
    provider_id: Annotated[str, typer.Argument(metavar="ID", help="Provider id; links target it.")],
    host: Annotated[
        str | None, typer.Option("--host", help="Host id; auctioned when omitted.")
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option("--config", help="Named config for the provider (repeatable)."),
    ] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait until it is healthy.")
    ] = 60.0,
) -> None:
    """Start a capability provider process on a host."""

    async def go(c: LatticeClient) -> dict[str, Any]:
        target = host
        if target is None:
            bids = await c.auction_provider(ref, provider_id)
            if not bids:
                raise LatticeError(f"no host offered to run provider {provider_id}; pass --host")
            target = bids[0]
        return await c.start_provider(target, ref, provider_id, config=config or [], wait=timeout)

    data = run_client(nats_url, lattice, 10.0, go)
    out.print(f"provider {provider_id} started on {data['host_id']}", highlight=False)


@stop_app.command("provider")
def stop_provider(
    provider_id: Annotated[str, typer.Argument(metavar="ID")],
    host: Annotated[
        str | None,
        typer.Option("--host", help="Host id; every host running it when omitted."),
    ] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 30.0,
) -> None:
    """Stop a provider (gracefully: it is asked to shut down first)."""

    async def go(c: LatticeClient) -> list[str]:
        targets = [host] if host else await hosts_with_provider(c, provider_id)
        if not targets:
            raise LatticeError(f"no host runs provider {provider_id!r}")
        for t in targets:
            await c.stop_provider(t, provider_id, wait=timeout)
        return targets

    targets = run_client(nats_url, lattice, 10.0, go)
    out.print(f"provider {provider_id} stopped on {len(targets)} host(s)", highlight=False)


async def hosts_with_provider(c: LatticeClient, provider_id: str) -> list[str]:
    found = []
    for h in await c.hosts(wait=1.0):
        if any(p["id"] == provider_id for p in (await c.inventory(h.id)).providers):
            found.append(h.id)
    return found


# -- links -------------------------------------------------------------------------


def split_package(package: str) -> tuple[str, str]:
    ns, sep, pkg = package.partition(":")
    if not sep or not ns or not pkg:
        raise fail(f"package {package!r} must look like namespace:package (e.g. wasi:keyvalue)")
    return ns, pkg


@link_app.command("put")
def link_put(
    source: Annotated[str, typer.Argument(help="Source component id.")],
    target: Annotated[str, typer.Argument(help="Target provider or component id.")],
    package: Annotated[str, typer.Argument(metavar="NAMESPACE:PACKAGE", help="e.g. wasi:keyvalue")],
    interface: Annotated[
        list[str],
        typer.Option("--interface", "-i", help="Interface of the package (repeatable)."),
    ],
    name: Annotated[str, typer.Option("--name", help="Link name.")] = "default",
    source_config: Annotated[
        list[str] | None, typer.Option("--source-config", help="Named config (repeatable).")
    ] = None,
    target_config: Annotated[
        list[str] | None,
        typer.Option(
            "--target-config", help="Named config for the target, e.g. which store (repeatable)."
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Atomically swap the target of an existing link.")
    ] = False,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Link SOURCE's imports of NAMESPACE:PACKAGE to TARGET (reaches the next call)."""
    ns, pkg = split_package(package)
    msg = run_client(
        nats_url,
        lattice,
        timeout,
        lambda c: c.put_link(
            source,
            target,
            ns,
            pkg,
            interface,
            name=name,
            source_config=source_config,
            target_config=target_config,
            replace=replace,
        ),
    )
    out.print(msg, highlight=False, soft_wrap=True)


@link_app.command("del")
def link_del(
    source: Annotated[str, typer.Argument(help="Source component id.")],
    package: Annotated[str, typer.Argument(metavar="NAMESPACE:PACKAGE")],
    name: Annotated[str, typer.Option("--name", help="Link name.")] = "default",
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Delete a link."""
    ns, pkg = split_package(package)
    msg = run_client(nats_url, lattice, timeout, lambda c: c.del_link(source, ns, pkg, name))
    out.print(msg, highlight=False, soft_wrap=True)


@link_app.command("get")
def link_get(
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
    as_json: AsJson = False,
) -> None:
    """List every link of the lattice."""
    links = run_client(nats_url, lattice, timeout, lambda c: c.get_links())
    if as_json:
        print_json(links)
        return
    table = Table("source", "target", "package", "interfaces", "name", "target config")
    for lk in links:
        table.add_row(
            lk["source_id"],
            lk["target"],
            f"{lk['wit_namespace']}:{lk['wit_package']}",
            ",".join(lk["interfaces"]),
            lk["name"],
            ",".join(lk["target_config"]),
        )
    out.print(table)


# -- config ------------------------------------------------------------------------


@config_app.command("put")
def config_put(
    name: Annotated[str, typer.Argument(help="Config name.")],
    pairs: Annotated[list[str] | None, typer.Argument(metavar="KEY=VALUE…")] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option("--secret", help="A secret KEY=VALUE (never shown back; repeatable)."),
    ] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Create or replace a named config."""
    values = parse_pairs(pairs or [], "config entry")
    secrets = parse_pairs(secret or [], "secret")
    msg = run_client(
        nats_url,
        lattice,
        timeout,
        lambda c: c.put_config(name, {**values, **secrets}, list(secrets)),
    )
    out.print(msg, highlight=False)


@config_app.command("get")
def config_get(
    name: Annotated[str, typer.Argument(help="Config name.")],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Show a named config (secret values as ***)."""
    print_json(run_client(nats_url, lattice, timeout, lambda c: c.get_config(name)))


@config_app.command("del")
def config_del(
    name: Annotated[str, typer.Argument(help="Config name.")],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Delete a named config (refused while a link uses it)."""
    out.print(run_client(nats_url, lattice, timeout, lambda c: c.del_config(name)), highlight=False)


# -- applications (the controller) ---------------------------------------------------

app_app = typer.Typer(
    help="Declarative applications (OAM manifests) kept running by the controller.",
    no_args_is_help=True,
)
app.add_typer(app_app, name="app")


def show_problems(title: str, problems: list[str], style: str) -> None:
    if problems:
        err.print(f"[{style}]{title}:[/{style}]", highlight=False)
        for p in problems:
            err.print(f"  {p}", highlight=False, soft_wrap=True)


@app_app.command("validate")
def app_validate(
    file: Annotated[Path, typer.Argument(help="Manifest file (YAML or JSON).")],
) -> None:
    """Check a manifest: every error with its path and reason, plus warnings."""
    from lattice.controller.validate import validate

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    report = validate(text)
    show_problems("warnings", [str(w) for w in report.warnings], "yellow")
    if report.errors:
        show_problems("errors", [str(e) for e in report.errors], "red")
        raise typer.Exit(1)
    m = report.manifest
    assert m is not None
    out.print(f"{file}: {m.name} {m.version or '(no version)'} is valid", highlight=False)


@app_app.command("deploy")
def app_deploy(
    target: Annotated[
        str,
        typer.Argument(
            metavar="FILE|NAME", help="A manifest file, or the name of a stored application."
        ),
    ],
    version: Annotated[
        str | None, typer.Option("--version", help="Version to deploy (an older one rolls back).")
    ] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Store a manifest (when FILE) and deploy it, or deploy a stored version."""
    path = Path(target)
    manifest = path.read_bytes() if path.is_file() else None

    async def go(c: LatticeClient) -> tuple[str, str, list[str]]:
        name, ver, warnings = target, version, []
        if manifest is not None:
            put = await c.model("put", body=manifest)
            name, ver, warnings = put["name"], version or put["version"], put.get("warnings", [])
        reply = await c.model("deploy", name, {"version": ver} if ver else {})
        return name, reply["version"], warnings

    name, ver, warnings = run_client(nats_url, lattice, timeout, go)
    show_problems("warnings", warnings, "yellow")
    out.print(f"deploying {name} {ver} (lattice app status {name})", highlight=False)


@app_app.command("undeploy")
def app_undeploy(
    name: Annotated[str, typer.Argument()],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Stop everything the application owns (what it shares with others stays)."""
    run_client(nats_url, lattice, timeout, lambda c: c.model("undeploy", name))
    out.print(f"undeploying {name}", highlight=False)


@app_app.command("list")
def app_list(
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
    as_json: AsJson = False,
) -> None:
    """Every stored application with its deployed version and state."""
    models = run_client(nats_url, lattice, timeout, lambda c: c.model("list"))["models"]
    if as_json:
        print_json(models)
        return
    table = Table("name", "latest", "deployed", "state", "description")
    for m in models:
        table.add_row(
            m["name"],
            str(m["latest_version"]),
            str(m["deployed_version"] or "-"),
            m["state"],
            m.get("description") or "",
        )
    out.print(table)


@app_app.command("get")
def app_get(
    name: Annotated[str, typer.Argument()],
    version: Annotated[str | None, typer.Option("--version")] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Print a stored manifest (the latest version unless --version)."""
    body = {"version": version} if version else {}
    reply = run_client(nats_url, lattice, timeout, lambda c: c.model("get", name, body))
    print_json(reply["manifest"])


@app_app.command("status")
def app_status(
    name: Annotated[str, typer.Argument()],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
    as_json: AsJson = False,
) -> None:
    """Desired and running replicas per component, where, state and the reason."""
    status = run_client(nats_url, lattice, timeout, lambda c: c.model("status", name))["status"]
    if as_json:
        print_json(status)
        return
    reason = f" — {status['reason']}" if status.get("reason") else ""
    out.print(
        f"{status['name']} {status.get('version') or ''}: {status['state']}{reason}",
        highlight=False,
    )
    table = Table("component", "kind", "desired", "running", "where", "state", "reason")
    for c in status.get("components", []):
        where = ", ".join(h[:8] for h in c["where"])
        table.add_row(
            c["name"],
            c["kind"],
            str(c["desired"]),
            str(c["running"]),
            where,
            c["state"],
            c.get("reason", ""),
        )
    if status.get("components"):
        out.print(table)


@app_app.command("versions")
def app_versions(
    name: Annotated[str, typer.Argument()],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Every stored version; the deployed one is marked."""
    versions = run_client(nats_url, lattice, timeout, lambda c: c.model("versions", name))
    for v in versions["versions"]:
        out.print(f"{v['version']}{'  (deployed)' if v['deployed'] else ''}", highlight=False)


@app_app.command("history")
def app_history(
    name: Annotated[str, typer.Argument()],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """What was put, deployed, rolled back and undeployed, oldest first."""
    import datetime

    hist = run_client(nats_url, lattice, timeout, lambda c: c.model("history", name))["history"]
    for h in hist:
        when = datetime.datetime.fromtimestamp(h["at"]).isoformat(timespec="seconds")
        out.print(f"{when}  {h['action']:<15} {h.get('version') or ''}", highlight=False)


@app_app.command("delete")
def app_delete(
    name: Annotated[str, typer.Argument()],
    version: Annotated[
        str | None, typer.Option("--version", help="Delete only this version.")
    ] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    timeout: Timeout = 10.0,
) -> None:
    """Delete an undeployed application, or one of its versions."""
    body = {"version": version} if version else {}
    reply = run_client(nats_url, lattice, timeout, lambda c: c.model("del", name, body))
    out.print(reply["message"], highlight=False)


@app.command()
def controller(
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    host_expiry: Annotated[
        float,
        typer.Option(
            "--host-expiry",
            envvar="LATTICE_HOST_EXPIRY",
            help="Seconds without news before a host counts as lost.",
        ),
    ] = 15.0,
    log_format: Annotated[
        str, typer.Option("--log-format", envvar="LATTICE_LOG_FORMAT", help="json or console.")
    ] = "console",
    log_level: Annotated[str, typer.Option("--log-level", envvar="LATTICE_LOG_LEVEL")] = "info",
) -> None:
    """Run a manifest controller (several may run: one leads, the others stand by)."""
    from lattice import logs
    from lattice.controller.run.service import Controller

    if log_format not in ("json", "console"):
        raise fail(f"--log-format must be json or console, not {log_format!r}")
    try:
        logs.configure(log_format, log_level)  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def go() -> None:
        from lattice import natsd

        if not await natsd.answers(nats_url, timeout=5):
            raise LatticeError(f"no NATS server answers at {nats_url}")
        ctl = Controller(nats_url, lattice, host_expiry=host_expiry)
        loop = asyncio.get_running_loop()
        import signal as _signal

        for sig in (_signal.SIGINT, _signal.SIGTERM):
            loop.add_signal_handler(sig, ctl._stop.set)
        await ctl.run_forever()

    try:
        asyncio.run(go())
    except LatticeError as exc:
        raise fail(str(exc)) from None


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
