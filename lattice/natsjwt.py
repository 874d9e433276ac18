"""NATS decentralized auth: operator, account and user JWTs, `.creds` files, and the
permissions each provider gets.

A secured lattice is one NATS *account*. Its hosts hold an account **signing key**
(`lattice up --account-signing-key FILE`) and mint a user JWT for every provider they
start, with a fresh nkey and permissions that name only that provider's subjects
(`provider_permissions`): it may serve its own RPC and control subjects, reply to
requests, ask its own host to resolve a link, and call only what its kind calls (the
http-server its components' `.http` subjects, messaging its components' message
handler, the JetStream providers the JetStream API but never the lattice's own
buckets). It cannot publish on control subjects or on another target's RPC subjects,
and it cannot act as its host: wasmCloud v1 hands every provider the host's own creds.

Hand-written: the JWT layout is NATS's (`github.com/nats-io/jwt` v2: header
`{"typ":"JWT","alg":"ed25519-nkey"}`, claims with a `nats` object, signed with an nkey);
the nkeys package signs, and no Python package issues these claims. `nsc` does the
same with a Go binary that pip cannot install.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import nacl.signing
import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED = -1
_ACCOUNT_LIMITS = {
    "subs": UNLIMITED,
    "data": UNLIMITED,
    "payload": UNLIMITED,
    "imports": UNLIMITED,
    "exports": UNLIMITED,
    "wildcards": True,
    "conn": UNLIMITED,
    "leaf": UNLIMITED,
}
_JETSTREAM_LIMITS = {
    "mem_storage": UNLIMITED,
    "disk_storage": UNLIMITED,
    "streams": UNLIMITED,
    "consumer": UNLIMITED,
    "max_ack_pending": UNLIMITED,
    "mem_max_stream_bytes": UNLIMITED,
    "disk_max_stream_bytes": UNLIMITED,
    "max_bytes_required": False,
}


class JwtError(ValueError):
    """A key or JWT that cannot be used; the message names which and why."""


@dataclass(frozen=True)
class Key:
    """An nkey: its seed (secret) and public key."""

    seed: str
    public: str

    @classmethod
    def new(cls, prefix: int) -> Key:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        kp = nkeys.from_seed(seed)
        try:
            return cls(seed.decode(), kp.public_key.decode())
        finally:
            kp.wipe()

    @classmethod
    def from_seed(cls, seed: str, expect: str) -> Key:
        """`expect` is the public key's first letter (O, A, U)."""
        try:
            kp = nkeys.from_seed(seed.strip().encode())
        except Exception:
            raise JwtError("not a valid nkey seed") from None
        try:
            public = kp.public_key.decode()
        finally:
            kp.wipe()
        if not public.startswith(expect):
            raise JwtError(f"the seed is for a {public[0]}… key, not {expect}…")
        return cls(seed.strip(), public)

    def sign(self, data: bytes) -> bytes:
        kp = nkeys.from_seed(self.seed.encode())
        try:
            return kp.sign(data)
        finally:
            kp.wipe()

    def __repr__(self) -> str:  # never show the seed
        return f"Key({self.public})"


