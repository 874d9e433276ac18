"""The CLI without a lattice: help, docs/cli.md, usage errors, contexts, and the pure
helpers (durations, event lines, app progress, the detached command line)."""

from __future__ import annotations

import io
import json
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from lattice.cli import build, docs, run_main
from lattice.cli.apps import progress, status_table
from lattice.cli.common import CliError, Format, dump, target
from lattice.cli.events import event_line, keep, parse_since
from lattice.cli.spy import spy_line
from lattice.cli.up import child_args, last_error

PY_TYPES = ("<str>", "<int>", "<float>", "<bool>", "<list[", "<path>", "<Path>")


def leaf_commands() -> list[tuple[list[str], Any]]:
    return docs.commands(build())


def help_of(path: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert run_main([*path, "--help"], debug=False) == 0
    return capsys.readouterr().out


def test_every_command_has_an_example_and_words_for_metavars(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    leaves = leaf_commands()
    assert len(leaves) >= 40
    mine = [(p, c) for p, c in leaves if p[0] not in ("push", "pull", "inspect")]
    mine = [(p, c) for p, c in mine if p not in (["get", "artifacts"], ["delete", "artifact"])]
    for path, cmd in mine:
        assert docs.examples(cmd), f"lattice {' '.join(path)} has no example"
        text = help_of(path, capsys)
        for t in PY_TYPES:
            assert t not in text, f"lattice {' '.join(path)} --help shows {t}"
        assert "Example: lattice" in text
    root = help_of([], capsys)
    assert "--install-completion" in root and "<bool>" not in root


def test_docs_cli_md_is_current() -> None:
    assert docs.DOC.read_text(encoding="utf-8") == docs.render(), (
        "docs/cli.md is out of date: run `python -m lattice.cli.docs`"
    )


def test_every_example_in_the_docs_parses() -> None:
    """Each `Example:` line names a real command and passes its option parsing (the
    walk-through test runs the first-run ones against a live lattice)."""
    root = build()
    n = 0
    for path, cmd in leaf_commands():
        for example in docs.examples(cmd):
            words = shlex.split(example)
            assert words[0] == "lattice", example
            assert words[1 : 1 + len(path)] == path, example
            cmd.make_context(" ".join(["lattice", *path]), words[1 + len(path) :])
            n += 1
    assert n >= 50
    assert root.commands["get"].commands.keys() >= {
        "hosts",
        "inventory",
        "links",
        "config",
        "providers",
        "components",
        "apps",
    }


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["gett", "hosts"], 2, "Did you mean 'get'"),
        (["get", "hostz"], 2, "Did you mean 'hosts'"),
        (["get", "hosts", "-o", "xml"], 2, "'xml' is not one of"),
        (["scale", "component", "x"], 2, "Missing argument 'ID'"),
        (["scale", "component", "x", "y", "--count", "-1"], 2, "--count must be 0 or more"),
        (["config", "put", "c", "novalue"], 2, "must look like key=value"),
        (["link", "del", "src", "keyvalue"], 2, "namespace:package"),
        (["events", "--since", "yesterday", "--no-follow"], 2, "neither a duration"),
        (["call", "x", "f", "{bad"], 2, "argument 1 is not valid JSON"),
        (["get", "hosts", "--nats-url", "nats://127.0.0.1:1"], 1, "cannot reach NATS"),
    ],
)
def test_errors_are_one_line_with_a_hint_and_the_right_exit_code(
    args: list[str], code: int, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(args, debug=False) == code
    err = capsys.readouterr().err
    assert text in err
    assert "Traceback" not in err
    assert err.startswith("error: ") and "hint: " in err
    assert len([x for x in err.splitlines() if x.startswith("error:")]) == 1


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["get", "hosts", "--nats-url", "nats://127.0.0.1:1"], debug=True) == 1
    assert "Traceback" in capsys.readouterr().err


