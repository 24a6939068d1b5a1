"""End-to-end: `meltano run` backfills windows of the emulator into Postgres.

Each test starts a small emulated company, runs the project's real Meltano
pipeline (tap, target-postgres, state) as a subprocess and checks the raw
tables against the emulator's current records.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
from collections import Counter
from typing import Any

import pytest

from conftest import MeltanoProject, PostgresDatabase

pytestmark = pytest.mark.e2e

START = "2022-12-01T00:00:00Z"
END = "2025-02-01T00:00:00Z"
WINDOW_SIZE = {"TAP_QUICKBOOKS_BACKFILL_WINDOW_SIZE": "120d"}


def utc(text: str) -> dt.datetime:
    """Parse an ISO-8601 instant with offset into an aware UTC datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def ids_in_window(
    records: list[dict[str, Any]], start: str, end: str, field: str = "LastUpdatedTime"
) -> list[str]:
    """Return the sorted ids whose ``MetaData.<field>`` lies in ``[start, end)``."""
    low, high = utc(start), utc(end)
    return sorted(
        record["Id"] for record in records
        if low <= utc(record["MetaData"][field]) < high
    )


def assert_succeeded(result: Any) -> None:  # noqa: ANN401
    """Fail with Meltano's last output lines when the command failed."""
    tail = "\n".join(result.output.splitlines()[-40:])
    assert result.returncode == 0, f"meltano exited with {result.returncode}:\n{tail}"


