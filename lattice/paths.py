"""Where Lattice keeps its files on this machine when not told otherwise."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/lattice`, else `~/.local/share/lattice` (`--data-dir` overrides)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lattice"
