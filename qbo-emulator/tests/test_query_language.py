"""Query endpoint conformance: grammar, validation, paging and envelope."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import QboClient

LAST = "MetaData.LastUpdatedTime"


def _instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_page_envelope_has_entity_start_and_returned_count(client: QboClient) -> None:
    response = client.get("SELECT * FROM Invoice STARTPOSITION 11 MAXRESULTS 25")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["QueryResponse", "time"]
    page = body["QueryResponse"]
    assert list(page) == ["Invoice", "startPosition", "maxResults"]
    assert page["startPosition"] == 11
    assert page["maxResults"] == 25 == len(page["Invoice"])
    assert "totalCount" not in page


def test_time_field_has_milliseconds_and_company_offset(client: QboClient) -> None:
    time_text = client.get("SELECT COUNT(*) FROM Item").json()["time"]
    moment = datetime.fromisoformat(time_text)
    assert len(time_text.split(".")[1]) == len("123-08:00")
    assert moment.utcoffset() is not None
    assert moment.utcoffset().total_seconds() in (-8 * 3600, -7 * 3600)


def test_empty_page_omits_entity_key(client: QboClient) -> None:
    response = client.get("SELECT * FROM Invoice STARTPOSITION 99999 MAXRESULTS 10")
    assert response.json()["QueryResponse"] == {}
    response = client.get(f"SELECT * FROM Invoice WHERE {LAST} > '2030-01-01T00:00:00Z'")
    assert response.json()["QueryResponse"] == {}


def test_maxresults_defaults_to_100(client: QboClient) -> None:
    page = client.get("SELECT * FROM Invoice").json()["QueryResponse"]
    assert page["maxResults"] == 100


def test_maxresults_1000_allowed_and_1001_rejected(client: QboClient) -> None:
    assert len(client.rows("SELECT * FROM Invoice MAXRESULTS 1000", "Invoice")) == 1000
    response = client.get("SELECT * FROM Invoice MAXRESULTS 1001")
    assert response.status_code == 400
    error = response.json()["Fault"]["Error"][0]
    assert error["code"] == "4001"
    assert "value 1001 is too large. Max allowed value is 1000" in error["Detail"]
    assert response.json()["Fault"]["type"] == "ValidationFault"


def test_count_returns_total_count_only(client: QboClient) -> None:
    body = client.get("SELECT COUNT(*) FROM Invoice MAXRESULTS 5").json()
    assert body["QueryResponse"] == {"totalCount": 2005}


def test_post_with_application_text_equals_get(client: QboClient) -> None:
    query = f"SELECT * FROM Invoice ORDERBY {LAST} STARTPOSITION 5 MAXRESULTS 7"
    posted = client.post(query)
    assert posted.status_code == 200
    assert posted.json()["QueryResponse"] == client.get(query).json()["QueryResponse"]


def test_post_with_other_content_type_rejected(client: QboClient) -> None:
    assert client.post("SELECT * FROM Item", content_type="application/json").status_code == 415


def test_keywords_and_properties_match_any_case(client: QboClient) -> None:
    upper = client.count(f"SELECT COUNT(*) FROM Invoice WHERE {LAST} >= '2024-01-01'")
    lower = client.count("select count(*) from Invoice where metadata.lastupdatedtime"
                         " >= '2024-01-01'")
    assert upper == lower > 0
    rows = client.rows("select * from Invoice Order By Metadata.LastUpdatedTime desc "
                       "startPosition 1 maxResults 3", "Invoice")
    assert len(rows) == 3


def test_entity_name_is_case_sensitive(client: QboClient) -> None:
    response = client.get("SELECT * FROM invoice")
    assert response.status_code == 400
    assert response.json()["Fault"]["Error"][0]["code"] == "4001"


@pytest.mark.parametrize("query", [
    "SELECT Id, DocNumber FROM Invoice",
    "SELECT * FROM Invoice WHERE Id = '1' OR Id = '2'",
    "SELECT * FROM Invoice WHERE",
    "SELECT * FROM Invoice ORDERBY",
    "SELECT * FROM Invoice MAXRESULTS ten",
    "SELECT * FROM Invoice WHERE DocNumber = 'unterminated",
    "SELECT * FROM Invoice GROUP BY Id",
    "SELECT * FROM Invoice MAXRESULTS 5 STARTPOSITION 1",
    "",
])
def test_syntax_errors_are_4000(client: QboClient, query: str) -> None:
    response = client.get(query)
    assert response.status_code == 400
    fault = response.json()["Fault"]
    assert fault["type"] == "ValidationFault"
    assert fault["Error"][0]["code"] == "4000"
    assert fault["Error"][0]["Detail"].startswith("QueryParserError")


@pytest.mark.parametrize(("query", "fragment"), [
    ("SELECT * FROM Invoice WHERE PrivateNote = 'x'", "property 'PrivateNote' is not queryable"),
    ("SELECT * FROM Invoice WHERE Active = true", "property 'Active' is not queryable"),
    ("SELECT * FROM Invoice WHERE Id > '5'", "operator > is not supported"),
    ("SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > 'yesterday'", "invalid datetime"),
    ("SELECT * FROM Invoice ORDERBY PrivateNote", "property 'PrivateNote' is not queryable"),
    ("SELECT * FROM Invoice ORDERBY Id", "not sortable"),
    ("SELECT * FROM Invoice STARTPOSITION 0", "must be 1 or more"),
    ("SELECT * FROM Invoice STARTPOSITION 100001", "too large"),
    ("SELECT * FROM Customer WHERE Active = 'true'", "unquoted"),
    ("SELECT * FROM Foo", "Invalid context declaration"),
])
def test_validation_errors_are_4001(client: QboClient, query: str, fragment: str) -> None:
    response = client.get(query)
    assert response.status_code == 400
    error = response.json()["Fault"]["Error"][0]
    assert error["code"] == "4001"
    assert fragment in error["Detail"]


@pytest.mark.parametrize("operator", ["=", "<", ">", "<=", ">="])
def test_datetime_comparisons_by_instant(client: QboClient, operator: str) -> None:
    # 2024-03-10T10:00:00-07:00 is 2024-03-10T17:00:00Z; both spellings must agree.
    boundary = "2024-03-10T10:00:00-07:00"
    for spelling in (boundary, "2024-03-10T17:00:00Z", "2024-03-10T09:00:00-0800"):
        rows = client.rows(
            f"SELECT * FROM Invoice WHERE {LAST} {operator} '{spelling}' MAXRESULTS 1000",
            "Invoice")
        instant = _instant(boundary)
        for row in rows:
            value = _instant(row["MetaData"]["LastUpdatedTime"])
            assert {"=": value == instant, "<": value < instant, ">": value > instant,
                    "<=": value <= instant, ">=": value >= instant}[operator]
    counts = {
        spelling: client.count(f"SELECT COUNT(*) FROM Invoice WHERE {LAST} {operator} "
                               f"'{spelling}'")
        for spelling in (boundary, "2024-03-10T17:00:00Z", "2024-03-10T09:00:00-0800")
    }
    assert len(set(counts.values())) == 1


def test_date_literal_is_company_midnight(client: QboClient) -> None:
    by_date = client.count(f"SELECT COUNT(*) FROM Invoice WHERE {LAST} >= '2024-01-01'")
    by_time = client.count(
        f"SELECT COUNT(*) FROM Invoice WHERE {LAST} >= '2024-01-01T00:00:00-08:00'")
    assert by_date == by_time


def test_window_counts_add_up(client: QboClient) -> None:
    total = client.count("SELECT COUNT(*) FROM Invoice")
    before = client.count(f"SELECT COUNT(*) FROM Invoice WHERE {LAST} < '2024-01-01'")
    after = client.count(f"SELECT COUNT(*) FROM Invoice WHERE {LAST} >= '2024-01-01'")
    assert before + after == total
    assert before > 0
    assert after > 0


def test_create_time_filter(client: QboClient) -> None:
    rows = client.rows("SELECT * FROM Invoice WHERE MetaData.CreateTime >= '2024-06-01' "
                       "AND MetaData.CreateTime < '2024-07-01' MAXRESULTS 1000", "Invoice")
    assert rows
    for row in rows:
        created = row["MetaData"]["CreateTime"]
        assert "2024-06-01" <= created[:10] <= "2024-06-30"


def test_id_equals_and_in(client: QboClient) -> None:
    assert [r["Id"] for r in client.rows("SELECT * FROM Invoice WHERE Id = '119'",
                                         "Invoice")] == ["119"]
    ids = {r["Id"] for r in client.rows("SELECT * FROM Invoice WHERE Id IN ('12', '96', "
                                        "'999999')", "Invoice")}
    assert ids == {"12", "96"}


def test_orderby_ascending_and_descending(client: QboClient) -> None:
    ascending = client.rows(f"SELECT * FROM Invoice ORDERBY {LAST} MAXRESULTS 1000", "Invoice")
    stamps = [_instant(r["MetaData"]["LastUpdatedTime"]) for r in ascending]
    assert stamps == sorted(stamps)
    descending = client.rows(f"SELECT * FROM Invoice ORDERBY {LAST} DESC MAXRESULTS 1000",
                             "Invoice")
    stamps = [_instant(r["MetaData"]["LastUpdatedTime"]) for r in descending]
    assert stamps == sorted(stamps, reverse=True)


def test_offset_pages_cover_all_rows_once(client: QboClient) -> None:
    seen: list[str] = []
    position = 1
    while True:
        page = client.rows(f"SELECT * FROM Invoice ORDERBY {LAST} STARTPOSITION {position} "
                           "MAXRESULTS 1000", "Invoice")
        if not page:
            break
        seen.extend(r["Id"] for r in page)
        position += len(page)
    assert len(seen) == len(set(seen)) == 2005


def test_startposition_is_one_based(client: QboClient) -> None:
    query = f"SELECT * FROM Invoice ORDERBY {LAST} STARTPOSITION {{}} MAXRESULTS 3"
    first = client.rows(query.format(1), "Invoice")
    second = client.rows(query.format(2), "Invoice")
    assert [r["Id"] for r in second[:2]] == [r["Id"] for r in first[1:]]


def test_ties_are_not_in_id_order(client: QboClient) -> None:
    rows = client.rows(f"SELECT * FROM Invoice WHERE {LAST} = '2024-06-28T16:45:12-07:00' "
                       "MAXRESULTS 1000", "Invoice")
    ids = [int(r["Id"]) for r in rows]
    assert len(ids) >= 100
    assert ids != sorted(ids)


def test_like_with_percent(client: QboClient) -> None:
    rows = client.rows("SELECT * FROM Item WHERE Name LIKE 'Sprinkler%' "
                       "AND Active IN (true, false)", "Item")
    assert {r["Name"] for r in rows} == {"Sprinkler Heads", "Sprinkler Pipes"}


def test_backslash_escaped_apostrophe(small_client: QboClient) -> None:
    small_client.emu.control.create("Customer", {"DisplayName": "Adam's Garden"})
    rows = small_client.rows("SELECT * FROM Customer WHERE DisplayName = 'Adam\\'s Garden'",
                             "Customer")
    assert [r["DisplayName"] for r in rows] == ["Adam's Garden"]


def test_record_property_filters(client: QboClient) -> None:
    rows = client.rows("SELECT * FROM Invoice WHERE CustomerRef = '8'", "Invoice")
    assert {r["Id"] for r in rows} >= {"96", "129"}
    assert all(r["CustomerRef"]["value"] == "8" for r in rows)
    rows = client.rows("SELECT * FROM Invoice WHERE TxnDate = '2023-02-18' AND "
                       "DocNumber IN ('1035', '1036')", "Invoice")
    assert {r["Id"] for r in rows} <= {"119", "129", "130"}
    assert rows
    rows = client.rows("SELECT * FROM Invoice WHERE Balance > 1000 MAXRESULTS 1000",
                       "Invoice")
    assert rows
    assert all(r["Balance"] > 1000 for r in rows)


def test_name_lists_return_active_rows_unless_filtered(client: QboClient) -> None:
    for entity in ("Customer", "Item"):
        default = client.rows(f"SELECT * FROM {entity} MAXRESULTS 1000", entity)
        assert all(r["Active"] for r in default)
        both = client.rows(f"SELECT * FROM {entity} WHERE Active IN (true, false) "
                           "MAXRESULTS 1000", entity)
        inactive = client.rows(f"SELECT * FROM {entity} WHERE Active = false "
                               "MAXRESULTS 1000", entity)
        assert inactive
        assert not any(r["Active"] for r in inactive)
        assert len(both) == len(default) + len(inactive)


def test_answer_is_xml_without_json_accept(client: QboClient) -> None:
    headers = {"Authorization": client.headers()["Authorization"]}
    response = client.get("SELECT * FROM Item MAXRESULTS 2", headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/xml")
    assert response.text.startswith("<?xml")
    assert "<QueryResponse" in response.text


def test_intuit_tid_on_every_response(client: QboClient) -> None:
    responses = [
        client.get("SELECT * FROM Item"),
        client.get("SELECT * FROM Nope"),
        client.refresh(),
        client.session.get(f"{client.emu.base_url}/no/such/path", timeout=5),
        client.session.get(f"{client.emu.base_url}/_emulator/health", timeout=5),
    ]
    tids = [r.headers.get("intuit_tid") for r in responses]
    assert all(tids)
    assert len(set(tids)) == len(tids)
