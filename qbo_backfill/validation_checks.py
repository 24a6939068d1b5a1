"""Per-window comparison of QBO with the raw tables, and the verdict on each window."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from qbo_backfill.validation_windows import as_utc, format_utc, format_window_size

if TYPE_CHECKING:
    from qbo_backfill.validation_db import RawStore, RecordedWindow
    from qbo_backfill.validation_entities import EntitySpec, WindowField
    from qbo_backfill.validation_qbo import QboSource

SUCCESS_OUTCOMES = frozenset({"complete"})
"""Values of ``raw.qb_extract_windows.outcome`` that mean the window finished.

The tap records ``complete`` or ``failed``.
"""

# Verdicts of a window, from best to worst.
OK = "ok"
CHANGED = "changed_in_qbo"
MISMATCH = "mismatch"
INCOMPLETE = "incomplete"
GAP = "gap"
FAILING_STATUSES = frozenset({MISMATCH, INCOMPLETE, GAP})

# Kinds of id differences. The first two are explained by QBO, the rest are losses.
EDITED_AFTER_EXTRACTION = "edited_in_qbo_after_extraction"
DELETED_IN_QBO = "deleted_in_qbo_after_extraction"
MISSING_FROM_RAW = "missing_from_raw"
STALE_IN_RAW = "older_version_in_raw"
UNEXPLAINED_IN_RAW = "in_raw_but_not_in_qbo_window"
EXPLAINED_KINDS = (EDITED_AFTER_EXTRACTION, DELETED_IN_QBO)
LOSS_KINDS = (MISSING_FROM_RAW, STALE_IN_RAW, UNEXPLAINED_IN_RAW)


@dataclass
class WindowResult:
    """Validation outcome of one window of one entity.

    Attributes:
        entity: Entity name on the command line.
        start: Window start, UTC.
        end: Window end (exclusive), UTC.
        window_field: QBO timestamp the window is cut on.
        source: ``recorded`` (a row of raw.qb_extract_windows), ``resized``
            (cut by ``--window-size``) or ``gap`` (a stretch no window covers).
        qbo_count_now: QBO's ``COUNT(*)`` asked during validation.
        qbo_count_recorded: QBO's ``COUNT(*)`` recorded when extraction started.
        records_emitted: Distinct records the extraction emitted.
        raw_rows: Raw rows whose window field lies in the window.
        raw_distinct_ids: Distinct ids among those rows.
        raw_distinct_payload_ids: Distinct ``payload->>'Id'`` among those rows.
        extracted_at: When the window's extraction started, if recorded.
        outcome: Outcome recorded by the extraction.
        run_id: Run that recorded the window.
        status: Verdict: ``ok``, ``changed_in_qbo``, ``mismatch``, ``incomplete``
            or ``gap``.
        findings: Sentences explaining the verdict.
        differences: Ids that differ between QBO and the raw table, by kind.
        rerun_command: Shell command that re-extracts the window, when needed.
    """

    entity: str
    start: datetime
    end: datetime
    window_field: str
    source: str
    qbo_count_now: int | None = None
    qbo_count_recorded: int | None = None
    records_emitted: int | None = None
    raw_rows: int | None = None
    raw_distinct_ids: int | None = None
    raw_distinct_payload_ids: int | None = None
    extracted_at: datetime | None = None
    outcome: str | None = None
    run_id: str | None = None
    status: str = OK
    findings: list[str] = field(default_factory=list)
    differences: dict[str, list[str]] = field(default_factory=dict)
    rerun_command: str | None = None

    @property
    def label(self) -> str:
        """Return the window as ``[start, end)`` in UTC."""
        return f"[{format_utc(self.start)}, {format_utc(self.end)})"

    @property
    def failed(self) -> bool:
        """Return whether the verdict fails validation."""
        return self.status in FAILING_STATUSES

    def to_json(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return {
            "entity": self.entity,
            "window_start_utc": format_utc(self.start),
            "window_end_utc": format_utc(self.end),
            "window_field": self.window_field,
            "source": self.source,
            "qbo_count_now": self.qbo_count_now,
            "qbo_count_recorded": self.qbo_count_recorded,
            "records_emitted": self.records_emitted,
            "raw_rows": self.raw_rows,
            "raw_distinct_ids": self.raw_distinct_ids,
            "raw_distinct_payload_ids": self.raw_distinct_payload_ids,
            "extracted_at_utc": format_utc(self.extracted_at) if self.extracted_at else None,
            "outcome": self.outcome,
            "run_id": self.run_id,
            "status": self.status,
            "findings": self.findings,
            "differences": self.differences,
            "rerun_command": self.rerun_command,
        }


def rerun_command(
    spec: EntitySpec,
    start: datetime,
    end: datetime,
    *,
    environment: str | None,
    one_window: bool,
) -> str:
    """Return the shell command that re-extracts ``[start, end)`` of one entity.

    The command runs under a state ID suffix of its own, so the extractor starts
    at ``start`` whatever the bookmark of the main backfill contains, and leaves that
    bookmark alone.

    Args:
        spec: Entity to re-extract.
        start: Start of the stretch, UTC.
        end: End of the stretch, UTC.
        environment: Meltano environment to name, or None for the project default.
        one_window: Whether to extract the stretch as one window, so the re-run
            updates the same ``raw.qb_extract_windows`` row instead of adding
            windows that overlap it.
    """
    settings = [
        f"{spec.env_prefix}_START_DATE={format_utc(start)}",
        f"{spec.env_prefix}_END_DATE={format_utc(end)}",
    ]
    if one_window:
        try:
            size = format_window_size(end - start)
        except ValueError:
            size = None  # not expressible as a window_size: the tap cuts it up
        if size is not None:
            settings.append(f"{spec.env_prefix}_WINDOW_SIZE={size}")

    suffix = f"rerun-{as_utc(start):%Y%m%dT%H%M%SZ}-{as_utc(end):%Y%m%dT%H%M%SZ}"
    meltano = "meltano" if environment is None else f"meltano --environment={environment}"
    return (
        f"{' '.join(settings)} {meltano} run --state-id-suffix={suffix} "
        f"{spec.extractor} target-postgres"
    )


@dataclass
class WindowCheck:
    """Everything one window comparison needs, gathered once per validation."""

    spec: EntitySpec
    field: WindowField
    raw: RawStore
    qbo: QboSource
    environment: str | None
    compare_ids: bool


def check_window(check: WindowCheck, result: WindowResult) -> WindowResult:
    """Compare QBO and the raw table over one window and set the window's verdict.

    The raw rows are compared with QBO's count now, not with the count recorded
    at extraction, because records edited since then have moved to later
    windows in QBO. When the numbers differ (or ``compare_ids`` is set) the ids
    are compared, and each difference is classified by the record's QBO
    ``LastUpdatedTime``: a record edited or deleted in QBO after extraction is
    a change, anything else is a loss.
    """
    counts = check.raw.window_counts(check.spec, check.field, result.start, result.end)
    result.raw_rows = counts.rows
    result.raw_distinct_ids = counts.distinct_ids
    result.raw_distinct_payload_ids = counts.distinct_payload_ids
    result.qbo_count_now = check.qbo.count(check.spec, check.field, result.start, result.end)

    losses = _check_recorded_outcome(result)
    if counts.rows != counts.distinct_ids:
        result.findings.append(
            f"{counts.rows - counts.distinct_ids} duplicate ids in {check.spec.table}"
        )
        losses = True
    if counts.distinct_payload_ids != counts.distinct_ids:
        result.findings.append(
            f"{check.spec.table} holds {counts.distinct_ids} ids but "
            f"{counts.distinct_payload_ids} distinct payload Ids: some payloads do "
            "not belong to their row"
        )
        losses = True
    _note_recorded_counts(result)

    counts_differ = result.qbo_count_now != counts.distinct_ids
    if counts_differ or check.compare_ids:
        _compare_ids(check, result)
        if any(result.differences.get(kind) for kind in LOSS_KINDS):
            losses = True
        elif counts_differ and not any(result.differences.values()):
            result.findings.append(
                f"QBO counts {result.qbo_count_now} records but its listing matched the "
                f"{counts.distinct_ids} raw ids; QBO changed during validation, so "
                "validate again"
            )
            losses = True

    if result.status != INCOMPLETE:
        if losses:
            result.status = MISMATCH
        elif any(result.differences.values()):
            result.status = CHANGED
    if result.failed:
        result.rerun_command = rerun_command(
            check.spec, result.start, result.end,
            environment=check.environment, one_window=result.source == "recorded",
        )
    return result


def _check_recorded_outcome(result: WindowResult) -> bool:
    if result.outcome is None or result.outcome.lower() in SUCCESS_OUTCOMES:
        return False
    result.status = INCOMPLETE
    result.findings.append(f"the extraction recorded outcome {result.outcome!r}")
    return True


def _note_recorded_counts(result: WindowResult) -> None:
    recorded = result.qbo_count_recorded
    if recorded is not None and recorded != result.qbo_count_now:
        result.findings.append(
            f"QBO counted {recorded} records at extraction and counts "
            f"{result.qbo_count_now} now"
        )
    emitted = result.records_emitted
    if recorded is not None and emitted is not None and emitted < recorded:
        result.findings.append(
            f"the extraction emitted {emitted} records while QBO counted {recorded} "
            "when it started"
        )


def _compare_ids(check: WindowCheck, result: WindowResult) -> None:
    raw_ids = check.raw.window_ids(check.spec, check.field, result.start, result.end)
    qbo_records = check.qbo.window_records(check.spec, check.field, result.start,
                                           result.end)
    only_in_raw = sorted(set(raw_ids) - set(qbo_records))
    only_in_qbo = sorted(set(qbo_records) - set(raw_ids))
    raw_rows = check.raw.rows_by_id(check.spec, only_in_raw + only_in_qbo)
    looked_up = check.qbo.records_by_id(check.spec, only_in_raw)
    differences: dict[str, list[str]] = {}

    for record_id in only_in_raw:
        record = looked_up.get(record_id)
        raw_updated = raw_rows.get(record_id, {}).get("last_updated_utc")
        if record is None:
            kind = DELETED_IN_QBO
        else:
            value = record.value_of(check.field)
            if value is not None and result.start <= value < result.end:
                continue  # offset paging skipped it; QBO still has it in the window
            newer = (record.last_updated is not None and raw_updated is not None
                     and record.last_updated > as_utc(raw_updated))
            kind = EDITED_AFTER_EXTRACTION if newer else UNEXPLAINED_IN_RAW
        differences.setdefault(kind, []).append(record_id)

    for record_id in only_in_qbo:
        record = qbo_records[record_id]
        changed_since = (result.extracted_at is not None
                         and record.last_updated is not None
                         and record.last_updated >= result.extracted_at)
        if changed_since:
            kind = EDITED_AFTER_EXTRACTION
        elif record_id in raw_rows:
            kind = STALE_IN_RAW
        else:
            kind = MISSING_FROM_RAW
        differences.setdefault(kind, []).append(record_id)

    result.differences = differences
    for kind, ids in differences.items():
        result.findings.append(_describe_difference(kind, ids, check.spec))


_DIFFERENCE_TEXT = {
    EDITED_AFTER_EXTRACTION: (
        "edited in QBO after extraction (its LastUpdatedTime is later than the raw "
        "row's or than the extraction), not a loss"
    ),
    DELETED_IN_QBO: "deleted in QBO after extraction, not a loss",
    MISSING_FROM_RAW: "in QBO but missing from {table}",
    STALE_IN_RAW: "in {table} with an older version than QBO holds in this window",
    UNEXPLAINED_IN_RAW: (
        "in {table} for this window, but QBO holds them elsewhere with the same or "
        "an older LastUpdatedTime"
    ),
}


def _describe_difference(kind: str, ids: list[str], spec: EntitySpec) -> str:
    listed_ids = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    text = _DIFFERENCE_TEXT[kind].format(table=spec.table)
    return f"{len(ids)} {spec.qbo_entity} record(s) {text}: {listed_ids}"


def extraction_start_of(windows: list[RecordedWindow], start: datetime,
                        end: datetime) -> datetime | None:
    """Return the earliest extraction start of the recorded windows overlapping a window."""
    starts = [w.started_at for w in windows if w.start < end and w.end > start]
    return min(starts) if starts else None

