"""Raw schema and loader role set-up: ``qbo-backfill db init``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources

import click
import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "qbo_backfill"
DEFAULT_LOADER_ROLE = "qbo_loader"
RAW_TABLES = ("qb_invoices_raw", "qb_customers_raw", "qb_items_raw", "qb_extract_windows")


@dataclass(frozen=True)
class AdminConnection:
    """Connection settings of the administrator that owns the raw schema.

    Attributes:
        host: Server host.
        port: Server port.
        user: Administrator role: it needs CREATE on the database and CREATEROLE,
            or an existing loader role.
        password: Administrator password, or None for trust or a ``.pgpass`` file.
        database: Database that contains schema ``raw``.
    """

    host: str
    port: int
    user: str
    password: str | None
    database: str

    @classmethod
    def from_environment(cls) -> AdminConnection:
        """Build the settings from ``PG*`` and ``QBO_PG_ADMIN_*`` variables.

        ``QBO_PG_ADMIN_USER`` and ``QBO_PG_ADMIN_PASSWORD`` override ``PGUSER`` and
        ``PGPASSWORD``, so loads can run as the loader role while the set-up runs
        as an administrator.
        """
        host = os.environ.get("PGHOST")
        if not host:
            raise click.ClickException(
                "PGHOST is not set: run `eval \"$(qbo-backfill pg env)\"` after "
                "`qbo-backfill pg start`, or set PGHOST to your PostgreSQL server"
            )
        user = os.environ.get("QBO_PG_ADMIN_USER") or os.environ.get("PGUSER")
        if not user:
            raise click.ClickException(
                "no administrator role: set QBO_PG_ADMIN_USER (or PGUSER) to a role "
                "that may create schemas and roles"
            )
        password = os.environ.get("QBO_PG_ADMIN_PASSWORD") or os.environ.get("PGPASSWORD")
        port_text = os.environ.get("PGPORT", "5432")
        try:
            port = int(port_text)
        except ValueError as error:
            raise click.ClickException(f"PGPORT must be a port number, got {port_text!r}") from error
        database = os.environ.get("PGDATABASE") or DEFAULT_DATABASE
        return cls(host=host, port=port, user=user, password=password, database=database)

    def connect(self, database: str | None = None) -> psycopg.Connection:
        """Open an autocommit connection to ``database`` (default: the project's)."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
            autocommit=True,
            connect_timeout=10,
        )


def read_sql(name: str) -> str:
    """Return the text of a file in ``qbo_backfill/sql``."""
    return resources.files("qbo_backfill").joinpath("sql", name).read_text(encoding="utf-8")


def ensure_database(admin: AdminConnection) -> bool:
    """Create the project database when missing and the administrator may do so.

    Returns:
        True when the database was created.
    """
    try:
        with admin.connect():
            return False
    except psycopg.OperationalError as error:
        if "does not exist" not in str(error):
            raise

    with admin.connect(database="postgres") as connection:
        connection.execute(sql.SQL("create database {}").format(sql.Identifier(admin.database)))
    logger.info("created database %s", admin.database)
    return True


def ensure_loader_role(
    connection: psycopg.Connection, role: str, password: str | None = None
) -> bool:
    """Create the loader role (LOGIN, nothing else) when missing.

    Args:
        connection: Administrator connection.
        role: Name of the loader role.
        password: New password of the role; None leaves the password as it is.

    Returns:
        True when the role was created.
    """
    exists = connection.execute(
        "select 1 from pg_catalog.pg_roles where rolname = %s", [role]
    ).fetchone()
    if not exists:
        connection.execute(
            sql.SQL("create role {} login nosuperuser nocreatedb nocreaterole noinherit")
            .format(sql.Identifier(role))
        )
        logger.info("created role %s", role)

    if password:
        connection.execute(
            sql.SQL("alter role {} password {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    return not exists


def init_database(
    admin: AdminConnection, loader_role: str, loader_password: str | None = None
) -> list[str]:
    """Apply the raw schema DDL and grant the loader role its rights.

    Args:
        admin: Administrator connection settings.
        loader_role: Role that target-postgres connects as.
        loader_password: Password to set on the loader role. When None,
            ``QBO_LOADER_PASSWORD`` is used if set, else the password stays as it is.

    Returns:
        Lines describing what was done, for the command's output.
    """
    report = []
    if ensure_database(admin):
        report.append(f"created database {admin.database}")

    with admin.connect() as connection:
        connection.execute(read_sql("010_raw_schema.sql"))
        report.append(f"schema raw ready: {', '.join(RAW_TABLES)}")

        if loader_password is None:
            loader_password = os.environ.get("QBO_LOADER_PASSWORD")
        if ensure_loader_role(connection, loader_role, loader_password):
            report.append(f"created role {loader_role}")
        grants = sql.SQL(read_sql("020_loader_role.sql")).format(
            database=sql.Identifier(admin.database),
            loader_role=sql.Identifier(loader_role),
        )
        connection.execute(grants)
        report.append(f"granted {loader_role} the load rights on schema raw")
    return report


def count_rows(admin: AdminConnection) -> dict[str, int]:
    """Return the number of rows of each raw table."""
    counts = {}
    with admin.connect() as connection:
        for table in RAW_TABLES:
            query = sql.SQL("select count(*) from raw.{}").format(sql.Identifier(table))
            counts[table] = connection.execute(query).fetchone()[0]
    return counts


@click.group(name="db")
def db_group() -> None:
    """Set up the database that the loads write to."""


@db_group.command(name="init")
@click.option(
    "--loader-role",
    default=lambda: os.environ.get("QBO_LOADER_ROLE", DEFAULT_LOADER_ROLE),
    show_default="QBO_LOADER_ROLE or qbo_loader",
    help="Role that target-postgres connects as.",
)
def init_command(loader_role: str) -> None:
    """Create the database (if missing and allowed), schema raw, its tables and the loader role.

    Safe to run again: every statement checks what exists first.
    QBO_LOADER_PASSWORD, when set, becomes the loader role's password.
    """
    admin = AdminConnection.from_environment()
    try:
        report = init_database(admin, loader_role)
    except psycopg.Error as error:
        raise click.ClickException(
            f"database set-up failed on {admin.host}:{admin.port}/{admin.database} "
            f"as {admin.user}: {str(error).strip()}"
        ) from error
    for line in report:
        click.echo(line)


@db_group.command(name="counts")
def counts_command() -> None:
    """Print the number of rows of each raw table."""
    admin = AdminConnection.from_environment()
    try:
        counts = count_rows(admin)
    except psycopg.Error as error:
        raise click.ClickException(
            f"could not count rows in {admin.host}:{admin.port}/{admin.database}: "
            f"{str(error).strip()}; run `qbo-backfill db init` first"
        ) from error
    width = max(len(f"raw.{table}") for table in counts)
    for table, rows in counts.items():
        click.echo(f"{f'raw.{table}':<{width}}  {rows:>8} rows")
