"""The emulator process and the Postgres database that a benchmark run uses."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import psycopg
from psycopg import sql

from qbo_backfill.db import RAW_TABLES, AdminConnection, init_database

if TYPE_CHECKING:
    from collections.abc import Iterator

LOGGER = logging.getLogger("bench")

EMULATOR_START_TIMEOUT_SECONDS = 300
# nice(1) increment of the emulator process in the local scenario: the lowest priority.
EMULATOR_NICENESS = 19
_READY = re.compile(r"qbo-emulator ready base_url=(\S+) .*realm_id=(\S+)")


@dataclass(frozen=True)
class EmulatorLimits:
    """QBO limits and latency model that the emulator enforces.

    Attributes:
        requests_per_minute: API requests per realm in any 60 s; 0 is off.
        requests_per_second: API requests per realm in any second; 0 is off.
        max_concurrent: API requests per realm in flight; 0 is off.
        latency_base_ms: Milliseconds added to every API answer.
        latency_per_record_ms: Milliseconds added per returned record.
    """

    requests_per_minute: int = 0
    requests_per_second: int = 0
    max_concurrent: int = 0
    latency_base_ms: float = 0.0
    latency_per_record_ms: float = 0.0

    def describe(self) -> str:
        """Describe the limits in one line, for the printed table."""
        if not (self.requests_per_minute or self.requests_per_second or self.max_concurrent):
            limits = "no rate limit"
        else:
            limits = (
                f"{self.requests_per_minute} requests/min, "
                f"{self.requests_per_second} requests/s, "
                f"{self.max_concurrent} in flight"
            )
        return (
            f"{limits}, latency {self.latency_base_ms:g} ms + "
            f"{self.latency_per_record_ms:g} ms per record"
        )


@dataclass
class EmulatorProcess:
    """A ``qbo-emulator serve`` child process and how to reach it.

    Attributes:
        process: The child process.
        base_url: ``http://127.0.0.1:PORT``.
        port: TCP port it listens on.
        realm_id: Realm it serves.
    """

    process: subprocess.Popen[str]
    base_url: str
    port: int
    realm_id: str

    def cpu_seconds(self) -> float:
        """Return the user plus system CPU time the emulator used so far."""
        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    def peak_rss_bytes(self) -> int:
        """Return the emulator's peak resident set size so far."""
        from bench.procmon import read_peak_rss_bytes  # noqa: PLC0415

        return read_peak_rss_bytes(self.process.pid) or 0


@contextlib.contextmanager
def emulator_process(
    *,
    invoices: int,
    customers: int,
    items: int,
    limits: EmulatorLimits,
    log_path: Path,
    niceness: int = EMULATOR_NICENESS,
) -> Iterator[EmulatorProcess]:
    """Serve a generated company with ``qbo-emulator serve`` on a free port.

    The emulator runs in its own process so that its CPU time is measured apart
    from the tap's and the benchmark's.

    Args:
        invoices: Generated invoices.
        customers: Generated customers.
        items: Generated items.
        limits: Rate limits and latency model.
        log_path: File that receives the emulator's output after the ready line.
        niceness: nice(1) increment of the emulator process.

    Yields:
        The running emulator; it is stopped with SIGTERM on leaving the block.

    Raises:
        RuntimeError: If the emulator does not print its ready line in time.
    """
    executable = Path(sys.executable).parent / "qbo-emulator"
    command = [
        str(executable), "serve", "--host", "127.0.0.1", "--port", "0",
        "--invoices", str(invoices), "--customers", str(customers), "--items", str(items),
        "--requests-per-minute", str(limits.requests_per_minute),
        "--max-concurrent", str(limits.max_concurrent),
        "--latency-base-ms", str(limits.latency_base_ms),
        "--latency-per-record-ms", str(limits.latency_per_record_ms),
        "--set", f"requests_per_second={limits.requests_per_second}",
        # A million-invoice company needs start positions past QBO's 100,000 only
        # inside one tied second; time-keyset pages never go that far.
        "--log-level", "WARNING",
    ]
    log = log_path.open("w", encoding="utf-8")
    process = subprocess.Popen(  # noqa: S603 - fixed command
        command, stdout=subprocess.PIPE, stderr=log, text=True,
        preexec_fn=lambda: os.nice(niceness),  # noqa: PLW1509 - no threads yet
    )
    try:
        running = _wait_until_ready(process)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_ready(process: subprocess.Popen[str]) -> EmulatorProcess:
    assert process.stdout is not None  # noqa: S101 - opened with PIPE
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = _READY.search(line)
        if match:
            base_url = match.group(1)
            return EmulatorProcess(
                process=process,
                base_url=base_url,
                port=int(base_url.rsplit(":", 1)[1]),
                realm_id=match.group(2),
            )
    msg = (
        f"qbo-emulator did not become ready within {EMULATOR_START_TIMEOUT_SECONDS} s "
        f"(exit code {process.poll()}); see its log next to the result file"
    )
    raise RuntimeError(msg)


