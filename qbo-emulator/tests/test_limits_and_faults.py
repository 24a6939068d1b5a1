"""Rate limits, the latency model and scripted faults."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import requests
from conftest import QboClient

from qbo_emulator.testing import run_emulator

THROTTLE_MESSAGE = "message=ThrottleExceeded; errorCode=003001; statusCode=429"


def test_requests_per_minute_throttled_with_xml_body() -> None:
    with run_emulator(invoices=5, customers=1, items=1, requests_per_minute=5) as emu:
        client = QboClient(emu)
        statuses = [client.get("SELECT * FROM Invoice").status_code for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        response = client.get("SELECT * FROM Invoice")
        assert response.headers["Content-Type"].startswith("application/xml")
        assert response.headers["intuit_tid"]
        assert THROTTLE_MESSAGE in response.text
        assert '<Fault type="SERVICE"><Error code="3001">' in response.text
        emu.control.reset_limits()
        assert client.get("SELECT * FROM Invoice").status_code == 200


def test_token_requests_do_not_count_against_api_limit() -> None:
    with run_emulator(invoices=5, customers=1, items=1, requests_per_minute=2) as emu:
        client = QboClient(emu)
        for _ in range(4):
            assert client.refresh().status_code == 200
        assert client.get("SELECT * FROM Invoice").status_code == 200


def test_concurrent_requests_over_limit_throttled() -> None:
    with run_emulator(invoices=20, customers=2, items=2, max_concurrent=2,
                      requests_per_minute=0, latency_base_ms=1500) as emu:
        client = QboClient(emu)
        headers = client.headers()

        def one() -> int:
            return requests.get(f"{emu.api_base}/query",
                                params={"query": "SELECT * FROM Invoice"},
                                headers=headers, timeout=10).status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
            statuses = sorted(pool.map(lambda _: one(), range(5)))
        assert statuses.count(200) == 2
        assert statuses.count(429) == 3
        log = emu.control.requests(endpoint="query")
        assert sorted(str(e["throttled_by"]) for e in log) == ["None"] * 2 + ["in_flight"] * 3


def test_request_log_names_throttling_limit() -> None:
    with run_emulator(invoices=5, customers=1, items=1, requests_per_minute=3,
                      requests_per_second=2) as emu:
        client = QboClient(emu)
        statuses = [client.get("SELECT * FROM Invoice").status_code for _ in range(3)]
        time.sleep(1.1)
        statuses += [client.get("SELECT * FROM Invoice").status_code for _ in range(2)]
        log = emu.control.requests(endpoint="query")
    assert statuses == [200, 200, 429, 200, 429]
    assert [e["throttled_by"] for e in log] == [
        None, None, "per_second", None, "per_minute"]


def test_ten_slow_requests_served_concurrently() -> None:
    with run_emulator(invoices=20, customers=2, items=2, max_concurrent=10,
                      latency_base_ms=500) as emu:
        client = QboClient(emu)
        headers = client.headers()

        def one() -> int:
            return requests.get(f"{emu.api_base}/query",
                                params={"query": "SELECT * FROM Invoice"},
                                headers=headers, timeout=10).status_code

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
            statuses = list(pool.map(lambda _: one(), range(10)))
        elapsed = time.perf_counter() - started
        assert statuses == [200] * 10
        # One after another they would take 5 s.
        assert elapsed < 2.5


def test_latency_per_record(small_client: QboClient) -> None:
    small_client.emu.control.set_config(latency_per_record_ms=20)
    started = time.perf_counter()
    small_client.get("SELECT * FROM Invoice MAXRESULTS 20")
    slow = time.perf_counter() - started
    started = time.perf_counter()
    small_client.get("SELECT COUNT(*) FROM Invoice")
    fast = time.perf_counter() - started
    assert slow >= 0.4
    assert fast < slow


@pytest.mark.parametrize(("kind", "status"), [("429", 429), ("500", 500), ("503", 503),
                                              ("401", 401), ("fault_200", 200)])
def test_status_faults_hit_next_request_only(small_client: QboClient, kind: str,
                                             status: int) -> None:
    small_client.headers()
    small_client.emu.control.inject_faults(kind)
    response = small_client.get("SELECT * FROM Invoice")
    assert response.status_code == status
    assert response.headers["intuit_tid"]
    if kind == "fault_200":
        assert response.json()["Fault"]["Error"][0]["code"] == "10000"
    if kind == "500":
        assert response.json()["Fault"]["type"] == "SystemFault"
    if kind == "401":
        assert response.json()["fault"]["type"] == "AUTHENTICATION"
    if kind == "429":
        assert THROTTLE_MESSAGE in response.text
    assert small_client.get("SELECT * FROM Invoice").status_code == 200


def test_fault_200_with_processing_error_code(small_client: QboClient) -> None:
    small_client.emu.control.inject_faults("fault_200", code="4002")
    response = small_client.get("SELECT * FROM Invoice")
    assert response.status_code == 200
    assert response.json()["Fault"]["Error"][0]["code"] == "4002"


def test_fault_count(small_client: QboClient) -> None:
    small_client.emu.control.inject_faults("503", count=3)
    statuses = [small_client.get("SELECT * FROM Item").status_code for _ in range(4)]
    assert statuses == [503, 503, 503, 200]


def test_fault_fraction_hits_some_requests(small_client: QboClient) -> None:
    small_client.emu.control.set_config(requests_per_minute=0)
    small_client.emu.control.inject_faults("500", fraction=0.5)
    statuses = [small_client.get("SELECT * FROM Item").status_code for _ in range(60)]
    assert 10 < statuses.count(500) < 50
    assert statuses.count(200) + statuses.count(500) == 60


def test_reset_closes_connection_without_answer(small_client: QboClient) -> None:
    small_client.headers()
    small_client.emu.control.inject_faults("reset")
    with pytest.raises(requests.ConnectionError):
        small_client.get("SELECT * FROM Invoice")
    assert small_client.get("SELECT * FROM Invoice").status_code == 200
    log = small_client.emu.control.requests(endpoint="query")
    assert [entry["fault"] for entry in log] == ["reset", None]


def test_malformed_json(small_client: QboClient) -> None:
    small_client.emu.control.inject_faults("malformed_json")
    response = small_client.get("SELECT * FROM Invoice")
    assert response.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_slow_answer_passes_client_timeout(small_client: QboClient) -> None:
    small_client.headers()
    small_client.emu.control.inject_faults("slow", delay_seconds=1.0)
    with pytest.raises(requests.Timeout):
        small_client.get("SELECT * FROM Invoice", timeout=0.3)
    assert small_client.get("SELECT * FROM Invoice").status_code == 200


def test_extra_row_returns_one_more_than_asked(small_client: QboClient) -> None:
    small_client.emu.control.inject_faults("extra_row")
    page = small_client.get("SELECT * FROM Invoice MAXRESULTS 10").json()["QueryResponse"]
    assert page["maxResults"] == 11 == len(page["Invoice"])


def test_faults_aimed_at_token_endpoint(small_client: QboClient) -> None:
    small_client.headers()
    small_client.emu.control.inject_faults("500", target="token")
    assert small_client.get("SELECT * FROM Item").status_code == 200
    assert small_client.refresh().status_code == 500
    assert small_client.refresh().status_code == 200
    small_client.emu.control.inject_faults("reset", target="token")
    with pytest.raises(requests.ConnectionError):
        small_client.refresh()


def test_unknown_fault_kind_rejected(small_emu) -> None:
    with pytest.raises(RuntimeError, match="unknown fault kind"):
        small_emu.control.inject_faults("418")


def test_requests_per_second_limit() -> None:
    with run_emulator(invoices=5, customers=1, items=1, requests_per_second=3) as emu:
        client = QboClient(emu)
        client.headers()
        statuses = [client.get("SELECT * FROM Invoice").status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200]
        assert 429 in statuses[3:]


def test_batch_items_count_against_minute_limit() -> None:
    with run_emulator(invoices=5, customers=1, items=1, requests_per_minute=6) as emu:
        client = QboClient(emu)
        items = [{"bId": str(i), "Query": "SELECT COUNT(*) FROM Item"} for i in range(5)]

        def batch() -> int:
            return client.session.post(f"{emu.api_base}/batch",
                                       json={"BatchItemRequest": items},
                                       headers=client.headers(), timeout=10).status_code

        assert batch() == 200
        assert batch() == 429
        assert client.get("SELECT * FROM Item").status_code == 200
