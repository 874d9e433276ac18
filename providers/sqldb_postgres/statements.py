"""What a SQL text is, as far as retrying it goes: a conservative lexical look.

`words(sql)` splits SQL into its top-level words and statement separators, skipping
comments (`--`, nested `/* */`), string literals (`'…'`, `E'…'`, dollar-quoted
`$tag$…$tag$`) and quoted identifiers (`"…"`). `read_only(sql)` says whether a statement
is safe to send again after the connection dropped under it: exactly one statement,
starting with SELECT, VALUES, TABLE, SHOW, EXPLAIN (not EXPLAIN ANALYZE, which runs
the statement) or WITH, and with no word anywhere that writes or locks (INSERT, UPDATE,
DELETE, MERGE, INTO, FOR, COPY, CALL, …) nor a call of a built-in function that
changes state (nextval, setval, pg_advisory_*, lo_*, pg_notify, set_config, …).

The server has the last word: a statement judged read-only here is retried inside a
READ ONLY transaction (providers.sqldb_postgres.provider), so one that writes after all
(through a user function, say) fails there instead of writing twice, and the caller
hears "outcome unknown". `has_transaction_control` finds BEGIN/COMMIT/ROLLBACK/… in
a batch: such a batch may commit part of itself before an error. No I/O here.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")

READ_STARTS = {"select", "values", "table", "show", "explain", "with"}
WRITES = {  # words that, inside a statement that starts like a read, mean it writes or locks
    "insert", "update", "delete", "merge", "into", "for", "analyze", "analyse", "lock",
    "call", "do", "notify", "execute", "create", "copy", "truncate",
}  # fmt: skip
_STATEFUL_FUNCTIONS = re.compile(
    r"^(nextval|setval|currval|lastval|set_config|pg_notify|pg_advisory_\w*|"
    r"pg_try_advisory_\w*|lo_\w*|dblink\w*|pg_terminate_backend|pg_cancel_backend|"
    r"pg_reload_conf|pg_rotate_logfile|pg_switch_wal|pg_create_\w*|pg_drop_\w*|"
    r"pg_replication_\w*|pg_logical_\w*|txid_current|pg_current_xact_id|"
    r"pg_stat_reset\w*|pg_promote|pg_file_\w*|pg_write_\w*)$"
)
TRANSACTION_CONTROL = {
    "begin", "commit", "rollback", "end", "start", "savepoint", "release", "abort",
    "prepare",
}  # fmt: skip


def words(sql: str) -> list[str]:
    """Top-level words (lower-cased) and ';' separators, outside literals and comments."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            nl = sql.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif c == "/" and sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "'" or (c in "eE" and sql.startswith("'", i + 1)):
            backslashes = c != "'"
            i += 1 if c == "'" else 2
            while i < n:
                if backslashes and sql[i] == "\\":
                    i += 2
                elif sql[i] == "'":
                    if sql.startswith("''", i):
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    i += 1
            out.append("'")
        elif c == '"':
            end = i + 1
            while True:
                end = sql.find('"', end)
                if end < 0 or not sql.startswith('""', end):
                    break
                end += 2
            i = n if end < 0 else end + 1
            out.append('"')
        elif c == "$" and (m := _DOLLAR.match(sql, i)) and not (i and _word_char(sql[i - 1])):
            close = sql.find(m.group(0), m.end())
            i = n if close < 0 else close + len(m.group(0))
            out.append("'")
        elif c == ";":
            out.append(";")
            i += 1
        elif m := _WORD.match(sql, i):
            out.append(m.group(0).lower())
            i = m.end()
        else:
            if (
                c == "("
                and out
                and out[-1] not in (";", "'", '"', "(")
                and _WORD.fullmatch(out[-1])
            ):
                out.append("(")
            i += 1
    return out


def _word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def statements(sql: str) -> list[list[str]]:
    """The non-empty statements of `sql`, each as its words."""
    found: list[list[str]] = [[]]
    for w in words(sql):
        if w == ";":
            found.append([])
        else:
            found[-1].append(w)
    return [s for s in found if s]


def read_only(sql: str) -> bool:
    """True only for one statement that reads and cannot write (see the module doc)."""
    parts = statements(sql)
    if len(parts) != 1:
        return False
    ws = parts[0]
    if ws[0] not in READ_STARTS:
        return False
    for i, w in enumerate(ws):
        if w in WRITES:
            return False
        if i + 1 < len(ws) and ws[i + 1] == "(" and _STATEFUL_FUNCTIONS.match(w):
            return False
    return True


def has_transaction_control(sql: str) -> bool:
    """Whether any statement of `sql` begins, ends or marks a transaction itself."""
    return any(s[0] in TRANSACTION_CONTROL for s in statements(sql))


def count(sql: str) -> int:
    return len(statements(sql))