def test_rerun_keeps_one_row_per_id(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    emulator = start_emulator(invoices=60, customers=10, items=5)
    expected = ids_in_window(emulator.control.records("Invoice"), START, END)

    first = meltano_project.backfill("invoices", START, END, env=WINDOW_SIZE)
    assert_succeeded(first)
    first_ingested = database.fetch_all("select max(ingested_at_utc) from raw.qb_invoices_raw")

    second = meltano_project.backfill("invoices", START, END, "--full-refresh",
                                      env=WINDOW_SIZE)
    assert_succeeded(second)

    assert database.ids("qb_invoices_raw") == expected
    assert database.count("qb_invoices_raw") == len(expected)
    second_ingested = database.fetch_all("select min(ingested_at_utc) from raw.qb_invoices_raw")
    assert second_ingested[0][0] > first_ingested[0][0], "the re-run did not rewrite rows"


def test_window_edges_are_half_open(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    emulator = start_emulator(invoices=5, customers=30, items=5)
    start, end = "2023-06-01T00:00:00Z", "2023-07-01T00:00:00Z"
    customers = emulator.control.records("Customer")
    at_start, last_second, at_end = (record["Id"] for record in customers[:3])
    emulator.control.update("Customer", at_start, {}, last_updated=start)
    emulator.control.update("Customer", last_second, {}, last_updated="2023-06-30T23:59:59Z")
    emulator.control.update("Customer", at_end, {}, last_updated=end)
    expected = ids_in_window(emulator.control.records("Customer"), start, end)

    result = meltano_project.backfill(
        "customers", start, end, env={"TAP_QUICKBOOKS_BACKFILL_WINDOW_SIZE": "10d"}
    )
    assert_succeeded(result)

    landed = database.ids("qb_customers_raw")
    assert at_start in landed
    assert last_second in landed
    assert at_end not in landed
    assert landed == expected


@pytest.mark.parametrize(("entity", "qbo_entity"), [("customers", "Customer"), ("items", "Item")])
def test_inactive_records_land(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase,
    entity: str, qbo_entity: str,
) -> None:
    emulator = start_emulator(invoices=5, customers=25, items=25)
    deactivated = [record["Id"] for record in emulator.control.records(qbo_entity)[:4]]
    for record_id in deactivated:
        emulator.control.deactivate(qbo_entity, record_id, last_updated="2024-03-01T12:00:00Z")
    expected = ids_in_window(emulator.control.records(qbo_entity), START, END)

    result = meltano_project.backfill(entity, START, END, env=WINDOW_SIZE)
    assert_succeeded(result)

    table = f"qb_{entity}_raw"
    assert database.ids(table) == expected
    inactive = database.fetch_all(
        f"select id from raw.{table} where active is false "  # noqa: S608 - fixed names
        "and payload->>'Active' = 'false' order by id"
    )
    assert set(deactivated) <= {row[0] for row in inactive}


def test_tie_beyond_a_page_lands(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    emulator = start_emulator(invoices=5, customers=40, items=5)
    tied = [record["Id"] for record in emulator.control.records("Customer")[:13]]
    for record_id in tied:
        emulator.control.update("Customer", record_id, {}, last_updated="2024-05-05T05:05:05Z")
    records = emulator.control.records("Customer")
    largest_tie = max(Counter(r["MetaData"]["LastUpdatedTime"] for r in records).values())
    assert largest_tie >= 13, "the emulator did not keep the tie this test needs"
    expected = ids_in_window(records, START, END)

    result = meltano_project.backfill(
        "customers", START, END, env={**WINDOW_SIZE, "TAP_QUICKBOOKS_BACKFILL_PAGE_SIZE": "5"}
    )
    assert_succeeded(result)

    landed = database.ids("qb_customers_raw")
    assert set(tied) <= set(landed)
    assert landed == expected


def test_edits_during_scan_lose_nothing(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    emulator = start_emulator(invoices=5, customers=40, items=5)
    start, end = "2023-01-01T00:00:00Z", "2025-01-01T00:00:00Z"
    in_window = sorted(
        (r for r in emulator.control.records("Customer")
         if utc(start) <= utc(r["MetaData"]["LastUpdatedTime"]) < utc(end)),
        key=lambda r: (utc(r["MetaData"]["LastUpdatedTime"]), int(r["Id"])),
    )
    # QBO moves an edited record's LastUpdatedTime to now, out of a past window,
    # which shifts every later record one position down while the scan pages.
    for record in in_window[:3]:
        emulator.control.schedule(
            after_query_requests=3,
            action={"op": "update", "entity": "Customer", "id": record["Id"],
                    "changes": {"Notes": "edited during the scan"}},
        )

    result = meltano_project.backfill(
        "customers", start, end,
        env={"TAP_QUICKBOOKS_BACKFILL_WINDOW_SIZE": "1000d",
             "TAP_QUICKBOOKS_BACKFILL_PAGE_SIZE": "4"},
    )
    assert_succeeded(result)

    applied = [change for change in emulator.control.scheduled()["changes"]
               if change.get("applied")]
    assert len(applied) == 3, "the edits did not happen during the scan"
    still_in_window = ids_in_window(emulator.control.records("Customer"), start, end)
    landed = set(database.ids("qb_customers_raw"))
    assert set(still_in_window) <= landed


def test_captured_records_land_unchanged(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    start_emulator(invoices=3, customers=3, items=3, include_captured=True)
    captured_file = importlib.resources.files("qbo_emulator").joinpath(
        "captured", "sandbox_records.jsonl"
    )
    captured = [json.loads(line) for line in captured_file.read_text().splitlines() if line]
    assert captured, "no captured records found in the emulator package"

    for entity in ("invoices", "customers", "items"):
        assert_succeeded(meltano_project.backfill(entity, START, END, env=WINDOW_SIZE))

    tables = {"Invoice": "qb_invoices_raw", "Customer": "qb_customers_raw",
              "Item": "qb_items_raw"}
    for line in captured:
        table = tables[line["entity"]]
        original = line["record"]
        rows = database.fetch_all(
            f"select payload from raw.{table} where id = %(id)s",  # noqa: S608
            {"id": original["Id"]},
        )
        assert len(rows) == 1, f"{line['entity']} {original['Id']} did not land"
        assert rows[0][0] == original, f"{line['entity']} {original['Id']} payload changed"


def test_columns_keep_contract_types_after_load(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    start_emulator(invoices=10, customers=5, items=5)

    for entity in ("invoices", "customers", "items"):
        assert_succeeded(meltano_project.backfill(entity, START, END, env=WINDOW_SIZE))

    columns = dict(
        ((table, column), (data_type, nullable))
        for table, column, data_type, nullable in database.fetch_all(
            "select table_name, column_name, data_type, is_nullable "
            "from information_schema.columns where table_schema = 'raw'"
        )
    )
    for table in ("qb_invoices_raw", "qb_customers_raw", "qb_items_raw"):
        assert database.count(table) > 0
        for column in ("ingested_at_utc", "extract_window_start_utc",
                       "extract_window_end_utc", "last_updated_utc", "created_utc"):
            assert columns[(table, column)] == ("timestamp with time zone", "NO"), column
        for column in ("payload", "request_payload"):
            assert columns[(table, column)] == ("jsonb", "NO"), column
        for column in ("page_number", "page_size"):
            assert columns[(table, column)] == ("integer", "NO"), column
        assert columns[(table, "id")] == ("text", "NO")
    for column in ("window_start_utc", "window_end_utc", "started_at_utc"):
        assert columns[("qb_extract_windows", column)] == ("timestamp with time zone", "NO")
    assert database.count("qb_extract_windows") > 0


def test_state_clear_reprocesses_window(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    emulator = start_emulator(invoices=5, customers=12, items=5)
    customer = emulator.control.records("Customer")[0]["Id"]
    emulator.control.update("Customer", customer, {}, last_updated="2024-02-01T00:00:00Z")
    assert_succeeded(meltano_project.backfill("customers", START, END, env=WINDOW_SIZE))

    # An edit that keeps the record inside the finished range: only a reprocess reads it.
    emulator.control.update("Customer", customer, {"Notes": "corrected later"},
                            last_updated="2024-02-02T00:00:00Z")
    assert_succeeded(meltano_project.backfill("customers", START, END, env=WINDOW_SIZE))
    note = "select payload->>'Notes' from raw.qb_customers_raw where id = %(id)s"
    assert database.fetch_all(note, {"id": customer})[0][0] != "corrected later"

    cleared = meltano_project.run(
        "state", "clear", "--force", "dev:tap-qb-customers-to-target-postgres"
    )
    assert_succeeded(cleared)
    assert_succeeded(meltano_project.backfill("customers", START, END, env=WINDOW_SIZE))

    assert database.fetch_all(note, {"id": customer})[0][0] == "corrected later"
    assert database.ids("qb_customers_raw") == ids_in_window(
        emulator.control.records("Customer"), START, END
    )


def test_nul_in_a_note_lands_as_replacement(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    # Postgres jsonb cannot store \u0000: without the tap's replacement the load fails.
    emulator = start_emulator(invoices=5, customers=2, items=2)
    invoice = emulator.control.records("Invoice")[0]
    emulator.control.update("Invoice", invoice["Id"], {"PrivateNote": "before\x00after"})

    assert_succeeded(meltano_project.backfill("invoices", START, "2099-01-01", env=WINDOW_SIZE))

    notes = database.fetch_all(
        "select payload->>'PrivateNote' from raw.qb_invoices_raw where id = %(id)s",
        {"id": invoice["Id"]},
    )
    assert notes == [("before\ufffdafter",)]
    assert database.fetch_all("select count(*) from raw.qb_invoices_raw") == [(5,)]
