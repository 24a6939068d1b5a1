"""Command line of the benchmark: ``python -m bench`` (``make bench``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import psutil

from bench.meltano_runs import PROJECT_ROOT, TARGET_EXECUTABLE, CommandFailedError, MeltanoRunner
from bench.report import evaluate_targets, render_table
from bench.scenarios import ENTITIES, Company, LimitedScenario, LocalScenario, TapOptions
from bench.services import EmulatorLimits, prepare_database

LOGGER = logging.getLogger("bench")
# The tap's request limits in the local scenario, far above anything a run reaches.
LOCAL_REQUESTS_PER_MINUTE = 600_000
LOCAL_REQUESTS_PER_SECOND = 10_000


def _parse_entities(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in ENTITIES]
    if unknown or not names:
        msg = f"unknown entity {', '.join(unknown) or '(none)'}; use {', '.join(ENTITIES)}"
        raise click.BadParameter(msg)
    return names


def machine_facts() -> dict[str, Any]:
    """Describe the machine a result was measured on."""
    model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


@click.command()
@click.option("--invoices", default=100_000, show_default=True,
              help="Invoices of the local company.")
@click.option("--customers", default=10_000, show_default=True,
              help="Customers of the local company.")
@click.option("--items", default=1_000, show_default=True, help="Items of the local company.")
@click.option("--entities", default="invoices,customers,items", show_default=True,
              callback=lambda _ctx, _param, value: _parse_entities(value),
              help="Comma-separated entities to extract, in both scenarios.")
@click.option("--window-size", default="30d", show_default=True,
              help="Window size of the local scenario (m, h, d or w).")
@click.option("--window-concurrency", default=1, show_default=True,
              help="Windows fetched at once in the local scenario.")
@click.option("--ceiling/--no-ceiling", default=True, show_default=True,
              help="Measure the tap alone and target-postgres alone from a file.")
@click.option("--limited/--no-limited", default=True, show_default=True,
              help="Run the scenario with QBO's limits and latency.")
@click.option("--limited-invoices", default=150_000, show_default=True,
              help="Invoices of the limited scenario's company.")
@click.option("--limited-customers", default=3_000, show_default=True,
              help="Customers of the limited scenario's company.")
@click.option("--limited-items", default=500, show_default=True,
              help="Items of the limited scenario's company.")
@click.option("--limited-page-size", default=100, show_default=True,
              help="MAXRESULTS per page in the limited scenario; small pages make the "
                   "request limit, not the local pipeline, the bottleneck.")
@click.option("--limited-window-size", default="30d", show_default=True,
              help="Invoice window size of the limited scenario: each window costs a "
                   "COUNT(*) query and half a page on average, and 25 windows still keep "
                   "10 in flight until near the end.")
@click.option("--limited-name-list-window-size", default="90d", show_default=True,
              help="Customer and Item window size of the limited scenario: each window "
                   "costs a COUNT(*) query, and these entities are small.")
@click.option("--limited-together/--limited-one-after-another", default=True,
              show_default=True,
              help="Run the limited scenario's three extractors at once, sharing the "
                   "company's limits, or one after another in one meltano run.")
@click.option("--limited-window-concurrency", default=30, show_default=True,
              help="Windows fetched at once in the limited scenario: more than the "
                   "invoice windows, so that all of them share the requests in flight "
                   "and end together instead of leaving the last few to run alone.")
@click.option("--limited-tap-requests-per-minute", default=490, show_default=True,
              help="The tap's own request limit per minute in the limited scenario, "
                   "2 % under the emulator's.")
@click.option("--limited-tap-requests-per-second", default=9, show_default=True,
              help="The tap's own limit per second in the limited scenario: one "
                   "request per 111 ms, under the emulator's 10 per second, so that "
                   "the limit per minute binds.")
@click.option("--requests-per-minute", default=500, show_default=True,
              help="Requests per minute the emulator allows in the limited scenario.")
@click.option("--requests-per-second", default=10, show_default=True,
              help="Requests per second the emulator allows in the limited scenario.")
@click.option("--max-in-flight", default=10, show_default=True,
              help="Requests in flight the emulator allows in the limited scenario.")
@click.option("--latency-base-ms", default=500.0, show_default=True,
              help="Latency added to every response in the limited scenario, ms.")
@click.option("--latency-per-record-ms", default=1.0, show_default=True,
              help="Latency added per returned record in the limited scenario, ms.")
@click.option("--database", default="qbo_bench", show_default=True,
              help="Database created for the benchmark on PGHOST; emptied before loads.")
@click.option("--loader-role", default="qbo_bench_loader", show_default=True,
              help="Role target-postgres connects as; created when missing.")
@click.option("--keep-database/--drop-database", default=False, show_default=True,
              help="Keep the benchmark database at the end.")
@click.option("--output-dir", default=str(PROJECT_ROOT / "bench-results"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the result files (<UTC timestamp>.json).")
@click.option("--keep-work-dir", is_flag=True,
              help="Keep the folder of logs and message files (it contains the loader "
                   "password in target-config.json).")
@click.option("--strict", is_flag=True, help="Exit with status 1 when a target is missed.")
def main(**options: Any) -> None:  # noqa: ANN401
    """Benchmark the backfill end to end: meltano run against the emulator into Postgres.

    Needs PGHOST and an administrator (QBO_PG_ADMIN_USER or PGUSER) that may create a
    database and a role; `make bench` starts the embedded server when PGHOST is unset.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench %(message)s")
    if not TARGET_EXECUTABLE.exists():
        raise click.ClickException("target-postgres is not installed: run `make setup`")

    started = dt.datetime.now(dt.UTC)
    output_dir: Path = options["output_dir"]
    output_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="qbo-bench-"))
    LOGGER.info("work folder %s", work_dir)

    result: dict[str, Any] = {
        "started_at_utc": started.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "options": {key: str(value) if isinstance(value, Path) else value
                    for key, value in options.items()},
        "scenarios": {},
    }
    database = prepare_database(options["database"], options["loader_role"])
    failed: str | None = None
    try:
        runner = MeltanoRunner(work_dir=work_dir, environment=database.loader_environment())
        _run_scenarios(options, runner, database, work_dir, result)
    except CommandFailedError as error:
        failed = str(error)
        result["error"] = failed
    finally:
        if not options["keep_database"]:
            database.drop()
        if not options["keep_work_dir"]:
            shutil.rmtree(work_dir, ignore_errors=True)

    result["finished_at_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result["targets"] = evaluate_targets(result)
    path = output_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    click.echo(render_table(result))
    click.echo(f"result file: {path}")
    if failed:
        click.echo(f"benchmark failed: {failed}", err=True)
        sys.exit(1)
    if options["strict"] and not all(check["met"] for check in result["targets"]):
        sys.exit(1)


def _run_scenarios(
    options: dict[str, Any],
    runner: MeltanoRunner,
    database: Any,  # noqa: ANN401 - BenchDatabase
    work_dir: Path,
    result: dict[str, Any],
) -> None:
    local = LocalScenario(
        runner=runner,
        database=database,
        company=Company(options["invoices"], options["customers"], options["items"]),
        tap=TapOptions(
            window_size=options["window_size"],
            page_size=1000,
            window_concurrency=options["window_concurrency"],
            # The emulator enforces no limit here, so the tap's own limits are lifted
            # too: at QBO's 8 per second, spacing alone took 18 s of the tap's 20 s
            # for 142 requests, and most of the small entities' time.
            max_requests_per_minute=LOCAL_REQUESTS_PER_MINUTE,
            max_requests_per_second=LOCAL_REQUESTS_PER_SECOND,
            max_concurrent_requests=10,
            # The local run keeps both cores busy, and target-postgres is the slower
            # side, so the tap yields the CPU to it.
            cpu_niceness=10,
        ),
        work_dir=work_dir,
        measure_ceiling=options["ceiling"],
        entities=options["entities"],
    )
    result["scenarios"]["local"] = local.run()

    if not options["limited"]:
        return
    limited = LimitedScenario(
        runner=runner,
        database=database,
        company=Company(
            options["limited_invoices"], options["limited_customers"],
            options["limited_items"],
        ),
        tap=TapOptions(
            window_size=options["limited_window_size"],
            name_list_window_size=options["limited_name_list_window_size"],
            page_size=options["limited_page_size"],
            window_concurrency=options["limited_window_concurrency"],
            max_requests_per_minute=options["limited_tap_requests_per_minute"],
            max_requests_per_second=options["limited_tap_requests_per_second"],
            max_concurrent_requests=options["max_in_flight"],
        ),
        limits=EmulatorLimits(
            requests_per_minute=options["requests_per_minute"],
            requests_per_second=options["requests_per_second"],
            max_concurrent=options["max_in_flight"],
            latency_base_ms=options["latency_base_ms"],
            latency_per_record_ms=options["latency_per_record_ms"],
        ),
        work_dir=work_dir,
        entities=options["entities"],
        together=options["limited_together"],
    )
    result["scenarios"]["limited"] = limited.run()
