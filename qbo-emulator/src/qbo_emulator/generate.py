"""Builds generated records on demand, shaped like captured sandbox records.

A generated row is fully determined by the seed, its row number and the
numpy columns of its table (Id, times, sync token, Active), so a page of a
million-row company costs only the rows it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from qbo_emulator import names

if TYPE_CHECKING:
    from qbo_emulator.company import Company

T = TypeVar("T")
CURRENCY_REF = {"value": "USD", "name": "United States Dollar"}
QUANTITIES = (1, 1, 1, 2, 2, 3, 3.5, 4, 0.25, 10, 12, 1.5)
DRAWS_PER_ROW = 48
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def row_draws(seed: int, salt: int, indexes: list[int]) -> np.ndarray:
    """Return DRAWS_PER_ROW uniform numbers in [0, 1) per row index.

    The numbers come from SplitMix64 over (seed, salt, index, draw), so a row
    gets the same numbers whichever page it is built for, and a whole page is
    drawn in one vectorised step.
    """
    base = np.asarray(indexes, dtype=np.uint64) * np.uint64(DRAWS_PER_ROW)
    counters = base[:, None] + np.arange(DRAWS_PER_ROW, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        z = counters + np.uint64((seed * 8 + salt) & 0xFFFFFFFF) * _GOLDEN + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class Draws:
    """Reads a row's pre-drawn numbers like a small ``random.Random``."""

    __slots__ = ("values", "position")

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.position = 0

    def random(self) -> float:
        """Return the next number in [0, 1)."""
        value = self.values[self.position % DRAWS_PER_ROW]
        self.position += 1
        return value

    def randrange(self, stop: int) -> int:
        """Return an integer in [0, stop)."""
        return int(self.random() * stop)

    def randint(self, low: int, high: int) -> int:
        """Return an integer in [low, high]."""
        return low + int(self.random() * (high - low + 1))

    def choice(self, options: Sequence[T]) -> T:
        """Return one of the options."""
        return options[int(self.random() * len(options))]

    def uniform(self, low: float, high: float) -> float:
        """Return a float in [low, high)."""
        return low + (high - low) * self.random()


