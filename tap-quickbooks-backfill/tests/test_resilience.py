"""Faults, throttling, token refresh and rotation, against the QBO emulator."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
from qbo_emulator.testing import run_emulator

from tap_quickbooks_backfill import client as client_module
from tap_quickbooks_backfill.auth import INVALID_GRANT_MESSAGE, TokenStore
from tap_quickbooks_backfill.errors import RefreshTokenRejectedError

from .tap_runner import emulator_config, run_tap

RANGE_END = "2025-02-01T00:00:00Z"


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record retry waits instead of sleeping."""
    waits: list[float] = []
    monkeypatch.setattr(client_module, "backoff_sleep", waits.append)
    return waits


@pytest.mark.parametrize("kind", ["429", "500", "503", "reset", "malformed_json", "fault_200"])
def test_burst_of_faults_is_survived(tmp_path, sleeps, kind):
    with run_emulator(invoices=150, customers=5, items=5) as emu:
        emu.control.inject_faults(kind, count=2 if kind == "malformed_json" else 4)
        config = emulator_config(
            emu, tmp_path, end_date=RANGE_END, page_size=50, throttle_wait_seconds=60
        )
        run = run_tap(config, streams=["qb_invoices_raw"])
        expected = {record["Id"] for record in emu.control.records("Invoice")}

    assert run.ids("qb_invoices_raw") == expected
    (audit,) = run.audits
    retries = 2 if kind == "malformed_json" else 4
    assert audit["retries"] == retries
    assert audit["throttles"] == (retries if kind == "429" else 0)
    assert len(sleeps) == retries
    if kind == "429":
        assert sleeps == [60, 60, 60, 60]


def test_throttles_spread_over_a_run_are_survived(tmp_path, sleeps):
    with run_emulator(invoices=400, customers=5, items=5) as emu:
        emu.control.inject_faults("429", fraction=0.3)
        config = emulator_config(emu, tmp_path, end_date=RANGE_END, page_size=20)
        run = run_tap(config, streams=["qb_invoices_raw"])
        emu.control.clear_faults()
        expected = {record["Id"] for record in emu.control.records("Invoice")}

    assert run.ids("qb_invoices_raw") == expected
    assert run.audits[0]["throttles"] > 0


def test_expired_access_token_mid_run_triggers_refresh(tmp_path, sleeps):
    with run_emulator(invoices=200, customers=5, items=5) as emu:
        config = emulator_config(emu, tmp_path, end_date=RANGE_END, page_size=20)
        emu.control.inject_faults("401", count=1)
        run = run_tap(config, streams=["qb_invoices_raw"])
        token_calls = emu.control.requests(endpoint="token")
        expected = {record["Id"] for record in emu.control.records("Invoice")}

    assert run.ids("qb_invoices_raw") == expected
    assert len(token_calls) == 2


def test_rotated_token_used_by_next_run(tmp_path):
    with run_emulator(invoices=20, customers=5, items=5, rotation="every_refresh") as emu:
        config = emulator_config(emu, tmp_path, end_date=RANGE_END)
        run_tap(config, streams=["qb_items_raw"])
        store = TokenStore(config["token_store_path"], config["realm_id"])
        stored = json.loads(store.path.read_text())

        # The configured token was rotated away; the run must start from the stored one.
        second = run_tap(config, streams=["qb_items_raw"])

    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stored["refresh_token"] != config["refresh_token"]
    assert len(second.ids("qb_items_raw")) == 5


def test_token_rotated_under_mistyped_realm_is_recovered(tmp_path):
    with run_emulator(invoices=5, customers=5, items=5, rotation="every_refresh") as emu:
        config = emulator_config(emu, tmp_path, end_date=RANGE_END)
        mistyped = run_tap(
            {**config, "realm_id": "123456"}, streams=["qb_items_raw"], expect_error=True
        )
        second = run_tap(config, streams=["qb_items_raw"])

    # The first run rotated the configured token away before QBO rejected the realm.
    assert mistyped.error is not None
    assert TokenStore(config["token_store_path"], "123456").path.exists()
    assert len(second.ids("qb_items_raw")) == 5


def test_revoked_refresh_token_stops_with_reconnect_message(tmp_path, caplog):
    with run_emulator(invoices=5, customers=5, items=5) as emu:
        emu.control.revoke_refresh_tokens()
        run = run_tap(
            emulator_config(emu, tmp_path, end_date=RANGE_END),
            streams=["qb_items_raw"],
            expect_error=True,
        )
        queries = emu.control.requests(endpoint="query")

    assert isinstance(run.error, RefreshTokenRejectedError)
    assert str(run.error) == INVALID_GRANT_MESSAGE
    assert queries == []


def test_revoked_token_sent_once_concurrently(tmp_path):
    # Ten windows start at once and each needs a token. After QBO rejects the refresh
    # token once, the other threads fail with that error without sending it again.
    with run_emulator(invoices=200, customers=5, items=5) as emu:
        emu.control.revoke_refresh_tokens()
        run = run_tap(
            emulator_config(emu, tmp_path, end_date=RANGE_END, window_size="30d",
                            window_concurrency=10),
            streams=["qb_invoices_raw"],
            expect_error=True,
        )
        token_requests = emu.control.requests(endpoint="token")

    assert isinstance(run.error, RefreshTokenRejectedError)
    assert len(token_requests) == 1


def test_no_secret_in_logs_or_request_payload(tmp_path, caplog, sleeps):
    caplog.set_level(logging.DEBUG)
    with run_emulator(invoices=60, customers=5, items=5, rotation="every_refresh") as emu:
        emu.control.inject_faults("401", count=1)
        emu.control.inject_faults("429", count=1)
        emu.control.inject_faults("500", count=1, target="token")
        config = emulator_config(emu, tmp_path, end_date=RANGE_END, page_size=20)
        run = run_tap(config)
        stored = json.loads(
            TokenStore(config["token_store_path"], config["realm_id"]).path.read_text()
        )

    # Every access and refresh token the client received during the run.
    issued = run.tap.client._secrets
    secrets = {config["client_secret"], config["refresh_token"], stored["refresh_token"]}
    assert len(issued - secrets) >= 2
    secrets |= issued
    output = caplog.text + json.dumps(run.messages)
    for secret in secrets:
        assert secret not in output
    request_payloads = [
        record["request_payload"]
        for stream, records in run.records.items()
        if stream != "qb_extract_windows"
        for record in records
    ]
    assert request_payloads
    assert {key for payload in request_payloads for key in payload} == {
        "query",
        "start_position",
        "max_results",
        "minor_version",
        "realm_id",
    }
    assert "QBO query attempt 1 of 9 failed" in caplog.text
    assert "intuit_tid" in caplog.text
