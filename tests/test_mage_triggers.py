"""One-time triggers: their files, and Mage's scheduler firing one exactly once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from mage_fixtures import (
    CREDENTIAL_SECRETS,
    MAGE_PROJECT,
    MAGE_PYTHON,
    PIPELINES,
    TEST_SECRETS,
    FakeProject,
    fake_project_fixture,  # noqa: F401 - pytest fixture `fake_project`
    files_containing,
    mage_process_env,
    make_mage_sandbox,
    run_mage_python,
)

sys.path.insert(0, str(MAGE_PROJECT.parent))

from mage.utils.backfill_request import parse_utc_instant  # noqa: E402

GUAYAQUIL = ZoneInfo("America/Guayaquil")
DRIVER = Path(__file__).resolve().parent / "mage_scheduler_driver.py"


def load_triggers(pipeline: str) -> tuple[str, list[dict]]:
    text = (MAGE_PROJECT / "pipelines" / pipeline / "triggers.yaml").read_text()
    return text, yaml.safe_load(text)["triggers"]


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_trigger_file_is_one_time_in_utc(pipeline: str) -> None:
    text, triggers = load_triggers(pipeline)
    assert len(triggers) == 1
    trigger = triggers[0]

    assert trigger["schedule_type"] == "time"
    assert trigger["schedule_interval"] == "@once"
    assert trigger["status"] == "active"
    # Without last_enabled_at Mage rewrites the file on first read and drops comments.
    assert isinstance(trigger["last_enabled_at"], datetime)

    start = trigger["start_time"]
    assert isinstance(start, datetime)
    assert start.utcoffset() == timedelta(0)

    start_line = next(line for line in text.splitlines() if "start_time:" in line)
    local = start.astimezone(GUAYAQUIL)
    assert local.utcoffset() == timedelta(hours=-5)
    assert f"# {local:%Y-%m-%d %H:%M} America/Guayaquil (UTC-5)" in start_line


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_trigger_variables_form_a_valid_range(pipeline: str) -> None:
    _, triggers = load_triggers(pipeline)
    variables = triggers[0]["variables"]
    start = parse_utc_instant("fecha_inicio", variables["fecha_inicio"])
    end = parse_utc_instant("fecha_fin", variables["fecha_fin"])
    assert start < end
    assert end <= triggers[0]["start_time"]
    assert int(variables["chain_window_days"]) > 0


def test_guayaquil_has_no_daylight_saving() -> None:
    offsets = {
        datetime(2026, month, 15, 12, tzinfo=UTC).astimezone(GUAYAQUIL).utcoffset()
        for month in range(1, 13)
    }
    assert offsets == {timedelta(hours=-5)}


def test_mage_loads_every_trigger_file(tmp_path: Path) -> None:
    sandbox = make_mage_sandbox(tmp_path)
    script = """
        from mage_ai.data_preparation.models.triggers import get_triggers_by_pipeline
        result = {}
        for pipeline in json.load(sys.stdin):
            result[pipeline] = [
                {"name": t.name, "interval": t.schedule_interval, "status": str(t.status.value),
                 "valid": t.has_valid_schedule_interval, "start": t.start_time.isoformat()}
                for t in get_triggers_by_pipeline(pipeline)
            ]
        print(json.dumps(result))
    """
    completed = run_mage_python(
        script, project=sandbox.project, data_dir=sandbox.data_dir, stdin=json.dumps(PIPELINES)
    )
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    for pipeline in PIPELINES:
        assert len(loaded[pipeline]) == 1, loaded
        trigger = loaded[pipeline][0]
        assert trigger["interval"] == "@once"
        assert trigger["status"] == "active"
        assert trigger["valid"] is True
        assert trigger["start"].endswith("+00:00")


def _due_trigger_file(path: Path, fake: FakeProject) -> str:
    """Rewrite a copied triggers.yaml so its trigger is due now and uses the fakes."""
    text = path.read_text()
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    text = re.sub(r"start_time: [0-9-]+ [0-9:]+\+00:00", f"start_time: {past}+00:00", text)
    text = re.sub(r"fecha_inicio: '[^']+'", "fecha_inicio: '2025-06-01T00:00:00Z'", text)
    text = re.sub(r"fecha_fin: '[^']+'", "fecha_fin: '2025-08-01T00:00:00Z'", text)
    text = text.replace("chain_window_days: 90", "chain_window_days: 30")
    text = text.replace(
        "meltano_environment: prod",
        f"meltano_environment: dev\n    project_root: {fake.root}",
    )
    path.write_text(text)
    return text


@pytest.mark.timeout(600)
def test_triggered_run_retires_one_time_trigger(
    tmp_path: Path, fake_project: FakeProject
) -> None:
    sandbox = make_mage_sandbox(tmp_path / "sandbox")
    sandbox.create_secrets(TEST_SECRETS)
    triggers_file = sandbox.project / "pipelines" / "qb_items_backfill" / "triggers.yaml"
    _due_trigger_file(triggers_file, fake_project)

    completed = subprocess.run(
        [str(MAGE_PYTHON), str(DRIVER), str(sandbox.project), "qb_items_backfill", "300"],
        env=mage_process_env(sandbox.data_dir, fake_project.env()),
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])

    # The scheduler fired the trigger once and the run extracted three windows.
    assert [run["status"] for run in outcome["first"]["runs"]] == ["completed"]
    assert len(fake_project.calls("meltano")) == 3
    assert len(fake_project.calls("qbo-backfill")) == 1

    (schedule,) = outcome["first"]["schedules"]
    assert schedule["name"] == "items_backfill_once"
    assert schedule["status"] == "inactive"
    assert schedule["should_schedule"] is False

    # More scheduler loops start no second run.
    assert len(outcome["again"]["runs"]) == 1
    assert outcome["again"]["schedules"][0]["should_schedule"] is False

    # A new Mage database reads triggers.yaml, whose status is now inactive.
    assert outcome["fresh"]["runs"] == []
    (fresh,) = outcome["fresh"]["schedules"]
    assert fresh["status"] == "inactive"
    assert fresh["should_schedule"] is False

    text = triggers_file.read_text()
    assert "  status: inactive" in text
    assert "America/Guayaquil (UTC-5)" in text
    assert text.startswith("# One-time trigger of the items backfill.")

    # Triggered runs log to files: no credential may appear in any of them.
    credentials = [TEST_SECRETS[name] for name in CREDENTIAL_SECRETS]
    logs = list(sandbox.data_dir.rglob("*.log"))
    assert logs, "the triggered run wrote no Mage log file"
    assert any("meltano: leaked secret=[redacted]" in log.read_text() for log in logs)
    assert files_containing(sandbox.data_dir, credentials) == {}
    for value in credentials:
        assert value not in completed.stdout
        assert value not in completed.stderr


@pytest.mark.timeout(600)
def test_failed_triggered_run_keeps_trigger_file_active(
    tmp_path: Path, fake_project: FakeProject
) -> None:
    sandbox = make_mage_sandbox(tmp_path / "sandbox")
    sandbox.create_secrets(TEST_SECRETS)
    triggers_file = sandbox.project / "pipelines" / "qb_items_backfill" / "triggers.yaml"
    _due_trigger_file(triggers_file, fake_project)

    completed = subprocess.run(
        [str(MAGE_PYTHON), str(DRIVER), str(sandbox.project), "qb_items_backfill", "300"],
        env=mage_process_env(sandbox.data_dir, fake_project.env(FAKE_QBO_BACKFILL_EXIT="1")),
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])

    assert [run["status"] for run in outcome["first"]["runs"]] == ["failed"]
    assert "  status: active" in triggers_file.read_text()
    # Mage itself never starts a second run of an @once trigger on the same database.
    assert len(outcome["again"]["runs"]) == 1
