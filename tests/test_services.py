"""wasi:config/store and wasi:logging/logging, served by the host itself."""

from __future__ import annotations

import pytest
import structlog

from lattice.client import LatticeClient

SETTINGS = "lattice:examples/settings"


@pytest.fixture(scope="session")
def settings_ref() -> str:
    from components.build import build

    return build("settings").as_uri()


async def test_config_store_reads_named_config_live(
    host, client: LatticeClient, settings_ref
) -> None:
    await client.put_config("base", {"greeting": "hello", "color": "blue"})
    await client.put_config("override", {"color": "red", "token": "t0p"}, ["token"])
    await client.scale_component(
        host.host_id, settings_ref, "settings", 1, config=["base", "override"]
    )
    assert await client.call("settings", f"{SETTINGS}.get", ["greeting"]) == "hello"
    assert await client.call("settings", f"{SETTINGS}.get", ["color"]) == "red"  # later wins
    assert (
        await client.call("settings", f"{SETTINGS}.get", ["token"]) is None
    )  # secret: providers only
    assert await client.call("settings", f"{SETTINGS}.get", ["missing"]) is None
    assert await client.call("settings", f"{SETTINGS}.all", []) == [
        ["color", "red"],
        ["greeting", "hello"],
    ]
    await client.put_config("base", {"greeting": "bonjour"})
    assert await client.call("settings", f"{SETTINGS}.get", ["greeting"]) == "bonjour"


async def test_logging_goes_to_the_host_log_with_the_component_id(
    host, client: LatticeClient, settings_ref
) -> None:
    await client.scale_component(host.host_id, settings_ref, "settings", 1)
    with structlog.testing.capture_logs() as logs:
        assert await client.call("settings", f"{SETTINGS}.log", ["warn", "disk nearly full"])
        assert await client.call("settings", f"{SETTINGS}.log", ["nope", "x"]) is False
    entries = [e for e in logs if e["event"] == "disk nearly full"]
    assert entries and entries[0]["component_id"] == "settings"
    assert entries[0]["log_level"] == "warning" and entries[0]["context"] == "settings"
