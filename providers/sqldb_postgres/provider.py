"""`PostgresProvider`: wasmcloud:postgres@0.1.1-draft `query` and `prepared` on PostgreSQL.

One psycopg connection pool per link (psycopg-pool), built when the link is put (its
settings checked then: a bad one refuses the link, naming the setting), opened at the
link's first call, closed when the link goes. The SDK's hand-off means a changed link
waits for the calls in flight over the old one before its pool is closed. Connections
run in autocommit (each `query` is its own transaction), with TimeZone UTC, the link's
statement timeout, and a liveness look at every checkout (`_checkout`), so a connection
the server dropped while it sat idle is replaced before a statement is sent on it.

Accounting (as for keyvalue): an `err` result promises that nothing was applied.
- a server error on a live connection is an `err` (`query-error`) with the server's
  message and SQLSTATE: the statement's implicit transaction was rolled back;
- no connection to be had (server down, wrong password): `err` `unexpected`, nothing
  was sent;
- the connection lost after a statement went out: a read (`statements.read_only`) is
  sent once more, on a fresh connection, inside a READ ONLY transaction, so the server
  refuses it if it writes after all; anything else, or a "read" the server refused, is
  an invocation error of kind `timeout`: the outcome is unknown, and it is never retried;
- a `query-batch` with its own BEGIN/COMMIT that fails may have committed part of
  itself, so its server error is a `timeout` too (with the server's message).
Passwords never appear in logs, errors or health messages (`_scrub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncRawCursor
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from providers.sdk import ErrorKind, HostData, InvocationError, Link, LinkKey, Provider, operation
from providers.sqldb_postgres import statements, values
from providers.sqldb_postgres.settings import Settings, parse

T = TypeVar("T")

QUERY = "wasmcloud:postgres/query"
PREPARED = "wasmcloud:postgres/prepared"
MAX_PREPARED = 1000
"""Prepared statements one link may hold; more is an error (they live in memory)."""

ADAPTERS = values.adapters()

# SQLSTATE classes (or codes) that are the caller's statement or parameters at fault.
_INVALID_QUERY = ("42", "0A", "3F", "26", "34", "2F", "0B")
_INVALID_PARAMS = ("22", "42P18", "42P08", "08P01")


class _QueryFailed(Exception):
    """The server refused the statement on a live connection; `wire` is the query-error."""

    def __init__(self, wire: dict[str, str]) -> None:
        super().__init__(next(iter(wire.values())))
        self.wire = wire


class _Unavailable(Exception):
    """No connection could be had: nothing was sent."""


class _Lost(Exception):
    """The connection was lost after the statement went out: the outcome is unknown."""


class _ReadTurnedWrite(Exception):
    """A statement retried as a read was refused by the READ ONLY transaction."""


@dataclass
class _LastError:
    """The last connection failure of one pool (psycopg-pool only says "timed out")."""

    text: str = ""


@dataclass
class _Linked:
    settings: Settings
    pool: AsyncConnectionPool[Any]
    errors: _LastError
    opened: bool = False
    open_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    prepared: dict[str, str] = field(default_factory=dict)


def _connection_class(errors: _LastError, scrub: Callable[[str], str]) -> type[AsyncConnection]:
    class Connection(AsyncConnection):  # type: ignore[type-arg]
        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            try:
                conn = await super().connect(*args, **kwargs)
            except psycopg.Error as exc:
                errors.text = scrub(_first_line(exc))
                raise
            errors.text = ""
            return conn

    return Connection


def _readable(conn: AsyncConnection[Any]) -> bool:
    try:
        ready, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(ready)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines)


def _sqlstate_error(exc: psycopg.Error) -> str:
    """`SQLSTATE 23505: message; detail: …; hint: …` from a server error."""
    diag = exc.diag
    primary = diag.message_primary or _first_line(exc)
    parts = [f"SQLSTATE {exc.sqlstate}: {primary}" if exc.sqlstate else primary]
    if diag.message_detail:
        parts.append(f"detail: {diag.message_detail}")
    if diag.message_hint:
        parts.append(f"hint: {diag.message_hint}")
    return "; ".join(parts)


def _query_error(exc: psycopg.Error, text: str) -> dict[str, str]:
    code = exc.sqlstate or ""
    if code and (code in _INVALID_PARAMS or code[:2] in _INVALID_PARAMS):
        return {"invalid-params": text}
    if code and (code in _INVALID_QUERY or code[:2] in _INVALID_QUERY):
        return {"invalid-query": text}
    if not code and isinstance(exc, psycopg.ProgrammingError):
        return {"invalid-params": text}
    return {"unexpected": text}


class PostgresProvider(Provider):
    """Serves wasmcloud:postgres query and prepared over one pool per link."""

    call_timeout = 30.0

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self._linked: dict[LinkKey, _Linked] = {}

    # ------------------------------------------------------------------ links

    async def on_link_put(self, link: Link) -> None:
        settings = parse(link)
        errors = _LastError()

        def scrub(text: str) -> str:
            return text.replace(settings.password, "********") if settings.password else text

        kwargs: dict[str, Any] = {
            **settings.connect_kwargs(),
            "autocommit": True,
            "prepare_threshold": None,
            "context": ADAPTERS,
            "cursor_factory": AsyncRawCursor,
        }
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            "",
            kwargs=kwargs,
            connection_class=_connection_class(errors, scrub),
            min_size=0,
            max_size=settings.pool_size,
            open=False,
            timeout=float(settings.connect_timeout),
            name=f"{link.source_id}/{link.name}",
        )
        self._linked[link.key] = _Linked(settings, pool, errors)
        self.log.info("pool ready", source_id=link.source_id, db=settings.where)

    async def on_link_del(self, link: Link) -> None:
        linked = self._linked.pop(link.key, None)
        if linked is not None:
            await self._close(linked)

    async def on_shutdown(self) -> None:
        linked, self._linked = list(self._linked.values()), {}
        await asyncio.gather(*(self._close(x) for x in linked), return_exceptions=True)

    async def _close(self, linked: _Linked) -> None:
        with contextlib.suppress(Exception):
            await linked.pool.close(timeout=2.0)

    async def health(self) -> tuple[bool, str]:
        """Ping every opened pool; links not called yet have nothing to ping."""
        opened = {k: x for k, x in self._linked.items() if x.opened}
        if not opened:
            return True, f"sqldb-postgres: {len(self._linked)} link(s), none connected yet"

        async def probe(linked: _Linked) -> str | None:
            try:
                conn = await self._checkout(linked.pool, 2.0)
                try:
                    await conn.execute("")
                finally:
                    await linked.pool.putconn(conn)
            except (PoolTimeout, psycopg.Error) as exc:
                reason = linked.errors.text or _first_line(exc)
                return f"{linked.settings.where}: {self._scrub(linked, reason)}"
            return None

        found = await asyncio.gather(*(probe(x) for x in opened.values()))
        problems = [p for p in found if p]
        if problems:
            return False, "; ".join(sorted(set(problems)))
        return True, f"sqldb-postgres: {len(opened)} pool(s) ok of {len(self._linked)} link(s)"

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _scrub(linked: _Linked, text: str) -> str:
        pw = linked.settings.password
        return text.replace(pw, "********") if pw else text

    def _linked_for(self, link: Link) -> _Linked:
        linked = self._linked.get(link.key)
        if linked is None:  # the SDK routes calls only over links in force
            raise InvocationError(ErrorKind.UNAVAILABLE, f"no pool for link {link}")
        return linked

    async def _pool(self, linked: _Linked) -> AsyncConnectionPool[Any]:
        if not linked.opened:
            async with linked.open_lock:
                if not linked.opened:
                    await linked.pool.open(wait=False)
                    linked.opened = True
        return linked.pool

    @staticmethod
    async def _checkout(pool: AsyncConnectionPool[Any], timeout: float) -> AsyncConnection[Any]:
        """A pooled connection that still looks alive. An idle connection has nothing
        to read; one with input waiting was told something while idle (a server that
        terminated it sends its FATAL then closes), so it is closed and replaced before
        a statement goes out on it. No round trip: one zero-timeout select."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            conn = await pool.getconn(timeout=max(0.0, deadline - loop.time()))
            if not (conn.closed or conn.broken or _readable(conn)):
                return conn
            await conn.close()
            await pool.putconn(conn)  # a closed connection is discarded and replaced

    async def _attempt(
        self,
        linked: _Linked,
        fn: Callable[[AsyncRawCursor[Any]], Awaitable[T]],
        *,
        read_only_txn: bool = False,
    ) -> T:
        """Run `fn` on a pooled connection, sorting every failure into one of the
        accounting classes above."""
        pool = await self._pool(linked)
        try:
            conn = await self._checkout(pool, float(linked.settings.connect_timeout))
        except PoolTimeout:
            why = linked.errors.text or (
                f"no free connection within {linked.settings.connect_timeout}s "
                f"(pool_size {linked.settings.pool_size})"
            )
            raise _Unavailable(self._scrub(linked, why)) from None
        try:
            async with conn.cursor() as cur:
                if not read_only_txn:
                    return await fn(cur)
                await cur.execute("BEGIN READ ONLY")
                try:
                    result = await fn(cur)
                except psycopg.Error as exc:
                    if exc.sqlstate == "25006":  # read_only_sql_transaction
                        raise _ReadTurnedWrite(_sqlstate_error(exc)) from None
                    raise
                await cur.execute("COMMIT")
                return result
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                raise _Lost(self._scrub(linked, _first_line(exc))) from None
            text = self._scrub(linked, _sqlstate_error(exc))
            raise _QueryFailed(_query_error(exc, text)) from None
        finally:
            await pool.putconn(conn)

    async def _run(
        self,
        link: Link,
        op: str,
        sql: str,
        fn: Callable[[AsyncRawCursor[Any]], Awaitable[T]],
        *,
        batch: bool = False,
    ) -> T:
        """`_attempt` with the retry rule; raises `_QueryFailed`/`_Unavailable` for an
        `err` result, `InvocationError(timeout)` when the outcome is unknown."""
        linked = self._linked_for(link)
        where = linked.settings.where
        retry = not batch and statements.read_only(sql)
        try:
            return await self._attempt(linked, fn)
        except _Lost as exc:
            if not retry:
                self.log.warning("connection lost under a write", db=where, operation=op)
                raise InvocationError(
                    ErrorKind.TIMEOUT,
                    f"{op}: {where}: connection lost after the statement was sent ({exc}); "
                    "the outcome is unknown, so it was not retried",
                ) from None
            self.log.info("connection lost under a read, retrying once", db=where, operation=op)
        except _QueryFailed as exc:
            if batch and statements.has_transaction_control(sql):
                raise InvocationError(
                    ErrorKind.TIMEOUT,
                    f"{op}: {where}: {next(iter(exc.wire.values()))}; the batch has its own "
                    "transaction control, so statements before the error may have been "
                    "committed: the outcome is unknown",
                ) from None
            raise
        try:
            return await self._attempt(linked, fn, read_only_txn=True)
        except _ReadTurnedWrite as exc:
            raise InvocationError(
                ErrorKind.TIMEOUT,
                f"{op}: {where}: the connection was lost and the retry, read-only, was "
                f"refused ({exc}): the statement writes, so the outcome is unknown",
            ) from None
        except _Lost as exc:
            raise _Unavailable(f"connection lost twice while reading ({exc})") from None

    async def _result(
        self, link: Link, work: Awaitable[Any], *, nested: bool = False
    ) -> dict[str, Any]:
        """`{"ok": …}` or `{"err": …}`; `nested` puts a query-error inside the
        prepared-statement-exec-error case `query-error`."""
        try:
            return {"ok": await work}
        except _Unavailable as exc:
            where = self._linked_for(link).settings.where
            return {"err": {"unexpected": f"{where} unavailable: {exc}"}}
        except (_QueryFailed, values.ParamError) as exc:
            wire = exc.wire if isinstance(exc, _QueryFailed) else {"invalid-params": str(exc)}
            return {"err": {"query-error": wire} if nested else wire}

    # ------------------------------------------------------------------ query

    @staticmethod
    def _sql(op: str, value: Any, what: str = "query") -> str:
        if not isinstance(value, str):
            raise InvocationError(
                ErrorKind.BAD_ARGUMENT, f"{op}: {what} must be a string, got {type(value).__name__}"
            )
        return value

    @staticmethod
    def _params(op: str, value: Any) -> list[values.Param | None]:
        if not isinstance(value, (list, tuple)):
            raise InvocationError(
                ErrorKind.BAD_ARGUMENT,
                f"{op}: params must be a list of pg-value, got {type(value).__name__}",
            )
        return [values.to_param(i, v) for i, v in enumerate(value)]

    @staticmethod
    async def _rows(cur: AsyncRawCursor[Any]) -> list[list[dict[str, Any]]]:
        desc = cur.description
        if not desc:
            return []
        cols = [(d.name, d.type_code) for d in desc]
        return [
            [
                {"column-name": name, "value": values.from_column(oid, v)}
                for (name, oid), v in zip(cols, row, strict=True)
            ]
            for row in await cur.fetchall()
        ]

    @operation(f"{QUERY}.query", params=("query", "params"))
    async def op_query(self, link: Link, args: list[Any]) -> dict[str, Any]:
        op = "query"
        sql = self._sql(op, args[0])

        async def run() -> list[list[dict[str, Any]]]:
            params = self._params(op, args[1])
            if statements.count(sql) > 1:  # psycopg would send it as a simple query
                raise _QueryFailed(
                    {"invalid-query": "query takes one statement; use query-batch for several"}
                )

            async def fn(cur: AsyncRawCursor[Any]) -> list[list[dict[str, Any]]]:
                await cur.execute(sql, params)
                return await self._rows(cur)

            return await self._run(link, op, sql, fn)

        return await self._result(link, run())

    @operation(f"{QUERY}.query-batch", params=("query",))
    async def op_query_batch(self, link: Link, args: list[Any]) -> dict[str, Any]:
        op = "query-batch"
        sql = self._sql(op, args[0])

        async def fn(cur: AsyncRawCursor[Any]) -> None:
            await cur.execute(sql)  # no parameters: the simple protocol, many statements

        async def run() -> None:
            await self._run(link, op, sql, fn, batch=True)

        return await self._result(link, run())

    # ------------------------------------------------------------------ prepared

    @operation(f"{PREPARED}.prepare", params=("statement",))
    async def op_prepare(self, link: Link, args: list[Any]) -> dict[str, Any]:
        sql = self._sql("prepare", args[0], "statement")
        linked = self._linked_for(link)
        if statements.count(sql) != 1:
            return {"err": {"unexpected": "a prepared statement must be exactly one statement"}}
        if len(linked.prepared) >= MAX_PREPARED:
            return {"err": {"unexpected": f"this link already holds {MAX_PREPARED} statements"}}
        token = f"prepared-{uuid.uuid4().hex}"
        linked.prepared[token] = sql
        return {"ok": token}

    @operation(f"{PREPARED}.exec", params=("stmt-token", "params"))
    async def op_exec(self, link: Link, args: list[Any]) -> dict[str, Any]:
        op = "exec"
        token = self._sql(op, args[0], "stmt-token")
        sql = self._linked_for(link).prepared.get(token)
        if sql is None:
            return {"err": {"unknown-prepared-query": None}}

        async def run() -> int:
            params = self._params(op, args[1])

            async def fn(cur: AsyncRawCursor[Any]) -> int:
                await cur.execute(sql, params, prepare=True)
                return max(cur.rowcount, 0)

            return await self._run(link, op, sql, fn)

        return await self._result(link, run(), nested=True)
