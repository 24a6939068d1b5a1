"""`mage run` of the backfill pipelines with stand-ins for Meltano and the validation.

The project root given to the pipelines contains fake `meltano` and
`qbo-backfill` executables that record their command line and environment,
print a few lines (two of them with credentials) and exit as the test says.
So these tests check Mage's side alone: variables, secrets, windows,
streaming, failures and redaction, in Mage's own environment.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from mage_fixtures import (
    CREDENTIAL_SECRETS,
    MAGE_BIN,
    PIPELINES,
    ROOT,
    TEST_SECRETS,
    FakeProject,
    MageSandbox,
    fake_project_fixture,  # noqa: F401 - pytest fixture `fake_project`
    files_containing,
    mage_process_env,
    mage_run,
    make_mage_sandbox,
)

pytestmark = pytest.mark.timeout(600)

CREDENTIALS = [TEST_SECRETS[name] for name in CREDENTIAL_SECRETS]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> MageSandbox:
    """One Mage project copy with every secret, shared by the tests of this module."""
    sandbox = make_mage_sandbox(tmp_path_factory.mktemp("mage"))
    sandbox.create_secrets(TEST_SECRETS)
    return sandbox


def run_vars(fake: FakeProject, start: str, end: str, **extra: object) -> dict[str, object]:
    return {"fecha_inicio": start, "fecha_fin": end, "project_root": str(fake.root), **extra}


def test_chain_runs_meltano_per_window_then_validates(
    sandbox: MageSandbox, fake_project: FakeProject
) -> None:
    result = mage_run(
        "qb_customers_backfill",
        run_vars(fake_project, "2024-01-01", "2024-02-15T00:00:00Z", chain_window_days=30),
        project=sandbox.project,
        data_dir=sandbox.data_dir,
        extra_env=fake_project.env(),
    )
    assert result.returncode == 0, result.output

    meltano_calls = fake_project.calls("meltano")
    assert [call["argv"][:6] for call in meltano_calls] == [
        ["--environment", "dev", "run", "--state-id-suffix",
         "mage-20240101T000000Z-20240131T000000Z", "--run-id"],
        ["--environment", "dev", "run", "--state-id-suffix",
         "mage-20240131T000000Z-20240215T000000Z", "--run-id"],
    ]
    assert all(call["argv"][-1] == "qb_customers_backfill" for call in meltano_calls)
    assert all(call["cwd"] == str(fake_project.root) for call in meltano_calls)
    first_env = meltano_calls[0]["env"]
    assert first_env["TAP_QB_CUSTOMERS_START_DATE"] == "2024-01-01T00:00:00Z"
    assert first_env["TAP_QB_CUSTOMERS_END_DATE"] == "2024-01-31T00:00:00Z"
    assert first_env["TAP_QUICKBOOKS_BACKFILL_CLIENT_ID"] == TEST_SECRETS["qb_client_id"]
    assert first_env["TAP_QUICKBOOKS_BACKFILL_CLIENT_SECRET"] == TEST_SECRETS["qb_secret_id"]
    assert first_env["TAP_QUICKBOOKS_BACKFILL_REFRESH_TOKEN"] == (
        TEST_SECRETS["qb_refresh_token"]
    )
    assert first_env["PGPASSWORD"] == TEST_SECRETS["pg_password"]
    assert first_env["PGDATABASE"] == TEST_SECRETS["pg_db"]
    assert "PYTHONPATH" not in first_env

    validate_calls = fake_project.calls("qbo-backfill")
    assert [call["argv"] for call in validate_calls] == [
        ["validate", "--environment", "dev", "--entity", "customers",
         "--start", "2024-01-01T00:00:00Z", "--end", "2024-02-15T00:00:00Z"],
    ]

    assert "customers window 1/2" in result.output
    assert "meltano: starting" in result.output
    assert "meltano: leaked secret=[redacted]" in result.output
    assert "meltano: leaked password=[redacted]" in result.output
    assert "run started by hand, not by a trigger" in result.output

    for value in CREDENTIALS:
        assert value not in result.output
    # Mage's database stores the secrets encrypted, so no file shows them in clear.
    assert files_containing(sandbox.data_dir, CREDENTIALS) == {}
    assert files_containing(sandbox.project, CREDENTIALS) == {}


def test_failed_window_fails_run_and_rerun_resumes(
    sandbox: MageSandbox, fake_project: FakeProject
) -> None:
    variables = run_vars(fake_project, "2022-01-01", "2022-01-31", chain_window_days=10)
    failed = mage_run(
        "qb_items_backfill",
        variables,
        project=sandbox.project,
        data_dir=sandbox.data_dir,
        extra_env=fake_project.env(FAKE_MELTANO_FAIL_ON_CALL="2"),
    )
    assert failed.returncode != 0
    assert "SubprocessFailedError: items window 2/3" in failed.flat_output
    assert "failed with exit code 1" in failed.flat_output
    assert fake_project.calls("qbo-backfill") == []

    resumed = mage_run(
        "qb_items_backfill",
        variables,
        project=sandbox.project,
        data_dir=sandbox.data_dir,
        extra_env=fake_project.env(),
    )
    assert resumed.returncode == 0, resumed.output
    starts = [call["env"]["TAP_QB_ITEMS_START_DATE"] for call in fake_project.calls("meltano")]
    assert starts == [
        "2022-01-01T00:00:00Z",
        "2022-01-11T00:00:00Z",
        "2022-01-11T00:00:00Z",
        "2022-01-21T00:00:00Z",
    ]
    assert "items window 1/3" in resumed.output
    assert "already finished in an earlier run, skipped" in resumed.output


def test_volumetry_mismatch_fails_run(sandbox: MageSandbox, fake_project: FakeProject) -> None:
    result = mage_run(
        "qb_items_backfill",
        run_vars(fake_project, "2021-01-01", "2021-02-01"),
        project=sandbox.project,
        data_dir=sandbox.data_dir,
        extra_env=fake_project.env(FAKE_QBO_BACKFILL_EXIT="1"),
    )
    assert result.returncode != 0
    assert "volumetry check of items [2021-01-01T00:00:00Z, 2021-02-01T00:00:00Z)" in (
        result.flat_output
    )
    assert "Postgres and QBO differ" in result.flat_output
    assert "one-time trigger" not in result.output


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"fecha_inicio": "2024-02-30", "fecha_fin": "2024-03-01"},
            "pipeline variable fecha_inicio='2024-02-30' is not an ISO 8601 date or time",
        ),
        (
            {"fecha_inicio": "2024-03-01T00:00:00-05:00", "fecha_fin": "2024-04-01"},
            "pipeline variable fecha_inicio='2024-03-01T00:00:00-05:00' is not in UTC "
            "(offset -05:00): pass its UTC equivalent 2024-03-01T05:00:00Z instead",
        ),
    ],
    ids=["invalid-day", "local-offset"],
)
def test_wrong_date_fails_before_meltano(
    sandbox: MageSandbox,
    fake_project: FakeProject,
    variables: dict[str, str],
    message: str,
) -> None:
    result = mage_run(
        "qb_invoices_backfill",
        {**variables, "project_root": str(fake_project.root)},
        project=sandbox.project,
        data_dir=sandbox.data_dir,
        extra_env=fake_project.env(),
    )
    assert result.returncode != 0
    assert f"BackfillRequestError: {message}" in result.flat_output
    assert fake_project.calls("meltano") == []


def test_missing_secret_fails_naming_it(tmp_path: Path, fake_project: FakeProject) -> None:
    sandbox = make_mage_sandbox(tmp_path / "sandbox")
    sandbox.create_secrets(
        {name: value for name, value in TEST_SECRETS.items() if name != "qb_refresh_token"}
    )
    result = mage_run(
        "qb_customers_backfill",
        run_vars(fake_project, "2024-01-01", "2024-02-01"),
        project=sandbox.project,
        data_dir=sandbox.data_dir,
        extra_env=fake_project.env(),
    )
    assert result.returncode != 0
    assert (
        "MissingSecretError: Mage secret qb_refresh_token is missing or empty"
        in result.flat_output
    )
    assert fake_project.calls("meltano") == []


def test_meltano_lines_reach_mage_while_it_runs(
    sandbox: MageSandbox, fake_project: FakeProject, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    process = subprocess.Popen(
        [
            str(MAGE_BIN),
            "run",
            str(sandbox.project),
            PIPELINES[0],
            "--runtime-vars",
            json.dumps(run_vars(fake_project, "2020-01-01", "2020-01-02")),
        ],
        cwd=ROOT,
        env=mage_process_env(
            sandbox.data_dir, fake_project.env(FAKE_MELTANO_GATE=str(gate))
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 300
        for line in process.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("meltano: waiting for"):
                # Meltano is still running (it waits for the gate), yet its
                # earlier lines are already in Mage's output.
                assert "meltano: starting" in seen
                gate.touch()
            assert time.monotonic() < deadline, "mage run took too long"
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert gate.exists(), f"Meltano's lines never arrived while it ran: {seen[-20:]}"
    assert returncode == 0, "\n".join(seen)
