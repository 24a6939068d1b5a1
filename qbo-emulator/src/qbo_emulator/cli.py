"""Command line: ``qbo-emulator serve``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType

import click

from qbo_emulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REALM_ID,
    DEFAULT_REFRESH_TOKEN,
    TOKEN_PATH,
)
from qbo_emulator.server import Emulator, ServerThread
from qbo_emulator.testing import build_emulator


@click.group()
def main() -> None:
    """Local QuickBooks Online API and Intuit OAuth emulator."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8765, show_default=True, type=int,
              help="TCP port to bind; 0 picks a free one.")
@click.option("--invoices", type=int, default=None,
              help="Generated invoices (default company: 2000 plus captured ones).")
@click.option("--customers", type=int, default=None,
              help="Generated customers (default company: 300 plus captured ones).")
@click.option("--items", type=int, default=None,
              help="Generated items (default company: 60 plus captured ones).")
@click.option("--seed", type=int, default=7, show_default=True,
              help="Generator seed; equal seeds give equal companies.")
@click.option("--tie-size", type=int, default=None,
              help="Records per entity sharing one LastUpdatedTime second "
                   "(default: a tenth of the rows, at most 250).")
@click.option("--captured/--no-captured", "include_captured", default=None,
              help="Serve the captured sandbox records too "
                   "(default: only when no size is given).")
@click.option("--realm-id", default=None, help="Realm (company) id to serve.")
@click.option("--client-id", default=None, help="OAuth client id to accept.")
@click.option("--client-secret", default=None, help="OAuth client secret to accept.")
@click.option("--refresh-token", default=DEFAULT_REFRESH_TOKEN,
              help="Refresh token accepted first.")
@click.option("--access-token-ttl", type=int, default=None,
              help="Access token lifetime in seconds (default 3600).")
@click.option("--rotation", default=None,
              help="Refresh token rotation: every_refresh (default) or period:SECONDS.")
@click.option("--requests-per-minute", type=int, default=None,
              help="API requests per realm per minute; 0 is unlimited (default 500).")
@click.option("--max-concurrent", type=int, default=None,
              help="API requests per realm in flight; 0 is unlimited (default 10).")
@click.option("--latency-base-ms", type=float, default=None,
              help="Milliseconds added to every API response (default 0).")
@click.option("--latency-per-record-ms", type=float, default=None,
              help="Milliseconds added per returned record (default 0).")
@click.option("--max-start-position", type=int, default=None,
              help="Largest STARTPOSITION accepted; 0 is unlimited (default 100000).")
