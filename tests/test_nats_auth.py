"""NATS identities and TLS: hosts, controllers, the CLI and providers log in.

Two nats-servers started here on free ports: one with static nkey users (the host's
user and a stranger's), one requiring TLS with a certificate from a test CA made here
(`cryptography`). A host without credentials is refused at once with a message naming
what is missing; with its nkey it starts, runs a component, starts a provider process
that logs in with the credentials from its start-up data, and nothing of the seed shows
in inventory or events. TLS with the right CA works end to end; the wrong CA fails
naming the certificate problem, from the Python API and from `lattice up` alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nkeys
import pytest

from components.build import build
from host.config import HostConfig
from host.host import Host, HostStartError
from lattice import natsd, natsjwt, tlsca
from lattice.client import LatticeClient, LatticeError
from lattice.natsauth import NatsAuth
from tests.events import EventRecorder


def _user(tmp: Path, name: str) -> tuple[Path, str, str]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = tmp / f"{name}.nk"
    path.write_bytes(seed + b"\n")
    return path, seed.decode(), nkeys.from_seed(seed).public_key.decode()


def _certs(tmp: Path, name: str) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it, under tmp/name/."""
    return tlsca.make(tmp / name, ["127.0.0.1", "localhost"], name=f"{name} test", days=1).ca.parent


