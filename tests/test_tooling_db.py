"""Raw schema set-up and loader role rights (`qbo-backfill db init`)."""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner

from conftest import PostgresDatabase
from qbo_backfill.cli import main
from qbo_backfill.db import RAW_TABLES, init_database

ROW = {
    "id": "1",
    "payload": '{"Id": "1"}',
    "window_start": "2024-01-01T00:00:00Z",
    "window_end": "2024-01-08T00:00:00Z",
}
INSERT = (
    "insert into raw.qb_items_raw (id, payload, ingested_at_utc, extract_window_start_utc,"
    " extract_window_end_utc, page_number, page_size, request_payload, last_updated_utc,"
    " created_utc) values (%(id)s, %(payload)s, now(), %(window_start)s, %(window_end)s,"
    " 1, 1000, '{}', %(window_start)s, %(window_start)s)"
)


def connect_as_loader(database: PostgresDatabase) -> psycopg.Connection:
    """Open an autocommit connection as the loader role."""
    return psycopg.connect(
        host=database.admin.host, port=database.admin.port, user=database.loader_role,
        password=database.loader_password, dbname=database.admin.database,
        autocommit=True,
    )


def test_db_init_runs_twice(database: PostgresDatabase) -> None:
    report = init_database(database.admin, database.loader_role)

    assert not any(line.startswith("created") for line in report)
    tables = database.fetch_all(
        "select table_name from information_schema.tables where table_schema = 'raw'"
    )
    assert sorted(row[0] for row in tables) == sorted(RAW_TABLES)


def test_loader_can_upsert(database: PostgresDatabase) -> None:
    with connect_as_loader(database) as connection:
        connection.execute(INSERT, ROW)
        connection.execute("update raw.qb_items_raw set page_number = 2 where id = '1'")
        connection.execute("create temporary table batch (like raw.qb_items_raw)")

    assert database.fetch_all("select page_number from raw.qb_items_raw") == [(2,)]


@pytest.mark.parametrize(
    "statement",
    [
        "delete from raw.qb_items_raw",
        "alter table raw.qb_items_raw add column extra text",
        "alter table raw.qb_items_raw alter column last_updated_utc type timestamp",
        "create table raw.other (id text)",
        "drop table raw.qb_items_raw",
    ],
)
def test_loader_cannot_change_contract(database: PostgresDatabase, statement: str) -> None:
    with connect_as_loader(database) as connection, pytest.raises(
        psycopg.errors.InsufficientPrivilege
    ):
        connection.execute(statement)


def test_timestamps_keep_utc_offset(database: PostgresDatabase) -> None:
    with connect_as_loader(database) as connection:
        connection.execute(INSERT, {**ROW, "window_start": "2023-02-01T10:00:00-08:00",
                                    "window_end": "2023-03-01T00:00:00Z"})

    rows = database.fetch_all(
        "select to_char(last_updated_utc at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
        "from raw.qb_items_raw"
    )
    assert rows == [("2023-02-01 18:00:00",)]


def test_pg_env_with_pghost_prints_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "db.internal")
    monkeypatch.setenv("PGPASSWORD", "do-not-print-me")
    monkeypatch.delenv("PGUSER", raising=False)

    result = CliRunner().invoke(main, ["pg", "env"])

    assert result.exit_code == 0
    assert "do-not-print-me" not in result.output
    assert "PGPASSWORD" not in result.output
    assert "export PGUSER=qbo_loader" in result.output
