"""Compare the range's rows in Postgres with QBO's counts; fail on a mismatch."""

from __future__ import annotations

from mage.utils.backfill_request import BackfillRequest
from mage.utils.backfill_secrets import read_backfill_secrets
from mage.utils.block_support import block_line_logger
from mage.utils.volumetry import validate_range_volumetry

if "custom" not in globals():
    from mage_ai.data_preparation.decorators import custom


@custom
def validate_range(request_output: dict, chain_output: dict, *args, **kwargs) -> dict:
    """Run `qbo-backfill validate` for `[fecha_inicio, fecha_fin)`.

    Upstream blocks: check_backfill_request (the request) and
    run_meltano_windows (which windows ran), in that order.
    """
    request = BackfillRequest.from_output(request_output)
    validate_range_volumetry(request, read_backfill_secrets(), block_line_logger(kwargs))
    return {**chain_output, "volumetry": "match"}
