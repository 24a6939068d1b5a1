"""Served records are kept as JSON: same bytes, emptied by any change, bounded."""

from __future__ import annotations

import orjson
from conftest import QboClient

from qbo_emulator.company import Company, CompanySpec
from qbo_emulator.timeutil import CompanyClock

PAGE = "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 50"


def _entity_array(body: bytes) -> bytes:
    # The page's "time" differs between requests; the records must not.
    start = body.index(b'"Invoice":[')
    end = body.index(b'],"startPosition"')
    return body[start:end]


def test_cached_page_has_same_bytes(small_client: QboClient) -> None:
    emulator = small_client.emu.emulator
    emulator.settings.encoded_cache_mib = 0
    built = small_client.get(PAGE).content
    emulator.settings.encoded_cache_mib = 64
    first = small_client.get(PAGE).content
    cached = small_client.get(PAGE).content

    assert _entity_array(first) == _entity_array(built)
    assert _entity_array(cached) == _entity_array(built)
    assert len(emulator.company._encoded) == 50


def test_change_empties_cache(small_client: QboClient) -> None:
    emulator = small_client.emu.emulator
    emulator.settings.encoded_cache_mib = 64
    rows = small_client.rows(PAGE, "Invoice")
    customer_id = rows[0]["CustomerRef"]["value"]

    small_client.emu.control.update("Customer", customer_id, {"DisplayName": "Renamed Ltd"})
    served = small_client.rows(f"SELECT * FROM Invoice WHERE Id = '{rows[0]['Id']}'", "Invoice")

    # An invoice carries its customer's name, so a change to any record empties the cache.
    assert served[0]["CustomerRef"]["name"] == "Renamed Ltd"


def test_cache_stays_within_limit() -> None:
    company = Company(CompanySpec(invoices=300, customers=20, items=10),
                      CompanyClock("America/Los_Angeles"))
    company.encoded_cache_limit = 20_000
    rows = list(range(company.tables["Invoice"].first_generated_row, 300))

    fragments = company.encoded_records("Invoice", rows)

    assert len(fragments) == len(rows)
    assert company._encoded_bytes <= 20_000
    assert 0 < len(company._encoded) < len(rows)
    assert orjson.dumps(fragments) == orjson.dumps(company.records("Invoice", rows))


def test_zero_limit_keeps_nothing() -> None:
    company = Company(CompanySpec(invoices=30, customers=5, items=5),
                      CompanyClock("America/Los_Angeles"))

    company.encoded_records("Invoice", [0, 1, 2])

    assert len(company._encoded) == 0
