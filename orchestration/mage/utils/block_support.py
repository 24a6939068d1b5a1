"""Glue between Mage block functions and the backfill modules."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .meltano_process import LogLine

_fallback_logger = logging.getLogger("qbo_backfill.mage")


def block_line_logger(block_kwargs: Mapping[str, Any]) -> LogLine:
    """Return a function that writes one line to the block's Mage log.

    Mage passes its logger as the `logger` keyword argument. Its `info` takes
    a finished message and no `%` arguments, so lines go in as they are.
    Outside Mage (in tests), lines go to the `qbo_backfill.mage` logger.
    """
    mage_logger = block_kwargs.get("logger")
    if mage_logger is None:
        return lambda line: _fallback_logger.info("%s", line)
    return lambda line: mage_logger.info(line)


def mage_project_path(block_kwargs: Mapping[str, Any]) -> str:
    """Return the folder of the running Mage project."""
    repo_path = block_kwargs.get("repo_path")
    if repo_path:
        return str(repo_path)

    from mage_ai.settings.repo import get_repo_path

    return get_repo_path()


def mage_data_dir() -> str:
    """Return the folder where Mage keeps this project's run data (`variables_dir`)."""
    from mage_ai.settings.repo import get_variables_dir

    return get_variables_dir()
