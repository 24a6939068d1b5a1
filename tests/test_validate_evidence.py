"""Evidence folder: report.md, report.json and the chart, with no secret in them."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

from qbo_backfill.evidence import default_evidence_dir, report_data, write_evidence
from qbo_backfill.validate import ValidationReport
from qbo_backfill.validation_checks import GAP, MISMATCH, OK, WindowResult
from qbo_backfill.validation_windows import CoverageIssue

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECRET = "s3cr3t-refresh-token-value"


def _report() -> ValidationReport:
    report = ValidationReport(range_start=T0, range_end=T0 + 3 * DAY,
                              entities=["invoices", "items"],
                              started_at=T0 + 40 * DAY)
    report.windows = [
        WindowResult(entity="invoices", start=T0, end=T0 + DAY,
                     window_field="LastUpdatedTime", source="recorded",
                     qbo_count_now=5, qbo_count_recorded=5, records_emitted=5,
                     raw_rows=5, raw_distinct_ids=5, status=OK),
        WindowResult(entity="invoices", start=T0 + DAY, end=T0 + 2 * DAY,
                     window_field="LastUpdatedTime", source="recorded",
                     qbo_count_now=4, qbo_count_recorded=4, records_emitted=4,
                     raw_rows=3, raw_distinct_ids=3, status=MISMATCH,
                     findings=["1 Invoice record(s) in QBO but missing: 17"],
                     differences={"missing_from_raw": ["17"]},
                     rerun_command="TAP_QB_INVOICES_START_DATE=... meltano run ..."),
        WindowResult(entity="invoices", start=T0 + 2 * DAY, end=T0 + 3 * DAY,
                     window_field="LastUpdatedTime", source="gap", qbo_count_now=2,
                     raw_rows=0, raw_distinct_ids=0, status=GAP),
        WindowResult(entity="items", start=T0, end=T0 + 3 * DAY,
                     window_field="LastUpdatedTime", source="recorded",
                     qbo_count_now=1, raw_rows=1, raw_distinct_ids=1, status=OK),
    ]
    report.coverage_issues = [
        CoverageIssue("gap", "invoices", T0 + 2 * DAY, T0 + 3 * DAY,
                      ((T0 + DAY, T0 + 2 * DAY),)),
    ]
    report.totals = {"invoices": {"windows": 2, "windows_failed": 2, "gaps": 1,
                                  "qbo_count_range_now": 11, "raw_rows_range": 8,
                                  "raw_distinct_ids_range": 8},
                     "items": {"windows": 1, "windows_failed": 0, "gaps": 0,
                               "qbo_count_range_now": 1, "raw_rows_range": 1,
                               "raw_distinct_ids_range": 1}}
    report.queries.record_sql("SELECT count(*) FROM raw.qb_invoices_raw WHERE x >= %(a)s",
                              {"a": T0})
    report.queries.record_qbo("SELECT COUNT(*) FROM Invoice WHERE MetaData.LastUpdatedTime "
                              ">= '2024-01-01T00:00:00Z'")
    # A secret that slipped into a setting must still not reach the files.
    report.settings = {"qbo": {"realm_id": "9130357766900011", "note": SECRET}}
    report.tool_versions = {"python": "3.11", "postgresql": "PostgreSQL 15"}
    report.finished_at = T0 + 40 * DAY + timedelta(seconds=7)
    return report


def test_evidence_files_exist_and_parse(tmp_path: Path) -> None:
    folder = tmp_path / "evidence" / "run"

    markdown_path = write_evidence(_report(), folder, secrets=[SECRET])

    assert markdown_path == folder / "report.md"
    assert sorted(p.name for p in folder.iterdir()) == [
        "records_per_window.png", "report.json", "report.md"]
    data = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert data["passed"] is False
    assert data["exit_code"] == 1
    assert data["range"]["start_utc"] == "2024-01-01T00:00:00Z"
    assert data["range"]["start"]["america_guayaquil"] == "2023-12-31T19:00:00-05:00"
    assert len(data["windows"]) == 4
    assert [m["window_start_utc"] for m in data["mismatches"]] == ["2024-01-02T00:00:00Z"]
    assert [g["start_utc"] for g in data["gaps"]] == ["2024-01-03T00:00:00Z"]
    assert data["queries"]["qbo"][0].startswith("SELECT COUNT(*) FROM Invoice")
    assert data["queries"]["sql"][0]["executions"] == [{"a": "2024-01-01T00:00:00+00:00"}]


def test_markdown_holds_tables_queries_and_both_zones(tmp_path: Path) -> None:
    write_evidence(_report(), tmp_path, secrets=[SECRET])

    text = (tmp_path / "report.md").read_text(encoding="utf-8")

    assert text.startswith("# QBO backfill validation")
    assert "**FAILED:" in text
    assert "| invoices | 2024-01-02T00:00:00Z" in text
    assert "2024-02-09T19:00:07-05:00" in text  # finish time in America/Guayaquil
    assert "2024-02-10T00:00:07+00:00" in text  # and in UTC
    assert "```sql\nSELECT count(*) FROM raw.qb_invoices_raw" in text
    assert "SELECT COUNT(*) FROM Invoice WHERE" in text
    assert "re-run: TAP_QB_INVOICES_START_DATE=" in text
    assert "| postgresql | PostgreSQL 15 |" in text


def test_evidence_contains_no_secret(tmp_path: Path) -> None:
    write_evidence(_report(), tmp_path, secrets=[SECRET])

    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name
    assert "***" in (tmp_path / "report.json").read_text(encoding="utf-8")


def test_chart_is_a_real_png(tmp_path: Path) -> None:
    write_evidence(_report(), tmp_path, secrets=[])

    content = (tmp_path / "records_per_window.png").read_bytes()

    assert content[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", content[16:24])  # IHDR chunk
    assert content[12:16] == b"IHDR"
    assert (width, height) == (1100, 640)  # 11 x 3.2 inches per entity at 100 dpi
    assert len(content) > 10_000


def test_report_data_passes_when_clean() -> None:
    report = _report()
    report.windows = [w for w in report.windows if w.status == OK]
    report.coverage_issues = []

    data = report_data(report)

    assert data["passed"] is True
    assert data["exit_code"] == 0
    assert data["mismatches"] == []


def test_default_evidence_dir_is_utc_timestamp(tmp_path: Path) -> None:
    started = datetime(2024, 3, 5, 1, 2, 3, tzinfo=UTC)

    assert default_evidence_dir(tmp_path, started) == tmp_path / "evidence" / "20240305T010203Z"
