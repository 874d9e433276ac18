"""Routes of the http-server provider: which component serves a request (pure, no I/O).

A source link (provider → component, `wasi:http`, interface `incoming-handler`) becomes
one `Route` from its source config: `address` (`host:port` to listen on, default
`127.0.0.1:8080`), `path` (a prefix, default `/`) and `host` (a Host-header match,
optional). Several routes may share an address. A request picks, among the routes of
the address it came in on, those whose `host` equals its Host header (port and case
ignored) and takes the one with the longest prefix that matches on a segment boundary
(`/api` matches `/api` and `/api/x`, not `/apix`); when none of those matches, the
routes without a `host` are tried the same way. The path is forwarded unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.sdk import LinkKey

DEFAULT_ADDRESS = "127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class Route:
    key: LinkKey
    component_id: str
    address: str
    prefix: str = "/"
    host: str | None = None


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:8080`) → (host, port); ValueError naming the problem."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def route_from_config(key: LinkKey, component_id: str, config: dict[str, str]) -> Route:
    """The route a source link asks for; ValueError naming the bad setting."""
    unknown = sorted(set(config) - {"address", "path", "host"})
    if unknown:
        raise ValueError(f"unknown source config setting(s): {', '.join(unknown)}")
    address = config.get("address") or DEFAULT_ADDRESS
    parse_address(address)
    prefix = config.get("path") or "/"
    if not prefix.startswith("/"):
        raise ValueError(f"path {prefix!r} must start with '/'")
    if len(prefix) > 1:
        prefix = prefix.rstrip("/")
    host = (config.get("host") or "").strip().lower() or None
    return Route(key, component_id, address, prefix, host)


def _host_name(host_header: str | None) -> str:
    host = (host_header or "").strip().lower()
    if host.startswith("["):  # [::1]:8080
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _prefix_matches(prefix: str, path: str) -> bool:
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "?")


def select(routes: list[Route], host_header: str | None, path: str) -> Route | None:
    """The route for a request, or None (→ 404)."""
    host = _host_name(host_header)
    by_host = [r for r in routes if r.host is not None and r.host == host]
    return _longest(by_host, path) or _longest([r for r in routes if r.host is None], path)


def _longest(routes: list[Route], path: str) -> Route | None:
    best: Route | None = None
    for r in routes:
        if _prefix_matches(r.prefix, path) and (best is None or len(r.prefix) > len(best.prefix)):
            best = r
    return best
