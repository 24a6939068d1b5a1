-- Rights of the loader role, the role target-postgres connects as.
--
-- MeltanoLabs target-postgres 0.8.1 with load_method upsert does, per batch:
--   * read the catalog to check that schema raw and the table exist and to
--     compare column types (needs USAGE on the schema);
--   * CREATE TEMPORARY TABLE with the target table's columns, INSERT the batch
--     into it, then INSERT ... SELECT the new ids and UPDATE the existing ones
--     in the target table, then DROP the temporary table (needs TEMPORARY on
--     the database and SELECT, INSERT, UPDATE on the table).
-- It never deletes while activate_version and hard_delete are off, so the
-- role gets no DELETE. It owns nothing: should a tap schema ever ask the loader
-- to add or widen a column, the ALTER TABLE fails with "must be owner" instead
-- of silently changing the contract's types.
--
-- `qbo-backfill db init` runs these statements as the administrator and fills
-- in {loader_role} and {database} as quoted identifiers.

grant connect, temporary on database {database} to {loader_role};
grant usage on schema raw to {loader_role};
grant select, insert, update on
    raw.qb_invoices_raw,
    raw.qb_customers_raw,
    raw.qb_items_raw,
    raw.qb_extract_windows
    to {loader_role};
