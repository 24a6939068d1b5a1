"""QBO client: retries, faults, token refresh and rotation, rate limits, no secrets."""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import threading
import time

import msgspec
import pytest
import requests
from pyrate_limiter import Duration, Limiter, Rate

from tap_quickbooks_backfill.auth import INVALID_GRANT_MESSAGE, TokenStore
from tap_quickbooks_backfill.client import QBOClient, RequestStats
from tap_quickbooks_backfill.errors import (
    QBORequestError,
    RefreshTokenRejectedError,
    RetriesExhaustedError,
    WindowScanError,
)
from tap_quickbooks_backfill.paging import WindowProgress, WindowScanner
from tap_quickbooks_backfill.rows import payload_object
from tap_quickbooks_backfill.settings import parse_settings
from tap_quickbooks_backfill.windows import Window

from .stub_http import ScriptedSession, count_answer, page, response, token_answer

THROTTLE_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="2015-07-24T10:33:39'
    '.110-07:00"><Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; '
    "errorCode=003001; statusCode=429</Message><Detail>The request limit was reached.  Try "
    "again later</Detail></Error></Fault></IntuitResponse>"
)
PARSER_ERROR = {
    "Fault": {
        "Error": [
            {
                "Message": "Error parsing query",
                "Detail": 'QueryParserError: Encountered " "null" "NULL "" at line 1',
                "code": "4000",
            }
        ],
        "type": "ValidationFault",
    },
    "time": "2017-03-22T09:04:34.046-07:00",
}
EXPIRED_401 = {
    "fault": {
        "error": [
            {
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": "Token expired: access-1",
                "code": "3200",
            }
        ],
        "type": "AUTHENTICATION",
    },
    "time": 1730024394085,
}


class SleepRecorder:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_client(config, session, sleep=None) -> QBOClient:
    return QBOClient(parse_settings(config), session=session, sleep=sleep or SleepRecorder())


def test_burst_of_throttles_and_server_errors_is_survived(base_config):
    session = ScriptedSession(
        queries=[
            response(429, text=THROTTLE_XML),
            response(500, {"Fault": {"Error": [{"Message": "oops", "code": "10000"}]}}),
            response(502, text="bad gateway"),
            response(503, text="unavailable"),
            response(504, text="gateway timeout"),
            requests.ReadTimeout("read timed out"),
            requests.ConnectionError("connection reset by peer"),
            count_answer(7),
        ]
    )
    sleep = SleepRecorder()
    client = make_client({**base_config, "throttle_wait_seconds": 60}, session, sleep)

    total = client.count("Invoice", dt.datetime(2023, 2, 1, tzinfo=dt.UTC),
                         dt.datetime(2023, 3, 1, tzinfo=dt.UTC))

    assert total == 7
    assert len(session.sent_queries) == 8
    assert client.totals.retries == 7
    assert client.totals.throttles == 1
    assert sleep.calls[0] == 60
    assert all(0 <= seconds <= 60 for seconds in sleep.calls[1:])


def test_retry_after_header_sets_the_wait(base_config):
    session = ScriptedSession(
        queries=[response(429, text=THROTTLE_XML, headers={"Retry-After": "7"}),
                 count_answer(1)]
    )
    sleep = SleepRecorder()
    client = make_client(base_config, session, sleep)

    client.count_query("SELECT COUNT(*) FROM Invoice")

    assert sleep.calls == [7.0]


def test_retries_are_bounded(base_config):
    session = ScriptedSession(queries=[response(503, text="down")] * 3)
    client = make_client({**base_config, "max_retries": 2}, session)

    with pytest.raises(RetriesExhaustedError, match="HTTP 503") as raised:
        client.query("SELECT * FROM Invoice")

    assert len(session.sent_queries) == 3
    assert "failed after 3 attempts" in str(raised.value)
    assert "malformed" not in str(raised.value)


# QBO can pretty-print its responses (the captured Item page is indented).
PRETTY_PAGE = """{
  "QueryResponse": {
    "Invoice": [
      {
        "Id": "7",
        "SyncToken": "2",
        "TotalAmt": 1.10,
        "ExchangeRate": 1.234567890123456789012,
        "Line": [ { "Amount": 100.00, "Description": "two\\nlines" } ],
        "MetaData": { "CreateTime": "2023-02-18T12:57:24-08:00",
                      "LastUpdatedTime": "2023-02-18T12:57:24-08:00" }
      }
    ],
    "startPosition": 1,
    "maxResults": 1
  },
  "time": "2023-02-18T12:00:00-08:00"
}"""


