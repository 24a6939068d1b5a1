"""The window scan: every record of one entity in one window, by time-keyset pages.

Offset paging (``STARTPOSITION``) ordered by the window field skips a row whenever
another row of the window is edited mid-scan, because the edit moves that row to the
end and shifts every later offset. The scan therefore pages by time instead: each
page asks for rows at or after the last timestamp read so far. Because ``>=``
re-reads the last second, the ids already emitted at that second are skipped. A
second shared by more rows than fit on a page is scanned on its own with offsets and
checked against ``COUNT(*)``.
"""

from __future__ import annotations

import datetime as dt
import typing as t
from dataclasses import dataclass, field

from tap_quickbooks_backfill import queries
from tap_quickbooks_backfill.errors import WindowScanError

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_quickbooks_backfill.client import QBOClient, RequestStats
    from tap_quickbooks_backfill.rows import Row
    from tap_quickbooks_backfill.windows import Window

ONE_SECOND = dt.timedelta(seconds=1)
# Passes over one tied second before giving up; each pass after the first happens only
# because rows at that second changed while it was being read.
MAX_TIE_PASSES = 10


@dataclass
class Page:
    """Rows of one query page that this window scan had not emitted yet."""

    number: int
    records: list[Row]
    request: dict[str, t.Any]


@dataclass
class WindowProgress:
    """What a window scan did so far; complete once the scan's iterator is exhausted."""

    qbo_count: int | None = None
    pages: int = 0
    emitted_ids: set[str] = field(default_factory=set)


def record_instant(record: Row, window_field: str) -> dt.datetime:
    """Read a record's window field (``MetaData.<field>``) as an aware UTC instant.

    Args:
        record: A QBO object.
        window_field: ``LastUpdatedTime`` or ``CreateTime``.

    Returns:
        The instant in UTC.
    """
    # WindowScanner._rows has checked that both timestamps are present.
    instant = dt.datetime.fromisoformat(record.metadata[window_field])
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)

    return instant.astimezone(dt.UTC)


