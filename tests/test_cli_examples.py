"""Every `Example:` of every command (as docs/cli.md shows them) run against a live
lattice, in an order where each one makes sense.

SCENARIO lists the examples in that order; the test first checks that it holds every
example the commands have, so a new example cannot go unrun. Placeholders are swapped
for the real thing (the host id for `NBXYZ…`, the built echo component for
`./echo.wasm`, the test's Redis, Vault and NATS for their example addresses).
Long-running commands (`events`, `spy`, `--watch`, `up`, `controller`) run until they
have shown they work, then get Ctrl-C and must exit 0.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from lattice import natsd
from lattice.cli import build, docs

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = [
    "lattice up --detach",
    "lattice get hosts",
    "lattice get hosts -o json",
    "lattice ctx set prod --nats-url nats://nats.example:4222 --lattice prod --use",
    "lattice ctx use prod",
    "lattice ctx list -o json",
    "lattice ctx del prod",
    "lattice label put NBXYZ… zone=east",
    "lattice label del NBXYZ… zone",
    "lattice scale component ./echo.wasm echo --count 4",
    "lattice call echo echo '\"hello, lattice\"'",
    "lattice call echo lattice:examples/types-demo.divide 7 0",
    "lattice spy echo",
    "lattice update component echo ./echo-v2.wasm",
    "lattice get inventory",
    "lattice get inventory NBXYZ… -o yaml",
    "lattice get components -o json",
    "lattice scale component file:///srv/echo.wasm echo --count 0",
    "lattice config put redis url=redis://127.0.0.1:6380/0",
    "lattice config put vault addr=http://127.0.0.1:8200 --secret token=dev-root",
    "lattice config get vault",
    "lattice get config",
    "lattice get config redis -o json",
    "lattice start provider builtin://keyvalue-redis kv-redis",
    "lattice get providers",
    "lattice scale component ./counter.wasm counter",
    "lattice link put counter kv-redis wasi:keyvalue -i store --target-config redis",
    "lattice spy counter -o json --count 10",
    "lattice link put counter kv-vault wasi:keyvalue -i store --replace",
    "lattice get links",
    "lattice link get -o json",
    "lattice link del counter wasi:keyvalue",
    "lattice config del redis",
    "lattice stop provider kv-redis",
    "lattice app validate manifests/kvcounter.yaml",
    "lattice app deploy manifests/hello.yaml",
    "lattice app deploy hello --version v1",
    "lattice app status hello",
    "lattice app status hello --watch",
    "lattice app get hello -o yaml",
    "lattice app versions hello",
    "lattice app history hello",
    "lattice app list -o json",
    "lattice get apps",
    "lattice app undeploy hello",
    "lattice app delete hello",
    "lattice events",
    "lattice events --type component_scale_failed --since 1h --no-follow",
    "lattice events --host NBXYZ -o json",
    "lattice controller --nats-url nats://10.0.0.5:4222",
    "lattice up",
    "lattice up --label zone=east --nats-url nats://10.0.0.5:4222",
    "lattice stop host NBXYZ…",
    "lattice down --purge",
    "lattice down",
]
# Run until they show they work, then Ctrl-C; the text they must have printed first
# (on stdout, or in their logs on stderr). A Ctrl-C before a host or controller has
# started (on a loaded machine importing wasmtime takes seconds) ends it with 130.
FOLLOWERS = {
    "lattice spy echo": "→ echo",
    "lattice app status hello --watch": "hello v1: deployed",
    "lattice events": "component_scaled",
    "lattice events --host NBXYZ -o json": "",
    "lattice controller --nats-url nats://10.0.0.5:4222": "controller started",
    "lattice up": "host started",
    "lattice up --label zone=east --nats-url nats://10.0.0.5:4222": "host started",
}


def connected(pid: int) -> bool:
    """Whether process `pid` holds an established TCP connection (to NATS, here)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_ESTABLISHED for c in conns)


