"""Fixtures of the project's end-to-end tests: Postgres, Meltano and the emulator.

The tests run the real ``meltano run`` as a subprocess. It reads from the QBO
emulator, which runs in a thread of the test process on a free loopback port,
and loads into a real PostgreSQL server: the one named by ``PGHOST`` when set,
else the project's embedded server, started when needed. Each test session creates a database of
its own and drops it at the end; each test starts from empty raw tables and its
own Meltano system database (so its own state), while every test shares the
plugins that ``meltano install`` put in ``.meltano/``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from qbo_backfill.db import RAW_TABLES, AdminConnection, init_database
from qbo_backfill.pg import EmbeddedPostgres, EmbeddedPostgresError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MELTANO = PROJECT_ROOT / ".venv" / "bin" / "meltano"
MELTANO_RUN_TIMEOUT_SECONDS = 300

# Variables of the developer's shell that would change what a test run does.
_INHERITED_PREFIXES = ("TAP_", "TARGET_", "MELTANO_", "QBO_", "PG", "DBT_")


@dataclass(frozen=True)
class PostgresDatabase:
    """A database of the test session with the raw schema and a loader role.

    Attributes:
        admin: Administrator connection settings (owner of schema ``raw``).
        loader_role: Role the loads connect as, with the rights of ``db init``.
        loader_password: Password of ``loader_role``.
    """

    admin: AdminConnection
    loader_role: str
    loader_password: str

    def connect(self) -> psycopg.Connection:
        """Open an autocommit administrator connection to the test database."""
        return self.admin.connect()

    def loader_environment(self) -> dict[str, str]:
        """Return the libpq variables with which target-postgres reaches this database."""
        return {
            "PGHOST": self.admin.host,
            "PGPORT": str(self.admin.port),
            "PGUSER": self.loader_role,
            "PGPASSWORD": self.loader_password,
            "PGDATABASE": self.admin.database,
        }

    def truncate_raw_tables(self) -> None:
        """Empty every raw table."""
        tables = sql.SQL(", ").join(
            sql.Identifier("raw", table) for table in RAW_TABLES
        )
        with self.connect() as connection:
            connection.execute(sql.SQL("truncate {}").format(tables))

    def fetch_all(self, query: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        """Run ``query`` as the administrator and return every row."""
        with self.connect() as connection:
            return connection.execute(query, params).fetchall()

    def ids(self, table: str) -> list[str]:
        """Return the ``id`` column of ``raw.<table>``, sorted, duplicates kept."""
        query = sql.SQL("select id from raw.{} order by id").format(sql.Identifier(table))
        with self.connect() as connection:
            return [row[0] for row in connection.execute(query).fetchall()]

    def count(self, table: str) -> int:
        """Return the number of rows of ``raw.<table>``."""
        query = sql.SQL("select count(*) from raw.{}").format(sql.Identifier(table))
        with self.connect() as connection:
            return connection.execute(query).fetchone()[0]


def _server_admin() -> AdminConnection:
    """Return administrator settings of ``PGHOST``, or of the embedded server."""
    if os.environ.get("PGHOST"):
        admin = AdminConnection.from_environment()
        return AdminConnection(
            host=admin.host, port=admin.port, user=admin.user,
            password=admin.password, database="postgres",
        )

    server = EmbeddedPostgres(
        root=PROJECT_ROOT, port=int(os.environ.get("EMBEDDED_PG_PORT", "55432"))
    )
    try:
        server.start()
    except EmbeddedPostgresError as error:
        pytest.exit(f"cannot start the embedded PostgreSQL server: {error}", returncode=3)
    params = server.superuser_params("postgres")
    return AdminConnection(
        host=str(params["host"]), port=int(params["port"]), user=str(params["user"]),
        password=str(params["password"]), database="postgres",
    )


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    """Create a database for this test session, with schema ``raw`` and a loader role."""
    # `make test` exports the embedded server's QBO_LOADER_PASSWORD, which every
    # later init_database call would set on the session's loader role.
    os.environ.pop("QBO_LOADER_PASSWORD", None)
    server_admin = _server_admin()
    suffix = secrets.token_hex(4)
    name = f"qbo_e2e_{suffix}"
    loader_role = f"qbo_e2e_loader_{suffix}"
    loader_password = secrets.token_urlsafe(18)

    with server_admin.connect() as connection:
        connection.execute(sql.SQL("create database {}").format(sql.Identifier(name)))

    admin = AdminConnection(
        host=server_admin.host, port=server_admin.port, user=server_admin.user,
        password=server_admin.password, database=name,
    )
    init_database(admin, loader_role, loader_password)

    yield PostgresDatabase(admin=admin, loader_role=loader_role, loader_password=loader_password)

    with server_admin.connect() as connection:
        connection.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        connection.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(loader_role)))


@pytest.fixture
def database(postgres_database: PostgresDatabase) -> PostgresDatabase:
    """Return the session database with empty raw tables."""
    postgres_database.truncate_raw_tables()
    return postgres_database


@pytest.fixture(scope="session")
def meltano_installed() -> Path:
    """Make sure the project's plugins are installed; return the Meltano executable."""
    if not MELTANO.exists():
        pytest.exit("Meltano is not installed in .venv: run `make setup`", returncode=3)

    plugin_venvs = [
        PROJECT_ROOT / ".meltano" / "extractors" / "tap-quickbooks-backfill" / "venv",
        PROJECT_ROOT / ".meltano" / "loaders" / "target-postgres" / "venv",
    ]
    if not all(venv.exists() for venv in plugin_venvs):
        subprocess.run(
            [str(MELTANO), "install"], cwd=PROJECT_ROOT, env=_clean_environment(),
            check=True, timeout=900,
        )
    return MELTANO


