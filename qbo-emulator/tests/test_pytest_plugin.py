"""The pytest plugin's fixtures, as other packages' tests use them."""

from __future__ import annotations

import pytest


@pytest.mark.qbo_emulator(invoices=7, customers=2, items=3, requests_per_minute=50)
def test_marked_fixture_builds_requested_company(qbo_emulator) -> None:
    assert qbo_emulator.control.counts("Invoice")["total"] == 7
    assert qbo_emulator.control.counts("Item")["total"] == 3
    assert qbo_emulator.control.config()["settings"]["requests_per_minute"] == 50
    assert qbo_emulator.token_url == qbo_emulator.base_url + "/oauth2/v1/tokens/bearer"


def test_session_fixture_serves_default_company(qbo_emulator_session) -> None:
    assert qbo_emulator_session.control.counts("Invoice")["total"] == 2005
    assert qbo_emulator_session.realm_id == "9130357766900011"
    assert qbo_emulator_session.refresh_token == "demo-refresh-token"
