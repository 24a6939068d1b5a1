"""Reads of the raw tables and of ``raw.qb_extract_windows`` that validation makes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from qbo_backfill.validation_windows import as_utc

if TYPE_CHECKING:
    import psycopg

    from qbo_backfill.validation_entities import EntitySpec, WindowField


@dataclass
class QueryLog:
    """Every distinct SQL statement and QBO query a validation ran, in first-use order.

    The evidence report lists them so that a reader can repeat each check by hand.
    SQL statements keep their placeholders, and the parameter sets that were bound
    to them are listed beside them.
    """

    sql: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    qbo: list[str] = field(default_factory=list)

    def record_sql(self, statement: str, params: dict[str, Any]) -> None:
        """Remember a SQL statement and the parameters bound to it."""
        self.sql.setdefault(statement, []).append(
            {key: _param_text(value) for key, value in params.items()}
        )

    def record_qbo(self, query: str) -> None:
        """Remember a QBO query text."""
        self.qbo.append(query)


def _param_text(value: Any) -> Any:  # noqa: ANN401 - any SQL parameter
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, (list, tuple)):
        return [_param_text(item) for item in value]
    return value


@dataclass(frozen=True)
class RecordedWindow:
    """One row of ``raw.qb_extract_windows``: a window as its extraction recorded it."""

    entity: str
    start: datetime
    end: datetime
    window_field: str
    qbo_count: int | None
    records_emitted: int
    pages: int
    requests: int
    retries: int
    throttles: int
    started_at: datetime
    finished_at: datetime | None
    run_id: str
    outcome: str


@dataclass(frozen=True)
class RawWindowCounts:
    """Rows of a raw table whose window field lies in one window.

    Attributes:
        rows: Number of rows.
        distinct_ids: Number of distinct ``id`` values.
        distinct_payload_ids: Number of distinct ``payload->>'Id'`` values; it
            differs from ``distinct_ids`` when a payload belongs to another record.
    """

    rows: int
    distinct_ids: int
    distinct_payload_ids: int


_WINDOWS_SQL = """\
SELECT entity, window_start_utc, window_end_utc, window_field, qbo_count,
       records_emitted, pages, requests, retries, throttles,
       started_at_utc, finished_at_utc, run_id, outcome
FROM raw.qb_extract_windows
WHERE lower(entity) = ANY(%(entity_values)s)
  AND window_start_utc < %(range_end)s
  AND window_end_utc > %(range_start)s
ORDER BY window_start_utc, window_end_utc"""

# Table and column names come from fixed project constants, never from user input.
_COUNTS_SQL = """\
SELECT count(*) AS rows,
       count(DISTINCT id) AS distinct_ids,
       count(DISTINCT payload->>'Id') AS distinct_payload_ids
FROM {table}
WHERE {column} >= %(window_start)s AND {column} < %(window_end)s"""

_IDS_SQL = """\
SELECT id, {column} AS window_value
FROM {table}
WHERE {column} >= %(window_start)s AND {column} < %(window_end)s"""

_ROWS_BY_ID_SQL = """\
SELECT id, last_updated_utc, extract_window_start_utc, extract_window_end_utc
FROM {table}
WHERE id = ANY(%(ids)s)"""


class RawStore:
    """Validation's reads of the raw schema, each one logged in a :class:`QueryLog`."""

    def __init__(self, connection: psycopg.Connection, log: QueryLog) -> None:
        """Wrap an open connection; the caller owns and closes it."""
        self._connection = connection
        self._log = log

    def server_version(self) -> str:
        """Return the PostgreSQL server's version string."""
        return str(self._fetch_all("SELECT version() AS version", {})[0]["version"])

    def recorded_windows(
        self, spec: EntitySpec, range_start: datetime, range_end: datetime
    ) -> list[RecordedWindow]:
        """Return the recorded windows of an entity that overlap a range, by start."""
        rows = self._fetch_all(
            _WINDOWS_SQL,
            {
                "entity_values": list(spec.window_entity_values),
                "range_start": range_start,
                "range_end": range_end,
            },
        )
        return [
            RecordedWindow(
                entity=row["entity"],
                start=as_utc(row["window_start_utc"]),
                end=as_utc(row["window_end_utc"]),
                window_field=row["window_field"],
                qbo_count=row["qbo_count"],
                records_emitted=row["records_emitted"],
                pages=row["pages"],
                requests=row["requests"],
                retries=row["retries"],
                throttles=row["throttles"],
                started_at=as_utc(row["started_at_utc"]),
                finished_at=(
                    as_utc(row["finished_at_utc"]) if row["finished_at_utc"] else None
                ),
                run_id=row["run_id"],
                outcome=row["outcome"],
            )
            for row in rows
        ]

    def window_counts(
        self, spec: EntitySpec, field: WindowField, start: datetime, end: datetime
    ) -> RawWindowCounts:
        """Count the raw rows whose window field lies in ``[start, end)``."""
        statement = _COUNTS_SQL.format(table=spec.table, column=field.column)
        row = self._fetch_all(statement, {"window_start": start, "window_end": end})[0]
        return RawWindowCounts(
            rows=row["rows"],
            distinct_ids=row["distinct_ids"],
            distinct_payload_ids=row["distinct_payload_ids"],
        )

    def window_ids(
        self, spec: EntitySpec, field: WindowField, start: datetime, end: datetime
    ) -> dict[str, datetime]:
        """Return id and window-field value of the raw rows in ``[start, end)``."""
        statement = _IDS_SQL.format(table=spec.table, column=field.column)
        rows = self._fetch_all(statement, {"window_start": start, "window_end": end})
        return {row["id"]: as_utc(row["window_value"]) for row in rows}

    def rows_by_id(self, spec: EntitySpec, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Return the raw rows with the given ids, keyed by id."""
        if not ids:
            return {}
        statement = _ROWS_BY_ID_SQL.format(table=spec.table)
        rows = self._fetch_all(statement, {"ids": sorted(ids)})
        return {row["id"]: row for row in rows}

    def _fetch_all(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        self._log.record_sql(statement, params)
        with self._connection.cursor(row_factory=dict_row) as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()
