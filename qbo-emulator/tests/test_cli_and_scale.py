"""The serve command and a million-invoice company."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time

import requests

from qbo_emulator.query import execute, parse_query
from qbo_emulator.responses import dumps
from qbo_emulator.testing import build_emulator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_prints_ready_line_and_answers() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "qbo_emulator.cli", "serve", "--port", str(port),
         "--invoices", "30", "--customers", "5", "--items", "4",
         "--set", "requests_per_second=7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        base_url = f"http://127.0.0.1:{port}"
        assert f"base_url={base_url}" in line
        assert f"token_url={base_url}/oauth2/v1/tokens/bearer" in line
        token = requests.post(f"{base_url}/oauth2/v1/tokens/bearer",
                              auth=("demo-client-id", "demo-client-secret"),
                              data={"grant_type": "refresh_token",
                                    "refresh_token": "demo-refresh-token"},
                              timeout=10).json()["access_token"]
        response = requests.get(f"{base_url}/v3/company/9130357766900011/query",
                                params={"query": "SELECT COUNT(*) FROM Invoice"},
                                headers={"Authorization": f"Bearer {token}",
                                         "Accept": "application/json"}, timeout=10)
        assert response.json()["QueryResponse"] == {"totalCount": 30}
        config = requests.get(f"{base_url}/_emulator/config", timeout=10).json()
        assert config["settings"]["requests_per_second"] == 7
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


def test_serve_reports_busy_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "qbo_emulator.cli", "serve", "--port", str(port),
             "--invoices", "1", "--customers", "1", "--items", "1"],
            capture_output=True, text=True, timeout=30, env=os.environ,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_million_invoices_fit_and_page_fast() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    company = build_emulator(invoices=1_000_000, customers=2000, items=200).company
    build_seconds = time.perf_counter() - started
    query = parse_query(
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2024-05-01' "
        "AND MetaData.LastUpdatedTime < '2024-06-01' "
        "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 2001 MAXRESULTS 1000", company)
    execute(query, company)
    started = time.perf_counter()
    result = execute(query, company)
    body = dumps({"QueryResponse": {"Invoice": company.records("Invoice", result.rows)}})
    page_seconds = time.perf_counter() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024

    assert company.counts("Invoice")["total"] == 1_000_000
    assert len(result.rows) == 1000
    assert len(body) > 1_000_000
    # Generous bounds so a loaded CI machine passes; README lists measured figures.
    assert build_seconds < 20
    assert page_seconds < 2
    assert grown_mb < 400
