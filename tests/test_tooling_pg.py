"""Port choice of the embedded server in `qbo-backfill pg env`, without a server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from qbo_backfill.cli import main

RUNNING_PORT = 57999


@pytest.fixture
def running_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Return a project root whose embedded server seems to run on RUNNING_PORT.

    ``postmaster.pid`` names this test's own process, which is alive, and the
    port on its fourth line, as PostgreSQL writes it.
    """
    data_dir = tmp_path / ".pgdata" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "postmaster.pid").write_text(
        f"{os.getpid()}\n{data_dir}\n1700000000\n{RUNNING_PORT}\n\n127.0.0.1\n"
    )
    (tmp_path / ".pgdata" / "password").write_text("generated-password\n")
    monkeypatch.setenv("MELTANO_PROJECT_ROOT", str(tmp_path))
    monkeypatch.delenv("PGHOST", raising=False)
    return tmp_path


def test_pg_env_uses_running_port(
    running_checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMBEDDED_PG_PORT", raising=False)

    result = CliRunner().invoke(main, ["pg", "env"])

    assert result.exit_code == 0, result.output
    assert f"export PGPORT={RUNNING_PORT}" in result.output
    assert "export PGPORT=55432" not in result.output


def test_pg_env_rejects_other_port(
    running_checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDDED_PG_PORT", "55432")

    result = CliRunner().invoke(main, ["pg", "env"])

    assert result.exit_code != 0
    assert "generated-password" not in result.output
    assert f"runs on port {RUNNING_PORT}" in result.output
    assert f"set EMBEDDED_PG_PORT={RUNNING_PORT}" in result.output