@dataclass(frozen=True)
class BenchDatabase:
    """The benchmark's own database, with the raw schema and a loader role.

    The benchmark never writes into the project database, so running it does not
    touch backfilled data.

    Attributes:
        admin: Administrator connection to the benchmark database.
        loader_role: Role that target-postgres connects as.
        loader_password: Password of ``loader_role``, generated for this run.
    """

    admin: AdminConnection
    loader_role: str
    loader_password: str

    def loader_environment(self) -> dict[str, str]:
        """Return the ``PG*`` variables with which target-postgres reaches the database."""
        return {
            "PGHOST": self.admin.host,
            "PGPORT": str(self.admin.port),
            "PGUSER": self.loader_role,
            "PGPASSWORD": self.loader_password,
            "PGDATABASE": self.admin.database,
        }

    def truncate(self) -> None:
        """Empty every raw table."""
        tables = sql.SQL(", ").join(sql.Identifier("raw", name) for name in RAW_TABLES)
        with self.admin.connect() as connection:
            connection.execute(sql.SQL("truncate {}").format(tables))

    def start_clean(self) -> bool:
        """Empty every raw table and force a checkpoint before a timed load.

        Postgres starts a checkpoint every few hundred MiB of WAL, and the first
        change of each page after one writes the whole page to the WAL again. A
        load of 100,000 invoices writes about a GiB, so where the last checkpoint
        fell would make one of two loads of the same records slower. Forcing one
        here starts each timed load from the same point.

        Returns:
            Whether the checkpoint ran: it needs a superuser or, from
            PostgreSQL 15, a member of ``pg_checkpoint``.
        """
        self.truncate()
        with self.admin.connect() as connection:
            try:
                connection.execute("checkpoint")
            except psycopg.errors.InsufficientPrivilege:
                return False
        return True

    def count(self, table: str) -> int:
        """Return the number of rows of ``raw.<table>``."""
        query = sql.SQL("select count(*) from raw.{}").format(sql.Identifier(table))
        with self.admin.connect() as connection:
            row = connection.execute(query).fetchone()
        return int(row[0]) if row else 0

    def window_totals(self, entity: str) -> dict[str, Any]:
        """Return the summed ``qb_extract_windows`` counters of one entity."""
        query = (
            "select count(*), coalesce(sum(requests), 0), coalesce(sum(pages), 0), "
            "coalesce(sum(throttles), 0), coalesce(sum(retries), 0) "
            "from raw.qb_extract_windows where entity = %s"
        )
        with self.admin.connect() as connection:
            row = connection.execute(query, [entity]).fetchone()
        assert row is not None  # noqa: S101 - an aggregate returns one row
        return {
            "windows": int(row[0]),
            "requests": int(row[1]),
            "pages": int(row[2]),
            "throttles": int(row[3]),
            "retries": int(row[4]),
        }

    def drop(self) -> None:
        """Drop the database (the loader role stays, with a password nobody keeps)."""
        admin = self.admin
        with admin.connect(database="postgres") as connection:
            connection.execute(
                sql.SQL("drop database if exists {} with (force)").format(
                    sql.Identifier(admin.database)
                )
            )


def prepare_database(name: str, loader_role: str) -> BenchDatabase:
    """Create (or reuse) the benchmark database and give the loader role a new password.

    The administrator comes from ``QBO_PG_ADMIN_USER``/``QBO_PG_ADMIN_PASSWORD``,
    else ``PGUSER``/``PGPASSWORD``, on ``PGHOST``:``PGPORT``.

    Args:
        name: Database name.
        loader_role: Role to create or reuse for the loads.

    Returns:
        The prepared database.
    """
    server = AdminConnection.from_environment()
    admin = AdminConnection(
        host=server.host, port=server.port, user=server.user,
        password=server.password, database=name,
    )
    password = secrets.token_urlsafe(18)
    previous = os.environ.get("QBO_LOADER_PASSWORD")
    os.environ["QBO_LOADER_PASSWORD"] = password
    try:
        for line in init_database(admin, loader_role):
            LOGGER.info("%s", line)
    finally:
        if previous is None:
            os.environ.pop("QBO_LOADER_PASSWORD", None)
        else:
            os.environ["QBO_LOADER_PASSWORD"] = previous
    return BenchDatabase(admin=admin, loader_role=loader_role, loader_password=password)
