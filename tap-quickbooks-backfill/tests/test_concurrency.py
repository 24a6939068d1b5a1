"""Several windows fetched at once: output, bookmark, back-pressure and failures."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from qbo_emulator.control import ControlClient
from qbo_emulator.testing import run_emulator

from tap_quickbooks_backfill.client import QBOClient
from tap_quickbooks_backfill.extraction import (
    PAGES_BUFFERED_PER_WINDOW,
    CompletePrefix,
    WindowExtractor,
)
from tap_quickbooks_backfill.paging import WindowScanner
from tap_quickbooks_backfill.settings import parse_settings
from tap_quickbooks_backfill.windows import cut_windows

from .tap_runner import emulator_config, run_tap

RANGE = {"start_date": "2023-01-01T00:00:00Z", "end_date": "2025-02-01T00:00:00Z"}


def window_config(emu, tmp_path, **overrides):
    settings = {**RANGE, "window_size": "30d", "page_size": 40, **overrides}
    return emulator_config(emu, tmp_path, **settings)


def window_key(audit):
    return (audit["window_start_utc"], audit["window_end_utc"])


def test_concurrent_windows_match_sequential_output(tmp_path):
    with run_emulator(invoices=1500, customers=5, items=5, latency_base_ms=2) as emu:
        sequential = run_tap(window_config(emu, tmp_path), streams=["qb_invoices_raw"])
        concurrent = run_tap(
            window_config(emu, tmp_path, window_concurrency=4), streams=["qb_invoices_raw"]
        )

    assert concurrent.ids("qb_invoices_raw") == sequential.ids("qb_invoices_raw")
    assert len(concurrent.ids("qb_invoices_raw")) == 1500
    assert sorted(map(window_key, concurrent.audits)) == list(
        map(window_key, sequential.audits)
    )
    assert {a["outcome"] for a in concurrent.audits} == {"complete"}
    assert concurrent.bookmark("qb_invoices_raw") == sequential.bookmark("qb_invoices_raw")
    by_id = {r["id"]: r for r in sequential.records["qb_invoices_raw"]}
    for record in concurrent.records["qb_invoices_raw"]:
        expected = by_id[record["id"]]
        assert record["payload"] == expected["payload"]
        assert record["extract_window_start_utc"] == expected["extract_window_start_utc"]
        assert record["page_number"] == expected["page_number"]


def test_concurrent_pages_interleave(tmp_path):
    # Small pages and a slow emulator keep several windows in flight for long, so
    # their pages reach the output mixed, in the order the responses arrive. The
    # bookmark still covers complete windows only.
    with run_emulator(invoices=800, customers=5, items=5, latency_base_ms=15) as emu:
        run = run_tap(
            window_config(emu, tmp_path, page_size=10, window_concurrency=5),
            streams=["qb_invoices_raw"],
        )

    starts_in_output: list[str] = []
    audited: set[str] = set()
    complete: set[str] = set()
    all_windows = sorted(a["window_start_utc"] for a in run.audits)
    ends = {a["window_start_utc"]: a["window_end_utc"] for a in run.audits}
    for message in run.messages:
        if message["type"] == "RECORD" and message["stream"] == "qb_invoices_raw":
            start = message["record"]["extract_window_start_utc"]
            # No record of a window after its audit.
            assert start not in audited
            starts_in_output.append(start)
        elif message["type"] == "RECORD":
            audited.add(message["record"]["window_start_utc"])
            if message["record"]["outcome"] == "complete":
                complete.add(message["record"]["window_start_utc"])
        elif message["type"] == "STATE":
            stream_state = message["value"].get("bookmarks", {}).get("qb_invoices_raw", {})
            bookmark = stream_state.get("replication_key_value")
            if bookmark is None:
                continue
            # Every window that ends at or before the bookmark is complete.
            covered = [start for start in all_windows if ends[start] <= bookmark]
            assert covered
            assert set(covered) <= complete

    switches = sum(1 for a, b in zip(starts_in_output, starts_in_output[1:]) if a != b)
    assert switches > len(all_windows), "pages of windows fetched at once did not mix"
    assert len(run.ids("qb_invoices_raw")) == 800
    assert run.bookmark("qb_invoices_raw") == RANGE["end_date"].replace("Z", "+00:00")


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
    outcomes = {a["window_start_utc"][:10]: a["outcome"] for a in run.audits}
    assert outcomes["2023-01-01"] == outcomes["2023-01-31"] == "complete"
    assert outcomes["2023-03-02"] == "failed"
    # The windows already running when the third failed may finish. None starts later.
    assert len(outcomes) <= 4
    assert run.bookmark("qb_invoices_raw") == "2023-03-02T00:00:00+00:00"
    emitted_windows = {r["extract_window_start_utc"] for r in run.records["qb_invoices_raw"]}
    assert max(emitted_windows) < "2023-04-02"


def test_complete_prefix_stops_at_gap():
    windows = list(cut_windows(
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 1, 5, tzinfo=dt.UTC),
        dt.timedelta(days=1),
    ))
    prefix = CompletePrefix(windows)

    assert prefix.add(windows[1]) is False
    assert prefix.last is None
    assert prefix.add(windows[3]) is False
    assert prefix.add(windows[0]) is True
    assert prefix.last == windows[1]
    assert prefix.add(windows[2]) is True
    assert prefix.last == windows[3]


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


def test_slow_consumer_blocks_fetching(tmp_path):
    # Pages wait in a bounded queue: while the consumer reads nothing, the fetching
    # threads stop instead of piling pages up in memory.
    concurrency = 4
    with run_emulator(invoices=4000, customers=5, items=5, latency_base_ms=1) as emu:
        config = window_config(
            emu, tmp_path, page_size=50, window_concurrency=concurrency
        )
        client = QBOClient(parse_settings(config))
        extractor = WindowExtractor(
            client, "Invoice", window_field="LastUpdatedTime", page_size=50,
            run_id="test", window_concurrency=concurrency,
        )
        windows = list(cut_windows(
            dt.datetime(2023, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 2, 1, tzinfo=dt.UTC),
            dt.timedelta(days=180),
        ))
        output = extractor.run(windows)
        assert isinstance(next(output), list)
        control = ControlClient(emu.base_url)
        time.sleep(1.5)
        fetched = len(control.requests(endpoint="query"))
        time.sleep(1.0)
        fetched_later = len(control.requests(endpoint="query"))
        output.close()
        client.close()

    # 4,000 invoices take 80 pages of 50. The threads filled the queue (two pages per
    # thread), each kept one more page in hand, and then fetched nothing while the
    # consumer read nothing. Each running window also sent its COUNT(*), and a second
    # shared by more rows than fit on a page costs a few requests more.
    assert fetched == fetched_later
    assert fetched >= concurrency * PAGES_BUFFERED_PER_WINDOW
    assert fetched < 4000 // 50 // 2  # noqa: PLR2004


def test_stale_version_after_newer_dropped(tmp_path, monkeypatch):
    # QBO's clock is behind this machine's, so an edit made during the run is stamped
    # before the run's start and lands in the run's last window. Pages are handed
    # over latest first here, as when the last window's response arrives first.
    real_run = WindowExtractor.run

    def run_latest_pages_first(self, windows):
        items = list(real_run(self, windows))
        pages = [item for item in items if isinstance(item, list)]
        yield from reversed(pages)
        yield from (item for item in items if not isinstance(item, list))

    monkeypatch.setattr(WindowExtractor, "run", run_latest_pages_first)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, second=0, minute=0)
    start = now - dt.timedelta(hours=3)
    with run_emulator(invoices=0, customers=1, items=1) as emu:
        control = ControlClient(emu.base_url)
        customer = control.records("Customer")[0]["Id"]
        stale = control.create(
            "Invoice", {"CustomerRef": {"value": customer}, "Line": [], "PrivateNote": "old"},
            created_at=(start + dt.timedelta(minutes=10)).isoformat(),
        )["Id"]
        control.schedule(1, {
            "op": "update", "entity": "Invoice", "id": stale,
            "changes": {"PrivateNote": "new"},
            "last_updated": (now - dt.timedelta(minutes=1)).isoformat(),
        })
        config = emulator_config(emu, tmp_path, start_date=start.isoformat(),
                                 window_size="1h")
        config.pop("end_date", None)
        run = run_tap(config, streams=["qb_invoices_raw"])

    notes = [r["payload"]["PrivateNote"] for r in run.records["qb_invoices_raw"]
             if r["id"] == stale]
    assert notes == ["new"]
