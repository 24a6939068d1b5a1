"""Run Mage's own scheduler loop on a project until a pipeline's triggered run ends.

Runs in Mage's environment (`.venv-mage/bin/python`), started by
test_mage_triggers.py:

    python mage_scheduler_driver.py PROJECT PIPELINE TIMEOUT_SECONDS

`MAGE_DATA_DIR` must point at the test's Mage data folder. The script prints
one JSON object with the pipeline's runs and schedules, and whether each
schedule would start another run. It reports them three times: after the
triggered run, after more scheduler loops on the same database, and on a
brand-new database synced from triggers.yaml, as after a redeploy without
Mage's data volume.
"""

from __future__ import annotations

import json
import os
import sys
import time

FINISHED = {"completed", "failed", "cancelled"}


def _open_database() -> None:
    from mage_ai.orchestration.db import db_connection
    from mage_ai.orchestration.db.database_manager import database_manager

    database_manager.run_migrations()
    db_connection.start_session()


def _runs(pipeline_uuid: str) -> list[dict]:
    from mage_ai.orchestration.db.models.schedules import PipelineRun

    runs = PipelineRun.query.filter(PipelineRun.pipeline_uuid == pipeline_uuid).all()
    return [{"id": run.id, "status": str(run.status.value)} for run in runs]


def _schedules(pipeline_uuid: str) -> list[dict]:
    from mage_ai.orchestration.db.models.schedules import PipelineSchedule

    schedules = PipelineSchedule.query.filter(
        PipelineSchedule.pipeline_uuid == pipeline_uuid
    ).all()
    return [
        {
            "name": schedule.name,
            "status": str(schedule.status.value),
            "start_time": schedule.start_time.isoformat() if schedule.start_time else None,
            "should_schedule": bool(schedule.should_schedule()),
        }
        for schedule in schedules
    ]


def _scheduler_loops(pipeline_uuid: str, timeout: float, stop_when_finished: bool) -> None:
    from mage_ai.orchestration.db import db_connection
    from mage_ai.orchestration.job_manager import get_job_manager
    from mage_ai.orchestration.pipeline_scheduler import schedule_all

    job_manager = get_job_manager()
    job_manager.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            schedule_all()
            # Mage 0.9.80's worker pool exits when its queue looks empty, which
            # can happen just before a job arrives. That job then waits for the
            # next enqueue, so restart the pool when jobs wait without one.
            queue = job_manager.queue
            if not queue.is_worker_pool_alive() and not queue.queue.empty():
                queue.start_worker_pool()

            db_connection.session.expire_all()
            runs = _runs(pipeline_uuid)
            if stop_when_finished and runs and all(r["status"] in FINISHED for r in runs):
                return
            time.sleep(1)
    finally:
        job_manager.stop()


def main() -> None:
    """Drive the scheduler and print the outcome as JSON."""
    project, pipeline_uuid, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])

    from mage_ai.settings.repo import get_variables_dir, set_repo_path

    set_repo_path(project)
    sys.path.append(os.path.dirname(project))
    _open_database()

    _scheduler_loops(pipeline_uuid, timeout, stop_when_finished=True)
    first = {"runs": _runs(pipeline_uuid), "schedules": _schedules(pipeline_uuid)}

    # More loops on the same database: a retired trigger starts nothing.
    _scheduler_loops(pipeline_uuid, 5, stop_when_finished=False)
    again = {"runs": _runs(pipeline_uuid), "schedules": _schedules(pipeline_uuid)}

    # A brand-new database synced from triggers.yaml, as after a redeploy.
    from mage_ai.data_preparation.models.triggers import triggers_cache
    from mage_ai.orchestration.db import db_connection, engine
    from mage_ai.orchestration.pipeline_scheduler import sync_schedules

    db_connection.close_session()
    engine.dispose()
    # A restarted scheduler starts with an empty cache of triggers.yaml files.
    triggers_cache.clear()
    os.remove(os.path.join(get_variables_dir(), "mage-ai.db"))
    _open_database()
    sync_schedules([pipeline_uuid])
    fresh = {"runs": _runs(pipeline_uuid), "schedules": _schedules(pipeline_uuid)}

    print(json.dumps({"first": first, "again": again, "fresh": fresh}))


if __name__ == "__main__":
    main()