class RecordGenerator:
    """Creates the dict of a generated row of any entity."""

    def __init__(self, company: Company, rng: np.random.Generator, seed: int) -> None:
        self.company = company
        self.seed = seed
        customers = company.tables["Customer"]
        invoices = company.tables["Invoice"]
        n_invoices = len(invoices) - invoices.first_generated_row
        if n_invoices and len(customers) == 0:
            raise ValueError("a company with invoices needs at least one customer")
        if n_invoices and len(company.tables["Item"]) == 0:
            raise ValueError("a company with invoices needs at least one item")
        # Row numbers in the Customer table, one per generated invoice.
        self.invoice_customer = rng.integers(
            0, max(1, len(customers)), n_invoices, dtype=np.int32
        )
        # (Id, name, unit price) of referenced customers and items, dropped on
        # every write because an edit may rename a record.
        self._refs: dict[tuple[str, int], tuple[str, str, float | int]] = {}
        self._addresses: dict[tuple[str, int], dict[str, Any] | None] = {}

    def clear_cache(self) -> None:
        """Forget cached reference names after a record changed."""
        self._refs.clear()
        self._addresses.clear()

    def ref(self, entity: str, row: int) -> tuple[str, str, float | int]:
        """Return (Id, name, unit price) of a Customer or Item row."""
        key = (entity, row)
        cached = self._refs.get(key)
        if cached is None:
            table = self.company.tables[entity]
            price = self._item_price(row) if entity == "Item" else 0
            cached = (str(int(table.ids[row])), self.company.ref_name(entity, row), price)
            self._refs[key] = cached
        return cached

    # -------------------------------------------------------------- helpers
    def _customer_addresses(self, row: int) -> dict[str, Any] | None:
        """Return the customer's ShipAddr (or BillAddr), cached per customer."""
        key = ("ShipAddr", row)
        if key not in self._addresses:
            customer = self.company.record("Customer", row)
            self._addresses[key] = customer.get("ShipAddr") or customer.get("BillAddr")
        return self._addresses[key]

    def _rand(self, entity: str, generated_index: int) -> Draws:
        salt = {"Invoice": 1, "Customer": 2, "Item": 3}[entity]
        return Draws(row_draws(self.seed, salt, [generated_index])[0].tolist())

    def build_many(self, entity: str, rows: list[int]) -> list[dict[str, Any]]:
        """Build generated rows of one entity, drawing their numbers at once."""
        if not rows:
            return []
        salt = {"Invoice": 1, "Customer": 2, "Item": 3}[entity]
        first = self.company.tables[entity].first_generated_row
        draws = row_draws(self.seed, salt, [row - first for row in rows]).tolist()
        builder = {"Invoice": self._invoice, "Customer": self._customer,
                   "Item": self._item}[entity]
        return [builder(row, Draws(values)) for row, values in zip(rows, draws, strict=True)]

    def _meta(self, entity: str, row: int) -> tuple[str, str, dict[str, str]]:
        table = self.company.tables[entity]
        clock = self.company.clock
        metadata = {
            "CreateTime": clock.format_seconds(int(table.created[row])),
            "LastUpdatedTime": clock.format_seconds(int(table.updated[row])),
        }
        return str(int(table.ids[row])), str(int(table.sync[row])), metadata

    def name_of(self, entity: str, row: int) -> str:
        """Return DisplayName (Customer) or Name (Item) of a generated row."""
        table = self.company.tables[entity]
        index = row - table.first_generated_row
        if entity == "Customer":
            base = self._customer_person(index)[2]
        else:
            base = self._item_name(index)
        if not table.active[row]:
            return base + " (deleted)"
        return base

    @staticmethod
    def _customer_person(index: int) -> tuple[str, str, str]:
        given = names.GIVEN_NAMES[index % len(names.GIVEN_NAMES)]
        family = names.FAMILY_NAMES[(index // len(names.GIVEN_NAMES))
                                    % len(names.FAMILY_NAMES)]
        pairs = len(names.GIVEN_NAMES) * len(names.FAMILY_NAMES)
        display = f"{given} {family}"
        if index >= pairs:
            display = f"{display} {index // pairs + 1}"
        return given, family, display

    @staticmethod
    def _item_name(index: int) -> str:
        adjective = names.ITEM_ADJECTIVES[index % len(names.ITEM_ADJECTIVES)]
        noun = names.ITEM_NOUNS[(index // len(names.ITEM_ADJECTIVES))
                                % len(names.ITEM_NOUNS)]
        pairs = len(names.ITEM_ADJECTIVES) * len(names.ITEM_NOUNS)
        name = f"{adjective} {noun}"
        if index >= pairs:
            name = f"{name} {index // pairs + 1}"
        return name

    def _item_price(self, row: int) -> float | int:
        table = self.company.tables["Item"]
        override = table.overrides.get(row)
        if override is not None:
            return override.get("UnitPrice", 0) or 25
        index = row - table.first_generated_row
        return ((index * 7919 + self.seed * 31) % 49_900 + 100) / 100

    def _customer_parent(self, index: int) -> int | None:
        # Every seventh customer (from the fourth on) is a sub-customer (job).
        if index % 7 != 3:
            return None
        parent = (index * 31) % index
        if parent % 7 == 3:
            parent -= 1
        return parent

    @staticmethod
    def _address(rand: Draws, address_id: int) -> dict[str, str]:
        city, state, postal = rand.choice(names.CITIES)
        return {
            "Id": str(address_id),
            "Line1": f"{rand.randint(1, 9999)} {rand.choice(names.STREETS)}",
            "City": city,
            "CountrySubDivisionCode": state,
            "PostalCode": postal,
            "Lat": f"{37 + rand.random():.7f}",
            "Long": f"{-122 - rand.random():.7f}",
        }

    # ------------------------------------------------------------- builders
    def build(self, entity: str, row: int) -> dict[str, Any]:
        """Return a fresh dict for a generated row."""
        if entity == "Invoice":
            return self._invoice(row)
        if entity == "Customer":
            return self._customer(row)
        return self._item(row)

    def _customer(self, row: int, rand: Draws | None = None) -> dict[str, Any]:
        table = self.company.tables["Customer"]
        index = row - table.first_generated_row
        rand = rand or self._rand("Customer", index)
        record_id, sync, metadata = self._meta("Customer", row)
        given, family, display = self._customer_person(index)
        active = bool(table.active[row])
        company_name = f"{family} {names.COMPANY_KINDS[index % len(names.COMPANY_KINDS)]}"
        address = self._address(rand, 1000 + index)
        balance = round(rand.choice((0, 0, 0, rand.uniform(10, 5000))), 2)

        record: dict[str, Any] = {
            "Taxable": rand.random() < 0.6,
            "BillAddr": address,
        }
        if rand.random() < 0.7:
            record["ShipAddr"] = dict(address)
        parent_index = self._customer_parent(index)
        fully_qualified = display
        if parent_index is not None:
            parent_row = table.first_generated_row + parent_index
            parent_name = self.company.ref_name("Customer", parent_row)
            fully_qualified = f"{parent_name}:{display}"
            record.update({
                "Job": True,
                "BillWithParent": rand.random() < 0.5,
                "ParentRef": {"value": str(int(table.ids[parent_row]))},
                "Level": 1,
            })
        else:
            record.update({"Job": False, "BillWithParent": False})
        if not active:
            display += " (deleted)"
            fully_qualified += " (deleted)"
        record.update({
            "Balance": balance,
            "BalanceWithJobs": balance,
            "CurrencyRef": dict(CURRENCY_REF),
            "PreferredDeliveryMethod": rand.choice(("Print", "Email", "None")),
            "domain": "QBO",
            "sparse": False,
            "Id": record_id,
            "SyncToken": sync,
            "MetaData": metadata,
            "GivenName": given,
            "FamilyName": family,
            "FullyQualifiedName": fully_qualified,
        })
        if index % 3 == 0:
            record["CompanyName"] = company_name
        record.update({
            "DisplayName": display,
            "PrintOnCheckName": company_name if index % 3 == 0 else f"{given} {family}",
            "Active": active,
            "PrimaryPhone": {"FreeFormNumber": f"(650) 555-{rand.randint(0, 9999):04d}"},
            "PrimaryEmailAddr": {"Address": f"{given.lower()}.{family.lower()}"
                                            f"{index}@example.com"},
        })
        if rand.random() < 0.2:
            record["Notes"] = "Prefers e-mail on Fridays"
        return record

    def _item(self, row: int, rand: Draws | None = None) -> dict[str, Any]:
        table = self.company.tables["Item"]
        index = row - table.first_generated_row
        rand = rand or self._rand("Item", index)
        record_id, sync, metadata = self._meta("Item", row)
        name = self._item_name(index)
        if not table.active[row]:
            name += " (deleted)"
        item_type = names.ITEM_TYPES[index % len(names.ITEM_TYPES)]
        record: dict[str, Any] = {
            "Name": name,
            "Description": f"{name} for garden projects",
            "Active": bool(table.active[row]),
            "FullyQualifiedName": name,
            "Taxable": rand.random() < 0.5,
            "UnitPrice": self._item_price(row),
            "Type": item_type,
            "IncomeAccountRef": {"value": "79", "name": "Sales of Product Income"},
        }
        if item_type == "Inventory":
            record.update({
                "PurchaseDesc": f"{name} from supplier",
                "PurchaseCost": round(rand.uniform(1, 200), 2),
                "ExpenseAccountRef": {"value": "80", "name": "Cost of Goods Sold"},
                "AssetAccountRef": {"value": "81", "name": "Inventory Asset"},
                "TrackQtyOnHand": True,
                "QtyOnHand": rand.choice((0, 5, 12.5, 31, 100)),
                "InvStartDate": "2023-01-01",
            })
        else:
            record.update({"PurchaseCost": 0, "TrackQtyOnHand": False})
        record.update({
            "domain": "QBO",
            "sparse": False,
            "Id": record_id,
            "SyncToken": sync,
            "MetaData": metadata,
        })
        return record

    def is_voided(self, index: int) -> bool:
        """Return whether a generated invoice is voided (about one in 40)."""
        return (index * 2_654_435_761 + self.seed) % 40 == 17

    def _invoice(self, row: int, rand: Draws | None = None) -> dict[str, Any]:
        company = self.company
        table = company.tables["Invoice"]
        index = row - table.first_generated_row
        rand = rand or self._rand("Invoice", index)
        record_id, sync, metadata = self._meta("Invoice", row)
        customer_row = int(self.invoice_customer[index])
        n_items = len(company.tables["Item"])
        voided = self.is_voided(index)

        txn_day = datetime.fromtimestamp(int(table.created[row]), company.clock.tz).date()
        lines: list[dict[str, Any]] = []
        subtotal = 0.0
        for number in range(1, rand.randint(1, 4) + 1):
            item_id, item_name, price = self.ref("Item", rand.randrange(n_items))
            quantity = rand.choice(QUANTITIES)
            amount = round(quantity * price, 2)
            subtotal += amount
            lines.append({
                "Id": str(number),
                "LineNum": number,
                "Description": item_name,
                "Amount": 0.0 if voided else amount,
                "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {
                    "ItemRef": {"value": item_id, "name": item_name},
                    "UnitPrice": price,
                    "Qty": 0 if voided else quantity,
                    "TaxCodeRef": {"value": "TAX" if number % 2 else "NON"},
                },
            })
        subtotal = 0.0 if voided else round(subtotal, 2)
        lines.append({"Amount": subtotal, "DetailType": "SubTotalLineDetail",
                      "SubTotalLineDetail": {}})
        tax = round(subtotal * 0.08, 2)
        total = round(subtotal + tax, 2)
        paid_share = rand.choice((0.0, 0.0, 0.5, 1.0, 1.0))
        balance = round(total * (1 - paid_share), 2)

        crew: dict[str, Any] = {"DefinitionId": "1", "Name": "Crew #", "Type": "StringType"}
        if rand.random() < 0.8:
            crew["StringValue"] = str(rand.randint(100, 130))
        customer_id, customer_name, _ = self.ref("Customer", customer_row)
        record: dict[str, Any] = {
            "AllowIPNPayment": False,
            "AllowOnlinePayment": False,
            "AllowOnlineCreditCardPayment": rand.random() < 0.3,
            "AllowOnlineACHPayment": rand.random() < 0.3,
            "domain": "QBO",
            "sparse": False,
            "Id": record_id,
            "SyncToken": sync,
            "MetaData": metadata,
            "CustomField": [crew],
            "DocNumber": str(5000 + index),
            "TxnDate": txn_day.isoformat(),
            "CurrencyRef": dict(CURRENCY_REF),
        }
        if voided:
            record["PrivateNote"] = "Voided"
        record.update({
            "LinkedTxn": (
                [{"TxnId": str(90_000 + index), "TxnType": "Payment"}]
                if paid_share and not voided else []
            ),
            "Line": lines,
            "TxnTaxDetail": {
                "TxnTaxCodeRef": {"value": "2"},
                "TotalTax": 0 if voided else tax,
                "TaxLine": [{
                    "Amount": 0 if voided else tax,
                    "DetailType": "TaxLineDetail",
                    "TaxLineDetail": {
                        "TaxRateRef": {"value": "3"},
                        "PercentBased": True,
                        "TaxPercent": 8,
                        "NetAmountTaxable": subtotal,
                    },
                }],
            },
            "CustomerRef": {"value": customer_id, "name": customer_name},
            "CustomerMemo": {"value": "Thank you for your business and have a great day!"},
            "BillAddr": self._address(rand, 2000 + index),
        })
        if rand.random() < 0.6:
            ship_address = self._customer_addresses(customer_row)
            if ship_address is not None:
                record["ShipAddr"] = ship_address
        record.update({
            "SalesTermRef": {"value": "3", "name": "Net 30"},
            "DueDate": (txn_day + timedelta(days=30)).isoformat(),
            "TotalAmt": 0 if voided else total,
            "ApplyTaxAfterDiscount": False,
            "PrintStatus": rand.choice(("NeedToPrint", "NotSet")),
            "EmailStatus": rand.choice(("NotSet", "EmailSent")),
            "BillEmail": {"Address": f"billing{customer_id}@example.com"},
            "Balance": 0 if voided else balance,
        })
        return record

