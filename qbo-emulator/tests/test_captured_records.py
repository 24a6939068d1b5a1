"""The captured sandbox records are served unchanged as part of the default company."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest
from conftest import QboClient

CAPTURED = importlib.resources.files("qbo_emulator") / "captured"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "qbo-captured"


def _captured_lines() -> list[dict]:
    text = (CAPTURED / "sandbox_records.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared fixtures folder not present")
@pytest.mark.parametrize("name", ["sandbox_records.jsonl", "item_query_page.json",
                                  "throttle_429.xml"])
def test_packaged_copy_matches_shared_fixture(name: str) -> None:
    assert (CAPTURED / name).read_bytes() == (SHARED / name).read_bytes()


@pytest.mark.parametrize("line", _captured_lines(),
                         ids=lambda line: f"{line['entity']}-{line['record']['Id']}")
def test_captured_record_served_byte_for_byte(client: QboClient, line: dict) -> None:
    entity, record = line["entity"], line["record"]
    query = f"SELECT * FROM {entity} WHERE Id = '{record['Id']}'"
    if entity != "Invoice":
        query += " AND Active IN (true, false)"
    response = client.get(query)
    assert response.status_code == 200

    rows = response.json()["QueryResponse"][entity]
    assert len(rows) == 1
    assert rows[0] == record
    # Equal dumps mean the same keys in the same order, nested objects too.
    assert json.dumps(rows[0]) == json.dumps(record)
    compact = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    assert compact.encode("utf-8") in response.content


def test_item_page_added_without_id_clashes(client: QboClient) -> None:
    page = json.loads((CAPTURED / "item_query_page.json").read_text("utf-8"))
    sandbox_ids = {line["record"]["Id"] for line in _captured_lines()
                   if line["entity"] == "Item"}
    for item in page["QueryResponse"]["Item"]:
        rows = client.rows(f"SELECT * FROM Item WHERE Id = '{item['Id']}' "
                           "AND Active IN (true, false)", "Item")
        assert len(rows) == 1
        if item["Id"] in sandbox_ids:
            assert rows[0]["MetaData"]["CreateTime"].startswith("2023-")
        else:
            assert rows[0] == item


def test_captured_invoices_reference_served_customers_and_items(client: QboClient) -> None:
    for line in _captured_lines():
        if line["entity"] != "Invoice":
            continue
        invoice = line["record"]
        customer = invoice["CustomerRef"]["value"]
        assert client.rows(f"SELECT * FROM Customer WHERE Id = '{customer}' "
                           "AND Active IN (true, false)", "Customer")
        for item_line in invoice["Line"]:
            item_ref = item_line.get("SalesItemLineDetail", {}).get("ItemRef")
            if item_ref:
                assert client.rows(f"SELECT * FROM Item WHERE Id = '{item_ref['value']}' "
                                   "AND Active IN (true, false)", "Item")
