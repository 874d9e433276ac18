"""The sqldb-postgres provider as a real process against a real PostgreSQL.

`python -m providers.sqldb_postgres` runs with host data on stdin and is driven over NATS
as a host drives it (msgpack calls on `{lattice}.{provider_id}.rpc.wasmcloud:postgres/…`).
PostgreSQL is pgserver's bundled server, started by `tests.pg` in a temporary directory
on a free port with password authentication; nothing uses the machine's own database.
Links: `comp-a` (good), `comp-short` (300 ms statement timeout), `comp-badpw` (wrong
password), and three refused for their config. Dropped connections are made with
`pg_terminate_backend` from a superuser connection while a statement sleeps.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from lattice.protocol.invocation import ErrorKind, InvocationError
from providers.sdk import HostData, Link
from providers.sqldb_postgres.values import encode_f32, encode_f64
from tests.pg import PostgresServer, postgres_server  # noqa: F401  (the fixture)
from tests.servers import ProviderProcess, control, link_body, rpc

QUERY = "wasmcloud:postgres/query.query"
BATCH = "wasmcloud:postgres/query.query-batch"
PREPARE = "wasmcloud:postgres/prepared.prepare"
EXEC = "wasmcloud:postgres/prepared.exec"
DRAIN = 0.2
WRONG_PASSWORD = "not-the-password-7f3a91"


def pg_link(source: str, config: dict[str, str], secrets: dict[str, str]) -> Link:
    return Link.model_validate(
        {
            "source_id": source,
            "target": "sqldb",
            "name": "default",
            "wit_namespace": "wasmcloud",
            "wit_package": "postgres",
            "interfaces": ["query", "prepared"],
            "target_config": config,
            "target_secrets": secrets,
        }
    )


@dataclass
class SQL:
    nc: NATS
    proc: ProviderProcess
    pg: PostgresServer

    async def call(self, op: str, *args: Any, source: str = "comp-a", timeout: float = 15) -> Any:
        hd = self.proc.host_data
        return await rpc(
            self.nc, hd.lattice, hd.provider_id, op, list(args), source=source, timeout=timeout
        )

    async def ok(self, sql: str, *params: Any, source: str = "comp-a") -> Any:
        reply = await self.call(QUERY, sql, list(params), source=source)
        assert set(reply) == {"ok"}, f"{sql}: {reply!r:.400}"
        return reply["ok"]

    async def err(self, sql: str, *params: Any, source: str = "comp-a") -> dict[str, Any]:
        reply = await self.call(QUERY, sql, list(params), source=source)
        assert set(reply) == {"err"}, f"{sql}: {reply!r:.400}"
        return dict(reply["err"])

    async def batch(self, sql: str) -> Any:
        return await self.call(BATCH, sql)

    async def health(self) -> dict[str, Any]:
        reply = await control(self.nc, f"{self.proc.ctl}.health", {})
        assert reply.success, reply.message
        return dict(reply.response)

    async def app_backends(self, like: str) -> list[int]:
        rows = await self.pg.admin(
            "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND state = 'active' "
            f"AND query LIKE '%{like}%' AND pid <> pg_backend_pid()"
        )
        return [r[0] for r in rows]

    async def kill_when_running(self, like: str, timeout: float = 10.0) -> int:
        """Terminate the backend running a statement containing `like`, once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            pids = await self.app_backends(like)
            if pids:
                await self.pg.admin(f"SELECT pg_terminate_backend({pids[0]})")
                return pids[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no backend ran {like!r} within {timeout}s")


@pytest.fixture(scope="module")
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def sql(
    nats_url: str,
    nc: NATS,
    postgres_server: PostgresServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[SQL]:
    pg = postgres_server
    good = {
        "host": pg.host,
        "port": str(pg.port),
        "database": pg.database,
        "pool_size": "4",
        "connect_timeout": "2",
        "statement_timeout_ms": "10000",
    }
    creds = {"user": pg.user, "password": pg.password}
    links = [
        pg_link("comp-a", good, creds),
        pg_link("comp-short", {**good, "statement_timeout_ms": "300"}, creds),
        pg_link("comp-badpw", good, {"user": pg.user, "password": WRONG_PASSWORD}),
        pg_link("comp-nohost", {k: v for k, v in good.items() if k != "host"}, creds),
        pg_link("comp-badport", {**good, "port": "fifty"}, creds),
        pg_link("comp-pwconfig", {**good, "password": pg.password}, {"user": pg.user}),
    ]
    hd = HostData(
        lattice=f"sql{uuid.uuid4().hex[:8]}",
        nats_url=nats_url,
        provider_id="sqldb",
        host_id="NTESTHOST",
        link_definitions=links,
        log_level="debug",
        log_format="json",
        link_drain_seconds=DRAIN,
    )
    proc = ProviderProcess(
        "providers.sqldb_postgres", hd, tmp_path_factory.mktemp("sqldb") / "provider.log"
    )
    await proc.start()
    try:
        await proc.wait_ready(nc)
        yield SQL(nc, proc, pg)
    finally:
        await proc.stop()
        log = proc.stderr()
        for secret in (pg.password, WRONG_PASSWORD, pg.admin_password):
            assert secret not in log, "a password reached the provider's log"


def col(name: str, value: Any) -> dict[str, Any]:
    return {"column-name": name, "value": value}


def ts(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0, us: int = 0) -> dict[str, Any]:
    return {
        "date": {"ymd": [y, mo, d]},
        "time": {"hour": h, "min": mi, "sec": s, "micro": us},
    }


def tstz(t: dict[str, Any], case: str = "western-hemisphere-secs", secs: int = 0) -> Any:
    return {"timestamp-tz": {"timestamp": t, "offset": {case: secs}}}


def f8s(*xs: float) -> list[list[int]]:
    return [encode_f64(x) for x in xs]


UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
TEXT = "héllo ☃ 'single' \"double\" \\ back, {brace} NULL"
# (parameter sent, value expected back from `SELECT $1`)
ROUND_TRIP: list[tuple[Any, Any]] = [
    ({"null": None}, {"null": None}),
    ("null", {"null": None}),
    ({"int8": 2**63 - 1}, {"int8": 2**63 - 1}),
    ({"big-int": -(2**63)}, {"int8": -(2**63)}),
    ({"int4": -(2**31)}, {"int4": -(2**31)}),
    ({"integer": 7}, {"int4": 7}),
    ({"int2": 32767}, {"int2": 32767}),
    ({"serial4": 2**32 - 1}, {"int8": 2**32 - 1}),
    ({"float8": encode_f64(math.pi)}, {"float8": encode_f64(math.pi)}),
    ({"double": encode_f64(-0.1)}, {"float8": encode_f64(-0.1)}),
    ({"float8": encode_f64(math.inf)}, {"float8": encode_f64(math.inf)}),
    ({"float8": encode_f64(1e-310)}, {"float8": encode_f64(1e-310)}),  # subnormal
    ({"float4": encode_f32(1.5)}, {"float4": encode_f32(1.5)}),
    ({"real": encode_f32(-3.25)}, {"float4": encode_f32(-3.25)}),
    ({"bool": True}, {"bool": True}),
    ({"boolean": False}, {"bool": False}),
    ({"text": TEXT}, {"text": TEXT}),
    ({"text": ""}, {"text": ""}),
    ({"varchar": [None, "vä".encode()]}, {"varchar": [None, "vä".encode()]}),
    ({"char": [3, b"abc"]}, {"char": [3, b"abc"]}),
    ({"name": "pg_class"}, {"name": "pg_class"}),
    ({"bytea": b"\x00\x01\xfe\xff"}, {"bytea": b"\x00\x01\xfe\xff"}),
    ({"bytea": b""}, {"bytea": b""}),
    ({"numeric": "12345678901234567890.000000001"}, {"numeric": "12345678901234567890.000000001"}),
    ({"decimal": "-0.50"}, {"numeric": "-0.50"}),
    ({"numeric": "NaN"}, {"numeric": "NaN"}),
    ({"json": '{"a": [1, 2], "b": null}'}, {"json": '{"a": [1, 2], "b": null}'}),
    ({"jsonb": '{"b":1,"a":"x"}'}, {"jsonb": '{"a": "x", "b": 1}'}),
    ({"uuid": UUID}, {"uuid": UUID}),
    ({"inet": "192.168.0.1/24"}, {"inet": "192.168.0.1/24"}),
    ({"cidr": "10.0.0.0/8"}, {"cidr": "10.0.0.0/8"}),
    ({"macaddr": {"bytes": [8, 0, 43, 1, 2, 3]}}, {"macaddr": {"bytes": [8, 0, 43, 1, 2, 3]}}),
    ({"pg-lsn": (22 << 32) | 0xB374D848}, {"pg-lsn": (22 << 32) | 0xB374D848}),
    ({"date": {"ymd": [2024, 2, 29]}}, {"date": {"ymd": [2024, 2, 29]}}),
    ({"date": {"ymd": [-43, 3, 15]}}, {"date": {"ymd": [-43, 3, 15]}}),  # 44 BC
    ({"date": "positive-infinity"}, {"date": {"positive-infinity": None}}),
    ({"date": {"negative-infinity": None}}, {"date": {"negative-infinity": None}}),
    (
        {"time": {"hour": 23, "min": 59, "sec": 58, "micro": 123456}},
        {"time": {"hour": 23, "min": 59, "sec": 58, "micro": 123456}},
    ),
    ({"timestamp": ts(2024, 12, 31, 23, 59, 59, 999999)},) * 2,
    ({"timestamp": ts(10000, 1, 1, 0, 0, 0)}, {"timestamp": ts(10000, 1, 1, 0, 0, 0)}),
    (
        tstz(ts(2024, 6, 1, 12, 0, 0, 5), "eastern-hemisphere-secs", 5400),
        tstz(ts(2024, 6, 1, 10, 30, 0, 5)),
    ),
    (tstz(ts(2024, 6, 1, 12, 0, 0), "western-hemisphere-secs", 3600), tstz(ts(2024, 6, 1, 13))),
    ({"int4-array": [1, -2, 3]}, {"int4-array": [1, -2, 3]}),
    ({"int8-array": []}, {"int8-array": []}),
    ({"int2-array": [1, 2]}, {"int2-array": [1, 2]}),
    ({"bool-array": [True, False]}, {"bool-array": [True, False]}),
    ({"float8-array": f8s(0.5, -2.0)}, {"float8-array": f8s(0.5, -2.0)}),
    ({"text-array": ["a", "b,c", 'q"u', "\\", "", "NULL", TEXT]},) * 2,
    ({"numeric-array": ["1.5", "2"]}, {"numeric-array": ["1.5", "2"]}),
    ({"bytea-array": [b"\x00", b"\xff\x01"]}, {"bytea-array": [b"\x00", b"\xff\x01"]}),
    ({"uuid-array": [UUID]}, {"uuid-array": [UUID]}),
    ({"jsonb-array": ['{"k": 1}', "[]"]}, {"jsonb-array": ['{"k": 1}', "[]"]}),
    ({"date-array": [{"ymd": [2000, 1, 1]}]}, {"date-array": [{"ymd": [2000, 1, 1]}]}),
    ({"timestamp-array": [ts(2001, 2, 3, 4, 5, 6)]},) * 2,
]  # fmt: skip


async def test_typed_round_trip_of_every_supported_kind(sql: SQL) -> None:
    for param, expected in ROUND_TRIP:
        rows = await sql.ok("SELECT $1 AS v", param)
        assert rows == [[col("v", expected)]], param


async def test_nan_round_trip(sql: SQL) -> None:
    rows = await sql.ok("SELECT $1 AS v", {"float8": encode_f64(math.nan)})
    assert rows == [[col("v", {"float8": encode_f64(math.nan)})]]


async def test_table_round_trip_columns_and_nulls(sql: SQL) -> None:
    await sql.ok(
        "CREATE TABLE photos (id int8 PRIMARY KEY, name text NOT NULL, size int4, "
        "ratio float8, public bool, data bytea, taken timestamptz, price numeric(10,2), "
        "meta jsonb, tags text[])"
    )
    row = [
        {"int8": 1},
        {"text": "sunset.jpg"},
        {"int4": 2048},
        {"float8": encode_f64(1.5)},
        {"bool": True},
        {"bytea": b"\x89PNG"},
        tstz(ts(2024, 1, 2, 3, 4, 5), "eastern-hemisphere-secs", 0),
        {"numeric": "9.99"},
        {"jsonb": '{"camera": "x100"}'},
        {"text-array": ["beach", "sky"]},
    ]  # fmt: skip
    inserted = await sql.ok(
        "INSERT INTO photos VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id", *row
    )
    assert inserted == [[col("id", {"int8": 1})]]
    await sql.ok("INSERT INTO photos (id, name) VALUES ($1, $2)", {"int8": 2}, {"text": "blank"})
    rows = await sql.ok("SELECT * FROM photos ORDER BY id")
    names = ["id", "name", "size", "ratio", "public", "data", "taken", "price", "meta", "tags"]
    expected_first = [
        col(n, tstz(ts(2024, 1, 2, 3, 4, 5))) if n == "taken"
        else col(n, v)
        for n, v in zip(names, row, strict=True)
    ]  # fmt: skip
    assert rows[0] == expected_first
    assert rows[1] == [
        col("id", {"int8": 2}),
        col("name", {"text": "blank"}),
        *(col(n, {"null": None}) for n in names[2:]),
    ]
    by_name = await sql.ok("SELECT name FROM photos WHERE $1 = ANY(tags)", {"text": "sky"})
    assert by_name == [[col("name", {"text": "sunset.jpg"})]]
    assert await sql.ok("UPDATE photos SET size = size + 1 WHERE id = $1", {"int8": 1}) == []


async def test_types_without_a_case_come_back_as_text(sql: SQL) -> None:
    rows = await sql.ok(
        "SELECT '1 day 02:00:00'::interval AS i, point(1, 2) AS p, ARRAY[1, NULL]::int4[] AS a, "
        "ARRAY[[1, 2], [3, 4]] AS m, 'int4'::regtype AS r, 42::oid AS o"
    )
    assert rows == [
        [
            col("i", {"text": "1 day 02:00:00"}),
            col("p", {"text": "(1,2)"}),
            col("a", {"text": '{"1",NULL}'}),
            col("m", {"text": '{{"1","2"},{"3","4"}}'}),
            col("r", {"text": "integer"}),
            col("o", {"text": "42"}),
        ]
    ]


async def test_query_batch_runs_many_statements_all_or_nothing(sql: SQL) -> None:
    assert await sql.batch(
        "CREATE TABLE counts (k text PRIMARY KEY, n int4); "
        "INSERT INTO counts VALUES ('a', 1); INSERT INTO counts VALUES ('b', 2);"
    ) == {"ok": None}
    assert await sql.ok("SELECT sum(n)::int4 AS s FROM counts") == [[col("s", {"int4": 3})]]
    reply = await sql.batch("INSERT INTO counts VALUES ('c', 3); INSERT INTO nowhere VALUES (1)")
    assert reply == {"err": {"invalid-query": 'SQLSTATE 42P01: relation "nowhere" does not exist'}}
    assert await sql.ok("SELECT count(*)::int4 AS c FROM counts") == [[col("c", {"int4": 2})]], (
        "a failed batch applies nothing"
    )
    bad = await sql.batch("SELEC 1")
    assert bad == {"err": {"invalid-query": 'SQLSTATE 42601: syntax error at or near "SELEC"'}}


async def test_query_batch_with_its_own_commit_is_unknown_when_it_fails(sql: SQL) -> None:
    with pytest.raises(InvocationError) as info:
        await sql.batch(
            "BEGIN; INSERT INTO counts VALUES ('t', 1); COMMIT; INSERT INTO counts VALUES ('t', 2)"
        )
    assert info.value.kind == ErrorKind.TIMEOUT
    assert "SQLSTATE 23505" in info.value.message and "outcome is unknown" in info.value.message
    rows = await sql.ok("SELECT n FROM counts WHERE k = 't'")
    assert rows == [[col("n", {"int4": 1})]], "the part before COMMIT stayed: hence 'unknown'"


async def test_bad_sql_is_a_typed_error_with_the_server_message(sql: SQL) -> None:
    assert await sql.err("SELEC 1") == {
        "invalid-query": 'SQLSTATE 42601: syntax error at or near "SELEC"'
    }
    assert await sql.err("SELECT * FROM missing_table") == {
        "invalid-query": 'SQLSTATE 42P01: relation "missing_table" does not exist'
    }
    err = await sql.err("SELECT nope FROM photos")
    assert err == {
        "invalid-query": 'SQLSTATE 42703: column "nope" does not exist; '
        'hint: Perhaps you meant to reference the column "photos.name".'
    }
    err = await sql.err("SELECT 1; INSERT INTO users VALUES ('x')")
    assert err == {"invalid-query": "query takes one statement; use query-batch for several"}
    assert await sql.ok("SELECT 'a;b' AS s; -- one statement; a comment") == [
        [col("s", {"text": "a;b"})]
    ]
    err = await sql.err("SELECT 1/0")
    assert err == {"invalid-params": "SQLSTATE 22012: division by zero"}


async def test_unique_violation_is_a_typed_error_and_applies_nothing(sql: SQL) -> None:
    await sql.ok("CREATE TABLE users (email text PRIMARY KEY)")
    await sql.ok("INSERT INTO users VALUES ($1)", {"text": "a@example.com"})
    err = await sql.err("INSERT INTO users VALUES ($1)", {"text": "a@example.com"})
    assert err == {
        "unexpected": "SQLSTATE 23505: duplicate key value violates unique constraint "
        '"users_pkey"; '
        "detail: Key (email)=(a@example.com) already exists."
    }
    err = await sql.err("INSERT INTO users VALUES ($1)", {"null": None})
    assert err["unexpected"].startswith('SQLSTATE 23502: null value in column "email"')
    assert await sql.ok("SELECT count(*)::int4 AS c FROM users") == [[col("c", {"int4": 1})]]


async def test_bad_parameters_are_invalid_params_naming_the_parameter(sql: SQL) -> None:
    err = await sql.err("SELECT $1, $2", {"int4": 1}, {"box": [[[1, 0, 1]] * 2] * 2})
    assert err["invalid-params"].startswith(
        "params[1] ($2): pg-value case 'box' is not supported by this provider (supported: "
    )
    err = await sql.err("SELECT $1", {"uuid": "not-a-uuid"})
    assert err == {"invalid-params": "params[0] ($1): pg-value case 'uuid': expected a UUID string"}
    err = await sql.err("SELECT $1", {"int4": 2**31})
    assert "expected s32" in err["invalid-params"]
    err = await sql.err("SELECT $1::int4 + $2::int4", {"int4": 1})
    assert "SQLSTATE 08P01" in err["invalid-params"], err
    err = await sql.err("SELECT $1", {"numeric": "12abc"})
    assert err == {
        "invalid-params": "params[0] ($1): pg-value case 'numeric': "
        "expected a decimal number in a string"
    }
    err = await sql.err("SELECT $1 + 1", {"text": "5"})
    assert "SQLSTATE 42883: operator does not exist: text + integer" in err["invalid-query"]
    with pytest.raises(InvocationError) as info:
        await sql.call(QUERY, 42, [])
    assert info.value.kind == ErrorKind.BAD_ARGUMENT


async def test_statement_timeout_is_a_typed_error(sql: SQL) -> None:
    reply = await sql.call(QUERY, "SELECT pg_sleep(3)", [], source="comp-short")
    assert reply == {
        "err": {"unexpected": "SQLSTATE 57014: canceling statement due to statement timeout"}
    }


async def test_missing_or_invalid_config_names_the_setting(sql: SQL) -> None:
    cases = {
        "comp-nohost": "no 'host' in the link's target config",
        "comp-badport": "target config 'port' must be an integer",
        "comp-pwconfig": "'password' must be a target secret, not target config",
    }
    for source, words in cases.items():
        with pytest.raises(InvocationError) as info:
            await sql.call(QUERY, "SELECT 1", [], source=source)
        assert info.value.kind == ErrorKind.UNAVAILABLE
        assert words in info.value.message, info.value.message
        assert sql.pg.password not in info.value.message
        assert "fifty" not in info.value.message


async def test_wrong_password_is_an_error_without_the_password(sql: SQL) -> None:
    reply = await sql.call(QUERY, "SELECT 1", [], source="comp-badpw")
    message = reply["err"]["unexpected"]
    assert message.startswith(f"postgres 127.0.0.1:{sql.pg.port}/app unavailable: ")
    assert 'password authentication failed for user "app"' in message
    assert WRONG_PASSWORD not in message and sql.pg.password not in message
    health = await sql.health()
    assert health["healthy"] is False
    assert "password authentication failed" in health["message"]
    assert WRONG_PASSWORD not in health["message"] and sql.pg.password not in health["message"]


async def test_dropped_connection_retries_a_select_once(sql: SQL) -> None:
    call = asyncio.create_task(sql.ok("SELECT 42 AS answer FROM pg_sleep(1.0)"))
    killed = await sql.kill_when_running("pg_sleep(1.0)")
    assert await call == [[col("answer", {"int4": 42})]]
    assert killed not in await sql.app_backends("")
    assert "connection lost under a read, retrying once" in sql.proc.stderr()


async def test_dropped_connection_under_an_insert_is_unknown_outcome(sql: SQL) -> None:
    await sql.ok("CREATE TABLE events (n int4)")
    call = asyncio.create_task(
        sql.call(QUERY, "INSERT INTO events SELECT 7 FROM pg_sleep(1.0)", [])
    )
    await sql.kill_when_running("INSERT INTO events")
    with pytest.raises(InvocationError) as info:
        await call
    assert info.value.kind == ErrorKind.TIMEOUT
    assert "connection lost after the statement was sent" in info.value.message
    assert "outcome is unknown, so it was not retried" in info.value.message
    rows = await sql.ok("SELECT count(*)::int4 AS c FROM events")
    assert rows == [[col("c", {"int4": 0})]], "not retried (and this one was rolled back)"


async def test_a_select_that_writes_is_not_retried_into_a_second_write(sql: SQL) -> None:
    await sql.batch(
        "CREATE TABLE bumps (n int4); CREATE FUNCTION bump() RETURNS int4 LANGUAGE sql "
        "AS 'INSERT INTO bumps VALUES (1) RETURNING 1'"
    )
    call = asyncio.create_task(sql.call(QUERY, "SELECT bump() FROM pg_sleep(1.0)", []))
    await sql.kill_when_running("SELECT bump()")
    with pytest.raises(InvocationError) as info:
        await call
    assert info.value.kind == ErrorKind.TIMEOUT
    assert "retry, read-only, was refused" in info.value.message
    assert "SQLSTATE 25006" in info.value.message
    rows = await sql.ok("SELECT count(*)::int4 AS c FROM bumps")
    assert rows == [[col("c", {"int4": 0})]]


async def test_connections_killed_while_idle_are_replaced_before_a_write(sql: SQL) -> None:
    await asyncio.gather(*(sql.ok("SELECT pg_sleep(0.2)") for _ in range(3)))  # fill the pool
    await sql.pg.admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'"
    )
    await asyncio.sleep(0.2)
    assert await sql.ok("INSERT INTO events VALUES ($1)", {"int4": 1}) == []
    assert await sql.ok("SELECT count(*)::int4 AS c FROM events") == [[col("c", {"int4": 1})]]


async def test_prepared_statements(sql: SQL) -> None:
    await sql.ok("CREATE TABLE items (id int4 PRIMARY KEY, label text)")
    reply = await sql.call(PREPARE, "INSERT INTO items VALUES ($1, $2)")
    token = reply["ok"]
    assert isinstance(token, str) and token.startswith("prepared-")
    assert await sql.call(EXEC, token, [{"int4": 1}, {"text": "one"}]) == {"ok": 1}
    assert await sql.call(EXEC, token, [{"int4": 2}, {"text": "two"}]) == {"ok": 1}
    dup = await sql.call(EXEC, token, [{"int4": 2}, {"text": "again"}])
    assert dup["err"]["query-error"]["unexpected"].startswith("SQLSTATE 23505: duplicate key")
    update = await sql.call(PREPARE, "UPDATE items SET label = upper(label)")
    assert await sql.call(EXEC, update["ok"], []) == {"ok": 2}
    assert await sql.call(EXEC, "prepared-nope", []) == {"err": {"unknown-prepared-query": None}}
    assert await sql.call(EXEC, token, [{"box": None}]) == {
        "err": {
            "query-error": {
                "invalid-params": "params[0] ($1): pg-value case 'box' is not supported by "
                "this provider (supported: " + _supported() + ")"
            }
        }
    }
    assert await sql.call(PREPARE, "SELECT 1; SELECT 2") == {
        "err": {"unexpected": "a prepared statement must be exactly one statement"}
    }
    other = await sql.call(EXEC, token, [{"int4": 3}, {"text": "x"}], source="comp-short")
    assert other == {"err": {"unknown-prepared-query": None}}, "tokens belong to their link"


def _supported() -> str:
    from providers.sqldb_postgres.values import SUPPORTED_PARAMS

    return ", ".join(SUPPORTED_PARAMS)


async def test_a_changed_link_waits_for_calls_in_flight(sql: SQL) -> None:
    a = next(lk for lk in sql.proc.host_data.link_definitions if lk.source_id == "comp-a")
    changed = Link.model_validate(
        {**link_body(a), "target_config": {**a.target_config, "pool_size": "2"}}
    )
    call = asyncio.create_task(sql.ok("SELECT 1 AS one FROM pg_sleep(0.5)"))
    await asyncio.sleep(0.2)
    reply = await control(sql.nc, f"{sql.proc.ctl}.linkdefs.put", link_body(changed))
    assert reply.success, reply.message
    assert await call == [[col("one", {"int4": 1})]], "the old pool outlived its last call"
    assert await sql.ok("SELECT 2 AS two") == [[col("two", {"int4": 2})]]


async def test_still_serving_after_all_of_it(sql: SQL) -> None:
    assert sql.proc.process is not None and sql.proc.process.returncode is None
    rows = await sql.ok("SELECT count(*)::int4 AS c FROM photos")
    assert rows == [[col("c", {"int4": 2})]]
    health = await sql.health()
    assert sql.pg.password not in health["message"]


# ---------------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    ("statement", "retry"),
    [
        ("SELECT 1", True),
        ("  select * from t where a = $1 -- trailing; comment", True),
        ("SELECT 'insert into x' AS s;", True),
        ('SELECT "update" FROM t', True),
        ("SELECT $$ delete $$, $tag$ drop ; $tag$", True),
        ("WITH x AS (SELECT 1) SELECT * FROM x", True),
        ("SELECT CASE WHEN a THEN 1 END FROM t", True),
        ("SHOW search_path", True),
        ("EXPLAIN SELECT 1", True),
        ("VALUES (1), (2)", True),
        ("TABLE photos", True),
        ("/* a /* nested */ comment */ SELECT 1", True),
        ("SELECT E'it\\'s' AS s", True),
        ("EXPLAIN ANALYZE SELECT 1", False),
        ("EXPLAIN (ANALYZE) INSERT INTO t VALUES (1)", False),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", False),
        ("SELECT * INTO new_table FROM t", False),
        ("SELECT * FROM t FOR UPDATE", False),
        ("SELECT nextval('s')", False),
        ("SELECT pg_advisory_lock(1)", False),
        ("SELECT set_config('a.b', 'c', false)", False),
        ("INSERT INTO t VALUES (1)", False),
        ("UPDATE t SET a = 1", False),
        ("SELECT 1; SELECT 2", False),
        ("SELECT 1; DELETE FROM t", False),
        ("CALL p()", False),
        ("", False),
    ],
)
def test_read_only_is_conservative(statement: str, retry: bool) -> None:
    from providers.sqldb_postgres.statements import read_only

    assert read_only(statement) is retry


