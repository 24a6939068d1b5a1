"""Validation logic against a real Postgres and an in-memory QBO stand-in.

The stand-in replaces only validation's own ``QboSource`` (counts, window
listing, lookups by id), so these tests pin the classification rules quickly.
``test_validate_e2e.py`` runs the whole command against the emulator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from conftest import PostgresDatabase
from tap_quickbooks_backfill.rows import decode_query_body

from qbo_backfill.validate import ValidationReport, validate_range
from qbo_backfill.validation_checks import (
    CHANGED,
    DELETED_IN_QBO,
    EDITED_AFTER_EXTRACTION,
    GAP,
    INCOMPLETE,
    MISMATCH,
    MISSING_FROM_RAW,
    OK,
    STALE_IN_RAW,
)
from qbo_backfill.validation_db import QueryLog, RawStore
from qbo_backfill.validation_entities import ENTITIES, EntitySpec, WindowField
from qbo_backfill.validation_qbo import QboRecordTimes, QboSource

INVOICES = ENTITIES["invoices"]
DAY = timedelta(days=1)
JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)
EXTRACTED_AT = datetime(2024, 2, 1, tzinfo=UTC)


@pytest.fixture
def connection(database: PostgresDatabase) -> Iterator[psycopg.Connection]:
    """Open an autocommit connection to the test database's empty raw tables."""
    with database.connect() as conn:
        yield conn


@dataclass
class FakeQbo:
    """In-memory QBO company: records by id with their current timestamps."""

    records: dict[str, QboRecordTimes]

    def count(self, spec: EntitySpec, field: WindowField, start: datetime,
              end: datetime) -> int:
        return len(self.window_records(spec, field, start, end))

    def window_records(self, spec: EntitySpec, field: WindowField, start: datetime,
                       end: datetime) -> dict[str, QboRecordTimes]:
        del spec
        return {
            record_id: times for record_id, times in self.records.items()
            if (value := times.value_of(field)) is not None and start <= value < end
        }

    def records_by_id(self, spec: EntitySpec, ids: list[str]) -> dict[str, QboRecordTimes]:
        del spec
        return {record_id: self.records[record_id] for record_id in ids
                if record_id in self.records}


def _insert_raw(conn: psycopg.Connection, record_id: str, updated: datetime,
                window: tuple[datetime, datetime]) -> None:
    payload = {"Id": record_id, "MetaData": {"LastUpdatedTime": updated.isoformat()}}
    conn.execute(
        """INSERT INTO raw.qb_invoices_raw (id, payload, ingested_at_utc,
               extract_window_start_utc, extract_window_end_utc, page_number, page_size,
               request_payload, last_updated_utc, created_utc)
           VALUES (%s, %s, now(), %s, %s, 1, 1000, '{}', %s, %s)
           ON CONFLICT (id) DO UPDATE SET payload = excluded.payload,
               last_updated_utc = excluded.last_updated_utc""",
        (record_id, json.dumps(payload), window[0], window[1], updated, updated),
    )


def _record_window(conn: psycopg.Connection, window: tuple[datetime, datetime],
                   count: int, outcome: str = "complete") -> None:
    conn.execute(
        """INSERT INTO raw.qb_extract_windows (entity, window_start_utc, window_end_utc,
               window_field, qbo_count, records_emitted, pages, requests, retries,
               throttles, started_at_utc, finished_at_utc, run_id, outcome)
           VALUES ('Invoice', %s, %s, 'LastUpdatedTime', %s, %s, 1, 2, 0, 0, %s, %s,
               'run-1', %s)""",
        (window[0], window[1], count, count, EXTRACTED_AT, EXTRACTED_AT, outcome),
    )


def _backfill(conn: psycopg.Connection, days: int, per_day: int) -> FakeQbo:
    """Load ``per_day`` invoices into each of ``days`` one-day windows from Jan 1."""
    qbo = FakeQbo(records={})
    for day in range(days):
        window = (JAN_1 + day * DAY, JAN_1 + (day + 1) * DAY)
        for n in range(per_day):
            record_id = f"{day}-{n}"
            updated = window[0] + timedelta(hours=n)
            _insert_raw(conn, record_id, updated, window)
            qbo.records[record_id] = QboRecordTimes(last_updated=updated, created=updated)
        _record_window(conn, window, per_day)
    return qbo


