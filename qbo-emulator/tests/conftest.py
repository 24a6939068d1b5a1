"""Shared fixtures: a default-company emulator and a small QBO client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from qbo_emulator.testing import RunningEmulator, run_emulator


class QboClient:
    """Minimal QBO client: refreshes a token and sends queries."""

    def __init__(self, emu: RunningEmulator) -> None:
        self.emu = emu
        self.session = requests.Session()
        self.refresh_token = emu.refresh_token
        self.access_token = ""

    def refresh(self) -> requests.Response:
        response = self.session.post(
            self.emu.token_url,
            auth=(self.emu.client_id, self.emu.client_secret),
            data={"grant_type": "refresh_token", "refresh_token": self.refresh_token},
            headers={"Accept": "application/json"},
            timeout=10,
        )
        if response.status_code == 200:
            body = response.json()
            self.access_token = body["access_token"]
            self.refresh_token = body["refresh_token"]
        return response

    def headers(self) -> dict[str, str]:
        if not self.access_token:
            assert self.refresh().status_code == 200
        return {"Authorization": f"Bearer {self.access_token}",
                "Accept": "application/json"}

    def get(self, query: str, **kwargs: Any) -> requests.Response:
        return self.session.get(
            f"{self.emu.api_base}/query",
            params={"query": query, "minorversion": "75"},
            headers=kwargs.pop("headers", None) or self.headers(),
            timeout=kwargs.pop("timeout", 10),
            **kwargs,
        )

    def post(self, query: str, content_type: str = "application/text") -> requests.Response:
        return self.session.post(
            f"{self.emu.api_base}/query",
            params={"minorversion": "75"},
            data=query.encode(),
            headers={**self.headers(), "Content-Type": content_type},
            timeout=10,
        )

    def rows(self, query: str, entity: str) -> list[dict[str, Any]]:
        response = self.get(query)
        assert response.status_code == 200, response.text
        return response.json()["QueryResponse"].get(entity, [])

    def count(self, query: str) -> int:
        response = self.get(query)
        assert response.status_code == 200, response.text
        return response.json()["QueryResponse"]["totalCount"]


@pytest.fixture(scope="module")
def default_emu() -> Iterator[RunningEmulator]:
    """One emulator with the default company per test module (read-only use)."""
    with run_emulator() as running:
        yield running


@pytest.fixture
def small_emu() -> Iterator[RunningEmulator]:
    """A fresh small company per test, for tests that change state."""
    with run_emulator(invoices=60, customers=15, items=8, seed=3) as running:
        yield running


@pytest.fixture(scope="module")
def client(default_emu: RunningEmulator) -> QboClient:
    return QboClient(default_emu)


@pytest.fixture
def small_client(small_emu: RunningEmulator) -> QboClient:
    return QboClient(small_emu)
