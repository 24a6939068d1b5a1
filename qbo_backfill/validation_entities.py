"""Names that tie each backfilled QBO entity to its raw table, extractor and job."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EntitySpec:
    """One backfilled QBO entity and every name the project gives it.

    Attributes:
        name: Entity name on the command line (``invoices``).
        qbo_entity: Entity name in QBO queries (``Invoice``).
        table: Raw table, schema-qualified.
        extractor: Inheriting Meltano extractor that loads the entity.
        job: Meltano job that backfills the entity.
        env_prefix: Prefix of the extractor's Meltano environment variables.
        name_list: Whether QBO hides inactive rows unless the query requests them.
        window_entity_values: Values of ``raw.qb_extract_windows.entity`` that mean
            this entity, lower case.
    """

    name: str
    qbo_entity: str
    table: str
    extractor: str
    job: str
    env_prefix: str
    name_list: bool
    window_entity_values: tuple[str, ...]


ENTITIES: dict[str, EntitySpec] = {
    spec.name: spec
    for spec in (
        EntitySpec(
            name="invoices",
            qbo_entity="Invoice",
            table="raw.qb_invoices_raw",
            extractor="tap-qb-invoices",
            job="qb_invoices_backfill",
            env_prefix="TAP_QB_INVOICES",
            name_list=False,
            window_entity_values=("invoice", "invoices", "qb_invoices_raw"),
        ),
        EntitySpec(
            name="customers",
            qbo_entity="Customer",
            table="raw.qb_customers_raw",
            extractor="tap-qb-customers",
            job="qb_customers_backfill",
            env_prefix="TAP_QB_CUSTOMERS",
            name_list=True,
            window_entity_values=("customer", "customers", "qb_customers_raw"),
        ),
        EntitySpec(
            name="items",
            qbo_entity="Item",
            table="raw.qb_items_raw",
            extractor="tap-qb-items",
            job="qb_items_backfill",
            env_prefix="TAP_QB_ITEMS",
            name_list=True,
            window_entity_values=("item", "items", "qb_items_raw"),
        ),
    )
}


@dataclass(frozen=True)
class WindowField:
    """A QBO timestamp that windows are cut on, and the raw column that holds it.

    Attributes:
        name: Value of the tap's ``window_field`` setting.
        qbo_property: Property in QBO queries.
        column: Column of the raw entity tables holding the value in UTC.
    """

    name: str
    qbo_property: str
    column: str


WINDOW_FIELDS: dict[str, WindowField] = {
    field.name: field
    for field in (
        WindowField("LastUpdatedTime", "MetaData.LastUpdatedTime", "last_updated_utc"),
        WindowField("CreateTime", "MetaData.CreateTime", "created_utc"),
    )
}


def entities_for(selection: str) -> list[EntitySpec]:
    """Return the entities that a ``--entity`` value selects, in a fixed order.

    Args:
        selection: ``invoices``, ``customers``, ``items`` or ``all``.

    Raises:
        ValueError: If the selection names no known entity.
    """
    if selection == "all":
        return list(ENTITIES.values())
    if selection not in ENTITIES:
        known = ", ".join([*ENTITIES, "all"])
        msg = f"unknown entity {selection!r}: use one of {known}"
        raise ValueError(msg)
    return [ENTITIES[selection]]


def window_field_for(value: str) -> WindowField:
    """Return the window field that a recorded ``window_field`` value names.

    Accepts the setting value (``LastUpdatedTime``) and the QBO property
    (``MetaData.LastUpdatedTime``), in any letter case.

    Raises:
        ValueError: If the value names neither window field.
    """
    wanted = value.strip().lower().removeprefix("metadata.")
    for field in WINDOW_FIELDS.values():
        if field.name.lower() == wanted:
            return field
    known = ", ".join(WINDOW_FIELDS)
    msg = f"unknown window field {value!r}: expected one of {known}"
    raise ValueError(msg)
