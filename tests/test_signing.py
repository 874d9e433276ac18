"""Signed components (`lattice sign`, `lattice up --allowed-issuer`).

The pure part signs the minimal echo component and checks every refusal by its reason.
The host part starts a host (the session's nats-server, its own data dir) with an issuer
allow-list and scales real components from files and from the lattice's object store:
signed by the allowed issuer → it runs and answers; unsigned, tampered, expired, foreign
→ the scale fails with component_scale_failed naming the reason, and nothing was
compiled for them. The CLI part runs the real `lattice sign` and `lattice inspect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nkeys
import pytest

from components.build import build
from host.config import ArtifactSettings, HostConfig
from host.host import Host
from lattice.artifacts import claims, ops
from lattice.artifacts.fetch import FetchPolicy
from lattice.artifacts.wasm import NotAComponent
from lattice.client import LatticeClient, LatticeError
from tests.events import EventRecorder


def _account() -> tuple[str, str]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT).decode()
    return seed, nkeys.from_seed(seed.encode()).public_key.decode()


@pytest.fixture(scope="module")
def wasm() -> bytes:
    return build("echo_min").read_bytes()


@pytest.fixture(scope="module")
def account() -> tuple[str, str]:
    return _account()


# -- the claims themselves (pure) ------------------------------------------------------


def test_sign_and_verify_round_trip(wasm: bytes, account: tuple[str, str]) -> None:
    seed, public = account
    signed, made = claims.sign(wasm, seed, name="echo-min", version="0.1.0", revision=3)
    got = claims.verify(signed, [public])
    assert got == made
    assert got.issuer == public and got.subject.startswith("M") and len(got.subject) == 56
    assert (got.name, got.version, got.revision, got.expires) == ("echo-min", "0.1.0", 3, None)
    stripped, tokens = claims.split(signed)
    assert stripped == wasm and len(tokens) == 1  # the section is the only addition
    assert got.module_hash == claims.module_hash(wasm)

    again, _ = claims.sign(signed, seed, name="renamed")  # re-signing replaces, never stacks
    assert claims.split(again)[1].__len__() == 1 and claims.read(again).name == "renamed"  # type: ignore[union-attr]


def test_every_refusal_names_its_reason(wasm: bytes, account: tuple[str, str]) -> None:
    seed, public = account
    signed, _ = claims.sign(wasm, seed, name="e", expires_in=60, now=1_000_000)
    with pytest.raises(claims.ClaimsError, match=r"^unsigned"):
        claims.verify(wasm, [public])
    with pytest.raises(claims.ClaimsError, match=r"^expired: the claims expired at 1970"):
        claims.verify(signed, [public])
    assert claims.verify(signed, [public], now=1_000_030).expires == 1_000_060

    fresh, _ = claims.sign(wasm, seed, name="e")
    _, other = _account()
    with pytest.raises(claims.ClaimsError, match=f"issuer {public} is not allowed"):
        claims.verify(fresh, [other])

    tampered = bytearray(fresh)
    tampered[20] ^= 0x01  # a byte of the component, not of the claims
    with pytest.raises(claims.ClaimsError, match=r"^tampered"):
        claims.verify(bytes(tampered), [public])

    stripped, tokens = claims.split(fresh)
    head, body, sig = tokens[0].split(b".")
    payload = json.loads(claims._unb64(body.decode()))
    payload["wascap"]["name"] = "someone-else"  # claims edited after signing
    swapped = claims._b64(json.dumps(payload).encode()).encode()
    forged = stripped + claims._section(b".".join([head, swapped, sig]))
    with pytest.raises(claims.ClaimsError, match="signature does not verify"):
        claims.verify(forged, [public])

    two = fresh + claims._section(tokens[0])
    with pytest.raises(claims.ClaimsError, match="2 jwt sections"):
        claims.read(two)
    with pytest.raises(claims.ClaimsError, match="not a JWT"):
        claims.read(stripped + claims._section(b"not-a-token"))


def test_bad_keys_and_bytes_are_named(wasm: bytes) -> None:
    user_seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
    with pytest.raises(claims.ClaimsError, match="must be an account seed"):
        claims.sign(wasm, user_seed, name="e")
    with pytest.raises(claims.ClaimsError, match="not a valid nkey seed"):
        claims.sign(wasm, "SAnot-a-seed", name="e")
    with pytest.raises(claims.ClaimsError, match="not an account public key"):
        claims.check_issuer(nkeys.from_seed(user_seed.encode()).public_key.decode())
    with pytest.raises(claims.ClaimsError, match="not an nkey public key"):
        claims.check_issuer("hello")
    with pytest.raises(NotAComponent):
        claims.sign(b"\0asm\x01\0\0\0", _account()[0], name="core")


# -- a host with an allow-list ---------------------------------------------------------


@pytest.fixture
async def strict_host(
    nats_url: str, lattice_name: str, tmp_path: Path, account: tuple[str, str]
) -> AsyncIterator[Host]:
    host = Host(
        HostConfig(
            nats_url=nats_url,
            lattice=lattice_name,
            data_dir=tmp_path / "strict",
            embedded_nats=False,
            artifacts=ArtifactSettings(allowed_issuers=(account[1],)),
        )
    )
    await host.start()
    yield host
    with contextlib.suppress(Exception):
        await asyncio.wait_for(host.stop("test finished"), 30)


async def test_a_strict_host_runs_only_what_its_issuers_signed(
    strict_host: Host,
    client: LatticeClient,
    wasm: bytes,
    account: tuple[str, str],
    tmp_path: Path,
) -> None:
    seed, _ = account
    rec = await EventRecorder.start(client.nc, client.lattice)
    signed, _ = claims.sign(wasm, seed, name="echo-min")
    expired, _ = claims.sign(wasm, seed, name="echo-min", expires_in=1, now=time.time() - 60)
    foreign, _ = claims.sign(wasm, _account()[0], name="echo-min")
    tampered = bytearray(signed)
    tampered[20] ^= 0x01
    files = {
        "good": signed,
        "plain": wasm,
        "old": expired,
        "foreign": foreign,
        "tampered": bytes(tampered),
    }
    for name, data in files.items():
        (tmp_path / f"{name}.wasm").write_bytes(data)

    await client.scale_component(strict_host.host_id, (tmp_path / "good.wasm").as_uri(), "ok", 1)
    assert await client.call("ok", "echo", ["signed"]) == "signed"

    for cid, reason in [
        ("plain", "unsigned"),
        ("old", "expired"),
        ("foreign", "is not allowed on this host"),
        ("tampered", "tampered"),
    ]:
        ref = (tmp_path / f"{cid}.wasm").as_uri()
        with pytest.raises(LatticeError, match=reason):
            await client.scale_component(strict_host.host_id, ref, cid, 1)
        ev = await rec.wait_for("component_scale_failed", lambda d, c=cid: d["component_id"] == c)
        assert reason in ev["data"]["error"] and "refused" in ev["data"]["error"]
        assert cid not in strict_host.components.running

    # the same check on the lattice's own artifacts
    policy = FetchPolicy()
    for ref, data in (("lattice://signed-echo:0.1.0", signed), ("lattice://bare-echo:0.1.0", wasm)):
        path = tmp_path / "push.wasm"
        path.write_bytes(data)
        await ops.push(ref, path, nc=client.nc, lattice=client.lattice, policy=policy)
    await client.scale_component(strict_host.host_id, "lattice://signed-echo:0.1.0", "ok2", 1)
    assert await client.call("ok2", "echo", ["from the store"]) == "from the store"
    with pytest.raises(LatticeError, match="unsigned"):
        await client.scale_component(strict_host.host_id, "lattice://bare-echo:0.1.0", "bare", 1)
    # nothing refused reached the compile cache (the check runs before compiling)
    compiled = {p.name.split("-")[0] for p in strict_host.config.cache_dir.glob("*.cwasm")}
    assert claims.hashlib.sha256(signed).hexdigest() in compiled
    refused = {claims.hashlib.sha256(d).hexdigest() for n, d in files.items() if n != "good"}
    assert not compiled & refused


# -- the CLI ---------------------------------------------------------------------------


def _lattice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lattice", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_cli_sign_and_inspect(tmp_path: Path, wasm: bytes, account: tuple[str, str]) -> None:
    seed, public = account
    (tmp_path / "echo.wasm").write_bytes(wasm)
    key = tmp_path / "account.nk"
    key.write_text(seed + "\n")
    done = _lattice(
        "sign", str(tmp_path / "echo.wasm"), "--issuer", str(key), "--version", "1.2.3", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert seed not in done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert shown["signature"]["issuer"] == public and shown["signature"]["name"] == "echo"
    assert shown["ref"].endswith("echo_s.wasm")

    table = _lattice("inspect", str(tmp_path / "echo_s.wasm"))
    assert table.returncode == 0, table.stderr
    assert f"signed by         {public}" in table.stdout and "1.2.3 (rev 0)" in table.stdout
    plain = _lattice("inspect", str(tmp_path / "echo.wasm"))
    assert "none (unsigned)" in plain.stdout

    # the seed from the environment; a bad one is a one-line error, not a traceback
    env_done = _lattice(
        "sign", str(tmp_path / "echo.wasm"), "-d", str(tmp_path / "b.wasm"),
        env={"LATTICE_ISSUER_SEED": seed},
    )  # fmt: skip
    assert env_done.returncode == 0 and (tmp_path / "b.wasm").is_file()
    # the --help example, verbatim, where its files are (tests/test_cli_examples.py
    # leaves the artifact commands' examples to their own tests)
    from lattice.cli import build as cli_build
    from lattice.cli import docs

    sign_cmd = next(c for path, c in docs.commands(cli_build()) if list(path) == ["sign"])
    (example,) = docs.examples(sign_cmd)
    (tmp_path / "account.nk").write_text(seed)
    ran = subprocess.run(
        [sys.executable, "-m", "lattice", *shlex.split(example)[1:]],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert claims.read((tmp_path / "echo_s.wasm").read_bytes()).version == "0.1.0"  # type: ignore[union-attr]

    bad = _lattice("sign", str(tmp_path / "echo.wasm"), "--issuer", "SAnope")
    assert bad.returncode == 1 and "not a valid nkey seed" in bad.stderr
    assert "Traceback" not in bad.stderr
