"""`lattice secure …`: the keys of a lattice that `lattice up --secure` made."""

from __future__ import annotations

from typing import Annotated

import typer

from lattice.cli.common import usage
from lattice.cli.groups import app
from lattice.cli.up import DataDir, data_dir_of, machine_address

secure_app = typer.Typer(
    help="Identities for a lattice made by `lattice up --secure`.", no_args_is_help=True
)
app.add_typer(secure_app, name="secure")


@secure_app.command("join")
def join(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The joining host's name.")],
    data_dir: DataDir = None,
) -> None:
    """Mint a NATS user of its own for one more host, and print how it joins.

    Each host gets its own user, so one machine's access can be revoked alone.

    Example: lattice secure join edge-1
    """
    from lattice import secure

    made = secure.SecureLattice(data_dir_of(data_dir) / "secure")
    if not made.signing_key.is_file():
        raise usage(
            f"no secured lattice under {made.directory}: start one with `lattice up --secure`"
        )
    try:
        path = made.mint_host(name)
    except ValueError as exc:
        raise usage(str(exc)) from None
    url = f"nats://{machine_address()}:{made.port}"
    print(f"{path}")
    print(
        f"copy it, {made.signing_key} and {made.tls.ca} to {name}, then run there:\n"
        f"  lattice up --nats-url {url} --creds {path.name} "
        f"--tls-ca ca.pem --account-signing-key signing.nk"
    )
