"""cpu_niceness lowers the tap's CPU priority for a sync, and only then."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from qbo_emulator.testing import run_emulator

from tap_quickbooks_backfill import tap as tap_module

from .tap_runner import emulator_config, run_tap

_REPORT_NICENESS = textwrap.dedent(
    """
    import os
    from tap_quickbooks_backfill.tap import lower_cpu_priority

    before = os.nice(0)
    lower_cpu_priority(7)
    print(before, os.nice(0))
    """
)


def test_lower_cpu_priority_raises_nice_value():
    # In a child process, so that this test run keeps its own priority.
    completed = subprocess.run(  # noqa: S603 - this interpreter, fixed script
        [sys.executable, "-c", _REPORT_NICENESS],
        capture_output=True, text=True, check=True, timeout=60,
    )

    before, after = (int(value) for value in completed.stdout.split())

    assert after == min(before + 7, 19)


def test_sync_lowers_priority_by_setting(tmp_path, monkeypatch):
    increments: list[int] = []
    monkeypatch.setattr(tap_module.os, "nice", lambda value: increments.append(value) or 0)
    with run_emulator(invoices=20, customers=5, items=5) as emu:
        run = run_tap(
            emulator_config(emu, tmp_path, cpu_niceness=10), streams=["qb_items_raw"]
        )

    assert run.error is None
    assert increments == [10]


def test_sync_keeps_priority_by_default(tmp_path, monkeypatch):
    increments: list[int] = []
    monkeypatch.setattr(tap_module.os, "nice", lambda value: increments.append(value) or 0)
    with run_emulator(invoices=20, customers=5, items=5) as emu:
        run = run_tap(emulator_config(emu, tmp_path), streams=["qb_items_raw"])

    assert run.error is None
    assert increments == []
