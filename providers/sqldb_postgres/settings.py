"""A link's connection settings: target config for where, target secrets for who.

| setting (target config) | wasmCloud name          | default  |                                |
|-------------------------|-------------------------|----------|--------------------------------|
| `host`                  | `POSTGRES_HOST`         | required | host name or address           |
| `port`                  | `POSTGRES_PORT`         | 5432     | 1..65535                       |
| `database`              | `POSTGRES_DATABASE`     | required |                                |
| `sslmode`               | `POSTGRES_TLS_REQUIRED` | `prefer` | libpq sslmode (`true`: require) |
| `pool_size`             |                         | 10       | 1..100 connections             |
| `statement_timeout_ms`  |                         | 25000    | 1..3600000 (call timeout 30 s) |
| `connect_timeout`       |                         | 5        | 1..60 s, also the pool wait    |

Target secrets: `password` (`POSTGRES_PASSWORD`), required, and `user`
(`POSTGRES_USERNAME`), which may also be given as config since a user name is no secret.
A password in target config is refused (it would travel and be stored in the clear).
Every error names the setting and never echoes a value. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from providers.sdk import Link

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
ALIASES = {
    "host": "POSTGRES_HOST",
    "port": "POSTGRES_PORT",
    "database": "POSTGRES_DATABASE",
    "user": "POSTGRES_USERNAME",
    "password": "POSTGRES_PASSWORD",
}


class SettingsError(ValueError):
    """A link whose settings cannot be used; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    sslmode: str = "prefer"
    pool_size: int = 10
    statement_timeout_ms: int = 25_000
    connect_timeout: int = 5

    @property
    def where(self) -> str:
        """`postgres host:port/database` for messages and logs (no user, no password)."""
        return f"postgres {self.host}:{self.port}/{self.database}"

    def connect_kwargs(self) -> dict[str, str | int]:
        """libpq connection parameters; the session runs in UTC with ISO dates."""
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "password": self.password,
            "sslmode": self.sslmode,
            "connect_timeout": self.connect_timeout,
            "application_name": "lattice-sqldb-postgres",
            "options": (
                f"-c statement_timeout={self.statement_timeout_ms} "
                "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres"
            ),
        }


def _config(link: Link, name: str) -> str | None:
    for key in (name, ALIASES.get(name)):
        if key is not None:
            value = link.target_config.get(key)
            if value is not None and value.strip() != "":
                return value.strip()
    return None


def _secret(link: Link, name: str) -> str | None:
    for key in (name, ALIASES.get(name)):
        if key is not None:
            value = link.secret(key)
            if value:
                return value
    return None


def _int(link: Link, name: str, default: int, lo: int, hi: int) -> int:
    raw = _config(link, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"target config {name!r} must be an integer") from None
    if not lo <= value <= hi:
        raise SettingsError(f"target config {name!r} must be between {lo} and {hi}")
    return value


def parse(link: Link) -> Settings:
    """The settings of `link`, or SettingsError naming the first bad one."""
    for name in ("password",):
        if any(k in link.target_config for k in (name, ALIASES[name])):
            raise SettingsError(
                f"{name!r} must be a target secret, not target config "
                "(config is stored and sent in the clear)"
            )
    host = _config(link, "host")
    if host is None:
        raise SettingsError("no 'host' in the link's target config (e.g. host=db.internal)")
    if any(c.isspace() for c in host) or "/" in host:
        raise SettingsError("target config 'host' must be a host name or address")
    database = _config(link, "database")
    if database is None:
        raise SettingsError("no 'database' in the link's target config")
    user = _secret(link, "user") or _config(link, "user")
    if user is None:
        raise SettingsError("no 'user' in the link's target secrets (or target config)")
    password = _secret(link, "password")
    if password is None:
        raise SettingsError("no 'password' in the link's target secrets")
    sslmode = _config(link, "sslmode")
    if sslmode is None:
        tls = _config(link, "POSTGRES_TLS_REQUIRED")
        sslmode = "require" if tls is not None and tls.lower() in ("true", "yes", "1") else "prefer"
    if sslmode not in SSLMODES:
        raise SettingsError(f"target config 'sslmode' must be one of {', '.join(SSLMODES)}")
    return Settings(
        host=host,
        port=_int(link, "port", 5432, 1, 65535),
        database=database,
        user=user,
        password=password,
        sslmode=sslmode,
        pool_size=_int(link, "pool_size", 10, 1, 100),
        statement_timeout_ms=_int(link, "statement_timeout_ms", 25_000, 1, 3_600_000),
        connect_timeout=_int(link, "connect_timeout", 5, 1, 60),
    )
