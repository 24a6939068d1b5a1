"""Generated data: shapes, time span, daylight saving, ties, references."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from qbo_emulator.testing import build_emulator

SPAN_START = datetime.fromisoformat("2023-01-01T00:00:00-08:00")
SPAN_END = datetime.fromisoformat("2025-01-01T00:00:00+00:00")


@pytest.fixture(scope="module")
def company():
    return build_emulator().company


def _all(company, entity: str) -> list[dict]:
    table = company.table(entity)
    return company.records(entity, list(range(len(table))))


def test_default_company_sizes(company) -> None:
    assert company.counts("Invoice")["total"] == 2005
    assert company.counts("Customer")["total"] == 305
    assert company.counts("Item")["total"] == 79


def test_timestamps_inside_span_with_both_offsets(company) -> None:
    offsets = Counter()
    for entity in ("Invoice", "Customer", "Item"):
        for record in _all(company, entity):
            for key in ("CreateTime", "LastUpdatedTime"):
                text = record["MetaData"][key]
                moment = datetime.fromisoformat(text)
                if int(record["Id"]) > 130:
                    assert SPAN_START <= moment < SPAN_END, text
                offsets[text[-6:]] += 1
            assert record["MetaData"]["CreateTime"] <= record["MetaData"]["LastUpdatedTime"] \
                or datetime.fromisoformat(record["MetaData"]["CreateTime"]) <= \
                datetime.fromisoformat(record["MetaData"]["LastUpdatedTime"])
    assert offsets["-08:00"] > 100
    assert offsets["-07:00"] > 100
    assert set(offsets) == {"-08:00", "-07:00"}


def test_repeated_hour_at_end_of_daylight_saving(company) -> None:
    stamps = {r["MetaData"]["LastUpdatedTime"] for r in _all(company, "Invoice")}
    assert "2023-11-05T01:30:00-07:00" in stamps
    assert "2023-11-05T01:30:00-08:00" in stamps


def test_many_rows_share_one_second(company) -> None:
    counts = Counter(r["MetaData"]["LastUpdatedTime"] for r in _all(company, "Invoice"))
    assert counts.most_common(1)[0][1] >= 200
    assert sum(1 for n in counts.values() if n > 1) > 20


def test_tie_size_above_1000() -> None:
    company = build_emulator(invoices=3000, customers=10, items=5, tie_size=1500).company
    table = company.table("Invoice")
    _, counts = __import__("numpy").unique(table.updated, return_counts=True)
    assert counts.max() == 1500


def test_invoices_reference_existing_customers_and_items(company) -> None:
    customers = {r["Id"]: r for r in _all(company, "Customer")}
    items = {r["Id"] for r in _all(company, "Item")}
    for invoice in _all(company, "Invoice"):
        assert invoice["CustomerRef"]["value"] in customers
        for line in invoice["Line"]:
            detail = line.get("SalesItemLineDetail")
            if detail:
                assert detail["ItemRef"]["value"] in items


def test_sub_customers_reference_parents(company) -> None:
    customers = {r["Id"]: r for r in _all(company, "Customer")}
    subs = [r for r in customers.values() if "ParentRef" in r]
    assert len(subs) > 20
    for sub in subs:
        parent = customers[sub["ParentRef"]["value"]]
        assert sub["Job"] is True
        assert sub["FullyQualifiedName"].startswith(parent["DisplayName"] + ":")


def test_inactive_names_and_voided_invoices(company) -> None:
    inactive = [r for r in _all(company, "Customer") if not r["Active"]]
    assert inactive
    assert all(r["DisplayName"].endswith(" (deleted)") for r in inactive)
    assert any(not r["Active"] for r in _all(company, "Item"))
    voided = [r for r in _all(company, "Invoice") if r.get("PrivateNote") == "Voided"]
    assert voided
    assert all(r["TotalAmt"] == 0 and r["Balance"] == 0 for r in voided)


def test_decimals_and_custom_fields(company) -> None:
    invoices = _all(company, "Invoice")
    quantities = {line["SalesItemLineDetail"]["Qty"] for r in invoices for line in r["Line"]
                  if "SalesItemLineDetail" in line}
    assert 3.5 in quantities
    assert 0.25 in quantities
    assert any(r["TotalAmt"] != int(r["TotalAmt"]) for r in invoices)
    assert all(r["CustomField"][0]["Name"] == "Crew #" for r in invoices)
    assert any("StringValue" not in r["CustomField"][0] for r in invoices)


def test_same_seed_same_company_other_seed_differs() -> None:
    first = build_emulator(invoices=50, customers=5, items=5, seed=11).company
    again = build_emulator(invoices=50, customers=5, items=5, seed=11).company
    other = build_emulator(invoices=50, customers=5, items=5, seed=12).company
    rows = list(range(50))
    assert first.records("Invoice", rows) == again.records("Invoice", rows)
    assert first.records("Invoice", rows) != other.records("Invoice", rows)


def test_single_and_bulk_builds_agree(company) -> None:
    rows = [200, 7, 1999]
    assert company.records("Invoice", rows) == [company.record("Invoice", r) for r in rows]


def test_sized_company_has_exact_counts_without_captured() -> None:
    company = build_emulator(invoices=200, customers=50, items=20).company
    assert company.counts("Invoice")["total"] == 200
    assert company.counts("Customer")["total"] == 50
    assert company.counts("Item")["total"] == 20
    assert company.record("Invoice", 0)["Id"] == "1"
