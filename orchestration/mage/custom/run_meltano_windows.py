"""Run the entity's `meltano run` once per window, streaming Meltano's log."""

from __future__ import annotations

from pathlib import Path

from mage.utils.backfill_request import BackfillRequest
from mage.utils.backfill_secrets import read_backfill_secrets
from mage.utils.block_support import block_line_logger, mage_data_dir
from mage.utils.window_chain import WindowLedger, run_window_chain

if "custom" not in globals():
    from mage_ai.data_preparation.decorators import custom


@custom
def run_meltano_windows(request_output: dict, *args, **kwargs) -> dict:
    """Extract and load every unfinished window; fail the block when Meltano fails."""
    request = BackfillRequest.from_output(request_output)
    ledger = WindowLedger.for_request(Path(mage_data_dir()), request)
    summary = run_window_chain(
        request,
        read_backfill_secrets(),
        ledger,
        block_line_logger(kwargs),
    )
    return summary.to_output()