class WindowScanner:
    """Reads one entity's windows from QBO, one window at a time per call to ``scan``."""

    def __init__(
        self,
        client: QBOClient,
        entity: str,
        *,
        window_field: str,
        page_size: int,
    ) -> None:
        """Prepare scans of ``entity`` ordered by ``window_field``.

        Args:
            client: The QBO client.
            entity: ``Invoice``, ``Customer`` or ``Item``.
            window_field: ``LastUpdatedTime`` or ``CreateTime``.
            page_size: ``MAXRESULTS`` of each page, at most 1000.
        """
        self.client = client
        self.entity = entity
        self.window_field = window_field
        self.page_size = page_size

    def scan(
        self,
        window: Window,
        progress: WindowProgress,
        stats: RequestStats,
    ) -> Iterator[Page]:
        """Yield the pages of one window; ``progress`` is updated as they are read.

        ``progress.qbo_count`` receives the number of records in the window when the
        scan starts. A first page shorter than ``page_size`` holds the whole window, so
        its rows are that number. Otherwise QBO's ``COUNT(*)`` for the window is asked
        right after the first page. This keeps a window that fits one page (an empty
        one included) at a single request, which matters under QBO's request limit.

        Args:
            window: The window ``[start, end)``.
            progress: Counters of this window's scan, updated in place.
            stats: Request counters of this window, updated by the client.

        Yields:
            Pages with at least one record not yet emitted in this window.
        """
        cursor = window.start
        emitted_at_cursor: set[str] = set()
        while True:
            text = queries.page_from_cursor(
                self.entity, self.window_field, cursor, window.end, self.page_size
            )
            rows = self._rows(self.client.query(text, stats=stats))
            if progress.qbo_count is None:
                progress.qbo_count = self._window_count(window, rows, stats)
            fresh = [
                row
                for row in rows
                if not (
                    row.id in emitted_at_cursor
                    and self._instant(row) == cursor
                )
            ]
            yield from self._page(progress, fresh, text, start_position=1)

            # QBO can return more rows than MAXRESULTS asked for, and omits the entity
            # key once nothing is left, so only a short page ends the window.
            if len(rows) < self.page_size:
                return

            last_second = self._instant(rows[-1])
            if last_second == cursor:
                # A whole page shares one second: more rows than a page carry it.
                known = emitted_at_cursor | {row.id for row in rows}
                yield from self._scan_tied_second(cursor, known, progress, stats)
                cursor = cursor + ONE_SECOND
                emitted_at_cursor = set()
                continue

            emitted_at_cursor = {
                row.id for row in rows if self._instant(row) == last_second
            }
            cursor = last_second

    def _window_count(
        self,
        window: Window,
        first_rows: list[Row],
        stats: RequestStats,
    ) -> int:
        if len(first_rows) < self.page_size:
            return len({row.id for row in first_rows})

        return self.client.count(
            self.entity, window.start, window.end, self.window_field, stats=stats
        )

    def _scan_tied_second(
        self,
        second: dt.datetime,
        known_ids: set[str],
        progress: WindowProgress,
        stats: RequestStats,
    ) -> Iterator[Page]:
        """Read every row whose window field equals ``second``, with offset pages.

        Offsets are safe only while the set of rows at that second does not change.
        An edit moves a row to the present, so a past second can only lose rows. A pass
        is therefore complete when ``COUNT(*)`` before and after it is the same and
        equals the number of distinct ids the pass saw; otherwise the second is read
        again, skipping ids already emitted.
        """
        for _ in range(MAX_TIE_PASSES):
            count_before = self._count_second(second, stats)
            seen_in_pass: set[str] = set()
            position = 1
            while True:
                text = queries.page_at_second(
                    self.entity, self.window_field, second, position, self.page_size
                )
                rows = self._rows(self.client.query(text, stats=stats))
                fresh = [row for row in rows if row.id not in known_ids]
                seen_in_pass.update(row.id for row in rows)
                known_ids.update(row.id for row in fresh)
                yield from self._page(progress, fresh, text, start_position=position)

                if len(rows) < self.page_size:
                    break
                position += len(rows)

            count_after = self._count_second(second, stats)
            if count_before == count_after == len(seen_in_pass):
                return

        msg = (
            f"{self.entity} rows at {second.isoformat()} kept changing during "
            f"{MAX_TIE_PASSES} passes; re-run the window when the company is quieter"
        )
        raise WindowScanError(msg)

    def _count_second(self, second: dt.datetime, stats: RequestStats) -> int:
        text = queries.count_at_second(self.entity, self.window_field, second)
        return self.client.count_query(text, stats=stats)

    def _page(
        self,
        progress: WindowProgress,
        records: list[Row],
        text: str,
        *,
        start_position: int,
    ) -> Iterator[Page]:
        progress.pages += 1
        progress.emitted_ids.update(record.id for record in records)
        if not records:
            return

        yield Page(
            number=progress.pages,
            records=records,
            request={
                "query": text,
                "start_position": start_position,
                "max_results": self.page_size,
                "minor_version": self.client.settings.minor_version,
                "realm_id": self.client.settings.realm_id,
            },
        )

    def _rows(self, body: dict[str, t.Any]) -> list[Row]:
        # QBO leaves the entity key out entirely when no row matches.
        rows = body["QueryResponse"].get(self.entity, [])
        if not isinstance(rows, list):
            msg = f"QBO returned a {self.entity} page whose rows are not a list"
            raise WindowScanError(msg)
        for row in rows:
            self._check_row(row)
        return rows

    def _check_row(self, row: Row) -> None:
        """Raise WindowScanError unless the row has what the raw table requires."""
        if not row.id:
            msg = (
                f"QBO returned a {self.entity} row without an Id; the tap cannot "
                "key it in the raw table. Re-run the window later"
            )
            raise WindowScanError(msg)
        for name in ("LastUpdatedTime", "CreateTime"):
            value = row.metadata.get(name)
            if not value or not isinstance(value, str):
                msg = (
                    f"QBO returned {self.entity} {row.id} without MetaData.{name}, "
                    "which the raw table requires. Re-run the window later"
                )
                raise WindowScanError(msg)

    def _instant(self, row: Row) -> dt.datetime:
        return record_instant(row, self.window_field)