@contextlib.asynccontextmanager
async def server(tmp: Path, config: str) -> AsyncIterator[natsd.EmbeddedNats]:
    conf = tmp / "server.conf"
    conf.write_text(config)
    srv = natsd.EmbeddedNats(
        "127.0.0.1", natsd.free_port(), tmp / "js", tmp / "nats.log", config_file=conf
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def _host(url: str, lattice: str, data: Path, auth: NatsAuth) -> Host:
    return Host(
        HostConfig(
            nats_url=url,
            lattice=lattice,
            data_dir=data,
            embedded_nats=False,
            nats_auth=auth,
            nats_connect_timeout=2.0,
        )
    )


async def test_nkey_users_host_cli_and_provider(tmp_path: Path, lattice_name: str) -> None:
    key, seed, public = _user(tmp_path, "host")
    stranger, _, _ = _user(tmp_path, "stranger")
    config = f"authorization {{ users: [ {{ nkey: {public} }} ] }}\n"
    async with server(tmp_path, config) as srv:
        started = time.monotonic()
        with pytest.raises(HostStartError) as refused:
            await _host(srv.url, lattice_name, tmp_path / "h0", NatsAuth()).start()
        assert time.monotonic() - started < 3, "a refused login must not be retried"
        assert "authorization violation" in str(refused.value)
        assert "gave no credentials: pass --creds FILE" in str(refused.value)
        with pytest.raises(HostStartError, match=r"refused the credentials in --nkey .*stranger"):
            await _host(srv.url, lattice_name, tmp_path / "h1", NatsAuth(nkey=stranger)).start()

        auth = NatsAuth(nkey=key)
        host = _host(srv.url, lattice_name, tmp_path / "h2", auth)
        await host.start()
        try:
            with pytest.raises(LatticeError, match="gave no credentials"):
                await LatticeClient.connect(srv.url, lattice_name, auth=NatsAuth())
            client = await LatticeClient.connect(srv.url, lattice_name, auth=auth)
            async with client:
                rec = await EventRecorder.start(client.nc, lattice_name)
                await client.scale_component(host.host_id, build("echo_min").as_uri(), "echo", 1)
                assert await client.call("echo", "echo", ["over a login"]) == "over a login"
                # a provider process logs in with the credentials in its start-up data
                await client.start_provider(host.host_id, "builtin://keyvalue-nats", "kv")
                await rec.wait_for("provider_started", lambda d: d["provider_id"] == "kv")
                inventory = (await client.inventory(host.host_id)).model_dump_json()
                assert seed not in inventory and seed not in json.dumps(rec.events)
        finally:
            await host.stop("test finished")


async def test_tls_with_the_right_ca_and_a_named_failure_with_the_wrong_one(
    tmp_path: Path, lattice_name: str
) -> None:
    good, other = _certs(tmp_path, "good"), _certs(tmp_path, "other")
    config = (
        f'tls {{ cert_file: "{good / "server.pem"}", key_file: "{good / "server-key.pem"}" }}\n'
    )
    async with server(tmp_path, config) as srv:
        url = f"tls://127.0.0.1:{srv.port}"
        with pytest.raises(HostStartError) as bad:
            wrong = NatsAuth(tls_ca=other / "ca.pem")
            await _host(url, lattice_name, tmp_path / "h0", wrong).start()
        assert "certificate did not verify" in str(bad.value) and "other/ca.pem" in str(bad.value)

        auth = NatsAuth(tls_ca=good / "ca.pem")
        host = _host(url, lattice_name, tmp_path / "h1", auth)
        await host.start()
        try:
            async with await LatticeClient.connect(url, lattice_name, auth=auth) as client:
                await client.scale_component(host.host_id, build("echo_min").as_uri(), "e", 1)
                assert await client.call("e", "echo", ["over TLS"]) == "over TLS"
        finally:
            await host.stop("test finished")

        # the same refusal from the command line: one line, exit 1, no traceback
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable, "-m", "lattice", "up", "--no-embedded-nats", "--nats-url", url,
                "--tls-ca", str(other / "ca.pem"), "--data-dir", str(tmp_path / "cli"),
                "--lattice", lattice_name,
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0
        assert "certificate did not verify" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_bad_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--tls-ca .*: no such file"):
        NatsAuth(tls_ca=tmp_path / "nope.pem")
    key, _, _ = _user(tmp_path, "u")
    with pytest.raises(ValueError, match=r"is not a \.creds file"):
        NatsAuth(creds=key)
    with pytest.raises(ValueError, match="give one"):
        creds = tmp_path / "u.creds"
        creds.write_text("-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n")
        NatsAuth(creds=creds, nkey=key)
    with pytest.raises(ValueError, match="go together"):
        NatsAuth(tls_cert=key)


# -- decentralized auth: each provider its own identity --------------------------------


@contextlib.asynccontextmanager
async def operator_mode(tmp: Path) -> AsyncIterator[tuple[natsd.EmbeddedNats, natsjwt.Key, str]]:
    """A nats-server with an operator, a system account and a lattice account whose
    signing key is returned (as `nsc` would set it up), JWTs preloaded in memory."""
    made = natsjwt.OperatorSetup.new()
    async with server(tmp, made.server_config()) as srv:
        yield srv, made.signing, made.account.public


def _user_creds(tmp: Path, signing: natsjwt.Key, account: str, name: str) -> Path:
    user = natsjwt.Key.new(nkeys.PREFIX_BYTE_USER)
    path = tmp / f"{name}.creds"
    path.write_text(natsjwt.creds(natsjwt.user_jwt(signing, account, user.public, name), user.seed))
    return path


ROGUE = '''#!{python}
"""A provider that tries a control subject as soon as it starts."""
from providers.sdk import Provider, run


class Rogue(Provider):
    async def on_start(self) -> None:
        await self.nats.publish(f"wasmbus.ctl.v1.{{self.lattice}}.host.ping", b"{{}}")
        await self.nats.flush()


run(Rogue)
'''


async def test_each_provider_gets_an_identity_of_its_own(tmp_path: Path, lattice_name: str) -> None:
    from tests.test_http_server import route, wait_ok

    async with operator_mode(tmp_path) as (srv, signing, account):
        host_creds = _user_creds(tmp_path, signing, account, "host")
        key_file = tmp_path / "signing.nk"
        key_file.write_text(signing.seed)
        host = Host(
            HostConfig(
                nats_url=srv.url,
                lattice=lattice_name,
                data_dir=tmp_path / "h",
                embedded_nats=False,
                nats_auth=NatsAuth(creds=host_creds),
                account_signing_key=key_file,
                http_in_host=False,  # the http-server as a process, with its own login
            )
        )
        await host.start()
        try:
            async with await LatticeClient.connect(
                srv.url, lattice_name, auth=NatsAuth(creds=host_creds)
            ) as client:
                rec = await EventRecorder.start(client.nc, lattice_name)
                # a real provider works with what it was given: HTTP through it answers
                await client.start_provider(host.host_id, "builtin://http-server", "http")
                await client.scale_component(host.host_id, build("hello_http").as_uri(), "hello", 1)
                port = natsd.free_port()
                await route(client, "hello", port, "hello-cfg")
                await wait_ok(f"http://127.0.0.1:{port}/")

                # a provider that tries a control subject is denied; the host has it in its log
                rogue = tmp_path / "rogue.py"
                rogue.write_text(ROGUE.format(python=sys.executable))
                rogue.chmod(0o755)
                await client.start_provider(host.host_id, rogue.as_uri(), "rogue")
                await rec.wait_for("provider_started", lambda d: d["provider_id"] == "rogue")
                tail = host.providers.running["rogue"].output
                for _ in range(100):
                    if any("permissions violation" in line.lower() for line in tail):
                        break
                    await asyncio.sleep(0.05)
                assert any(
                    "permissions violation for publish to" in line.lower() and "host.ping" in line
                    for line in tail
                ), list(tail)
                host_seed = natsjwt.Key.from_seed(
                    host_creds.read_text().split("USER NKEY SEED-----\n")[1].split("\n")[0], "U"
                ).seed
                shown = (await client.inventory(host.host_id)).model_dump_json()
                assert host_seed not in shown and host_seed not in json.dumps(rec.events)
        finally:
            await host.stop("test finished")

        # what a minted identity may and may not do, asked of the server itself
        jwt, seed = natsjwt.mint_provider(
            signing, account, lattice_name, "kv", host.host_id, "builtin://keyvalue-nats"
        )
        creds = tmp_path / "kv.creds"
        creds.write_text(natsjwt.creds(jwt, seed))
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        import nats

        nc = await nats.connect(
            srv.url,
            user_credentials=str(creds),
            inbox_prefix=natsjwt.provider_inbox(lattice_name, "kv"),
            error_cb=on_error,
        )
        try:
            js = nc.jetstream()
            mine = await js.create_key_value(bucket="provider-data")  # its own store: fine
            await mine.put("k", b"v")
            with pytest.raises(Exception):  # noqa: B017 - the lattice's links are not its
                await (await js.key_value(f"LATTICEDATA_{lattice_name}")).get("x")
            for subject in (
                f"wasmbus.ctl.v1.{lattice_name}.host.ping",
                f"{lattice_name}.other-provider.rpc.wasi:keyvalue/store.get",
                f"wasmbus.rpc.{lattice_name}.other-provider.health",
            ):
                await nc.publish(subject, b"{}")
            await nc.flush()
            await asyncio.sleep(0.3)
        finally:
            await nc.close()
        denied = {e.split('"')[1] for e in errors if "permissions violation for publish" in e}
        assert denied == {
            f"$js.api.stream.info.kv_latticedata_{lattice_name}".lower(),
            f"wasmbus.ctl.v1.{lattice_name}.host.ping",
            f"{lattice_name}.other-provider.rpc.wasi:keyvalue/store.get",
            f"wasmbus.rpc.{lattice_name}.other-provider.health",
        }, errors


def test_a_signing_key_needs_creds(tmp_path: Path) -> None:
    from host.config import signing_of

    key = tmp_path / "k.nk"
    key.write_text(natsjwt.Key.new(nkeys.PREFIX_BYTE_ACCOUNT).seed)
    with pytest.raises(ValueError, match="needs --creds"):
        signing_of(HostConfig(account_signing_key=key))
    key.write_text(natsjwt.Key.new(nkeys.PREFIX_BYTE_USER).seed)
    with pytest.raises(ValueError, match="not A"):
        signing_of(HostConfig(account_signing_key=key))


async def test_lattice_up_secure_makes_a_lattice_others_join(
    tmp_path: Path, lattice_name: str
) -> None:
    port = natsd.free_port()
    url = f"nats://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lattice", "up", "--secure", "--nats-url", url,
        "--data-dir", str(tmp_path / "first"), "--lattice", lattice_name,
        "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    second: Host | None = None
    try:
        assert proc.stdout is not None
        first_line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert first_line.startswith(b"secured lattice: NATS at nats://"), first_line
        printed = (first_line + await asyncio.wait_for(proc.stdout.read(600), 5)).decode()
        secure_dir = tmp_path / "first" / "secure"
        assert "--creds NAME.creds --tls-ca ca.pem --account-signing-key signing.nk" in printed
        private = ("host.creds", "cli.creds", "signing.nk", "tls/ca-key.pem", "tls/server-key.pem")
        assert all((secure_dir / f).stat().st_mode & 0o077 == 0 for f in private)
        ca = secure_dir / "tls" / "ca.pem"

        # one more host gets a user of its own
        join = [sys.executable, "-m", "lattice", "secure", "join", "edge-1"]
        join += ["--data-dir", str(tmp_path / "first")]
        joined = await asyncio.to_thread(
            subprocess.run, join, capture_output=True, text=True, timeout=60
        )
        assert joined.returncode == 0, joined.stderr
        edge_creds = secure_dir / "hosts" / "edge-1.creds"
        assert joined.stdout.splitlines()[0] == str(edge_creds)
        assert f":{port} --creds edge-1.creds --tls-ca ca.pem" in joined.stdout
        again = await asyncio.to_thread(
            subprocess.run, join, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 2 and "exists already" in again.stderr
        files = [f for f in secure_dir.rglob("*") if f.is_file()]
        seeds = [line for f in files for line in f.read_text().split() if
                 line.startswith(("SU", "SA", "SO"))]  # fmt: skip
        assert seeds and not any(seed in printed + joined.stdout for seed in seeds)

        with pytest.raises(LatticeError, match="authorization violation"):
            await LatticeClient.connect(url, lattice_name, auth=NatsAuth(tls_ca=ca))
        with pytest.raises(LatticeError, match="certificate"):  # TLS is required: trust the CA
            await LatticeClient.connect(url, lattice_name, auth=NatsAuth(creds=edge_creds))
        second = Host(
            HostConfig(
                nats_url=url,
                lattice=lattice_name,
                data_dir=tmp_path / "second",
                embedded_nats=False,
                nats_auth=NatsAuth(creds=edge_creds, tls_ca=ca),
                account_signing_key=secure_dir / "signing.nk",
            )
        )
        await second.start()
        cli = NatsAuth(creds=secure_dir / "cli.creds", tls_ca=ca)
        async with await LatticeClient.connect(url, lattice_name, auth=cli) as client:
            for _ in range(100):
                if len(await client.hosts(wait=0.3)) == 2:
                    break
            assert len(await client.hosts(wait=0.3)) == 2
    finally:
        if second is not None:
            await second.stop("test finished")
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