def _clean_environment() -> dict[str, str]:
    return {
        key: value for key, value in os.environ.items()
        if not key.startswith(_INHERITED_PREFIXES)
    }


@dataclass
class MeltanoResult:
    """Outcome of one ``meltano`` command.

    Attributes:
        returncode: Exit code of the meltano process.
        output: Standard output and error, interleaved.
    """

    returncode: int
    output: str


@dataclass
class MeltanoProject:
    """Runs ``meltano`` commands of the project against the test emulator and database.

    Attributes:
        executable: Path of the ``meltano`` command.
        work_dir: Folder of this test's Meltano system database and token store.
        environment: Variables of every command; tests add or change entries.
    """

    executable: Path
    work_dir: Path
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def token_store(self) -> Path:
        """Folder of rotated refresh tokens of this test's runs."""
        return self.work_dir / "qbo-tokens"

    def command_environment(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        """Return the full environment of one command."""
        return {**_clean_environment(), **self.environment, **(extra or {})}

    def run(
        self, *args: str, env: Mapping[str, str] | None = None,
        timeout: float = MELTANO_RUN_TIMEOUT_SECONDS,
    ) -> MeltanoResult:
        """Run ``meltano ARGS`` in the project root and wait for it."""
        completed = subprocess.run(
            [str(self.executable), *args],
            cwd=PROJECT_ROOT,
            env=self.command_environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        return MeltanoResult(returncode=completed.returncode, output=completed.stdout)

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start ``meltano ARGS`` in a process group of its own, without waiting.

        Meltano runs the tap and the target as child processes; killing the
        group stops all three at once, as a crash of the machine would.
        """
        log = (self.work_dir / "meltano-background.log").open("ab")
        return subprocess.Popen(
            [str(self.executable), *args],
            cwd=PROJECT_ROOT,
            env=self.command_environment(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def backfill(
        self, entity: str, start: str, end: str, *extra_args: str,
        env: Mapping[str, str] | None = None,
    ) -> MeltanoResult:
        """Run ``meltano run tap-qb-<entity> target-postgres`` over ``[start, end)``."""
        return self.run("run", *extra_args, f"tap-qb-{entity}", "target-postgres",
                        env={**range_environment(entity, start, end), **(env or {})})


def range_environment(entity: str, start: str, end: str) -> dict[str, str]:
    """Return the variables that set the date range of one entity's extractor."""
    prefix = f"TAP_QB_{entity.upper()}"
    return {f"{prefix}_START_DATE": start, f"{prefix}_END_DATE": end}


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started by :meth:`MeltanoProject.start` and its children."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_until(condition: Any, timeout: float, message: str) -> None:  # noqa: ANN401
    """Poll ``condition()`` every 50 ms until it is true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {message}")
        time.sleep(0.05)


def _private_meltano_dir(path: Path) -> Path:
    """Create a Meltano system folder that shares the installed plugins only.

    Meltano keeps the system database (state) and each plugin's generated
    config and catalog under ``.meltano/``. Two runs of one extractor at the
    same time overwrite each other's catalog there, so every test gets a folder
    of its own whose plugin folders link to the project's installed ones.
    """
    path.mkdir(parents=True)
    for plugin_type in ("extractors", "loaders", "utilities"):
        installed = PROJECT_ROOT / ".meltano" / plugin_type
        if installed.is_dir():
            (path / plugin_type).symlink_to(installed, target_is_directory=True)
    return path


@pytest.fixture
def meltano_project(
    meltano_installed: Path, database: PostgresDatabase, tmp_path: Path
) -> MeltanoProject:
    """Return a Meltano runner wired to ``database``; each test adds its emulator."""
    project = MeltanoProject(executable=meltano_installed, work_dir=tmp_path)
    project.environment.update(
        {
            "MELTANO_PROJECT_ROOT": str(PROJECT_ROOT),
            "MELTANO_ENVIRONMENT": "dev",
            "MELTANO_SYS_DIR_ROOT": str(_private_meltano_dir(tmp_path / "meltano")),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "TAP_QUICKBOOKS_BACKFILL_TOKEN_STORE_PATH": str(project.token_store),
            **database.loader_environment(),
        }
    )
    return project


def emulator_environment(emulator: Any) -> dict[str, str]:  # noqa: ANN401
    """Return the variables that point the ``dev`` environment at ``emulator``."""
    port = urlsplit(emulator.base_url).port
    return {
        "QBO_EMULATOR_PORT": str(port),
        "TAP_QUICKBOOKS_BACKFILL_CLIENT_ID": emulator.client_id,
        "TAP_QUICKBOOKS_BACKFILL_CLIENT_SECRET": emulator.client_secret,
        "TAP_QUICKBOOKS_BACKFILL_REFRESH_TOKEN": emulator.refresh_token,
        "TAP_QUICKBOOKS_BACKFILL_REALM_ID": emulator.realm_id,
        # Tests inject bursts of 429: QBO's advice of a one-minute pause would
        # make each burst last minutes.
        "TAP_QUICKBOOKS_BACKFILL_THROTTLE_WAIT_SECONDS": "0",
    }


@pytest.fixture
def start_emulator(meltano_project: MeltanoProject) -> Iterator[Any]:
    """Return a function that starts an emulator and points the test's runs at it.

    Its keyword arguments go to ``qbo_emulator.testing.run_emulator``; the
    emulator stops when the test ends.
    """
    from qbo_emulator.testing import run_emulator

    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> Any:  # noqa: ANN401
            emulator = stack.enter_context(run_emulator(**options))
            meltano_project.environment.update(emulator_environment(emulator))
            return emulator

        yield start
