"""End-to-end: `mage run` of the three pipelines with real Meltano, emulator and Postgres.

Mage runs in `.venv-mage`; its blocks start the project's real `meltano run`
(tap, target-postgres, state) and `qbo-backfill validate` from `.venv`. The
credentials reach Mage only through its secrets store, with values unique to
this test module, so a grep for them in Mage's output and files is meaningful.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PostgresDatabase, _private_meltano_dir
from mage_fixtures import (
    ROOT,
    MageRun,
    MageSandbox,
    files_containing,
    mage_run,
    make_mage_sandbox,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

START = "2022-12-01T00:00:00Z"
END = "2025-02-01T00:00:00Z"
ENTITIES = {
    "invoices": ("qb_invoices_backfill", "qb_invoices_raw", "Invoice"),
    "customers": ("qb_customers_backfill", "qb_customers_raw", "Customer"),
    "items": ("qb_items_backfill", "qb_items_raw", "Item"),
}


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def ids_in_range(records: list[dict[str, Any]], start: str, end: str) -> list[str]:
    low, high = utc(start), utc(end)
    return sorted(
        record["Id"]
        for record in records
        if low <= utc(record["MetaData"]["LastUpdatedTime"]) < high
    )


@dataclass
class MageStack:
    """Mage project copy, emulator and database wired together for this module."""

    sandbox: MageSandbox
    emulator: Any
    database: PostgresDatabase
    env: dict[str, str]
    credentials: list[str]
    outputs: list[MageRun]

    def run(self, entity: str, **variables: object) -> MageRun:
        pipeline = ENTITIES[entity][0]
        result = mage_run(
            pipeline,
            {
                "fecha_inicio": START,
                "fecha_fin": END,
                "qbo_emulator_url": self.emulator.base_url,
                "qbo_realm_id": self.emulator.realm_id,
                "tap_window_size": "120d",
                "project_root": str(ROOT),
                **variables,
            },
            project=self.sandbox.project,
            data_dir=self.sandbox.data_dir,
            extra_env=self.env,
        )
        self.outputs.append(result)
        return result


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database: PostgresDatabase,
    meltano_installed: Path,
) -> Iterator[MageStack]:
    """Start an emulator with unique credentials and store them as Mage Secrets."""
    from qbo_emulator.testing import run_emulator

    base = tmp_path_factory.mktemp("mage-e2e")
    token = secrets.token_hex(6)
    client_id, client_secret = f"cid-mage-{token}", f"cs-mage-{token}"
    refresh_token = f"rt-mage-{token}"
    with run_emulator(
        invoices=40,
        customers=12,
        items=6,
        refresh_token=refresh_token,
        client_id=client_id,
        client_secret=client_secret,
    ) as emulator:
        sandbox = make_mage_sandbox(base)
        pg = postgres_database.loader_environment()
        sandbox.create_secrets(
            {
                "qb_client_id": client_id,
                "qb_secret_id": client_secret,
                "qb_refresh_token": refresh_token,
                "pg_host": pg["PGHOST"],
                "pg_port": pg["PGPORT"],
                "pg_user": pg["PGUSER"],
                "pg_password": pg["PGPASSWORD"],
                "pg_db": pg["PGDATABASE"],
            }
        )
        # Meltano's state and rotated tokens stay in this module's folder, so
        # the project's own .meltano and .secrets are left alone.
        env = {
            "MELTANO_SYS_DIR_ROOT": str(_private_meltano_dir(base / "meltano")),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "TAP_QUICKBOOKS_BACKFILL_TOKEN_STORE_PATH": str(base / "qbo-tokens"),
        }
        yield MageStack(
            sandbox=sandbox,
            emulator=emulator,
            database=postgres_database,
            env=env,
            credentials=[client_id, client_secret, refresh_token, pg["PGPASSWORD"]],
            outputs=[],
        )


@pytest.mark.parametrize("entity", list(ENTITIES))
def test_pipeline_loads_and_reruns_once_per_id(
    stack: MageStack, entity: str
) -> None:
    _, table, qbo_entity = ENTITIES[entity]
    stack.database.truncate_raw_tables()
    expected = ids_in_range(stack.emulator.control.records(qbo_entity), START, END)
    assert expected, "the emulated company has no record in the range"

    first = stack.run(entity)
    assert first.returncode == 0, first.output[-6000:]
    assert stack.database.ids(table) == expected
    assert f"{entity} window 1/1" in first.output
    assert "Postgres matches QBO" in first.output
    first_ingested = stack.database.fetch_all(f"select max(ingested_at_utc) from raw.{table}")

    second = stack.run(entity, full_refresh=True)
    assert second.returncode == 0, second.output[-6000:]
    assert stack.database.ids(table) == expected
    assert stack.database.count(table) == len(expected)
    second_ingested = stack.database.fetch_all(f"select min(ingested_at_utc) from raw.{table}")
    assert second_ingested[0][0] > first_ingested[0][0], "the rerun did not rewrite rows"


def test_chain_of_windows_then_rerun_skips_finished_windows(stack: MageStack) -> None:
    stack.database.truncate_raw_tables()
    expected = ids_in_range(stack.emulator.control.records("Item"), START, END)
    first = stack.run("items", chain_window_days=400)
    assert first.returncode == 0, first.output[-6000:]
    assert "items window 2/2" in first.output
    assert stack.database.ids("qb_items_raw") == expected
    count = stack.database.count("qb_items_raw")

    again = stack.run("items", chain_window_days=400)
    assert again.returncode == 0, again.output[-6000:]
    assert again.output.count("already finished in an earlier run, skipped") == 2
    assert "meltano --environment dev run" not in again.output
    assert stack.database.count("qb_items_raw") == count


def test_no_secret_in_mage_output_or_files(stack: MageStack) -> None:
    if not stack.outputs:
        stack.run("customers")
    for result in stack.outputs:
        for value in stack.credentials:
            assert value not in result.output
    assert files_containing(stack.sandbox.data_dir, stack.credentials) == {}