def test_the_scenario_holds_every_example() -> None:
    every = [e for _, cmd in docs.commands(build()) for e in docs.examples(cmd)]
    mine = [e for e in every if not e.startswith(("lattice push", "lattice pull"))]
    mine = [e for e in mine if not e.startswith(("lattice inspect", "lattice get artifacts"))]
    mine = [e for e in mine if not e.startswith(("lattice delete artifact", "lattice sign"))]
    mine = [e for e in mine if not e.startswith("lattice secure")]  # test_nats_auth runs it
    extra = {"lattice scale component ./counter.wasm counter"}  # the spy's subject
    assert sorted(mine) == sorted(set(SCENARIO) - extra)
    assert set(FOLLOWERS) <= set(SCENARIO)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_example_runs(
    tmp_path: Path,
    built: dict[str, Path],
    linked_refs: dict[str, str],
    redis_server,
    vault_server,
) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    port = natsd.free_port()
    url = f"nats://127.0.0.1:{port}"
    hello = work / "hello.yaml"
    hello.write_text(
        (ROOT / "manifests" / "hello.yaml")
        .read_text()
        .replace("file:///path/to/echo.wasm", built["echo"].as_uri())
        .replace("lattice://echo:0.1.0", built["echo"].as_uri())
    )
    swaps = {
        "./echo.wasm": str(built["echo"]),
        "./echo-v2.wasm": str(built["echo-v2"]),
        "file:///srv/echo.wasm": built["echo"].as_uri(),
        "./counter.wasm": linked_refs["counter"],
        "redis://127.0.0.1:6380/0": redis_server.url(3),
        "http://127.0.0.1:8200": vault_server.addr,
        "dev-root": vault_server.token,
        "nats://10.0.0.5:4222": url,
        "manifests/hello.yaml": str(hello),
        "manifests/kvcounter.yaml": str(ROOT / "manifests" / "kvcounter.yaml"),
    }
    env = {
        **os.environ,
        "LATTICE_NATS_URL": url,
        "LATTICE_DATA_DIR": str(data),
        "LATTICE_CONFIG_DIR": str(tmp_path / "config"),
        "COLUMNS": "200",
    }
    for var in ("LATTICE_LATTICE", "LATTICE_CONTEXT", "LATTICE_OUTPUT"):
        env.pop(var, None)
    host_id = ""

    def argv(example: str) -> list[str]:
        out = []
        for w in shlex.split(example)[1:]:
            for old, new in swaps.items():
                w = w.replace(old, new)
            out.append(w.replace("NBXYZ…", host_id).replace("NBXYZ", host_id[:5]))
        return [sys.executable, "-m", "lattice", *out]

    def run(example: str) -> str:
        r = subprocess.run(
            argv(example), capture_output=True, text=True, env=env, cwd=work, timeout=300
        )
        assert r.returncode == 0, f"{example}: exit {r.returncode}: {r.stderr}"
        assert "Traceback" not in r.stderr
        return r.stdout

    def follow(example: str, expect: str, poke: list[str] | None = None) -> None:
        """Run until `expect` shows (poking the lattice with `poke` meanwhile) or 60 s
        pass, but at least 2 s; then Ctrl-C, which must end it with exit 0."""
        proc = subprocess.Popen(
            argv(example),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=work,
        )
        seen: list[str] = []
        logged: list[str] = []
        readers = [
            threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True),  # type: ignore[arg-type]
            threading.Thread(target=lambda: logged.extend(proc.stderr), daemon=True),  # type: ignore[arg-type]
        ]
        for reader in readers:
            reader.start()

        def shown() -> str:
            return "".join(seen) + "".join(logged)

        try:
            start = time.monotonic()
            while time.monotonic() - start < 60:
                # nothing to wait for: until it has connected (it is past its start-up)
                ready = expect in shown() if expect else connected(proc.pid)
                if time.monotonic() - start > 2 and ready:
                    break
                assert proc.poll() is None, f"{example} exited early: {''.join(logged)}"
                if poke:
                    subprocess.run(poke, env=env, capture_output=True, timeout=60)
                time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            for reader in readers:
                reader.join(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = "".join(logged)
        assert proc.returncode == 0, f"{example}: exit {proc.returncode}: {err}"
        assert "Traceback" not in err, f"{example}: {err}"
        assert expect in shown(), f"{example}: {shown()!r}"

    lattice = [sys.executable, "-m", "lattice"]
    try:
        for example in SCENARIO:
            if example in FOLLOWERS:
                poke = None
                if example == "lattice spy echo":
                    poke = [*lattice, "call", "echo", "echo", '"spied"']
                follow(example, FOLLOWERS[example], poke)
                continue
            if example.startswith("lattice spy counter"):
                spy = subprocess.Popen(
                    argv(example),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                try:
                    deadline = time.monotonic() + 120
                    while spy.poll() is None and time.monotonic() < deadline:
                        subprocess.run(
                            [*lattice, "call", "counter", "increment", '"visits"'],
                            env=env,
                            capture_output=True,
                            timeout=60,
                        )
                    out, err = spy.communicate(timeout=60)
                finally:
                    if spy.poll() is None:
                        spy.kill()
                        spy.wait()
                assert spy.returncode == 0, err
                records = [json.loads(x) for x in out.splitlines()]
                assert len(records) == 10
                assert {r["direction"] for r in records} == {"in", "out"}
                continue
            out = run(example)
            if example == "lattice get hosts -o json":
                host_id = json.loads(out)[0]["id"]
    finally:
        subprocess.run([*lattice, "down"], env=env, capture_output=True, timeout=120)
