"""Compile once per lattice: compiled components shared, signed, and checked.

Deserializing a compiled (`.cwasm`) artifact runs native code wasmtime produced, with
none of the checks compiling does; so a host accepts one from the lattice only when it
is signed by a host of this lattice, and checks the signature *before* deserializing.
The trust model is written down in docs/artifacts.md.

- Key: (wasmtime version, target triple, engine settings) → `CompileKey.id`; hosts of
  another architecture or wasmtime version never see each other's artifacts.
- Object `{digest hex}-{key id}` in `LATTICE_COMPILED_{lattice}`, headers
  `Lattice-Signer` (the host's nkey public key = its host id) and `Lattice-Signature`
  (ed25519 over `lattice-compiled-v1\\n{digest}\\n{key id}\\n{content digest}`).
- Single-flight across the lattice: a key-value bucket whose entries expire
  (`LATTICE_COMPILE_LEASES_{lattice}`) holds one lease per object; `create` is atomic,
  so exactly one host compiles while the others wait for the artifact to appear. A
  holder that dies lets its lease age out and a waiter takes over.

The pure part (key, signed payload, sign/verify) is apart from the NATS part.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing
import nats.errors
import nkeys
import structlog
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from lattice import buckets, natsjwt
from lattice.artifacts.refs import sha256_digest
from lattice.artifacts.store import ObjectBucket, compiled_bucket

log = structlog.get_logger("lattice.artifacts.compiled")

SIGNER_HEADER = "Lattice-Signer"
SIGNATURE_HEADER = "Lattice-Signature"
KEY_HEADER = "Lattice-Compile-Key"
LEASE_TTL = 120.0
POLL_INTERVAL = 0.1
WAIT_LIMIT = 600.0


def leases_bucket(lattice: str) -> str:
    return f"LATTICE_COMPILE_LEASES_{lattice}"


@dataclass(frozen=True)
class CompileKey:
    wasmtime: str
    target: str
    settings: str

    @property
    def id(self) -> str:
        text = f"wasmtime={self.wasmtime};target={self.target};settings={self.settings}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"wasmtime {self.wasmtime}, {self.target}, {self.settings}"


def object_name(digest: str, key: CompileKey) -> str:
    return f"{digest.split(':', 1)[1]}-{key.id}"


def signed_payload(digest: str, key: CompileKey, content_digest: str) -> bytes:
    return f"lattice-compiled-v1\n{digest}\n{key.id}\n{content_digest}".encode()


class SignatureError(ValueError):
    """A compiled artifact whose signature does not check out; never deserialized."""


def _verify_key(public_key: str) -> nacl.signing.VerifyKey:
    try:
        return natsjwt.verify_key(public_key, nkeys.PREFIX_BYTE_SERVER, "a host (server) nkey")
    except natsjwt.JwtError as exc:
        raise SignatureError(f"signer {exc}") from None


def sign(sign_fn: Callable[[bytes], bytes], digest: str, key: CompileKey, content: bytes) -> str:
    return base64.b64encode(sign_fn(signed_payload(digest, key, sha256_digest(content)))).decode()


def verify(
    public_key: str, signature: str, digest: str, key: CompileKey, content: bytes | bytearray
) -> None:
    """Raises SignatureError unless `public_key` signed (digest, key, hash of content)."""
    try:
        sig = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature is not base64") from None
    try:
        _verify_key(public_key).verify(signed_payload(digest, key, sha256_digest(content)), sig)
    except nacl.exceptions.BadSignatureError:
        raise SignatureError(
            f"the signature of {public_key[:12]}… does not match this artifact"
        ) from None


IsLatticeHost = Callable[[str], Awaitable[bool]]
Compile = Callable[[], Awaitable[bytes]]


class SharedCompiles:
    """Fetch, or compile once and publish, the compiled artifact for a digest."""

    def __init__(
        self,
        nc: NATS,
        lattice: str,
        *,
        host_id: str,
        sign_fn: Callable[[bytes], bytes],
        key: CompileKey,
        is_lattice_host: IsLatticeHost,
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        self.nc = nc
        self.lattice = lattice
        self.host_id = host_id
        self.key = key
        self._sign = sign_fn
        self._is_host = is_lattice_host
        self._bucket = ObjectBucket(
            nc, compiled_bucket(lattice), f"compiled components of {lattice}"
        )
        self._lease_ttl = lease_ttl
        self._leases: KeyValue | None = None
        self._log = log.bind(host_id=host_id, lattice=lattice)

    async def _lease_kv(self) -> KeyValue:
        if self._leases is None:
            self._leases = await buckets.key_value(
                self.nc,
                api.KeyValueConfig(leases_bucket(self.lattice), history=1, ttl=self._lease_ttl),
            )
        return self._leases

    async def fetch(self, digest: str) -> bytes | None:
        """The signed artifact for `digest`, verified; None when absent or untrusted."""
        name = object_name(digest, self.key)
        info = await self._bucket.info(name)
        if info is None:
            return None
        signer = info.headers.get(SIGNER_HEADER, "")
        signature = info.headers.get(SIGNATURE_HEADER, "")
        if not signer or not signature:
            self._log.warning("compiled artifact unsigned; ignored", object=name)
            return None
        if not await self._is_host(signer):
            self._log.warning(
                "compiled artifact signed by a key that is no host of this lattice; ignored",
                object=name,
                signer=signer,
            )
            return None
        data = await self._bucket.get(name, info.digest)
        try:
            verify(signer, signature, digest, self.key, data)
        except SignatureError as exc:
            self._log.warning("compiled artifact refused", object=name, reason=str(exc))
            return None
        return data

    async def publish(self, digest: str, data: bytes) -> None:
        headers = {
            SIGNER_HEADER: self.host_id,
            SIGNATURE_HEADER: sign(self._sign, digest, self.key, data),
            KEY_HEADER: self.key.describe(),
        }
        try:
            await self._bucket.put(object_name(digest, self.key), data, headers)
        except Exception as exc:  # sharing is an optimisation: never fail a start over it
            self._log.warning("could not publish compiled artifact", error=str(exc))

    async def _acquire(self, name: str) -> bool:
        kv = await self._lease_kv()
        try:
            await kv.create(name, self.host_id.encode())
            return True
        except KeyWrongLastSequenceError:
            return False

    async def _held(self, name: str) -> bool:
        kv = await self._lease_kv()
        try:
            entry = await kv.get(name)
        except NotFoundError:
            return False
        return bool(entry.value)

    async def _release(self, name: str) -> None:
        try:
            kv = await self._lease_kv()
            await kv.purge(name)
        except Exception as exc:
            self._log.debug("could not release compile lease", error=str(exc))

    async def obtain(self, digest: str, compile_fn: Compile) -> tuple[bytes | None, str]:
        """(artifact bytes, "lattice") when another host's artifact is usable, else
        (None, "compiled") after `compile_fn` ran here — holding the lattice's lease, so
        the other hosts wait for this host's artifact instead of compiling too.

        Sharing is an optimisation: when the lattice cannot be asked (a NATS error or
        timeout, e.g. an edge host's slow uplink, or no JetStream), the host compiles here
        instead of failing the start. An error of `compile_fn` itself is raised."""
        ran = False

        async def compile_once() -> bytes:
            nonlocal ran
            ran = True
            return await compile_fn()

        try:
            return await self._obtain(digest, compile_once)
        except (nats.errors.Error, TimeoutError, ConnectionError) as exc:
            if ran:  # from the compile itself (publishing and the lease's release never raise)
                raise
            self._log.warning(
                "could not ask the lattice for a compiled artifact; compiling here",
                digest=digest,
                error=str(exc) or type(exc).__name__,
            )
            await compile_fn()
            return None, "compiled"

    async def _obtain(self, digest: str, compile_fn: Compile) -> tuple[bytes | None, str]:
        name = object_name(digest, self.key)
        deadline = time.monotonic() + WAIT_LIMIT
        while True:
            data = await self.fetch(digest)
            if data is not None:
                return data, "lattice"
            if await self._acquire(name):
                try:
                    data = await self.fetch(digest)  # published between our look and the lease
                    if data is not None:
                        return data, "lattice"
                    serialized = await compile_fn()
                    await self.publish(digest, serialized)
                    return None, "compiled"
                finally:
                    await self._release(name)
            while await self._held(name) and time.monotonic() < deadline:
                if await self._bucket.info(name) is not None:
                    break
                await asyncio.sleep(POLL_INTERVAL)
            if time.monotonic() >= deadline:
                await compile_fn()
                return None, "compiled"
