"""A host that loses NATS and reconnects replays links and config and keeps watching."""

from __future__ import annotations

import asyncio
from pathlib import Path

from host.config import HostConfig
from host.host import Host
from lattice import natsd
from lattice.client import LatticeClient


async def test_host_resyncs_after_nats_restart(tmp_path: Path) -> None:
    server = natsd.EmbeddedNats("127.0.0.1", natsd.free_port(), tmp_path / "js", tmp_path / "log")
    await server.start()
    host = Host(
        HostConfig(
            nats_url=server.url, lattice="rc", data_dir=tmp_path / "host", embedded_nats=False
        )
    )
    await host.start()
    client = await LatticeClient.connect(server.url, "rc")
    try:
        await client.put_link("a", "b", "lattice", "examples", ["greet"])
        await client.close()
        await server.stop()  # the JetStream store survives on disk
        await asyncio.sleep(0.5)
        await server.start()
        client = await LatticeClient.connect(server.url, "rc")
        # changes made after the outage reach the host's copy through the new watcher
        for _ in range(100):
            try:
                await client.put_link("a", "c", "lattice", "examples", ["greet"], replace=True)
                break
            except Exception:  # the host may still be reconnecting
                await asyncio.sleep(0.1)
        ident = ("a", "lattice", "examples", "default")
        for _ in range(100):
            if host.state.links.get(ident) and host.state.links[ident].target == "c":
                break
            await asyncio.sleep(0.05)
        assert host.state.links[ident].target == "c"
        assert [h.id for h in await client.hosts(wait=0.5, expect=1)] == [host.host_id]
    finally:
        await client.close()
        await host.stop()
        await server.stop()
