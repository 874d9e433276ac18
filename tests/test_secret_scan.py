"""No secret in any output: one secured scenario, everything it prints captured and scanned.

The scenario: a nats-server in operator mode; a `lattice up` host (its own process) that
logs in with a `.creds` file and mints each provider a NATS user with the account's
signing key, exports spans to an OTLP receiver here and serves /metrics; the CLI logs in
with creds of its own. A Vault (OpenBao) keyvalue provider is linked with the token in
secret config; a component is pulled from a registry with htpasswd auth, the password
in named config. Failures are provoked on purpose: a pull with the wrong password, a
link whose Vault token is wrong (its calls are refused), a link the provider refuses
(no address) and a call with no link, because an error message is where a secret most
likely slips through.

Captured: the host's stdout and stderr at debug level (the providers' output is relayed
there), every CLI command's stdout and stderr (`push`, `get inventory`, `get hosts`,
`link get`, `config get`, `call`, `events` replayed with heartbeats, `spy -o json`),
the events as they arrive, the error messages the client API raises, /metrics,
/livez, /readyz, and every OTLP export request decoded in full (attributes, status,
resource). Each corpus must be non-empty, the scanner must find a secret planted in
each, and then no secret may be found anywhere: Vault tokens, registry passwords, the
host's and the CLI's creds (JWT and seed), the signing, operator and account seeds, in
the forms tests/secret_scan.py lists, and anything seed- or JWT-shaped at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from lattice import natsd, natsjwt
from lattice.client import LatticeClient, LatticeError
from lattice.natsauth import NatsAuth
from lattice.protocol.invocation import InvocationError
from tests.events import EventRecorder
from tests.otlp import OtlpReceiver
from tests.secret_scan import Secret, creds_secrets, scan
from tests.servers import VaultServer
from tests.test_nats_auth import server
from tests.test_oci_registry import DistributionRegistry

KV = ("wasi", "keyvalue", ["store", "atomics"])
INCREMENT = "lattice:examples/counter.increment"
ECHO = "lattice:examples/echo.echo"


class FullOtlpReceiver(OtlpReceiver):
    """The suite's receiver, also keeping each export request in protobuf text form:
    every attribute, event, status message and resource field, not just the span list."""

    def __init__(self) -> None:
        super().__init__()
        self.dumps: list[str] = []

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp keeps it: the parent reads it again
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        self.dumps.append(str(req))
        return await super()._traces(request)


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


async def _run(env: dict[str, str], *args: str, stdin: bytes | None = None) -> tuple[int, str]:
    """One CLI command as a user runs it; its exit code and all it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lattice", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, f"$ lattice {' '.join(args)}\n{out.decode()}\n{err.decode()}\n"


async def _wait_for_host(client: LatticeClient, proc: asyncio.subprocess.Process) -> str:
    for _ in range(300):
        if proc.returncode is not None:
            raise AssertionError(f"lattice up exited with {proc.returncode}")
        hosts = await client.hosts(wait=0.3)
        if hosts:
            return hosts[0].id
        await asyncio.sleep(0.1)
    raise AssertionError("the host never answered host.ping")


