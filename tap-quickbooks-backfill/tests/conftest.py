"""Fixtures shared by the tap's tests."""

from __future__ import annotations

import typing as t

import pytest


@pytest.fixture
def base_config(tmp_path) -> dict[str, t.Any]:
    """A valid config for a stub or emulator; tokens stored under tmp_path."""
    return {
        "client_id": "cid-unit-test",
        "client_secret": "csecret-unit-test-value",
        "refresh_token": "rtoken-unit-test-value",
        "realm_id": "9130357766900011",
        "api_base_url": "http://127.0.0.1:9",
        "token_url": "http://127.0.0.1:9/oauth2/v1/tokens/bearer",
        "start_date": "2023-02-01T00:00:00Z",
        "end_date": "2023-03-01T00:00:00Z",
        "token_store_path": str(tmp_path / "tokens"),
        "throttle_wait_seconds": 0,
    }
