"""The README's links-and-providers walk-through, run as a user would: `lattice up` in a
process and every step through the `lattice` command."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.test_cli import cli, kill, lattice_up, wait_for_host
from tests.test_cli import ok as run_ok


def test_hot_swap_walkthrough_from_the_cli(
    tmp_path: Path, linked_refs: dict[str, str], redis_server, vault_server
) -> None:
    proc, url, log = lattice_up(tmp_path)

    def ok(*args: str) -> str:
        return run_ok(url, *args)

    try:
        wait_for_host(url, proc)
        ok("scale", "component", linked_refs["counter"], "counter", "--count", "4")
        ok("config", "put", "redis", f"url={redis_server.url(7)}")
        ok(
            "config",
            "put",
            "vault",
            f"addr={vault_server.addr}",
            "mount=secret",
            "--secret",
            f"token={vault_server.token}",
        )
        assert json.loads(ok("config", "get", "vault"))["token"] == "***"
        assert "started on" in ok("start", "provider", "builtin://keyvalue-redis", "kv-redis")
        ok("start", "provider", "builtin://keyvalue-vault", "kv-vault")

        r = cli("call", "counter", "increment", '"visits"', url=url)
        assert "no link" in json.loads(r.stdout)["err"]

        ok(
            "link",
            "put",
            "counter",
            "kv-redis",
            "wasi:keyvalue",
            "-i",
            "store",
            "-i",
            "atomics",
            "--target-config",
            "redis",
        )
        assert json.loads(ok("call", "counter", "increment", '"visits"')) == {"ok": 1}
        assert json.loads(ok("call", "counter", "increment", '"visits"')) == {"ok": 2}

        r = cli(
            "link",
            "put",
            "counter",
            "kv-vault",
            "wasi:keyvalue",
            "-i",
            "store",
            "-i",
            "atomics",
            "--target-config",
            "vault",
            url=url,
        )
        assert r.returncode == 1 and "--replace" in r.stderr
        ok(
            "link",
            "put",
            "counter",
            "kv-vault",
            "wasi:keyvalue",
            "-i",
            "store",
            "-i",
            "atomics",
            "--target-config",
            "vault",
            "--replace",
        )
        assert json.loads(ok("call", "counter", "increment", '"visits"')) == {"ok": 1}  # Vault

        links = json.loads(ok("link", "get", "--json"))
        assert [(lk["source_id"], lk["target"]) for lk in links] == [("counter", "kv-vault")]
        inv = json.loads(ok("get", "inventory", "--json"))
        assert {p["id"] for p in inv[0]["providers"]} == {"kv-redis", "kv-vault"}
        assert vault_server.token not in json.dumps(inv)

        ok("link", "del", "counter", "wasi:keyvalue")
        ok("stop", "provider", "kv-redis")
        r = cli("config", "del", "nope", url=url)
        assert r.returncode == 1 and "no config named" in r.stderr
        r = cli("link", "put", "counter", "kv-redis", "keyvalue", "-i", "store", url=url)
        assert r.returncode == 2 and "namespace:package" in r.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        kill(proc)
    log.seek(0)
    text = log.read()
    assert vault_server.token not in text, "a secret reached the host log"
