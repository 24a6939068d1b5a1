"""Command line: ``qbo-emulator serve``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType

import click

from qbo_emulator import DEFAULT_REFRESH_TOKEN, TOKEN_PATH
from qbo_emulator.server import ServerThread
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
              help="Milliseconds added to every API answer (default 0).")
@click.option("--latency-per-record-ms", type=float, default=None,
              help="Milliseconds added per returned record (default 0).")
@click.option("--max-start-position", type=int, default=None,
              help="Largest STARTPOSITION accepted; 0 is unlimited (default 100000).")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def serve(host: str, port: int, invoices: int | None, customers: int | None,
          items: int | None, seed: int, tie_size: int | None,
          include_captured: bool | None, refresh_token: str, log_level: str,
          **settings: object) -> None:
    """Serve the emulator until interrupted; print one line when ready."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    chosen = {name: value for name, value in settings.items() if value is not None}
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


if __name__ == "__main__":
    main()
