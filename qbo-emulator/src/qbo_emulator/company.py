"""The emulated company: Invoices, Customers and Items held as compact arrays.

Generated rows live as a few numpy columns (Id, times, sync token, flags) and
become JSON-ready dicts only when a page requests them. Captured records and
records that a test created or edited are kept as dicts ("overrides"), which
always win over the generator.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from qbo_emulator.generate import RecordGenerator
from qbo_emulator.timeutil import CompanyClock

ENTITIES = ("Invoice", "Customer", "Item")
NAME_LIST_ENTITIES = frozenset({"Customer", "Item"})

DEFAULT_SIZES = {"Invoice": 2000, "Customer": 300, "Item": 60}

# Generated timestamps stay inside this span of company-local time. It ends at
# 2024-12-31 23:59:59 UTC (15:59:59 Pacific), so a backfill of
# 2017-01-01..2025-01-01 UTC includes every generated record.
SPAN_START = (2023, 1, 1)
SPAN_END = (2024, 12, 31, 15, 59, 59)


class RecordNotFoundError(KeyError):
    """No live record of the entity has the given Id."""


@dataclass
class CompanySpec:
    """Sizes, seed and options of a generated company.

    Attributes:
        invoices: number of generated invoices, or None for the default.
        customers: number of generated customers, or None for the default.
        items: number of generated items, or None for the default.
        seed: seed of the generator; equal seeds give equal companies.
        tie_size: records of each entity sharing one LastUpdatedTime second
            in the largest tie, or None for the default (a tenth of the rows,
            at most 250).
        include_captured: serve the captured sandbox records too. None means
            "only when no size was given".
        timezone: the company's IANA time zone.
    """

    invoices: int | None = None
    customers: int | None = None
    items: int | None = None
    seed: int = 7
    tie_size: int | None = None
    include_captured: bool | None = None
    timezone: str = "America/Los_Angeles"

    def sizes(self) -> dict[str, int]:
        """Return the number of generated rows per entity."""
        return {
            "Invoice": DEFAULT_SIZES["Invoice"] if self.invoices is None else self.invoices,
            "Customer": (
                DEFAULT_SIZES["Customer"] if self.customers is None else self.customers
            ),
            "Item": DEFAULT_SIZES["Item"] if self.items is None else self.items,
        }

    def captured_included(self) -> bool:
        """Return whether the captured records are part of the company."""
        if self.include_captured is not None:
            return self.include_captured
        return self.invoices is None and self.customers is None and self.items is None


def load_captured_records() -> dict[str, list[dict[str, Any]]]:
    """Load the captured sandbox records, keeping key order and values.

    Items of the captured Item query page are added where their Id does not
    clash with a sandbox Item, because the sandbox copy is the newer one.
    """
    folder = importlib.resources.files("qbo_emulator") / "captured"
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in ENTITIES}
    for line in (folder / "sandbox_records.jsonl").read_text("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            records[row["entity"]].append(row["record"])

    sandbox_item_ids = {item["Id"] for item in records["Item"]}
    page = json.loads((folder / "item_query_page.json").read_text("utf-8"))
    for item in page["QueryResponse"]["Item"]:
        if item["Id"] not in sandbox_item_ids:
            records["Item"].append(item)
    return records


@dataclass
class EntityTable:
    """Rows of one entity: numpy columns plus dict overrides."""

    name: str
    ids: np.ndarray
    created: np.ndarray
    updated: np.ndarray
    sync: np.ndarray
    active: np.ndarray
    deleted: np.ndarray
    first_generated_row: int
    first_generated_id: int
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    deleted_at: dict[int, int] = field(default_factory=dict)
    _orders: dict[str, np.ndarray] = field(default_factory=dict)
    _id_order: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def tie_key(self) -> np.ndarray:
        """A stable per-row key that orders ties neither by Id nor by age."""
        mixed = self.ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        return mixed ^ (mixed >> np.uint64(29))

    def invalidate(self) -> None:
        """Forget cached sort orders after rows changed."""
        self._orders.clear()
        self._id_order = None

    def order_by(self, column: str) -> np.ndarray:
        """Return row numbers sorted by a column, ties by the stable tie key."""
        cached = self._orders.get(column)
        if cached is None:
            if column == "storage":
                cached = np.argsort(self.tie_key, kind="stable")
            else:
                values = getattr(self, column)
                cached = np.lexsort((self.tie_key, values))
            self._orders[column] = cached
        return cached

    def row_of(self, record_id: int) -> int | None:
        """Return the row number of an Id, or None when no row has it."""
        if self._id_order is None:
            self._id_order = np.argsort(self.ids, kind="stable")
        order = self._id_order
        position = int(np.searchsorted(self.ids, record_id, sorter=order))
        if position < len(order) and int(self.ids[order[position]]) == record_id:
            return int(order[position])
        return None

    def append(self, record_id: int, created: int, updated: int, sync: int,
               active: bool) -> int:
        """Add one row and return its row number."""
        self.ids = np.append(self.ids, np.int64(record_id))
        self.created = np.append(self.created, np.int64(created))
        self.updated = np.append(self.updated, np.int64(updated))
        self.sync = np.append(self.sync, np.int32(sync))
        self.active = np.append(self.active, bool(active))
        self.deleted = np.append(self.deleted, False)
        self.invalidate()
        return len(self) - 1


class Company:
    """One QBO company (realm) with its three entities."""

    def __init__(self, spec: CompanySpec, clock: CompanyClock) -> None:
        self.spec = spec
        self.clock = clock
        self.tables: dict[str, EntityTable] = {}
        self.generator: RecordGenerator
        # JSON of records already served, most recently used last, up to
        # encoded_cache_limit bytes (0 keeps none). Any change empties it, because an
        # invoice also carries its customer's and items' names.
        self.encoded_cache_limit = 0
        self._encoded: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._encoded_bytes = 0
        self._build()

    # ----------------------------------------------------------------- build
    def _build(self) -> None:
        spec = self.spec
        sizes = spec.sizes()
        captured = load_captured_records() if spec.captured_included() else {
            name: [] for name in ENTITIES
        }
        rng = np.random.default_rng(spec.seed)
        start = self.clock.local_epoch(*SPAN_START)
        end = self.clock.local_epoch(*SPAN_END)

        for name in ENTITIES:
            self.tables[name] = self._build_table(
                name, captured[name], sizes[name], rng, start, end
            )

        self.generator = RecordGenerator(self, rng, spec.seed)

    def _build_table(self, name: str, captured: list[dict[str, Any]], count: int,
                     rng: np.random.Generator, start: int, end: int) -> EntityTable:
        clock = self.clock
        captured_ids = [int(record["Id"]) for record in captured]
        first_id = max(captured_ids, default=0) + 1
        created_gen, updated_gen = self._generate_times(name, count, rng, start, end)

        ids = np.concatenate([
            np.array(captured_ids, dtype=np.int64),
            np.arange(first_id, first_id + count, dtype=np.int64),
        ])
        created = np.concatenate([
            np.array([clock.parse_literal(r["MetaData"]["CreateTime"]) for r in captured],
                     dtype=np.int64),
            created_gen,
        ])
        updated = np.concatenate([
            np.array(
                [clock.parse_literal(r["MetaData"]["LastUpdatedTime"]) for r in captured],
                dtype=np.int64,
            ),
            updated_gen,
        ])
        sync = np.concatenate([
            np.array([int(r.get("SyncToken", "0")) for r in captured], dtype=np.int32),
            np.where(updated_gen > created_gen, 1 + (updated_gen % 3), 0).astype(np.int32),
        ])
        if name in NAME_LIST_ENTITIES:
            inactive_share = 0.08 if name == "Customer" else 0.1
            active_gen = rng.random(count) >= inactive_share
        else:
            active_gen = np.ones(count, dtype=bool)
        active = np.concatenate([
            np.array([bool(r.get("Active", True)) for r in captured], dtype=bool),
            active_gen,
        ])
        table = EntityTable(
            name=name, ids=ids, created=created, updated=updated, sync=sync,
            active=active, deleted=np.zeros(len(ids), dtype=bool),
            first_generated_row=len(captured), first_generated_id=first_id,
        )
        for row, record in enumerate(captured):
            table.overrides[row] = record
        return table

    def _generate_times(self, name: str, count: int, rng: np.random.Generator,
                        start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Generate CreateTime and LastUpdatedTime columns for one entity.

        Ids grow with CreateTime. About a third of the rows were edited later.
        Runs of rows share one second (bulk imports), and one large group
        shares one LastUpdatedTime (a batch edit). Two rows sit in the hour
        repeated at the end of daylight saving time, where equal wall-clock
        times differ only by their offset.
        """
        if count == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty

        clock = self.clock
        created = np.sort(rng.integers(start, end - 86_400 * 30, count, dtype=np.int64))

        # Bulk imports: runs of 2..40 consecutive rows created in one second.
        run_starts = rng.choice(count, size=max(1, count // 50), replace=False)
        for first in np.sort(run_starts):
            length = int(rng.integers(2, 41))
            created[first:first + length] = created[first]

        edited = rng.random(count) < 0.35
        delay = rng.exponential(86_400 * 20, count).astype(np.int64) + 1
        updated = np.where(edited, np.minimum(created + delay, end), created)

        tie_size = self.spec.tie_size
        if tie_size is None:
            tie_size = min(250, count // 10)
        tie_size = min(tie_size, count)
        in_tie = np.zeros(count, dtype=bool)
        if tie_size >= 2:
            batch_second = {
                "Invoice": clock.local_epoch(2024, 6, 28, 16, 45, 12),
                "Customer": clock.local_epoch(2024, 3, 1, 9, 0, 0),
                "Item": clock.local_epoch(2024, 1, 15, 8, 30, 0),
            }[name]
            eligible = np.flatnonzero(created <= batch_second)
            if len(eligible) < tie_size:
                eligible = np.arange(count)
            chosen = rng.choice(eligible, size=tie_size, replace=False)
            created[chosen] = np.minimum(created[chosen], batch_second)
            updated[chosen] = batch_second
            in_tie[chosen] = True

        # The wall-clock time 01:30 of 2023-11-05 happens twice in Los Angeles.
        first_pass = clock.local_epoch(2023, 11, 5, 1, 30, 0, fold=0)
        second_pass = clock.local_epoch(2023, 11, 5, 1, 30, 0, fold=1)
        candidates = np.flatnonzero((created <= first_pass) & ~in_tie)
        if len(candidates) >= 2 and count >= 20:
            picks = rng.choice(candidates, size=2, replace=False)
            updated[picks[0]] = first_pass
            updated[picks[1]] = second_pass

        updated = np.maximum(updated, created)
        return created, updated

    # ----------------------------------------------------------------- reads
    def table(self, entity: str) -> EntityTable:
        """Return the table of an entity given by its exact QBO name."""
        return self.tables[entity]

    def record(self, entity: str, row: int) -> dict[str, Any]:
        """Return the record of a row as a dict (shared, do not mutate)."""
        table = self.tables[entity]
        override = table.overrides.get(row)
        if override is not None:
            return override
        return self.generator.build(entity, row)

    def find_row(self, entity: str, record_id: str | int) -> int:
        """Return the row of a live record.

        Raises:
            RecordNotFoundError: no live record has that Id.
        """
        table = self.tables[entity]
        try:
            numeric_id = int(record_id)
        except (TypeError, ValueError):
            raise RecordNotFoundError(f"{entity} Id {record_id!r} is not numeric") from None
        row = table.row_of(numeric_id)
        if row is None or table.deleted[row]:
            raise RecordNotFoundError(f"{entity} with Id {record_id} not found")
        return row

    def records(self, entity: str, rows: list[int]) -> list[dict[str, Any]]:
        """Return the records of rows in order, building generated ones in bulk."""
        overrides = self.tables[entity].overrides
        generated = [row for row in rows if row not in overrides]
        built = dict(zip(generated, self.generator.build_many(entity, generated), strict=True))
        return [overrides[row] if row in overrides else built[row] for row in rows]

    def encoded_records(self, entity: str, rows: list[int]) -> list[orjson.Fragment]:
        """Return the JSON of rows in order, each as a fragment for ``orjson.dumps``.

        The bytes are what ``orjson.dumps`` gives for :meth:`records`, so a page built
        from them is byte for byte the page built from the records themselves.
        """
        cache = self._encoded
        missing = [row for row in rows if (entity, row) not in cache]
        fresh = {
            row: orjson.dumps(record)
            for row, record in zip(missing, self.records(entity, missing), strict=True)
        }
        fragments = []
        for row in rows:
            encoded = fresh.get(row)
            if encoded is None:
                encoded = cache[(entity, row)]
                cache.move_to_end((entity, row))
            else:
                self._remember(entity, row, encoded)
            fragments.append(orjson.Fragment(encoded))
        return fragments

    def _remember(self, entity: str, row: int, encoded: bytes) -> None:
        if len(encoded) > self.encoded_cache_limit:
            return
        self._encoded[(entity, row)] = encoded
        self._encoded_bytes += len(encoded)
        while self._encoded_bytes > self.encoded_cache_limit:
            _, dropped = self._encoded.popitem(last=False)
            self._encoded_bytes -= len(dropped)

    def forget_encoded(self) -> None:
        """Empty the cache of served JSON after any record changed."""
        self._encoded.clear()
        self._encoded_bytes = 0

    def ref_name(self, entity: str, row: int) -> str:
        """Return the display name a reference to this row carries."""
        table = self.tables[entity]
        override = table.overrides.get(row)
        if override is not None:
            key = "DisplayName" if entity == "Customer" else "Name"
            return str(override.get(key, ""))
        return self.generator.name_of(entity, row)

    # ---------------------------------------------------------------- writes
    def _now_second(self) -> int:
        return int(self.clock.now())

    def _store(self, entity: str, row: int, record: dict[str, Any]) -> None:
        table = self.tables[entity]
        metadata = record["MetaData"]
        table.overrides[row] = record
        table.created[row] = int(self.clock.parse_literal(metadata["CreateTime"]))
        table.updated[row] = int(self.clock.parse_literal(metadata["LastUpdatedTime"]))
        table.sync[row] = int(record["SyncToken"])
        if entity in NAME_LIST_ENTITIES:
            table.active[row] = bool(record.get("Active", True))
        table.invalidate()
        self.generator.clear_cache()
        self.forget_encoded()

    def create(self, entity: str, fields: dict[str, Any],
               created_at: float | None = None) -> dict[str, Any]:
        """Create a record with the next free Id and return it."""
        table = self.tables[entity]
        moment = self._now_second() if created_at is None else int(created_at)
        record_id = int(table.ids.max(initial=0)) + 1
        record = copy.deepcopy(fields)
        record.pop("Id", None)
        record.update({
            "domain": "QBO",
            "sparse": False,
            "Id": str(record_id),
            "SyncToken": "0",
            "MetaData": {
                "CreateTime": self.clock.format_seconds(moment),
                "LastUpdatedTime": self.clock.format_seconds(moment),
            },
        })
        if entity in NAME_LIST_ENTITIES:
            record.setdefault("Active", True)
        row = table.append(record_id, moment, moment, 0, bool(record.get("Active", True)))
        self._store(entity, row, record)
        return record

    def update(self, entity: str, record_id: str | int, changes: dict[str, Any],
               last_updated: float | None = None) -> dict[str, Any]:
        """Apply changes to a record, bump SyncToken and LastUpdatedTime.

        Nested objects are merged key by key; lists and scalars are replaced.
        """
        row = self.find_row(entity, record_id)
        record = copy.deepcopy(self.record(entity, row))
        _merge(record, {k: v for k, v in changes.items()
                        if k not in {"Id", "SyncToken", "MetaData", "domain"}})
        moment = self._now_second() if last_updated is None else int(last_updated)
        record["SyncToken"] = str(int(record.get("SyncToken", "0")) + 1)
        record["MetaData"] = dict(record["MetaData"])
        record["MetaData"]["LastUpdatedTime"] = self.clock.format_seconds(moment)
        self._store(entity, row, record)
        return record

    def deactivate(self, entity: str, record_id: str | int,
                   last_updated: float | None = None) -> dict[str, Any]:
        """Make a Customer or Item inactive, as QBO's delete of a name does.

        QBO may append " (deleted)" to the name of an inactive record; the
        emulator always does, so clients cannot rely on names staying stable.
        """
        if entity not in NAME_LIST_ENTITIES:
            raise ValueError(f"{entity} has no Active flag; use delete or void")
        row = self.find_row(entity, record_id)
        record = self.record(entity, row)
        changes: dict[str, Any] = {"Active": False}
        name_key = "DisplayName" if entity == "Customer" else "Name"
        for key in (name_key, "FullyQualifiedName"):
            value = record.get(key)
            if isinstance(value, str) and not value.endswith(" (deleted)"):
                changes[key] = value + " (deleted)"
        return self.update(entity, record_id, changes, last_updated)

    def delete(self, entity: str, record_id: str | int,
               deleted_at: float | None = None) -> dict[str, Any]:
        """Delete a record: Invoices vanish, names become inactive.

        Returns:
            For an Invoice, the CDC shape of the deleted object; for a name,
            the deactivated record.
        """
        if entity in NAME_LIST_ENTITIES:
            return self.deactivate(entity, record_id, deleted_at)
        row = self.find_row(entity, record_id)
        table = self.tables[entity]
        moment = self._now_second() if deleted_at is None else int(deleted_at)
        table.deleted[row] = True
        table.deleted_at[row] = moment
        table.updated[row] = moment
        table.overrides.pop(row, None)
        table.invalidate()
        self.forget_encoded()
        return self.deleted_shape(entity, row)

    def deleted_shape(self, entity: str, row: int) -> dict[str, Any]:
        """Return the CDC representation of a deleted row."""
        table = self.tables[entity]
        return {
            "status": "Deleted",
            "domain": "QBO",
            "Id": str(int(table.ids[row])),
            "MetaData": {"LastUpdatedTime": self.clock.format_seconds(
                table.deleted_at.get(row, int(table.updated[row])))},
        }

    def void(self, entity: str, record_id: str | int,
             last_updated: float | None = None) -> dict[str, Any]:
        """Void an Invoice: amounts become zero and PrivateNote starts with Voided."""
        if entity != "Invoice":
            raise ValueError(f"only an Invoice can be voided, not a {entity}")
        row = self.find_row(entity, record_id)
        record = copy.deepcopy(self.record(entity, row))
        lines = record.get("Line", [])
        for line in lines:
            line["Amount"] = 0
            detail = line.get("SalesItemLineDetail")
            if isinstance(detail, dict) and "Qty" in detail:
                detail["Qty"] = 0
        tax = record.get("TxnTaxDetail")
        changes: dict[str, Any] = {"Line": lines, "TotalAmt": 0, "Balance": 0}
        if isinstance(tax, dict):
            changes["TxnTaxDetail"] = {"TotalTax": 0}
        note = record.get("PrivateNote")
        changes["PrivateNote"] = "Voided" if not note else f"Voided - {note}"
        return self.update(entity, record_id, changes, last_updated)

    def counts(self, entity: str) -> dict[str, int]:
        """Return counts of live, active, inactive and deleted rows."""
        table = self.tables[entity]
        live = ~table.deleted
        return {
            "total": int(live.sum()),
            "active": int((live & table.active).sum()),
            "inactive": int((live & ~table.active).sum()),
            "deleted": int(table.deleted.sum()),
        }


def _merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif value is None:
            # QBO leaves properties with no value out of the JSON entirely.
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)
