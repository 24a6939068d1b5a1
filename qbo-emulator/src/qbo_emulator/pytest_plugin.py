"""Pytest fixtures: ``qbo_emulator`` (a fresh emulator per test) and
``qbo_emulator_session`` (one per session, the default company).

Registered through the ``pytest11`` entry point, so any package whose tests
run in an environment with ``qbo-emulator`` installed can use them. Mark a
test with ``@pytest.mark.qbo_emulator(invoices=50, ...)`` to pass arguments of
``run_emulator``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``qbo_emulator`` marker."""
    config.addinivalue_line(
        "markers", "qbo_emulator(**kwargs): arguments for the qbo_emulator fixture"
    )


@pytest.fixture
def qbo_emulator(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Yield a running emulator (see ``qbo_emulator.testing.run_emulator``)."""
    from qbo_emulator.testing import run_emulator

    marker = request.node.get_closest_marker("qbo_emulator")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    with run_emulator(**kwargs) as running:
        yield running


@pytest.fixture(scope="session")
def qbo_emulator_session() -> Iterator[Any]:
    """Yield one emulator with the default company for the whole session."""
    from qbo_emulator.testing import run_emulator

    with run_emulator() as running:
        yield running
