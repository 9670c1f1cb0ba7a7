"""Structured logs on stdout: dotted event names, flat fields, JSON when not on a terminal.

Libraries' records (uvicorn's, apscheduler's, asyncio's) go through the standard library's
`logging`: they are rendered in the same shape (`event` is their message, `logger` their
logger's name) on the same stream, so that every line of a JSON log parses as one object."""

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
    stamped: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,  # a request's id on every line it causes
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *stamped,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write a line, as the handler below makes: lines from two threads never merge.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamped],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    # Libraries are heard from warnings up, as without a handler: their info lines
    # (apscheduler's at every job run, uvicorn's at start and stop) would drown the bridge's.
    root.setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)  # Python's warnings too, which are printed to stderr otherwise
    # asyncpg's pool reconnects on its own while the database is away, and prints a warning
    # with a traceback at each try; the store's health logs the outage once instead.
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
