"""End-to-end: crashes, token rotation and API faults during `meltano run`."""

from __future__ import annotations

import stat
from typing import Any

import pytest

from conftest import (
    MeltanoProject,
    PostgresDatabase,
    kill_process_group,
    range_environment,
    wait_until,
)
from test_e2e_backfill import END, START, WINDOW_SIZE, assert_succeeded, ids_in_window

pytestmark = pytest.mark.e2e


def test_killed_run_completes_on_rerun(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    # 300 ms per page of 5 records: the scan of 120 customers lasts several seconds.
    emulator = start_emulator(invoices=5, customers=120, items=5, latency_base_ms=300)
    expected = ids_in_window(emulator.control.records("Customer"), START, END)
    env = {
        **range_environment("customers", START, END),
        **WINDOW_SIZE,
        "TAP_QUICKBOOKS_BACKFILL_PAGE_SIZE": "5",
        # Commit every 5 rows, so rows land while the run is still going.
        "TARGET_POSTGRES_BATCH_SIZE_ROWS": "5",
    }

    process = meltano_project.start("run", "tap-qb-customers", "target-postgres", env=env)
    try:
        wait_until(
            lambda: process.poll() is not None or database.count("qb_customers_raw") >= 10,
            timeout=120, message="10 customers landed",
        )
        assert process.poll() is None, (
            f"the run ended with exit code {process.returncode} before it could be "
            f"killed: see {meltano_project.work_dir / 'meltano-background.log'}"
        )
    finally:
        kill_process_group(process)
    landed_before_rerun = database.count("qb_customers_raw")
    assert landed_before_rerun < len(expected), "the kill came after the whole load"

    emulator.control.set_config(latency_base_ms=0)
    # The killed run never marked its Meltano job as ended; --force skips the
    # check that would otherwise reject a new run for about 5 minutes.
    result = meltano_project.run("run", "--force", "tap-qb-customers", "target-postgres",
                                 env=env)
    assert_succeeded(result)

    landed = database.ids("qb_customers_raw")
    assert landed == expected
    assert len(landed) == len(set(landed))


def test_rotated_token_is_used_by_next_run(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    emulator = start_emulator(invoices=5, customers=10, items=5, rotation="every_refresh")
    original_token = emulator.refresh_token

    first = meltano_project.backfill("customers", START, END, env=WINDOW_SIZE)
    assert_succeeded(first)

    stored = list(meltano_project.token_store.glob("*.json"))
    assert len(stored) == 1
    assert stat.S_IMODE(stored[0].stat().st_mode) == 0o600
    assert original_token not in emulator.emulator.tokens.refresh_tokens, (
        "the emulator did not rotate the refresh token"
    )

    # Same configuration as the first run: the configured token is the original one.
    second = meltano_project.backfill("customers", START, END, "--full-refresh",
                                      env=WINDOW_SIZE)
    assert_succeeded(second)
    assert database.ids("qb_customers_raw") == ids_in_window(
        emulator.control.records("Customer"), START, END
    )

    # Without the stored token, the original one is rejected: the second run
    # succeeded only because it read the rotated token from the store.
    without_store = meltano_project.backfill(
        "customers", START, END, "--full-refresh",
        env={**WINDOW_SIZE,
             "TAP_QUICKBOOKS_BACKFILL_TOKEN_STORE_PATH": str(meltano_project.work_dir / "empty")},
    )
    assert without_store.returncode != 0
    assert "invalid_grant" in without_store.output


def test_burst_of_429_and_5xx_is_survived(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    emulator = start_emulator(invoices=40, customers=5, items=5, fault_seed=3)
    emulator.control.inject_faults("429", count=4)
    emulator.control.inject_faults("500", count=2, fraction=0.3)
    emulator.control.inject_faults("503", count=2, fraction=0.3)
    expected = ids_in_window(emulator.control.records("Invoice"), START, END)

    result = meltano_project.backfill(
        "invoices", START, END,
        env={**WINDOW_SIZE, "TAP_QUICKBOOKS_BACKFILL_PAGE_SIZE": "5"},
    )
    assert_succeeded(result)

    statuses = [entry["status"] for entry in emulator.control.requests(endpoint="query")]
    assert statuses.count(429) == 4
    assert statuses.count(500) + statuses.count(503) == 4
    assert emulator.control.faults() == [], "not every injected fault was served"
    assert database.ids("qb_invoices_raw") == expected
    retried = database.fetch_all(
        "select sum(retries), sum(throttles) from raw.qb_extract_windows"
    )
    assert retried[0][0] >= 8
    assert retried[0][1] >= 4
