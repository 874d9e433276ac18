"""structlog set-up shared by the host, the CLI and providers.

Log lines carry bound context (host id, lattice, component id) rather than formatting
it into messages, so JSON logs can be filtered by field.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]


_current: dict[str, str] = {"format": "console", "level": "info"}


def current_format() -> str:
    """The format last configured here (a worker process logs as its host does)."""
    return _current["format"]


def current_level() -> str:
    return _current["level"]


def configure(fmt: LogFormat = "console", level: str = "info") -> None:
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    _current.update(format=fmt, level=level)
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=sys.stderr)
