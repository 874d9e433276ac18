"""sqldb-postgres: wasmcloud:postgres@0.1.1-draft (`query`, `prepared`) on PostgreSQL.

Run with `python -m providers.sqldb_postgres` (or `builtin://sqldb-postgres`). Link
target config: `host`, `database` (required), `port`, `sslmode`, `pool_size`,
`statement_timeout_ms`, `connect_timeout`; target secrets: `user`, `password`. See
docs/sqldb.md.
"""

from providers.sqldb_postgres.provider import PostgresProvider

__all__ = ["PostgresProvider"]