def test_payload_keeps_qbo_numbers_on_one_line(base_config):
    session = ScriptedSession(queries=[response(200, text=PRETTY_PAGE)])
    client = make_client(base_config, session)

    [row] = client.query("SELECT * FROM Invoice")["QueryResponse"]["Invoice"]
    # What the writer puts into the RECORD message's payload.
    written = msgspec.json.encode({"payload": row.payload})

    assert (row.id, row.sync_token) == ("7", "2")
    assert row.metadata["LastUpdatedTime"] == "2023-02-18T12:57:24-08:00"
    assert b"\n" not in written
    for number in (b"1.10", b"1.234567890123456789012", b"100.00"):
        assert number in written
    assert b'"two\\nlines"' in written
    assert payload_object(row.payload)["Line"][0]["Description"] == "two\nlines"


def test_nul_in_payload_becomes_replacement_character(base_config, caplog):
    # Postgres jsonb rejects \u0000; an escaped backslash before "u0000" is plain text.
    body = (r'{"QueryResponse": {"Invoice": ['
            r'{"Id": "1", "Note": "a\u0000b", "TotalAmt": 1.10},'
            r'{"Id": "2", "Note": "path C:\\u0000", "TotalAmt": 2.50}]}}')
    client = make_client(base_config, ScriptedSession(queries=[response(200, text=body)]))

    first, second = client.query("SELECT * FROM Invoice")["QueryResponse"]["Invoice"]

    assert payload_object(first.payload)["Note"] == "a\ufffdb"
    assert b"1.10" in bytes(first.payload)
    assert bytes(second.payload) == rb'{"Id": "2", "Note": "path C:\\u0000", "TotalAmt": 2.50}'
    assert "QBO record 1 holds NUL characters" in caplog.text


def test_non_object_row_is_malformed(base_config):
    body = {"QueryResponse": {"Invoice": [{"Id": "1"}, 5]}}
    session = ScriptedSession(queries=[response(200, body)] * 3)
    client = make_client(base_config, session)

    with pytest.raises(RetriesExhaustedError, match="a row is not a JSON object"):
        client.query("SELECT * FROM Invoice")

    assert len(session.sent_queries) == 3


def test_invalid_utf8_body_is_malformed(base_config):
    body = b'{"QueryResponse": {"Invoice": [{"Id": "1", "Note": "caf\xe9"}]}}'
    answer = response(200)
    answer._content = body
    session = ScriptedSession(queries=[answer] * 3)
    client = make_client(base_config, session)

    with pytest.raises(RetriesExhaustedError, match="not valid UTF-8"):
        client.query("SELECT * FROM Invoice")

    assert len(session.sent_queries) == 3


STAMPS = {"CreateTime": "2023-02-18T12:57:24-08:00",
          "LastUpdatedTime": "2023-02-18T12:57:24-08:00"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"MetaData": STAMPS}, "Invoice row without an Id"),
        ({"Id": True, "MetaData": STAMPS}, "Invoice row without an Id"),
        ({"Id": "", "MetaData": STAMPS}, "Invoice row without an Id"),
        ({"Id": "5", "MetaData": {"LastUpdatedTime": STAMPS["LastUpdatedTime"]}},
         "Invoice 5 without MetaData.CreateTime"),
        ({"Id": "5"}, "Invoice 5 without MetaData.LastUpdatedTime"),
    ],
)
def test_incomplete_row_stops_the_window(base_config, row, message):
    # The incomplete row comes first: a scan places pages by their last row only.
    rows = [row, {"Id": "9", "MetaData": STAMPS}]
    client = make_client(base_config, ScriptedSession(queries=[page("Invoice", rows)]))
    scanner = WindowScanner(client, "Invoice", window_field="LastUpdatedTime", page_size=10)
    window = Window(dt.datetime(2023, 2, 1, tzinfo=dt.UTC), dt.datetime(2023, 3, 1, tzinfo=dt.UTC))

    with pytest.raises(WindowScanError, match=message):
        list(scanner.scan(window, WindowProgress(), RequestStats()))


def test_deeply_nested_body_is_malformed(base_config):
    depth = 5000
    body = '{"QueryResponse": {"Invoice": [{"Id": "1", "X": ' + "[" * depth + "]" * depth + "}]}}"
    session = ScriptedSession(queries=[response(200, text=body)] * 3)
    client = make_client(base_config, session)

    with pytest.raises(RetriesExhaustedError, match="nests JSON deeper"):
        client.query("SELECT * FROM Invoice")


def test_malformed_json_is_retried_then_fails_clearly(base_config):
    session = ScriptedSession(queries=[response(200, text="{not json")] * 3)
    client = make_client(base_config, session)

    with pytest.raises(RetriesExhaustedError, match="not a JSON object") as raised:
        client.query("SELECT * FROM Invoice")

    assert len(session.sent_queries) == 3
    assert "failed after 3 malformed responses" in str(raised.value)


