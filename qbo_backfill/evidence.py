"""Evidence folder of a validation: ``report.md``, ``report.json`` and a chart.

Every file is written through :func:`_redact`, which replaces any configured
secret value, so a secret that reached an error message or a setting still
never lands in a file.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import matplotlib as mpl

mpl.use("Agg")  # no display: render to files only

import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
from matplotlib.ticker import MaxNLocator  # noqa: E402

from qbo_backfill.validation_windows import format_utc  # noqa: E402

if TYPE_CHECKING:
    from qbo_backfill.validate import ValidationReport

LOCAL_TIMEZONE = ZoneInfo("America/Guayaquil")
"""Time zone of the operators, shown beside UTC in the report."""

REPORT_FORMAT_VERSION = 1

_PACKAGES = ("qbo-backfill", "tap-quickbooks-backfill", "qbo-emulator", "meltano",
             "singer-sdk", "psycopg", "matplotlib", "tabulate")


def default_evidence_dir(project_root: Path, started_at: datetime) -> Path:
    """Return ``evidence/<UTC timestamp>/`` under the project root."""
    return project_root / "evidence" / started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def tool_versions(postgres_version: str, project_root: Path) -> dict[str, str]:
    """Return the versions of Python, PostgreSQL and the packages involved.

    The loader runs in Meltano's own virtual environment, so its version is read
    from there when that environment exists.
    """
    versions = {"python": platform.python_version(), "postgresql": postgres_version}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue

    loader_venv = project_root / ".meltano" / "loaders" / "target-postgres" / "venv"
    for site_packages in sorted(loader_venv.glob("lib/python*/site-packages")):
        for dist in metadata.distributions(path=[str(site_packages)]):
            if dist.metadata["Name"] == "meltanolabs-target-postgres":
                versions["meltanolabs-target-postgres"] = dist.version
    return versions


def both_zones(instant: datetime | None) -> dict[str, str | None]:
    """Return an instant in UTC and in the operators' time zone, ISO 8601."""
    if instant is None:
        return {"utc": None, "america_guayaquil": None}
    return {
        "utc": instant.astimezone(UTC).isoformat(timespec="seconds"),
        "america_guayaquil": instant.astimezone(LOCAL_TIMEZONE).isoformat(timespec="seconds"),
    }


def report_data(report: ValidationReport) -> dict[str, Any]:
    """Return the report as JSON-ready data, which ``report.json`` contains verbatim."""
    return {
        "report_format_version": REPORT_FORMAT_VERSION,
        "passed": report.passed,
        "exit_code": report.exit_code,
        "range": {
            "start_utc": format_utc(report.range_start),
            "end_utc": format_utc(report.range_end),
            "start": both_zones(report.range_start),
            "end": both_zones(report.range_end),
        },
        "entities": report.entities,
        "window_source": "recorded" if report.window_size is None else "resized",
        "window_size_seconds": (
            int(report.window_size.total_seconds()) if report.window_size else None
        ),
        "strict": report.strict,
        "started_at": both_zones(report.started_at),
        "finished_at": both_zones(report.finished_at),
        "settings": report.settings,
        "tool_versions": report.tool_versions,
        "totals": report.totals,
        "windows": [result.to_json() for result in report.windows],
        "gaps": [_issue_json(issue) for issue in report.coverage_issues
                 if issue.kind == "gap"],
        "overlaps": [_issue_json(issue) for issue in report.coverage_issues
                     if issue.kind == "overlap"],
        "overlap_fixes": report.overlap_fixes,
        "mismatches": [result.to_json() for result in report.failed_windows
                       if result.source != "gap"],
        "queries": {
            "sql": [{"statement": statement, "executions": params}
                    for statement, params in report.queries.sql.items()],
            "qbo": report.queries.qbo,
        },
    }


def _issue_json(issue: Any) -> dict[str, Any]:  # noqa: ANN401 - CoverageIssue
    return {
        "entity": issue.entity,
        "start_utc": format_utc(issue.start),
        "end_utc": format_utc(issue.end),
        "windows": [[format_utc(start), format_utc(end)] for start, end in issue.windows],
        "description": issue.describe(),
    }


