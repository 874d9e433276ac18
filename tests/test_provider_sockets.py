"""Same-host provider calls over the provider's Unix socket (host/provider_sockets.py).

The frames are checked pure; the provider's side and the host's client against a real
provider process (the docs' memory_kv example, started as a host starts it, with a
socket path in its host data); the whole path with hosts running keyvalue-redis and the
counter component, on the provider's host (the socket) and on another (NATS).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from host.provider_sockets import RECV_CHUNK, RETRY_ABSENT_S, LocalCallLost, ProviderSockets
from lattice import codec
from lattice.client import LatticeClient
from lattice.protocol.invocation import ERROR_HEADER, LINK_NAME_HEADER, SOURCE_HEADER
from lattice.protocol.local_rpc import (
    LENGTH,
    MAX_FRAME,
    FrameError,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    frame_length,
    socket_path,
)
from providers.sdk import HostData
from tests.servers import ProviderProcess, link, rpc

# -- frames -------------------------------------------------------------------------


def test_frames_round_trip() -> None:
    req = Request(7, "wasi:keyvalue/store.bucket.get", {SOURCE_HEADER: "c"}, b"\x93\x01")
    frame = encode_request(req)
    assert frame_length(frame[:4]) == len(frame) - 4
    assert decode_request(frame[4:]) == req
    for headers in (None, {ERROR_HEADER: "timeout"}):
        reply = Reply(7, headers, b"\xc0")
        assert decode_reply(encode_reply(reply)[4:]) == reply


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"\xc1", "not msgpack"),
        (codec.pack([1, "op", {}]), "array of 4 items"),
        (codec.pack({"id": 1}), "array of 4 items"),
        (codec.pack(["1", "op", {}, b""]), "call id must be an integer"),
        (codec.pack([1, "", {}, b""]), "operation must be a non-empty string"),
        (codec.pack([1, "op", {"a": 1}, b""]), "headers must be a map of strings"),
        (codec.pack([1, "op", {}, "text"]), "data must be bytes, got str"),
    ],
)
def test_a_bad_request_frame_names_what_is_wrong(body: bytes, names: str) -> None:
    with pytest.raises(FrameError, match=names):
        decode_request(body)


def test_a_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(FrameError, match="over the"):
        frame_length(LENGTH.pack(MAX_FRAME + 1))


def test_socket_paths_fit_whatever_the_provider_id() -> None:
    d = Path("/tmp/lattice-abcdefgh")
    long_id = "p" * 200
    assert len(str(socket_path(d, long_id))) < 100
    assert socket_path(d, "a") != socket_path(d, "b")


# -- a provider process and the host's client ----------------------------------------


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lt-"))  # short: a socket path has 108 bytes
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def headers(source: str = "comp-a") -> dict[str, str]:
    return {SOURCE_HEADER: source, LINK_NAME_HEADER: "default"}


@pytest.fixture
async def memkv(
    nats_url: str, lattice_name: str, sock_dir: Path, tmp_path: Path, nc: NATS
) -> AsyncIterator[ProviderProcess]:
    hd = HostData(
        lattice=lattice_name,
        nats_url=nats_url,
        provider_id="memkv",
        host_id="NHOST",
        link_definitions=[link("comp-a", "memkv", interfaces=("store",))],
        log_format="console",
        local_socket=str(socket_path(sock_dir, "memkv")),
    )
    proc = ProviderProcess("providers.examples.memory_kv", hd, tmp_path / "memkv.log")
    await proc.start()
    await proc.wait_ready(nc)
    try:
        yield proc
    finally:
        if proc.process is not None and proc.process.returncode is None:
            proc.process.send_signal(signal.SIGCONT)
        await proc.stop()


async def kv(
    sockets: ProviderSockets, op: str, *args: Any, timeout: float = 5.0, source: str = "comp-a"
) -> Reply | None:
    return await asyncio.to_thread(
        sockets.call,
        "memkv",
        f"wasi:keyvalue/store.bucket.{op}",
        headers(source),
        codec.pack(list(args)),
        timeout,
    )


def ok(reply: Reply | None) -> Any:
    assert reply is not None and ERROR_HEADER not in (reply.headers or {}), reply
    return codec.unpack(reply.data)


async def test_a_provider_serves_its_socket_as_it_serves_nats(
    memkv: ProviderProcess, sock_dir: Path, nc: NATS, lattice_name: str
) -> None:
    sockets = ProviderSockets(sock_dir)
    path = sockets.path("memkv")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    assert ok(await kv(sockets, "set", "", "greeting", b"hello")) == {"ok": None}
    # the same provider state, whichever way a call comes
    got = await rpc(nc, lattice_name, "memkv", "wasi:keyvalue/store.bucket.get", ["", "greeting"])
    assert got == {"ok": b"hello"}
    assert ok(await kv(sockets, "get", "", "greeting")) == {"ok": b"hello"}
    assert sockets.calls == 2

    # typed errors, as over NATS
    unknown = await kv(sockets, "list-keys", "", None)
    assert unknown is not None and unknown.headers[ERROR_HEADER] == "unknown-function"
    unlinked = await kv(sockets, "get", "", "greeting", source="comp-zz")
    assert unlinked is not None and unlinked.headers[ERROR_HEADER] == "not-linked"

    # a frame it cannot read closes that connection only; the provider keeps serving
    for garbage in (LENGTH.pack(1) + b"\xc1", LENGTH.pack(MAX_FRAME + 1)):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(5)
        raw.connect(str(path))
        raw.sendall(garbage)
        assert await asyncio.to_thread(raw.recv, 10) == b""  # closed, no reply
        raw.close()
    assert ok(await kv(sockets, "get", "", "greeting")) == {"ok": b"hello"}
    assert "bad frame on the local socket" in memkv.stderr()
    assert "over the" in memkv.stderr() and "not msgpack" in memkv.stderr()

    # stopped: the socket is gone and a call is not delivered (None: send it over NATS)
    await memkv.stop()
    assert memkv.process is not None and memkv.process.returncode == 0
    assert not path.exists()
    t0 = time.monotonic()
    assert await kv(sockets, "get", "", "greeting") is None
    assert time.monotonic() - t0 < 1
    sockets.close()


async def test_a_reply_larger_than_one_read_arrives_whole(
    memkv: ProviderProcess, sock_dir: Path
) -> None:
    sockets = ProviderSockets(sock_dir)
    big = bytes(range(256)) * (3 * RECV_CHUNK // 256 + 7)  # several reads, an odd tail
    assert ok(await kv(sockets, "set", "", "big", big)) == {"ok": None}
    for _ in range(3):  # the same connection keeps its frames apart
        assert ok(await kv(sockets, "get", "", "big")) == {"ok": big}
        assert ok(await kv(sockets, "exists", "", "big")) == {"ok": True}
    sockets.close()


async def test_no_answer_in_time_or_a_lost_connection_is_never_sent_again(
    memkv: ProviderProcess, sock_dir: Path
) -> None:
    sockets = ProviderSockets(sock_dir)
    assert ok(await kv(sockets, "set", "", "k", b"v0")) == {"ok": None}
    proc = memkv.process
    assert proc is not None

    # frozen provider: the caller's deadline passes, a TimeoutError (outcome unknown)
    proc.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await kv(sockets, "set", "", "k", b"v1", timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 2
    proc.send_signal(signal.SIGCONT)
    # the late reply to that set ({"ok": None}) must not answer a get: a fresh connection
    # asks, and the set itself was applied (the outcome was unknown, not a failure)
    for _ in range(50):
        got = ok(await kv(sockets, "get", "", "k"))
        assert got in ({"ok": b"v0"}, {"ok": b"v1"})
        if got == {"ok": b"v1"}:
            break
        await asyncio.sleep(0.05)
    assert got == {"ok": b"v1"}

    # the provider dies while a call waits: LocalCallLost at once, never a resend
    proc.send_signal(signal.SIGSTOP)
    waiting = asyncio.ensure_future(kv(sockets, "set", "", "k", b"v2", timeout=30))
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    proc.kill()
    with pytest.raises(LocalCallLost, match="closed the connection before it answered"):
        await waiting
    assert time.monotonic() - t0 < 3
    await proc.wait()
    # nothing listens now: not delivered, and no error
    assert await kv(sockets, "get", "", "k") is None
    sockets.close()


# -- the host: its own provider process through the socket, other hosts over NATS -----

COUNTER = "lattice:examples/counter.increment"


def _sources(seen: list[Msg]) -> list[str]:
    return [(m.headers or {}).get(SOURCE_HEADER, "") for m in seen]


async def test_a_host_calls_its_own_provider_process_without_nats(
    start_host, client: LatticeClient, nc: NATS, lattice_name: str, redis_server, linked_refs
) -> None:
    """Exactly-once across both routes (Redis holds every acknowledged increment once),
    the socket again after the provider process is killed and restarted, and the socket
    directory gone with the host."""
    here, there = await start_host(), await start_host()
    assert here.socket_dir is not None and here.bridge.sockets is not None
    await client.put_config("redis-sock", {"url": redis_server.url(5)})
    await client.start_provider(here.host_id, "builtin://keyvalue-redis", "kv-sock")
    for host, cid in ((here, "counter-here"), (there, "counter-there")):
        await client.scale_component(host.host_id, linked_refs["counter"], cid, 2)
        await client.put_link(
            cid, "kv-sock", "wasi", "keyvalue", ["store", "atomics"], target_config=["redis-sock"]
        )
    wire: list[Msg] = []

    async def seen(msg: Msg) -> None:
        wire.append(msg)

    sub = await nc.subscribe(f"{lattice_name}.kv-sock.rpc.>", cb=seen)
    await nc.flush()

    key = f"sock-{here.host_id[-6:]}"
    here_got = [await client.call("counter-here", COUNTER, [key]) for _ in range(20)]
    there_got = [await client.call("counter-there", COUNTER, [key]) for _ in range(20)]
    assert here_got == [{"ok": n} for n in range(1, 21)]
    assert there_got == [{"ok": n} for n in range(21, 41)]
    await nc.flush()
    assert "counter-here" not in _sources(wire)  # every call of it went through the socket
    assert _sources(wire).count("counter-there") >= 20  # another host: over NATS
    assert here.bridge.sockets.calls >= 20

    # the provider process dies: restarted, and the host reaches the new one's socket
    await sub.unsubscribe()  # (a listener would be a responder: no "no responders" fast)
    rp = here.providers.running["kv-sock"]
    rp.process.kill()
    after: list[Any] = []
    for _ in range(150):
        await asyncio.sleep(0.1)
        got = await client.call("counter-here", COUNTER, [key])
        if "ok" in got:
            after.append(got["ok"])
            break
    assert rp.restarts == 1
    await asyncio.sleep(RETRY_ABSENT_S)  # while it was refused, its socket was not tried
    wire.clear()
    sub = await nc.subscribe(f"{lattice_name}.kv-sock.rpc.>", cb=seen)
    await nc.flush()
    after += [(await client.call("counter-here", COUNTER, [key]))["ok"] for _ in range(4)]
    assert after == list(range(41, 46))
    await nc.flush()
    assert "counter-here" not in _sources(wire)
    await sub.unsubscribe()
    r = aioredis.from_url(redis_server.url(5))
    try:
        (stored,) = [k async for k in r.scan_iter(match=f"*:{key}")]
        assert int(await r.get(stored)) == 45  # every acknowledged increment, once
    finally:
        await r.aclose()

    socket_dir = here.socket_dir
    await here.stop("test finished")
    assert not socket_dir.exists()


async def test_provider_sockets_off_sends_every_call_over_nats(
    start_host, client: LatticeClient, nc: NATS, lattice_name: str, redis_server, linked_refs
) -> None:
    host = await start_host(provider_sockets=False)
    assert host.socket_dir is None and host.bridge.sockets is None
    await client.put_config("redis-nosock", {"url": redis_server.url(6)})
    await client.start_provider(host.host_id, "builtin://keyvalue-redis", "kv-nosock")
    await client.scale_component(host.host_id, linked_refs["counter"], "counter-nosock", 1)
    await client.put_link(
        "counter-nosock",
        "kv-nosock",
        "wasi",
        "keyvalue",
        ["store", "atomics"],
        target_config=["redis-nosock"],
    )
    wire: list[Msg] = []

    async def seen(msg: Msg) -> None:
        wire.append(msg)

    sub = await nc.subscribe(f"{lattice_name}.kv-nosock.rpc.>", cb=seen)
    await nc.flush()
    got = [await client.call("counter-nosock", COUNTER, ["n"]) for _ in range(5)]
    assert got == [{"ok": n} for n in range(1, 6)]
    await nc.flush()
    assert _sources(wire).count("counter-nosock") >= 5
    await sub.unsubscribe()