def _validate(conn: psycopg.Connection, qbo: FakeQbo, days: int,
              **options: object) -> ValidationReport:
    report = ValidationReport(range_start=JAN_1, range_end=JAN_1 + days * DAY,
                              entities=["invoices"])
    raw = RawStore(conn, report.queries)
    return validate_range([INVOICES], JAN_1, JAN_1 + days * DAY, raw=raw,
                          qbo=qbo, report=report, **options)  # type: ignore[arg-type]


def test_clean_backfill_passes(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=3, per_day=4)

    report = _validate(connection, qbo, days=3)

    assert report.passed
    assert report.exit_code == 0
    assert [w.status for w in report.windows] == [OK, OK, OK]
    assert [w.raw_rows for w in report.windows] == [4, 4, 4]
    assert [w.qbo_count_now for w in report.windows] == [4, 4, 4]
    assert report.totals["invoices"]["raw_rows_range"] == 12


def test_deleted_raw_row_fails_naming_window(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=3, per_day=4)
    connection.execute("DELETE FROM raw.qb_invoices_raw WHERE id = '1-2'")

    report = _validate(connection, qbo, days=3)

    assert not report.passed
    assert report.exit_code == 1
    failed = report.failed_windows
    assert [(w.start, w.end) for w in failed] == [(JAN_1 + DAY, JAN_1 + 2 * DAY)]
    assert failed[0].status == MISMATCH
    assert failed[0].differences == {MISSING_FROM_RAW: ["1-2"]}
    command = failed[0].rerun_command or ""
    assert "TAP_QB_INVOICES_START_DATE=2024-01-02T00:00:00Z" in command
    assert "TAP_QB_INVOICES_END_DATE=2024-01-03T00:00:00Z" in command
    assert "TAP_QB_INVOICES_WINDOW_SIZE=1d" in command
    assert "run --state-id-suffix=rerun-20240102T000000Z-20240103T000000Z" in command


def test_missing_window_run_is_a_gap(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=3, per_day=2)
    connection.execute(
        "DELETE FROM raw.qb_extract_windows WHERE window_start_utc = %s", (JAN_1 + DAY,)
    )
    connection.execute("DELETE FROM raw.qb_invoices_raw WHERE id LIKE '1-%'")

    report = _validate(connection, qbo, days=3)

    assert not report.passed
    gaps = [issue for issue in report.coverage_issues if issue.kind == "gap"]
    assert [(g.start, g.end) for g in gaps] == [(JAN_1 + DAY, JAN_1 + 2 * DAY)]
    gap_rows = [w for w in report.windows if w.status == GAP]
    assert len(gap_rows) == 1
    assert gap_rows[0].qbo_count_now == 2
    assert gap_rows[0].raw_rows == 0
    assert "TAP_QB_INVOICES_START_DATE=2024-01-02T00:00:00Z" in (gap_rows[0].rerun_command or "")


def test_range_end_beyond_windows_is_a_gap(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=2, per_day=1)

    report = _validate(connection, qbo, days=3)

    gaps = [(i.start, i.end) for i in report.coverage_issues if i.kind == "gap"]
    assert gaps == [(JAN_1 + 2 * DAY, JAN_1 + 3 * DAY)]
    assert not report.passed


def test_overlapping_windows_fail(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=2, per_day=1)
    _record_window(connection, (JAN_1 + timedelta(hours=12), JAN_1 + DAY + timedelta(hours=12)), 1)

    report = _validate(connection, qbo, days=2)

    overlaps = [i for i in report.coverage_issues if i.kind == "overlap"]
    assert len(overlaps) == 2
    assert not report.passed
    assert "DELETE FROM raw.qb_extract_windows" in report.overlap_fixes[0]


def test_edit_after_extraction_is_a_change(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=3, per_day=3)
    # Edited in QBO after extraction: its LastUpdatedTime moved past the range.
    qbo.records["0-1"] = QboRecordTimes(last_updated=EXTRACTED_AT + DAY, created=JAN_1)

    report = _validate(connection, qbo, days=3)

    first = report.windows[0]
    assert first.status == CHANGED
    assert first.differences == {EDITED_AFTER_EXTRACTION: ["0-1"]}
    assert first.qbo_count_now == 2
    assert first.raw_rows == 3
    assert any("not a loss" in finding for finding in first.findings)
    assert report.passed


