"""Components' link calls on NATS logins scoped to their links (host/scoped.py).

An operator-mode nats-server; two hosts with `--account-signing-key`, the caller on
one and its targets on the other, so the calls cross NATS (same-host calls stay in
process). The caller's link calls go out on a login of its own that the server lets
publish only to its targets' RPC subjects; a relink to a new target mints a wider
one; a removed link's target leaves the scope; and the server itself refuses that
login anything else, a control subject included.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from host import scoped
from host.config import HostConfig
from host.host import Host
from lattice import natsjwt
from lattice.client import LatticeClient
from lattice.natsauth import NatsAuth
from tests.conftest import CACHE
from tests.test_nats_auth import _user_creds, operator_mode

RELAY = "lattice:examples/relay"


def test_permissions_name_only_the_targets_and_never_allow_everything() -> None:
    perms = natsjwt.component_permissions("lat", "caller", ["greeter", "kv", "greeter"])
    assert perms["pub"]["allow"] == ["lat.greeter.rpc.>", "lat.kv.rpc.>"]
    assert perms["sub"]["allow"] == ["_INBOX_lat_component_caller.>"]
    # no links: an allow list naming nothing reachable (an empty one would allow all)
    assert natsjwt.component_permissions("lat", "caller", [])["pub"]["allow"] == [natsjwt.NOWHERE]


async def test_link_calls_go_out_on_a_login_scoped_to_the_links(
    tmp_path: Path, lattice_name: str, linked_refs: dict[str, str], monkeypatch
) -> None:
    monkeypatch.setattr(scoped, "SWEEP_S", 0.2)
    monkeypatch.setattr(scoped, "RETIRE_S", 0.5)
    async with operator_mode(tmp_path) as (srv, signing, account):
        key_file = tmp_path / "signing.nk"
        key_file.write_text(signing.seed)
        hosts: list[Host] = []
        for name in ("a", "b"):
            host = Host(
                HostConfig(
                    nats_url=srv.url,
                    lattice=lattice_name,
                    data_dir=tmp_path / name,
                    compile_cache_dir=CACHE / "test-host" / "cache",  # compiled once per machine
                    embedded_nats=False,
                    nats_auth=NatsAuth(creds=_user_creds(tmp_path, signing, account, name)),
                    account_signing_key=key_file,
                )
            )
            await host.start()
            hosts.append(host)
        a, b = hosts
        try:
            cli = NatsAuth(creds=_user_creds(tmp_path, signing, account, "cli"))
            async with await LatticeClient.connect(srv.url, lattice_name, auth=cli) as client:
                await client.scale_component(a.host_id, linked_refs["caller"], "caller", 1)
                for cid in ("greeter", "greeter-2"):
                    await client.scale_component(b.host_id, linked_refs["greeter"], cid, 1)
                await client.put_link("caller", "greeter", "lattice", "examples", ["greet"])
                assert await client.call("caller", f"{RELAY}.relay-hello", ["Ada"]) == "Hello, Ada!"
                links = a.bridge.scoped
                assert links._scoped["caller"].targets == {"greeter"} and links.mints == 1

                # the server refuses that login anything else: a request to a host's
                # control subject (which hosts answer) or to another component gets
                # nothing, while the host's own login gets its answer
                mine = links._scoped["caller"].nc
                ping = f"wasmbus.ctl.v1.{lattice_name}.host.ping"
                assert (await a.nc.request(ping, b"", timeout=2)).data
                for denied in (ping, f"{lattice_name}.greeter-2.rpc.{RELAY}.relay-hello"):
                    with pytest.raises(nats.errors.TimeoutError):
                        await mine.request(denied, b"", timeout=0.5)

                # relink to another target: a login for the new set, and the call works
                await client.put_link(
                    "caller", "greeter-2", "lattice", "examples", ["greet"], replace=True
                )
                deadline = time.monotonic() + 10
                while True:
                    try:
                        got = await client.call("caller", f"{RELAY}.relay-hello", ["Bo"])
                        break
                    except Exception:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.1)
                assert got == "Hello, Bo!"
                assert links._scoped["caller"].targets == {"greeter-2"}, "the old target stayed"
                assert links.mints == 2

                # the link removed: the sweep narrows the scope to nothing reachable
                await client.del_link("caller", "lattice", "examples")
                deadline = time.monotonic() + 10
                while links._scoped["caller"].targets:
                    assert time.monotonic() < deadline, "the removed link's target stayed"
                    await asyncio.sleep(0.1)

                # stopping the component drops its login
                await client.scale_component(a.host_id, linked_refs["caller"], "caller", 0)
                assert "caller" not in links._scoped
        finally:
            for host in hosts:
                await host.stop("test finished")
