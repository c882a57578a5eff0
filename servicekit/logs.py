"""structlog JSON on stderr, one line per event, with context bound per worker (vm, vmi, node)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(component: str, **bound: Any) -> structlog.stdlib.BoundLogger:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(component=component, **bound)
    logger: structlog.stdlib.BoundLogger = structlog.get_logger()
    return logger
