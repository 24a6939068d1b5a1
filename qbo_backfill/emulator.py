"""Start and stop the local QBO emulator in the background for the demo."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from qbo_backfill.project import project_root
from qbo_backfill.services import BackgroundService, ServiceError

DEFAULT_PORT = 8765


def emulator_service() -> BackgroundService:
    """Return the emulator service on ``QBO_EMULATOR_PORT`` (default 8765)."""
    port_text = os.environ.get("QBO_EMULATOR_PORT", str(DEFAULT_PORT))
    try:
        port = int(port_text)
    except ValueError as error:
        raise click.BadParameter(
            f"QBO_EMULATOR_PORT must be a TCP port number, got {port_text!r}"
        ) from error
    return BackgroundService(name="qbo-emulator", run_dir=project_root() / ".run", port=port)


def _emulator_executable() -> str:
    # The emulator is installed in the same virtual environment as this command.
    candidate = Path(sys.executable).parent / "qbo-emulator"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("qbo-emulator")
    if found is None:
        raise click.ClickException("qbo-emulator is not installed: run `make setup`")
    return found


@click.group(name="emulator")
def emulator_group() -> None:
    """Run the local QBO emulator (the demo company) in the background."""


@emulator_group.command()
def start() -> None:
    """Start the emulator on 127.0.0.1:QBO_EMULATOR_PORT unless it already runs."""
    service = emulator_service()
    command = [_emulator_executable(), "serve", "--host", "127.0.0.1",
               "--port", str(service.port)]
    try:
        pid = service.start(command)
    except ServiceError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"QBO emulator running on http://127.0.0.1:{service.port} (pid {pid}), "
               f"log {service.log_file}")


@emulator_group.command()
def stop() -> None:
    """Stop the emulator started by `start`."""
    stopped = emulator_service().stop()
    click.echo("QBO emulator stopped" if stopped else "QBO emulator was not running")
