"""dbt staging models over raw tables holding the captured QBO sandbox records.

Each test database is made by the project's own ``qbo-backfill db init`` code
and filled the way target-postgres fills it: one row per QBO ``Id``, with the
object in ``payload``. ``meltano invoke dbt-postgres`` then transforms it, so the
models, the Meltano utility and the profile run as in production. dbt gets the
environment that the Makefile exports: PGUSER is the loader role and
QBO_PG_ADMIN_USER the administrator.

The expected values are read by hand off the captured QBO objects. The
server is the one of ``conftest.postgres_database``: PGHOST when set, else the
project's embedded PostgreSQL.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import PostgresDatabase
from psycopg.types.json import Jsonb
from qbo_emulator.company import load_captured_records

from qbo_backfill.db import AdminConnection, init_database

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MELTANO = Path(sys.executable).with_name("meltano")
DBT_EXECUTABLE = PROJECT_ROOT / ".meltano" / "utilities" / "dbt-postgres" / "venv" / "bin" / "dbt"
# Variables of the developer's shell that would change what dbt connects to.
INHERITED_PREFIXES = ("TAP_", "TARGET_", "MELTANO_", "QBO_", "PG", "DBT_")
STAGING_SCHEMA = "staging"
DBT_TIMEOUT_SECONDS = 300

RAW_TABLES = {
    "Invoice": "qb_invoices_raw",
    "Customer": "qb_customers_raw",
    "Item": "qb_items_raw",
}
MODELS = (
    "stg_quickbooks__invoices",
    "stg_quickbooks__invoice_lines",
    "stg_quickbooks__customers",
    "stg_quickbooks__items",
)
WINDOW_START = datetime(2023, 1, 1, tzinfo=UTC)
WINDOW_END = datetime(2023, 4, 1, tzinfo=UTC)

# Records derived from captured ones, standing for what QBO returns after a
# void of an invoice and a delete of a customer and of an item.
VOIDED_INVOICE_ID = "9119"
INACTIVE_CUSTOMER_ID = "9024"
INACTIVE_ITEM_ID = "9003"


@dataclass(frozen=True)
class RawDatabase:
    """A throwaway database with schema raw and the session's loader role."""

    admin: AdminConnection
    loader_role: str
    loader_password: str

    @property
    def name(self) -> str:
        """Name of the database."""
        return self.admin.database

    def connect(self) -> psycopg.Connection:
        """Open an autocommit connection as the administrator."""
        return self.admin.connect()


def _create_raw_database(server: PostgresDatabase) -> RawDatabase:
    """Create a database on the session's server with `qbo-backfill db init`."""
    admin = AdminConnection(
        host=server.admin.host, port=server.admin.port, user=server.admin.user,
        password=server.admin.password, database=f"dbt_test_{uuid.uuid4().hex[:10]}",
    )
    init_database(admin, server.loader_role)
    return RawDatabase(admin, server.loader_role, server.loader_password)


def _drop_database(database: RawDatabase) -> None:
    with database.admin.connect(database="postgres") as connection:
        connection.execute(f'drop database if exists "{database.name}" with (force)')


