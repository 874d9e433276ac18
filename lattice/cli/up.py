"""`lattice up`, `lattice down` and `lattice controller`: running this machine's part.

`lattice up` runs a host. When it had to start the embedded NATS (the one-machine
case) it also runs a controller in the process, unless `--no-controller`; when it
joined a NATS that was already there it runs none unless `--controller`. It says which
in its start-up log and in the labels `hostcore.controller` / `hostcore.nats` that
`lattice get hosts` shows.

`--detach` re-runs the same command in the background with its log in
`{data dir}/logs/`, and returns once the host answers pings. A detached host writes
`{data dir}/run/{pid}.json` (host id, NATS URL, lattice, whether it owns the embedded
NATS) and removes it when it stops; `lattice down` reads those files, stops the hosts
that joined someone else's NATS first, then the ones that own an embedded NATS, and
waits for each `host_stopped` and for each process to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from lattice.cli.common import (
    DEFAULT_LATTICE,
    EXIT_TIMEOUT,
    CliError,
    LatticeName,
    NatsUrl,
    err,
    fail,
    out,
    run,
    target,
    usage,
)
from lattice.cli.groups import app
from lattice.cli.hosts import CONTROLLER_LABEL, NATS_LABEL
from lattice.client import LatticeClient, LatticeError
from lattice.natsauth import NatsAuth, NatsConnectError

log = structlog.get_logger("lattice.up")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="LATTICE_DATA_DIR",
        metavar="DIR",
        help="Compile cache, embedded NATS store, detached hosts' logs "
        "[default: ~/.local/share/lattice].",
        show_default=False,
    ),
]
LogFormat = Annotated[
    str,
    typer.Option(
        "--log-format", envvar="LATTICE_LOG_FORMAT", metavar="json|console", help="Log format."
    ),
]
AdminAddr = Annotated[
    str | None,
    typer.Option(
        "--admin-addr",
        envvar="LATTICE_ADMIN_ADDR",
        metavar="HOST:PORT",
        help="Serve /livez, /readyz and Prometheus /metrics here (off by default).",
        show_default=False,
    ),
]


def _path_option(flag: str, env: str, help_text: str) -> Any:
    return typer.Option(
        flag, envvar=env, metavar="FILE", help=help_text, show_default=False, exists=False
    )


NkeyFile = Annotated[
    Path | None,
    _path_option(
        "--nkey", "LATTICE_NATS_NKEY", "A file holding a NATS user nkey seed (SU…) to log in with."
    ),
]
CredsFile = Annotated[
    Path | None,
    _path_option(
        "--creds",
        "LATTICE_CREDS",
        "A NATS .creds file (user JWT + seed) to log in with [default: the context's].",
    ),
]
TlsCa = Annotated[
    Path | None,
    _path_option("--tls-ca", "LATTICE_TLS_CA", "CA certificate(s) to check the NATS server with."),
]
TlsCert = Annotated[
    Path | None,
    _path_option("--tls-cert", "LATTICE_TLS_CERT", "Client certificate for TLS to NATS."),
]
TlsKey = Annotated[
    Path | None,
    _path_option("--tls-key", "LATTICE_TLS_KEY", "The client certificate's private key."),
]


JsReplicas = Annotated[
    int | None,
    typer.Option(
        "--js-replicas",
        envvar="LATTICE_JS_REPLICAS",
        metavar="N",
        min=1,
        max=5,
        help="Replicas of the lattice's KV buckets, object stores and event stream "
        "[default: 3 on a NATS cluster of 3 or more, else 1]; raises existing ones.",
        show_default=False,
    ),
]
LogLevel = Annotated[
    str,
    typer.Option(
        "--log-level",
        envvar="LATTICE_LOG_LEVEL",
        metavar="LEVEL",
        help="debug, info, warning or error.",
    ),
]


def check_admin_addr(addr: str | None) -> str | None:
    """`--admin-addr` as given, after checking it looks like HOST:PORT (ValueError)."""
    if not addr:
        return None
    from host.admin import parse_addr

    parse_addr(addr)
    return addr


def use_js_replicas(n: int | None) -> None:
    """`--js-replicas` for this process: `lattice.buckets` reads LATTICE_JS_REPLICAS."""
    if n is not None:
        from lattice import buckets

        os.environ[buckets.ENV] = str(n)


def compile_cache_from_env() -> Path | None:
    """LATTICE_COMPILE_CACHE: one compile cache for several hosts of one machine (its
    entries are keyed by digest and engine, written atomically), instead of one per
    data dir. No flag: it is a machine's layout, not a host's setting."""
    raw = os.environ.get("LATTICE_COMPILE_CACHE", "").strip()
    return Path(raw).expanduser() if raw else None


def data_dir_of(data_dir: Path | None) -> Path:
    from host.config import default_data_dir

    return (data_dir or default_data_dir()).resolve()


def run_dir(data_dir: Path) -> Path:
    return data_dir / "run"


@dataclass(frozen=True)
class Detached:
    """What a detached host left in `{data dir}/run/{pid}.json`."""

    pid: int
    host_id: str
    nats_url: str
    lattice: str
    embedded_nats: bool
    log_file: str
    path: Path

    @classmethod
    def read(cls, path: Path) -> Detached | None:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                pid=int(d["pid"]),
                host_id=str(d["host_id"]),
                nats_url=str(d["nats_url"]),
                lattice=str(d["lattice"]),
                embedded_nats=bool(d["embedded_nats"]),
                log_file=str(d.get("log_file", "")),
                path=path,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child, not reaped yet) counts as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def detached_hosts(data_dir: Path) -> list[Detached]:
    found = []
    for p in sorted(run_dir(data_dir).glob("*.json")):
        d = Detached.read(p)
        if d is None or not alive(d.pid):
            with contextlib.suppress(OSError):
                p.unlink()  # left by a host that died without cleaning up
            continue
        found.append(d)
    return found


# -- up ------------------------------------------------------------------------


@app.command()
def up(
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            "-l",
            envvar="LATTICE_LABELS",
            metavar="KEY=VALUE",
            help="Host label (repeatable).",
        ),
    ] = None,
    host_seed: Annotated[
        str | None,
        typer.Option(
            "--host-seed",
            envvar="LATTICE_HOST_SEED",
            metavar="SEED",
            help="nkey server seed (SN…) for a stable host id; generated when absent.",
            show_default=False,
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float,
        typer.Option(
            "--heartbeat-interval",
            envvar="LATTICE_HEARTBEAT_INTERVAL",
            metavar="SECONDS",
            help="Seconds between heartbeats.",
        ),
    ] = 30.0,
    beat_interval: Annotated[
        float,
        typer.Option(
            "--beat-interval",
            envvar="LATTICE_BEAT_INTERVAL",
            metavar="SECONDS",
            help="Seconds between liveness beats, which let a controller notice a dead host "
            "within a few seconds (0: off, then only heartbeats and pings tell).",
        ),
    ] = 1.0,
    data_dir: DataDir = None,
    log_format: LogFormat = "console",
    log_level: LogLevel = "info",
    timeout_ms: Annotated[
        int,
        typer.Option(
            "--timeout-ms",
            envvar="LATTICE_TIMEOUT_MS",
            metavar="MS",
            help="Default execution deadline per call.",
        ),
    ] = 10_000,
    memory_mb: Annotated[
        int,
        typer.Option(
            "--memory-mb",
            envvar="LATTICE_MEMORY_MB",
            metavar="MB",
            help="Default linear-memory cap per instance.",
        ),
    ] = 512,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            "--otlp-endpoint",
            envvar="LATTICE_OTLP_ENDPOINT",
            metavar="URL",
            help="Export trace spans to this OTLP/HTTP receiver, e.g. http://localhost:4318 "
            "(its providers too; off by default).",
            show_default=False,
        ),
    ] = None,
    controller: Annotated[
        bool | None,
        typer.Option(
            "--controller/--no-controller",
            envvar="LATTICE_CONTROLLER",
            help="Run a manifest controller in this process [default: yes with the "
            "embedded NATS, no when joining an existing one].",
            show_default=False,
        ),
    ] = None,
    embedded_nats: Annotated[
        bool,
        typer.Option(
            "--embedded-nats/--no-embedded-nats",
            envvar="LATTICE_EMBEDDED_NATS",
            help="Start a nats-server when none answers at a local URL.",
        ),
    ] = True,
    allow_insecure_registry: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-insecure-registry",
            envvar="LATTICE_ALLOW_INSECURE_REGISTRY",
            help="OCI registry host[:port] to reach over plain HTTP (repeatable).",
        ),
    ] = None,
    allow_latest: Annotated[
        bool,
        typer.Option(
            "--allow-latest",
            envvar="LATTICE_ALLOW_LATEST",
            help="Run OCI references tagged :latest or untagged.",
        ),
    ] = False,
    allowed_issuer: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-issuer",
            envvar="LATTICE_ALLOWED_ISSUERS",
            metavar="ACCOUNT",
            help="Run only components signed (`lattice sign`) by this account public key "
            "(A…; repeatable). Unsigned, tampered, expired or foreign ones are refused.",
            show_default=False,
        ),
    ] = None,
    policy_subject: Annotated[
        str | None,
        typer.Option(
            "--policy-subject",
            envvar="LATTICE_POLICY_SUBJECT",
            metavar="SUBJECT",
            help="Ask the policy service on this NATS subject before storing a link or "
            "starting a component (docs/security.md). No answer refuses the change.",
            show_default=False,
        ),
    ] = None,
    policy_timeout: Annotated[
        float,
        typer.Option(
            "--policy-timeout",
            envvar="LATTICE_POLICY_TIMEOUT",
            metavar="S",
            help="Seconds to wait for the policy service's answer.",
        ),
    ] = 1.0,
    policy_cache_ttl: Annotated[
        float,
        typer.Option(
            "--policy-cache-ttl",
            envvar="LATTICE_POLICY_CACHE_TTL",
            metavar="S",
            help="Seconds a policy decision (permit or deny) is reused; 0 asks every time.",
        ),
    ] = 60.0,
    shared_compile: Annotated[
        bool,
        typer.Option(
            "--shared-compile/--no-shared-compile",
            envvar="LATTICE_SHARED_COMPILE",
            help="Use and publish compiled components signed by hosts of this lattice.",
        ),
    ] = True,
    http_in_host: Annotated[
        bool,
        typer.Option(
            "--http-in-host/--no-http-in-host",
            envvar="LATTICE_HTTP_IN_HOST",
            help="Run builtin://http-server inside this host: requests for components "
            "running here reach a warm instance with no NATS hop (others go over NATS).",
        ),
    ] = True,
    provider_sockets: Annotated[
        bool,
        typer.Option(
            "--provider-sockets/--no-provider-sockets",
            envvar="LATTICE_PROVIDER_SOCKETS",
            help="Send link calls to provider processes this host started over a private "
            "Unix socket, not through the NATS server (providers elsewhere: NATS).",
        ),
    ] = True,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            envvar="LATTICE_WORKERS",
            metavar="N",
            help="Processes serving components behind this one host identity, each with "
            "its own NATS connection and instance pools (a component's count is split "
            "over them) and its own in-host HTTP server on the same ports. "
            "Default: one per CPU.",
            show_default=False,
        ),
    ] = None,
    pin_cpus: Annotated[
        bool | None,
        typer.Option(
            "--pin-cpus/--no-pin-cpus",
            envvar="LATTICE_PIN_CPUS",
            help="Run each of the host's processes on a CPU of its own, so the event "
            "loop and the wasm threads of one process hand the GIL over on one core. "
            "Default: on with --workers 2 or more.",
            show_default=False,
        ),
    ] = None,
    admin_addr: AdminAddr = None,
    js_replicas: JsReplicas = None,
    creds: CredsFile = None,
    nkey: NkeyFile = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    account_signing_key: Annotated[
        Path | None,
        _path_option(
            "--account-signing-key",
            "LATTICE_ACCOUNT_SIGNING_KEY",
            "A signing key (seed) of the lattice's NATS account: each provider this host "
            "starts then gets a user of its own, allowed only its own subjects (with --creds).",
        ),
    ] = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            envvar="LATTICE_SECURE",
            help="Start the embedded NATS secured (operator mode and TLS with a private "
            "CA, listening on all interfaces; keys made once under DATA_DIR/secure) and "
            "print how other hosts join (`lattice secure join NAME` mints each its own "
            "user). Without it the embedded NATS is anonymous on loopback only.",
        ),
    ] = False,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            "-d",
            help="Run in the background (logs under the data dir); stop with `lattice down`.",
        ),
    ] = False,
    state_file: Annotated[Path | None, typer.Option("--state-file", hidden=True)] = None,
) -> None:
    """Start a host and join the lattice (with an embedded NATS and controller if none).

    Example: lattice up
    Example: lattice up --label zone=east --nats-url nats://10.0.0.5:4222
    Example: lattice up --detach
    """
    from host.config import HostConfig, Limits, artifact_settings, parse_labels
    from host.host import Host
    from host.policy import PolicySettings
    from host.workers import default_workers
    from lattice import logs

    if log_format not in ("json", "console"):
        raise usage(f"--log-format must be json or console, not {log_format!r}")
    where = target(nats_url, lattice)
    data = data_dir_of(data_dir)
    try:
        labels = parse_labels([x for item in (label or []) for x in item.split(",") if x])
        if timeout_ms <= 0 or memory_mb <= 0:
            raise ValueError("--timeout-ms and --memory-mb must be positive")
        secured = secure_settings(data, where.nats_url) if secure else {}
        config = HostConfig(
            nats_url=where.nats_url,
            lattice=where.lattice,
            labels=labels,
            otlp_endpoint=otlp_endpoint or None,
            host_seed=host_seed,
            heartbeat_interval=heartbeat_interval,
            beat_interval=beat_interval,
            data_dir=data,
            limits=Limits(timeout_ms=timeout_ms, memory_mb=memory_mb),
            embedded_nats=embedded_nats,
            artifacts=artifact_settings(
                allow_insecure_registry, allow_latest, shared_compile, allowed_issuer
            ),
            admin_addr=check_admin_addr(admin_addr),
            compile_cache_dir=compile_cache_from_env(),
            http_in_host=http_in_host,
            provider_sockets=provider_sockets,
            workers=(n_workers := default_workers() if workers is None else workers),
            pin_cpus=n_workers > 1 if pin_cpus is None else pin_cpus,
            policy=PolicySettings(policy_subject, policy_timeout, policy_cache_ttl),
            **{  # --secure: the login it made for this host
                "nats_auth": NatsAuth.from_values(
                    creds=creds or where.creds,
                    nkey=nkey,
                    tls_ca=tls_ca or where.tls_ca,
                    tls_cert=tls_cert,
                    tls_key=tls_key,
                ),
                "account_signing_key": account_signing_key,
                **secured,
            },
        )
        use_js_replicas(js_replicas)
        if detach:
            start_detached(data)
            return
        logs.configure(log_format, log_level)  # type: ignore[arg-type]
        host = Host(config)
    except ValueError as exc:
        raise usage(str(exc)) from None
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(host, controller, state_file), host_loop=True)


def secure_settings(data: Path, nats_url: str) -> dict[str, Any]:
    """HostConfig fields for `--secure`: the embedded server's config and this host's
    login, made once under DATA_DIR/secure (lattice/secure.py)."""
    from lattice import natsd, secure

    if not natsd.is_local(nats_url):
        raise ValueError(
            f"--secure starts the embedded NATS, so --nats-url must be local, not {nats_url}"
        )
    _, port = natsd.split_url(nats_url)
    made = secure.ensure(data / "secure", f"0.0.0.0:{port}", machine_names())
    return {
        "nats_auth": NatsAuth(creds=made.host_creds, tls_ca=made.tls.ca),
        "account_signing_key": made.signing_key,
        "embedded_config": made.server_config,
        "embedded_listen": "0.0.0.0",
    }


def machine_names() -> list[str]:
    """What other machines may call this one: for the --secure server certificate."""
    import socket

    names = ["localhost", "127.0.0.1", machine_address(), socket.gethostname()]
    with contextlib.suppress(OSError):
        names.append(socket.getfqdn())
    with contextlib.suppress(OSError):
        names += socket.gethostbyname_ex(socket.gethostname())[2]
    return [n for n in dict.fromkeys(names) if n]


def machine_address() -> str:
    """An address other machines may reach this one at (the default route's source)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


async def serve(host: Any, controller: bool | None, state_file: Path | None) -> None:
    """Run the host (and maybe a controller) until it stops; raise HostStartError's
    message as a CliError when it cannot start."""
    from host.host import HostStartError

    task = asyncio.create_task(host.run())
    started = asyncio.create_task(host.started.wait())
    with starting_status(host):
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        try:
            await task
        except HostStartError as exc:
            raise fail(str(exc)) from None
        return
    embedded = host.embedded is not None
    run_controller = embedded if controller is None else controller
    host.labels[CONTROLLER_LABEL] = "true" if run_controller else "false"
    host.labels[NATS_LABEL] = "embedded" if embedded else "external"
    why = "--controller" if controller else "--no-controller"
    if controller is None:
        why = "embedded NATS" if embedded else "joined an existing NATS"
    if run_controller:
        from lattice.controller.run.service import Controller

        ctl = Controller(host.nats_url, host.lattice, nats_auth=host.config.nats_auth)
        for collector in ctl.metrics.collectors():  # on the host's /metrics
            host.metrics.registry.register(collector)
        host.before_stop.append(ctl.stop)
        await ctl.start()
        log.info("controller running in this process", reason=why, lattice=host.lattice)
    else:
        log.info("no controller in this process", reason=why, lattice=host.lattice)
    if state_file is not None:
        write_state(state_file, host, embedded)
    if host.config.embedded_config is not None and embedded:
        from lattice import natsd, secure

        _, port = natsd.split_url(host.nats_url)
        join = secure.SecureLattice(host.config.embedded_config.parent)
        print(join.join_instructions(f"nats://{machine_address()}:{port}"), flush=True)
    try:
        await task
    finally:
        if state_file is not None:
            state_file.unlink(missing_ok=True)  # noqa: ASYNC240 (a local file, once)


@contextlib.contextmanager
def starting_status(host: Any) -> Any:
    """A progress line while the host waits for NATS, JetStream and its first
    heartbeat; only in a terminal."""
    if not err.is_terminal:
        yield
        return

    async def follow(status: Any) -> None:
        while True:
            if not host.nc.is_connected:
                status.update("waiting for NATS…")
            elif not hasattr(host, "state"):
                status.update("opening JetStream buckets…")
            else:
                status.update("announcing the host (first heartbeat)…")
            await asyncio.sleep(0.1)

    with err.status("starting the host…") as status:
        task = asyncio.ensure_future(follow(status))
        try:
            yield
        finally:
            task.cancel()


def write_state(path: Path, host: Any, embedded: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "host_id": host.host_id,
                "nats_url": host.nats_url,
                "lattice": host.lattice,
                "embedded_nats": embedded,
                "log_file": os.environ.get("LATTICE_DETACHED_LOG", ""),
            }
        ),
        encoding="utf-8",
    )
    tmp.replace(path)


