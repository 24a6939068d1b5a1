"""The tap: config schema (the one declaration of every setting) and stream list."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import typing as t
import uuid
from functools import cached_property

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import CapabilitiesEnum, PluginCapabilities

from tap_quickbooks_backfill.client import QBOClient
from tap_quickbooks_backfill.errors import QBOError
from tap_quickbooks_backfill.settings import (
    DEFAULTS,
    INTUIT_TOKEN_URL,
    MAX_CONCURRENT_REQUESTS,
    MAX_NICENESS,
    MAX_PAGE_SIZE,
    MAX_WINDOW_CONCURRENCY,
    WINDOW_FIELDS,
    Settings,
    SettingsError,
    parse_settings,
)
from tap_quickbooks_backfill.streams import (
    ENTITY_STREAM_TYPES,
    WINDOW_STREAM_NAME,
    ExtractWindowsStream,
)
from tap_quickbooks_backfill.writer import BlockMsgSpecWriter

try:
    from typing import override  # type: ignore[attr-defined]
except ImportError:  # Python 3.11
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk import Stream

LOGGER = logging.getLogger("tap_quickbooks_backfill")

def build_config_schema() -> dict[str, t.Any]:
    """Build the tap's config JSON Schema: the one declaration of every setting.

    Returns:
        A new dict on every call, because singer-sdk appends its built-in settings to
        the schema a tap class holds.
    """
    return th.PropertiesList(
        th.Property(
            "client_id",
            th.StringType,
            required=True,
            secret=True,
            description="OAuth client ID of the Intuit app.",
        ),
        th.Property(
            "client_secret",
            th.StringType,
            required=True,
            secret=True,
            description="OAuth client secret of the Intuit app.",
        ),
        th.Property(
            "refresh_token",
            th.StringType,
            required=True,
            secret=True,
            description=(
                "OAuth refresh token of the company. A newer token rotated into "
                "token_store_path is used in its place, unless this value changed since "
                "it seeded the store (an operator's replacement)."
            ),
        ),
        th.Property(
            "realm_id",
            th.StringType,
            required=True,
            description="QBO company (realm) ID.",
        ),
        th.Property(
            "environment",
            th.StringType,
            default=DEFAULTS["environment"],
            allowed_values=["production", "sandbox"],
            description="Intuit environment, which chooses the API base URL.",
        ),
        th.Property(
            "api_base_url",
            th.StringType,
            description=(
                "API base URL, overriding the environment's (for example the local QBO "
                "emulator's http://127.0.0.1:8765)."
            ),
        ),
        th.Property(
            "token_url",
            th.StringType,
            default=INTUIT_TOKEN_URL,
            description="OAuth 2.0 token endpoint.",
        ),
        th.Property(
            "start_date",
            th.StringType,
            required=True,
            description=(
                "First instant of the backfill (inclusive), ISO 8601; a date or a "
                "date-time without offset is read as UTC."
            ),
        ),
        th.Property(
            "end_date",
            th.StringType,
            description=(
                "End of the backfill (exclusive), ISO 8601, read like start_date. When "
                "unset, the time the run starts."
            ),
        ),
        th.Property(
            "window_size",
            th.StringType,
            default=DEFAULTS["window_size"],
            description="Length of one window: a whole number and m, h, d or w (7d, 12h).",
        ),
        th.Property(
            "window_field",
            th.StringType,
            default=DEFAULTS["window_field"],
            allowed_values=list(WINDOW_FIELDS),
            description="MetaData timestamp that places a record in a window.",
        ),
        th.Property(
            "page_size",
            th.IntegerType,
            default=MAX_PAGE_SIZE,
            description=f"MAXRESULTS of each query page, 1 to {MAX_PAGE_SIZE}.",
        ),
        th.Property(
            "max_requests_per_minute",
            th.IntegerType,
            default=DEFAULTS["max_requests_per_minute"],
            description="Client-side limit of query requests per minute (QBO allows 500).",
        ),
        th.Property(
            "max_requests_per_second",
            th.IntegerType,
            default=DEFAULTS["max_requests_per_second"],
            description="Client-side limit of query requests per second (QBO allows 10).",
        ),
        th.Property(
            "max_concurrent_requests",
            th.IntegerType,
            default=MAX_CONCURRENT_REQUESTS,
            description=(
                f"Query requests in flight at once, 1 to {MAX_CONCURRENT_REQUESTS}, shared "
                "by the taps of the company that use the same token_store_path."
            ),
        ),
        th.Property(
            "window_concurrency",
            th.IntegerType,
            default=DEFAULTS["window_concurrency"],
            description=(
                f"Windows fetched at once, 1 to {MAX_WINDOW_CONCURRENCY}; their pages "
                "are emitted as they arrive, and the bookmark passes complete windows "
                "only."
            ),
        ),
        th.Property(
            "minor_version",
            th.IntegerType,
            default=DEFAULTS["minor_version"],
            description="QBO API minor version.",
        ),
        th.Property(
            "request_timeout",
            th.NumberType,
            default=DEFAULTS["request_timeout"],
            description="Seconds to wait for one HTTP response (QBO stops at 120).",
        ),
        th.Property(
            "user_agent",
            th.StringType,
            default=DEFAULTS["user_agent"],
            description="User-Agent header of every request.",
        ),
        th.Property(
            "token_store_path",
            th.StringType,
            default=DEFAULTS["token_store_path"],
            description=(
                "Folder of rotated refresh tokens, one owner-only JSON file per realm; "
                "relative paths start at the working directory."
            ),
        ),
        th.Property(
            "max_retries",
            th.IntegerType,
            default=DEFAULTS["max_retries"],
            description=(
                "Retries of one request after 429, 5xx, timeouts, dropped connections and "
                "401 (after a token refresh)."
            ),
        ),
        th.Property(
            "throttle_wait_seconds",
            th.NumberType,
            default=DEFAULTS["throttle_wait_seconds"],
            description="Seconds to wait after a 429 that has no Retry-After header.",
        ),
        th.Property(
            "cpu_niceness",
            th.IntegerType,
            default=DEFAULTS["cpu_niceness"],
            description=(
                f"nice(1) increment of the tap process during a sync, 0 to {MAX_NICENESS}, "
                "so that the loader gets the CPU first."
            ),
        ),
    ).to_dict()


CONFIG_SCHEMA = build_config_schema()


def lower_cpu_priority(increment: int) -> None:
    """Add ``increment`` to this process's nice value; 0 changes nothing.

    In ``meltano run`` the loader usually needs more CPU than the tap, and Meltano
    buffers the tap's output, so a tap with a lower priority loses nothing and leaves
    the loader a whole core on a small machine.

    Args:
        increment: 0 to 19.
    """
    if increment <= 0:
        return

    niceness = os.nice(increment)
    LOGGER.info("Lowered the tap's CPU priority: nice value %d", niceness)


class TapQuickBooksBackfill(Tap):
    """Singer tap that backfills QBO Invoice, Customer and Item in UTC windows."""

    name = "tap-quickbooks-backfill"
    config_jsonschema = CONFIG_SCHEMA
    # msgspec serializes the large QBO payloads several times faster than the
    # default simplejson writer; blocks spare a flush per record.
    message_writer_class = BlockMsgSpecWriter
    # No BATCH: each window's STATE message follows its RECORD messages, which a
    # batch file written at the end of the stream would not.
    capabilities: t.ClassVar[list[CapabilitiesEnum]] = [
        capability for capability in Tap.capabilities
        if capability != PluginCapabilities.BATCH
    ]

    @classmethod
    @override
    def invoke(cls, **kwargs: t.Any) -> None:  # type: ignore[override]
        try:
            super().invoke(**kwargs)
        except QBOError as exc:
            # Each of these messages states what failed and what to do next. The
            # traceback that singer-sdk would log below it points into the tap's own
            # code and does not help anyone fix a token, a realm or a query.
            cls.logger.error("%s", exc)  # noqa: TRY400
            sys.exit(1)

    @override
    def sync_all(self) -> None:
        lower_cpu_priority(self.settings.cpu_niceness)
        try:
            super().sync_all()
        finally:
            # Records after the last STATE message (a failed window's) still reach
            # the target, which upserts them; a later run completes the window.
            t.cast("BlockMsgSpecWriter", self.message_writer).flush_block()

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        schema_errors = super()._validate_config(raise_errors=False)
        errors: list[str] = []
        try:
            self._settings = parse_settings(self.config, now=self.run_started_at)
        except SettingsError as exc:
            errors.extend(exc.errors)

        # The settings checks cover every setting in plainer words than the JSON
        # Schema errors, which would repeat them; those only show when the checks pass.
        if not errors:
            errors.extend(schema_errors)
        if errors and raise_errors:
            from singer_sdk.exceptions import ConfigValidationError  # noqa: PLC0415

            raise ConfigValidationError(
                "Config validation failed", errors=errors, schema=self.config_jsonschema
            )
        return errors

    @cached_property
    def run_started_at(self) -> dt.datetime:
        """When this run started, UTC: the end of the range when end_date is unset."""
        return dt.datetime.now(dt.UTC)

    @property
    def settings(self) -> Settings:
        """Validated settings of this run; checked on first use when not yet checked.

        Raises:
            SettingsError: If the config is invalid.
        """
        settings = getattr(self, "_settings", None)
        if settings is None:
            settings = parse_settings(self.config, now=self.run_started_at)
            self._settings = settings
        return settings

    @cached_property
    def client(self) -> QBOClient:
        """The QBO client that every stream of this run shares."""
        return QBOClient(self.settings)

    @cached_property
    def run_id(self) -> str:
        """Id of this run: ``MELTANO_RUN_ID`` when set, else a new UUID."""
        return os.environ.get("MELTANO_RUN_ID") or str(uuid.uuid4())

    @property
    def window_stream(self) -> ExtractWindowsStream:
        """The ``qb_extract_windows`` stream."""
        return t.cast("ExtractWindowsStream", self.streams[WINDOW_STREAM_NAME])

    @override
    def discover_streams(self) -> list[Stream]:
        streams: list[Stream] = [stream_type(tap=self) for stream_type in ENTITY_STREAM_TYPES]
        streams.append(ExtractWindowsStream(tap=self))
        return streams


if __name__ == "__main__":
    TapQuickBooksBackfill.cli()