def test_endless_throttling_names_the_limit(base_config):
    session = ScriptedSession(queries=[response(429, text=THROTTLE_XML)] * 2)
    client = make_client({**base_config, "max_retries": 1}, session)

    with pytest.raises(RetriesExhaustedError, match="failed after 2 attempts") as raised:
        client.query("SELECT * FROM Invoice")

    assert "HTTP 429" in str(raised.value)
    assert "lower max_requests_per_minute" in str(raised.value)


def test_malformed_answer_then_good_page(base_config):
    rows = [{"Id": "1", "MetaData": {"LastUpdatedTime": "2023-02-18T12:57:24-08:00"}}]
    session = ScriptedSession(queries=[response(200, text="<html>"), page("Invoice", rows)])
    client = make_client(base_config, session)

    body = client.query("SELECT * FROM Invoice")

    assert [payload_object(row.payload) for row in body["QueryResponse"]["Invoice"]] == rows


def test_query_error_fails_at_once_with_qbo_message(base_config):
    session = ScriptedSession(queries=[response(400, PARSER_ERROR)])
    client = make_client(base_config, session)

    with pytest.raises(QBORequestError) as caught:
        client.query("SELECT * FROM Invoice WHERE null")

    assert "code 4000" in str(caught.value)
    assert "QueryParserError: Encountered" in str(caught.value)
    assert len(session.sent_queries) == 1


def test_fault_in_http_200_is_error(base_config):
    session = ScriptedSession(queries=[response(200, PARSER_ERROR)])
    client = make_client(base_config, session)

    with pytest.raises(QBORequestError, match="ValidationFault"):
        client.query("SELECT * FROM Invoice")

    assert len(session.sent_queries) == 1


def test_system_fault_in_http_200_is_retried(base_config):
    system_fault = {"Fault": {"Error": [{"Message": "An application error has occurred",
                                         "code": "10000"}], "type": "SystemFault"}}
    session = ScriptedSession(queries=[response(200, system_fault), count_answer(3)])
    client = make_client(base_config, session)

    assert client.count_query("SELECT COUNT(*) FROM Item") == 3
    assert client.totals.retries == 1


def test_401_triggers_refresh_and_new_token_is_used(base_config):
    session = ScriptedSession(
        queries=[count_answer(1), response(401, EXPIRED_401), count_answer(2)],
        tokens=[token_answer("access-1", "refresh-2"), token_answer("access-2", "refresh-3")],
    )
    client = make_client(base_config, session)

    assert client.count_query("SELECT COUNT(*) FROM Invoice") == 1
    assert client.count_query("SELECT COUNT(*) FROM Invoice") == 2

    authorizations = [sent["headers"]["Authorization"] for sent in session.sent_queries]
    assert authorizations == ["Bearer access-1", "Bearer access-1", "Bearer access-2"]
    refresh_tokens = [sent["data"]["refresh_token"] for sent in session.sent_tokens]
    assert refresh_tokens == [base_config["refresh_token"], "refresh-2"]


def test_access_token_refreshed_before_expiry(base_config):
    session = ScriptedSession(
        queries=[count_answer(1), count_answer(2)],
        tokens=[token_answer("short-1", "refresh-2", expires_in=0.4), token_answer("a2", "r3")],
    )
    client = make_client(base_config, session)

    client.count_query("SELECT COUNT(*) FROM Invoice")
    time.sleep(0.25)
    client.count_query("SELECT COUNT(*) FROM Invoice")

    authorizations = [sent["headers"]["Authorization"] for sent in session.sent_queries]
    assert authorizations == ["Bearer short-1", "Bearer a2"]


def test_rotated_token_stored_owner_only(base_config):
    first = ScriptedSession(queries=[count_answer(1)], tokens=[token_answer("a1", "rotated-1")])
    make_client(base_config, first).count_query("SELECT COUNT(*) FROM Invoice")

    store_file = TokenStore(base_config["token_store_path"], base_config["realm_id"]).path
    assert stat.S_IMODE(os.stat(store_file).st_mode) == 0o600
    assert "rotated-1" in store_file.read_text()

    second = ScriptedSession(queries=[count_answer(1)], tokens=[token_answer("a2", "rotated-2")])
    make_client(base_config, second).count_query("SELECT COUNT(*) FROM Invoice")

    assert second.sent_tokens[0]["data"]["refresh_token"] == "rotated-1"
    assert "rotated-2" in store_file.read_text()


def test_replaced_configured_token_wins_over_store(base_config):
    first = ScriptedSession(queries=[count_answer(1)], tokens=[token_answer("a1", "rotated-1")])
    make_client(base_config, first).count_query("SELECT COUNT(*) FROM Invoice")

    replaced = {**base_config, "refresh_token": "operator-new-token"}
    second = ScriptedSession(queries=[count_answer(1)], tokens=[token_answer("a2", "rotated-2")])
    make_client(replaced, second).count_query("SELECT COUNT(*) FROM Invoice")

    assert second.sent_tokens[0]["data"]["refresh_token"] == "operator-new-token"


