"""`lattice up` and the CLI as a user runs them: real processes, embedded NATS, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from host.config import HostConfig
from host.host import Host, HostStartError
from lattice import natsd

LATTICE = [sys.executable, "-m", "lattice"]


def cli(*args: str, url: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LATTICE, *args, "--nats-url", url, "--lattice", "clitest"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lattice_up(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str, IO[str]]:
    """`lattice up` as a user starts it, with JSON logs in `tmp_path/host.log` and a free
    port for the (embedded) NATS; returns the process, the NATS URL and the open log."""
    url = f"nats://127.0.0.1:{natsd.free_port()}"
    log = (tmp_path / "host.log").open("w+")
    proc = subprocess.Popen(
        [
            *LATTICE,
            "up",
            "--nats-url",
            url,
            "--lattice",
            "clitest",
            "--data-dir",
            str(tmp_path),
            "--log-format",
            "json",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, url, log


def ok(url: str, *args: str) -> str:
    """A CLI command that must succeed; its standard output."""
    r = cli(*args, url=url)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    return r.stdout


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def wait_for_host(url: str, proc: subprocess.Popen[str], deadline_s: float = 30) -> dict:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"lattice up exited early with {proc.returncode}")
        r = cli("get", "hosts", "-o", "json", "--timeout", "0.5", url=url)
        if r.returncode == 0 and r.stdout.strip():
            return json.loads(r.stdout)[0]
        time.sleep(0.2)
    raise AssertionError("host never answered host.ping")


def test_lattice_up_with_embedded_nats_end_to_end(tmp_path: Path, built: dict[str, Path]) -> None:
    proc, url, log = lattice_up(tmp_path, "--label", "zone=test", "--heartbeat-interval", "1")
    try:
        host = wait_for_host(url, proc)
        assert host["labels"]["zone"] == "test" and host["id"].startswith("N")

        r = cli("scale", "component", str(built["echo"]), "echo", "--count", "2", url=url)
        assert r.returncode == 0, r.stderr
        assert f"echo scaled to 2 on {host['id']}" in r.stdout

        r = cli("call", "echo", "echo", '"hi there"', url=url)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == "hi there"

        r = cli("call", "echo", "lattice:examples/types-demo.divide", "1", "0", url=url)
        assert json.loads(r.stdout) == {"err": "division by zero"}

        r = cli("call", "echo", "reverse-bytes", '{"$bytes": "AAH/"}', url=url)
        assert json.loads(r.stdout) == {"$bytes": "/wEA"}

        r = cli("call", "echo", "nope", url=url)
        assert r.returncode == 1
        assert "unknown-function" in r.stderr and "lattice:examples/echo.echo" in r.stderr
        assert "Traceback" not in r.stderr

        r = cli("call", "echo", "echo", "{bad", url=url)
        assert r.returncode == 2 and "argument 1 is not valid JSON" in r.stderr

        r = cli("call", "ghost", "echo", '"x"', url=url)
        assert r.returncode == 1 and "no host runs component 'ghost'" in r.stderr

        r = cli("get", "inventory", host["id"], "--json", url=url)
        inv = json.loads(r.stdout)
        assert [c["id"] for c in inv["components"]] == ["echo"]
        assert inv["components"][0]["max_instances"] == 2

        r = cli("scale", "component", str(tmp_path / "missing.wasm"), "m", url=url)
        assert r.returncode == 1 and "no such file" in r.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        kill(proc)
    log.seek(0)
    lines = [json.loads(x) for x in log.read().splitlines() if x.startswith("{")]
    messages = [x["event"] for x in lines]
    assert any("embedded nats-server" in m for m in messages)
    assert messages.index("component stopped") < messages.index("host stopped")
    assert not any("SN" in json.dumps(x) and "seed" in json.dumps(x).lower() for x in lines)
    r = cli("get", "hosts", "--timeout", "0.3", url=url, timeout=20)
    assert r.returncode == 1 and "cannot reach NATS" in r.stderr  # embedded server is gone


def test_up_refuses_bad_options(tmp_path: Path) -> None:
    r = subprocess.run(
        [*LATTICE, "up", "--label", "novalue", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "key=value" in r.stderr
    r = subprocess.run(
        [*LATTICE, "up", "--label", "hostcore.os=dos", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "hostcore." in r.stderr
    r = subprocess.run(
        [*LATTICE, "up", "--host-seed", "SNOTASEED", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "seed" in r.stderr and "SNOTASEED" not in r.stderr


async def test_unreachable_nats_is_a_clear_error(tmp_path: Path) -> None:
    port = natsd.free_port()
    local = Host(
        HostConfig(nats_url=f"nats://127.0.0.1:{port}", data_dir=tmp_path, embedded_nats=False)
    )
    with pytest.raises(HostStartError, match="no NATS server answers"):
        await local.start()
    remote = Host(HostConfig(nats_url="nats://nats.lattice-test.invalid:4222", data_dir=tmp_path))
    with pytest.raises(HostStartError, match="embedded server is only started for local URLs"):
        await remote.start()


def test_help_lists_the_commands() -> None:
    r = subprocess.run([*LATTICE, "--help"], capture_output=True, text=True, timeout=60)
    for word in ("up", "get", "scale", "call", "update"):
        assert word in r.stdout
    r = subprocess.run(
        [*LATTICE, "up", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    for opt in (
        "--nats-url",
        "--lattice",
        "--label",
        "--host-seed",
        "--heartbeat-interval",
        "--data-dir",
        "--log-format",
        "--log-level",
        "LATTICE_NATS_URL",
    ):
        assert opt in r.stdout, opt


def up_and_read_log(tmp_path: Path, url: str | None, *extra: str) -> tuple[dict, list[dict]]:
    """Start `lattice up` (on `url`, or on its embedded NATS when None), read what
    `get hosts -o json` says about it, stop it; its host row and its JSON log lines."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if url is None:
        proc, url, log = lattice_up(tmp_path, *extra)
    else:
        log = (tmp_path / "host.log").open("w+")
        where = ["--nats-url", url, "--lattice", "clitest", "--data-dir", str(tmp_path)]
        proc = subprocess.Popen(
            [*LATTICE, "up", *where, "--log-format", "json", *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        host = wait_for_host(url, proc)
        r = cli("app", "list", url=url)
        host["app_list_rc"], host["app_list_err"] = r.returncode, r.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        kill(proc)
    log.seek(0)
    return host, [json.loads(x) for x in log.read().splitlines() if x.startswith("{")]


def controller_line(lines: list[dict]) -> dict:
    found = [x for x in lines if "controller" in x["event"] and "process" in x["event"]]
    assert len(found) == 1, [x["event"] for x in lines]
    return found[0]


def test_up_runs_a_controller_only_with_its_embedded_nats_unless_told(
    tmp_path: Path, nats_url: str
) -> None:
    host, lines = up_and_read_log(tmp_path / "a", nats_url)
    assert (host["controller"], host["nats"]) == (False, "external")
    line = controller_line(lines)
    assert line["event"] == "no controller in this process"
    assert line["reason"] == "joined an existing NATS"
    assert host["app_list_rc"] == 1 and "no controller runs" in host["app_list_err"]
    assert "hint: " in host["app_list_err"]

    host, lines = up_and_read_log(tmp_path / "b", nats_url, "--controller")
    assert (host["controller"], host["nats"]) == (True, "external")
    assert controller_line(lines)["reason"] == "--controller"
    assert host["app_list_rc"] == 0, host["app_list_err"]

    host, lines = up_and_read_log(tmp_path / "c", None, "--no-controller")
    assert (host["controller"], host["nats"]) == (False, "embedded")
    assert controller_line(lines)["reason"] == "--no-controller"
