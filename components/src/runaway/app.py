"""Runaway component: misbehaves on purpose so the host's execution limits can be tested."""

from __future__ import annotations

from wit_world import exports

# Kept at module level so the memory stays allocated across calls on one instance.
_kept: list[bytearray] = []


class Runaway(exports.Runaway):
    def spin(self) -> int:
        # Only an epoch/fuel interruption from the host ends this.
        while True:
            pass

    def hog(self, mb: int) -> int:
        _kept.append(bytearray(mb * 1024 * 1024))
        return sum(len(b) for b in _kept) // (1024 * 1024)

    def ping(self) -> str:
        return "pong"
