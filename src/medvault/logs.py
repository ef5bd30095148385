"""Logging to the data directory. What we log is chosen so that no PHI can reach a log line:
method, path (ids are opaque UUIDs), status and duration; never query strings, bodies or values."""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path

LOGGER = "medvault"


def setup(log_dir: Path, *, console: bool = False, per_process: bool = False) -> logging.Logger:
    """Log to `log_dir/medvault.log`. `per_process`: to `medvault.<pid>.log` instead, for one of
    several server processes (a rotating file shared by processes loses lines when it rotates)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    name = f"medvault.{os.getpid()}.log" if per_process else "medvault.log"
    target = str((log_dir / name).resolve())
    if not any(getattr(h, "baseFilename", None) == target for h in logger.handlers):
        handler = RotatingFileHandler(target, maxBytes=20_000_000, backupCount=5, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
    if console and not any(
        isinstance(h, logging.StreamHandler) and not hasattr(h, "baseFilename") for h in logger.handlers
    ):
        logger.addHandler(logging.StreamHandler())
    logger.propagate = False
    return logger


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER}.{name}")
