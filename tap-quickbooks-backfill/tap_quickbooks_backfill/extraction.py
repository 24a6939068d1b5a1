"""Running window scans, one after another or several at once.

The runner turns each window's pages into raw-table records and finishes every window
with a :class:`WindowAudit`, which consumers receive right after the window's last
page. Several windows fetched at once pass on each page when its response arrives,
so no page waits for the end of the windows before it. The bookmark then follows the
complete windows at the start of the range only (:class:`CompletePrefix`).

A run never extracts past its own start, and an edit moves a record to the present,
so within one run a record is normally read from one window only. When QBO's clock
is behind this machine's, an edit made during the run can land in the run's last
window, and that window's page can arrive before the older version's page from an
earlier window. :class:`NewestVersions` drops such a stale version.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import typing as t
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tap_quickbooks_backfill.client import RequestStats
from tap_quickbooks_backfill.errors import ScanCancelledError
from tap_quickbooks_backfill.paging import Page, WindowProgress, WindowScanner
from tap_quickbooks_backfill.queries import NAME_LIST_ENTITIES

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from tap_quickbooks_backfill.client import QBOClient
    from tap_quickbooks_backfill.windows import Window

LOGGER = logging.getLogger("tap_quickbooks_backfill.extraction")

OUTCOME_COMPLETE = "complete"
OUTCOME_FAILED = "failed"
# Pages per request in flight that may wait in memory for the consumer, besides the
# page each blocked fetching thread holds.
PAGES_BUFFERED_PER_WINDOW = 2
_QUEUE_POLL_SECONDS = 0.5


def utc_iso(instant: dt.datetime) -> str:
    """Format an aware instant as ISO 8601 in UTC (``+00:00``).

    Args:
        instant: An aware datetime.

    Returns:
        For example ``2023-02-18T20:57:24+00:00``.
    """
    return instant.astimezone(dt.UTC).isoformat()


def qbo_time_to_utc(value: str | None) -> str | None:
    """Convert a QBO timestamp with the company's offset to ISO 8601 in UTC.

    Args:
        value: For example ``2023-02-18T12:57:24-08:00``, or ``None``.

    Returns:
        For example ``2023-02-18T20:57:24+00:00``, or ``None``.
    """
    if not value:
        return None

    instant = dt.datetime.fromisoformat(value)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)

    return utc_iso(instant)


@dataclass
class WindowAudit:
    """Volumetry of one window's extraction: one ``qb_extract_windows`` record."""

    entity: str
    window: Window
    window_field: str
    run_id: str
    started_at: dt.datetime
    qbo_count: int | None = None
    records_emitted: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    finished_at: dt.datetime | None = None
    outcome: str = OUTCOME_FAILED

    @property
    def elapsed_seconds(self) -> float:
        """Seconds from the start of the scan to its end (or to now)."""
        end = self.finished_at or dt.datetime.now(dt.UTC)
        return max((end - self.started_at).total_seconds(), 0.0)

    def to_record(self) -> dict[str, t.Any]:
        """Return the ``qb_extract_windows`` record."""
        return {
            "entity": self.entity,
            "window_start_utc": utc_iso(self.window.start),
            "window_end_utc": utc_iso(self.window.end),
            "window_field": self.window_field,
            "qbo_count": self.qbo_count,
            "records_emitted": self.records_emitted,
            "pages": self.pages,
            "requests": self.requests,
            "retries": self.retries,
            "throttles": self.throttles,
            "started_at_utc": utc_iso(self.started_at),
            "finished_at_utc": utc_iso(self.finished_at) if self.finished_at else None,
            "run_id": self.run_id,
            "outcome": self.outcome,
        }


@dataclass
class _ScanFailure:
    audit: WindowAudit
    error: BaseException


class _Skipped:
    """A window not started because another window of the run failed first."""


class _ConsumerGoneError(Exception):
    """The consumer stopped reading; the window scans still running are abandoned."""