def test_invalid_grant_stops_with_reconnect_message(base_config):
    session = ScriptedSession(
        tokens=[response(400, {"error_description": "Token invalid", "error": "invalid_grant"})]
    )
    client = make_client(base_config, session)

    with pytest.raises(RefreshTokenRejectedError) as caught:
        client.query("SELECT * FROM Invoice")

    assert str(caught.value) == INVALID_GRANT_MESSAGE
    assert str(caught.value).startswith(
        "refresh token rejected by QBO (invalid_grant): reconnect the app and update "
        "the refresh token secret"
    )
    assert session.sent_queries == []


def test_dead_stored_token_falls_back_to_configured(base_config):
    store = TokenStore(base_config["token_store_path"], base_config["realm_id"])
    store.save("stored-dead", configured=base_config["refresh_token"])
    invalid_grant = response(400, {"error": "invalid_grant"})
    session = ScriptedSession(
        queries=[count_answer(1)], tokens=[invalid_grant, token_answer("a1", "fresh")]
    )
    client = make_client(base_config, session)

    assert client.count_query("SELECT COUNT(*) FROM Invoice") == 1

    sent = [entry["data"]["refresh_token"] for entry in session.sent_tokens]
    assert sent == ["stored-dead", base_config["refresh_token"]]
    assert "fresh" in store.path.read_text()


def test_token_endpoint_errors_retried(base_config):
    store = TokenStore(base_config["token_store_path"], base_config["realm_id"])
    store.save("stored-before", configured=base_config["refresh_token"])
    session = ScriptedSession(
        queries=[count_answer(1)],
        tokens=[
            response(429, text="slow down"),
            response(503, text="down"),
            requests.ConnectionError("reset"),
            token_answer("a1", "stored-after"),
        ],
    )
    client = make_client(base_config, session)

    assert client.count_query("SELECT COUNT(*) FROM Invoice") == 1

    sent = [entry["data"]["refresh_token"] for entry in session.sent_tokens]
    assert sent == ["stored-before"] * 4
    assert "stored-after" in store.path.read_text()


def test_token_endpoint_down_leaves_store_unchanged(base_config):
    store = TokenStore(base_config["token_store_path"], base_config["realm_id"])
    store.save("stored-before", configured=base_config["refresh_token"])
    session = ScriptedSession(tokens=[response(503, text="down")] * 3)
    client = make_client({**base_config, "max_retries": 2}, session)

    with pytest.raises(RetriesExhaustedError, match="stored refresh token is unchanged"):
        client.query("SELECT * FROM Invoice")

    assert "stored-before" in store.path.read_text()


def test_logs_and_errors_carry_no_secret(base_config, caplog):
    caplog.set_level(logging.DEBUG)
    session = ScriptedSession(
        queries=[
            response(401, EXPIRED_401),
            response(429, text=THROTTLE_XML),
            response(500, {"Fault": {"Error": [{"Message": "token access-1 x", "code": "1"}]}}),
            response(400, PARSER_ERROR),
        ],
        tokens=[token_answer("access-1", "refresh-2"), token_answer("access-2", "refresh-3")],
    )
    client = make_client(base_config, session)

    with pytest.raises(QBORequestError) as caught:
        client.query("SELECT * FROM Invoice")

    text = caplog.text + str(caught.value)
    for secret in (
        base_config["client_secret"],
        base_config["refresh_token"],
        base_config["client_id"],
        "access-1",
        "access-2",
        "refresh-2",
        "refresh-3",
    ):
        assert secret not in text
    assert "HTTP 429, QBO code 3001, intuit_tid tid-429" in caplog.text
    assert "HTTP 401" in caplog.text


def test_requests_in_flight_never_exceed_the_cap(base_config):
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    class SlowSession(ScriptedSession):
        def get(self, url, **kwargs):
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.02)
            with lock:
                in_flight -= 1
            return count_answer(1)

    # Without a limit per second, so that only the cap keeps requests apart.
    config = {**base_config, "max_concurrent_requests": 3, "max_requests_per_second": 1000}
    client = make_client(config, SlowSession())
    threads = [
        threading.Thread(target=client.count_query, args=("SELECT COUNT(*) FROM Item",))
        for _ in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert client.totals.requests == 12
    assert peak == 3


def test_rate_limiter_spaces_requests(base_config):
    session = ScriptedSession(queries=[count_answer(1) for _ in range(6)])
    client = make_client(base_config, session)
    # The per-minute limiter, shrunk to a per-second one so the test runs fast.
    client._limiter = Limiter(Rate(3, Duration.SECOND))

    started = time.monotonic()
    for _ in range(6):
        client.count_query("SELECT COUNT(*) FROM Item")
    elapsed = time.monotonic() - started

    assert elapsed >= 0.9
