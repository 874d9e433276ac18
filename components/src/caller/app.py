"""Caller component: imports `lattice:examples/greet` and re-exports it as `relay`.

The host satisfies the import by forwarding to whatever component is linked (normally
`greeter`).  Without a link the host makes the imported call trap, and that trap simply
propagates out of the `relay` call.  An `err` from `shout` is passed through unchanged.
"""

from __future__ import annotations

from wit_world import exports
from wit_world.imports import greet


class Relay(exports.Relay):
    def relay_hello(self, name: str) -> str:
        return greet.hello(name)

    def relay_shout(self, words: list[str]) -> str:
        return greet.shout(words)
