"""`lattice push|pull|inspect|sign`, `lattice get artifacts`, `lattice delete artifact`.

Mounted by the CLI with `register(app, get_app, delete_app)`. Each command parses its
options, calls `lattice.artifacts.ops`, and prints a table or JSON; errors are one
sentence on stderr with exit code 1. Registry passwords come from
LATTICE_REGISTRY_PASSWORD or `--password-stdin`, never from a flag's value (which
would land in shell history and `ps`), and are never printed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from nats.aio.client import Client as NATS
from rich.console import Console
from rich.table import Table

from lattice.artifacts import claims
from lattice.artifacts.refs import RefError
from lattice.artifacts.wasm import NotAComponent

if TYPE_CHECKING:  # imported where used: ops and its httpx client are ~60 ms of every
    # `lattice` start, and most commands never touch an artifact
    from lattice.artifacts import ops
    from lattice.artifacts.fetch import FetchPolicy
    from lattice.artifacts.oci import Credentials

# -o table|json|yaml like every other command (the old --json stays, hidden)
from lattice.cli.common import AsJson, Format, OutputOpt, dump, fmt_of

T = TypeVar("T")
out = Console()
err = Console(stderr=True)

NatsUrl = Annotated[
    str, typer.Option("--nats-url", envvar="LATTICE_NATS_URL", help="NATS server to talk to.")
]
LatticeName = Annotated[
    str, typer.Option("--lattice", envvar="LATTICE_LATTICE", help="Lattice name.")
]
Insecure = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-insecure-registry",
        envvar="LATTICE_ALLOW_INSECURE_REGISTRY",
        help="Registry host[:port] to reach over plain HTTP (repeatable).",
    ),
]
AllowLatest = Annotated[
    bool,
    typer.Option(
        "--allow-latest", envvar="LATTICE_ALLOW_LATEST", help="Accept :latest and untagged refs."
    ),
]
Username = Annotated[
    str | None,
    typer.Option(
        "--username", envvar="LATTICE_REGISTRY_USERNAME", help="Registry user (OCI refs)."
    ),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the registry password or token from stdin (else LATTICE_REGISTRY_PASSWORD).",
    ),
]

DEFAULT_URL = "nats://127.0.0.1:4222"


def _ops() -> Any:
    from lattice.artifacts import ops

    return ops


def _fail(message: str) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    from lattice.artifacts.fetch import FetchError
    from lattice.client import LatticeError

    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except (RefError, FetchError, NotAComponent, LatticeError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _policy(insecure: list[str] | None, allow_latest: bool) -> FetchPolicy:
    from lattice.artifacts.fetch import FetchPolicy

    hosts = frozenset(h.strip() for item in insecure or [] for h in item.split(",") if h.strip())
    return FetchPolicy(allow_latest=allow_latest, insecure_registries=hosts)


def _credentials(username: str | None, password_stdin: bool) -> Credentials | None:
    from lattice.artifacts.oci import Credentials

    secret = sys.stdin.readline().strip() if password_stdin else None
    secret = secret or os.environ.get("LATTICE_REGISTRY_PASSWORD") or None
    if username is None and secret is None:
        return None
    if username is None:
        return Credentials(token=secret)
    return Credentials(username=username, password=secret)


async def _with_nats(
    ref: str,
    url: str,
    lattice: str,
    work: Callable[[NATS | None], Awaitable[T]],
) -> T:
    """Connect to NATS only when the reference needs the lattice."""
    from lattice.client import LatticeClient

    needs = ref.startswith("lattice://")
    if not needs:
        return await work(None)
    client = await LatticeClient.connect(url, lattice)
    async with client:
        return await work(client.nc)


def _show(d: ops.Described, fmt: Format) -> None:
    body = d.as_json()
    if fmt is not Format.table:
        print(dump(body, fmt), flush=True)
        return
    rows = [(k, str(body.get(k))) for k in ("ref", "digest", "size", *sorted(d.extra))]
    sig = d.signature
    if isinstance(sig, dict):
        expires = sig.get("expires")
        rows += [
            ("signed by", str(sig["issuer"])),
            ("subject", str(sig["subject"])),
            ("name", f"{sig['name']} {sig.get('version') or ''} (rev {sig['revision']})"),
            (
                "expires",
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)) if expires else "never",
            ),
        ]
    else:
        rows.append(("signature", "none (unsigned)" if sig is None else sig))
    for key, value in rows:  # one line each, never wrapped: digests are copied from here
        out.print(f"{key:<17} {value}", markup=False, highlight=False, soft_wrap=True)
    if d.world is not None:
        out.print("world:")
        for name in d.world.imports:
            out.print(f"  import {name};", markup=False, highlight=False, soft_wrap=True)
        for name in d.world.exports:
            out.print(f"  export {name};", markup=False, highlight=False, soft_wrap=True)


def _registry_op(
    ref: str,
    nats_url: str,
    lattice: str,
    insecure: list[str] | None,
    allow_latest: bool,
    username: str | None,
    password_stdin: bool,
    op: Callable[..., Awaitable[T]],
) -> T:
    """Run `op(nc=…, lattice=…, policy=…, credentials=…)` the way every artifact
    command does: policy and credentials from the flags, NATS only for lattice refs."""
    policy = _policy(insecure, allow_latest)
    creds = _credentials(username, password_stdin)
    return _run(
        lambda: _with_nats(
            ref,
            nats_url,
            lattice,
            lambda nc: op(nc=nc, lattice=lattice, policy=policy, credentials=creds),
        )
    )


def push(
    ref: Annotated[str, typer.Argument(help="lattice://NAME:VERSION or registry/repo:tag")],
    file: Annotated[Path, typer.Argument(help="The component (.wasm).")],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    allow_insecure_registry: Insecure = None,
    allow_latest: AllowLatest = False,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
) -> None:
    """Store a component in the lattice or push it to an OCI registry (CNCF Wasm layout)."""
    d = _registry_op(
        ref,
        nats_url,
        lattice,
        allow_insecure_registry,
        allow_latest,
        username,
        password_stdin,
        lambda **kw: _ops().push(ref, file, **kw),
    )
    _show(d, fmt_of(output, as_json))


def pull(
    ref: Annotated[str, typer.Argument(help="A component reference.")],
    save: Annotated[
        Path | None, typer.Option("--save", "-s", metavar="PATH", help="Write the component here.")
    ] = None,
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    allow_insecure_registry: Insecure = None,
    allow_latest: AllowLatest = False,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
) -> None:
    """Fetch a component, check its digest, and show what it is (optionally save it)."""
    d, data = _registry_op(
        ref,
        nats_url,
        lattice,
        allow_insecure_registry,
        allow_latest,
        username,
        password_stdin,
        lambda **kw: _ops().pull(ref, **kw),
    )
    if save is not None:
        try:
            save.write_bytes(data)
        except OSError as exc:
            raise _fail(f"cannot write {save}: {exc.strerror}") from None
    _show(d, fmt_of(output, as_json))


def inspect(
    target: Annotated[str, typer.Argument(help="A component file or reference.")],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    allow_insecure_registry: Insecure = None,
    allow_latest: AllowLatest = False,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
) -> None:
    """Digest, size and WIT world (imports/exports) of a file, lattice artifact or OCI ref."""
    d = _registry_op(
        target,
        nats_url,
        lattice,
        allow_insecure_registry,
        allow_latest,
        username,
        password_stdin,
        lambda **kw: _ops().inspect(target, **kw),
    )
    _show(d, fmt_of(output, as_json))


def _issuer_seed(value: str) -> str:
    """The seed itself, or read from a file named by the value (a seed on the command line
    shows in `ps`: prefer the file or LATTICE_ISSUER_SEED)."""
    path = Path(value)
    if not value.startswith("S") and path.is_file():
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise _fail(f"cannot read the issuer seed from {path}: {exc.strerror}") from None
    return value


def sign(
    file: Annotated[Path, typer.Argument(help="The component (.wasm) to sign.")],
    issuer: Annotated[
        str,
        typer.Option(
            "--issuer",
            envvar="LATTICE_ISSUER_SEED",
            metavar="SEED|FILE",
            help="The issuing account's nkey seed (SA…), or a file holding it.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Component name [default: the file's stem].")
    ] = None,
    version: Annotated[str | None, typer.Option("--version", help="Version, e.g. 0.1.0.")] = None,
    revision: Annotated[int, typer.Option("--rev", min=0, help="Revision number.")] = 0,
    expires_in_days: Annotated[
        float | None,
        typer.Option("--expires-in-days", min=0.0, help="Days until the claims expire [never]."),
    ] = None,
    destination: Annotated[
        Path | None,
        typer.Option(
            "--destination",
            "-d",
            metavar="PATH",
            help="Where to write the signed component [default: FILE_s.wasm beside it].",
        ),
    ] = None,
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
) -> None:
    """Embed signed claims (issuer, subject, name, version, expiry, module hash) in a
    component, for hosts started with `--allowed-issuer`.

    Example: lattice sign echo.wasm --issuer ./account.nk --name echo --version 0.1.0
    """
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}") from None
    seed = _issuer_seed(issuer)
    try:
        signed, _claims = claims.sign(
            data,
            seed,
            name=name or file.stem,
            version=version,
            revision=revision,
            expires_in=expires_in_days * 86400 if expires_in_days is not None else None,
        )
    except (claims.ClaimsError, NotAComponent) as exc:
        raise _fail(f"{file}: {exc}") from None
    finally:
        del seed
    target = destination or file.with_name(f"{file.stem}_s{file.suffix or '.wasm'}")
    try:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(signed)
        tmp.replace(target)
    except OSError as exc:
        raise _fail(f"cannot write {target}: {exc.strerror}") from None
    _show(_ops().describe_bytes(str(target), signed), fmt_of(output, as_json))


def get_artifacts(
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
    output: OutputOpt = Format.table,
    as_json: AsJson = False,
) -> None:
    """What the lattice's object store holds."""

    async def work() -> list[dict[str, Any]]:
        from lattice.client import LatticeClient

        client = await LatticeClient.connect(nats_url, lattice)
        async with client:
            return await _ops().list_artifacts(client.nc, lattice)

    rows = _run(work)
    fmt = fmt_of(output, as_json)
    if fmt is not Format.table:
        print(dump(rows, fmt), flush=True)
        return
    table = Table("REF", "DIGEST", "SIZE", "EXPORTS", "MODIFIED")
    for r in rows:
        exports = ", ".join(e for e in r["exports"] if e != "exports")
        table.add_row(r["ref"], r["digest"][:19] + "…", str(r["size"]), exports, r["modified"][:19])
    out.print(table)


def delete_artifact(
    ref: Annotated[str, typer.Argument(help="lattice://NAME:VERSION")],
    nats_url: NatsUrl = DEFAULT_URL,
    lattice: LatticeName = "default",
) -> None:
    """Remove an artifact from the lattice; refused while a component or app uses it."""

    async def work() -> None:
        from lattice.client import LatticeClient

        client = await LatticeClient.connect(nats_url, lattice)
        async with client:
            await _ops().delete(client.nc, lattice, ref)

    _run(work)
    out.print(f"deleted {ref}")


def register(app: typer.Typer, get_app: typer.Typer, delete_app: typer.Typer) -> None:
    """Add the artifact commands to the `lattice` CLI."""
    app.command("push")(push)
    app.command("pull")(pull)
    app.command("inspect")(inspect)
    app.command("sign")(sign)
    get_app.command("artifacts")(get_artifacts)
    delete_app.command("artifact")(delete_artifact)
