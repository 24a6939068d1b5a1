"""Known QBO failures end the command with their message and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from qbo_emulator.testing import run_emulator

from .tap_runner import emulator_config

_RUN_TAP = "from tap_quickbooks_backfill.tap import TapQuickBooksBackfill; TapQuickBooksBackfill.cli()"


def _run_cli(config, tmp_path):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return subprocess.run(  # noqa: S603 - this interpreter, fixed script
        [sys.executable, "-c", _RUN_TAP, "--config", str(config_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_rejected_refresh_token_exits_cleanly(tmp_path):
    with run_emulator(invoices=20, customers=5, items=5) as emu:
        config = emulator_config(emu, tmp_path, refresh_token="rtoken-that-qbo-never-issued")
        completed = _run_cli(config, tmp_path)

    assert completed.returncode == 1
    assert "invalid_grant" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert "rtoken-that-qbo-never-issued" not in completed.stderr


def test_rejected_query_exits_cleanly(tmp_path):
    with run_emulator(invoices=20, customers=5, items=5) as emu:
        # QBO's QueryProcessingError inside an HTTP 200 fails at once, without retries.
        emu.control.inject_faults("fault_200", count=1, code="4002")
        config = emulator_config(emu, tmp_path)
        completed = _run_cli(config, tmp_path)

    assert completed.returncode == 1
    assert "code 4002" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_unwritable_token_store_exits_before_refresh(tmp_path):
    # A file where the folder should be: the folder cannot be created, even by root.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    with run_emulator(invoices=20, customers=5, items=5) as emu:
        config = emulator_config(emu, tmp_path, token_store_path=str(blocker / "tokens"))
        completed = _run_cli(config, tmp_path)
        token_requests = emu.control.requests(endpoint="token")

    assert completed.returncode == 1
    assert "token_store_path" in completed.stderr
    assert "is not a writable folder" in completed.stderr
    assert "Traceback" not in completed.stderr
    # No refresh happened, so QBO did not rotate the refresh token.
    assert token_requests == []
