"""Helpers and fixtures for the tests that run the Mage project with `mage run`.

Mage lives in `.venv-mage` (mage-ai 0.9.80), apart from the project's `.venv`
where pytest runs, so every Mage call here is a subprocess of that
environment. Each test gets its own Mage data folder (`MAGE_DATA_DIR`): the
SQLite database with schedules and encrypted secrets, the secrets key, logs
and block outputs, so tests share no state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAGE_PROJECT = ROOT / "orchestration" / "mage"
MAGE_VENV = ROOT / ".venv-mage"
MAGE_BIN = MAGE_VENV / "bin" / "mage"
MAGE_PYTHON = MAGE_VENV / "bin" / "python"

PIPELINES = ("qb_invoices_backfill", "qb_customers_backfill", "qb_items_backfill")

# Values distinctive enough that a grep of Mage's logs cannot match them by chance.
TEST_SECRETS = {
    "qb_client_id": "demo-client-id",
    "qb_secret_id": "demo-client-secret",
    "qb_refresh_token": "demo-refresh-token",
    "pg_host": "127.0.0.1",
    "pg_port": "5432",
    "pg_user": "postgres",
    "pg_password": "pw-7Hq2xZr9Lm4c",
    "pg_db": "postgres",
}
CREDENTIAL_SECRETS = ("qb_client_id", "qb_secret_id", "qb_refresh_token", "pg_password")


def require_mage_venv() -> None:
    """Skip the test when `.venv-mage` is missing, except in CI where that is a failure."""
    if MAGE_BIN.exists():
        return
    message = f"{MAGE_BIN} not found: run `make setup-mage`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def mage_process_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment of a Mage subprocess that keeps its data in `data_dir`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env.update(
        {
            "MAGE_DATA_DIR": str(data_dir),
            # Rich wraps Mage's tracebacks at COLUMNS; wide lines keep messages whole.
            "COLUMNS": "250",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def run_mage_python(
    script: str, *, project: Path, data_dir: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a Python script in Mage's environment, with Mage's repo path set to `project`.

    The script finds `json`, `sys` and an open session on a migrated Mage
    database ready, as `mage start` leaves it.

    Raises:
        AssertionError: The script failed; the message carries its output.
    """
    prelude = textwrap.dedent(
        f"""
        import json
        import sys
        from mage_ai.settings.repo import set_repo_path
        set_repo_path({str(project)!r})
        sys.path.append({str(project.parent)!r})
        from mage_ai.orchestration.db import db_connection
        from mage_ai.orchestration.db.database_manager import database_manager
        database_manager.run_migrations()
        db_connection.start_session()
        """
    )
    completed = subprocess.run(
        [str(MAGE_PYTHON), "-c", prelude + textwrap.dedent(script)],
        input=stdin,
        env=mage_process_env(data_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(
            f"Mage script failed ({completed.returncode}):\n{completed.stdout}\n"
            f"{completed.stderr}"
        )
    return completed


def create_mage_secrets(values: dict[str, str], *, project: Path, data_dir: Path) -> None:
    """Store secrets in Mage's own secrets store, as Settings > Secrets does.

    `create_secret` in mage_ai.data_preparation.shared.secrets encrypts each
    value with the key in `<MAGE_DATA_DIR>/secrets` and saves it in the
    project's database. The values travel on standard input, not argv.
    """
    script = """
        from mage_ai.data_preparation.shared.secrets import create_secret
        for name, value in json.load(sys.stdin).items():
            create_secret(name, value)
    """
    run_mage_python(script, project=project, data_dir=data_dir, stdin=json.dumps(values))


@dataclass
class MageRun:
    """Outcome of one `mage run`."""

    returncode: int
    output: str
    seconds: float

    @property
    def flat_output(self) -> str:
        """Output with runs of whitespace joined, so wrapped messages match."""
        return " ".join(self.output.split())


def mage_run(
    pipeline: str,
    runtime_vars: dict[str, object],
    *,
    project: Path,
    data_dir: Path,
    extra_env: dict[str, str] | None = None,
    timeout: float = 900,
) -> MageRun:
    """Run `mage run PROJECT PIPELINE --runtime-vars JSON` and capture its output."""
    import time

    started = time.monotonic()
    completed = subprocess.run(
        [
            str(MAGE_BIN),
            "run",
            str(project),
            pipeline,
            "--runtime-vars",
            json.dumps(runtime_vars),
        ],
        cwd=ROOT,
        env=mage_process_env(data_dir, extra_env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return MageRun(completed.returncode, completed.stdout, time.monotonic() - started)


def files_containing(folder: Path, values: list[str]) -> dict[str, list[str]]:
    """Map each value to the files under `folder` whose bytes contain it."""
    found: dict[str, list[str]] = {value: [] for value in values}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        content = path.read_bytes()
        for value in values:
            if value.encode() in content:
                found[value].append(str(path))
    return {value: paths for value, paths in found.items() if paths}


@dataclass
class MageSandbox:
    """A copy of the Mage project with its own data folder."""

    project: Path
    data_dir: Path
    secrets: dict[str, str] = field(default_factory=dict)

    def create_secrets(self, values: dict[str, str]) -> None:
        """Store `values` in this sandbox's Mage secrets store."""
        create_mage_secrets(values, project=self.project, data_dir=self.data_dir)
        self.secrets.update(values)


def make_mage_sandbox(base: Path) -> MageSandbox:
    """Copy the Mage project under `base` with an empty Mage data folder.

    The copy keeps the repository's triggers.yaml untouched when a test
    retires a trigger. It sits at `<base>/orchestration/mage`, so its default
    project root (two folders up) is `base`, where no Meltano project is: each
    test passes `project_root` explicitly.
    """
    require_mage_venv()
    project = base / "orchestration" / "mage"
    shutil.copytree(
        MAGE_PROJECT,
        project,
        ignore=shutil.ignore_patterns("mage_data", "__pycache__", ".logs", ".variables"),
    )
    data_dir = base / "mage_data"
    data_dir.mkdir()
    return MageSandbox(project=project, data_dir=data_dir)


@pytest.fixture
def mage_sandbox(tmp_path: Path) -> MageSandbox:
    """A Mage project copy with its own data folder and no secrets."""
    return make_mage_sandbox(tmp_path)


FAKE_TOOL = '''#!{python}
"""Stand-in for {name}: records its call, prints lines, exits as FAKE_{upper}_EXIT says."""
import json, os, sys, time
from pathlib import Path

record = Path(os.environ["FAKE_TOOL_RECORD_DIR"]) / "{name}.jsonl"
names = ("TAP_QUICKBOOKS_BACKFILL_CLIENT_ID", "TAP_QUICKBOOKS_BACKFILL_CLIENT_SECRET",
         "TAP_QUICKBOOKS_BACKFILL_REFRESH_TOKEN", "TAP_QUICKBOOKS_BACKFILL_REALM_ID",
         "TAP_QUICKBOOKS_BACKFILL_API_BASE_URL", "TAP_QUICKBOOKS_BACKFILL_TOKEN_URL",
         "TAP_QUICKBOOKS_BACKFILL_WINDOW_SIZE", "PGHOST", "PGPORT", "PGUSER",
         "PGPASSWORD", "PGDATABASE", "VIRTUAL_ENV", "PYTHONPATH")
call = {{"argv": sys.argv[1:], "cwd": os.getcwd(),
         "env": {{k: v for k, v in os.environ.items() if k in names or "_START_DATE" in k
                 or "_END_DATE" in k}}}}
with record.open("a") as handle:
    handle.write(json.dumps(call) + "\\n")

print("{name}: starting", flush=True)
# A careless plugin that prints its credentials: the block must redact them.
print("{name}: leaked secret=" + os.environ.get("TAP_QUICKBOOKS_BACKFILL_CLIENT_SECRET", ""),
      flush=True)
print("{name}: leaked password=" + os.environ.get("PGPASSWORD", ""), file=sys.stderr,
      flush=True)
gate = os.environ.get("FAKE_{upper}_GATE")
if gate:
    print("{name}: waiting for " + gate, flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
fail_on = os.environ.get("FAKE_{upper}_FAIL_ON_CALL")
calls = sum(1 for _ in record.open())
code = int(os.environ.get("FAKE_{upper}_EXIT", "0"))
if fail_on and calls == int(fail_on):
    code = 1
print("{name}: exiting with " + str(code), flush=True)
sys.exit(code)
'''


@dataclass
class FakeProject:
    """Project folder whose `meltano` and `qbo-backfill` only record their calls."""

    root: Path
    record_dir: Path

    def calls(self, tool: str) -> list[dict]:
        """Return the recorded calls of `meltano` or `qbo-backfill`, oldest first."""
        path = self.record_dir / f"{tool}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def env(self, **exits: str) -> dict[str, str]:
        """Environment for `mage run` that points the fakes at the record folder."""
        return {"FAKE_TOOL_RECORD_DIR": str(self.record_dir), **exits}


@pytest.fixture(name="fake_project")
def fake_project_fixture(tmp_path: Path) -> FakeProject:
    """Build a project root with fake `meltano` and `qbo-backfill` executables."""
    root = tmp_path / "fake-project"
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (root / "meltano.yml").write_text("version: 1\n")
    for name in ("meltano", "qbo-backfill"):
        script = bin_dir / name
        script.write_text(
            FAKE_TOOL.format(
                python=sys.executable, name=name, upper=name.upper().replace("-", "_")
            )
        )
        script.chmod(0o755)
    record_dir = tmp_path / "fake-calls"
    record_dir.mkdir()
    return FakeProject(root=root, record_dir=record_dir)
