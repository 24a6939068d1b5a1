"""Change Data Capture and batch endpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from qbo_emulator.company import ENTITIES
from qbo_emulator.responses import fault

if TYPE_CHECKING:
    from qbo_emulator.server import Emulator

Answer = tuple[int, dict[str, Any], int]


def change_data_capture(emulator: Emulator, entities_text: str, since_text: str) -> Answer:
    """Build the CDC response: changes since an instant, up to a fixed count.

    Objects come oldest change first across the listed entities; once the
    object limit is reached the rest is left out without paging, as QBO does.
    """
    now = emulator.clock.now()
    now_text = emulator.now_text()
    settings = emulator.settings
    names = [name.strip() for name in entities_text.split(",") if name.strip()]
    if not names:
        return 400, fault("4001", "Invalid query",
                          "QueryValidationError: the entities parameter is required, "
                          "for example entities=Invoice,Customer,Item",
                          "ValidationFault", now_text, element=""), 0
    for name in names:
        if name not in ENTITIES:
            return 400, fault("4001", "Invalid query",
                              f"QueryValidationError: CDC is not served for entity {name}",
                              "ValidationFault", now_text, element=""), 0
    try:
        since = emulator.clock.parse_literal(since_text)
    except ValueError:
        return 400, fault("4001", "Invalid query",
                          f"QueryValidationError: changedSince {since_text!r} is not "
                          "an ISO 8601 date or datetime",
                          "ValidationFault", now_text, element=""), 0
    if since < now - settings.cdc_max_days * 86_400:
        return 400, fault("4001", "Invalid query",
                          f"QueryValidationError: changedSince older than "
                          f"{settings.cdc_max_days} days is not supported",
                          "ValidationFault", now_text, element=""), 0

    company = emulator.company
    candidates: list[tuple[int, int, str, int]] = []
    for position, name in enumerate(names):
        table = company.table(name)
        rows = np.flatnonzero(table.updated >= since)
        candidates.extend((int(table.updated[row]), position, name, int(row)) for row in rows)
    candidates.sort()
    chosen = candidates[: settings.cdc_max_objects]

    per_entity: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _, _, name, row in chosen:
        table = company.table(name)
        if table.deleted[row]:
            per_entity[name].append(company.deleted_shape(name, row))
        else:
            per_entity[name].append(company.record(name, row))

    responses: list[dict[str, Any]] = []
    for name in names:
        records = per_entity[name]
        if records:
            responses.append({name: records, "startPosition": 1,
                              "maxResults": len(records)})
        else:
            responses.append({})
    body = {"CDCResponse": [{"QueryResponse": responses}], "time": now_text}
    return 200, body, len(chosen)


def run_batch(emulator: Emulator, items: list[Any],
              run_query: Callable[[str, bool], Answer]) -> Answer:
    """Run each query of a batch. A failing item gets its own Fault."""
    answers: list[dict[str, Any]] = []
    rows = 0
    for item in items:
        if not isinstance(item, dict) or "bId" not in item or "Query" not in item:
            answers.append({
                "bId": str(item.get("bId", "")) if isinstance(item, dict) else "",
                "Fault": {"Error": [{
                    "Message": "Invalid batch item",
                    "Detail": "Each BatchItemRequest item needs bId and Query",
                    "code": "4000",
                }], "type": "ValidationFault"},
            })
            continue
        status, payload, count = run_query(str(item["Query"]), False)
        rows += count
        if status == 200:
            answers.append({"bId": str(item["bId"]), "QueryResponse": payload["QueryResponse"]})
        else:
            answers.append({"bId": str(item["bId"]), "Fault": payload["Fault"]})
    return 200, {"BatchItemResponse": answers, "time": emulator.now_text()}, rows
