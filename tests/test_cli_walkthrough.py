"""docs/cli.md's walk-through, run as written, in one shell, on a fresh data dir.

Each line of the walk-through's first sh block runs in the same bash process (so
variables and `$!` carry over), with its output kept per line; then the test checks
the issue's "done when": the host came up detached, the app reached `deployed`,
`lattice events` showed it, `lattice spy` saw a call with its reply, every
`get … -o json` parsed, and `lattice down` left no process and no listening port.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from lattice import natsd
from lattice.cli import docs

ROOT = Path(__file__).resolve().parent.parent


def walkthrough() -> list[str]:
    text = docs.DOC.read_text(encoding="utf-8")
    block = re.search(r"## First run, end to end.*?```sh\n(.*?)```", text, re.S)
    assert block, "docs/cli.md has no walk-through block"
    return [line for line in block[1].splitlines() if line.strip()]


def script(lines: list[str], out: Path) -> str:
    """The walk-through as one bash script that keeps each line's stdout, stderr and
    exit code in `out/{n}.*`."""
    parts = ["set -u"]
    for n, line in enumerate(lines):
        o, e = shlex.quote(str(out / f"{n}.out")), shlex.quote(str(out / f"{n}.err"))
        rc = shlex.quote(str(out / f"{n}.rc"))
        if line.rstrip().endswith("&"):
            parts.append(f"{{ {line.rstrip()[:-1]} ; }} 2> {e} &")
        else:
            parts.append(f"{{ {line} ; }} > {o} 2> {e}; echo $? > {rc}")
    return "\n".join(parts) + "\nwait\n"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def leftover_processes(marker: str) -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{d.name}: {cmd}")
    return found


def test_docs_cli_walkthrough_end_to_end(tmp_path: Path, built: dict[str, Path]) -> None:
    lines = walkthrough()
    work, out, data = tmp_path / "work", tmp_path / "out", tmp_path / "data"
    for d in (work, out):
        d.mkdir()
    (work / "manifests").symlink_to(ROOT / "manifests")
    port = natsd.free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "LATTICE_NATS_URL": f"nats://127.0.0.1:{port}",
        "LATTICE_DATA_DIR": str(data),
        "LATTICE_CONFIG_DIR": str(tmp_path / "config"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("LATTICE_LATTICE", None)
    env.pop("LATTICE_CONTEXT", None)
    try:
        subprocess.run(
            ["bash", "-c", script(lines, out)], cwd=work, env=env, timeout=600, check=False
        )
    finally:
        # Whatever happened, stop what the walk-through started.
        subprocess.run(
            [sys.executable, "-m", "lattice", "down", "--data-dir", str(data)],
            env=env,
            capture_output=True,
            timeout=120,
        )

    def step(prefix: str) -> tuple[str, str, int]:
        n = next(i for i, line in enumerate(lines) if line.startswith(prefix))
        rc_file = out / f"{n}.rc"
        rc = int(rc_file.read_text()) if rc_file.exists() else -1
        text = (out / f"{n}.out").read_text() if (out / f"{n}.out").exists() else ""
        return text, (out / f"{n}.err").read_text(), rc

    stdout, stderr, rc = step("lattice up --detach")
    assert rc == 0, stderr
    assert "is up in the background" in stdout and "logs: " in stdout
    log_file = Path(stdout.split("logs: ", 1)[1].split()[0])
    assert log_file.is_relative_to(data), log_file
    logged = [json.loads(x) for x in log_file.read_text().splitlines() if x.startswith("{")]
    ctl = [x for x in logged if x["event"] == "controller running in this process"]
    assert ctl and ctl[0]["reason"] == "embedded NATS"

    stdout, stderr, rc = step("lattice get hosts")
    assert rc == 0, stderr
    assert re.search(r"\byes\s+embedded\b", stdout), stdout  # controller, NATS

    stdout, stderr, rc = step("lattice app deploy")
    assert rc == 0, stderr
    assert "hello v1 deployed" in stdout
    stdout, stderr, rc = step("lattice app status")
    assert rc == 0 and "hello v1: deployed" in stdout, stdout + stderr

    stdout, stderr, rc = step("lattice events")
    assert rc == 0, stderr
    scaled = [x for x in stdout.splitlines() if "component_scaled" in x and "hello-echo" in x]
    assert scaled, stdout

    stdout, _stderr, rc = step("cat spy.txt")
    assert rc == 0
    seen = r' in +lattice-cli → hello-echo +echo .* ok .*\["hi"\] → "hi"'
    assert re.search(seen, stdout), stdout

    n_json = 0
    for i, line in enumerate(lines):
        if line.startswith("lattice get ") and ("-o json" in line or "--json" in line):
            assert (out / f"{i}.rc").read_text().strip() == "0", (out / f"{i}.err").read_text()
            value = json.loads((out / f"{i}.out").read_text())
            assert isinstance(value, list | dict), line
            n_json += 1
    assert n_json >= 7
    hosts = json.loads((out / f"{lines.index('lattice get hosts -o json')}.out").read_text())
    assert hosts[0]["controller"] is True and hosts[0]["nats"] == "embedded"
    configs = json.loads((out / f"{lines.index('lattice get config -o json')}.out").read_text())
    assert configs == {"greeting": {"text": "hello"}}

    stdout, stderr, rc = step("lattice down")
    assert rc == 0, stderr
    assert "stopped" in stdout and "purged 0 link(s), 1 config(s), 1 app(s)" in stdout
    assert not port_open(port), "the embedded NATS still listens"
    assert leftover_processes(str(data)) == []
    assert not list((data / "run").glob("*.json"))
