"""Several windows fetched at once: output order, bookmark and failures."""

from __future__ import annotations

import pytest
from qbo_emulator.control import ControlClient
from qbo_emulator.testing import run_emulator

from tap_quickbooks_backfill.paging import WindowScanner
from tap_quickbooks_backfill.spool import PageSpool

from .tap_runner import emulator_config, run_tap

RANGE = {"start_date": "2023-01-01T00:00:00Z", "end_date": "2025-02-01T00:00:00Z"}


def window_config(emu, tmp_path, **overrides):
    settings = {**RANGE, "window_size": "30d", "page_size": 40, **overrides}
    return emulator_config(emu, tmp_path, **settings)


def test_concurrent_windows_match_sequential_output(tmp_path):
    with run_emulator(invoices=1500, customers=5, items=5, latency_base_ms=2) as emu:
        sequential = run_tap(window_config(emu, tmp_path), streams=["qb_invoices_raw"])
        concurrent = run_tap(
            window_config(emu, tmp_path, window_concurrency=4), streams=["qb_invoices_raw"]
        )

    assert concurrent.ids("qb_invoices_raw") == sequential.ids("qb_invoices_raw")
    assert len(concurrent.ids("qb_invoices_raw")) == 1500
    windows = [(a["window_start_utc"], a["window_end_utc"]) for a in concurrent.audits]
    assert windows == [(a["window_start_utc"], a["window_end_utc"]) for a in sequential.audits]
    assert windows == sorted(windows)


def test_concurrent_output_keeps_each_window_together(tmp_path):
    with run_emulator(invoices=800, customers=5, items=5, latency_base_ms=2) as emu:
        run = run_tap(
            window_config(emu, tmp_path, window_concurrency=5), streams=["qb_invoices_raw"]
        )

    window_of_records: list[str] = []
    bookmarks_after_audit: list[tuple[str, str | None]] = []
    last_audit_end = None
    for message in run.messages:
        if message["type"] == "RECORD" and message["stream"] == "qb_invoices_raw":
            window_of_records.append(message["record"]["extract_window_end_utc"])
            assert message["record"]["extract_window_start_utc"] == (
                last_audit_end or RANGE["start_date"].replace("Z", "+00:00")
            )
        elif message["type"] == "RECORD":
            last_audit_end = message["record"]["window_end_utc"]
        elif message["type"] == "STATE" and last_audit_end is not None:
            bookmark = message["value"]["bookmarks"]["qb_invoices_raw"].get(
                "replication_key_value"
            )
            bookmarks_after_audit.append((last_audit_end, bookmark))

    assert window_of_records == sorted(window_of_records)
    assert all(bookmark == end for end, bookmark in bookmarks_after_audit)


def test_failed_window_stops_bookmark_before_it(tmp_path, monkeypatch):
    real_scan = WindowScanner.scan

    def scan_failing_third_window(self, window, progress, stats):
        if window.start.isoformat().startswith("2023-03-02"):
            msg = "simulated failure of the third window"
            raise RuntimeError(msg)
        yield from real_scan(self, window, progress, stats)

    monkeypatch.setattr(WindowScanner, "scan", scan_failing_third_window)
    with run_emulator(invoices=600, customers=5, items=5, latency_base_ms=2) as emu:
        run = run_tap(
            window_config(emu, tmp_path, window_concurrency=4),
            streams=["qb_invoices_raw"],
            expect_error=True,
        )

    assert "third window" in str(run.error)
    assert [a["outcome"] for a in run.audits] == ["complete", "complete", "failed"]
    assert run.bookmark("qb_invoices_raw") == "2023-03-02T00:00:00+00:00"
    emitted_windows = {r["extract_window_start_utc"] for r in run.records["qb_invoices_raw"]}
    assert max(emitted_windows) < "2023-03-02"


@pytest.mark.parametrize("window_concurrency", [1, 3])
def test_in_flight_requests_stay_within_emulator_limit(tmp_path, window_concurrency):
    # The emulator returns 429 when more than max_concurrent requests are in flight.
    with run_emulator(
        invoices=600, customers=5, items=5, max_concurrent=3, latency_base_ms=5
    ) as emu:
        config = window_config(
            emu, tmp_path, window_concurrency=window_concurrency, max_concurrent_requests=3
        )
        run = run_tap(config, streams=["qb_invoices_raw"])

    assert len(run.ids("qb_invoices_raw")) == 600
    assert sum(a["throttles"] for a in run.audits) == 0


def test_windows_fetched_ahead_spill_to_spool(tmp_path, monkeypatch):
    spooled_pages: list[int] = []
    real_write = PageSpool.write

    def counting_write(self, page):
        spooled_pages.append(len(page))
        real_write(self, page)

    monkeypatch.setattr(PageSpool, "write", counting_write)
    with run_emulator(invoices=1200, customers=5, items=5, latency_base_ms=2) as emu:
        sequential = run_tap(
            window_config(emu, tmp_path, page_size=10), streams=["qb_invoices_raw"]
        )
        concurrent = run_tap(
            window_config(emu, tmp_path, page_size=10, window_concurrency=6),
            streams=["qb_invoices_raw"],
        )

    assert spooled_pages
    assert concurrent.records["qb_invoices_raw"] == [
        {**record, "ingested_at_utc": concurrent_record["ingested_at_utc"]}
        for record, concurrent_record in zip(
            sequential.records["qb_invoices_raw"],
            concurrent.records["qb_invoices_raw"],
            strict=True,
        )
    ]


def test_default_rate_per_second_stays_within_qbo_limit(tmp_path):
    # QBO allows 10 requests per second per company, and the emulator enforces that
    # here. With fast responses, 10 windows in flight could send several times more.
    with run_emulator(
        invoices=600, customers=5, items=5, requests_per_second=10, latency_base_ms=1
    ) as emu:
        config = window_config(emu, tmp_path, page_size=20, window_concurrency=10)
        config.pop("max_requests_per_second")
        run = run_tap(config, streams=["qb_invoices_raw"])
        throttled = [
            entry for entry in ControlClient(emu.base_url).requests(endpoint="query")
            if entry.get("status") == 429  # noqa: PLR2004
        ]

    assert len(run.ids("qb_invoices_raw")) == 600
    assert throttled == []
    assert sum(a["throttles"] for a in run.audits) == 0
