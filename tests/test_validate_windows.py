"""Window sizes, UTC parsing and the coverage check of recorded windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qbo_backfill.validation_checks import rerun_command
from qbo_backfill.validation_entities import ENTITIES, entities_for, window_field_for
from qbo_backfill.validation_windows import (
    check_coverage,
    cut_windows,
    format_window_size,
    parse_utc,
    parse_window_size,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T05:00:00Z", datetime(2024, 1, 1, 5, tzinfo=UTC)),
        ("2024-01-01T05:00:00", datetime(2024, 1, 1, 5, tzinfo=UTC)),
        ("2023-02-18T12:57:24-08:00", datetime(2023, 2, 18, 20, 57, 24, tzinfo=UTC)),
    ],
)
def test_parse_utc_converts_to_utc(text: str, expected: datetime) -> None:
    assert parse_utc(text) == expected
    assert parse_utc(text).utcoffset() == timedelta(0)


def test_parse_utc_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="invalid date or instant 'yesterday'"):
        parse_utc("yesterday")


@pytest.mark.parametrize(
    ("text", "size"),
    [("7d", timedelta(days=7)), ("12h", 12 * H), ("30m", timedelta(minutes=30)),
     ("2w", timedelta(weeks=2))],
)
def test_window_size_round_trip(text: str, size: timedelta) -> None:
    assert parse_window_size(text) == size
    assert parse_window_size(format_window_size(size)) == size


@pytest.mark.parametrize("text", ["0d", "7", "d", "1.5d", "10s", "-1d"])
def test_window_size_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid window size"):
        parse_window_size(text)


def test_format_window_size_picks_largest_unit() -> None:
    assert format_window_size(timedelta(days=2)) == "2d"
    assert format_window_size(timedelta(hours=36)) == "36h"
    assert format_window_size(timedelta(minutes=90)) == "90m"
    with pytest.raises(ValueError, match="whole number of minutes"):
        format_window_size(timedelta(seconds=90))


def test_cut_windows_is_contiguous_with_short_tail() -> None:
    windows = cut_windows(T0, T0 + 5 * H, 2 * H)

    assert windows == [(T0, T0 + 2 * H), (T0 + 2 * H, T0 + 4 * H), (T0 + 4 * H, T0 + 5 * H)]


def test_cut_windows_rejects_empty_range() -> None:
    with pytest.raises(ValueError, match="is not after its start"):
        cut_windows(T0, T0, H)


def test_contiguous_windows_cover_range() -> None:
    windows = [(T0 + i * H, T0 + (i + 1) * H) for i in range(4)]

    assert check_coverage("items", windows, T0, T0 + 4 * H) == []


def test_coverage_reports_inner_and_edge_gaps() -> None:
    windows = [(T0 + H, T0 + 2 * H), (T0 + 3 * H, T0 + 4 * H)]

    issues = check_coverage("items", windows, T0, T0 + 5 * H)

    assert [(i.kind, i.start, i.end) for i in issues] == [
        ("gap", T0, T0 + H),
        ("gap", T0 + 2 * H, T0 + 3 * H),
        ("gap", T0 + 4 * H, T0 + 5 * H),
    ]
    assert issues[1].describe() == (
        "items: no recorded window covers [2024-01-01T02:00:00Z, 2024-01-01T03:00:00Z)"
    )


def test_coverage_without_windows_is_one_gap() -> None:
    issues = check_coverage("items", [], T0, T0 + H)

    assert [(i.kind, i.start, i.end) for i in issues] == [("gap", T0, T0 + H)]


def test_coverage_reports_overlap() -> None:
    windows = [(T0, T0 + 2 * H), (T0 + H, T0 + 3 * H)]

    issues = check_coverage("items", windows, T0, T0 + 3 * H)

    assert [(i.kind, i.start, i.end) for i in issues] == [("overlap", T0 + H, T0 + 2 * H)]
    assert "overlap on [2024-01-01T01:00:00Z, 2024-01-01T02:00:00Z)" in issues[0].describe()


def test_coverage_ignores_windows_outside_range() -> None:
    windows = [(T0 - 2 * H, T0 - H), (T0, T0 + H), (T0 + 5 * H, T0 + 6 * H)]

    assert check_coverage("items", windows, T0, T0 + H) == []


def test_window_end_is_exclusive_in_coverage() -> None:
    # [0, 1h) and [1h, 2h) touch at 1h: no gap and no overlap.
    windows = [(T0, T0 + H), (T0 + H, T0 + 2 * H)]

    assert check_coverage("items", windows, T0, T0 + 2 * H) == []


def test_entity_selection() -> None:
    assert [spec.name for spec in entities_for("all")] == ["invoices", "customers", "items"]
    assert entities_for("items")[0].qbo_entity == "Item"
    with pytest.raises(ValueError, match="unknown entity 'bills'"):
        entities_for("bills")


def test_window_field_accepts_setting_and_property() -> None:
    assert window_field_for("LastUpdatedTime").column == "last_updated_utc"
    assert window_field_for("MetaData.CreateTime").column == "created_utc"
    with pytest.raises(ValueError, match="unknown window field"):
        window_field_for("TxnDate")


def test_rerun_command_for_one_window() -> None:
    command = rerun_command(ENTITIES["customers"], T0, T0 + 6 * H,
                            environment="prod", one_window=True)

    assert command == (
        "TAP_QB_CUSTOMERS_START_DATE=2024-01-01T00:00:00Z "
        "TAP_QB_CUSTOMERS_END_DATE=2024-01-01T06:00:00Z TAP_QB_CUSTOMERS_WINDOW_SIZE=6h "
        "meltano --environment=prod run "
        "--state-id-suffix=rerun-20240101T000000Z-20240101T060000Z "
        "tap-qb-customers target-postgres"
    )


def test_rerun_command_for_gap_keeps_window_size() -> None:
    command = rerun_command(ENTITIES["items"], T0, T0 + 6 * H,
                            environment=None, one_window=False)

    assert "WINDOW_SIZE" not in command
    assert " meltano run " in command
