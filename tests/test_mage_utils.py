"""Unit tests of the Mage project's shared module (`orchestration/mage/utils`).

They import the module from the project's environment: it needs only the
standard library, except `one_time_trigger`, which needs ruamel.yaml (there in
both environments).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "orchestration"))

from mage.utils import backfill_request as br  # noqa: E402
from mage.utils.backfill_secrets import (  # noqa: E402
    SECRET_NAMES,
    MissingSecretError,
    read_backfill_secrets,
)
from mage.utils.meltano_process import (  # noqa: E402
    Redactor,
    build_subprocess_env,
    meltano_run_argv,
    stream_subprocess,
    validate_argv,
)
from mage.utils.one_time_trigger import (  # noqa: E402
    TriggerFileError,
    set_trigger_status_in_file,
)
from mage.utils.window_chain import WindowLedger, run_window_chain  # noqa: E402

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SECRETS = {
    "qb_client_id": "cid-123",
    "qb_secret_id": "csecret-456",
    "qb_refresh_token": "rtoken-789",
    "pg_host": "db.internal",
    "pg_port": "5433",
    "pg_user": "loader",
    "pg_password": "pw-abc",
    "pg_db": "warehouse",
}


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def build(variables: dict, pipeline: str = "qb_invoices_backfill") -> br.BackfillRequest:
    return br.build_backfill_request(
        variables,
        pipeline_uuid=pipeline,
        mage_project_path="/srv/app/orchestration/mage",
        now=NOW,
    )


@pytest.fixture(autouse=True)
def _no_setting_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in br.SETTINGS.values():
        monkeypatch.delenv(setting.env_var, raising=False)
    monkeypatch.delenv("QBO_EMULATOR_PORT", raising=False)


# Dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", utc(2024, 1, 1)),
        ("2024-01-01T05:30:00", utc(2024, 1, 1, 5, 30)),
        ("2024-01-01T05:30:00Z", utc(2024, 1, 1, 5, 30)),
        ("2024-01-01T05:30:00+00:00", utc(2024, 1, 1, 5, 30)),
    ],
)
def test_utc_instant_accepted_forms(text: str, expected: datetime) -> None:
    assert br.parse_utc_instant("fecha_inicio", text) == expected


def test_utc_instant_rejects_local_offset_with_utc_equivalent() -> None:
    with pytest.raises(br.BackfillRequestError) as caught:
        br.parse_utc_instant("fecha_inicio", "2024-01-01T00:00:00-05:00")
    message = str(caught.value)
    assert "fecha_inicio" in message
    assert "not in UTC (offset -05:00)" in message
    assert "2024-01-01T05:00:00Z" in message


@pytest.mark.parametrize("value", ["2024-13-01", "yesterday", "01/02/2024"])
def test_utc_instant_rejects_non_iso(value: str) -> None:
    with pytest.raises(br.BackfillRequestError, match="not an ISO 8601"):
        br.parse_utc_instant("fecha_fin", value)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_utc_instant_missing_names_variable(value: object) -> None:
    with pytest.raises(br.BackfillRequestError, match="fecha_fin is missing"):
        br.parse_utc_instant("fecha_fin", value)


def test_utc_instant_rejects_number() -> None:
    with pytest.raises(br.BackfillRequestError, match="must be an ISO 8601 string"):
        br.parse_utc_instant("fecha_inicio", 20240101)


def test_request_rejects_reversed_range() -> None:
    with pytest.raises(br.BackfillRequestError, match="must be before fecha_fin"):
        build({"fecha_inicio": "2024-02-01", "fecha_fin": "2024-01-01"})


def test_request_rejects_empty_range() -> None:
    with pytest.raises(br.BackfillRequestError, match="must be before fecha_fin"):
        build({"fecha_inicio": "2024-02-01", "fecha_fin": "2024-02-01T00:00:00Z"})


def test_request_rejects_future_end() -> None:
    with pytest.raises(br.BackfillRequestError, match="is in the future"):
        build({"fecha_inicio": "2026-12-01", "fecha_fin": "2026-12-05"})


def test_request_rejects_unknown_pipeline() -> None:
    with pytest.raises(br.BackfillRequestError, match="has no QBO entity"):
        build({"fecha_inicio": "2024-01-01", "fecha_fin": "2024-02-01"}, "qb_bills")


# Settings


def test_request_defaults() -> None:
    request = build({"fecha_inicio": "2024-01-01", "fecha_fin": "2024-02-01"}, "qb_items_backfill")
    assert request.entity == "items"
    assert request.meltano_job == "qb_items_backfill"
    assert request.meltano_environment == "dev"
    assert request.project_root == Path("/srv/app")
    assert request.chain == (br.UtcWindow(utc(2024, 1, 1), utc(2024, 2, 1)),)
    assert request.full_refresh is False
    assert request.qbo_realm_id == br.EMULATOR_REALM_ID
    assert request.qbo_emulator_url == "http://127.0.0.1:8765"


def test_setting_variable_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QBO_BACKFILL_MELTANO_ENVIRONMENT", "prod")
    monkeypatch.setenv("QBO_REALM_ID", "111")
    request = build(
        {"fecha_inicio": "2024-01-01", "fecha_fin": "2024-02-01", "qbo_realm_id": "222"}
    )
    assert request.meltano_environment == "prod"
    assert request.qbo_realm_id == "222"


def test_prod_without_realm_is_rejected() -> None:
    with pytest.raises(br.BackfillRequestError, match="QBO_REALM_ID"):
        build(
            {
                "fecha_inicio": "2024-01-01",
                "fecha_fin": "2024-02-01",
                "meltano_environment": "prod",
            }
        )


def test_prod_never_points_at_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QBO_EMULATOR_URL", "http://qbo-emulator:8765")
    request = build(
        {
            "fecha_inicio": "2024-01-01",
            "fecha_fin": "2024-02-01",
            "meltano_environment": "prod",
            "qbo_realm_id": "42",
        }
    )
    assert request.qbo_emulator_url is None


def test_emulator_port_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QBO_EMULATOR_PORT", "9999")
    request = build({"fecha_inicio": "2024-01-01", "fecha_fin": "2024-02-01"})
    assert request.qbo_emulator_url == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("chain_window_days", "-1", "out of range"),
        ("chain_window_days", "weekly", "not a whole number"),
        ("full_refresh", "maybe", "not a boolean"),
        ("tap_window_size", "7 days", "tap_window_size"),
        ("tap_window_size", "0d", "tap_window_size"),
        ("qbo_emulator_url", "127.0.0.1:8765", "not an http"),
    ],
)
def test_invalid_setting_is_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(br.BackfillRequestError, match=message):
        build({"fecha_inicio": "2024-01-01", "fecha_fin": "2024-02-01", variable: value})


def test_request_round_trips_through_block_output() -> None:
    request = build(
        {
            "fecha_inicio": "2024-01-01",
            "fecha_fin": "2024-03-01",
            "chain_window_days": 10,
            "tap_window_size": "12h",
            "full_refresh": "true",
        }
    )
    assert br.BackfillRequest.from_output(request.to_output()) == request


# Windows


def test_chain_windows_contiguous_to_range_end() -> None:
    request = build(
        {"fecha_inicio": "2024-01-01", "fecha_fin": "2024-03-15", "chain_window_days": 30}
    )
    assert [(w.start, w.end) for w in request.chain] == [
        (utc(2024, 1, 1), utc(2024, 1, 31)),
        (utc(2024, 1, 31), utc(2024, 3, 1)),
        (utc(2024, 3, 1), utc(2024, 3, 15)),
    ]


def test_chain_window_larger_than_range_is_one_window() -> None:
    request = build(
        {"fecha_inicio": "2024-01-01", "fecha_fin": "2024-01-03", "chain_window_days": 30}
    )
    assert request.chain == (br.UtcWindow(utc(2024, 1, 1), utc(2024, 1, 3)),)


# Secrets


def test_missing_secrets_are_named_without_values() -> None:
    present = {**SECRETS, "qb_refresh_token": None, "pg_password": "  "}
    with pytest.raises(MissingSecretError) as caught:
        read_backfill_secrets(present.get)
    message = str(caught.value)
    assert "qb_refresh_token" in message
    assert "pg_password" in message
    assert "csecret-456" not in message
    assert "qb_client_id" not in message


def test_invalid_pg_port_is_rejected() -> None:
    with pytest.raises(MissingSecretError, match="pg_port"):
        read_backfill_secrets({**SECRETS, "pg_port": "54x2"}.get)


def test_secrets_repr_shows_no_value() -> None:
    secrets = read_backfill_secrets(SECRETS.get)
    text = repr(secrets)
    for value in SECRETS.values():
        assert value not in text


def test_credential_values_include_basic_auth_form() -> None:
    secrets = read_backfill_secrets(SECRETS.get)
    basic = base64.b64encode(b"cid-123:csecret-456").decode()
    assert set(secrets.credential_values()) == {
        "cid-123",
        "csecret-456",
        "rtoken-789",
        "pw-abc",
        basic,
    }


def test_every_secret_name_is_read() -> None:
    requested: list[str] = []

    def reader(name: str) -> str:
        requested.append(name)
        return SECRETS[name]

    read_backfill_secrets(reader)
    assert requested == list(SECRET_NAMES)


# Subprocess environment and command lines


def test_subprocess_env_maps_secrets_and_dates() -> None:
    request = build(
        {"fecha_inicio": "2024-01-01", "fecha_fin": "2024-02-01", "tap_window_size": "1d"},
        "qb_customers_backfill",
    )
    secrets = read_backfill_secrets(SECRETS.get)
    env = build_subprocess_env(
        request,
        secrets,
        request.chain[0],
        base_env={"PATH": "/usr/bin", "PYTHONPATH": "/mage", "VIRTUAL_ENV": "/mage-venv"},
    )
    assert env["TAP_QUICKBOOKS_BACKFILL_CLIENT_ID"] == "cid-123"
    assert env["TAP_QUICKBOOKS_BACKFILL_CLIENT_SECRET"] == "csecret-456"
    assert env["TAP_QUICKBOOKS_BACKFILL_REFRESH_TOKEN"] == "rtoken-789"
    assert env["TAP_QUICKBOOKS_BACKFILL_REALM_ID"] == br.EMULATOR_REALM_ID
    assert env["TAP_QUICKBOOKS_BACKFILL_API_BASE_URL"] == "http://127.0.0.1:8765"
    assert env["TAP_QUICKBOOKS_BACKFILL_TOKEN_URL"] == (
        "http://127.0.0.1:8765/oauth2/v1/tokens/bearer"
    )
    assert env["TAP_QUICKBOOKS_BACKFILL_WINDOW_SIZE"] == "1d"
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"]) == ("db.internal", "5433", "loader")
    assert (env["PGPASSWORD"], env["PGDATABASE"]) == ("pw-abc", "warehouse")
    assert env["TAP_QB_CUSTOMERS_START_DATE"] == "2024-01-01T00:00:00Z"
    assert env["TAP_QB_CUSTOMERS_END_DATE"] == "2024-02-01T00:00:00Z"
    assert "PYTHONPATH" not in env
    assert env["VIRTUAL_ENV"] == "/srv/app/.venv"
    assert env["PATH"].startswith("/srv/app/.venv/bin:")


def test_meltano_argv_has_environment_state_suffix_and_job() -> None:
    request = build(
        {"fecha_inicio": "2024-01-01", "fecha_fin": "2024-02-01", "full_refresh": True}
    )
    argv = meltano_run_argv(request, request.chain[0], "run-1")
    assert argv == [
        "/srv/app/.venv/bin/meltano",
        "--environment",
        "dev",
        "run",
        "--state-id-suffix",
        "mage-20240101T000000Z-20240201T000000Z",
        "--run-id",
        "run-1",
        "--full-refresh",
        "qb_invoices_backfill",
    ]


def test_validate_argv_covers_whole_range() -> None:
    request = build({"fecha_inicio": "2024-01-01", "fecha_fin": "2024-02-01"}, "qb_items_backfill")
    assert validate_argv(request, request.window) == [
        "/srv/app/.venv/bin/qbo-backfill",
        "validate",
        "--environment",
        "dev",
        "--entity",
        "items",
        "--start",
        "2024-01-01T00:00:00Z",
        "--end",
        "2024-02-01T00:00:00Z",
    ]


# Redaction and streaming


def test_redactor_replaces_longest_value_first() -> None:
    redact = Redactor(["abc", "abcdef", ""])
    assert redact("token abcdef and abc") == "token [redacted] and [redacted]"


def test_stream_delivers_lines_before_process_ends(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = (
        "import os, sys, time\n"
        "print('first', flush=True)\n"
        "print('to stderr', file=sys.stderr, flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
        "print('secret-xyz done', flush=True)\n"
        "sys.exit(3)\n"
    )
    seen: list[tuple[float, str]] = []

    def log_line(line: str) -> None:
        seen.append((time.monotonic(), line))
        if line == "to stderr":
            # Open the gate only once the earlier lines arrived; without
            # streaming the child would wait forever and the test time out.
            gate.touch()

    done = threading.Event()
    result: list = []

    def run() -> None:
        result.append(
            stream_subprocess(
                [sys.executable, "-c", script],
                env={"PATH": "/usr/bin"},
                cwd=tmp_path,
                log_line=log_line,
                redactor=Redactor(["secret-xyz"]),
            )
        )
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(timeout=30), f"streaming stalled after {seen!r}"
    assert [line for _, line in seen] == ["first", "to stderr", "[redacted] done"]
    assert result[0].exit_code == 3
    assert result[0].line_count == 3


# Chain of windows


def _chain_request(tmp_path: Path, days: int = 10) -> br.BackfillRequest:
    root = tmp_path / "project"
    (root / ".venv" / "bin").mkdir(parents=True)
    return build(
        {
            "fecha_inicio": "2024-01-01",
            "fecha_fin": "2024-01-31",
            "chain_window_days": days,
            "project_root": str(root),
        }
    )


def _fake_meltano(request: br.BackfillRequest, fail_on_window: str | None) -> Path:
    calls = request.project_root / "calls.txt"
    script = request.meltano_executable
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "start = os.environ['TAP_QB_INVOICES_START_DATE']\n"
        f"open({str(calls)!r}, 'a').write(start + '\\n')\n"
        f"sys.exit(1 if start == {fail_on_window!r} else 0)\n"
    )
    script.chmod(0o755)
    return calls


def test_chain_stops_at_failed_window_and_resumes_there(tmp_path: Path) -> None:
    request = _chain_request(tmp_path)
    secrets = read_backfill_secrets(SECRETS.get)
    ledger_dir = tmp_path / "mage_data"
    calls = _fake_meltano(request, fail_on_window="2024-01-11T00:00:00Z")

    with pytest.raises(RuntimeError, match=r"window 2/3 .* exit code 1"):
        run_window_chain(
            request, secrets, WindowLedger.for_request(ledger_dir, request), lambda _: None
        )
    assert calls.read_text().split() == ["2024-01-01T00:00:00Z", "2024-01-11T00:00:00Z"]

    _fake_meltano(request, fail_on_window=None)
    lines: list[str] = []
    summary = run_window_chain(
        request, secrets, WindowLedger.for_request(ledger_dir, request), lines.append
    )
    assert calls.read_text().split() == [
        "2024-01-01T00:00:00Z",
        "2024-01-11T00:00:00Z",
        "2024-01-11T00:00:00Z",
        "2024-01-21T00:00:00Z",
    ]
    assert summary.skipped == ("20240101T000000Z-20240111T000000Z",)
    assert len(summary.extracted) == 2
    assert any("window 1/3" in line and "skipped" in line for line in lines)


def test_full_refresh_reruns_finished_windows(tmp_path: Path) -> None:
    request = _chain_request(tmp_path, days=15)
    secrets = read_backfill_secrets(SECRETS.get)
    calls = _fake_meltano(request, fail_on_window=None)
    ledger_dir = tmp_path / "mage_data"
    run_window_chain(
        request, secrets, WindowLedger.for_request(ledger_dir, request), lambda _: None
    )

    refresh = br.BackfillRequest.from_output({**request.to_output(), "full_refresh": True})
    summary = run_window_chain(
        refresh, secrets, WindowLedger.for_request(ledger_dir, refresh), lambda _: None
    )
    assert len(calls.read_text().split()) == 4
    assert summary.skipped == ()


def test_ledger_is_separate_per_range(tmp_path: Path) -> None:
    first = _chain_request(tmp_path)
    other = build(
        {
            "fecha_inicio": "2024-01-01",
            "fecha_fin": "2024-02-01",
            "chain_window_days": 10,
            "project_root": str(first.project_root),
        }
    )
    ledger = WindowLedger.for_request(tmp_path, first)
    ledger.mark_finished(first.chain[0], "run-1")
    assert WindowLedger.for_request(tmp_path, first).is_finished(first.chain[0])
    assert not WindowLedger.for_request(tmp_path, other).is_finished(other.chain[0])


# triggers.yaml


TRIGGERS_YAML = """\
# Comment kept after the edit.
triggers:
- name: items_backfill_once
  schedule_type: time
  schedule_interval: '@once'
  start_time: 2026-12-07 07:00:00+00:00  # 02:00 America/Guayaquil
  status: active
  variables:
    fecha_inicio: '2020-01-01T00:00:00Z'
