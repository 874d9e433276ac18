"""`lattice up --controller` and `lattice app …` as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.test_cli import LATTICE, cli, kill, lattice_up, wait_for_host
from tests.test_cli import ok as run_ok


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """`lattice app validate` needs no lattice: it only reads the file."""
    return subprocess.run(
        [*LATTICE, "app", "validate", str(path)], capture_output=True, text=True, timeout=60
    )


def test_app_lifecycle_from_the_cli(tmp_path: Path, echo_ref: str, echo_v2_ref: str) -> None:
    proc, url, _log = lattice_up(tmp_path, "--controller", "--label", "zone=east")

    def ok(*args: str) -> str:
        return run_ok(url, *args)

    def write(version: str, image: str) -> Path:
        path = tmp_path / f"app-{version}.yaml"
        path.write_text(
            "apiVersion: core.oam.dev/v1beta1\nkind: Application\n"
            f"metadata:\n  name: hello\n  annotations:\n    version: {version}\n"
            "spec:\n  components:\n    - name: echo\n      type: component\n"
            f"      properties:\n        image: {image}\n"
            "      traits:\n        - type: spreadscaler\n          properties:\n"
            "            instances: 2\n            spread:\n              - name: east\n"
            "                requirements: {zone: east}\n"
        )
        return path

    try:
        wait_for_host(url, proc)
        bad = tmp_path / "bad.yaml"
        bad.write_text("apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {}\n")
        r = validate(bad)
        assert r.returncode == 1 and "metadata.name" in r.stderr
        r = validate(write("v1", echo_ref))
        assert r.returncode == 0 and "is valid" in r.stdout

        assert "deploying hello v1" in ok("app", "deploy", str(write("v1", echo_ref)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(ok("app", "status", "hello", "--json"))
            if status["state"] == "deployed":
                break
            time.sleep(0.3)
        assert status["state"] == "deployed" and status["components"][0]["running"] == 2
        assert json.loads(ok("call", "hello-echo", "echo.version")) == "v1"

        ok("app", "deploy", str(write("v2", echo_v2_ref)))
        deadline = time.monotonic() + 60
        while json.loads(ok("call", "hello-echo", "echo.version")) != "v2":
            assert time.monotonic() < deadline, "never upgraded"
            time.sleep(0.3)
        assert "v1\nv2  (deployed)" in ok("app", "versions", "hello")
        ok("app", "deploy", "hello", "--version", "v1")  # rollback
        assert "rollback" in ok("app", "history", "hello")
        models = json.loads(ok("app", "list", "--json"))
        assert [(m["name"], m["deployed_version"]) for m in models] == [("hello", "v1")]

        r = cli("app", "delete", "hello", url=url)
        assert r.returncode == 1 and "undeploy it first" in r.stderr
        ok("app", "undeploy", "hello")
        deadline = time.monotonic() + 60
        while cli("call", "hello-echo", "echo.version", url=url).returncode == 0:
            assert time.monotonic() < deadline, "components stayed after undeploy"
            time.sleep(0.3)
        ok("app", "delete", "hello")
        r = cli("app", "status", "hello", url=url)
        assert r.returncode == 1 and "no application named 'hello'" in r.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        kill(proc)
