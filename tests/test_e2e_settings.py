"""End-to-end: input checks and secrets as a `meltano run` user sees them."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from conftest import MeltanoProject, PostgresDatabase, range_environment
from test_e2e_backfill import END, START, WINDOW_SIZE, assert_succeeded

pytestmark = pytest.mark.e2e

# Each case breaks one or more settings; the tap reports every invalid setting
# of a run at once, so one run checks several messages.
INVALID_SETTINGS = {
    "malformed values": (
        {
            **range_environment("customers", "first of May", END),
            "TAP_QUICKBOOKS_BACKFILL_CLIENT_SECRET": "",
            "TAP_QUICKBOOKS_BACKFILL_PAGE_SIZE": "0",
            "TAP_QUICKBOOKS_BACKFILL_ENVIRONMENT": "staging",
            "TAP_QUICKBOOKS_BACKFILL_WINDOW_SIZE": "7x",
            "TAP_QUICKBOOKS_BACKFILL_WINDOW_FIELD": "DueDate",
        },
        [
            "start_date 'first of May' is not a valid date",
            "missing QBO credentials: set client_secret",
            "page_size 0 is out of range",
            "environment 'staging' is unknown",
            "window_size '7x' is invalid",
            "window_field 'DueDate' is invalid",
        ],
    ),
    # Meltano rewrites a `kind: date_iso8601` setting with dateparser, which
    # would turn these into 2023-01-13 and 2024-01-02 before the tap saw them.
    "dates that are not ISO 8601": (
        range_environment("customers", "2023-13-01", "01/02/2024"),
        [
            "start_date '2023-13-01' is not a valid date",
            "end_date '01/02/2024' is not a valid date",
        ],
    ),
    "empty range and page too large": (
        {
            **range_environment("customers", "2024-01-01", "2023-01-01"),
            "TAP_QUICKBOOKS_BACKFILL_PAGE_SIZE": "1001",
        },
        [
            "is not after start_date",
            "page_size 1001 is out of range",
        ],
    ),
}


@pytest.mark.parametrize("case", list(INVALID_SETTINGS))
def test_invalid_settings_fail_before_requests(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase,
    case: str,
) -> None:
    emulator = start_emulator(invoices=5, customers=5, items=5)
    env, messages = INVALID_SETTINGS[case]

    result = meltano_project.run("run", "tap-qb-customers", "target-postgres", env=env)

    assert result.returncode != 0
    for message in messages:
        assert message in result.output
    assert emulator.control.requests() == [], "a request reached QBO before the checks"
    assert database.count("qb_customers_raw") == 0


def test_secrets_stay_out_of_logs_and_rows(
    start_emulator: Any, meltano_project: MeltanoProject, database: PostgresDatabase
) -> None:
    client_id = f"client-{secrets.token_hex(8)}"
    client_secret = f"secret-{secrets.token_hex(8)}"
    refresh_token = f"refresh-{secrets.token_hex(8)}"
    emulator = start_emulator(
        invoices=20, customers=5, items=5, client_id=client_id,
        client_secret=client_secret, refresh_token=refresh_token,
        # A short access token lifetime makes the run refresh and rotate mid-way.
        access_token_ttl=1,
    )
    emulator.control.inject_faults("401", count=1)

    result = meltano_project.run(
        "--log-level=debug", "run", "tap-qb-invoices", "target-postgres",
        env={**range_environment("invoices", START, END), **WINDOW_SIZE,
             "TAP_QUICKBOOKS_BACKFILL_PAGE_SIZE": "5"},
    )
    assert_succeeded(result)

    issued_access_tokens = list(emulator.emulator.tokens.access_tokens)
    rotated_refresh_tokens = list(emulator.emulator.tokens.refresh_tokens)
    assert issued_access_tokens, "the emulator issued no access token"
    request_payloads = "\n".join(
        json.dumps(row[0])
        for row in database.fetch_all("select request_payload from raw.qb_invoices_raw")
    )
    assert request_payloads, "no rows landed"
    secret_values = {
        "client_id": client_id,
        "client_secret": client_secret,
        "refresh_token": refresh_token,
        **{f"rotated refresh token {i}": t for i, t in enumerate(rotated_refresh_tokens)},
        **{f"access token {i}": t for i, t in enumerate(issued_access_tokens)},
    }
    for name, value in secret_values.items():
        assert value not in result.output, f"{name} appears in meltano's output"
        assert value not in request_payloads, f"{name} appears in request_payload"
