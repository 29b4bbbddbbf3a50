"""Logging set-up for entry points (libraries only get loggers)."""

from __future__ import annotations

import logging
import os


def configure_logging(service: str, level: str | None = None) -> None:
    """Log to stderr with time, service and logger; level from ``STREAMSCORE_LOG_LEVEL``."""
    chosen = (level or os.environ.get("STREAMSCORE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, chosen, logging.INFO),
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        force=True,
    )
    # kafka-python logs every failed connection attempt as an error; streamscore reports
    # what matters itself, so its own logs are shown only when debugging.
    if chosen != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