class WindowExtractor:
    """Extracts one entity's windows and yields record pages and window audits."""

    def __init__(  # noqa: PLR0913
        self,
        client: QBOClient,
        entity: str,
        *,
        window_field: str,
        page_size: int,
        run_id: str,
        window_concurrency: int = 1,
    ) -> None:
        """Prepare the extraction of ``entity``.

        Args:
            client: The QBO client, shared by every window.
            entity: ``Invoice``, ``Customer`` or ``Item``.
            window_field: ``LastUpdatedTime`` or ``CreateTime``.
            page_size: ``MAXRESULTS`` of each page.
            run_id: Id of this tap run, copied into every audit.
            window_concurrency: Windows fetched at once; each window's scan stays
                sequential.
        """
        self.entity = entity
        self.window_field = window_field
        self.page_size = page_size
        self.run_id = run_id
        self.window_concurrency = window_concurrency
        self.max_in_flight = client.settings.max_concurrent_requests
        self.scanner = WindowScanner(
            client, entity, window_field=window_field, page_size=page_size
        )

    def run(
        self,
        windows: Iterable[Window],
    ) -> Iterator[list[dict[str, t.Any]] | WindowAudit]:
        """Yield record pages as they are fetched, and each window's audit after its pages.

        One window at a time, pages and audits come in window order. With
        ``window_concurrency`` above 1, pages of the windows being fetched interleave
        in the order their responses arrived, and audits come in the order windows
        finish.
        The consumer moves the bookmark over the complete windows at the start of the
        range only (see :class:`CompletePrefix`).

        A failed window yields its audit with outcome ``failed`` and then raises the
        error. When windows run at once, no window starts after the failure, and
        those already running finish first, with their audits, so the bookmark keeps
        every window before the failed one that completed.

        Args:
            windows: Windows in time order.

        Yields:
            Lists of raw-table records, and one :class:`WindowAudit` per window.
        """
        if self.window_concurrency <= 1:
            for window in windows:
                yield from self._extract_window(window)
            return

        yield from self._run_concurrently(list(windows))

    def _extract_window(
        self,
        window: Window,
        cancel: threading.Event | None = None,
    ) -> Iterator[list[dict[str, t.Any]] | WindowAudit]:
        audit = WindowAudit(
            entity=self.entity,
            window=window,
            window_field=self.window_field,
            run_id=self.run_id,
            started_at=dt.datetime.now(dt.UTC),
        )
        progress = WindowProgress()
        stats = RequestStats(cancel=cancel)
        try:
            for page in self.scanner.scan(window, progress, stats):
                yield self._records(page, window)
        except Exception:
            self._fill_audit(audit, progress, stats, OUTCOME_FAILED)
            yield audit
            raise

        self._fill_audit(audit, progress, stats, OUTCOME_COMPLETE)
        yield audit

    def _records(self, page: Page, window: Window) -> list[dict[str, t.Any]]:
        ingested_at = utc_iso(dt.datetime.now(dt.UTC))
        window_start = utc_iso(window.start)
        window_end = utc_iso(window.end)
        name_list = self.entity in NAME_LIST_ENTITIES
        records = []
        for row in page.records:
            metadata = row.metadata
            records.append(
                {
                    "id": row.id,
                    # QBO's bytes, written into the Singer message as they are.
                    "payload": row.payload,
                    "ingested_at_utc": ingested_at,
                    "extract_window_start_utc": window_start,
                    "extract_window_end_utc": window_end,
                    "page_number": page.number,
                    "page_size": self.page_size,
                    "request_payload": page.request,
                    "last_updated_utc": qbo_time_to_utc(metadata.get("LastUpdatedTime")),
                    "created_utc": qbo_time_to_utc(metadata.get("CreateTime")),
                    "sync_token": row.sync_token,
                    "active": row.active if name_list else None,
                }
            )
        return records

    @staticmethod
    def _fill_audit(
        audit: WindowAudit,
        progress: WindowProgress,
        stats: RequestStats,
        outcome: str,
    ) -> None:
        audit.qbo_count = progress.qbo_count
        audit.records_emitted = len(progress.emitted_ids)
        audit.pages = progress.pages
        audit.requests = stats.requests
        audit.retries = stats.retries
        audit.throttles = stats.throttles
        audit.finished_at = dt.datetime.now(dt.UTC)
        audit.outcome = outcome

    # Several windows at once

    def _run_concurrently(
        self,
        windows: list[Window],
    ) -> Iterator[list[dict[str, t.Any]] | WindowAudit]:
        # Pages go to the consumer as soon as they arrive, so no window waits for the
        # windows before it. The queue is bounded, so the fetching threads block when
        # the consumer (in the end the loader) is slower than QBO.
        output: queue.Queue[t.Any] = queue.Queue(
            maxsize=min(self.window_concurrency, self.max_in_flight)
            * PAGES_BUFFERED_PER_WINDOW
        )
        consumer_gone = threading.Event()
        failed = threading.Event()
        pool = ThreadPoolExecutor(
            max_workers=self.window_concurrency,
            thread_name_prefix=f"qbo-{self.entity.lower()}-window",
        )
        try:
            # The pool's queue is first in, first out, so windows start in time order.
            futures = [
                pool.submit(self._produce, window, output, consumer_gone, failed)
                for window in windows
            ]
            failures: list[_ScanFailure] = []
            ended = 0
            while ended < len(windows):
                item = self._next_output(output, futures)
                if isinstance(item, _Skipped):
                    ended += 1
                elif isinstance(item, _ScanFailure):
                    ended += 1
                    failures.append(item)
                else:
                    if isinstance(item, WindowAudit):
                        ended += 1
                    yield item
            if failures:
                failures.sort(key=lambda failure: failure.audit.window)
                for failure in failures:
                    yield failure.audit
                raise failures[0].error
        finally:
            consumer_gone.set()
            pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _next_output(output: queue.Queue[t.Any], futures: list[t.Any]) -> object:
        # A fetching thread reports everything, failures included, through the queue.
        # Only an error outside the scan (a bug) would end it silently, so the waits
        # are short and check for one.
        while True:
            try:
                return output.get(timeout=_QUEUE_POLL_SECONDS)
            except queue.Empty:
                for future in futures:
                    if future.done() and not future.cancelled() and future.exception():
                        raise t.cast("BaseException", future.exception())

    def _produce(
        self,
        window: Window,
        output: queue.Queue[t.Any],
        consumer_gone: threading.Event,
        failed: threading.Event,
    ) -> None:
        if failed.is_set():
            self._put(output, _Skipped(), consumer_gone)
            return

        scan = self._extract_window(window, consumer_gone)
        try:
            for item in scan:
                if isinstance(item, WindowAudit) and item.outcome == OUTCOME_FAILED:
                    failed.set()
                    self._put(output, self._failure(scan, item), consumer_gone)
                    return
                self._put(output, item, consumer_gone)
        except (_ConsumerGoneError, ScanCancelledError):
            scan.close()

    @staticmethod
    def _failure(
        scan: Iterator[list[dict[str, t.Any]] | WindowAudit],
        audit: WindowAudit,
    ) -> _ScanFailure:
        # A scan raises its error right after yielding its failed audit.
        try:
            next(scan)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            return _ScanFailure(audit, exc)
        return _ScanFailure(audit, RuntimeError("window scan failed without an error"))

    @staticmethod
    def _put(
        output: queue.Queue[t.Any],
        item: object,
        consumer_gone: threading.Event,
    ) -> None:
        while not consumer_gone.is_set():
            try:
                output.put(item, timeout=_QUEUE_POLL_SECONDS)
            except queue.Full:
                continue
            return
        raise _ConsumerGoneError


