"""`lattice up --secure`: the keys and server config of a secured lattice, made once.

Under `{data_dir}/secure/` (mode 0700, files 0600): an operator, a system account and
the lattice's account with a signing key, their JWTs in a nats-server config
(`nats.conf`: operator mode, a memory resolver with both accounts preloaded, TLS
required), a private CA and the server's certificate for this machine's names and
addresses (`tls/`, lattice/tlsca.py), a user for this host (`host.creds`, with the
account's signing key `signing.nk` to mint each provider its own user) and one for the
CLI (`cli.creds`). `lattice secure join NAME` mints each further host a user of its own
(`hosts/NAME.creds`), so one machine's creds can be revoked without the others'.
Made on the first `--secure` start and reused afterwards, so creds handed to other
machines stay valid; a directory made before TLS existed gets its CA on the next start.
Nothing here is printed but paths.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nkeys

from lattice import natsjwt, tlsca


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
    def tls(self) -> tlsca.ServerTls:
        tls = self.directory / "tls"
        return tlsca.ServerTls(tls / "ca.pem", tls / "server.pem", tls / "server-key.pem")

    @property
    def port(self) -> int:
        """The port the secured embedded server listens on (its config's first line)."""
        listen = self.server_config.read_text().splitlines()[0].removeprefix("listen:")
        return int(listen.rsplit(":", 1)[1])

    @property
    def account(self) -> str:
        return json.loads((self.directory / "account.json").read_text())["account"]

    def join_instructions(self, url: str) -> str:
        """What to tell the operators of other machines (paths only, never a secret)."""
        d, ca = self.directory, self.tls.ca
        return (
            f"secured lattice: NATS at {url} (operator mode, TLS, account "
            f"{self.account[:12]}…)\n"
            f"  other hosts: `lattice secure join NAME --data-dir {d.parent}` mints a user\n"
            f"    for each; copy {d / 'hosts'}/NAME.creds, {d / 'signing.nk'} and {ca}\n"
            "    there, then run"
            f" lattice up --nats-url {url} --creds NAME.creds --tls-ca ca.pem "
            "--account-signing-key signing.nk\n"
            f"  the CLI: lattice ctx set secure --nats-url {url} --creds {self.cli_creds}"
            f" --tls-ca {ca}\n"
            "  (keep the .creds and signing.nk secret: they let a machine join as a host)"
        )

    def mint_host(self, name: str) -> Path:
        """A user of the lattice's account for one more host: `hosts/NAME.creds`."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
            raise ValueError(
                f"host name {name!r}: use letters, digits, '-' and '_' (up to 64), "
                "starting with a letter or digit"
            )
        seed = self.signing_key.read_text().strip()
        signing = natsjwt.Key.from_seed(seed, "A")
        path = self.directory / "hosts" / f"{name}.creds"
        if path.exists():
            raise ValueError(f"{path} exists already: pick another name, or remove it first")
        path.parent.mkdir(mode=0o700, exist_ok=True)
        user = natsjwt.Key.new(nkeys.PREFIX_BYTE_USER)
        jwt = natsjwt.user_jwt(signing, self.account, user.public, f"host-{name}")
        _write(path, natsjwt.creds(jwt, user.seed))
        return path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def ensure(directory: Path, listen: str, names: list[str]) -> SecureLattice:
    """The secured lattice in `directory`, made now if it is not there yet; `names` are
    this machine's host names and addresses, for the server certificate."""
    found = SecureLattice(directory)
    if found.server_config.is_file() and found.host_creds.is_file():
        if not found.tls.ca.is_file():  # made before --secure had TLS: add it now
            tls = tlsca.make(directory / "tls", names)
            _write(found.server_config, found.server_config.read_text() + tls.server_block())
        return found
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    made = natsjwt.OperatorSetup.new()
    tls = tlsca.make(directory / "tls", names)
    _write(
        found.server_config,
        f"listen: {listen}\n"
        "jetstream: enabled\n"  # its store_dir comes from `-sd` (a duplicate is an error)
        + made.server_config()
        + tls.server_block(),
    )
    _write(found.host_creds, made.user_creds("hosts"))
    _write(found.cli_creds, made.user_creds("cli"))
    _write(found.signing_key, made.signing.seed + "\n")
    _write(directory / "operator.nk", made.operator.seed + "\n")  # to edit the accounts later
    _write(directory / "account.json", json.dumps({"account": made.account.public}))
    return found
