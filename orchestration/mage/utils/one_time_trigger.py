"""Retire a one-time trigger after its backfill succeeded, so it cannot fire again.

Mage's scheduler already stops an `@once` schedule from creating a second
run while its first run is in Mage's database, and marks it inactive in the
database when that run completes. It does not write the status back to
`triggers.yaml`, and it copies the file's status into the database whenever
the file changes or the scheduler restarts. A fresh Mage database (a new
container without the data volume) would then fire an `active` one-time
trigger again. This module sets the status to `inactive` in both places.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .meltano_process import LogLine

ONCE = "@once"
INACTIVE = "inactive"


class TriggerFileError(RuntimeError):
    """Raised when triggers.yaml lacks the trigger to retire."""


def set_trigger_status_in_file(triggers_file: Path, trigger_name: str, status: str) -> bool:
    """Set one trigger's `status` in a triggers.yaml file, keeping its comments.

    Args:
        triggers_file: The pipeline's triggers.yaml.
        trigger_name: `name` of the trigger to change.
        status: `active` or `inactive`.

    Returns:
        True when the file changed, False when the status was already `status`.

    Raises:
        TriggerFileError: The file has no trigger of that name.
    """
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    content = yaml.load(triggers_file.read_text(encoding="utf-8")) or {}

    for trigger in content.get("triggers") or []:
        if trigger.get("name") != trigger_name:
            continue
        if trigger.get("status") == status:
            return False
        trigger["status"] = status
        _dump_atomically(yaml, content, triggers_file)
        return True

    raise TriggerFileError(
        f"{triggers_file} has no trigger named {trigger_name!r}: set its status to "
        f"{status} by hand"
    )


def _dump_atomically(yaml: object, content: object, path: Path) -> None:
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, encoding="utf-8", suffix=".tmp"
    ) as handle:
        yaml.dump(content, handle)  # type: ignore[attr-defined]
    os.chmod(handle.name, path.stat().st_mode & 0o777)
    os.replace(handle.name, path)


def retire_one_time_trigger(pipeline_run_id: int | None, log_line: LogLine) -> bool:
    """Mark the one-time trigger that started this pipeline run inactive.

    A run started by hand (`mage run` without a pipeline run) or by a
    recurring or API trigger is left alone.

    Args:
        pipeline_run_id: Mage's `pipeline_run_id` block variable, None for `mage run`.
        log_line: Receives one line describing the outcome.

    Returns:
        True when a one-time trigger was retired.
    """
    if pipeline_run_id is None:
        log_line("run started by hand, not by a trigger: no trigger to retire")
        return False

    from mage_ai.data_preparation.models.triggers import (
        ScheduleStatus,
        ScheduleType,
        get_triggers_file_path,
    )
    from mage_ai.orchestration.db.models.schedules import PipelineRun

    pipeline_run = PipelineRun.query.get(int(pipeline_run_id))
    schedule = pipeline_run.pipeline_schedule if pipeline_run else None
    if schedule is None:
        log_line(f"pipeline run {pipeline_run_id} has no trigger: nothing to retire")
        return False

    if schedule.schedule_type != ScheduleType.TIME or schedule.schedule_interval != ONCE:
        log_line(
            f"trigger {schedule.name!r} is not a one-time trigger "
            f"({schedule.schedule_interval}): left active"
        )
        return False

    schedule.update(status=ScheduleStatus.INACTIVE)
    triggers_file = Path(
        get_triggers_file_path(schedule.pipeline_uuid, repo_path=schedule.repo_path)
    )
    log_line(f"one-time trigger {schedule.name!r} set to inactive in Mage's database")

    # A trigger created in Mage's UI and not saved in code lives only in the
    # database, so a missing file or entry is expected.
    if not triggers_file.exists():
        return True
    try:
        if set_trigger_status_in_file(triggers_file, schedule.name, INACTIVE):
            log_line(f"one-time trigger {schedule.name!r} set to inactive in {triggers_file}")
    except TriggerFileError as error:
        log_line(str(error))
    return True
