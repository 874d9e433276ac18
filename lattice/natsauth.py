"""How a process proves who it is to NATS, and how it reaches NATS over TLS.

One `NatsAuth` for every connection a process makes (host, liveness beat, controller,
CLI, and the providers a host starts): a `.creds` file (user JWT + nkey seed, NATS's
decentralized auth), or a file holding a user nkey seed (static nkey users in the
server's config), and optionally TLS with a CA to check the server against and a
client certificate. Only *paths* are kept and shown; the secrets stay in their files
and reach nats-py directly.

`explain` turns what nats-py and `ssl` raise into one sentence that names what is
missing or wrong (the credentials, the CA, the certificate problem), instead of a
class name or a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

ENV = {
    "creds": "LATTICE_CREDS",
    "nkey": "LATTICE_NATS_NKEY",
    "tls_ca": "LATTICE_TLS_CA",
    "tls_cert": "LATTICE_TLS_CERT",
    "tls_key": "LATTICE_TLS_KEY",
}
FLAGS = {
    "creds": "--creds",
    "nkey": "--nkey",
    "tls_ca": "--tls-ca",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
}


@dataclass(frozen=True)
class NatsAuth:
    creds: Path | None = None
    nkey: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        for name in FLAGS:
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{FLAGS[name]} {path}: no such file")
        if self.creds is not None and self.nkey is not None:
            raise ValueError("--creds and --nkey are two ways to say who you are: give one")
        if self.creds is not None and b"BEGIN NATS USER JWT" not in Path(self.creds).read_bytes():
            raise ValueError(f"--creds {self.creds} is not a .creds file (no user JWT in it)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together (a client certificate)")

    @classmethod
    def from_values(cls, **values: str | Path | None) -> NatsAuth:
        """From flags, falling back to the LATTICE_* variables for those not given."""
        picked: dict[str, Path | None] = {}
        for name, env in ENV.items():
            value = values.get(name) or os.environ.get(env) or None
            picked[name] = Path(value).expanduser() if value else None
        return cls(**picked)

    @property
    def anonymous(self) -> bool:
        return self.creds is None and self.nkey is None

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        paths = self.tls_paths()
        return tls_context(**paths) if paths is not None else None

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`."""
        kw: dict[str, Any] = {}
        if self.creds is not None:
            kw["user_credentials"] = str(self.creds)
        if self.nkey is not None:
            kw["nkeys_seed"] = str(self.nkey)
        ctx = self.ssl_context()
        if ctx is not None:
            kw["tls"] = ctx
        return kw

    def credentials(self) -> dict[str, str | None] | None:
        """`{jwt, seed}` read from the files, for a provider's start-up data (the SDK's
        `NatsCredentials`); None when anonymous."""
        if self.creds is not None:
            text = Path(self.creds).read_text()
            return {
                "jwt": _armored(text, "NATS USER JWT"),
                "seed": _armored(text, "USER NKEY SEED"),
            }
        if self.nkey is not None:
            return {"jwt": None, "seed": Path(self.nkey).read_text().strip()}
        return None

    def tls_paths(self) -> dict[str, str] | None:
        """`{ca, cert, key}` (those set) for a provider on this machine; None without TLS."""
        if not self.tls:
            return None
        named = {"ca": self.tls_ca, "cert": self.tls_cert, "key": self.tls_key}
        return {k: str(v) for k, v in named.items() if v is not None}

    def account(self) -> str | None:
        """The account of the user in `--creds` (None without a .creds file)."""
        if self.creds is None:
            return None
        from lattice.natsjwt import account_of

        jwt = _armored(Path(self.creds).read_text(), "NATS USER JWT")
        return account_of(jwt) if jwt else None


ANONYMOUS = NatsAuth()


