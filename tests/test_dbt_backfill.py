"""End-to-end: backfill an emulated company with `meltano run`, then dbt.

The company contains the captured sandbox records plus generated ones, among them
voided invoices and inactive customers and items. The test runs the pipeline
as a user would (`meltano run tap-qb-invoices target-postgres dbt-postgres:run`
after the customers and items), then `dbt build`, and compares the models with
the raw tables and with the emulator's records.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import MeltanoProject, PostgresDatabase, range_environment

pytestmark = pytest.mark.e2e

START = "2017-01-01T00:00:00Z"
END = "2025-02-01T00:00:00Z"
STAGING_SCHEMA = "staging"


def _assert_succeeded(result: Any, command: str) -> None:  # noqa: ANN401
    tail = "\n".join(result.output.splitlines()[-40:])
    assert result.returncode == 0, f"{command} exited with {result.returncode}:\n{tail}"


def _scalar(database: PostgresDatabase, query: str) -> Any:  # noqa: ANN401
    rows = database.fetch_all(query)
    assert len(rows) == 1, query
    return rows[0][0]


def _dbt_environment(database: PostgresDatabase, target_path: Path) -> dict[str, str]:
    """Return the variables with which dbt reaches the test database.

    PGUSER stays the loader role, which may not create schema staging, so dbt
    connects as the administrator named by QBO_PG_ADMIN_USER, as under the
    Makefile.
    """
    return {
        "QBO_PG_ADMIN_USER": database.admin.user,
        "QBO_PG_ADMIN_PASSWORD": database.admin.password or "",
        "DBT_POSTGRES_TARGET_PATH": str(target_path),
        "DBT_POSTGRES_LOG_PATH": str(target_path / "logs"),
    }


def test_backfill_then_dbt_build(start_emulator: Any, meltano_project: MeltanoProject,
                                 database: PostgresDatabase, tmp_path: Path) -> None:
    emulator = start_emulator(invoices=200, customers=40, items=25, include_captured=True)
    environment = {
        **range_environment("invoices", START, END),
        **range_environment("customers", START, END),
        **range_environment("items", START, END),
        "TAP_QUICKBOOKS_BACKFILL_WINDOW_SIZE": "365d",
        **_dbt_environment(database, tmp_path),
    }
    invoices = emulator.control.records("Invoice")
    customers = emulator.control.records("Customer")
    items = emulator.control.records("Item")

    names = meltano_project.run("run", "tap-qb-customers", "target-postgres",
                                "tap-qb-items", "target-postgres", env=environment)
    _assert_succeeded(names, "meltano run of customers and items")
    invoice_run = meltano_project.run("run", "tap-qb-invoices", "target-postgres",
                                      "dbt-postgres:run", env=environment)
    _assert_succeeded(invoice_run, "meltano run tap-qb-invoices target-postgres dbt-postgres:run")
    models_after_run = _scalar(
        database,
        "select count(*) from information_schema.tables where table_schema = 'staging'",
    )
    build = meltano_project.run("invoke", "dbt-postgres:build", env=environment)
    _assert_succeeded(build, "meltano invoke dbt-postgres:build")

    assert models_after_run == 4
    results = json.loads((tmp_path / "run_results.json").read_text())["results"]
    statuses = {result["unique_id"]: result["status"] for result in results}
    assert sum(1 for node in statuses if node.startswith("test.")) >= 50
    assert {node: status for node, status in statuses.items()
            if status not in {"pass", "success"}} == {}

    # One row per raw record, and per Line element.
    for model, table, records in [
        ("stg_quickbooks__invoices", "qb_invoices_raw", invoices),
        ("stg_quickbooks__customers", "qb_customers_raw", customers),
        ("stg_quickbooks__items", "qb_items_raw", items),
    ]:
        raw_rows = _scalar(database, f"select count(*) from raw.{table}")
        model_rows = _scalar(database, f"select count(*) from {STAGING_SCHEMA}.{model}")
        assert raw_rows == len(records), table
        assert model_rows == raw_rows, model
    line_rows = _scalar(
        database, f"select count(*) from {STAGING_SCHEMA}.stg_quickbooks__invoice_lines"
    )
    assert line_rows == sum(len(invoice["Line"]) for invoice in invoices)

    # Voided and inactive records are kept and flagged.
    voided = sorted(invoice["Id"] for invoice in invoices
                    if invoice.get("PrivateNote", "").startswith("Voided"))
    inactive_customers = sum(1 for customer in customers if not customer["Active"])
    inactive_items = sum(1 for item in items if not item["Active"])
    assert voided, "the emulated company has no voided invoice to check"
    assert inactive_customers > 0
    assert inactive_items > 0
    flagged = database.fetch_all(
        f"select invoice_id from {STAGING_SCHEMA}.stg_quickbooks__invoices "
        "where is_voided order by invoice_id"
    )
    assert sorted(row[0] for row in flagged) == voided
    assert _scalar(
        database,
        f"select count(*) from {STAGING_SCHEMA}.stg_quickbooks__customers where not is_active",
    ) == inactive_customers
    assert _scalar(
        database,
        f"select count(*) from {STAGING_SCHEMA}.stg_quickbooks__items where not is_active",
    ) == inactive_items

    # Captured records, with the values read off the QBO objects.
    assert _scalar(
        database,
        f"select total_amount from {STAGING_SCHEMA}.stg_quickbooks__invoices "
        "where invoice_id = '119'",
    ) == Decimal("314.28")
    assert _scalar(
        database,
        f"select quantity from {STAGING_SCHEMA}.stg_quickbooks__invoice_lines "
        "where invoice_id = '129' and line_number = 3",
    ) == Decimal("3.5")
    assert _scalar(
        database,
        f"select parent_customer_id from {STAGING_SCHEMA}.stg_quickbooks__customers "
        "where customer_id = '8'",
    ) == "7"
    assert _scalar(
        database,
        f"select quantity_on_hand from {STAGING_SCHEMA}.stg_quickbooks__items "
        "where item_id = '17'",
    ) == Decimal("31")
