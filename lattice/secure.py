"""`lattice up --secure`: the keys and server config of a secured lattice, made once.

Under `{data_dir}/secure/` (mode 0700, files 0600): an operator, a system account and
the lattice's account with a signing key, their JWTs in a nats-server config
(`nats.conf`: operator mode, a memory resolver with both accounts preloaded), a user
for the hosts (`host.creds`, with the account's signing key `signing.nk` to mint each
provider its own user) and one for the CLI (`cli.creds`). Made on the first
`--secure` start and reused afterwards, so creds handed to other machines stay valid.
Nothing here is printed but paths.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lattice import natsjwt


@dataclass(frozen=True)
class SecureLattice:
    directory: Path

    @property
    def server_config(self) -> Path:
        return self.directory / "nats.conf"

    @property
    def host_creds(self) -> Path:
        return self.directory / "host.creds"

    @property
    def cli_creds(self) -> Path:
        return self.directory / "cli.creds"

    @property
    def signing_key(self) -> Path:
        return self.directory / "signing.nk"

    @property
    def account(self) -> str:
        return json.loads((self.directory / "account.json").read_text())["account"]

    def join_instructions(self, url: str) -> str:
        """What to tell the operators of other machines (paths only, never a secret)."""
        d = self.directory
        return (
            f"secured lattice: NATS at {url} (operator mode, account {self.account[:12]}…)\n"
            f"  other hosts: copy {d / 'host.creds'} and {d / 'signing.nk'} there, then\n"
            f"    lattice up --nats-url {url} --creds host.creds --account-signing-key signing.nk\n"
            f"  the CLI: lattice ctx set secure --nats-url {url} --creds {self.cli_creds}\n"
            "  (keep both files secret: they let a machine join as a host)"
        )


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def ensure(directory: Path, listen: str) -> SecureLattice:
    """The secured lattice in `directory`, made now if it is not there yet."""
    found = SecureLattice(directory)
    if found.server_config.is_file() and found.host_creds.is_file():
        return found
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    made = natsjwt.OperatorSetup.new()
    _write(
        found.server_config,
        f"listen: {listen}\n"
        "jetstream: enabled\n"  # its store_dir comes from `-sd` (a duplicate is an error)
        + made.server_config(),
    )
    _write(found.host_creds, made.user_creds("hosts"))
    _write(found.cli_creds, made.user_creds("cli"))
    _write(found.signing_key, made.signing.seed + "\n")
    _write(directory / "operator.nk", made.operator.seed + "\n")  # to edit the accounts later
    _write(directory / "account.json", json.dumps({"account": made.account.public}))
    return found
