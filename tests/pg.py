"""A throw-away PostgreSQL for the tests: pgserver's bundled binaries, a temporary
directory, a free TCP port on 127.0.0.1, password authentication.

Nothing here touches the machine's own PostgreSQL: `initdb` and `postgres` come from
the pgserver wheel (`pgserver/pginstall/bin`, found without importing pgserver, which
has side effects at import), the data directory is a fresh `mkdtemp`, the server
listens on a port picked free and on a private socket directory. PostgreSQL refuses to
run as root, so as root the server runs as an unprivileged existing user (`pgserver`,
else `postgres`, else `nobody`) that owns the temporary directory.

`PostgresServer.start()` initialises the cluster with a random superuser password and
creates the application role and database; `stop()` stops it (fast shutdown, then
SIGKILL) and removes the directory. `admin(sql)` runs SQL as the superuser. Fixture:
`postgres_server` (session scope).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lattice.natsd import free_port


class PostgresError(RuntimeError):
    pass


def pg_bin() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise PostgresError("pgserver is not installed (pip install pgserver)")
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").is_file():
        raise PostgresError(f"no postgres binary in {path}")
    return path


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("pgserver", "postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError("running as root and no unprivileged user to run postgres as")


@dataclass
class PostgresServer:
    port: int = field(default_factory=free_port)
    database: str = "app"
    user: str = "app"
    password: str = field(default_factory=lambda: f"pw-{secrets.token_hex(12)}", repr=False)
    admin_password: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    workdir: Path | None = None
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def log_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "postgres.log"

    def _kwargs(self) -> dict[str, Any]:
        account = _run_as()
        if account is None:
            return {}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    async def _exec(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            **self._kwargs(),
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({proc.returncode}): {out.decode()[-2000:]}")

    async def start(self, timeout: float = 30.0) -> PostgresServer:
        self.workdir = Path(tempfile.mkdtemp(prefix="lattice-pg-"))
        account = _run_as()
        data, sockets = self.workdir / "data", self.workdir / "sock"
        sockets.mkdir()
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.admin_password + "\n")
        if account is not None:
            for p in (self.workdir, sockets, pwfile):
                os.chown(p, account.pw_uid, account.pw_gid)
        bin_dir = pg_bin()
        await self._exec(
            str(bin_dir / "initdb"),
            "-D", str(data),
            "-U", "postgres",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        )  # fmt: skip
        pwfile.unlink()
        log = self.log_file.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            str(bin_dir / "postgres"),
            "-D", str(data),
            "-p", str(self.port),
            "-h", self.host,
            "-k", str(sockets),
            "-c", "fsync=off",
            "-c", "max_connections=50",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            **self._kwargs(),
        )  # fmt: skip
        log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.process.returncode is not None:
                raise PostgresError(
                    f"postgres exited with {self.process.returncode}: "
                    f"{self.log_file.read_text()[-2000:]}"
                )
            try:
                await self.admin("SELECT 1")
                break
            except psycopg.OperationalError:
                if loop.time() > deadline:
                    await self.stop()
                    raise PostgresError(f"postgres did not answer within {timeout}s") from None
                await asyncio.sleep(0.1)
        await self.admin(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        await self.admin(f"CREATE DATABASE {self.database} OWNER {self.user}")
        return self

    def conninfo(self, database: str = "postgres") -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "dbname": database,
            "user": "postgres",
            "password": self.admin_password,
            "connect_timeout": 5,
        }

    async def admin(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run `sql` as the superuser (autocommit); the rows, if any."""
        async with await psycopg.AsyncConnection.connect(
            **self.conninfo(database), autocommit=True
        ) as conn:
            cur = await conn.execute(sql)
            return await cur.fetchall() if cur.description else []

    async def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                await asyncio.wait_for(proc.wait(), 15.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


@pytest.fixture(scope="session")
async def postgres_server() -> AsyncIterator[PostgresServer]:
    server = PostgresServer()
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
