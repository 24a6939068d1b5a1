"""Cutting a UTC range into half-open extraction windows."""

from __future__ import annotations

import datetime as dt
import typing as t
from dataclasses import dataclass

if t.TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass(frozen=True, order=True)
class Window:
    """A half-open UTC interval ``[start, end)`` that one scan extracts."""

    start: dt.datetime
    end: dt.datetime

    def __str__(self) -> str:
        """Format the window as ``[start, end)`` in ISO 8601."""
        return f"[{format_utc(self.start)}, {format_utc(self.end)})"


def format_utc(instant: dt.datetime) -> str:
    """Format an aware instant as ISO 8601 in UTC with a ``Z`` suffix, whole seconds.

    Args:
        instant: An aware datetime.

    Returns:
        For example ``2023-02-18T20:57:24Z``.
    """
    utc = instant.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def cut_windows(
    start: dt.datetime,
    end: dt.datetime,
    size: dt.timedelta,
) -> Iterator[Window]:
    """Cut ``[start, end)`` into consecutive windows of ``size``, the last one shorter.

    Consecutive windows share their boundary, so they neither overlap nor leave a gap.

    Args:
        start: First instant of the range (inclusive).
        end: Last instant of the range (exclusive).
        size: Length of every window but the last.

    Yields:
        The windows in time order. An empty range yields nothing.

    Raises:
        ValueError: If ``size`` is not positive.
    """
    if size <= dt.timedelta(0):
        msg = f"window size must be positive, got {size}"
        raise ValueError(msg)

    window_start = start
    while window_start < end:
        window_end = min(window_start + size, end)
        yield Window(window_start, window_end)
        window_start = window_end


def resume_start(
    start: dt.datetime,
    end: dt.datetime,
    bookmark: dt.datetime | None,
) -> dt.datetime | None:
    """Choose where a run begins, given the stream's bookmark.

    Args:
        start: The configured ``start_date``.
        end: The configured (or implied) ``end_date``.
        bookmark: End of the last completed window, from the stream state.

    Returns:
        The bookmark when it lies inside ``[start, end)``, ``start`` when there is no
        bookmark or it lies before ``start``, and ``None`` when the bookmark is at or
        after ``end``, because then the whole range was already extracted.
    """
    if bookmark is None or bookmark < start:
        return start

    if bookmark >= end:
        return None

    return bookmark
