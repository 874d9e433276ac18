"""Greeter component: exports `lattice:examples/greet`, the target `caller` links to."""

from __future__ import annotations

from componentize_py_types import Err
from wit_world import exports


class Greet(exports.Greet):
    def hello(self, name: str) -> str:
        return f"Hello, {name}!"

    def shout(self, words: list[str]) -> str:
        if not words:
            raise Err("nothing to shout")
        return " ".join(word.upper() for word in words)
