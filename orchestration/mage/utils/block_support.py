"""Glue between Mage block functions and the backfill modules."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .meltano_process import LogLine


def block_line_logger(block_kwargs: Mapping[str, Any]) -> LogLine:
    """Return a function that writes one line to the block's Mage log.

    In a triggered run Mage passes its block logger as the `logger` keyword
    argument; its `info` takes a finished message and no `%` arguments. `mage
    run` passes no logger and shows what the block prints on its standard
    output, which Mage has redirected for the block, so lines are printed.
    """
    mage_logger = block_kwargs.get("logger")
    if mage_logger is None:
        return _print_line
    return lambda line: mage_logger.info(line)


def _print_line(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


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