def child_args(argv: list[str], data_dir: Path, state_file: Path) -> list[str]:
    """The same `lattice up` command line, without --detach, with JSON logs, an explicit
    data dir and where to write the state file."""
    args: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--detach", "-d"):
            continue
        if a in ("--data-dir", "--log-format", "--state-file"):
            skip = True
            continue
        if a.startswith(("--data-dir=", "--log-format=", "--state-file=")):
            continue
        args.append(a)
    return [
        *args,
        "--data-dir",
        str(data_dir),
        "--log-format",
        "json",
        "--state-file",
        str(state_file),
    ]


def start_detached(data_dir: Path, wait: float = 120.0) -> None:
    """Start this `lattice up` again in its own session and return once its host
    answers pings; print where its log goes."""
    import uuid

    logs_dir = data_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    token = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log_file = logs_dir / f"host-{token}.log"
    state = run_dir(data_dir) / f"{token}.json"
    argv = sys.argv[1:]
    rest = argv[argv.index("up") + 1 :] if "up" in argv else argv
    with log_file.open("ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lattice", "up", *child_args(rest, data_dir, state)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "LATTICE_DETACHED_LOG": str(log_file)},
        )
    deadline = time.monotonic() + wait
    with waiting_line("starting the host in the background…"):
        while not state.exists():
            if proc.poll() is not None:
                tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
                raise fail(
                    f"the detached host exited with code {proc.returncode}: "
                    + (last_error(tail) or "see its log"),
                    f"its log: {log_file}",
                )
            if time.monotonic() > deadline:
                proc.terminate()
                raise CliError(
                    f"the detached host did not start within {wait:g}s",
                    f"its log: {log_file}",
                    EXIT_TIMEOUT,
                )
            time.sleep(0.1)
        d = Detached.read(state)
        assert d is not None
        run(answers_ping(d, deadline - time.monotonic()))
    out.print(f"host {d.host_id} is up in the background (pid {d.pid})")
    out.print(
        f"lattice {d.lattice} on {d.nats_url}" + (" (embedded NATS)" if d.embedded_nats else "")
    )
    out.print(f"logs: {log_file}")
    out.print("stop it with `lattice down`")


