"""WIT interfaces the validator knows, to warn about typos in link traits.

Only the `wasi` and `wasmcloud` namespaces are checked: an interface missing from this
table gets a warning, never an error (new interfaces appear faster than tables change).
Any other namespace is the application's own WIT (`lattice:examples/greet`) and is not
checked at all.
"""

from __future__ import annotations

KNOWN: dict[str, dict[str, frozenset[str]]] = {
    "wasi": {
        "keyvalue": frozenset({"store", "atomics", "batch", "watcher"}),
        "http": frozenset({"incoming-handler", "outgoing-handler", "types"}),
        "config": frozenset({"store", "runtime"}),
        "logging": frozenset({"logging"}),
        "blobstore": frozenset({"blobstore", "container", "types"}),
        "messaging": frozenset({"consumer", "producer", "handler", "types"}),
    },
    "wasmcloud": {
        "messaging": frozenset({"consumer", "handler", "types"}),
        "postgres": frozenset({"query", "prepared", "types"}),
        "bus": frozenset({"lattice"}),
        "secrets": frozenset({"store", "reveal"}),
    },
}


def check_interface(namespace: str, package: str, interface: str) -> str | None:
    """A warning when `namespace:package/interface` is not known, else None."""
    packages = KNOWN.get(namespace)
    if packages is None:
        return None  # custom namespace: not checked
    interfaces = packages.get(package)
    if interfaces is None:
        known = ", ".join(sorted(packages))
        return f"{namespace}:{package} is not a known {namespace} package (known: {known})"
    if interface not in interfaces:
        known = ", ".join(sorted(interfaces))
        return (
            f"{namespace}:{package}/{interface} is not a known interface of "
            f"{namespace}:{package} (known: {known})"
        )
    return None
