"""Timestamps as QBO writes and reads them, in the company's time zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?)?$"
)


class CompanyClock:
    """Clock and formatter in the company's time zone.

    The clock is the machine's clock plus an offset that tests may move
    forward, so token expiry and CDC windows can be tested without waiting.
    """

    def __init__(self, tz_name: str, offset_seconds: float = 0.0) -> None:
        self.tz = ZoneInfo(tz_name)
        self.tz_name = tz_name
        self.offset_seconds = offset_seconds

    def now(self) -> float:
        """Return the emulator's current time as epoch seconds."""
        return datetime.now(UTC).timestamp() + self.offset_seconds

    def format_seconds(self, epoch_seconds: float) -> str:
        """Format an instant as QBO's whole-second local time with offset."""
        return datetime.fromtimestamp(int(epoch_seconds), self.tz).isoformat()

    def format_millis(self, epoch_seconds: float) -> str:
        """Format an instant with milliseconds, as in a response's ``time``."""
        moment = datetime.fromtimestamp(epoch_seconds, self.tz)
        return moment.isoformat(timespec="milliseconds")

    def local_epoch(self, year: int, month: int, day: int, hour: int = 0,
                    minute: int = 0, second: int = 0, fold: int = 0) -> int:
        """Return epoch seconds of a wall-clock time in the company zone."""
        moment = datetime(year, month, day, hour, minute, second, tzinfo=self.tz,
                          fold=fold)
        return int(moment.timestamp())

    def parse_literal(self, text: str) -> float:
        """Parse a query's date or datetime literal into epoch seconds.

        A literal without an offset is read in the company's time zone.

        Raises:
            ValueError: the text is not a date or an ISO 8601 datetime.
        """
        match = _DATETIME_RE.match(text.strip())
        if match is None:
            raise ValueError(f"invalid date or datetime literal: {text!r}")
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        tz: timezone | ZoneInfo = self.tz
        if offset == "Z":
            tz = UTC
        elif offset:
            sign = 1 if offset[0] == "+" else -1
            digits = offset[1:].replace(":", "")
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            tz = timezone(sign * delta)
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0),
            int(second or 0), tzinfo=tz,
        )
        value = moment.timestamp()
        if fraction:
            value += float("0." + fraction)
        return value