def verify_key(public: str, prefix: int, what: str) -> nacl.signing.VerifyKey:
    """The Ed25519 key of an nkey public key that must be `what` ("an account public key
    (A…)"); JwtError naming what is wrong."""
    shown = f"{public[:12]}…" if len(public) > 12 else repr(public)
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (binascii.Error, ValueError, TypeError):
        raise JwtError(f"{shown} is not an nkey public key") from None
    if len(raw) != 35 or raw[0] != prefix:
        raise JwtError(f"{shown} is not {what}")
    if nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
        raise JwtError(f"{shown}: bad checksum")
    return nacl.signing.VerifyKey(raw[1:-2])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def encode(signer: Key, claims: dict[str, Any], now: float | None = None) -> str:
    """A JWT of `claims` signed by `signer` (`iss` is set to the signer)."""
    body = {"iat": int(now if now is not None else time.time()), **claims, "iss": signer.public}
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    body["jti"] = base64.b32encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(HEADER).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (to read an account or a name from one's own creds)."""
    try:
        part = token.strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        raise JwtError("not a JWT") from None
    if not isinstance(claims, dict):
        raise JwtError("the JWT's claims are not an object")
    return claims


def operator_jwt(operator: Key, system_account: str, name: str = "lattice") -> str:
    return encode(
        operator,
        {
            "sub": operator.public,
            "name": name,
            "nats": {"type": "operator", "version": 2, "system_account": system_account},
        },
    )


def account_jwt(
    operator: Key, account: str, name: str, *, signing_keys: list[str], jetstream: bool
) -> str:
    limits = {**_ACCOUNT_LIMITS, **(_JETSTREAM_LIMITS if jetstream else {})}
    return encode(
        operator,
        {
            "sub": account,
            "name": name,
            "nats": {
                "type": "account",
                "version": 2,
                "limits": limits,
                "signing_keys": signing_keys,
                "default_permissions": {"pub": {}, "sub": {}},
            },
        },
    )


def user_jwt(
    signing_key: Key,
    account: str,
    user: str,
    name: str,
    permissions: dict[str, Any] | None = None,
    expires_in: float | None = None,
) -> str:
    """A user of `account`, issued by one of its signing keys."""
    claims: dict[str, Any] = {
        "sub": user,
        "name": name,
        "nats": {
            "type": "user",
            "version": 2,
            "issuer_account": account,
            "subs": UNLIMITED,
            "data": UNLIMITED,
            "payload": UNLIMITED,
            **(permissions or {}),
        },
    }
    if expires_in is not None:
        claims["exp"] = int(time.time() + expires_in)
    return encode(signing_key, claims)


@dataclass(frozen=True)
class OperatorSetup:
    """An operator, a system account and the lattice's account with one signing key: what
    `nsc` would make for a lattice, here in memory."""

    operator: Key
    system: Key
    account: Key
    signing: Key

    @classmethod
    def new(cls) -> OperatorSetup:
        op, acc = nkeys.PREFIX_BYTE_OPERATOR, nkeys.PREFIX_BYTE_ACCOUNT
        return cls(Key.new(op), Key.new(acc), Key.new(acc), Key.new(acc))

    def server_config(self) -> str:
        """nats-server config lines: operator mode, both accounts preloaded in a memory
        resolver (listen and JetStream settings are the caller's)."""
        sys_jwt = account_jwt(
            self.operator, self.system.public, "SYS", signing_keys=[], jetstream=False
        )
        acc_jwt = account_jwt(
            self.operator,
            self.account.public,
            "lattice",
            signing_keys=[self.signing.public],
            jetstream=True,
        )
        return (
            f"operator: {operator_jwt(self.operator, self.system.public)}\n"
            f"system_account: {self.system.public}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n  {self.system.public}: {sys_jwt}\n"
            f"  {self.account.public}: {acc_jwt}\n}}\n"
        )

    def user_creds(self, name: str, permissions: dict[str, Any] | None = None) -> str:
        """A `.creds` file's text for a fresh user of the lattice's account."""
        user = Key.new(nkeys.PREFIX_BYTE_USER)
        jwt = user_jwt(self.signing, self.account.public, user.public, name, permissions)
        return creds(jwt, user.seed)


def creds(jwt: str, seed: str) -> str:
    """A `.creds` file's text, as nsc writes it."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


def account_of(user_jwt_text: str) -> str:
    """The account a user JWT belongs to (its `issuer_account`, else its issuer)."""
    claims = decode_claims(user_jwt_text)
    nats_claims = claims.get("nats") or {}
    account = nats_claims.get("issuer_account") or claims.get("iss")
    if not isinstance(account, str) or not account.startswith("A"):
        raise JwtError("the user JWT names no account")
    return account


# -- what a provider may do ---------------------------------------------------------------

JETSTREAM_REFS = ("builtin://keyvalue-nats", "builtin://blobstore-nats")
LATTICE_BUCKETS = {
    "LATTICEDATA": "KV",  # links (their secrets included)
    "CONFIGDATA": "KV",  # named config and secrets
    "CONTROLLER_APPS": "KV",  # manifests
    "LATTICE_ARTIFACTS": "OBJ",  # component bytes
    "LATTICE_COMPILED": "OBJ",  # compiled code: writing it would be code execution
}
"""The lattice state a JetStream provider must not touch (`{NAME}_{lattice}`). Kept to
what matters: every entry lengthens the JWT, and the server caps a CONNECT line at 4 KiB
by default (`max_control_line`)."""


def provider_inbox(lattice: str, provider_id: str) -> str:
    """The inbox prefix a provider's connection uses: its replies, nobody else's."""
    return f"_INBOX_{lattice}_{provider_id}"


def provider_permissions(
    lattice: str, provider_id: str, host_id: str, image_ref: str
) -> dict[str, Any]:
    inbox = provider_inbox(lattice, provider_id)
    # its own subjects: rpc (and e.g. the http-client's http.out), control, its inbox
    sub = [f"{lattice}.{provider_id}.>", f"wasmbus.rpc.{lattice}.{provider_id}.>", f"{inbox}.>"]
    pub = [f"wasmbus.ctl.v1.{lattice}.link.resolve.{host_id}", "_INBOX.>"]
    deny_pub: list[str] = []
    if image_ref == "builtin://http-server":
        pub.append(f"{lattice}.*.http")
    elif image_ref == "builtin://messaging-nats":
        pub.append(f"{lattice}.*.rpc.wasmcloud:messaging/handler.*")
        sub.append(">")  # it relays subscriptions its links name (replies are its own)
        pub.append(">")
        deny_pub += ["wasmbus.>", "$JS.API.>", "$KV.>", "$O.>"]
    if image_ref in JETSTREAM_REFS:
        pub += ["$JS.API.>", "$KV.>", "$O.>", "$JS.ACK.>", "$JS.FC.>"]
        for bucket, kind in LATTICE_BUCKETS.items():  # the lattice's state is not its
            name = f"{bucket}_{lattice}"
            stream = f"{kind}_{name}"
            direct = f"$KV.{name}.>" if kind == "KV" else f"$O.{name}.>"
            deny_pub += [direct, f"$JS.API.*.*.{stream}", f"$JS.API.*.*.{stream}.>"]
    perms: dict[str, Any] = {
        "pub": {"allow": pub, **({"deny": deny_pub} if deny_pub else {})},
        "sub": {"allow": sub},
        "resp": {"max": 1, "ttl": 0},
    }
    return perms


def component_inbox(lattice: str, component_id: str) -> str:
    """The inbox prefix of a component's link-call connection (host/scoped.py)."""
    return f"_INBOX_{lattice}_component_{component_id}"


NOWHERE = "_lattice.nowhere"  # an allow list that must not be empty: empty means all


def component_permissions(
    lattice: str, component_id: str, targets: Iterable[str]
) -> dict[str, Any]:
    """What a component's link calls may do: request the RPC subjects of the targets its
    links name, and hear the replies on its own inbox. Nothing else: no control
    subject, no other target, no JetStream, no one else's replies."""
    pub = [f"{lattice}.{t}.rpc.>" for t in sorted(set(targets))] or [NOWHERE]
    return {
        "pub": {"allow": pub},
        "sub": {"allow": [f"{component_inbox(lattice, component_id)}.>"]},
    }


def mint_component(
    signing_key: Key,
    account: str,
    lattice: str,
    component_id: str,
    host_id: str,
    targets: Iterable[str],
) -> tuple[str, str]:
    """(user JWT, seed) of a fresh identity for one component's link calls on one host."""
    name = f"component {component_id} on {host_id[:12]}"
    return _mint(signing_key, account, name, component_permissions(lattice, component_id, targets))


def _mint(signing_key: Key, account: str, name: str, perms: dict[str, Any]) -> tuple[str, str]:
    user = Key.new(nkeys.PREFIX_BYTE_USER)
    return user_jwt(signing_key, account, user.public, name, perms), user.seed


def mint_provider(
    signing_key: Key, account: str, lattice: str, provider_id: str, host_id: str, image_ref: str
) -> tuple[str, str]:
    """(user JWT, seed) of a fresh identity for one provider process."""
    perms = provider_permissions(lattice, provider_id, host_id, image_ref)
    return _mint(signing_key, account, f"provider {provider_id} on {host_id[:12]}", perms)