- name: other
  schedule_type: time
  schedule_interval: '@daily'
  status: active
"""


def test_trigger_status_edit_keeps_comments_and_other_triggers(tmp_path: Path) -> None:
    path = tmp_path / "triggers.yaml"
    path.write_text(TRIGGERS_YAML)

    assert set_trigger_status_in_file(path, "items_backfill_once", "inactive") is True

    text = path.read_text()
    assert "# Comment kept after the edit." in text
    assert "# 02:00 America/Guayaquil" in text
    assert "'@once'" in text
    assert text.count("status: inactive") == 1
    assert text.count("status: active") == 1
    assert set_trigger_status_in_file(path, "items_backfill_once", "inactive") is False


def test_trigger_status_edit_unknown_name(tmp_path: Path) -> None:
    path = tmp_path / "triggers.yaml"
    path.write_text(TRIGGERS_YAML)
    with pytest.raises(TriggerFileError, match="no trigger named 'missing'"):
        set_trigger_status_in_file(path, "missing", "inactive")



def test_stream_child_dies_with_killed_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = tmp_path / "child.py"
    child.write_text(
        "import os, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    parent_script = (
        "import sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(ROOT / 'orchestration')!r})\n"
        "from mage.utils.meltano_process import Redactor, stream_subprocess\n"
        f"stream_subprocess([sys.executable, {str(child)!r}], env={{'PATH': '/usr/bin'}},\n"
        "                  cwd=Path('.'), log_line=print, redactor=Redactor([]))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_script], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.02)
        child_pid = int(pid_file.read_text())
    finally:
        # SIGKILL, as Mage cancels a block: no handler in the parent runs.
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)

    deadline = time.monotonic() + 10
    while _process_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    survived = _process_alive(child_pid)
    if survived:
        os.kill(child_pid, signal.SIGKILL)
    assert not survived, "the child outlived its killed parent"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child that exited but was not yet reaped by init counts as gone.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"
