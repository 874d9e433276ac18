"""Outgoing HTTP from a standard wasi:http component: denied unless allowed by config."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from host.wasi import read_body, serve_request
from host.wasi.outgoing import allowlist
from lattice.client import LatticeClient


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local HTTP server the component may (or may not) call."""
    root = tmp_path_factory.mktemp("upstream")
    (root / "hi.txt").write_text("upstream says hi")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def fetch_ref() -> str:
    from components.build import build
    from tests.conftest import precompile

    path = build("fetch_http")
    precompile(path)
    return path.as_uri()


async def fetch(pool, url: str) -> tuple[int, dict[str, bytes], bytes]:
    resp = await serve_request(pool, "GET", f"/?url={quote(url, safe='')}")
    return resp.status, dict(resp.headers), await read_body(resp.body)


async def test_outgoing_http_follows_the_components_allowlist(
    host, client: LatticeClient, fetch_ref: str, upstream: str
) -> None:
    await client.put_config("fetch-cfg", {"greeting": "none of allowed_hosts yet"})
    await client.scale_component(host.host_id, fetch_ref, "fetch", 1, config=["fetch-cfg"])
    pool = host.components.running["fetch"].pool
    url = f"http://{upstream}/hi.txt"

    status, _, body = await fetch(pool, url)  # denied by default
    assert status == 502 and b"HttpRequestDenied" in body

    await client.put_config("fetch-cfg", {"allowed_hosts": f"example.org, {upstream}"})
    status, headers, body = await fetch(pool, url)
    assert (status, headers.get("x-upstream-status"), body) == (200, b"200", b"upstream says hi")

    other_port = upstream.rsplit(":", 1)[0] + ":1"
    await client.put_config("fetch-cfg", {"allowed_hosts": other_port})  # wrong port only
    status, _, body = await fetch(pool, url)
    assert status == 502 and b"HttpRequestDenied" in body

    await client.put_config("fetch-cfg", {"allowed_hosts": "*"})
    status, _, body = await fetch(pool, f"http://{other_port}/")  # allowed, nobody listens
    assert status == 502 and b"ConnectionRefused" in body


@pytest.mark.parametrize(
    "patterns, host, port, allowed",
    [
        (["api.example.com"], "api.example.com", 443, True),
        (["api.example.com"], "evil.example.com", 443, False),
        (["*.example.com"], "a.b.example.com", 80, True),
        (["*.example.com"], "example.com", 80, False),
        (["127.0.0.1:8080"], "127.0.0.1", 8080, True),
        (["127.0.0.1:8080"], "127.0.0.1", 8081, False),
        (["*"], "anything", 1, True),
        ([""], "anything", 1, False),
    ],
)
def test_allowlist_patterns(patterns: list[str], host: str, port: int, allowed: bool) -> None:
    assert allowlist(patterns)(host, port) is allowed
