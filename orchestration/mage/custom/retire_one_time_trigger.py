"""Set the one-time trigger that started this run to inactive, after a full success."""

from __future__ import annotations

from mage.utils.block_support import block_line_logger
from mage.utils.one_time_trigger import retire_one_time_trigger

if "custom" not in globals():
    from mage_ai.data_preparation.decorators import custom


@custom
def retire_trigger(validation_output: dict, *args, **kwargs) -> dict:
    """Retire the run's `@once` trigger; a run by hand or by another trigger is left alone."""
    retired = retire_one_time_trigger(kwargs.get("pipeline_run_id"), block_line_logger(kwargs))
    return {**validation_output, "one_time_trigger_retired": retired}
