"""Signed components: claims embedded in a custom section, signed with an account nkey.

`lattice sign FILE --issuer SEED` appends one custom section named `jwt` (the name
wasmCloud's wascap uses) holding a JWT: header `{"typ": "jwt", "alg": "Ed25519"}`, and
claims `iss` (the account's public key, `A…`), `sub` (the component's own public key,
`M…`), `iat`, optional `exp`, `jti`, and under `wascap` its `name`, `ver`, `rev` and
`hash`: the upper-case hex SHA-256 of the component *without* its `jwt` sections, so a
signature survives neither a changed byte nor a re-signing by someone else. The
signature is Ed25519 over `header.payload`, by the issuer's nkey.

A host with an issuer allow-list (`lattice up --allowed-issuer A…`) runs only
components whose claims verify (`verify`): signed, untampered, unexpired, by an issuer
on the list. The check runs on the fetched bytes, before anything is compiled.

Hand-written: the JWT is three base64url parts and one Ed25519 signature (nkeys and
PyNaCl do the cryptography); no JWT library signs with nkeys, and the custom section
is one length-prefixed record at the end of the binary.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

from lattice import natsjwt
from lattice.artifacts.wasm import NotAComponent, _Reader, check_component

SECTION = "jwt"
PREFIX_BYTE_MODULE = 12 << 3  # "M…", as nkeys-rs and wascap name a module's key
HEADER = {"typ": "jwt", "alg": "Ed25519"}


class ClaimsError(ValueError):
    """Why a component's claims are missing, invalid or not trusted (names the reason)."""


@dataclass(frozen=True)
class Claims:
    issuer: str
    subject: str
    name: str
    version: str | None
    revision: int
    issued_at: int
    expires: int | None
    module_hash: str
    token_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "subject": self.subject,
            "name": self.name,
            "version": self.version,
            "revision": self.revision,
            "issued_at": self.issued_at,
            "expires": self.expires,
            "hash": self.module_hash,
        }


# -- the binary ---------------------------------------------------------------------------


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    """(the binary without its `jwt` custom sections, the payloads of those sections)."""
    check_component(data, "component")
    view = memoryview(data)
    top = _Reader(view, 8)
    kept, tokens = [bytes(view[:8])], []
    while top.pos < top.end:
        start = top.pos
        section = top.byte()
        size = top.u32()
        body = top.pos
        if body + size > top.end:
            raise NotAComponent("component binary ends inside a section")
        top.pos = body + size
        if section == 0:
            inner = _Reader(view, body, body + size)
            if inner.name() == SECTION:
                tokens.append(bytes(view[inner.pos : body + size]))
                continue
        kept.append(bytes(view[start : top.pos]))
    return b"".join(kept), tokens


def module_hash(stripped: bytes) -> str:
    return hashlib.sha256(stripped).hexdigest().upper()


def _section(payload: bytes) -> bytes:
    name = SECTION.encode()
    content = _leb(len(name)) + name + payload
    return b"\x00" + _leb(len(content)) + content


# -- keys ---------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public(prefix: int, raw: bytes) -> str:
    body = bytes([prefix]) + raw
    return base64.b32encode(body + nkeys.crc16_checksum(body)).decode().rstrip("=")


def new_module_key() -> str:
    """A fresh public `M…` key naming a component (its private half is not kept: the
    subject identifies, the issuer signs)."""
    key = nacl.signing.SigningKey(os.urandom(32)).verify_key
    return _public(PREFIX_BYTE_MODULE, bytes(key))


def account_key(public: str) -> nacl.signing.VerifyKey:
    """The verify key of an `A…` account public key; ClaimsError naming what is wrong."""
    try:
        return natsjwt.verify_key(public, nkeys.PREFIX_BYTE_ACCOUNT, "an account public key (A…)")
    except natsjwt.JwtError as exc:
        raise ClaimsError(str(exc)) from None


def _issuer(seed: str) -> nkeys.KeyPair:
    try:
        kp = nkeys.from_seed(seed.strip().encode())
    except Exception:
        raise ClaimsError("the issuer seed is not a valid nkey seed") from None
    if not kp.public_key.decode().startswith("A"):
        kp.wipe()
        raise ClaimsError("the issuer seed must be an account seed (SA…)")
    return kp


