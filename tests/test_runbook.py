"""Every ``bash`` block of docs/RUNBOOK.md, run against the emulator and Postgres.

Each runnable block is preceded by ``<!-- runbook: ID -->``. The walkthrough
below creates the situation a section is about: a failed run, a deleted row, a
revoked refresh token or a lost grant. It then runs that section's block as
written, after the ``shell`` block as an operator would, and checks the outcome.
A block without a marker, or a marker that no test runs, fails the suite.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT_ROOT, MeltanoProject, PostgresDatabase

pytestmark = pytest.mark.e2e

RUNBOOK = PROJECT_ROOT / "docs" / "RUNBOOK.md"
BLOCK = re.compile(r"(?:<!-- runbook: (?P<id>[\w-]+) -->\n)?```bash\n(?P<body>.*?)```", re.S)
STATE_ID = "dev:tap-qb-invoices-to-target-postgres"
NEW_REFRESH_TOKEN = "operator-issued-refresh-token-7731"


def runbook_blocks() -> list[tuple[str | None, str]]:
    """Return ``(id, body)`` of every bash block of the runbook, in order."""
    text = RUNBOOK.read_text(encoding="utf-8")
    return [(match["id"], match["body"]) for match in BLOCK.finditer(text)]


def test_every_bash_block_is_marked() -> None:
    blocks = runbook_blocks()

    assert len(blocks) >= 10
    assert [body[:40] for block_id, body in blocks if block_id is None] == []
    ids = [block_id for block_id, _ in blocks]
    assert len(ids) == len(set(ids)), "runbook block ids must be unique"


def test_runbook_quotes_the_tap_messages() -> None:
    from tap_quickbooks_backfill.auth import INVALID_CLIENT_MESSAGE, INVALID_GRANT_MESSAGE

    text = RUNBOOK.read_text(encoding="utf-8")

    assert INVALID_GRANT_MESSAGE in text
    assert INVALID_CLIENT_MESSAGE.split(":")[0] in text


class Operator:
    """Runs runbook blocks in a shell prepared by the ``shell`` block."""

    def __init__(self, project: MeltanoProject, extra_env: dict[str, str]) -> None:
        self.project = project
        self.extra_env = extra_env
        self.blocks = dict(runbook_blocks())
        self.ran: list[str] = []

    def run(self, block_id: str, *, expect_ok: bool = True) -> str:
        script = self.blocks["shell"] + "\n" + self.blocks[block_id]
        completed = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=PROJECT_ROOT, env=self.project.command_environment(self.extra_env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=600, check=False,
        )
        self.ran.append(block_id)
        if expect_ok:
            assert completed.returncode == 0, f"{block_id}:\n{completed.stdout[-4000:]}"
        return completed.stdout


def _backfill(project: MeltanoProject, **env: str) -> Any:  # noqa: ANN401
    return project.backfill("invoices", "2023-01-01T00:00:00Z", "2025-01-01T00:00:00Z",
                            env=env)


def test_runbook_walkthrough(
    meltano_project: MeltanoProject, start_emulator: Any,  # noqa: ANN401
    database: PostgresDatabase,
) -> None:
    emulator = start_emulator(invoices=300, customers=5, items=5)
    # No 429 is injected here. Meltano 4.4.1 fails with "Decimal is not JSON
    # serializable" when a `kind: decimal` setting comes from the environment.
    meltano_project.environment.pop("TAP_QUICKBOOKS_BACKFILL_THROTTLE_WAIT_SECONDS", None)
    meltano_project.environment.update({
        "TAP_QB_INVOICES_WINDOW_SIZE": "120d",
        "QBO_PG_ADMIN_USER": database.admin.user,
        "QBO_PG_ADMIN_PASSWORD": database.admin.password or "",
        "QBO_LOADER_ROLE": database.loader_role,
        "QBO_LOADER_PASSWORD": database.loader_password,
    })
    operator = Operator(meltano_project, {"NEW_REFRESH_TOKEN": NEW_REFRESH_TOKEN})
    logs_before = set((PROJECT_ROOT / ".run" / "logs").glob("invoices-*.log"))
    evidence_before = set((PROJECT_ROOT / "evidence").glob("*"))

    try:
        _walk_through(operator, meltano_project, emulator, database)
    finally:
        for log in set((PROJECT_ROOT / ".run" / "logs").glob("invoices-*.log")) - logs_before:
            log.unlink()
        for purged in (PROJECT_ROOT / ".run").glob("purged-invoices-before-*.csv"):
            purged.unlink()
        for folder in set((PROJECT_ROOT / "evidence").glob("*")) - evidence_before:
            shutil.rmtree(folder)

    every_id = {block_id for block_id, _ in runbook_blocks()}
    assert every_id - {"shell"} <= set(operator.ran), "runbook blocks no test runs"


def _walk_through(operator: Operator, project: MeltanoProject, emulator: Any,  # noqa: ANN401
                  database: PostgresDatabase) -> None:
    # 1-4: backfill with a log, read it, look at the tables, validate.
    operator.run("backfill")
    assert database.count("qb_invoices_raw") == 300
    log_lines = operator.run("read-log")
    assert "window [2023-01-01T00:00:00Z, 2023-05-01T00:00:00Z) complete" in log_lines
    raw = operator.run("check-raw")
    assert "raw.qb_invoices_raw" in raw
    assert "300" in raw
    assert "PASSED:" in operator.run("validate")

    # 5: a run that failed at its first query resumes with the same command.
    assert project.run("state", "clear", "--force", STATE_ID).returncode == 0
    emulator.control.inject_faults("500", count=5)
    failed = _backfill(project, TAP_QUICKBOOKS_BACKFILL_MAX_RETRIES="0")
    assert failed.returncode != 0
    emulator.control.clear_faults()
    resumed = operator.run("resume")
    assert "complete" in resumed

    # 6: a row lost from one window comes back by re-running that window.
    database.fetch_all(
        "delete from raw.qb_invoices_raw where id = (select id from raw.qb_invoices_raw "
        "where last_updated_utc >= '2023-05-01' and last_updated_utc < '2023-08-29' "
        "limit 1) returning id"
    )
    assert database.count("qb_invoices_raw") == 299
    rerun = operator.run("rerun-window")
    assert "PASSED:" in rerun
    assert database.count("qb_invoices_raw") == 300
    assert database.fetch_all("select count(*) from raw.qb_extract_windows") == [(7,)]
    operator.run("state-clear")

    # 7-8: a revoked refresh token stops the run with invalid_grant; the new one works.
    emulator.control.revoke_refresh_tokens()
    assert project.run("state", "clear", "--force", STATE_ID).returncode == 0
    rejected = _backfill(project)
    assert rejected.returncode != 0
    assert "refresh token rejected by QBO (invalid_grant)" in rejected.output
    emulator.emulator.set_initial_refresh_token(NEW_REFRESH_TOKEN)
    operator.run("replace-token")
    assert NEW_REFRESH_TOKEN not in rejected.output
    # The operator keeps the new token in the secret store for every later run.
    project.environment["TAP_QUICKBOOKS_BACKFILL_REFRESH_TOKEN"] = NEW_REFRESH_TOKEN

    # 9-11: throttling report, disk and size checks.
    operator.run("throttles")
    disk = operator.run("disk")
    assert "Use%" in disk
    sizes = operator.run("sizes")
    assert "qb_invoices_raw_last_updated_utc_idx" in sizes

    # 10: a lost grant fails the load until db init re-grants it.
    with database.connect() as connection:
        connection.execute(
            f'revoke insert, update on raw.qb_invoices_raw from "{database.loader_role}"'
        )
    assert project.run("state", "clear", "--force", STATE_ID).returncode == 0
    denied = _backfill(project)
    assert denied.returncode != 0
    assert "permission denied" in denied.output, denied.output[-3000:]
    grants = operator.run("permissions")
    assert "INSERT" in grants
    assert _backfill(project).returncode == 0

    # 12: purge what lies before a window boundary; the kept range still validates.
    purged = operator.run("purge")
    assert "PASSED:" in purged
    remaining = database.fetch_all(
        "select count(*) from raw.qb_invoices_raw where last_updated_utc < '2023-05-01'")
    assert remaining == [(0,)]
    assert list((PROJECT_ROOT / ".run").glob("purged-invoices-before-*.csv"))


def test_runbook_block_ids_are_those_the_walkthrough_runs() -> None:
    ids = {block_id for block_id, _ in runbook_blocks()}

    assert ids == {"shell", "backfill", "read-log", "check-raw", "validate", "resume",
                   "rerun-window", "state-clear", "replace-token", "throttles", "disk",
                   "permissions", "sizes", "purge"}


def test_walkthrough_source_names_every_block() -> None:
    source = Path(__file__).read_text(encoding="utf-8")

    for block_id, _ in runbook_blocks():
        if block_id != "shell":
            assert f'"{block_id}"' in source, block_id