# Largest difference between QBO's clock and this machine's that NewestVersions covers.
MAX_CLOCK_SKEW = dt.timedelta(hours=1)


class NewestVersions:
    """Drops a record version older than one this run already emitted for the same id.

    Only versions updated less than ``MAX_CLOCK_SKEW`` before the run's start can be
    newer than a version read later in the same run, so only their ids are kept,
    and memory stays flat for a backfill of past windows.
    """

    def __init__(self, run_started_at: dt.datetime) -> None:
        """Start with no version seen.

        Args:
            run_started_at: When the run started, by this machine's clock.
        """
        self._recent_since = utc_iso(run_started_at - MAX_CLOCK_SKEW)
        self._newest: dict[str, tuple[str, int]] = {}
        self.dropped = 0

    def filter(self, records: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
        """Return the records that are not older than a version already emitted.

        Args:
            records: Raw-table records of one page.

        Returns:
            The records to emit, in their order.
        """
        emitted = []
        for record in records:
            updated = record.get("last_updated_utc") or ""
            newest = self._newest.get(record["id"])
            # Most records of a backfill are old and have no recent version to compare.
            if newest is None and updated < self._recent_since:
                emitted.append(record)
                continue

            version = (updated, _sync_token(record))
            if newest is not None and newest > version:
                self.dropped += 1
                continue
            if updated >= self._recent_since:
                self._newest[record["id"]] = version
            emitted.append(record)
        return emitted


def _sync_token(record: dict[str, t.Any]) -> int:
    try:
        return int(record.get("sync_token") or 0)
    except ValueError:
        return 0


class CompletePrefix:
    """The unbroken run of complete windows at the start of a run's range.

    The bookmark may pass a window only when every window before it is complete too.
    A later window that finished first does not let the bookmark skip an earlier one
    that is still running or failed.
    """

    def __init__(self, windows: Iterable[Window]) -> None:
        """Start with no window complete.

        Args:
            windows: The run's windows in time order.
        """
        self._pending = deque(windows)
        self._complete: set[Window] = set()
        self.last: Window | None = None

    def add(self, window: Window) -> bool:
        """Mark ``window`` complete and return whether the run at the start grew.

        Args:
            window: A window of the run whose scan completed.

        Returns:
            True when ``last`` moved to a later window.
        """
        self._complete.add(window)
        grew = False
        while self._pending and self._pending[0] in self._complete:
            self.last = self._pending.popleft()
            self._complete.discard(self.last)
            grew = True
        return grew


def window_summary(audit: WindowAudit) -> tuple[str, tuple[t.Any, ...]]:
    """Build the INFO line of a finished window: format string and arguments.

    Args:
        audit: The finished window.

    Returns:
        A ``%``-style format and its arguments, for lazy logging.
    """
    elapsed = audit.elapsed_seconds
    rate = audit.records_emitted / elapsed if elapsed > 0 else float(audit.records_emitted)
    return (
        "%s window %s %s: %d records (QBO count %s), %d pages, %d requests, "
        "%d retries, %d throttles, %.1f s, %.0f records/s",
        (
            audit.entity,
            audit.window,
            audit.outcome,
            audit.records_emitted,
            audit.qbo_count if audit.qbo_count is not None else "-",
            audit.pages,
            audit.requests,
            audit.retries,
            audit.throttles,
            elapsed,
            rate,
        ),
    )

