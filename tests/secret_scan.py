"""Find secrets in captured output: each secret's value and the forms it could leak in.

A `Secret` knows the shapes its value takes on the way to a log line: a NATS seed as
itself, as its 32 raw bytes (hex, base64, base32) and as the nkey private key (`P…`)
the library derives; a JWT whole and by its signature; a password or token as itself,
base64, URL-quoted, and inside an HTTP Basic `user:pass` header. `scan()` also looks for
what a secret of this lattice looks like without knowing it (a seed the host minted for
a provider, any user JWT), so a leak of a secret the test never saw is found too.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import nkeys

# An nkey seed: 'S', the key type, then base32 (58 characters in all).
SEED_PATTERN = re.compile(r"\bS[OAUNCXP][A-Z2-7]{56}\b")
# A NATS JWT: header `{"typ":"JWT","alg":"ed25519-nkey"}` base64url, claims, signature.
JWT_PATTERN = re.compile(r"eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ\.[\w-]+\.[\w-]+")


@dataclass(frozen=True)
class Secret:
    name: str
    value: str
    kind: str = "password"  # password | seed | jwt
    username: str = ""  # for a password sent as HTTP Basic

    def forms(self) -> dict[str, str]:
        """Every shape of the value to look for, by a name that says which."""
        out = {"value": self.value}
        if self.kind == "seed":
            _, raw = nkeys.decode_seed(self.value.encode())
            kp = nkeys.from_seed(self.value.encode())
            out |= {
                "raw hex": raw.hex(),
                "raw base64": base64.b64encode(raw).decode(),
                "raw base32": base64.b32encode(raw).decode().rstrip("="),
                "private key": kp.private_key.decode(),
            }
        elif self.kind == "jwt":
            out["signature"] = self.value.rsplit(".", 1)[1]
        else:
            out["base64"] = base64.b64encode(self.value.encode()).decode()
            quoted = urllib.parse.quote(self.value, safe="")
            if quoted != self.value:
                out["url-quoted"] = quoted
            if self.username:
                basic = base64.b64encode(f"{self.username}:{self.value}".encode()).decode()
                out["basic auth"] = basic
        return out


def creds_secrets(name: str, creds_text: str) -> list[Secret]:
    """The JWT and the seed of a `.creds` file, each line of it a secret of its own."""
    jwt = creds_text.split("-----BEGIN NATS USER JWT-----\n")[1].split("\n")[0]
    seed = creds_text.split("-----BEGIN USER NKEY SEED-----\n")[1].split("\n")[0]
    return [Secret(f"{name} JWT", jwt, "jwt"), Secret(f"{name} seed", seed, "seed")]


@dataclass(frozen=True)
class Finding:
    corpus: str
    secret: str
    form: str
    context: str

    def __str__(self) -> str:
        return f"{self.secret} ({self.form}) in {self.corpus}: …{self.context}…"


def _context(text: str, start: int, end: int) -> str:
    """Where it was found, with the secret itself masked (the report must not leak it)."""
    before, after = text[max(0, start - 60) : start], text[end : end + 60]
    return (before + "<SECRET>" + after).replace("\n", "⏎")


def scan(corpora: Mapping[str, str], secrets: Iterable[Secret]) -> list[Finding]:
    """Every occurrence of any form of any secret, and of anything seed- or JWT-shaped."""
    found: list[Finding] = []
    needles = [(s.name, form, text) for s in secrets for form, text in s.forms().items()]
    for corpus, text in corpora.items():
        for secret, form, needle in needles:
            at = text.find(needle)
            if at >= 0:
                found.append(Finding(corpus, secret, form, _context(text, at, at + len(needle))))
        for label, pattern in (("an nkey seed", SEED_PATTERN), ("a NATS JWT", JWT_PATTERN)):
            for m in pattern.finditer(text):
                found.append(Finding(corpus, label, "pattern", _context(text, *m.span())))
    return found
