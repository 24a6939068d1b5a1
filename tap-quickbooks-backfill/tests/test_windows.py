"""Cutting ranges into windows and choosing where a run resumes."""

from __future__ import annotations

import datetime as dt

from tap_quickbooks_backfill.windows import Window, cut_windows, resume_start


def at(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2023, 2, day, hour, tzinfo=dt.UTC)


def test_windows_cover_range_without_gaps():
    windows = list(cut_windows(at(1), at(20), dt.timedelta(days=7)))

    assert windows == [
        Window(at(1), at(8)),
        Window(at(8), at(15)),
        Window(at(15), at(20)),
    ]


def test_consecutive_windows_share_boundaries():
    windows = list(cut_windows(at(1), at(3, 5), dt.timedelta(hours=7)))

    assert windows[0].start == at(1)
    assert windows[-1].end == at(3, 5)
    for previous, following in zip(windows, windows[1:], strict=False):
        assert previous.end == following.start


def test_empty_range_has_no_windows():
    assert list(cut_windows(at(5), at(5), dt.timedelta(days=1))) == []


def test_resume_without_bookmark_starts_at_start_date():
    assert resume_start(at(1), at(20), None) == at(1)


def test_resume_inside_range_starts_at_bookmark():
    assert resume_start(at(1), at(20), at(8)) == at(8)


def test_resume_before_range_starts_at_start_date():
    assert resume_start(at(10), at(20), at(8)) == at(10)


def test_bookmark_at_end_means_nothing_to_do():
    assert resume_start(at(1), at(20), at(20)) is None
    assert resume_start(at(1), at(20), at(25)) is None


def test_window_prints_as_half_open_utc_interval():
    assert str(Window(at(1), at(8))) == "[2023-02-01T00:00:00Z, 2023-02-08T00:00:00Z)"