def test_transaction_control_and_statement_count() -> None:
    from providers.sqldb_postgres.statements import count, has_transaction_control

    assert has_transaction_control("BEGIN; INSERT INTO t VALUES (1); COMMIT")
    assert has_transaction_control("insert into t values (1); savepoint a")
    assert not has_transaction_control("CREATE TABLE t (a int); INSERT INTO t VALUES ('begin')")
    assert count("SELECT ';'; -- ; \n SELECT 2;") == 2
    assert count("  ;; -- nothing\n") == 0


def test_hashable_floats_match_rust_integer_decode() -> None:
    from providers.sqldb_postgres.values import decode_hashable

    assert encode_f64(1.0) == [2**52, -52, 1]  # Rust: (4503599627370496, -52, 1)
    assert encode_f64(-0.5) == [2**52, -53, -1]
    assert encode_f32(1.0) == [2**23, -23, 1]  # Rust: (8388608, -23, 1)
    for x in (0.0, -0.0, 1e-310, 5e-324, 1.7976931348623157e308, math.pi, math.inf, -math.inf):
        assert decode_hashable(encode_f64(x), f32=False) == x
    assert math.isnan(decode_hashable(encode_f64(math.nan), f32=False))
    assert decode_hashable(encode_f32(math.inf), f32=True) == math.inf
    assert decode_hashable(encode_f32(0.1), f32=True) == 0.10000000149011612


def test_the_builtin_ref_runs_this_provider() -> None:
    import sys

    from host.providers import provider_command

    cmd = provider_command("builtin://sqldb-postgres")
    assert cmd == [sys.executable, "-m", "providers.sqldb_postgres"]
