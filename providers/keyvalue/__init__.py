"""wasi:keyvalue@0.2.0-draft semantics shared by the built-in key-value providers.

`semantics` (validation, counters, paging, wire errors), `keycodec` (reversible key
escaping), `store` (the backend contract and shared clients) and `provider`
(`KeyValueProvider`, which serves the operations for any `Store`).
"""

from providers.keyvalue.provider import KeyValueProvider
from providers.keyvalue.semantics import KvError, Unavailable
from providers.keyvalue.store import SharedPool, Store

__all__ = ["KeyValueProvider", "KvError", "SharedPool", "Store", "Unavailable"]
