"""Text of the QBO queries the tap sends, in QBO's SQL-like query language."""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    import datetime as dt

from tap_quickbooks_backfill.windows import format_utc

ENTITIES = ("Invoice", "Customer", "Item")

# Customer and Item are name-list entities: QBO returns only active rows unless the
# query asks for both states explicitly.
NAME_LIST_ENTITIES = frozenset({"Customer", "Item"})


def field_path(window_field: str) -> str:
    """Return the query property of a window field.

    Args:
        window_field: ``LastUpdatedTime`` or ``CreateTime``, with or without the
            ``MetaData.`` prefix.

    Returns:
        For example ``MetaData.LastUpdatedTime``.

    Raises:
        ValueError: If the field is neither of the two.
    """
    name = window_field.removeprefix("MetaData.")
    if name not in {"LastUpdatedTime", "CreateTime"}:
        msg = f"window field {window_field!r} is invalid: use LastUpdatedTime or CreateTime"
        raise ValueError(msg)

    return f"MetaData.{name}"


def _check_entity(entity: str) -> None:
    if entity not in ENTITIES:
        msg = f"entity {entity!r} is not supported: use one of {', '.join(ENTITIES)}"
        raise ValueError(msg)


def _active_clause(entity: str) -> str:
    return " AND Active IN (true, false)" if entity in NAME_LIST_ENTITIES else ""


def range_condition(field: str, start: dt.datetime, end: dt.datetime) -> str:
    """Return the condition for the half-open range ``[start, end)`` in UTC.

    Args:
        field: Query property, for example ``MetaData.LastUpdatedTime``.
        start: First instant (inclusive).
        end: Last instant (exclusive).

    Returns:
        For example ``MetaData.LastUpdatedTime >= '2023-02-01T00:00:00Z' AND ...``.
    """
    return f"{field} >= '{format_utc(start)}' AND {field} < '{format_utc(end)}'"


def count_in_range(
    entity: str,
    window_field: str,
    start: dt.datetime,
    end: dt.datetime,
) -> str:
    """Build the ``COUNT(*)`` query of an entity over ``[start, end)``.

    Args:
        entity: ``Invoice``, ``Customer`` or ``Item``.
        window_field: ``LastUpdatedTime`` or ``CreateTime``.
        start: First instant (inclusive).
        end: Last instant (exclusive).

    Returns:
        The query text.
    """
    _check_entity(entity)
    condition = range_condition(field_path(window_field), start, end)
    return f"SELECT COUNT(*) FROM {entity} WHERE {condition}{_active_clause(entity)}"


def page_from_cursor(
    entity: str,
    window_field: str,
    cursor: dt.datetime,
    end: dt.datetime,
    page_size: int,
) -> str:
    """Build the keyset page query: rows from ``cursor`` (inclusive) up to ``end``.

    Args:
        entity: ``Invoice``, ``Customer`` or ``Item``.
        window_field: ``LastUpdatedTime`` or ``CreateTime``.
        cursor: Timestamp of the last row already read (or the window start).
        end: Window end (exclusive).
        page_size: ``MAXRESULTS``.

    Returns:
        The query text, ordered by the window field.
    """
    _check_entity(entity)
    field = field_path(window_field)
    condition = range_condition(field, cursor, end)
    return (
        f"SELECT * FROM {entity} WHERE {condition}{_active_clause(entity)} "
        f"ORDERBY {field} MAXRESULTS {page_size}"
    )


def count_at_second(entity: str, window_field: str, second: dt.datetime) -> str:
    """Build the ``COUNT(*)`` query of the rows whose window field equals one second.

    Args:
        entity: ``Invoice``, ``Customer`` or ``Item``.
        window_field: ``LastUpdatedTime`` or ``CreateTime``.
        second: The shared timestamp.

    Returns:
        The query text.
    """
    _check_entity(entity)
    field = field_path(window_field)
    return (
        f"SELECT COUNT(*) FROM {entity} WHERE {field} = '{format_utc(second)}'"
        f"{_active_clause(entity)}"
    )


def page_at_second(
    entity: str,
    window_field: str,
    second: dt.datetime,
    start_position: int,
    page_size: int,
) -> str:
    """Build an offset page over the rows that share one timestamp.

    Args:
        entity: ``Invoice``, ``Customer`` or ``Item``.
        window_field: ``LastUpdatedTime`` or ``CreateTime``.
        second: The shared timestamp.
        start_position: 1-based ``STARTPOSITION``.
        page_size: ``MAXRESULTS``.

    Returns:
        The query text.
    """
    _check_entity(entity)
    field = field_path(window_field)
    return (
        f"SELECT * FROM {entity} WHERE {field} = '{format_utc(second)}'"
        f"{_active_clause(entity)} ORDERBY {field} "
        f"STARTPOSITION {start_position} MAXRESULTS {page_size}"
    )
