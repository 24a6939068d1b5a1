"""Control API: edits, scheduled changes mid-scan, request log, CDC and batch."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import QboClient

from qbo_emulator.control import ControlError

LAST = "MetaData.LastUpdatedTime"


def test_update_bumps_sync_token_and_last_updated(small_client: QboClient) -> None:
    control = small_client.emu.control
    before = control.records("Invoice")[0]
    after = control.update("Invoice", before["Id"], {"PrivateNote": "edited",
                                                     "BillEmail": {"Address": "a@b.c"}})
    assert after["SyncToken"] == str(int(before["SyncToken"]) + 1)
    assert after["PrivateNote"] == "edited"
    assert after["BillEmail"] == {"Address": "a@b.c"}
    assert after["MetaData"]["CreateTime"] == before["MetaData"]["CreateTime"]
    updated = datetime.fromisoformat(after["MetaData"]["LastUpdatedTime"])
    assert updated.year >= 2025
    served = small_client.rows(f"SELECT * FROM Invoice WHERE Id = '{before['Id']}'", "Invoice")
    assert served == [after]


def test_update_with_null_removes_property(small_client: QboClient) -> None:
    control = small_client.emu.control
    invoice = next(r for r in control.records("Invoice") if "ShipAddr" in r)
    changed = control.update("Invoice", invoice["Id"], {"ShipAddr": None})
    assert "ShipAddr" not in changed
    assert "ShipAddr" not in control.record("Invoice", invoice["Id"])


def test_update_to_given_instant_moves_row_between_windows(small_client: QboClient) -> None:
    control = small_client.emu.control
    target = control.records("Invoice")[5]
    control.update("Invoice", target["Id"], {"PrivateNote": "x"},
                   last_updated="2024-07-04T12:00:00-07:00")
    rows = small_client.rows(f"SELECT * FROM Invoice WHERE {LAST} = "
                             "'2024-07-04T19:00:00Z'", "Invoice")
    assert [r["Id"] for r in rows] == [target["Id"]]
    assert rows[0]["MetaData"]["LastUpdatedTime"] == "2024-07-04T12:00:00-07:00"


def test_deactivate_hides_name_and_marks_it_deleted(small_client: QboClient) -> None:
    control = small_client.emu.control
    customer = control.records("Customer", include_inactive=False)[0]
    active_before = small_client.count("SELECT COUNT(*) FROM Customer")
    changed = control.deactivate("Customer", customer["Id"])
    assert changed["Active"] is False
    assert changed["DisplayName"].endswith(" (deleted)")
    assert small_client.count("SELECT COUNT(*) FROM Customer") == active_before - 1
    rows = small_client.rows(f"SELECT * FROM Customer WHERE Id = '{customer['Id']}' "
                             "AND Active = false", "Customer")
    assert rows == [changed]


def test_delete_of_name_deactivates_and_invoice_vanishes(small_client: QboClient) -> None:
    control = small_client.emu.control
    item = control.records("Item", include_inactive=False)[0]
    assert control.delete("Item", item["Id"])["Active"] is False
    invoice = control.records("Invoice")[0]
    total = small_client.count("SELECT COUNT(*) FROM Invoice")
    shape = control.delete("Invoice", invoice["Id"])
    assert shape["status"] == "Deleted"
    assert small_client.count("SELECT COUNT(*) FROM Invoice") == total - 1
    assert small_client.rows(f"SELECT * FROM Invoice WHERE Id = '{invoice['Id']}'",
                             "Invoice") == []
    with pytest.raises(ControlError, match="404"):
        control.record("Invoice", invoice["Id"])


def test_void_zeroes_amounts_and_notes_it(small_client: QboClient) -> None:
    control = small_client.emu.control
    invoice = next(r for r in control.records("Invoice") if r["TotalAmt"])
    voided = control.void(invoice["Id"])
    assert voided["TotalAmt"] == 0
    assert voided["Balance"] == 0
    assert voided["PrivateNote"].startswith("Voided")
    assert all(line["Amount"] == 0 for line in voided["Line"])


def test_create_assigns_next_id_and_now(small_client: QboClient) -> None:
    control = small_client.emu.control
    highest = max(int(r["Id"]) for r in control.records("Invoice"))
    customer = control.records("Customer")[0]
    created = control.create("Invoice", {"CustomerRef": {"value": customer["Id"]},
                                         "Line": [], "TotalAmt": 12.5})
    assert created["Id"] == str(highest + 1)
    assert created["SyncToken"] == "0"
    assert created["MetaData"]["CreateTime"] == created["MetaData"]["LastUpdatedTime"]
    assert small_client.rows(f"SELECT * FROM Invoice WHERE Id = '{created['Id']}'",
                             "Invoice") == [created]


@pytest.mark.parametrize(("code", "status"), [("4002", 400), ("10000", 500)])
def test_broken_record_fails_its_pages(small_client: QboClient, code: str,
                                       status: int) -> None:
    control = small_client.emu.control
    query = f"SELECT * FROM Invoice ORDERBY {LAST} STARTPOSITION {{}} MAXRESULTS 10"
    victim = small_client.rows(query.format(11), "Invoice")[3]
    control.break_record("Invoice", victim["Id"], code=code)
    assert small_client.get(query.format(1)).status_code == 200
    failed = small_client.get(query.format(11))
    assert failed.status_code == status
    assert failed.json()["Fault"]["Error"][0]["code"] == code
    assert small_client.count("SELECT COUNT(*) FROM Invoice") == 60
    control.repair_record("Invoice", victim["Id"])
    assert small_client.get(query.format(11)).status_code == 200


def test_unknown_record_and_entity_errors(small_emu) -> None:
    with pytest.raises(ControlError, match="404"):
        small_emu.control.update("Invoice", 987654, {"PrivateNote": "x"})
    with pytest.raises(ControlError, match="unknown entity"):
        small_emu.control.update("Bill", 1, {})


def test_scheduled_update_lands_after_kth_query(small_client: QboClient) -> None:
    control = small_client.emu.control
    pages_query = f"SELECT * FROM Invoice ORDERBY {LAST} STARTPOSITION {{}} MAXRESULTS 20"
    first_page = small_client.rows(pages_query.format(1), "Invoice")
    victim = first_page[0]
    control.schedule(after_query_requests=1, action={
        "op": "update", "entity": "Invoice", "id": victim["Id"],
        "changes": {"PrivateNote": "moved"}})
    # The first query returns the old order because the change lands after it.
    again = small_client.rows(pages_query.format(1), "Invoice")
    assert again[0]["Id"] == victim["Id"]
    shifted = small_client.rows(pages_query.format(1), "Invoice")
    assert shifted[0]["Id"] != victim["Id"]
    assert shifted[:19] == again[1:20]
    state = control.scheduled()
    assert state["changes"][0]["applied"] is True


def test_schedule_zero_applies_at_once(small_client: QboClient) -> None:
    item = small_client.emu.control.records("Item", include_inactive=False)[0]
    small_client.emu.control.schedule(after_query_requests=0, action={
        "op": "deactivate", "entity": "Item", "id": item["Id"]})
    assert small_client.emu.control.record("Item", item["Id"])["Active"] is False
    assert small_client.emu.control.record("Item", item["Id"])["Name"].endswith(" (deleted)")


def test_schedule_rejects_bad_action(small_emu) -> None:
    with pytest.raises(ControlError, match="400"):
        small_emu.control.schedule(after_query_requests=1, action={"op": "update"})


def test_request_log_records_method_path_query_status(small_client: QboClient) -> None:
    control = small_client.emu.control
    small_client.headers()
    control.clear_requests()
    small_client.get("SELECT * FROM Item MAXRESULTS 3")
    small_client.post("SELECT COUNT(*) FROM Item")
    small_client.get("SELECT * FROM Nope")
    log = control.requests()
    assert [(e["method"], e["query"], e["status"]) for e in log] == [
        ("GET", "SELECT * FROM Item MAXRESULTS 3", 200),
        ("POST", "SELECT COUNT(*) FROM Item", 200),
        ("GET", "SELECT * FROM Nope", 400),
    ]
    assert all(e["path"].endswith("/query") for e in log)
    assert log[0]["rows"] == 3
    assert all(e["time"] and e["intuit_tid"] for e in log)
    control.clear_requests()
    assert control.requests() == []


def test_set_config_validates(small_emu) -> None:
    settings = small_emu.control.set_config(requests_per_minute=42, rotation="period:60")
    assert settings["requests_per_minute"] == 42
    assert settings["client_secret"] == "***"
    with pytest.raises(ControlError, match="invalid rotation"):
        small_emu.control.set_config(rotation="sometimes")
    with pytest.raises(ControlError, match="unknown setting"):
        small_emu.control.set_config(colour="blue")


def test_reset_regenerates_company(small_emu) -> None:
    small_emu.control.delete("Invoice", small_emu.control.records("Invoice")[0]["Id"])
    assert small_emu.control.counts("Invoice")["deleted"] == 1
    small_emu.control.reset(invoices=10)
    assert small_emu.control.counts("Invoice") == {"total": 10, "active": 10,
                                                   "inactive": 0, "deleted": 0}


# ---------------------------------------------------------------------- CDC
def _cdc(client: QboClient, entities: str, since: str):
    return client.session.get(f"{client.emu.api_base}/cdc",
                              params={"entities": entities, "changedSince": since,
                                      "minorversion": "75"},
                              headers=client.headers(), timeout=10)


def test_cdc_returns_changes_and_deleted_shape(small_client: QboClient) -> None:
    control = small_client.emu.control
    invoices = control.records("Invoice")
    since = control.config()["now"]
    control.advance_clock(5)
    control.update("Invoice", invoices[0]["Id"], {"PrivateNote": "cdc"})
    control.delete("Invoice", invoices[1]["Id"])
    control.deactivate("Customer", control.records("Customer", include_inactive=False)[0]["Id"])
    response = _cdc(small_client, "Invoice,Customer,Item", since)
    assert response.status_code == 200
    body = response.json()
    answers = body["CDCResponse"][0]["QueryResponse"]
    invoices_changed = answers[0]["Invoice"]
    assert {r["Id"] for r in invoices_changed} == {invoices[0]["Id"], invoices[1]["Id"]}
    deleted = next(r for r in invoices_changed if r["Id"] == invoices[1]["Id"])
    assert list(deleted) == ["status", "domain", "Id", "MetaData"]
    assert deleted["status"] == "Deleted"
    assert answers[1]["maxResults"] == 1
    assert answers[1]["Customer"][0]["Active"] is False
    assert answers[2] == {}


def test_cdc_rejects_more_than_30_days(small_client: QboClient) -> None:
    response = _cdc(small_client, "Invoice", "2024-01-01T00:00:00Z")
    assert response.status_code == 400
    assert "older than 30 days" in response.json()["Fault"]["Error"][0]["Detail"]


def test_cdc_caps_objects_without_paging(small_client: QboClient) -> None:
    control = small_client.emu.control
    control.set_config(cdc_max_objects=5)
    since = control.config()["now"]
    control.advance_clock(1)
    for record in control.records("Invoice")[:8]:
        control.update("Invoice", record["Id"], {"PrivateNote": "bulk"})
    answers = _cdc(small_client, "Invoice", since).json()["CDCResponse"][0]["QueryResponse"]
    assert answers[0]["maxResults"] == 5


# -------------------------------------------------------------------- batch
def test_batch_answers_each_item(small_client: QboClient) -> None:
    response = small_client.session.post(
        f"{small_client.emu.api_base}/batch",
        json={"BatchItemRequest": [
            {"bId": "1", "Query": "SELECT COUNT(*) FROM Invoice"},
            {"bId": "2", "Query": "SELECT * FROM Nope"},
        ]},
        headers=small_client.headers(), timeout=10)
    assert response.status_code == 200
    answers = response.json()["BatchItemResponse"]
    assert answers[0] == {"bId": "1", "QueryResponse": {"totalCount": 60}}
    assert answers[1]["bId"] == "2"
    assert answers[1]["Fault"]["Error"][0]["code"] == "4001"


def test_batch_over_limit_is_1040(small_client: QboClient) -> None:
    items = [{"bId": str(i), "Query": "SELECT COUNT(*) FROM Item"} for i in range(11)]
    response = small_client.session.post(f"{small_client.emu.api_base}/batch",
                                         json={"BatchItemRequest": items},
                                         headers=small_client.headers(), timeout=10)
    assert response.status_code == 400
    assert response.json()["Fault"]["Error"][0]["code"] == "1040"


def test_read_by_id(small_client: QboClient) -> None:
    record = small_client.emu.control.records("Item")[0]
    response = small_client.session.get(f"{small_client.emu.api_base}/item/{record['Id']}",
                                        headers=small_client.headers(), timeout=10)
    assert response.status_code == 200
    assert response.json()["Item"] == record
