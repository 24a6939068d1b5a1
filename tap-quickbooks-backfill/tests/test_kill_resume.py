"""A tap process killed in the middle of a window, then run again from its state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from qbo_emulator.testing import run_emulator

from .tap_runner import emulator_config

TAP_COMMAND = [sys.executable, "-m", "tap_quickbooks_backfill.tap"]


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def test_killed_run_resumes_and_loses_nothing(tmp_path):
    with run_emulator(invoices=600, customers=5, items=5, latency_base_ms=5) as emu:
        config = emulator_config(
            emu,
            tmp_path,
            start_date="2023-01-01T00:00:00Z",
            end_date="2025-02-01T00:00:00Z",
            window_size="60d",
            page_size=20,
        )
        config_file = write_json(tmp_path / "config.json", config)

        first_ids: set[str] = set()
        last_state = None
        killed_in_window = None
        with subprocess.Popen(
            [*TAP_COMMAND, "--config", str(config_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                message = json.loads(line)
                if message["type"] == "STATE":
                    last_state = message["value"]
                elif message["type"] == "RECORD" and message["stream"] == "qb_invoices_raw":
                    first_ids.add(message["record"]["id"])
                    bookmarks = (last_state or {}).get("bookmarks", {})
                    if bookmarks.get("qb_invoices_raw", {}).get("replication_key_value"):
                        # Records of the window after a committed bookmark: kill now.
                        killed_in_window = message["record"]["extract_window_start_utc"]
                        os.kill(process.pid, signal.SIGKILL)
                        break
            process.wait()

        assert killed_in_window is not None
        bookmark = last_state["bookmarks"]["qb_invoices_raw"]["replication_key_value"]
        assert killed_in_window == bookmark

        state_file = write_json(tmp_path / "state.json", last_state)
        second = subprocess.run(
            [*TAP_COMMAND, "--config", str(config_file), "--state", str(state_file)],
            capture_output=True,
            text=True,
            check=True,
        )
        expected = {record["Id"] for record in emu.control.records("Invoice")}

    second_records = [
        json.loads(line)["record"]
        for line in second.stdout.splitlines()
        if '"qb_invoices_raw"' in line and '"RECORD"' in line
    ]
    assert first_ids | {record["id"] for record in second_records} == expected
    assert min(r["extract_window_start_utc"] for r in second_records) == bookmark