@click.option("--set", "extra_settings", multiple=True, metavar="NAME=VALUE",
              help="Any other setting, e.g. --set requests_per_second=10 "
                   "(repeatable; names as in the README's settings table).")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def serve(host: str, port: int, invoices: int | None, customers: int | None,
          items: int | None, seed: int, tie_size: int | None,
          include_captured: bool | None, refresh_token: str, log_level: str,
          extra_settings: tuple[str, ...], **settings: object) -> None:
    """Serve the emulator until interrupted; print one line when ready."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    chosen = {name: value for name, value in settings.items() if value is not None}
    for item in extra_settings:
        name, separator, value = item.partition("=")
        if not separator:
            raise click.UsageError(f"--set {item!r} is not NAME=VALUE")
        chosen[name.strip().replace("-", "_")] = value.strip()
    try:
        emulator = build_emulator(invoices, customers, items, seed, tie_size,
                                  include_captured, refresh_token, **chosen)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    server = ServerThread(emulator, host, port)
    try:
        server.start()
    except (OSError, RuntimeError) as error:
        click.echo(f"qbo-emulator: cannot listen on {host}:{port}: {error}", err=True)
        sys.exit(1)

    base_url = f"http://{host}:{server.port}"
    counts = {name: emulator.company.counts(name)["total"]
              for name in ("Invoice", "Customer", "Item")}
    click.echo(
        f"qbo-emulator ready base_url={base_url} token_url={base_url}{TOKEN_PATH} "
        f"realm_id={emulator.settings.realm_id} invoices={counts['Invoice']} "
        f"customers={counts['Customer']} items={counts['Item']} "
        f"startup_s={time.perf_counter() - started:.1f}",
    )
    sys.stdout.flush()

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop.wait()
    server.stop()
    logging.getLogger("qbo_emulator").info("qbo-emulator on %s stopped", base_url)


@main.command()
@click.option("--invoices", type=int, default=1_000_000, show_default=True,
              help="Generated invoices in the measured company.")
@click.option("--pages", type=int, default=30, show_default=True,
              help="Pages of 1000 invoices to fetch over HTTP.")
@click.option("--base-url", default=None,
              help="Measure a running emulator (started with `serve` and "
                   "--requests-per-minute 0) instead of one in this process.")
@click.option("--refresh-token", default=DEFAULT_REFRESH_TOKEN,
              help="Refresh token for --base-url.")
def measure(invoices: int, pages: int, base_url: str | None, refresh_token: str) -> None:
    """Measure start-up time, memory and page speed of a large company."""
    import resource

    from qbo_emulator.testing import run_emulator

    if base_url is not None:
        click.echo(_fetch_pages(base_url.rstrip("/"), DEFAULT_REALM_ID, refresh_token, pages))
        return

    started = time.perf_counter()
    with run_emulator(invoices=invoices, customers=max(1, invoices // 200),
                      items=max(1, invoices // 2000), requests_per_minute=0,
                      max_concurrent=0) as emu:
        startup = time.perf_counter() - started
        figures = _fetch_pages(emu.base_url, emu.realm_id, emu.refresh_token, pages)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu_ms = _page_cpu_ms(emu.emulator, PAGE_QUERY.format(1))
        click.echo(
            f"invoices={invoices} startup_s={startup:.2f} max_rss_mb={rss_mb:.0f} "
            f"{figures} server_cpu_ms_per_page={cpu_ms:.0f}"
        )


PAGE_QUERY = ("SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2023-01-01' "
              "ORDERBY MetaData.LastUpdatedTime STARTPOSITION {} MAXRESULTS 1000")


def _fetch_pages(base_url: str, realm_id: str, refresh_token: str, pages: int) -> str:
    """Fetch pages of 1000 invoices one after another; return the timings as text."""
    import requests

    session = requests.Session()
    answer = session.post(base_url + TOKEN_PATH,
                          auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
                          data={"grant_type": "refresh_token",
                                "refresh_token": refresh_token}, timeout=30)
    if answer.status_code != 200:
        raise click.ClickException(
            f"token refresh failed with HTTP {answer.status_code}: {answer.text}; "
            "pass the current --refresh-token or restart the emulator"
        )
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}",
               "Accept": "application/json"}
    timings: list[float] = []
    records = 0
    for page in range(pages):
        began = time.perf_counter()
        response = session.get(f"{base_url}/v3/company/{realm_id}/query",
                               params={"query": PAGE_QUERY.format(1 + page * 1000)},
                               headers=headers, timeout=60)
        body = response.json()
        timings.append(time.perf_counter() - began)
        records += body["QueryResponse"].get("maxResults", 0)
    timings.sort()
    return (f"pages={pages} page_ms_median={timings[len(timings) // 2] * 1000:.0f} "
            f"page_ms_max={timings[-1] * 1000:.0f} "
            f"records_per_s={records / sum(timings):.0f}")


def _page_cpu_ms(emulator: Emulator, text: str, repeats: int = 10) -> float:
    """Return the least CPU time of this thread to select, build and encode a page."""
    from qbo_emulator.query import execute, parse_query
    from qbo_emulator.responses import dumps

    best = float("inf")
    for _ in range(repeats):
        began = time.thread_time()
        query = parse_query(text, emulator.company)
        result = execute(query, emulator.company)
        dumps({"QueryResponse": {"Invoice": emulator.company.records("Invoice",
                                                                     result.rows)}})
        best = min(best, time.thread_time() - began)
    return best * 1000


if __name__ == "__main__":
    main()