async def test_no_secret_in_any_output(
    tmp_path: Path, lattice_name: str, linked_refs: dict[str, str], built: dict[str, Path]
) -> None:
    started = time.monotonic()
    made = natsjwt.OperatorSetup.new()
    host_creds_text, cli_creds_text = made.user_creds("host"), made.user_creds("cli")
    host_creds = _private(tmp_path / "host.creds", host_creds_text)
    cli_creds = _private(tmp_path / "cli.creds", cli_creds_text)
    signing_key = _private(tmp_path / "signing.nk", made.signing.seed + "\n")
    stranger_text = natsjwt.OperatorSetup.new().user_creds("stranger")  # another operator's
    stranger = _private(tmp_path / "stranger.creds", stranger_text)

    reg_password, wrong_password = "reg-pw-Zq8#w:x/9", "reg-wrong-Lk2%pw"
    wrong_token, unused_token = "s.wrong-vault-token-b7f1", "s.noaddr-vault-token-41c9"
    vault = VaultServer(tmp_path / "bao")
    registry = DistributionRegistry(tmp_path / "registry", users={"ada": reg_password})
    receiver = FullOtlpReceiver()
    secrets = [
        Secret("vault root token", vault.token),
        Secret("wrong vault token", wrong_token),
        Secret("vault token of a refused link", unused_token),
        Secret("registry password", reg_password, username="ada"),
        Secret("wrong registry password", wrong_password, username="ada"),
        *creds_secrets("host creds", host_creds_text),
        *creds_secrets("CLI creds", cli_creds_text),
        *creds_secrets("refused creds", stranger_text),
        Secret("account signing key", made.signing.seed, "seed"),
        Secret("account key", made.account.seed, "seed"),
        Secret("operator key", made.operator.seed, "seed"),
    ]
    errors: list[str] = []
    cli_out: list[str] = []

    await asyncio.gather(vault.start(), registry.start(), receiver.start())
    admin = f"127.0.0.1:{natsd.free_port()}"
    host_out, host_err = tmp_path / "host.out", tmp_path / "host.err"
    proc: asyncio.subprocess.Process | None = None
    (tmp_path / "nats").mkdir()
    try:
        async with server(tmp_path / "nats", made.server_config()) as srv:
            env = {**os.environ, "LATTICE_NATS_URL": srv.url, "LATTICE_LATTICE": lattice_name}
            cli_env = {**env, "LATTICE_CREDS": str(cli_creds)}
            oci_ref = f"{registry.address}/lattice/echo:0.1.0"
            code, out = await _run(
                cli_env, "push", oci_ref, str(built["echo"]), "--username", "ada",
                "--password-stdin", "--allow-insecure-registry", registry.address,
                stdin=reg_password.encode() + b"\n",
            )  # fmt: skip
            cli_out.append(out)
            assert code == 0, out
            code, out = await _run({**env, "LATTICE_CREDS": str(stranger)}, "get", "hosts")
            cli_out.append(out)
            assert code != 0 and "authorization violation" in out, out

            with host_out.open("wb") as o, host_err.open("wb") as e:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "lattice", "up", "--no-embedded-nats",
                    "--no-controller", "--creds", str(host_creds),
                    "--account-signing-key", str(signing_key),
                    "--data-dir", str(tmp_path / "host"), "--log-level", "debug",
                    "--log-format", "json", "--heartbeat-interval", "1",
                    "--otlp-endpoint", receiver.url, "--admin-addr", admin,
                    "--allow-insecure-registry", registry.address,
                    stdin=asyncio.subprocess.DEVNULL, stdout=o, stderr=e,
                    env={**env, "LATTICE_REGISTRY_CONFIG": f"{registry.address}=regcreds"},
                )  # fmt: skip
            client = await LatticeClient.connect(
                srv.url, lattice_name, timeout=10, auth=NatsAuth(creds=cli_creds)
            )
            async with client:
                rec = await EventRecorder.start(client.nc, lattice_name)
                host_id = await _wait_for_host(client, proc)
                await _scenario(
                    client, host_id, cli_env, vault, registry, oci_ref, linked_refs,
                    (reg_password, wrong_password, wrong_token, unused_token), errors, cli_out,
                )  # fmt: skip
                async with httpx.AsyncClient(base_url=f"http://{admin}", timeout=5) as http:
                    admin_text = ""
                    for path in ("/metrics", "/livez", "/readyz"):
                        admin_text += f"GET {path}\n{(await http.get(path)).text}\n"
                await receiver.wait_for(
                    lambda spans: (
                        any(s.name.startswith("invoke") for s in spans)
                        and any(s.resource.get("service.name") != "lattice-host" for s in spans)
                    ),
                    timeout=15,
                )
                code, out = await _run(
                    cli_env, "events", "-o", "json", "--heartbeats", "--since", "10m",
                    "--no-follow",
                )  # fmt: skip
                cli_out.append(out)
                assert code == 0 and "host_heartbeat" in out, out
                events = json.dumps(rec.events, indent=1)
                await rec.stop()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.gather(vault.stop(), registry.stop(), receiver.stop())

    corpora = {
        "host stderr (host and provider logs)": host_err.read_text(errors="replace"),
        "host stdout": host_out.read_text(errors="replace"),
        "CLI output": "".join(cli_out),
        "events as they came": events,
        "client API errors": "\n".join(errors),
        "admin endpoints": admin_text,
        "OTLP exports": "\n".join(receiver.dumps),
    }
    for n, (name, text) in enumerate(corpora.items()):  # kept for a failure's post-mortem
        (tmp_path / f"captured-{n}.txt").write_text(f"{name}\n{text}")
    # -- each corpus holds what it should (so an empty capture cannot pass) ---------------
    host_log = corpora["host stderr (host and provider logs)"]
    assert "provider output" in host_log and "provider identity minted" in host_log, host_log
    assert "lattice_" in admin_text and "GET /readyz" in admin_text
    assert "component_scale_failed" in events and "linkdef_set" in events
    for what in ("host_heartbeat", '"direction"', "refused access", "no link"):
        assert what in corpora["CLI output"], what
    assert "lattice.outcome" in corpora["OTLP exports"]
    assert len(errors) >= 5, errors
    assert all(text.strip() for name, text in corpora.items() if name != "host stdout")

    # -- the scanner finds what is planted, in every corpus and every form ----------------
    for name, text in corpora.items():
        for secret in secrets:
            for form, needle in secret.forms().items():
                middle = len(text) // 2
                planted = {name: text[:middle] + needle + text[middle:]}
                hits = scan(planted, [secret])
                assert any(f.secret == secret.name and f.form == form for f in hits), (
                    name,
                    secret.name,
                    form,
                )
    assert scan({"x": made.user_creds("x")}, []), "a seed and a JWT no test knows are found"

    # -- and nothing is there ------------------------------------------------------------
    leaks = scan(corpora, secrets)
    assert not leaks, "secrets in the output:\n" + "\n".join(map(str, leaks))
    size = sum(map(len, corpora.values()))
    took = time.monotonic() - started
    print(f"scanned {size} characters of {len(corpora)} outputs in {took:.1f} s")


