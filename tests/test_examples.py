"""Examples that deploy as shipped: manifests name the pushed examples, and the README's
quick start runs verbatim."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from components.build import example_refs
from lattice import natsd
from lattice.artifacts import refs

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "manifests").glob("*.yaml"))
QUICK_START_PORT = 8080


def images(path: Path) -> list[str]:
    body = yaml.safe_load(path.read_text())
    return [c["properties"]["image"] for c in body["spec"]["components"]]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_reference_the_pushed_examples(path: Path) -> None:
    assert "/path/to/" not in path.read_text()
    pushed = set(example_refs().values())
    for image in images(path):
        if image.startswith("builtin://"):
            continue
        assert isinstance(refs.parse(image), refs.LatticeRef), image
        assert image in pushed, f"{path.name}: {image} is not pushed by components.build --push"


def quick_start_blocks() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the quick start has a terminal-1 and a terminal-2 block"
    return blocks[0], blocks[1]


def fake_checkout(tmp: Path) -> Path:
    """A working directory laid out like a checkout whose `.venv` is this interpreter's,
    so the README's `. .venv/bin/activate` works as written (CI's venv is elsewhere)."""
    work = tmp / "checkout"
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / ".venv" / "bin" / "activate").write_text(
        f'export VIRTUAL_ENV="{sys.prefix}"\nexport PATH="{Path(sys.executable).parent}:$PATH"\n'
    )
    for name in ("manifests", "components"):
        (work / name).symlink_to(ROOT / name)
    return work


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_quick_start_runs_verbatim(tmp_path: Path) -> None:
    if not port_free(QUICK_START_PORT):
        pytest.fail(f"port {QUICK_START_PORT} is taken; the README quick start serves on it")
    terminal1, terminal2 = quick_start_blocks()
    work = fake_checkout(tmp_path)
    url = f"nats://127.0.0.1:{natsd.free_port()}"
    env = {
        **os.environ,
        "LATTICE_NATS_URL": url,  # instead of 4222, which the machine may run
        "LATTICE_DATA_DIR": str(tmp_path / "data"),
        "LATTICE_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("LATTICE_LATTICE", None)
    log = (tmp_path / "terminal1.log").open("w")
    host = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", terminal1],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and host.poll() is None:
            r = subprocess.run(
                ["lattice", "get", "hosts", "--json"], env=env, capture_output=True, text=True
            )
            if r.returncode == 0 and '"id"' in r.stdout:
                ready = True
                break
            time.sleep(0.5)
        assert ready, f"lattice up did not answer; see {tmp_path / 'terminal1.log'}"
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", terminal2],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=1000,
        )
        assert r.returncode == 0, f"terminal 2 failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        lines = r.stdout.splitlines()
        assert "1" in lines and "2" in lines and lines.index("1") < lines.index("2")
        assert '"hello, lattice"' in r.stdout and '"v2"' in r.stdout
        assert "division by zero" in r.stdout
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGTERM)
            try:
                host.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(host.pid, signal.SIGKILL)
                host.wait(10)
        log.close()
    assert port_free(QUICK_START_PORT), "the http-server provider outlived its host"
