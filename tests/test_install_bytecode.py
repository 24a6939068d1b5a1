"""make setup compiles the plugins' packages, so no process start compiles them again."""

from __future__ import annotations

from conftest import PROJECT_ROOT

TAP_PACKAGES = PROJECT_ROOT / ".meltano" / "extractors" / "tap-quickbooks-backfill" / "venv"


def test_tap_environment_has_bytecode():
    # Where PYTHONDONTWRITEBYTECODE is set, Python never writes these files itself.
    compiled = list(TAP_PACKAGES.glob("lib/python3.*/site-packages/singer_sdk/__pycache__/*.pyc"))

    assert compiled, f"no compiled singer_sdk modules under {TAP_PACKAGES}"