def test_contexts_are_stored_and_flags_and_env_override_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LATTICE_CONFIG_DIR", str(tmp_path))
    for var in ("LATTICE_CONTEXT", "LATTICE_NATS_URL", "LATTICE_LATTICE", "LATTICE_CREDS"):
        monkeypatch.delenv(var, raising=False)
    assert target(None, None).nats_url == "nats://127.0.0.1:4222"
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    assert (
        run_main(["ctx", "set", "prod", "--nats-url", "nats://prod:4222", "--lattice", "p"], False)
        == 0
    )
    assert (
        run_main(
            ["ctx", "set", "dev", "--nats-url", "nats://dev:4222", "--creds", str(creds)], False
        )
        == 0
    )
    assert run_main(["ctx", "use", "dev"], False) == 0
    t = target(None, None)
    assert (t.nats_url, t.lattice, t.creds) == ("nats://dev:4222", "default", str(creds))
    assert target("nats://flag:1", "x").nats_url == "nats://flag:1"  # a flag wins
    monkeypatch.setenv("LATTICE_CONTEXT", "prod")
    assert (target(None, None).nats_url, target(None, None).lattice) == ("nats://prod:4222", "p")
    monkeypatch.delenv("LATTICE_CONTEXT")
    capsys.readouterr()
    assert run_main(["ctx", "list", "-o", "json"], False) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["current"]) for r in rows] == [("dev", True), ("prod", False)]
    assert "BEGIN NATS" not in (tmp_path / "contexts.json").read_text()  # a path, not the secret
    assert run_main(["ctx", "use", "nope"], False) == 1
    assert "no context named 'nope'" in capsys.readouterr().err
    assert run_main(["ctx", "set", "bad", "--creds", str(tmp_path / "missing")], False) == 2
    assert run_main(["ctx", "del", "dev"], False) == 0
    assert target(None, None).nats_url == "nats://127.0.0.1:4222"


def test_since_accepts_durations_and_iso_times() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("1.5h", now) == now - timedelta(minutes=90)
    assert parse_since("2026-01-01T11:00:00", now) == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    with pytest.raises(CliError) as info:
        parse_since("10 minutes", now)
    assert info.value.code == 2


def test_event_lines_and_filters() -> None:
    ev = {
        "type": "com.wasmcloud.lattice.component_scale_failed",
        "source": "NHOSTAAAAAAAAAAAA",
        "time": "2026-01-01T12:34:56.789+00:00",
        "data": {"host_id": "NHOSTAAAAAAAAAAAA", "component_id": "web", "error": "no such file"},
    }
    line = event_line(ev)
    assert line.startswith("12:34:56  component_scale_failed")
    assert "NHOSTAAA" in line and "component_id=web" in line and "error=no such file" in line
    assert keep(ev, [], None, False) and keep(ev, [], "NHOST", False)
    assert not keep(ev, [], "NOTHER", False)
    assert not keep(ev, ["component_scaled"], None, False)
    beat = {**ev, "type": "com.wasmcloud.lattice.host_heartbeat"}
    assert not keep(beat, [], None, False) and keep(beat, [], None, True)
    assert keep(beat, ["host_heartbeat"], None, False)


def test_spy_lines_show_both_directions() -> None:
    base = {
        "at": 0.0,
        "host_id": "N1",
        "component_id": "counter",
        "duration_ms": 1.25,
        "request_bytes": 7,
        "reply_bytes": 3,
        "request": '["visits"]',
        "error": "",
        "link": "",
        "target": "",
    }
    inbound = spy_line(
        {
            **base,
            "direction": "in",
            "caller": "lattice-cli",
            "function": "increment",
            "outcome": "ok",
            "reply": '{"ok": 1}',
        }
    )
    assert (
        'in  lattice-cli → counter  increment  1.2ms ok  7B→3B  ["visits"] → {"ok": 1}' in inbound
    )
    outbound = spy_line(
        {
            **base,
            "direction": "out",
            "caller": "counter",
            "function": "wasi:keyvalue/atomics.increment",
            "link": "default",
            "target": "kv-redis",
            "outcome": "error",
            "error": "boom",
            "reply": "",
        }
    )
    assert "out counter → kv-redis (default)  wasi:keyvalue/atomics.increment" in outbound
    assert outbound.endswith("→ boom")


