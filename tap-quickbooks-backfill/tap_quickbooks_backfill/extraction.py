"""Running window scans, one after another or several at once, in window order.

The runner turns each window's pages into raw-table records and finishes every window
with a :class:`WindowAudit`. Consumers receive a window's audit right after its last
page, and windows always arrive in time order, even when several are fetched at once,
so the bookmark can follow the audits.
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
from tap_quickbooks_backfill.spool import PageSpool

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from tap_quickbooks_backfill.client import QBOClient
    from tap_quickbooks_backfill.windows import Window

LOGGER = logging.getLogger("tap_quickbooks_backfill.extraction")

OUTCOME_COMPLETE = "complete"
OUTCOME_FAILED = "failed"
# Pages of the window being emitted that wait in memory for the consumer.
PAGES_BUFFERED_PER_WINDOW = 2
# Windows submitted ahead of the one being emitted, per fetching thread.
WINDOWS_QUEUED_PER_THREAD = 4
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


class _WindowChannel:
    """Hand-over of one window's output from its fetching thread to the consumer."""

    def __init__(self) -> None:
        self.pages: queue.Queue[t.Any] = queue.Queue(maxsize=PAGES_BUFFERED_PER_WINDOW)
        # Set once the consumer emits this window, so its pages stream directly.
        self.is_head = threading.Event()


class _ConsumerGoneError(Exception):
    """The consumer stopped reading; a window fetched ahead is abandoned."""


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
        self.scanner = WindowScanner(
            client, entity, window_field=window_field, page_size=page_size
        )

    def run(
        self,
        windows: Iterable[Window],
    ) -> Iterator[list[dict[str, t.Any]] | WindowAudit]:
        """Yield each window's record pages, then its audit, window after window.

        A failed window yields its audit with outcome ``failed`` and then raises the
        error; later windows are not yielded.

        Args:
            windows: Windows in time order.

        Yields:
            Lists of raw-table records, and one :class:`WindowAudit` per window.
        """
        if self.window_concurrency <= 1:
            for window in windows:
                yield from self._extract_window(window)
            return

        yield from self._run_concurrently(windows)

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
            metadata = row.get("MetaData") or {}
            records.append(
                {
                    "id": str(row["Id"]),
                    "payload": row,
                    "ingested_at_utc": ingested_at,
                    "extract_window_start_utc": window_start,
                    "extract_window_end_utc": window_end,
                    "page_number": page.number,
                    "page_size": self.page_size,
                    "request_payload": page.request,
                    "last_updated_utc": qbo_time_to_utc(metadata.get("LastUpdatedTime")),
                    "created_utc": qbo_time_to_utc(metadata.get("CreateTime")),
                    "sync_token": row.get("SyncToken"),
                    "active": row.get("Active") if name_list else None,
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
        windows: Iterable[Window],
    ) -> Iterator[list[dict[str, t.Any]] | WindowAudit]:
        consumer_gone = threading.Event()
        remaining = iter(windows)
        in_progress: deque[_WindowChannel] = deque()
        pool = ThreadPoolExecutor(
            max_workers=self.window_concurrency,
            thread_name_prefix=f"qbo-{self.entity.lower()}-window",
        )

        def start_next_window() -> None:
            window = next(remaining, None)
            if window is None:
                return
            channel = _WindowChannel()
            pool.submit(self._produce, window, channel, consumer_gone)
            in_progress.append(channel)

        try:
            # More windows are queued than threads run, so a thread that finishes a
            # window fetched ahead starts the next one instead of waiting for the
            # consumer to catch up; finished windows wait in their spools.
            for _ in range(self.window_concurrency * WINDOWS_QUEUED_PER_THREAD):
                start_next_window()

            while in_progress:
                channel = in_progress.popleft()
                channel.is_head.set()
                while True:
                    item = channel.pages.get()
                    if isinstance(item, _ScanFailure):
                        yield item.audit
                        raise item.error
                    if isinstance(item, PageSpool):
                        yield from item.read()
                        continue
                    yield item
                    if isinstance(item, WindowAudit):
                        break
                start_next_window()
        finally:
            consumer_gone.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _produce(
        self,
        window: Window,
        channel: _WindowChannel,
        consumer_gone: threading.Event,
    ) -> None:
        # Until the consumer reaches this window, its pages go to a spool (encoded, and
        # on disk beyond a small size) rather than staying in memory as Python objects.
        # From then on they go through the bounded queue, after the spool.
        scan = self._extract_window(window, consumer_gone)
        spool: PageSpool | None = None
        try:
            for item in scan:
                if isinstance(item, WindowAudit):
                    final: object = item
                    if item.outcome == OUTCOME_FAILED:
                        final = self._failure(scan, item)
                    if spool is not None:
                        self._put(channel.pages, spool, consumer_gone)
                        spool = None
                    self._put(channel.pages, final, consumer_gone)
                    return

                if not channel.is_head.is_set():
                    spool = spool or PageSpool()
                    spool.write(item)
                    continue

                if spool is not None:
                    self._put(channel.pages, spool, consumer_gone)
                    spool = None
                self._put(channel.pages, item, consumer_gone)
        except (_ConsumerGoneError, ScanCancelledError):
            scan.close()
        finally:
            if spool is not None:
                spool.close()

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
        pages: queue.Queue[t.Any],
        item: object,
        consumer_gone: threading.Event,
    ) -> None:
        while not consumer_gone.is_set():
            try:
                pages.put(item, timeout=_QUEUE_POLL_SECONDS)
            except queue.Full:
                continue
            return
        raise _ConsumerGoneError


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