def tls_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A client TLS context: the server checked against `ca` (else the system's CAs),
    with a client certificate when `cert` and `key` are given. Also what a provider
    builds from the paths in its start-up data (`tls_paths`)."""
    ctx = ssl.create_default_context(cafile=ca)
    if cert and key:
        ctx.load_cert_chain(cert, key)
    return ctx


def _armored(text: str, label: str) -> str | None:
    """The body between `-----BEGIN {label}-----` and its END line in a .creds file."""
    start = text.find(f"BEGIN {label}")
    if start < 0:
        return None
    body = text[text.index("\n", start) + 1 :]
    return body[: body.index("---")].strip() or None


def explain(exc: BaseException, url: str, auth: NatsAuth) -> str:
    """One sentence for a failed connection, naming what is missing or wrong."""
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    cert = _certificate_problem(exc)
    if cert is not None:
        against = f"the CA in {auth.tls_ca}" if auth.tls_ca else "the system's CAs"
        return (
            f"TLS to NATS at {url} failed: the server's certificate {cert} "
            f"(checked against {against}; set --tls-ca)"
        )
    if "authorization violation" in lowered or "authentication" in lowered:
        if auth.anonymous:
            return (
                f"NATS at {url} refused the connection: authorization violation. This "
                "process gave no credentials: pass --creds FILE (a .creds file) or --nkey "
                "FILE (a user nkey seed), or set LATTICE_CREDS / LATTICE_NATS_NKEY"
            )
        given = f"--creds {auth.creds}" if auth.creds else f"--nkey {auth.nkey}"
        return (
            f"NATS at {url} refused the credentials in {given}: authorization violation "
            "(unknown user, wrong account or expired JWT)"
        )
    if "tls" in lowered and "required" in lowered:
        return f"NATS at {url} requires TLS: pass --tls-ca FILE (and a tls:// URL)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS to NATS at {url} failed: {exc.reason or text}"
    return f"cannot connect to NATS at {url}: {text}"


def _certificate_problem(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"did not verify: {current.verify_message or current.reason}"
        current = current.__cause__ or current.__context__
    if "certificate verify failed" in str(exc):
        return "did not verify: " + str(exc).split("certificate verify failed:")[-1].strip(" )]")
    return None


class NatsConnectError(ConnectionError):
    """The first connection failed; the message is `explain`'s sentence."""


def server_list(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` → each server, so a client can start on any node of
    a cluster (nats-py takes a list; a comma-joined string is not one URL)."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise ValueError(f"no NATS server URL in {url!r}")
    return servers


async def connect(
    url: str,
    auth: NatsAuth = ANONYMOUS,
    *,
    connect_timeout: float = 5.0,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    **options: Any,
) -> NATS:
    """`nats.connect` with `auth`, bounded: a client that reconnects forever would also
    retry a refused login or a bad certificate forever, so the first connection gets
    `connect_timeout` (twice, for TLS) and then fails with the first error explained."""
    first: list[BaseException] = []
    fatal = asyncio.Event()  # a refused login or a bad certificate: no retry will help

    async def on_error(exc: Exception) -> None:
        if not first:
            first.append(exc)
        if not connected and _is_fatal(exc):
            fatal.set()
        if error_cb is not None and connected:
            await error_cb(exc)

    connected = False
    attempt = asyncio.ensure_future(
        nats.connect(
            server_list(url),
            connect_timeout=connect_timeout,
            error_cb=on_error,
            **auth.connect_kwargs(),
            **options,
        )
    )
    gave_up = asyncio.ensure_future(fatal.wait())
    try:
        await asyncio.wait(
            {attempt, gave_up}, timeout=connect_timeout * 2 + 1, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gave_up.cancel()
    if not attempt.done():
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
        raise NatsConnectError(explain(first[0] if first else TimeoutError(), url, auth))
    try:
        nc = attempt.result()
    except Exception as exc:
        raise NatsConnectError(explain(first[0] if first else exc, url, auth)) from None
    connected = True
    return nc


def _is_fatal(exc: BaseException) -> bool:
    return _certificate_problem(exc) is not None or "authorization violation" in str(exc).lower()
