"""Entry point of the ``qbo-backfill`` command."""

from __future__ import annotations

import logging

import click

from qbo_backfill.db import db_group
from qbo_backfill.emulator import emulator_group
from qbo_backfill.pg import pg_group
from qbo_backfill.validate import validate_command


@click.group()
@click.option("--verbose", "-v", is_flag=True, help="Log at DEBUG level instead of INFO.")
def main(verbose: bool) -> None:
    """Tooling of the qbo-backfill Meltano project."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


main.add_command(pg_group)
main.add_command(db_group)
main.add_command(emulator_group)
main.add_command(validate_command)

# Further command groups (validation, evidence) register here with
# main.add_command(<group>), each defined in its own module.
