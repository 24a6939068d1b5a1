"""Validate the run's dates, settings and Mage Secrets before anything starts."""

from __future__ import annotations

from mage.utils.backfill_request import build_backfill_request, check_project_layout
from mage.utils.backfill_secrets import read_backfill_secrets
from mage.utils.block_support import block_line_logger, mage_project_path

if "custom" not in globals():
    from mage_ai.data_preparation.decorators import custom


@custom
def check_backfill_request(*args, **kwargs) -> dict:
    """Return the validated request as plain values for the downstream blocks.

    Raises on an invalid or missing `fecha_inicio`/`fecha_fin`, an invalid
    setting, a project folder without Meltano, or a missing Mage Secret.
    """
    log_line = block_line_logger(kwargs)
    request = build_backfill_request(
        kwargs,
        pipeline_uuid=kwargs["pipeline_uuid"],
        mage_project_path=mage_project_path(kwargs),
    )
    check_project_layout(request)
    read_backfill_secrets()

    log_line(
        f"{request.entity} backfill of {request.window} in {len(request.chain)} "
        f"window(s), Meltano environment {request.meltano_environment}, "
        f"project {request.project_root}"
    )
    return request.to_output()
