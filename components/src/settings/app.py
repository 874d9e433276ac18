"""Settings component: reads its named config through wasi:config and logs through
wasi:logging, both served by the host itself (no link needed)."""

from __future__ import annotations

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import logging, store

LEVELS = {level.name.lower(): level for level in logging.Level}


class Settings(exports.Settings):
    def get(self, key: str) -> str | None:
        try:
            return store.get(key)
        except Err as err:
            return f"error: {err.value}"

    def all(self) -> list[tuple[str, str]]:
        try:
            return sorted(store.get_all())
        except Err:
            return []

    def log(self, level: str, message: str) -> bool:
        lvl = LEVELS.get(level.lower())
        if lvl is None:
            return False
        logging.log(lvl, "settings", message)
        return True
