"""Logging for the long-running services: one setup, one line per record."""

from __future__ import annotations

import logging
import sys

from rich.logging import RichHandler

# The registry client's HTTP library logs every request at INFO (confluent-kafka uses httpx, vendored as httpx2).
_NOISY = ("httpx", "httpx2")


def setup_logging() -> None:
    """INFO logging to stderr: rich on a terminal, plain one-line records otherwise (containers, files)."""
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
