"""UTC instants, window sizes and the coverage check of recorded windows.

Windows are half-open UTC intervals ``[start, end)``: a record whose window field
equals ``end`` belongs to the next window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

# The units of the tap's window_size setting, so a size printed here can be passed
# to the tap unchanged.
_SIZE_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1),
               "h": timedelta(hours=1), "m": timedelta(minutes=1)}
_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*([wdhm])\s*$", re.IGNORECASE)


def parse_utc(text: str) -> datetime:
    """Parse a date or ISO 8601 instant into an aware UTC datetime.

    A bare date means midnight UTC, an instant without an offset is taken as UTC,
    and an instant with an offset is converted to UTC.

    Raises:
        ValueError: If the text is neither a date nor an ISO 8601 instant.
    """
    value = text.strip()
    try:
        if len(value) == len("2024-01-01"):
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        instant = datetime.fromisoformat(value)
    except ValueError:
        msg = (
            f"invalid date or instant {text!r}: use ISO 8601, for example "
            "2024-01-01 or 2024-01-01T00:00:00Z"
        )
        raise ValueError(msg) from None

    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def as_utc(value: datetime) -> datetime:
    """Return an aware datetime converted to UTC; a naive one is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """Format an instant as ``2024-01-01T00:00:00Z``, the form QBO queries accept."""
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_window_size(text: str) -> timedelta:
    """Parse a window size such as ``7d``, ``12h``, ``30m`` or ``2w``.

    Raises:
        ValueError: If the text is not a positive whole number followed by a unit.
    """
    match = _SIZE_PATTERN.match(text)
    if match is None or int(match.group(1)) == 0:
        msg = (
            f"invalid window size {text!r}: use a positive whole number and a unit "
            "w, d, h or m, for example 7d or 12h"
        )
        raise ValueError(msg)
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def format_window_size(size: timedelta) -> str:
    """Format a duration in the largest unit of ``d``, ``h``, ``m`` that divides it.

    The result parses back to the same duration with :func:`parse_window_size`.

    Raises:
        ValueError: If the duration is not a positive whole number of minutes.
    """
    seconds = size.total_seconds()
    for unit in ("d", "h", "m"):
        unit_seconds = _SIZE_UNITS[unit].total_seconds()
        if seconds > 0 and seconds % unit_seconds == 0:
            return f"{int(seconds // unit_seconds)}{unit}"
    msg = f"window size {size} is not a positive whole number of minutes"
    raise ValueError(msg)


def cut_windows(
    start: datetime, end: datetime, size: timedelta
) -> list[tuple[datetime, datetime]]:
    """Cut ``[start, end)`` into consecutive windows of ``size``; the last may be short.

    Raises:
        ValueError: If ``end`` is not after ``start`` or ``size`` is not positive.
    """
    if end <= start:
        msg = f"range end {format_utc(end)} is not after its start {format_utc(start)}"
        raise ValueError(msg)
    if size <= timedelta(0):
        msg = f"window size {size} is not positive"
        raise ValueError(msg)

    windows = []
    cursor = start
    while cursor < end:
        window_end = min(cursor + size, end)
        windows.append((cursor, window_end))
        cursor = window_end
    return windows


@dataclass(frozen=True)
class CoverageIssue:
    """A stretch of the validated range that recorded windows leave uncovered or cover twice.

    Attributes:
        kind: ``gap`` or ``overlap``.
        entity: Entity name on the command line.
        start: Start of the stretch, UTC.
        end: End of the stretch (exclusive), UTC.
        windows: The recorded windows on either side of a gap, or the two
            overlapping windows, as ``(start, end)`` pairs.
    """

    kind: str
    entity: str
    start: datetime
    end: datetime
    windows: tuple[tuple[datetime, datetime], ...]

    def describe(self) -> str:
        """Return a one-line description naming the stretch and the windows."""
        stretch = f"[{format_utc(self.start)}, {format_utc(self.end)})"
        if self.kind == "gap":
            return f"{self.entity}: no recorded window covers {stretch}"
        first, second = self.windows
        return (
            f"{self.entity}: windows [{format_utc(first[0])}, {format_utc(first[1])}) "
            f"and [{format_utc(second[0])}, {format_utc(second[1])}) overlap on {stretch}"
        )


def check_coverage(
    entity: str,
    windows: list[tuple[datetime, datetime]],
    range_start: datetime,
    range_end: datetime,
) -> list[CoverageIssue]:
    """Find the gaps and overlaps of recorded windows over ``[range_start, range_end)``.

    Windows that lie wholly outside the range are ignored. A window that starts
    inside an earlier one overlaps it, even when both were recorded by runs that
    completed; the upserts keep the data right, but the per-window counts then
    describe the same records twice.

    Args:
        entity: Entity name, copied into each issue.
        windows: Recorded ``(start, end)`` pairs in any order.
        range_start: Start of the validated range.
        range_end: End of the validated range (exclusive).

    Returns:
        Issues ordered by start.
    """
    relevant = sorted(
        (start, end) for start, end in windows if start < range_end and end > range_start
    )
    issues: list[CoverageIssue] = []
    covered_until = range_start
    previous: tuple[datetime, datetime] | None = None
    furthest: tuple[datetime, datetime] | None = None

    for window in relevant:
        start, end = window
        if start > covered_until:
            neighbours = tuple(w for w in (previous, window) if w is not None)
            issues.append(CoverageIssue("gap", entity, covered_until, start, neighbours))
        elif furthest is not None and start < furthest[1]:
            overlap_end = min(end, furthest[1])
            issues.append(
                CoverageIssue("overlap", entity, start, overlap_end, (furthest, window))
            )

        if furthest is None or end > furthest[1]:
            furthest = window
        covered_until = max(covered_until, end)
        previous = window

    if covered_until < range_end:
        neighbours = (previous,) if previous is not None else ()
        issues.append(CoverageIssue("gap", entity, covered_until, range_end, neighbours))
    return issues
