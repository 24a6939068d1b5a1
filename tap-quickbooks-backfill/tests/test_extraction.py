"""Window scans against the QBO emulator: completeness, edges, ties, edits, state."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from qbo_emulator.testing import run_emulator
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers.capabilities import PluginCapabilities

from tap_quickbooks_backfill.client import QBOClient
from tap_quickbooks_backfill.tap import TapQuickBooksBackfill

from .tap_runner import ENTITY_STREAMS, emulator_config, run_tap

# Generated emulator companies date from 2023 and 2024; this end lies after them and
# in the past, so edits made during a scan ("now") move records out of the range.
RANGE_END = "2025-02-01T00:00:00Z"


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def live_ids(emu, entity: str) -> set[str]:
    return {record["Id"] for record in emu.control.records(entity)}


def test_every_record_lands_with_its_payload_unchanged(tmp_path):
    with run_emulator(invoices=120, customers=40, items=15, include_captured=True) as emu:
        config = emulator_config(
            emu, tmp_path, start_date="2010-01-01T00:00:00Z", end_date=RANGE_END
        )
        run = run_tap(config)

        for entity, stream in ENTITY_STREAMS.items():
            originals = {record["Id"]: record for record in emu.control.records(entity)}
            emitted = {record["id"]: record["payload"] for record in run.records[stream]}
            assert emitted == originals, entity


def test_captured_records_keep_utc_extras(tmp_path):
    with run_emulator(include_captured=True, invoices=0, customers=1, items=1) as emu:
        run = run_tap(
            emulator_config(emu, tmp_path, end_date=RANGE_END), streams=["qb_invoices_raw"]
        )

    invoice = next(r for r in run.records["qb_invoices_raw"] if r["id"] == "119")
    assert invoice["last_updated_utc"] == "2023-02-18T20:57:24+00:00"
    assert invoice["created_utc"] == "2023-02-18T20:57:24+00:00"
    assert invoice["sync_token"] == "0"
    assert invoice["active"] is None
    assert invoice["payload"]["MetaData"]["CreateTime"] == "2023-02-18T12:57:24-08:00"


def test_inactive_customers_and_items_land(tmp_path):
    with run_emulator(invoices=10, customers=60, items=30) as emu:
        inactive = {
            entity: emu.control.counts(entity)["inactive"] for entity in ("Customer", "Item")
        }
        run = run_tap(emulator_config(emu, tmp_path, end_date=RANGE_END))

        for entity in ("Customer", "Item"):
            stream = ENTITY_STREAMS[entity]
            landed_inactive = [r for r in run.records[stream] if r["active"] is False]
            assert inactive[entity] > 0
            assert len(landed_inactive) == inactive[entity]
            assert run.ids(stream) == live_ids(emu, entity)


def test_window_edges_are_exact(tmp_path):
    start, end = "2023-03-01T00:00:00Z", "2023-03-02T00:00:00Z"
    with run_emulator(invoices=30, customers=5, items=5) as emu:
        at_start, before_end, at_end = sorted(live_ids(emu, "Invoice"), key=int)[:3]
        emu.control.update("Invoice", at_start, {"PrivateNote": "s"}, last_updated=start)
        emu.control.update(
            "Invoice", before_end, {"PrivateNote": "e-1"}, last_updated="2023-03-01T23:59:59Z"
        )
        emu.control.update("Invoice", at_end, {"PrivateNote": "e"}, last_updated=end)

        first = run_tap(
            emulator_config(emu, tmp_path, start_date=start, end_date=end),
            streams=["qb_invoices_raw"],
        )
        second = run_tap(
            emulator_config(
                emu, tmp_path, start_date=end, end_date="2023-03-03T00:00:00Z"
            ),
            streams=["qb_invoices_raw"],
        )

    assert at_start in first.ids("qb_invoices_raw")
    assert before_end in first.ids("qb_invoices_raw")
    assert at_end not in first.ids("qb_invoices_raw")
    assert at_end in second.ids("qb_invoices_raw")


@pytest.mark.parametrize("page_size", [7, 100])
def test_tie_larger_than_a_page_lands_whole(tmp_path, page_size):
    with run_emulator(invoices=400, customers=5, items=5, tie_size=250) as emu:
        run = run_tap(
            emulator_config(emu, tmp_path, end_date=RANGE_END, page_size=page_size),
            streams=["qb_invoices_raw"],
        )
        expected = live_ids(emu, "Invoice")

    assert run.ids("qb_invoices_raw") == expected
    (audit,) = run.audits
    assert audit["records_emitted"] == 400
    assert audit["qbo_count"] == 400


def test_records_edited_during_the_scan_lose_nothing(tmp_path):
    with run_emulator(invoices=300, customers=5, items=5, tie_size=40) as emu:
        by_time = sorted(
            emu.control.records("Invoice"), key=lambda r: utc(r["MetaData"]["LastUpdatedTime"])
        )
        early = [r["Id"] for r in by_time[:40]]
        late = [r["Id"] for r in by_time[-40:]]
        # After each of the first pages, records already read are edited: some move out
        # of the range ("now"), one moves later inside it. With offset paging every such
        # edit would shift later rows one place back and skip one of them.
        for k, record_id in enumerate(early[:20]):
            emu.control.schedule(
                2 + k // 4, {"op": "update", "entity": "Invoice", "id": record_id,
                             "changes": {"PrivateNote": f"moved {k}"}}
            )
        moved_inside = early[25]
        emu.control.schedule(
            3,
            {"op": "update", "entity": "Invoice", "id": moved_inside,
             "changes": {"PrivateNote": "moved inside"}, "last_updated": "2024-12-31T00:00:00Z"},
        )

        run = run_tap(
            emulator_config(emu, tmp_path, end_date=RANGE_END, page_size=20),
            streams=["qb_invoices_raw"],
        )
        applied = [entry for entry in emu.control.scheduled()["changes"] if entry["applied"]]
        final = {record["Id"]: record for record in emu.control.records("Invoice")}

    assert len(applied) == 21
    still_in_range = {
        record_id
        for record_id, record in final.items()
        if utc(record["MetaData"]["LastUpdatedTime"]) < utc(RANGE_END)
    }
    emitted = run.ids("qb_invoices_raw")
    assert still_in_range <= emitted
    assert set(late) <= emitted
    last_payload = {}
    for record in run.records["qb_invoices_raw"]:
        last_payload[record["id"]] = record["payload"]
    assert last_payload[moved_inside] == final[moved_inside]


def test_requests_stay_near_one_per_thousand_records(tmp_path):
    with run_emulator(invoices=5000, customers=5, items=5) as emu:
        run = run_tap(
            emulator_config(emu, tmp_path, end_date=RANGE_END), streams=["qb_invoices_raw"]
        )
        sent = len(emu.control.requests(endpoint="query"))

    (audit,) = run.audits
    assert audit["records_emitted"] == 5000
    # One COUNT per window, one page per 1000 records, one final short page.
    assert audit["requests"] <= math.ceil(5000 / 1000) + 2
    assert sent == audit["requests"]


def test_bookmark_follows_completed_windows(tmp_path):
    with run_emulator(invoices=100, customers=5, items=5) as emu:
        config = emulator_config(
            emu,
            tmp_path,
            start_date="2023-01-01T00:00:00Z",
            end_date="2023-07-01T00:00:00Z",
            window_size="30d",
        )
        run = run_tap(config, streams=["qb_invoices_raw"])

    bookmarks = [
        state["bookmarks"]["qb_invoices_raw"].get("replication_key_value")
        for state in run.states
        if "qb_invoices_raw" in state.get("bookmarks", {})
    ]
    window_ends = [audit["window_end_utc"] for audit in run.audits]
    assert len(window_ends) == 7
    assert window_ends[-1] == "2023-07-01T00:00:00+00:00"
    assert [b for b in bookmarks if b] == sorted(b for b in bookmarks if b)
    assert set(window_ends) <= set(bookmarks)
    assert run.bookmark("qb_invoices_raw") == "2023-07-01T00:00:00+00:00"


def test_audit_follows_the_last_record_of_its_window(tmp_path):
    with run_emulator(invoices=200, customers=5, items=5) as emu:
        config = emulator_config(emu, tmp_path, end_date=RANGE_END, window_size="60d")
        run = run_tap(config, streams=["qb_invoices_raw"])

    current: list[dict] = []
    for message in run.messages:
        if message["type"] != "RECORD":
            continue
        if message["stream"] == "qb_invoices_raw":
            current.append(message["record"])
            continue
        audit = message["record"]
        assert all(r["extract_window_end_utc"] == audit["window_end_utc"] for r in current)
        assert len({r["id"] for r in current}) == audit["records_emitted"]
        assert audit["outcome"] == "complete"
        current = []
    assert current == []


def test_bookmark_at_end_means_nothing_to_do(tmp_path):
    with run_emulator(invoices=50, customers=5, items=5) as emu:
        config = emulator_config(emu, tmp_path, end_date=RANGE_END)
        state = {
            "bookmarks": {
                "qb_invoices_raw": {
                    "replication_key": "extract_window_end_utc",
                    "replication_key_value": "2025-02-01T00:00:00+00:00",
                }
            }
        }
        run = run_tap(config, streams=["qb_invoices_raw"], state=state)
        sent = emu.control.requests(endpoint="query")

    assert run.records["qb_invoices_raw"] == []
    assert sent == []


def test_failed_run_resumes_at_bookmark(tmp_path, monkeypatch):
    with run_emulator(invoices=300, customers=5, items=5) as emu:
        config = emulator_config(
            emu,
            tmp_path,
            start_date="2023-01-01T00:00:00Z",
            end_date=RANGE_END,
            window_size="90d",
            page_size=25,
        )
        real_query = QBOClient.query
        calls = {"n": 0}

        def crashing_query(self, text, **kwargs):
            calls["n"] += 1
            if calls["n"] == 15:
                msg = "simulated crash in the middle of a window"
                raise RuntimeError(msg)
            return real_query(self, text, **kwargs)

        monkeypatch.setattr(QBOClient, "query", crashing_query)
        first = run_tap(
            config, streams=["qb_invoices_raw"], expect_error=True
        )
        monkeypatch.setattr(QBOClient, "query", real_query)
        second = run_tap(config, streams=["qb_invoices_raw"], state=first.states[-1])
        expected = live_ids(emu, "Invoice")

    bookmark = first.bookmark("qb_invoices_raw")
    failed = [audit for audit in first.audits if audit["outcome"] == "failed"]
    assert bookmark is not None
    assert bookmark < "2025-02-01"
    assert len(failed) == 1
    assert failed[0]["window_start_utc"] == bookmark
    assert first.ids("qb_invoices_raw") | second.ids("qb_invoices_raw") == expected
    resumed = {r["extract_window_start_utc"] for r in second.records["qb_invoices_raw"]}
    assert min(resumed) >= bookmark
    assert second.bookmark("qb_invoices_raw") == "2025-02-01T00:00:00+00:00"


def test_window_within_one_page_costs_one_request(tmp_path):
    with run_emulator(invoices=50, customers=5, items=5) as emu:
        config = emulator_config(
            emu, tmp_path, start_date="2010-01-01T00:00:00Z", end_date=RANGE_END,
            window_size="3650d",
        )
        run = run_tap(config, streams=["qb_invoices_raw"])

    empty, full = run.audits
    assert (empty["qbo_count"], empty["records_emitted"], empty["requests"]) == (0, 0, 1)
    assert (full["qbo_count"], full["records_emitted"], full["requests"]) == (50, 50, 1)


def test_stream_map_reads_the_payload_as_objects(tmp_path):
    # The tap passes payloads through as QBO's bytes. A stream map gets them decoded,
    # its filter as well, which the SDK applies before the record's message is built.
    with run_emulator(invoices=8, customers=1, items=1) as emu:
        left_out = sorted(live_ids(emu, "Invoice"))[0]
        config = emulator_config(
            emu, tmp_path, end_date=RANGE_END,
            stream_maps={
                "qb_invoices_raw": {
                    "doc_number": "payload['DocNumber']",
                    "__filter__": f"payload['Id'] != '{left_out}'",
                }
            },
        )
        run = run_tap(config, streams=["qb_invoices_raw"])

    records = run.records["qb_invoices_raw"]
    assert len(records) == 7
    assert left_out not in {record["id"] for record in records}
    assert all(record["doc_number"] == record["payload"]["DocNumber"] for record in records)


def test_flattening_splits_the_payload(tmp_path):
    with run_emulator(invoices=3, customers=1, items=1) as emu:
        config = emulator_config(
            emu, tmp_path, end_date=RANGE_END, flattening_enabled=True, flattening_max_depth=1
        )
        run = run_tap(config, streams=["qb_invoices_raw"])

    records = run.records["qb_invoices_raw"]
    assert len(records) == 3
    assert all("payload" not in record for record in records)
    assert all(record["payload__Id"] == record["id"] for record in records)


def test_batch_config_is_rejected(tmp_path):
    with run_emulator(invoices=3, customers=1, items=1) as emu:
        config = emulator_config(
            emu, tmp_path, end_date=RANGE_END,
            batch_config={"encoding": {"format": "jsonl"}, "storage": {"root": "file:///tmp"}},
        )
        with pytest.raises(ConfigValidationError) as raised:
            run_tap(config, streams=["qb_invoices_raw"])

    assert any("batch_config is not supported" in error for error in raised.value.errors)

    assert PluginCapabilities.BATCH not in TapQuickBooksBackfill.capabilities


def test_deselected_property_is_left_out(tmp_path):
    with run_emulator(invoices=4, customers=1, items=1) as emu:
        run = run_tap(
            emulator_config(emu, tmp_path, end_date=RANGE_END),
            streams=["qb_invoices_raw"],
            deselected={"qb_invoices_raw": ["request_payload", "sync_token"]},
        )

    records = run.records["qb_invoices_raw"]
    assert len(records) == 4
    assert all("request_payload" not in r and "sync_token" not in r for r in records)
    assert all(r["payload"]["Id"] == r["id"] for r in records)
