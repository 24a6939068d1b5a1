"""Input checks: every invalid setting is reported, by name, before any request."""

from __future__ import annotations

import datetime as dt

import pytest
from singer_sdk.exceptions import ConfigValidationError

from tap_quickbooks_backfill.settings import (
    SANDBOX_API_BASE_URL,
    SettingsError,
    parse_settings,
    parse_window_size,
)
from tap_quickbooks_backfill.tap import TapQuickBooksBackfill


def errors_for(config) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        parse_settings(config)
    return caught.value.errors


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"start_date": "2023-02-30"}, "start_date '2023-02-30' is not a valid date"),
        ({"end_date": "tomorrow"}, "end_date 'tomorrow' is not a valid date"),
        ({"end_date": "2023-02-01"}, "is not after start_date"),
        ({"end_date": "2023-01-01"}, "is not after start_date"),
        ({"start_date": None}, "start_date is missing"),
        ({"client_secret": ""}, "missing QBO credentials: set client_secret"),
        ({"page_size": 0}, "page_size 0 is out of range: it must be between 1 and 1000"),
        ({"page_size": 1001}, "page_size 1001 is out of range"),
        ({"page_size": "many"}, "page_size 'many' is not a whole number"),
        ({"environment": "staging"}, "environment 'staging' is unknown"),
        ({"window_size": "7"}, "window_size '7' is invalid"),
        ({"window_size": "0d"}, "window_size '0d' is invalid: it must be longer than zero"),
        ({"window_size": "1y"}, "window_size '1y' is invalid"),
        ({"window_field": "TxnDate"}, "window_field 'TxnDate' is invalid"),
        ({"max_concurrent_requests": 11}, "max_concurrent_requests 11 is out of range"),
        ({"window_concurrency": 0}, "window_concurrency 0 is out of range"),
        ({"window_concurrency": 51}, "window_concurrency 51 is out of range: it must be "
                                     "between 1 and 50"),
        ({"request_timeout": 0}, "request_timeout 0 is out of range"),
        ({"api_base_url": "ftp://example"}, "api_base_url 'ftp://example' is not an http"),
        ({"cpu_niceness": 20}, "cpu_niceness 20 is out of range: it must be between 0 and 19"),
        ({"cpu_niceness": -5}, "cpu_niceness -5 is out of range"),
    ],
)
def test_invalid_setting_is_named(base_config, override, expected):
    errors = errors_for({**base_config, **override})
    assert any(expected in error for error in errors), errors


def test_missing_credentials_listed_together(base_config):
    config = {**base_config, "client_id": "", "refresh_token": None, "realm_id": ""}

    errors = errors_for(config)

    assert errors == [
        "missing QBO credentials: set client_id, refresh_token, realm_id "
        "(in Meltano through the extractor's settings or environment variables)"
    ]


def test_valid_config_fills_defaults(base_config):
    config = {k: v for k, v in base_config.items() if k not in {"end_date", "api_base_url"}}
    now = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)

    settings = parse_settings({**config, "environment": "sandbox"}, now=now)

    assert settings.api_base_url == SANDBOX_API_BASE_URL
    assert settings.end_date == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    assert settings.window_size == dt.timedelta(days=7)
    assert settings.window_field == "LastUpdatedTime"
    assert settings.page_size == 1000
    assert settings.max_requests_per_minute == 450
    assert settings.max_requests_per_second == 8
    assert settings.max_concurrent_requests == 10


def test_dates_with_offsets_become_utc(base_config):
    config = {
        **base_config,
        "start_date": "2023-02-01T00:00:00-05:00",
        "end_date": "2023-02-02",
    }

    settings = parse_settings(config)

    assert settings.start_date == dt.datetime(2023, 2, 1, 5, tzinfo=dt.UTC)
    assert settings.end_date == dt.datetime(2023, 2, 2, tzinfo=dt.UTC)


def test_window_concurrency_above_in_flight_cap(base_config):
    # Scans beyond the requests in flight wait for a slot. Under QBO's latency they
    # keep every slot busy until the last window ends.
    settings = parse_settings(
        {**base_config, "window_concurrency": 50, "max_concurrent_requests": 8}
    )

    assert settings.window_concurrency == 50  # noqa: PLR2004
    assert settings.max_concurrent_requests == 8  # noqa: PLR2004


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", dt.timedelta(days=7)),
        ("12h", dt.timedelta(hours=12)),
        ("30m", dt.timedelta(minutes=30)),
        ("2w", dt.timedelta(weeks=2)),
    ],
)
def test_window_size_units(text, expected):
    assert parse_window_size(text) == expected


def test_settings_repr_hides_secrets(base_config):
    settings = parse_settings(base_config)

    text = repr(settings)

    assert base_config["client_secret"] not in text
    assert base_config["refresh_token"] not in text
    assert base_config["client_id"] not in text


def test_tap_rejects_invalid_config_before_requests(base_config):
    config = {**base_config, "page_size": 5000, "environment": "prod"}

    with pytest.raises(ConfigValidationError) as caught:
        TapQuickBooksBackfill(config=config)

    assert any("page_size 5000" in error for error in caught.value.errors)
    assert any("environment 'prod'" in error for error in caught.value.errors)