# -- sign and verify ----------------------------------------------------------------------


def sign(
    data: bytes,
    issuer_seed: str,
    *,
    name: str,
    version: str | None = None,
    revision: int = 0,
    expires_in: float | None = None,
    subject: str | None = None,
    now: float | None = None,
) -> tuple[bytes, Claims]:
    """The component with fresh claims (any earlier `jwt` sections replaced)."""
    stripped, _old = split(data)
    kp = _issuer(issuer_seed)
    issued = int(now if now is not None else time.time())
    payload: dict[str, Any] = {
        "jti": _b64(os.urandom(16)),
        "iat": issued,
        "iss": kp.public_key.decode(),
        "sub": subject or new_module_key(),
        "wascap": {
            "name": name,
            "hash": module_hash(stripped),
            "rev": revision,
            **({"ver": version} if version else {}),
        },
    }
    if expires_in is not None:
        payload["exp"] = issued + int(expires_in)
    signing_input = f"{_b64(json.dumps(HEADER).encode())}.{_b64(json.dumps(payload).encode())}"
    try:
        signature = kp.sign(signing_input.encode())
    finally:
        kp.wipe()
    token = f"{signing_input}.{_b64(signature)}".encode()
    return stripped + _section(token), _claims(payload)


def _claims(payload: dict[str, Any]) -> Claims:
    try:
        cap = payload["wascap"]
        return Claims(
            issuer=str(payload["iss"]),
            subject=str(payload["sub"]),
            name=str(cap.get("name", "")),
            version=cap.get("ver"),
            revision=int(cap.get("rev", 0)),
            issued_at=int(payload.get("iat", 0)),
            expires=int(payload["exp"]) if payload.get("exp") is not None else None,
            module_hash=str(cap["hash"]),
            token_id=str(payload.get("jti", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ClaimsError(f"malformed claims: {exc}") from None


def read(data: bytes) -> Claims | None:
    """The claims a component carries, signature and hash checked; None when unsigned."""
    stripped, tokens = split(data)
    if not tokens:
        return None
    if len(tokens) > 1:
        raise ClaimsError(f"{len(tokens)} jwt sections: a component carries one")
    try:
        head_b64, body_b64, sig_b64 = tokens[0].decode("ascii").split(".")
        header = json.loads(_unb64(head_b64))
        payload = json.loads(_unb64(body_b64))
        signature = _unb64(sig_b64)
    except (ValueError, UnicodeDecodeError):
        raise ClaimsError("the jwt section is not a JWT") from None
    if not isinstance(header, dict) or header.get("alg") != "Ed25519":
        raise ClaimsError(f"unsupported JWT algorithm {header.get('alg')!r}, not Ed25519")
    if not isinstance(payload, dict):
        raise ClaimsError("the JWT's claims are not an object")
    claims = _claims(payload)
    try:
        account_key(claims.issuer).verify(f"{head_b64}.{body_b64}".encode(), signature)
    except nacl.exceptions.BadSignatureError:
        raise ClaimsError(f"the signature does not verify for issuer {claims.issuer}") from None
    if claims.module_hash != module_hash(stripped):
        raise ClaimsError("tampered: the component's hash does not match its signed claims")
    return claims


def verify(data: bytes, allowed_issuers: Iterable[str], now: float | None = None) -> Claims:
    """The claims, when the component may run under this allow-list; else ClaimsError
    saying why (unsigned, tampered, expired, not yet valid, or an issuer not allowed)."""
    claims = read(data)
    if claims is None:
        raise ClaimsError("unsigned: this host runs only components signed by an allowed issuer")
    allowed = set(allowed_issuers)
    if claims.issuer not in allowed:
        raise ClaimsError(f"issuer {claims.issuer} is not allowed on this host")
    moment = time.time() if now is None else now
    if claims.expires is not None and claims.expires <= moment:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims.expires))
        raise ClaimsError(f"expired: the claims expired at {when}")
    return claims


def check_issuer(public: str) -> str:
    """An `--allowed-issuer` value, checked (ClaimsError naming what is wrong)."""
    account_key(public.strip())
    return public.strip()
