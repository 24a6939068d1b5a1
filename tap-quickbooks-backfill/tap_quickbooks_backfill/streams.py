"""Streams of the tap: one per QBO entity, plus the window audit stream."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import typing as t

from singer_sdk import Stream
from singer_sdk import typing as th
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import DefaultStreamMap
from singer_sdk.singerlib import RecordMessage

from tap_quickbooks_backfill.extraction import (
    OUTCOME_COMPLETE,
    CompletePrefix,
    NewestVersions,
    WindowAudit,
    WindowExtractor,
    utc_iso,
    window_summary,
)
from tap_quickbooks_backfill.rows import payload_object
from tap_quickbooks_backfill.windows import cut_windows, resume_start

try:
    from typing import override  # type: ignore[attr-defined]
except ImportError:  # Python 3.11
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_quickbooks_backfill.tap import TapQuickBooksBackfill

WINDOW_STREAM_NAME = "qb_extract_windows"

RAW_RECORD_SCHEMA = th.PropertiesList(
    th.Property("id", th.StringType, required=True, description="QBO Id"),
    th.Property(
        "payload",
        th.ObjectType(additional_properties=True),
        required=True,
        description="The QBO object, unchanged",
    ),
    th.Property(
        "ingested_at_utc",
        th.DateTimeType,
        required=True,
        description="When the tap read the record, UTC",
    ),
    th.Property("extract_window_start_utc", th.DateTimeType, required=True),
    th.Property(
        "extract_window_end_utc",
        th.DateTimeType,
        required=True,
        description="End of the window that read the record (exclusive)",
    ),
    th.Property("page_number", th.IntegerType, required=True),
    th.Property("page_size", th.IntegerType, required=True),
    th.Property(
        "request_payload",
        th.ObjectType(
            th.Property("query", th.StringType),
            th.Property("start_position", th.IntegerType),
            th.Property("max_results", th.IntegerType),
            th.Property("minor_version", th.IntegerType),
            th.Property("realm_id", th.StringType),
        ),
        required=True,
        description="The query that returned the record; never a credential",
    ),
    th.Property("last_updated_utc", th.DateTimeType, description="MetaData.LastUpdatedTime"),
    th.Property("created_utc", th.DateTimeType, description="MetaData.CreateTime"),
    th.Property("sync_token", th.StringType),
    th.Property("active", th.BooleanType, description="Active flag; null for invoices"),
).to_dict()

WINDOW_AUDIT_SCHEMA = th.PropertiesList(
    th.Property("entity", th.StringType, required=True, description="QBO entity name"),
    th.Property("window_start_utc", th.DateTimeType, required=True),
    th.Property("window_end_utc", th.DateTimeType, required=True),
    th.Property("window_field", th.StringType, required=True),
    th.Property(
        "qbo_count",
        th.IntegerType,
        description=(
            "Records in the window when its scan started: QBO COUNT(*), or the rows of "
            "a first page that holds the whole window"
        ),
    ),
    th.Property("records_emitted", th.IntegerType, required=True),
    th.Property("pages", th.IntegerType, required=True),
    th.Property("requests", th.IntegerType, required=True),
    th.Property("retries", th.IntegerType, required=True),
    th.Property("throttles", th.IntegerType, required=True),
    th.Property("started_at_utc", th.DateTimeType, required=True),
    th.Property("finished_at_utc", th.DateTimeType),
    th.Property("run_id", th.StringType, required=True),
    th.Property("outcome", th.StringType, required=True, description="complete or failed"),
).to_dict()


class ExtractWindowsStream(Stream):
    """Audit of each extracted window: written by the entity streams as they go.

    The entity streams emit these records right after each window's last record, so
    this stream's own sync emits nothing.
    """

    name = WINDOW_STREAM_NAME
    primary_keys = ("entity", "window_start_utc", "window_end_utc")
    schema = WINDOW_AUDIT_SCHEMA
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: ANN401
        """Create the stream; its SCHEMA message is written at most once."""
        super().__init__(*args, **kwargs)
        self._schema_written = False

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        return []

    def write_audit(self, audit: WindowAudit) -> None:
        """Write one audit record, preceded by this stream's SCHEMA message once.

        Args:
            audit: The finished (or failed) window.
        """
        if not self.selected:
            return

        if not self._schema_written:
            self._write_schema_message()
            self._schema_written = True

        self._write_record_message(audit.to_record())


class EntityStream(Stream):
    """Raw records of one QBO entity, extracted window by window.

    The bookmark (``replication_key_value``) is the end of the last window of the
    unbroken run of complete windows at the start of the range: every record before
    it was emitted. Windows fetched at once interleave their records, so the stream
    is not sorted record by record, but its bookmark only moves forward.
    """

    entity: t.ClassVar[str]
    primary_keys = ("id",)
    replication_key = "extract_window_end_utc"
    # Records of windows fetched at once interleave. The bookmark is set by
    # _finish_window, never from the records themselves.
    is_sorted = False
    schema = RAW_RECORD_SCHEMA
    # Records are built from JSON-native values already; conforming them would only
    # walk every payload again.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    @property
    def qbo_tap(self) -> TapQuickBooksBackfill:
        """The tap that owns this stream."""
        return t.cast("TapQuickBooksBackfill", self._tap)

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        tap = self.qbo_tap
        settings = tap.settings
        assert settings.start_date is not None  # noqa: S101 - required by the checks
        assert settings.end_date is not None  # noqa: S101 - filled in by the checks

        end = self._effective_end(settings.end_date, tap.run_started_at)
        bookmark = self._bookmark()
        first = resume_start(settings.start_date, end, bookmark)
        if first is None:
            self.logger.info(
                "%s: bookmark %s is at or after the end %s; nothing to extract",
                self.name,
                utc_iso(bookmark) if bookmark else "-",
                utc_iso(end),
            )
            return

        windows = list(cut_windows(first, end, settings.window_size))
        self.logger.info(
            "%s: extracting %s over [%s, %s) in %d windows of %s by %s",
            self.name,
            self.entity,
            utc_iso(first),
            utc_iso(end),
            len(windows),
            self.config.get("window_size") or "7d",
            settings.window_field,
        )

        extractor = WindowExtractor(
            tap.client,
            self.entity,
            window_field=settings.window_field,
            page_size=settings.page_size,
            run_id=tap.run_id,
            window_concurrency=settings.window_concurrency,
        )
        prefix = CompletePrefix(windows)
        versions = NewestVersions(tap.run_started_at)
        for item in extractor.run(windows):
            if isinstance(item, WindowAudit):
                self._finish_window(item, prefix)
            elif self._payload_as_objects:
                for record in versions.filter(item):
                    record["payload"] = payload_object(record["payload"])
                    yield record
            else:
                yield from versions.filter(item)
        if versions.dropped:
            self.logger.info(
                "%s: %d records were not emitted because this run had already emitted "
                "a newer version of them (QBO's clock is behind this machine's)",
                self.name,
                versions.dropped,
            )

    @functools.cached_property
    def _payload_as_objects(self) -> bool:
        # Stream maps (their filters too) and flattening read the payload's keys, and
        # the SDK applies them before _generate_record_messages. Otherwise the payload
        # stays QBO's JSON, written into the message as it came.
        custom_map = any(
            not isinstance(stream_map, DefaultStreamMap) for stream_map in self.stream_maps
        )
        return custom_map or bool(self.config.get("flattening_enabled"))

    @functools.cached_property
    def _deselected_properties(self) -> tuple[str, ...]:
        # The catalog's selection is fixed before the first record.
        return tuple(
            name for name in self.schema["properties"] if not self.mask[("properties", name)]
        )

    @override
    def _generate_record_messages(
        self,
        record: dict[str, t.Any],
    ) -> Iterator[RecordMessage]:
        # Only top-level properties can be deselected here. The SDK's default walks
        # every nested key of the payload against the selection mask, which costs more
        # than the rest of the record's processing together.
        for name in self._deselected_properties:
            record.pop(name, None)

        extracted_at = dt.datetime.now(dt.UTC)
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=extracted_at,
                )

    @override
    def _increment_stream_state(
        self,
        latest_record: dict[str, t.Any],
        *,
        context: Context | None = None,
    ) -> None:
        # The bookmark moves in _finish_window only, once a whole window was emitted;
        # moving it per record would mark a half-read window as done.
        return

    def _effective_end(self, end_date: dt.datetime, run_started_at: dt.datetime) -> dt.datetime:
        # A window that ends in the future is not complete yet: records can still be
        # written into it, so a bookmark there would skip them on the next run.
        now = run_started_at.replace(microsecond=0)
        if end_date <= now:
            return end_date

        self.logger.warning(
            "%s: end_date %s is in the future; extracting up to the run's start %s",
            self.name,
            utc_iso(end_date),
            utc_iso(now),
        )
        return now

    def _bookmark(self) -> dt.datetime | None:
        state = self.get_context_state(None)
        if state.get("replication_key") != self.replication_key:
            return None

        value = state.get("replication_key_value")
        if not value:
            return None

        instant = dt.datetime.fromisoformat(str(value))
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=dt.UTC)
        return instant.astimezone(dt.UTC)

    def _finish_window(self, audit: WindowAudit, prefix: CompletePrefix) -> None:
        # The SDK writes each record before asking for the next one, so every record
        # of this window is already out when its audit arrives here. Windows fetched
        # at once finish in any order, so the bookmark passes only the complete
        # windows at the start of the range.
        self.qbo_tap.window_stream.write_audit(audit)

        message, arguments = window_summary(audit)
        level = logging.INFO if audit.outcome == OUTCOME_COMPLETE else logging.ERROR
        self.logger.log(level, message, *arguments)
        if audit.outcome != OUTCOME_COMPLETE:
            return

        if audit.qbo_count is not None and audit.qbo_count != audit.records_emitted:
            self.logger.warning(
                "%s window %s: QBO counted %d records when the scan started but %d "
                "were emitted; records edited during the scan explain a difference",
                audit.entity,
                audit.window,
                audit.qbo_count,
                audit.records_emitted,
            )

        if not prefix.add(audit.window) or prefix.last is None:
            return

        state = self.get_context_state(None)
        state["replication_key"] = self.replication_key
        state["replication_key_value"] = utc_iso(prefix.last.end)
        self.state_manager.is_flushed = False
        self._write_state_message()


class InvoicesStream(EntityStream):
    """QBO Invoices."""

    name = "qb_invoices_raw"
    entity = "Invoice"


class CustomersStream(EntityStream):
    """QBO Customers, active and inactive."""

    name = "qb_customers_raw"
    entity = "Customer"


class ItemsStream(EntityStream):
    """QBO Items, active and inactive."""

    name = "qb_items_raw"
    entity = "Item"


ENTITY_STREAM_TYPES: tuple[type[EntityStream], ...] = (
    InvoicesStream,
    CustomersStream,
    ItemsStream,
)
