"""Fetch component bytes from a reference and check they are a component.

Supported references: `file:///abs/path.wasm`, a plain filesystem path, and
`http(s)://…` URLs. OCI references arrive in a later release and are refused with a
message saying so. A core module or a file that is not WebAssembly at all is refused
here, before wasmtime sees it, so the error says what the file is instead of a
compiler message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
WASM_MAGIC = b"\0asm"
CORE_VERSION = b"\x01\x00\x00\x00"


class ArtifactError(ValueError):
    """The reference cannot be fetched or does not hold a WebAssembly component."""


def check_component(data: bytes, ref: str) -> None:
    if len(data) < 8 or data[:4] != WASM_MAGIC:
        raise ArtifactError(f"{ref} is not a WebAssembly file (no \\0asm header)")
    if data[4:8] == CORE_VERSION:
        raise ArtifactError(
            f"{ref} is a core WebAssembly module, not a component; "
            "wrap it with `wasm-tools component new` first"
        )
    if data[6:8] != b"\x01\x00":
        raise ArtifactError(f"{ref} has an unknown WebAssembly layer/version {data[4:8].hex()}")


async def fetch(ref: str, http_timeout: float = 60.0) -> bytes:
    """The bytes of the component at `ref`, checked to be a component."""
    parsed = urlparse(ref)
    if parsed.scheme == "oci":
        raise ArtifactError(f"{ref}: OCI references are not supported yet; use file:// or https://")
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else ref)
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise ArtifactError(f"{ref}: file:// references must be local (file:///path)")
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            hint = " (OCI references are not supported yet)" if ":" in ref else ""
            raise ArtifactError(f"{ref}: no such file {path}{hint}") from None
        except IsADirectoryError:
            raise ArtifactError(f"{ref}: {path} is a directory") from None
        except OSError as exc:
            raise ArtifactError(f"{ref}: cannot read {path}: {exc.strerror}") from None
    elif parsed.scheme in ("http", "https"):
        data = await _download(ref, http_timeout)
    else:
        raise ArtifactError(
            f"{ref}: unsupported reference scheme {parsed.scheme!r} (use file:// or http(s)://)"
        )
    check_component(data, ref)
    return data


async def _download(url: str, timeout: float) -> bytes:
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise ArtifactError(f"{url}: HTTP {resp.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > MAX_ARTIFACT_BYTES:
                    raise ArtifactError(f"{url}: larger than {MAX_ARTIFACT_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise ArtifactError(f"{url}: download failed: {exc}") from None
