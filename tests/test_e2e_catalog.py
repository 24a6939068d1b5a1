"""The committed catalog: equal to the tap's discovery, and filtered per extractor.

``meltano.yml`` gives the tap a custom catalog, so ``meltano run`` does not start
the tap a second time for discovery. Meltano applies no ``select`` rules to a custom
catalog, only ``select_filter``: these tests keep the file current and check that
each entity's extractor still selects its own stream and the audit stream only.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import PROJECT_ROOT, MeltanoProject

CATALOG = PROJECT_ROOT / "extract" / "tap-quickbooks-backfill.catalog.json"
TAP = PROJECT_ROOT / ".venv" / "bin" / "tap-quickbooks-backfill"
ALL_STREAMS = {"qb_invoices_raw", "qb_customers_raw", "qb_items_raw", "qb_extract_windows"}


def _selected_streams(catalog: dict) -> set[str]:
    selected = set()
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == [] and entry["metadata"].get("selected"):
                selected.add(stream["tap_stream_id"])
    return selected


def test_committed_catalog_matches_discovery():
    completed = subprocess.run(  # noqa: S603 - the project's tap, fixed arguments
        [str(TAP), "--discover"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    discovered = json.loads(completed.stdout)
    committed = json.loads(CATALOG.read_text(encoding="utf-8"))

    assert committed == discovered, (
        f"{CATALOG.name} differs from the tap's discovery; run `make catalog` and commit it"
    )


def test_committed_catalog_selects_every_stream():
    committed = json.loads(CATALOG.read_text(encoding="utf-8"))

    assert _selected_streams(committed) == ALL_STREAMS


@pytest.mark.parametrize(
    ("entity", "stream"),
    [("invoices", "qb_invoices_raw"), ("customers", "qb_customers_raw"),
     ("items", "qb_items_raw")],
)
def test_extractor_selects_its_entity_only(
    meltano_project: MeltanoProject, entity: str, stream: str
):
    completed = subprocess.run(  # noqa: S603 - the project's meltano, fixed arguments
        [str(meltano_project.executable), "invoke", "--dump=catalog", f"tap-qb-{entity}"],
        cwd=PROJECT_ROOT,
        env=meltano_project.command_environment(None),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]

    catalog = json.loads(completed.stdout)

    assert _selected_streams(catalog) == {stream, "qb_extract_windows"}