def test_strict_fails_on_change(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=1, per_day=2)
    qbo.records["0-0"] = QboRecordTimes(last_updated=EXTRACTED_AT + DAY, created=JAN_1)

    report = _validate(connection, qbo, days=1)
    report.strict = True

    assert not report.passed


def test_invoice_deleted_in_qbo_is_a_change(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=1, per_day=3)
    del qbo.records["0-2"]

    report = _validate(connection, qbo, days=1)

    assert report.windows[0].status == CHANGED
    assert report.windows[0].differences == {DELETED_IN_QBO: ["0-2"]}


def test_older_version_in_raw_is_a_loss(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=2, per_day=2)
    # QBO's version moved to day 2 before the extraction, but raw kept day 1's.
    qbo.records["0-0"] = QboRecordTimes(last_updated=JAN_1 + DAY + timedelta(hours=5),
                                        created=JAN_1)

    report = _validate(connection, qbo, days=2)

    by_start = {w.start: w for w in report.windows}
    assert by_start[JAN_1 + DAY].status == MISMATCH
    assert by_start[JAN_1 + DAY].differences == {STALE_IN_RAW: ["0-0"]}
    # Day 1 only lost a record that QBO moved to day 2 after the raw row was written.
    assert by_start[JAN_1].status == CHANGED
    assert by_start[JAN_1].differences == {EDITED_AFTER_EXTRACTION: ["0-0"]}
    assert not report.passed


def test_failed_outcome_is_incomplete(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=1, per_day=1)
    connection.execute("UPDATE raw.qb_extract_windows SET outcome = 'failed'")

    report = _validate(connection, qbo, days=1)

    assert report.windows[0].status == INCOMPLETE
    assert report.windows[0].rerun_command is not None
    assert not report.passed


def test_resized_windows_localise_a_loss(connection: psycopg.Connection) -> None:
    qbo = FakeQbo(records={})
    week = (JAN_1, JAN_1 + 7 * DAY)
    for day in range(7):
        record_id = f"w-{day}"
        updated = JAN_1 + day * DAY + timedelta(hours=3)
        _insert_raw(connection, record_id, updated, week)
        qbo.records[record_id] = QboRecordTimes(last_updated=updated, created=updated)
    _record_window(connection, week, 7)
    connection.execute("DELETE FROM raw.qb_invoices_raw WHERE id = 'w-4'")

    report = _validate(connection, qbo, days=7, window_size=DAY)

    failed = [(w.start, w.status) for w in report.failed_windows]
    assert failed == [(JAN_1 + 4 * DAY, MISMATCH)]
    assert len(report.windows) == 7
    assert not report.coverage_issues


def test_compare_ids_finds_offsetting_differences(connection: psycopg.Connection) -> None:
    qbo = _backfill(connection, days=1, per_day=3)
    # One record lost from raw while another left the window in QBO: counts agree.
    connection.execute("DELETE FROM raw.qb_invoices_raw WHERE id = '0-0'")
    qbo.records["0-1"] = QboRecordTimes(last_updated=EXTRACTED_AT + DAY, created=JAN_1)

    by_count = _validate(connection, qbo, days=1)
    by_ids = _validate(connection, qbo, days=1, compare_ids=True)

    assert by_count.windows[0].status == OK
    assert by_ids.windows[0].status == MISMATCH
    assert by_ids.windows[0].differences[MISSING_FROM_RAW] == ["0-0"]


class _AnswerClient:
    """A QBO client stand-in that returns one decoded body for every query."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def query(self, text: str) -> dict[str, Any]:
        return decode_query_body(self.body)


def test_qbo_source_reads_rows_by_id() -> None:
    body = (b'{"QueryResponse": {"Invoice": [{"Id": "7", "MetaData": '
            b'{"LastUpdatedTime": "2023-02-18T12:57:24-08:00"}}]}}')
    source = QboSource(_AnswerClient(body), QueryLog())

    found = source.records_by_id(ENTITIES["invoices"], ["7"])

    assert list(found) == ["7"]
    assert found["7"].last_updated == datetime(2023, 2, 18, 20, 57, 24, tzinfo=UTC)


def test_qbo_source_rejects_rows_without_id() -> None:
    body = b'{"QueryResponse": {"Invoice": [{"MetaData": {}}]}}'
    source = QboSource(_AnswerClient(body), QueryLog())

    with pytest.raises(RuntimeError, match="malformed Invoice rows"):
        source.records_by_id(ENTITIES["invoices"], ["7"])
