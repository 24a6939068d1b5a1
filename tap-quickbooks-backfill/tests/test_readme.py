"""The README's settings table matches the config schema."""

from __future__ import annotations

from pathlib import Path

from tap_quickbooks_backfill.settings_doc import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_matches_schema():
    assert settings_table() in README.read_text(encoding="utf-8")
