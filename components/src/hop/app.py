"""Hop component: exports `lattice:hop/chain` and imports it too.

Linked to itself, `hop(n, name)` calls itself n times before answering; linked to
another hop (and that one back), the calls go round a cycle. `name` "fail" ends the
chain with an err, "trap" with a trap, "spin" never ends it (a deadline does), so tests
can see how each comes back up.
"""

from __future__ import annotations

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import chain


class Chain(exports.Chain):
    def hop(self, hops: int, name: str) -> str:
        if hops == 0:
            if name == "fail":
                raise Err("failed at the end of the chain")
            if name == "trap":
                raise RuntimeError("trapped at the end of the chain")
            while name == "spin":  # until the deadline stops it
                pass
            return name
        return f"{hops}>" + chain.hop(hops - 1, name)