def render_markdown(report: ValidationReport, data: dict[str, Any]) -> str:
    """Return ``report.md``: verdict, range, tables, problems, queries and versions."""
    from qbo_backfill.validate import (  # noqa: PLC0415 - avoids an import cycle
        render_problems,
        render_summary,
        render_table,
        render_totals,
    )

    started = data["started_at"]
    finished = data["finished_at"]
    lines = [
        "# QBO backfill validation",
        "",
        f"**{render_summary(report)}**",
        "",
        "| | UTC | America/Guayaquil |",
        "| --- | --- | --- |",
        f"| range start | {data['range']['start']['utc']} "
        f"| {data['range']['start']['america_guayaquil']} |",
        f"| range end (exclusive) | {data['range']['end']['utc']} "
        f"| {data['range']['end']['america_guayaquil']} |",
        f"| validation started | {started['utc']} | {started['america_guayaquil']} |",
        f"| validation finished | {finished['utc']} | {finished['america_guayaquil']} |",
        "",
        f"Entities: {', '.join(report.entities)}. Windows: {data['window_source']}"
        + (f" ({data['window_size_seconds']} s each)." if report.window_size else "."),
        "",
        "## Windows",
        "",
        render_table(report, "github"),
        "",
        "## Totals over the range",
        "",
        render_totals(report, "github"),
        "",
        "## Gaps, overlaps and mismatches",
        "",
    ]
    problems = render_problems(report)
    if problems:
        for problem in problems:
            lines += ["```text", problem, "```", ""]
    else:
        lines += ["None.", ""]

    lines += ["## Settings", "", "```json",
              json.dumps(report.settings, indent=2, default=str), "```", ""]
    lines += ["## SQL run against Postgres", ""]
    for statement, executions in report.queries.sql.items():
        lines += [f"Run {len(executions)} time(s); first parameters: "
                  f"`{json.dumps(executions[0])}`", "", "```sql", statement, "```", ""]
    lines += ["## QBO queries", "", "```text", *report.queries.qbo, "```", ""]
    lines += ["## Tool versions", "", "| tool | version |", "| --- | --- |"]
    lines += [f"| {tool} | {version} |" for tool, version in report.tool_versions.items()]
    lines.append("")
    return "\n".join(lines)


def render_chart(report: ValidationReport, path: Path) -> None:
    """Draw raw rows and QBO's current count per window, one panel per entity."""
    entities = report.entities
    figure, axes = plt.subplots(len(entities), 1, figsize=(11, 3.2 * len(entities)),
                                squeeze=False)
    for axis, entity in zip(axes[:, 0], entities, strict=True):
        windows = [w for w in report.windows if w.entity == entity]
        positions = list(range(len(windows)))
        raw_rows = [w.raw_rows or 0 for w in windows]
        qbo_now = [w.qbo_count_now or 0 for w in windows]
        colours = ["tab:red" if w.failed else "tab:blue" for w in windows]

        axis.bar(positions, raw_rows, color=colours, label="raw rows")
        for position, window in zip(positions, windows, strict=True):
            if window.source == "gap":
                axis.axvspan(position - 0.4, position + 0.4, color="tab:red", alpha=0.15)
        axis.plot(positions, qbo_now, "k_", markersize=14, label="QBO count now")
        axis.set_title(f"{entity}: records per window (red: mismatch, shaded: gap)")
        axis.set_ylabel("records")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        step = max(1, len(windows) // 12)
        axis.set_xticks(positions[::step])
        axis.set_xticklabels([format_utc(w.start)[:10] for w in windows][::step],
                             rotation=30, ha="right", fontsize=8)
        if windows:
            axis.legend(loc="upper right", fontsize=8)
        else:
            axis.text(0.5, 0.5, "no window recorded", ha="center",
                      transform=axis.transAxes)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def write_evidence(report: ValidationReport, folder: Path, secrets: list[str]) -> Path:
    """Write ``report.md``, ``report.json`` and ``records_per_window.png`` into a folder.

    Args:
        report: Finished validation report.
        folder: Evidence folder, created when missing.
        secrets: Secret values to replace with ``***`` wherever they appear.

    Returns:
        Path of ``report.md``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = report_data(report)

    json_path = folder / "report.json"
    json_text = json.dumps(data, indent=2, default=str) + "\n"
    json_path.write_text(_redact(json_text, secrets), encoding="utf-8")

    markdown_path = folder / "report.md"
    markdown_path.write_text(_redact(render_markdown(report, data), secrets),
                             encoding="utf-8")

    render_chart(report, folder / "records_per_window.png")
    return markdown_path


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