def test_app_progress_and_status_fit_80_columns() -> None:
    status = {
        "name": "shop",
        "version": "v3",
        "state": "failed",
        "reason": "",
        "components": [
            {
                "name": "a-component-with-a-very-long-name",
                "kind": "component",
                "id": "shop-a",
                "desired": 4,
                "running": 3,
                "where": ["NAAAAAAAAAAAAAAA", "NBBBBBBBBBBBBBB", "NCCCCCCCCCCCCCCC"],
                "state": "failed",
                "reason": "no host matches the spread rule 'east' (zone=east): label a host",
            },
            {
                "name": "kv",
                "kind": "capability",
                "id": "shop-kv",
                "desired": 1,
                "running": 1,
                "where": ["NAAAAAAAAAAAAAAA"],
                "state": "deployed",
                "reason": "",
            },
        ],
    }
    assert progress(status) == "shop v3: failed — a-component-with-a-very-long-name 3/4, kv 1/1"
    buf = io.StringIO()
    Console(file=buf, width=80).print(status_table(status))
    lines = buf.getvalue().splitlines()
    assert all(len(x) <= 80 for x in lines), lines
    assert "NAAAAAAA,NBBBBBBB+1" in buf.getvalue() and "3/4" in buf.getvalue()


def test_output_formats() -> None:
    value = [{"id": "x", "labels": {"a": "1"}}]
    assert json.loads(dump(value, Format.json)) == value
    import yaml

    assert yaml.safe_load(dump(value, Format.yaml)) == value


def test_detached_command_line() -> None:
    args = child_args(
        ["--label", "zone=a", "-d", "--data-dir", "/x", "--log-format=console"],
        Path("/data"),
        Path("/data/run/1.json"),
    )
    assert args == [
        "--label",
        "zone=a",
        "--data-dir",
        "/data",
        "--log-format",
        "json",
        "--state-file",
        "/data/run/1.json",
    ]
    assert last_error(['{"event": "host started"}', '{"event": "cannot connect"}']) == (
        "cannot connect"
    )


def test_start_provider_help_names_every_builtin() -> None:
    """The REF help lists what host/providers.py can start (the CLI cannot import it)."""
    from host.providers import BUILTIN

    cmd = next(c for path, c in docs.commands(build()) if list(path) == ["start", "provider"])
    help_text = next(p.help for p in cmd.params if p.name == "ref") or ""
    for name in BUILTIN:
        assert name in help_text, f"builtin://{name} missing from `lattice start provider --help`"


@pytest.mark.parametrize("entry", ["python -m lattice", "console script"])
@pytest.mark.parametrize("after", [0.2, 0.5, 0.9, 1.4])
def test_ctrl_c_while_the_cli_loads_exits_130_without_a_traceback(after: float, entry: str) -> None:
    """Wherever start-up is when it comes (imports, the command tree, connecting), and
    whichever way it was started."""
    import signal
    import subprocess
    import sys
    import time

    from lattice import natsd

    if entry == "console script":
        script = Path(sys.executable).parent / "lattice"
        if not script.exists():
            pytest.skip("no `lattice` script next to this interpreter (not pip-installed)")
        cmd = [str(script)]
    else:
        cmd = [sys.executable, "-m", "lattice"]
    url = f"nats://127.0.0.1:{natsd.free_port()}"  # nobody listens: it keeps retrying
    proc = subprocess.Popen(
        [*cmd, "events", "--nats-url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    # interrupted: 130, or the signal's own exit status when it lands where Python has
    # no handler (its start or its finalization); or done already with the error named
    assert proc.returncode in (130, -signal.SIGINT) or (
        proc.returncode == 1 and "cannot reach NATS" in err
    ), (proc.returncode, err)