async def _scenario(
    client: LatticeClient,
    host_id: str,
    cli_env: dict[str, str],
    vault: VaultServer,
    registry: DistributionRegistry,
    oci_ref: str,
    refs: dict[str, str],
    values: tuple[str, str, str, str],
    errors: list[str],
    cli_out: list[str],
) -> None:
    """Everything the hosts and the CLI are made to do, failures included."""
    reg_password, wrong_password, wrong_token, unused_token = values

    async def cli(*args: str, expect: int | None = 0) -> str:
        code, out = await _run(cli_env, *args)
        cli_out.append(out)
        assert expect is None or code == expect, out
        return out

    async def failing(what: Any) -> None:
        try:
            await what
        except (LatticeError, InvocationError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            raise AssertionError("expected a failure")

    # the registry: first with the wrong password in the named config, then the right one
    await client.put_config(
        "regcreds", {"username": "ada", "password": wrong_password}, ["password"], wait=10
    )
    await failing(client.scale_component(host_id, oci_ref, "echo", 1, wait=60))
    await client.put_config(
        "regcreds", {"username": "ada", "password": reg_password}, ["password"], wait=10
    )
    await client.scale_component(host_id, oci_ref, "echo", 1, wait=120)

    # Vault: the right token, a wrong one, and a config the provider refuses (no address)
    vault_cfg = {"addr": vault.addr, "mount": "secret"}
    await client.put_config("vault", {**vault_cfg, "token": vault.token}, ["token"], wait=10)
    await client.put_config("vault-bad", {**vault_cfg, "token": wrong_token}, ["token"], wait=10)
    await client.put_config("vault-noaddr", {"token": unused_token}, ["token"], wait=10)
    await client.start_provider(host_id, "builtin://keyvalue-vault", "kv-vault")
    await client.scale_component(host_id, refs["counter"], "counter", 1)
    await client.scale_component(host_id, refs["counter"], "counter-bad", 1)
    await client.scale_component(host_id, refs["counter"], "counter-noaddr", 1)
    await client.put_link("counter", "kv-vault", *KV, target_config=["vault"], wait=10)
    await client.put_link("counter-bad", "kv-vault", *KV, target_config=["vault-bad"], wait=10)
    with contextlib.suppress(LatticeError):  # refused by the provider, or set and then unusable
        await client.put_link(
            "counter-noaddr", "kv-vault", *KV, target_config=["vault-noaddr"], wait=10
        )
    await failing(client.put_link("counter", "kv-other", *KV, target_config=["vault-bad"]))

    # spy on the component whose calls fail, while calls go on
    spy = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lattice", "spy", "counter-bad", "-o", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env,
    )  # fmt: skip
    assert spy.stdout is not None
    seen = b""
    for _ in range(40):  # until its lease has reached the host and a call shows
        await client.call("counter-bad", INCREMENT, ["visits"], timeout=10)
        with contextlib.suppress(TimeoutError):
            seen = await asyncio.wait_for(spy.stdout.readline(), 0.5)
            break
    assert seen, "lattice spy showed no call"
    for n in range(3):
        assert await client.call("counter", INCREMENT, ["visits"], timeout=10) == {"ok": n + 1}
        refused = await client.call("counter-bad", INCREMENT, ["visits"], timeout=10)
        assert "err" in refused, refused
        errors.append(f"counter-bad: {refused}")
        assert await client.call("echo", ECHO, ["from the registry"]) == "from the registry"
    await client.call_traced("counter", INCREMENT, ["traced"], timeout=10)
    errors.append(f"counter-noaddr: {await client.call('counter-noaddr', INCREMENT, ['x'])}")
    await asyncio.sleep(0.3)
    assert spy.stderr is not None
    out, err = asyncio.create_task(spy.stdout.read()), asyncio.create_task(spy.stderr.read())
    spy.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(spy.wait(), 10)
    except TimeoutError:  # seen now and then: Ctrl-C does not always end it (reported)
        spy.kill()
        await spy.wait()
    shown = (seen + await out).decode()
    cli_out.append(f"$ lattice spy counter-bad -o json\n{shown}\n{(await err).decode()}\n")

    # the CLI's views and a few of its failures
    await cli("get", "inventory", "-o", "json")
    await cli("get", "hosts", "-o", "json")
    await cli("link", "get", "-o", "json")
    for name in ("vault", "vault-bad", "regcreds"):
        await cli("config", "get", name)
    await cli("call", "counter-bad", INCREMENT, '"visits"', expect=None)
    await cli("call", "counter-noaddr", INCREMENT, '"visits"', expect=None)
    await cli("scale", "component", oci_ref, "echo2", "--count", "1", "--host", host_id,
              expect=None)  # fmt: skip
    await client.put_config(
        "regcreds", {"username": "ada", "password": wrong_password}, ["password"], wait=10
    )
    code, out = await _run(
        cli_env, "pull", oci_ref, "--allow-insecure-registry", registry.address,
        "--username", "ada", "--password-stdin", stdin=wrong_password.encode() + b"\n",
    )  # fmt: skip
    cli_out.append(out)
    assert code != 0 and "check the credentials" in out, out
    await failing(
        client.scale_component(host_id, oci_ref.replace("0.1.0", "0.2.0"), "echo3", 1, wait=60)
    )
