"""Smoke test of the benchmark: ``python -m bench`` on a tiny company.

The benchmark's figures depend on the machine, so only the shape of the result
file and the record counts are checked, never the speeds.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, PostgresDatabase

pytestmark = pytest.mark.e2e

SMOKE_TIMEOUT_SECONDS = 600
INVOICES = 120


def _bench_environment(database: PostgresDatabase) -> dict[str, str]:
    admin = database.admin
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("PG", "QBO_", "MELTANO_", "TAP_", "TARGET_"))
    }
    environment.update({
        "PGHOST": admin.host,
        "PGPORT": str(admin.port),
        "PGUSER": admin.user,
        "PGPASSWORD": admin.password or "",
    })
    return environment


def test_bench_writes_result_file(
    meltano_installed: Path, postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    suffix = secrets.token_hex(4)
    bench_database = f"qbo_bench_smoke_{suffix}"
    output_dir = tmp_path / "results"
    command = [
        sys.executable, "-m", "bench",
        "--entities", "invoices,items",
        "--invoices", str(INVOICES), "--customers", "10", "--items", "5",
        "--limited-invoices", str(INVOICES), "--limited-customers", "10",
        "--limited-items", "5", "--limited-page-size", "20",
        "--latency-base-ms", "5", "--latency-per-record-ms", "0",
        "--database", bench_database, "--loader-role", f"qbo_bench_smoke_{suffix}",
        "--output-dir", str(output_dir), "--keep-work-dir",
    ]
    completed = subprocess.run(  # noqa: S603 - fixed command
        command, cwd=PROJECT_ROOT, env=_bench_environment(postgres_database),
        capture_output=True, text=True, timeout=SMOKE_TIMEOUT_SECONDS, check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    files = list(output_dir.glob("*.json"))
    assert len(files) == 1, files
    result = json.loads(files[0].read_text(encoding="utf-8"))

    local = result["scenarios"]["local"]
    invoices = local["entities"]["invoices"]
    assert list(local["entities"]) == ["invoices", "items"]
    assert invoices["records"] == INVOICES
    assert invoices["api"]["rows"] == INVOICES
    assert invoices["api"]["requests"] >= 2
    assert invoices["api"]["requests"] <= invoices["api"]["requests_allowed"]
    assert invoices["end_to_end"]["usage"]["tap"]["peak_rss_mib"] > 0
    assert invoices["end_to_end"]["usage"]["target"]["peak_rss_mib"] > 0
    assert invoices["end_to_end"]["usage"]["meltano"]["cpu_seconds"] > 0
    assert invoices["ceiling"]["records_per_second"] > 0
    assert invoices["tap_alone"]["records_per_second"] > 0
    assert invoices["ratio_to_ceiling"] > 0
    assert local["total"]["ratio_to_ceiling"] > 0
    # The emulator enforces no limit in the local scenario, and neither does the tap.
    assert local["tap_options"]["max_requests_per_second"] >= 1000  # noqa: PLR2004
    # With two entities the total comes from one run of both and one load of both.
    assert local["total"]["entities_in_one_run"] is True
    assert local["total"]["ceiling_one_after_another_seconds"] > 0
    assert local["total"]["end_to_end_seconds"] > 0
    assert local["total"]["end_to_end_one_after_another_seconds"] == pytest.approx(
        sum(local["entities"][entity]["end_to_end"]["seconds"] for entity in ("invoices", "items")),
        abs=0.02,
    )
    assert "total: one meltano run of all entities" in completed.stdout

    limited = result["scenarios"]["limited"]
    assert limited["records"] == INVOICES + 5
    assert limited["pages_needed"] == INVOICES // 20 + 1
    assert limited["bound_seconds"] == pytest.approx(60 * limited["pages_needed"] / 500)
    assert limited["api"]["throttled"] == 0
    assert limited["api"]["throttled_by"] == {}
    assert limited["tap_options"]["window_concurrency"] == 30  # noqa: PLR2004
    assert limited["tap_options"]["max_requests_per_second"] == 9  # noqa: PLR2004
    assert "500 requests/min, 10 requests/s, 10 in flight" in limited["emulator"]
    # The two extractors ran at once and shared QBO's 10 requests in flight. The
    # benchmark fails unless both raw tables end with all their rows. The process
    # monitor samples every 0.1 s and can miss the item tap's short life.
    assert limited["entities_together"] is True
    assert limited["shared_in_flight_cap"] == 10  # noqa: PLR2004
    assert limited["api"]["requests_by_entity"]["items"] >= 1
    assert limited["api"]["requests_by_entity"]["invoices"] >= INVOICES // 20
    assert limited["usage"]["tap"]["processes"] >= 1
    # The limited run's request log stays in the kept work folder, one line per
    # request, each naming the limit behind a 429 (none here).
    folder = re.search(r"bench work folder (\S+)", completed.stdout + completed.stderr)
    assert folder is not None
    work_dir = Path(folder.group(1))
    log_text = (work_dir / "requests-limited.jsonl").read_text(encoding="utf-8")
    shutil.rmtree(work_dir)
    entries = [json.loads(line) for line in log_text.splitlines()]
    assert len(entries) == limited["api"]["requests"]
    assert {entry["throttled_by"] for entry in entries} == {None}
    timeline = limited["timeline"]
    assert timeline["requests_span_seconds"] > 0
    assert timeline["most_requests_in_60_seconds"] <= 500

    names = [check["name"] for check in result["targets"]]
    assert "limited: wall time / rate-limit bound" in names
    assert "local: end to end / target-postgres alone" in names
    assert "Local scenario" in completed.stdout
    assert "Limited scenario" in completed.stdout

    with postgres_database.admin.connect(database="postgres") as connection:
        left = connection.execute(
            "select 1 from pg_database where datname = %s", [bench_database]
        ).fetchone()
    assert left is None