def last_error(lines: list[str]) -> str:
    """The message of the last JSON log line (or the last plain line) of a log tail."""
    for line in reversed(lines):
        with contextlib.suppress(ValueError, TypeError, KeyError):
            return str(json.loads(line)["event"])
        if line.strip():
            return line.strip()
    return ""


async def answers_ping(d: Detached, wait: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(wait, 5.0)
    async with await LatticeClient.connect(d.nats_url, d.lattice, 5.0) as c:
        while loop.time() < deadline:
            if any(h.id == d.host_id for h in await c.hosts(wait=0.5, expect=None)):
                return
        raise LatticeError(f"host {d.host_id} did not answer pings")


@contextlib.contextmanager
def waiting_line(text: str) -> Any:
    if not err.is_terminal:
        yield
        return
    with err.status(text):
        yield


# -- down ----------------------------------------------------------------------


@app.command()
def down(
    data_dir: DataDir = None,
    purge: Annotated[
        bool,
        typer.Option("--purge", help="Also remove the lattice's links, config and stored apps."),
    ] = False,
    wait_timeout: Annotated[
        float,
        typer.Option(
            "--wait-timeout", metavar="SECONDS", help="Seconds to wait for each host to stop."
        ),
    ] = 60.0,
) -> None:
    """Stop every host this machine started with `lattice up --detach`.

    Hosts that own an embedded NATS stop last; each `host_stopped` is waited for.

    Example: lattice down
    Example: lattice down --purge
    """
    data = data_dir_of(data_dir)
    hosts = detached_hosts(data)
    if not hosts:
        out.print(f"no detached host runs from {data}")
        return
    if purge:
        first = hosts[0]
        purged = run(purge_lattice(first.nats_url, first.lattice))
        out.print(purged)
    # Hosts that joined another's NATS first: stopping an owner takes its NATS along.
    for d in sorted(hosts, key=lambda h: h.embedded_nats):
        run(stop_detached(d, wait_timeout))
        out.print(f"host {d.host_id} stopped (pid {d.pid})")


async def stop_detached(d: Detached, wait: float) -> None:
    """host.stop over the lattice and wait for `host_stopped`; SIGTERM when the lattice
    cannot be reached; then wait for the process to end (SIGKILL as the last resort)."""
    try:
        async with await LatticeClient.connect(d.nats_url, d.lattice, 5.0) as c:
            await c.stop_host(d.host_id, wait=wait)
    except LatticeError as exc:
        log.warning("host.stop failed; sending SIGTERM", host_id=d.host_id, error=str(exc))
        with contextlib.suppress(ProcessLookupError):
            os.kill(d.pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while alive(d.pid):
        if loop.time() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(d.pid, signal.SIGKILL)
            break
        await asyncio.sleep(0.1)
    with contextlib.suppress(OSError):
        d.path.unlink()


async def purge_lattice(nats_url: str, lattice: str) -> str:
    """Delete every link, named config and stored application of the lattice."""
    async with await LatticeClient.connect(nats_url, lattice, 10.0) as c:
        links = await c.get_links()
        for lk in links:
            await c.del_link(lk["source_id"], lk["wit_namespace"], lk["wit_package"], lk["name"])
        configs = await c.list_configs()
        for name in configs:
            await c.del_config(name)
        apps = 0
        try:
            models = (await c.model("list"))["models"]
        except LatticeError:
            models = []
        for m in models:
            if m.get("deployed_version"):
                await c.model("undeploy", m["name"])
            await c.model("del", m["name"])
            apps += 1
    return f"purged {len(links)} link(s), {len(configs)} config(s), {apps} app(s)"


# -- controller ----------------------------------------------------------------


@app.command()
def controller(
    nats_url: NatsUrl = None,
    lattice: LatticeName = None,
    host_expiry: Annotated[
        float,
        typer.Option(
            "--host-expiry",
            envvar="LATTICE_HOST_EXPIRY",
            metavar="SECONDS",
            help="Seconds without news before a host counts as lost.",
        ),
    ] = 15.0,
    log_format: LogFormat = "console",
    log_level: LogLevel = "info",
    admin_addr: AdminAddr = None,
    js_replicas: JsReplicas = None,
    creds: CredsFile = None,
    nkey: NkeyFile = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Run a manifest controller (several may run: one leads, the others stand by).

    Example: lattice controller --nats-url nats://10.0.0.5:4222
    """
    from lattice import logs, natsd
    from lattice.controller.run.service import Controller

    if log_format not in ("json", "console"):
        raise usage(f"--log-format must be json or console, not {log_format!r}")
    try:
        logs.configure(log_format, log_level)  # type: ignore[arg-type]
    except ValueError as exc:
        raise usage(str(exc)) from None
    where = target(nats_url, lattice)
    use_js_replicas(js_replicas)
    try:
        admin = check_admin_addr(admin_addr)
        auth = NatsAuth.from_values(
            creds=creds or where.creds,
            nkey=nkey,
            tls_ca=tls_ca or where.tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
    except ValueError as exc:
        raise usage(str(exc)) from None

    async def go() -> None:
        if not await natsd.answers(where.nats_url, timeout=5):
            raise LatticeError(f"cannot reach NATS at {where.nats_url}: no server answers")
        ctl = Controller(
            where.nats_url,
            where.lattice or DEFAULT_LATTICE,
            host_expiry=host_expiry,
            admin_addr=admin,
            nats_auth=auth,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, ctl._stop.set)
        try:
            await ctl.run_forever()
        except NatsConnectError as exc:
            raise LatticeError(str(exc)) from None

    run(go())
