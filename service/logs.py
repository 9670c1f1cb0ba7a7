"""Structured logs on stdout: dotted event names, flat fields, JSON when not on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

from service.config import LogSettings


def configure(settings: LogSettings) -> None:
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    console = settings.format == "console" or (settings.format == "auto" and sys.stdout.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # asyncpg's pool reconnects on its own while the database is away, and prints a warning
    # with a traceback at each try; the store's health logs the outage once instead.
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
