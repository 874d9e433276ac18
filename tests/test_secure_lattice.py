"""Issue 13's "done when": a secured three-host lattice runs kvcounter end to end.

One nats-server in operator mode (JWT accounts, as `nsc` sets them up) that requires
TLS with a certificate from a test CA. Three hosts, each with a user of its own, each
minting its providers their own identities (`--account-signing-key`) and running only
components signed by the publisher's account (`--allowed-issuer`). A controller and a
CLI client with users of their own. manifests/kvcounter.yaml, its image replaced by the
signed kvcounter, deploys and counts over HTTP. Then the attacks, each on this same
lattice, and what stops it:

- no credentials → the server refuses the connection (authorization violation);
- the wrong CA → the client refuses the server (certificate did not verify);
- an unsigned component, or one signed by another account → the host refuses it before
  compiling (`component_scale_failed` naming the reason);
- a provider's identity publishing another host's `host.stop` → the server denies it,
  and the host keeps running (and counting).
And no seed or JWT of any identity shows in inventory or events.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import nats
import nkeys
import pytest
import yaml

from components.build import build
from host.config import ArtifactSettings, HostConfig
from host.host import Host, HostStartError
from lattice import natsd, natsjwt
from lattice.artifacts import claims
from lattice.client import LatticeClient, LatticeError
from lattice.controller.run.service import Controller
from lattice.natsauth import NatsAuth
from tests.events import EventRecorder
from tests.test_nats_auth import _certs, server

ROOT = Path(__file__).resolve().parents[1]


def _creds(tmp: Path, made: natsjwt.OperatorSetup, name: str) -> Path:
    path = tmp / f"{name}.creds"
    path.write_text(made.user_creds(name))
    path.chmod(0o600)
    return path


def _creds_secrets(tmp: Path) -> list[str]:
    """The JWT and seed lines of every .creds file written here."""
    return [
        line
        for f in tmp.glob("*.creds")
        for line in f.read_text().splitlines()
        if line.startswith(("SU", "eyJ"))
    ]


async def _counts(url: str, n: int) -> list[int]:
    """`n` GETs of one path, the counts they answer (the first may wait for the route)."""
    deadline = time.monotonic() + 30
    got: list[int] = []
    async with httpx.AsyncClient(timeout=10) as http:
        while len(got) < n:
            try:
                r = await http.get(url)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code == 200:
                got.append(int(r.text.strip().split()[-1]))
            else:
                assert time.monotonic() < deadline, f"{url} never answered 200"
                await asyncio.sleep(0.1)
    return got


async def test_a_secured_three_host_lattice_runs_kvcounter(
    tmp_path: Path, lattice_name: str
) -> None:
    made = natsjwt.OperatorSetup.new()
    certs, other = _certs(tmp_path, "ca"), _certs(tmp_path, "other")
    config = made.server_config() + (
        f'tls {{ cert_file: "{certs / "server.pem"}", key_file: "{certs / "server-key.pem"}" }}\n'
    )
    publisher = natsjwt.Key.new(nkeys.PREFIX_BYTE_ACCOUNT)  # signs the components we run
    signed, _ = claims.sign(build("kvcounter").read_bytes(), publisher.seed, name="kvcounter")
    image = tmp_path / "kvcounter-signed.wasm"
    image.write_bytes(signed)
    signing_key = tmp_path / "signing.nk"
    signing_key.write_text(made.signing.seed)
    signing_key.chmod(0o600)
    ca = certs / "ca.pem"

    async with server(tmp_path, config) as srv:
        url = f"tls://127.0.0.1:{srv.port}"
        hosts: list[Host] = []
        ctl: Controller | None = None
        try:
            for zone in ("a", "b", "c"):
                host = Host(
                    HostConfig(
                        nats_url=url,
                        lattice=lattice_name,
                        labels={"zone": zone},
                        data_dir=tmp_path / f"host-{zone}",
                        compile_cache_dir=tmp_path / "compiled",  # one compile for three
                        embedded_nats=False,
                        heartbeat_interval=0.5,
                        nats_auth=NatsAuth(creds=_creds(tmp_path, made, f"host-{zone}"), tls_ca=ca),
                        account_signing_key=signing_key,
                        artifacts=ArtifactSettings(allowed_issuers=(publisher.public,)),
                    )
                )
                await host.start()
                hosts.append(host)
            ctl = Controller(
                url,
                lattice_name,
                host_expiry=3.0,
                tick=0.3,
                lease_ttl=3.0,
                resync_interval=1.0,
                nats_auth=NatsAuth(creds=_creds(tmp_path, made, "controller"), tls_ca=ca),
            )
            await ctl.start()
            cli = NatsAuth(creds=_creds(tmp_path, made, "cli"), tls_ca=ca)
            async with await LatticeClient.connect(
                url, lattice_name, auth=cli, timeout=30
            ) as client:
                rec = await EventRecorder.start(client.nc, lattice_name)

                # -- kvcounter, as shipped but for its image and listen port ----------
                doc = yaml.safe_load((ROOT / "manifests" / "kvcounter.yaml").read_text())
                port = natsd.free_port()
                for comp in doc["spec"]["components"]:
                    if comp["name"] == "counter":
                        comp["properties"]["image"] = image.as_uri()
                        comp["traits"][0]["properties"]["instances"] = 3
                        bucket = comp["traits"][1]["properties"]["target"]["config"][0]
                        bucket["properties"]["bucket"] = f"kv{lattice_name}"
                    if comp["name"] == "httpserver":
                        listen = comp["traits"][1]["properties"]["source"]["config"][0]
                        listen["properties"]["address"] = f"127.0.0.1:{port}"
                put = await client.model("put", body=json.dumps(doc).encode())
                await client.model("deploy", put["name"], {"version": put["version"]})
                deadline = time.monotonic() + 120
                while (await client.model("status", "kvcounter"))["status"]["state"] != "deployed":
                    assert time.monotonic() < deadline, "kvcounter was not deployed in time"
                    await asyncio.sleep(0.3)
                got = await _counts(f"http://127.0.0.1:{port}/secure", 5)
                assert got == list(range(got[0], got[0] + 5)), got  # each request counted once
                running = {h.host_id for h in hosts if "kvcounter-counter" in h.components.running}
                assert len(running) >= 2, "the replicas did not spread over the hosts"

                # -- attack: no credentials ------------------------------------------
                with pytest.raises(LatticeError, match="authorization violation"):
                    await LatticeClient.connect(url, lattice_name, auth=NatsAuth(tls_ca=ca))
                # -- attack: a server vouched for by another CA ------------------------
                with pytest.raises(HostStartError, match="certificate did not verify"):
                    rogue_cfg = HostConfig(
                        nats_url=url,
                        lattice=lattice_name,
                        data_dir=tmp_path / "rogue",
                        embedded_nats=False,
                        nats_connect_timeout=2.0,
                        nats_auth=NatsAuth(
                            creds=_creds(tmp_path, made, "rogue"), tls_ca=other / "ca.pem"
                        ),
                    )
                    await Host(rogue_cfg).start()
                # -- attack: components the hosts' issuers did not sign ----------------
                foreign_key = natsjwt.Key.new(nkeys.PREFIX_BYTE_ACCOUNT)
                foreign, _ = claims.sign(build("echo_min").read_bytes(), foreign_key.seed, name="x")
                for cid, data, reason in (
                    ("unsigned", build("echo_min").read_bytes(), "unsigned"),
                    ("foreign", foreign, "is not allowed on this host"),
                ):
                    path = tmp_path / f"{cid}.wasm"
                    path.write_bytes(data)
                    with pytest.raises(LatticeError, match=reason):
                        await client.scale_component(hosts[0].host_id, path.as_uri(), cid, 1)
                    assert cid not in hosts[0].components.running
                # -- attack: a provider's identity on a control subject ----------------
                jwt, seed = natsjwt.mint_provider(
                    made.signing, made.account.public, lattice_name, "kvcounter-kvstore",
                    hosts[0].host_id, "builtin://keyvalue-nats",
                )  # fmt: skip
                creds = tmp_path / "provider.creds"
                creds.write_text(natsjwt.creds(jwt, seed))
                errors: list[str] = []

                async def on_error(exc: Exception) -> None:
                    errors.append(str(exc))

                provider_nc = await nats.connect(
                    url,
                    tls=NatsAuth(tls_ca=ca).ssl_context(),
                    user_credentials=str(creds),
                    inbox_prefix=natsjwt.provider_inbox(lattice_name, "kvcounter-kvstore"),
                    error_cb=on_error,
                )
                try:
                    stop = f"wasmbus.ctl.v1.{lattice_name}.host.stop.{hosts[1].host_id}"
                    await provider_nc.publish(stop, b"{}")
                    await provider_nc.flush()
                    await asyncio.sleep(0.3)
                finally:
                    await provider_nc.close()
                assert any(
                    "permissions violation for publish" in e and stop.lower() in e.lower()
                    for e in errors
                ), errors
                assert not hosts[1]._stopping  # the stop never reached it

                # still counting, after all of that
                again = await _counts(f"http://127.0.0.1:{port}/secure", 2)
                assert again == [got[-1] + 1, got[-1] + 2]

                # -- nothing secret in what the lattice shows ----------------------------
                secrets = [made.signing.seed, seed, jwt, publisher.seed]
                secrets += _creds_secrets(tmp_path)
                inventories = [await client.inventory(h.host_id) for h in hosts]
                shown = json.dumps(rec.events) + "".join(i.model_dump_json() for i in inventories)
                leaked = [s[:8] + "…" for s in secrets if s and s in shown]
                assert not leaked, f"secrets shown in events or inventory: {leaked}"
        finally:
            if ctl is not None:
                await asyncio.wait_for(ctl.stop(), 30)
            for host in hosts:
                await asyncio.wait_for(host.stop("test finished"), 30)
