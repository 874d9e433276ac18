"""`lattice push|pull|inspect`, `lattice get artifacts`, `lattice delete artifact` as a
user runs them: real processes against the test NATS server and a real registry."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from lattice.artifacts.refs import sha256_digest
from tests.test_oci_registry import DistributionRegistry

LATTICE = [sys.executable, "-m", "lattice"]


def run(*args: str, url: str, lattice: str, stdin: str | None = None, **env: str):
    return subprocess.run(
        [*LATTICE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LATTICE_NATS_URL": url, "LATTICE_LATTICE": lattice, **env},
    )


async def cli(*args: str, url: str, lattice: str, **kw):
    return await asyncio.to_thread(run, *args, url=url, lattice=lattice, **kw)


async def test_lattice_artifacts_from_the_command_line(
    nats_url: str, lattice_name: str, built, tmp_path: Path
) -> None:
    echo = built["echo"]
    digest = sha256_digest(echo.read_bytes())
    kw = {"url": nats_url, "lattice": lattice_name}

    r = await cli("push", "lattice://echo:0.1.0", str(echo), "--json", **kw)
    assert r.returncode == 0, r.stderr
    pushed = json.loads(r.stdout)
    assert pushed["digest"] == digest and "lattice:examples/echo@0.1.0" in pushed["exports"]

    r = await cli("get", "artifacts", "--json", **kw)
    assert [a["ref"] for a in json.loads(r.stdout)] == ["lattice://echo:0.1.0"]

    r = await cli("inspect", "lattice://echo:0.1.0", **kw)
    assert r.returncode == 0 and digest in r.stdout
    assert "export lattice:examples/echo@0.1.0;" in r.stdout

    r = await cli("inspect", str(echo), "--json", **kw)
    assert json.loads(r.stdout)["digest"] == digest

    out = tmp_path / "pulled.wasm"
    r = await cli("pull", "lattice://echo:0.1.0", "--save", str(out), **kw)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == echo.read_bytes()

    r = await cli("delete", "artifact", "lattice://echo:0.1.0", **kw)
    assert r.returncode == 0 and "deleted" in r.stdout
    r = await cli("delete", "artifact", "lattice://echo:0.1.0", **kw)
    assert r.returncode == 1 and "holds no artifact echo:0.1.0" in r.stderr


async def test_bad_input_is_one_sentence(nats_url: str, lattice_name: str, tmp_path: Path) -> None:
    kw = {"url": nats_url, "lattice": lattice_name}
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    for args, message in [
        (("push", "lattice://echo", str(notes)), "lattice://NAME:VERSION"),
        (("push", "lattice://echo:1", str(notes)), "not a WebAssembly file"),
        (("push", "lattice://echo:1", str(tmp_path / "nope.wasm")), "cannot read"),
        (("pull", "ghcr.io/org/app"), "--allow-latest"),
        (("inspect", "lattice://ghost:1.0.0"), "holds no artifact ghost:1.0.0"),
    ]:
        r = await cli(*args, **kw)
        assert r.returncode == 1, (args, r.stdout)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


async def test_oci_push_pull_inspect_with_credentials(
    nats_url: str, lattice_name: str, built, tmp_path: Path
) -> None:
    secret = "cli-secret-0815"
    reg = DistributionRegistry(tmp_path / "reg", users={"ada": secret})
    await reg.start()
    try:
        kw = {"url": nats_url, "lattice": lattice_name}
        ref = f"{reg.address}/examples/echo:0.1.0"
        insecure = ("--allow-insecure-registry", reg.address)
        r = await cli("push", ref, str(built["echo"]), *insecure, **kw)
        assert r.returncode == 1 and "refused access" in r.stderr

        creds = ("--username", "ada", "--password-stdin")
        r = await cli("push", ref, str(built["echo"]), *insecure, *creds, stdin=secret, **kw)
        assert r.returncode == 0, r.stderr
        r = await cli(
            "inspect",
            ref,
            "--json",
            *insecure,
            LATTICE_REGISTRY_USERNAME="ada",
            LATTICE_REGISTRY_PASSWORD=secret,
            **kw,
        )
        assert r.returncode == 0, r.stderr
        body = json.loads(r.stdout)
        assert body["layer_media_type"] == "application/wasm"
        assert body["digest"] == sha256_digest(built["echo"].read_bytes())
        assert "lattice:examples/echo@0.1.0" in body["exports"]
        r = await cli("pull", ref, *insecure, *creds, stdin=secret, **kw)
        assert r.returncode == 0 and body["digest"] in r.stdout
        assert secret not in r.stdout + r.stderr
    finally:
        await reg.stop()