def _insert_raw(database: RawDatabase, entity: str, records: list[dict[str, Any]],
                ingested_at: datetime | None = None) -> None:
    """Insert records as target-postgres would after extracting one window."""
    ingested_at = ingested_at or datetime.now(UTC)
    rows = [
        (
            record["Id"],
            Jsonb(record),
            ingested_at,
            WINDOW_START,
            WINDOW_END,
            1,
            1000,
            Jsonb({"query": f"select * from {entity}", "start_position": 1,
                   "max_results": 1000, "minor_version": 75}),
            record["MetaData"]["LastUpdatedTime"],
            record["MetaData"]["CreateTime"],
            record["SyncToken"],
            record.get("Active") if entity != "Invoice" else None,
        )
        for record in records
    ]
    with database.connect() as connection, connection.cursor() as cursor:
        cursor.executemany(
            f"insert into raw.{RAW_TABLES[entity]} (id, payload, ingested_at_utc, "
            "extract_window_start_utc, extract_window_end_utc, page_number, page_size, "
            "request_payload, last_updated_utc, created_utc, sync_token, active) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def _record(records: list[dict[str, Any]], record_id: str) -> dict[str, Any]:
    return copy.deepcopy(next(record for record in records if record["Id"] == record_id))


def _voided_and_inactive_records(captured: dict[str, list[dict[str, Any]]]
                                 ) -> dict[str, list[dict[str, Any]]]:
    """Build a voided invoice, an inactive customer and an inactive item."""
    invoice = _record(captured["Invoice"], "119")
    invoice.update({"Id": VOIDED_INVOICE_ID, "DocNumber": "1035-V", "SyncToken": "1",
                    "PrivateNote": "Voided", "TotalAmt": 0, "Balance": 0})
    for line in invoice["Line"]:
        line["Amount"] = 0
        if "SalesItemLineDetail" in line:
            line["SalesItemLineDetail"]["Qty"] = 0
    invoice["TxnTaxDetail"]["TotalTax"] = 0

    customer = _record(captured["Customer"], "24")
    customer.update({"Id": INACTIVE_CUSTOMER_ID, "Active": False, "Balance": 0,
                     "BalanceWithJobs": 0,
                     "DisplayName": "Sonnenschein Family Store (deleted)"})

    item = _record(captured["Item"], "3")
    item.update({"Id": INACTIVE_ITEM_ID, "Active": False, "Name": "Concrete (deleted)"})
    return {"Invoice": [invoice], "Customer": [customer], "Item": [item]}


def _all_records() -> dict[str, list[dict[str, Any]]]:
    captured = load_captured_records()
    extra = _voided_and_inactive_records(captured)
    return {entity: captured[entity] + extra[entity] for entity in RAW_TABLES}


@dataclass(frozen=True)
class DbtRun:
    """One finished dbt command: its process and, when written, its run results."""

    process: subprocess.CompletedProcess[str]
    target_path: Path

    @property
    def output(self) -> str:
        """Standard output and error of the Meltano process."""
        return self.process.stdout + self.process.stderr

    def results(self) -> dict[str, dict[str, Any]]:
        """Return run_results.json entries keyed by the node's name.

        Unique ids read ``model.<project>.<name>``, ``test.<project>.<name>.<hash>``
        and ``unit_test.<project>.<model>.<name>``.
        """
        run_results = json.loads((self.target_path / "run_results.json").read_text())
        results = {}
        for entry in run_results["results"]:
            parts = entry["unique_id"].split(".")
            name = parts[3] if parts[0] == "unit_test" else parts[2]
            results[name] = entry
        return results


def _run_dbt(database: RawDatabase, target_path: Path, command: str,
             *args: str) -> DbtRun:
    """Run ``meltano invoke dbt-postgres COMMAND ARGS`` against the database."""
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith(INHERITED_PREFIXES)
    }
    environment.update({
        "PGHOST": database.admin.host,
        "PGPORT": str(database.admin.port),
        "PGDATABASE": database.name,
        "PGUSER": database.loader_role,
        "PGPASSWORD": database.loader_password,
        "QBO_PG_ADMIN_USER": database.admin.user,
        "QBO_PG_ADMIN_PASSWORD": database.admin.password or "",
        # Meltano reads a setting from <NAMESPACE>_<SETTING> and exports it to
        # dbt as DBT_TARGET_PATH and DBT_LOG_PATH.
        "DBT_POSTGRES_TARGET_PATH": str(target_path),
        "DBT_POSTGRES_LOG_PATH": str(target_path / "logs"),
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    })
    process = subprocess.run(
        [str(MELTANO), "invoke", command, *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=DBT_TIMEOUT_SECONDS,
        check=False,
    )
    return DbtRun(process, target_path)


def _fetch_all(database: RawDatabase, query: str,
               params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with database.connect() as connection:
        cursor = connection.cursor(row_factory=psycopg.rows.dict_row)
        return cursor.execute(query, params).fetchall()


def _fetch_one(database: RawDatabase, query: str,
               params: tuple[Any, ...] = ()) -> dict[str, Any]:
    rows = _fetch_all(database, query, params)
    assert len(rows) == 1, f"expected one row from {query!r} {params}, got {len(rows)}"
    return rows[0]


@pytest.fixture(scope="session")
def dbt_utility() -> Path:
    """Install Meltano's dbt-postgres utility when `make setup` has not."""
    if not DBT_EXECUTABLE.exists():
        subprocess.run(
            [str(MELTANO), "install", "utility", "dbt-postgres"],
            cwd=PROJECT_ROOT, check=True, timeout=DBT_TIMEOUT_SECONDS,
        )
    return DBT_EXECUTABLE


@pytest.fixture(scope="module")
def built(dbt_utility: Path, postgres_database: PostgresDatabase,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawDatabase, DbtRun]]:
    """Raw tables with the captured records, after ``dbt build``."""
    database = _create_raw_database(postgres_database)
    try:
        for entity, records in _all_records().items():
            _insert_raw(database, entity, records)
        run = _run_dbt(database, tmp_path_factory.mktemp("dbt-build"), "dbt-postgres",
                       "build")
        yield database, run
    finally:
        _drop_database(database)


@pytest.fixture(scope="module")
def staged(built: tuple[RawDatabase, DbtRun]) -> RawDatabase:
    """The database of ``built``, after checking that the build passed."""
    database, run = built
    assert run.process.returncode == 0, run.output[-4000:]
    return database


# --------------------------------------------------------------- dbt build


def test_build_passes_on_captured_records(built: tuple[RawDatabase, DbtRun]) -> None:
    _, run = built
    results = run.results()

    assert run.process.returncode == 0, run.output[-4000:]
    for model in MODELS:
        assert results[model]["status"] == "success"
    tests = {name: result for name, result in results.items() if name not in MODELS}
    assert "assert_invoice_sales_lines_sum_to_subtotal" in tests
    assert "invoice_lines_of_every_detail_type" in tests
    assert "invoice_void_flag_and_missing_line_array" in tests
    assert any(name.startswith("relationships_stg_quickbooks__invoice_lines_item_id")
               for name in tests)
    assert any(name.startswith("relationships_stg_quickbooks__invoices_customer_id")
               for name in tests)
    failed = {name: result["status"] for name, result in tests.items()
              if result["status"] != "pass"}
    assert failed == {}


def test_models_hold_one_row_per_raw_record(staged: RawDatabase) -> None:
    for model, table, key in [
        ("stg_quickbooks__invoices", "qb_invoices_raw", "invoice_id"),
        ("stg_quickbooks__customers", "qb_customers_raw", "customer_id"),
        ("stg_quickbooks__items", "qb_items_raw", "item_id"),
    ]:
        counts = _fetch_one(
            staged,
            f"select (select count(*) from {STAGING_SCHEMA}.{model}) as model_rows, "
            f"(select count(*) from raw.{table}) as raw_rows, "
            f"(select count(distinct {key}) from {STAGING_SCHEMA}.{model}) as distinct_ids",
        )
        assert counts["raw_rows"] > 0, table
        assert counts["model_rows"] == counts["raw_rows"], model
        assert counts["distinct_ids"] == counts["raw_rows"], model


def test_lines_hold_one_row_per_line_element(staged: RawDatabase) -> None:
    per_invoice = _fetch_all(
        staged,
        "select raw.id, jsonb_array_length(raw.payload -> 'Line') as elements, "
        "count(lines.invoice_id) as line_rows "
        f"from raw.qb_invoices_raw as raw left join {STAGING_SCHEMA}."
        "stg_quickbooks__invoice_lines as lines on lines.invoice_id = raw.id "
        "group by raw.id, raw.payload",
    )

    assert len(per_invoice) == 6
    for row in per_invoice:
        assert row["line_rows"] == row["elements"], row["id"]
    assert sum(row["line_rows"] for row in per_invoice) == 3 + 5 + 3 + 6 + 4 + 3


# ------------------------------------------------- values read off QBO objects


def test_invoice_119_values(staged: RawDatabase) -> None:
    invoice = _fetch_one(
        staged,
        f"select * from {STAGING_SCHEMA}.stg_quickbooks__invoices where invoice_id = '119'",
    )

    assert invoice["doc_number"] == "1035"
    assert invoice["sync_token"] == 0
    assert invoice["transaction_date"] == date(2023, 2, 18)
    assert invoice["due_date"] == date(2023, 3, 20)
    assert invoice["customer_id"] == "17"
    assert invoice["customer_name"] == "Mark Cho"
    assert invoice["currency_code"] == "USD"
    assert invoice["total_amount"] == Decimal("314.28")
    assert invoice["balance"] == Decimal("314.28")
    assert invoice["total_tax"] == Decimal("23.28")
    assert invoice["tax_code_id"] == "2"
    assert invoice["sales_term_id"] == "3"
    assert invoice["print_status"] == "NeedToPrint"
    assert invoice["email_status"] == "NotSet"
    assert invoice["bill_email"] == "Mark@Cho.com"
    assert invoice["customer_memo"] == "Thank you for your business and have a great day!"
    assert invoice["is_tax_applied_after_discount"] is False
    assert invoice["exchange_rate"] is None
    assert invoice["line_count"] == 3
    assert invoice["is_voided"] is False
    # 2023-02-18T12:57:24-08:00 in the company's Pacific time.
    assert invoice["created_at_utc"] == datetime(2023, 2, 18, 20, 57, 24, tzinfo=UTC)
    assert invoice["last_updated_at_utc"] == datetime(2023, 2, 18, 20, 57, 24, tzinfo=UTC)


def test_invoice_12_paid_and_edited(staged: RawDatabase) -> None:
    invoice = _fetch_one(
        staged,
        f"select * from {STAGING_SCHEMA}.stg_quickbooks__invoices where invoice_id = '12'",
    )

    assert invoice["total_amount"] == Decimal("2369.52")
    assert invoice["balance"] == Decimal("0")
    assert invoice["sync_token"] == 3
    assert invoice["transaction_date"] == date(2023, 2, 6)
    assert invoice["created_at_utc"] == datetime(2023, 2, 15, 23, 4, 4, tzinfo=UTC)
    assert invoice["last_updated_at_utc"] == datetime(2023, 2, 18, 20, 59, 21, tzinfo=UTC)
    assert invoice["shipping_address_id"] is None


def test_fractional_quantity_line(staged: RawDatabase) -> None:
    line = _fetch_one(
        staged,
        f"select * from {STAGING_SCHEMA}.stg_quickbooks__invoice_lines "
        "where invoice_id = '129' and line_index = 3",
    )

    assert line["invoice_line_key"] == "129-3"
    assert line["line_id"] == "3"
    assert line["line_number"] == 3
    assert line["detail_type"] == "SalesItemLineDetail"
    assert line["description"] == "Weekly Gardening Service"
    assert line["item_id"] == "6"
    assert line["item_name"] == "Gardening"
    assert line["quantity"] == Decimal("3.5")
    assert line["unit_price"] == Decimal("25")
    assert line["amount"] == Decimal("87.5")
    assert line["tax_code_id"] == "NON"


def test_subtotal_line_kept_without_item(staged: RawDatabase) -> None:
    lines = _fetch_all(
        staged,
        f"select * from {STAGING_SCHEMA}.stg_quickbooks__invoice_lines "
        "where invoice_id = '119' order by line_index",
    )

    assert [line["detail_type"] for line in lines] == [
        "SalesItemLineDetail", "SalesItemLineDetail", "SubTotalLineDetail",
    ]
    assert [line["amount"] for line in lines] == [
        Decimal("275.0"), Decimal("16.0"), Decimal("291.0"),
    ]
    assert [line["item_id"] for line in lines] == ["5", "17", None]
    assert [line["quantity"] for line in lines] == [Decimal("1"), Decimal("4"), None]
    subtotal = lines[2]
    assert subtotal["line_id"] is None
    assert subtotal["line_number"] is None
    assert subtotal["invoice_line_key"] == "119-3"


def test_sub_customer_has_parent(staged: RawDatabase) -> None:
    customers = {
        row["customer_id"]: row
        for row in _fetch_all(
            staged,
            f"select * from {STAGING_SCHEMA}.stg_quickbooks__customers "
            "where customer_id in ('7', '8')",
        )
    }

    job = customers["8"]
    assert job["parent_customer_id"] == "7"
    assert job["is_sub_customer"] is True
    assert job["hierarchy_level"] == 1
    assert job["display_name"] == "0969 Ocean View Road"
    assert job["fully_qualified_name"] == "Freeman Sporting Goods:0969 Ocean View Road"
    assert job["balance"] == Decimal("477.5")
    assert job["is_active"] is True
    assert job["website"] == "http://sportinggoods.intuit.com"
    assert job["billing_city"] == "Middlefield"
    assert job["billing_region"] == "CA"
    parent = customers["7"]
    assert parent["parent_customer_id"] is None
    assert parent["is_sub_customer"] is False
    assert parent["hierarchy_level"] is None
    assert parent["balance"] == Decimal("0")
    assert parent["balance_with_jobs"] == Decimal("562.5")
    assert parent["created_at_utc"] == datetime(2023, 2, 11, 0, 57, 10, tzinfo=UTC)


def test_item_values(staged: RawDatabase) -> None:
    items = {
        row["item_id"]: row
        for row in _fetch_all(
            staged,
            f"select * from {STAGING_SCHEMA}.stg_quickbooks__items "
            "where item_id in ('3', '5', '15')",
        )
    }

    fountain = items["5"]
    assert fountain["item_name"] == "Rock Fountain"
    assert fountain["item_type"] == "Inventory"
    assert fountain["is_active"] is True
    assert fountain["unit_price"] == Decimal("275")
    assert fountain["purchase_cost"] == Decimal("125")
    assert fountain["is_quantity_tracked"] is True
    assert fountain["quantity_on_hand"] == Decimal("2")
    assert fountain["inventory_start_date"] == date(2023, 2, 18)
    assert fountain["income_account_id"] == "79"
    assert fountain["asset_account_id"] == "81"
    assert fountain["sync_token"] == 2
    concrete = items["3"]
    assert concrete["item_type"] == "Service"
    assert concrete["unit_price"] == Decimal("0")
    assert concrete["is_quantity_tracked"] is False
    assert concrete["quantity_on_hand"] is None
    soil = items["15"]
    assert soil["purchase_cost"] == Decimal("6.5")
    assert soil["purchase_description"] == "2 cubic ft. bag"
    assert soil["expense_account_id"] == "66"
    # 2017-01-31T12:47:25-08:00
    assert soil["last_updated_at_utc"] == datetime(2017, 1, 31, 20, 47, 25, tzinfo=UTC)


def test_voided_and_inactive_records_flagged(staged: RawDatabase) -> None:
    voided = _fetch_one(
        staged,
        f"select * from {STAGING_SCHEMA}.stg_quickbooks__invoices where invoice_id = %s",
        (VOIDED_INVOICE_ID,),
    )
    customer = _fetch_one(
        staged,
        f"select * from {STAGING_SCHEMA}.stg_quickbooks__customers where customer_id = %s",
        (INACTIVE_CUSTOMER_ID,),
    )
    item = _fetch_one(
        staged,
        f"select * from {STAGING_SCHEMA}.stg_quickbooks__items where item_id = %s",
        (INACTIVE_ITEM_ID,),
    )
    flag_counts = _fetch_one(
        staged,
        "select "
        f"(select count(*) from {STAGING_SCHEMA}.stg_quickbooks__invoices "
        "where is_voided) as voided_invoices, "
        f"(select count(*) from {STAGING_SCHEMA}.stg_quickbooks__customers "
        "where not is_active) as inactive_customers, "
        f"(select count(*) from {STAGING_SCHEMA}.stg_quickbooks__items "
        "where not is_active) as inactive_items",
    )

    assert voided["is_voided"] is True
    assert voided["total_amount"] == Decimal("0")
    assert voided["private_note"] == "Voided"
    assert customer["is_active"] is False
    assert customer["display_name"] == "Sonnenschein Family Store (deleted)"
    assert item["is_active"] is False
    assert flag_counts == {"voided_invoices": 1, "inactive_customers": 1, "inactive_items": 1}


def test_columns_have_analyst_types(staged: RawDatabase) -> None:
    columns = {
        (row["table_name"], row["column_name"]): row["data_type"]
        for row in _fetch_all(
            staged,
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_schema = %s",
            (STAGING_SCHEMA,),
        )
    }
    expected = {
        ("stg_quickbooks__invoices", "total_amount"): "numeric",
        ("stg_quickbooks__invoices", "balance"): "numeric",
        ("stg_quickbooks__invoices", "total_tax"): "numeric",
        ("stg_quickbooks__invoices", "transaction_date"): "date",
        ("stg_quickbooks__invoices", "due_date"): "date",
        ("stg_quickbooks__invoices", "created_at_utc"): "timestamp with time zone",
        ("stg_quickbooks__invoices", "last_updated_at_utc"): "timestamp with time zone",
        ("stg_quickbooks__invoices", "customer_id"): "text",
        ("stg_quickbooks__invoices", "is_voided"): "boolean",
        ("stg_quickbooks__invoice_lines", "amount"): "numeric",
        ("stg_quickbooks__invoice_lines", "quantity"): "numeric",
        ("stg_quickbooks__invoice_lines", "unit_price"): "numeric",
        ("stg_quickbooks__invoice_lines", "service_date"): "date",
        ("stg_quickbooks__invoice_lines", "item_id"): "text",
        ("stg_quickbooks__invoice_lines", "line_index"): "integer",
        ("stg_quickbooks__customers", "balance"): "numeric",
        ("stg_quickbooks__customers", "parent_customer_id"): "text",
        ("stg_quickbooks__customers", "is_active"): "boolean",
        ("stg_quickbooks__customers", "created_at_utc"): "timestamp with time zone",
        ("stg_quickbooks__items", "unit_price"): "numeric",
        ("stg_quickbooks__items", "purchase_cost"): "numeric",
        ("stg_quickbooks__items", "quantity_on_hand"): "numeric",
        ("stg_quickbooks__items", "inventory_start_date"): "date",
        ("stg_quickbooks__items", "is_active"): "boolean",
    }

    for column, data_type in expected.items():
        assert columns.get(column) == data_type, column
    floats = [column for column, data_type in columns.items()
              if data_type in {"real", "double precision"}]
    assert floats == []
    naive_timestamps = [column for column, data_type in columns.items()
                        if data_type == "timestamp without time zone"]
    assert naive_timestamps == []
    not_snake_case = [name for _, name in columns if name != name.lower()]
    assert not_snake_case == []


def test_keys_and_join_columns_indexed(staged: RawDatabase) -> None:
    indexes = {
        (row["table_name"], row["column_name"], row["is_unique"])
        for row in _fetch_all(
            staged,
            "select tables.relname as table_name, columns.attname as column_name, "
            "indexes.indisunique as is_unique "
            "from pg_index as indexes "
            "join pg_class as tables on tables.oid = indexes.indrelid "
            "join pg_namespace as schemas on schemas.oid = tables.relnamespace "
            "join pg_attribute as columns on columns.attrelid = tables.oid "
            "and columns.attnum = any(indexes.indkey) "
            "where schemas.nspname = %s and indexes.indnatts = 1",
            (STAGING_SCHEMA,),
        )
    }

    for index in [
        ("stg_quickbooks__invoices", "invoice_id", True),
        ("stg_quickbooks__invoices", "customer_id", False),
        ("stg_quickbooks__invoices", "transaction_date", False),
        ("stg_quickbooks__invoice_lines", "invoice_line_key", True),
        ("stg_quickbooks__invoice_lines", "invoice_id", False),
        ("stg_quickbooks__invoice_lines", "item_id", False),
        ("stg_quickbooks__customers", "customer_id", True),
        ("stg_quickbooks__items", "item_id", True),
    ]:
        assert index in indexes


# ------------------------------------------------------------ documentation


def test_docs_generate_documents_every_column(staged: RawDatabase,
                                              tmp_path: Path) -> None:
    run = _run_dbt(staged, tmp_path, "dbt-postgres:docs-generate")

    assert run.process.returncode == 0, run.output[-4000:]
    catalog = json.loads((tmp_path / "catalog.json").read_text())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for model in MODELS:
        node_id = f"model.qbo_backfill.{model}"
        built_columns = set(catalog["nodes"][node_id]["columns"])
        documented = manifest["nodes"][node_id]["columns"]
        assert manifest["nodes"][node_id]["description"], model
        assert built_columns == set(documented), model
        undocumented = [name for name, column in documented.items()
                        if not column["description"]]
        assert undocumented == [], model


# -------------------------------------------------- data the tests must reject


@pytest.fixture(scope="module")
def broken_database(dbt_utility: Path,
                    postgres_database: PostgresDatabase) -> Iterator[RawDatabase]:
    """Captured records with a wrong subtotal, a missing item and a stale table."""
    database = _create_raw_database(postgres_database)
    try:
        records = _all_records()
        invoice = next(record for record in records["Invoice"] if record["Id"] == "130")
        invoice["Line"][-1]["Amount"] = 335.24
        invoice = next(record for record in records["Invoice"] if record["Id"] == "96")
        invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"] = "404"
        for entity, entity_records in records.items():
            ingested_at = datetime.now(UTC)
            if entity == "Item":
                ingested_at -= timedelta(days=8)
            _insert_raw(database, entity, entity_records, ingested_at)
        yield database
    finally:
        _drop_database(database)


def test_build_fails_on_wrong_subtotal_and_missing_item(broken_database: RawDatabase,
                                                       tmp_path: Path) -> None:
    run = _run_dbt(broken_database, tmp_path, "dbt-postgres", "build")
    results = run.results()

    assert run.process.returncode != 0
    subtotal = results["assert_invoice_sales_lines_sum_to_subtotal"]
    assert subtotal["status"] == "fail"
    assert subtotal["failures"] == 1
    item_reference = next(
        result for name, result in results.items()
        if name.startswith("relationships_stg_quickbooks__invoice_lines_item_id")
    )
    assert item_reference["status"] == "fail"
    assert item_reference["failures"] == 1
    other_failures = [
        name for name, result in results.items()
        if result["status"] not in {"pass", "success"}
        and result is not subtotal and result is not item_reference
    ]
    assert other_failures == []


def test_reference_severity_var_downgrades_to_warning(broken_database: RawDatabase,
                                                      tmp_path: Path) -> None:
    run = _run_dbt(
        broken_database, tmp_path, "dbt-postgres", "build",
        "--exclude", "assert_invoice_sales_lines_sum_to_subtotal",
        "--vars", "{quickbooks_reference_test_severity: warn}",
    )
    results = run.results()

    assert run.process.returncode == 0, run.output[-4000:]
    item_reference = next(
        result for name, result in results.items()
        if name.startswith("relationships_stg_quickbooks__invoice_lines_item_id")
    )
    assert item_reference["status"] == "warn"


def test_freshness_fails_on_stale_source(broken_database: RawDatabase,
                                         tmp_path: Path) -> None:
    run = _run_dbt(broken_database, tmp_path, "dbt-postgres:freshness")
    run_results = json.loads((tmp_path / "sources.json").read_text())
    statuses = {
        entry["unique_id"].split(".")[-1]: entry["status"]
        for entry in run_results["results"]
    }

    assert run.process.returncode != 0
    assert statuses == {
        "qb_invoices_raw": "pass",
        "qb_customers_raw": "pass",
        "qb_items_raw": "error",
    }
