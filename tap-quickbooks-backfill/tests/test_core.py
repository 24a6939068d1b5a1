"""singer-sdk's standard tap tests, run against a QBO emulator started for this module."""

from __future__ import annotations

import atexit
import contextlib
import tempfile
from pathlib import Path

from qbo_emulator.testing import run_emulator
from singer_sdk.testing import get_tap_test_class

from tap_quickbooks_backfill.tap import TapQuickBooksBackfill

from .tap_runner import emulator_config

# The standard test class takes its config when it is defined, so the emulator starts
# at import and stops when the test process exits.
_resources = contextlib.ExitStack()
atexit.register(_resources.close)
_emulator = _resources.enter_context(
    run_emulator(invoices=60, customers=20, items=15, include_captured=True)
)
_token_dir = Path(_resources.enter_context(tempfile.TemporaryDirectory()))

SAMPLE_CONFIG = emulator_config(
    _emulator,
    _token_dir,
    start_date="2010-01-01T00:00:00Z",
    end_date="2025-02-01T00:00:00Z",
    window_size="1000d",
)

TestTapQuickBooksBackfill = get_tap_test_class(
    tap_class=TapQuickBooksBackfill,
    config=SAMPLE_CONFIG,
)
