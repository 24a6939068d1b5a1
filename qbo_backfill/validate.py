"""``qbo-backfill validate``: prove that a backfilled range is complete.

For each entity, the windows recorded in ``raw.qb_extract_windows`` for the
range are checked for gaps and overlaps, and each window's raw rows are
compared with QBO's count asked now, the count recorded at extraction and the
distinct ids. Differences are classified by QBO's ``LastUpdatedTime``, so a
record edited in QBO after its extraction is reported as a change, not a loss.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg
from tabulate import tabulate

from qbo_backfill.validation_checks import (
    GAP,
    OK,
    WindowCheck,
    WindowResult,
    check_window,
    extraction_start_of,
    rerun_command,
)
from qbo_backfill.validation_db import QueryLog, RawStore, RecordedWindow
from qbo_backfill.validation_entities import (
    ENTITIES,
    EntitySpec,
    entities_for,
    window_field_for,
)
from qbo_backfill.validation_qbo import (
    ConfigError,
    QboSource,
    build_client,
    load_tap_config,
    public_settings,
    secret_values,
)
from qbo_backfill.validation_windows import (
    CoverageIssue,
    check_coverage,
    cut_windows,
    format_utc,
    parse_utc,
    parse_window_size,
)

LOGGER = logging.getLogger(__name__)

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_NOT_RUN = 3


@dataclass
class ValidationReport:
    """The outcome of one validation: every window, coverage issue and query.

    Attributes:
        range_start: Start of the validated range, UTC.
        range_end: End of the validated range (exclusive), UTC.
        entities: Validated entity names.
        window_size: Size given with ``--window-size``, or None for recorded windows.
        strict: Whether changes made in QBO after extraction fail validation.
        started_at: When validation started, UTC.
        finished_at: When validation finished, UTC.
        windows: Results of every window and gap, by entity and start.
        coverage_issues: Gaps and overlaps of the recorded windows.
        overlap_fixes: SQL that deletes the superseded record of each overlap.
        totals: Per-entity totals over the whole range.
        queries: SQL statements and QBO queries that validation ran.
        settings: Non-secret settings of the QBO company and the database.
        tool_versions: Versions of the programs involved.
    """

    range_start: datetime
    range_end: datetime
    entities: list[str]
    window_size: timedelta | None = None
    strict: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    windows: list[WindowResult] = field(default_factory=list)
    coverage_issues: list[CoverageIssue] = field(default_factory=list)
    overlap_fixes: list[str] = field(default_factory=list)
    totals: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: QueryLog = field(default_factory=QueryLog)
    settings: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)

    @property
    def failed_windows(self) -> list[WindowResult]:
        """Return the windows whose verdict fails validation."""
        failing = [w for w in self.windows if w.failed]
        if self.strict:
            failing += [w for w in self.windows if not w.failed and w.status != OK]
        return failing

    @property
    def passed(self) -> bool:
        """Return whether every window matched and the windows cover the range once."""
        return not self.failed_windows and not self.coverage_issues

    @property
    def exit_code(self) -> int:
        """Return the process exit code that the verdict maps to."""
        return EXIT_PASSED if self.passed else EXIT_FAILED


def validate_range(
    specs: list[EntitySpec],
    range_start: datetime,
    range_end: datetime,
    *,
    raw: RawStore,
    qbo: QboSource,
    report: ValidationReport,
    environment: str | None = None,
    window_size: timedelta | None = None,
    compare_ids: bool = False,
    default_window_field: str = "LastUpdatedTime",
) -> ValidationReport:
    """Validate ``[range_start, range_end)`` of each entity and fill ``report``.

    Args:
        specs: Entities to validate.
        range_start: Start of the range, UTC.
        range_end: End of the range (exclusive), UTC.
        raw: Reads of the raw tables.
        qbo: Queries of the QBO company.
        report: Report to fill; its query log must be the one ``raw`` and ``qbo``
            write to.
        environment: Meltano environment named in re-run commands.
        window_size: Compare in windows of this size instead of the recorded ones.
        compare_ids: Compare the ids of every window, not only of windows whose
            counts differ.
        default_window_field: Window field when no window is recorded.

    Returns:
        The filled report.
    """
    for spec in specs:
        recorded = raw.recorded_windows(spec, range_start, range_end)
        pairs = [(window.start, window.end) for window in recorded]
        issues = check_coverage(spec.name, pairs, range_start, range_end)
        report.coverage_issues += issues
        report.overlap_fixes += _overlap_fixes(issues, recorded)

        fields = Counter(window.window_field for window in recorded)
        main_field = fields.most_common(1)[0][0] if fields else default_window_field
        results = _planned_windows(spec, recorded, range_start, range_end,
                                   window_size, main_field)
        for result in results:
            check = WindowCheck(spec=spec, field=window_field_for(result.window_field),
                                raw=raw, qbo=qbo, environment=environment,
                                compare_ids=compare_ids)
            check_window(check, result)

        for issue in issues:
            if issue.kind == "gap":
                results.append(_gap_result(spec, issue, raw, qbo, main_field, environment))
        results.sort(key=lambda result: (result.start, result.end))
        report.windows += results
        report.totals[spec.name] = _entity_totals(spec, results, raw, qbo, main_field,
                                                  range_start, range_end)

    report.finished_at = datetime.now(UTC)
    return report


def _planned_windows(
    spec: EntitySpec,
    recorded: list[RecordedWindow],
    range_start: datetime,
    range_end: datetime,
    window_size: timedelta | None,
    main_field: str,
) -> list[WindowResult]:
    if window_size is None:
        return [
            WindowResult(
                entity=spec.name, start=window.start, end=window.end,
                window_field=window.window_field, source="recorded",
                qbo_count_recorded=window.qbo_count,
                records_emitted=window.records_emitted,
                extracted_at=window.started_at, outcome=window.outcome,
                run_id=window.run_id,
            )
            for window in recorded
        ]

    by_bounds = {(window.start, window.end): window for window in recorded}
    results = []
    for start, end in cut_windows(range_start, range_end, window_size):
        same = by_bounds.get((start, end))
        results.append(
            WindowResult(
                entity=spec.name, start=start, end=end, window_field=main_field,
                source="resized",
                qbo_count_recorded=same.qbo_count if same else None,
                records_emitted=same.records_emitted if same else None,
                extracted_at=extraction_start_of(recorded, start, end),
                outcome=same.outcome if same else None,
                run_id=same.run_id if same else None,
            )
        )
    return results


def _gap_result(
    spec: EntitySpec,
    issue: CoverageIssue,
    raw: RawStore,
    qbo: QboSource,
    window_field: str,
    environment: str | None,
) -> WindowResult:
    field_spec = window_field_for(window_field)
    counts = raw.window_counts(spec, field_spec, issue.start, issue.end)
    result = WindowResult(
        entity=spec.name, start=issue.start, end=issue.end, window_field=window_field,
        source="gap", status=GAP,
        qbo_count_now=qbo.count(spec, field_spec, issue.start, issue.end),
        raw_rows=counts.rows, raw_distinct_ids=counts.distinct_ids,
        raw_distinct_payload_ids=counts.distinct_payload_ids,
    )
    result.findings.append(
        f"no extraction of {spec.name} recorded a window here; QBO holds "
        f"{result.qbo_count_now} records in it and {spec.table} {counts.rows}"
    )
    result.rerun_command = rerun_command(spec, issue.start, issue.end,
                                         environment=environment, one_window=False)
    return result


def _overlap_fixes(issues: list[CoverageIssue], recorded: list[RecordedWindow]) -> list[str]:
    by_bounds = {(window.start, window.end): window for window in recorded}
    fixes = []
    for issue in issues:
        if issue.kind != "overlap":
            continue
        first, second = (by_bounds[bounds] for bounds in issue.windows)
        older = min(first, second, key=lambda window: window.started_at)
        fixes.append(
            f"{issue.describe()}. If the window extracted later superseded the other, "
            "delete the older audit row: DELETE FROM raw.qb_extract_windows "
            f"WHERE entity = '{older.entity}' "
            f"AND window_start_utc = '{format_utc(older.start)}' "
            f"AND window_end_utc = '{format_utc(older.end)}';"
        )
    return fixes


def _entity_totals(
    spec: EntitySpec,
    results: list[WindowResult],
    raw: RawStore,
    qbo: QboSource,
    window_field: str,
    range_start: datetime,
    range_end: datetime,
) -> dict[str, Any]:
    # Whole-range counts do not depend on the windows, so they also catch records
    # that fall in no window at all.
    field_spec = window_field_for(window_field)
    range_counts = raw.window_counts(spec, field_spec, range_start, range_end)
    windows = [result for result in results if result.source != "gap"]
    return {
        "window_field": window_field,
        "windows": len(windows),
        "windows_failed": sum(1 for result in results if result.failed),
        "windows_changed_in_qbo": sum(1 for r in results if r.status == "changed_in_qbo"),
        "gaps": sum(1 for result in results if result.source == "gap"),
        "qbo_count_range_now": qbo.count(spec, field_spec, range_start, range_end),
        "raw_rows_range": range_counts.rows,
        "raw_distinct_ids_range": range_counts.distinct_ids,
        "qbo_count_recorded_sum": sum(w.qbo_count_recorded or 0 for w in windows),
        "records_emitted_sum": sum(w.records_emitted or 0 for w in windows),
    }


def render_table(report: ValidationReport, table_format: str = "simple") -> str:
    """Return the per-window table, one row per window and gap."""
    rows = [
        [
            result.entity,
            format_utc(result.start),
            format_utc(result.end),
            result.qbo_count_now,
            result.qbo_count_recorded,
            result.records_emitted,
            result.raw_rows,
            result.raw_distinct_ids,
            result.status,
        ]
        for result in report.windows
    ]
    headers = ["entity", "window start (UTC)", "window end (UTC)", "QBO now",
               "QBO at extraction", "emitted", "raw rows", "distinct ids", "status"]
    return tabulate(rows, headers=headers, tablefmt=table_format, missingval="-")


def render_totals(report: ValidationReport, table_format: str = "simple") -> str:
    """Return the per-entity totals over the whole range."""
    rows = [
        [entity, totals["windows"], totals["windows_failed"], totals["gaps"],
         totals["qbo_count_range_now"], totals["raw_rows_range"],
         totals["raw_distinct_ids_range"]]
        for entity, totals in report.totals.items()
    ]
    headers = ["entity", "windows", "failed", "gaps", "QBO now (range)",
               "raw rows (range)", "distinct ids (range)"]
    return tabulate(rows, headers=headers, tablefmt=table_format)


def render_problems(report: ValidationReport) -> list[str]:
    """Return one paragraph per failed or changed window, gap and overlap."""
    paragraphs = []
    for result in report.windows:
        if result.status == OK:
            continue
        lines = [f"{result.entity} {result.label}: {result.status}"]
        lines += [f"  - {finding}" for finding in result.findings]
        if result.rerun_command:
            lines.append(f"  re-run: {result.rerun_command}")
        paragraphs.append("\n".join(lines))
    paragraphs += report.overlap_fixes
    return paragraphs


def render_summary(report: ValidationReport) -> str:
    """Return the closing line: PASSED or FAILED and why."""
    window_count = sum(1 for w in report.windows if w.source != "gap")
    changed = sum(1 for w in report.windows if w.status == "changed_in_qbo")
    span = f"[{format_utc(report.range_start)}, {format_utc(report.range_end)})"
    if report.passed:
        extra = f", {changed} changed in QBO after extraction" if changed else ""
        return f"PASSED: {window_count} windows of {', '.join(report.entities)} " \
               f"over {span} match QBO{extra}"
    gaps = sum(1 for issue in report.coverage_issues if issue.kind == "gap")
    overlaps = len(report.coverage_issues) - gaps
    mismatched = len([w for w in report.failed_windows if w.source != "gap"])
    return (f"FAILED: {mismatched} window(s) do not match QBO, {gaps} gap(s) and "
            f"{overlaps} overlap(s) over {span}; re-run the commands above")


def postgres_connect_params() -> dict[str, Any]:
    """Return psycopg connection parameters: libpq's PG* variables, else the embedded server.

    When ``PGHOST`` is unset the project's embedded server is used, as the
    Makefile does.
    """
    if os.environ.get("PGHOST"):
        return {}
    from qbo_backfill.pg import embedded_server  # noqa: PLC0415 - only without PGHOST

    return {key.removeprefix("PG").lower().replace("database", "dbname"): value
            for key, value in embedded_server().environment().items()
            if key.startswith("PG")}


def describe_postgres(connection: psycopg.Connection) -> dict[str, Any]:
    """Return where the connection points, without the password."""
    info = connection.info
    return {"host": info.host, "port": info.port, "database": info.dbname,
            "user": info.user}


@click.command(name="validate")
@click.option("--entity", "entity_name", default="all", show_default=True,
              type=click.Choice([*ENTITIES, "all"]),
              help="Entity to validate.")
@click.option("--start", "start_text", required=True,
              help="Start of the range, UTC, inclusive (2024-01-01 or an ISO 8601 instant).")
@click.option("--end", "end_text", required=True,
              help="End of the range, UTC, exclusive.")
@click.option("--evidence-dir", type=click.Path(path_type=Path),
              help="Folder for report.md, report.json and the chart "
                   "[default: evidence/<UTC timestamp>/ in the project].")
@click.option("--window-size", "window_size_text",
              help="Compare in windows of this size (7d, 12h, 30m) instead of the "
                   "recorded ones; gaps and overlaps are still checked on the "
                   "recorded windows.")
@click.option("--compare-ids", is_flag=True,
              help="Compare the ids of every window with QBO, not only of windows "
                   "whose counts differ (one more query per 1000 records).")
@click.option("--strict", is_flag=True,
              help="Also fail on records edited or deleted in QBO after extraction.")
@click.option("--environment", envvar="MELTANO_ENVIRONMENT",
              help="Meltano environment whose QBO settings to use "
                   "[default: MELTANO_ENVIRONMENT, else the project's default].")
@click.option("--tap-config", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Tap configuration JSON to use instead of asking Meltano.")
def validate_command(  # noqa: PLR0913 - one parameter per command-line option
    entity_name: str,
    start_text: str,
    end_text: str,
    evidence_dir: Path | None,
    window_size_text: str | None,
    compare_ids: bool,  # noqa: FBT001 - click flag
    strict: bool,  # noqa: FBT001 - click flag
    environment: str | None,
    tap_config: Path | None,
) -> None:
    """Compare the backfilled raw tables with QBO over a range and write evidence.

    Exit status: 0 when every window matches, 1 on a mismatch, gap or overlap
    (the output names each window and the command that re-runs it), 2 on invalid
    options, 3 when QBO or Postgres could not be read.
    """
    try:
        range_start = parse_utc(start_text)
        range_end = parse_utc(end_text)
        window_size = parse_window_size(window_size_text) if window_size_text else None
        cut_windows(range_start, range_end, window_size or (range_end - range_start))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    specs = entities_for(entity_name)

    from qbo_backfill.project import project_root  # noqa: PLC0415

    root = project_root()
    report = ValidationReport(range_start=range_start, range_end=range_end,
                              entities=[spec.name for spec in specs],
                              window_size=window_size, strict=strict)
    try:
        config = load_tap_config(specs[0], config_file=tap_config,
                                 environment=environment, project_root=root)
        client = build_client(config)
        with psycopg.connect(**postgres_connect_params()) as connection:
            raw = RawStore(connection, report.queries)
            report.settings = {"qbo": public_settings(config),
                               "postgres": describe_postgres(connection),
                               "meltano_environment": environment}
            from qbo_backfill.evidence import tool_versions  # noqa: PLC0415

            report.tool_versions = tool_versions(raw.server_version(), root)
            validate_range(specs, range_start, range_end, raw=raw,
                           qbo=QboSource(client, report.queries), report=report,
                           environment=environment, window_size=window_size,
                           compare_ids=compare_ids,
                           default_window_field=config.get("window_field")
                           or "LastUpdatedTime")
    except (ConfigError, psycopg.Error, OSError, RuntimeError) as error:
        secrets = secret_values(config) if "config" in locals() else []
        message = _redact(f"validation could not run: {error}", secrets)
        click.echo(message, err=True)
        sys.exit(EXIT_NOT_RUN)

    _print_report(report)
    from qbo_backfill.evidence import default_evidence_dir, write_evidence  # noqa: PLC0415

    folder = evidence_dir or default_evidence_dir(root, report.started_at)
    written = write_evidence(report, folder, secrets=secret_values(config))
    click.echo(f"evidence: {written.parent}")
    sys.exit(report.exit_code)


def _print_report(report: ValidationReport) -> None:
    click.echo(render_table(report))
    click.echo()
    click.echo(render_totals(report))
    problems = render_problems(report)
    if problems:
        click.echo()
        click.echo("\n\n".join(problems))
    click.echo()
    click.echo(render_summary(report))


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
