"""``qbo-backfill validate`` after real ``meltano run`` backfills from the emulator."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECT_ROOT, MeltanoProject, PostgresDatabase

pytestmark = pytest.mark.e2e

QBO_BACKFILL = PROJECT_ROOT / ".venv" / "bin" / "qbo-backfill"
START = "2023-01-01"
END = "2025-01-01"
WINDOW_SIZE = "120d"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _backfill_invoices(project: MeltanoProject) -> None:
    # These tests inject no 429. Meltano 4.4.1 fails with "Decimal is not JSON
    # serializable" when a `kind: decimal` setting comes from the environment.
    project.environment.pop("TAP_QUICKBOOKS_BACKFILL_THROTTLE_WAIT_SECONDS", None)
    result = project.backfill("invoices", START, END,
                              env={"TAP_QB_INVOICES_WINDOW_SIZE": WINDOW_SIZE})
    assert result.returncode == 0, result.output[-3000:]


def _validate(project: MeltanoProject, evidence: Path,
              *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(QBO_BACKFILL), "validate", "--entity", "invoices", "--start", START,
         "--end", END, "--evidence-dir", str(evidence), *options],
        cwd=PROJECT_ROOT, env=project.command_environment(None),
        capture_output=True, text=True, timeout=300, check=False,
    )


def _rerun(project: MeltanoProject, command: str) -> None:
    """Run a printed re-run command: leading VAR=value words, then meltano's arguments."""
    words = shlex.split(command)
    assignments = dict(word.split("=", 1) for word in words if "=" in word.split("-")[0])
    arguments = words[len(assignments):]
    assert arguments[0] == "meltano"
    result = project.run(*arguments[1:], env=assignments)
    assert result.returncode == 0, result.output[-3000:]


def _secrets(emulator: Any, token_store: Path) -> list[str]:  # noqa: ANN401
    values = [emulator.client_id, emulator.client_secret, emulator.refresh_token]
    for token_file in token_store.glob("*.json"):
        stored = json.loads(token_file.read_text(encoding="utf-8"))
        values += [str(v) for k, v in stored.items() if "token" in k and v]
    return [value for value in values if value]


def test_validation_passes_after_clean_backfill(
    meltano_project: MeltanoProject, start_emulator: Any, tmp_path: Path,  # noqa: ANN401
) -> None:
    emulator = start_emulator(invoices=300, customers=5, items=5)
    _backfill_invoices(meltano_project)
    evidence = tmp_path / "evidence"

    result = _validate(meltano_project, evidence)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED:" in result.stdout
    data = json.loads((evidence / "report.json").read_text(encoding="utf-8"))
    assert data["passed"] is True
    assert len(data["windows"]) == 7  # 731 days in windows of 120 days
    assert all(w["status"] == "ok" for w in data["windows"])
    assert data["totals"]["invoices"]["raw_rows_range"] == emulator.control.counts(
        "Invoice")["total"]
    assert (evidence / "records_per_window.png").read_bytes()[:8] == PNG_MAGIC
    assert "# QBO backfill validation" in (evidence / "report.md").read_text(encoding="utf-8")

    secrets = _secrets(emulator, meltano_project.token_store)
    assert len(secrets) >= 4  # client id, secret, refresh token, stored tokens
    for path in evidence.iterdir():
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"a secret is in {path.name}"
    for secret in secrets:
        assert secret not in result.stdout + result.stderr


def test_deleted_row_fails_and_rerun_repairs(
    meltano_project: MeltanoProject, start_emulator: Any,  # noqa: ANN401
    database: PostgresDatabase, tmp_path: Path,
) -> None:
    start_emulator(invoices=300, customers=5, items=5)
    _backfill_invoices(meltano_project)
    deleted_id, window_start = database.fetch_all(
        "delete from raw.qb_invoices_raw where id = (select id from raw.qb_invoices_raw "
        "order by last_updated_utc offset 150 limit 1) "
        "returning id, extract_window_start_utc"
    )[0]

    failed = _validate(meltano_project, tmp_path / "first")

    assert failed.returncode == 1, failed.stdout + failed.stderr
    data = json.loads((tmp_path / "first" / "report.json").read_text(encoding="utf-8"))
    mismatches = data["mismatches"]
    assert len(mismatches) == 1
    assert mismatches[0]["window_start_utc"] == window_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert mismatches[0]["differences"] == {"missing_from_raw": [deleted_id]}
    command = mismatches[0]["rerun_command"]
    assert f"re-run: {command}" in failed.stdout
    assert "FAILED:" in failed.stdout

    _rerun(meltano_project, command)
    repaired = _validate(meltano_project, tmp_path / "second")

    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert database.fetch_all("select count(*) from raw.qb_invoices_raw where id = %(id)s",
                              {"id": deleted_id}) == [(1,)]
    windows = database.fetch_all("select count(*) from raw.qb_extract_windows")
    assert windows == [(7,)]  # the re-run updated its window's row, added none


def test_missing_window_run_is_reported_as_gap(
    meltano_project: MeltanoProject, start_emulator: Any,  # noqa: ANN401
    database: PostgresDatabase, tmp_path: Path,
) -> None:
    start_emulator(invoices=300, customers=5, items=5)
    _backfill_invoices(meltano_project)
    # Forget the third window as if its run never happened.
    gap_start, gap_end = database.fetch_all(
        "delete from raw.qb_extract_windows where window_start_utc = (select "
        "window_start_utc from raw.qb_extract_windows order by 1 offset 2 limit 1) "
        "returning window_start_utc, window_end_utc"
    )[0]
    database.fetch_all(
        "delete from raw.qb_invoices_raw where last_updated_utc >= %(s)s "
        "and last_updated_utc < %(e)s returning id", {"s": gap_start, "e": gap_end},
    )

    result = _validate(meltano_project, tmp_path / "evidence")

    assert result.returncode == 1
    data = json.loads((tmp_path / "evidence" / "report.json").read_text(encoding="utf-8"))
    assert [(g["start_utc"], g["end_utc"]) for g in data["gaps"]] == [
        (gap_start.strftime("%Y-%m-%dT%H:%M:%SZ"), gap_end.strftime("%Y-%m-%dT%H:%M:%SZ"))
    ]
    assert "no recorded window covers" in data["gaps"][0]["description"]
    assert "gap" in result.stdout


def test_edit_after_extraction_is_not_a_loss(
    meltano_project: MeltanoProject, start_emulator: Any,  # noqa: ANN401
    database: PostgresDatabase, tmp_path: Path,
) -> None:
    emulator = start_emulator(invoices=300, customers=5, items=5)
    _backfill_invoices(meltano_project)
    edited_id = database.fetch_all(
        "select id from raw.qb_invoices_raw order by last_updated_utc offset 10 limit 1"
    )[0][0]
    # The emulator stamps the edit with its clock's "now", after the range.
    emulator.control.update("Invoice", edited_id, {"PrivateNote": "edited later"})

    lenient = _validate(meltano_project, tmp_path / "lenient")
    strict = _validate(meltano_project, tmp_path / "strict", "--strict")

    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    data = json.loads((tmp_path / "lenient" / "report.json").read_text(encoding="utf-8"))
    changed = [w for w in data["windows"] if w["status"] == "changed_in_qbo"]
    assert len(changed) == 1
    assert changed[0]["differences"] == {"edited_in_qbo_after_extraction": [edited_id]}
    assert "not a loss" in lenient.stdout
    assert strict.returncode == 1
