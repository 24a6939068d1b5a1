-- Raw landing tables of the QBO backfill, in schema raw.
--
-- The project creates these tables before the first load so that their types
-- and constraints are the ones an analyst expects. MeltanoLabs target-postgres
-- 0.8.1 keeps pre-created columns whose type it considers compatible
-- (timestamptz, jsonb, bigint, text, not null), while on its own it would
-- create "timestamp without time zone" columns and drop the UTC offset.
-- Integer columns are bigint because the loader maps JSON integers to bigint
-- and would otherwise try to widen an integer column.
--
-- Every statement is idempotent: `qbo-backfill db init` runs this file on each
-- call. Changing a column of an existing table needs a migration of its own.

create schema if not exists raw;

create table if not exists raw.qb_invoices_raw (
    id text primary key,
    payload jsonb not null,
    ingested_at_utc timestamptz not null,
    extract_window_start_utc timestamptz not null,
    extract_window_end_utc timestamptz not null,
    page_number integer not null,
    page_size integer not null,
    request_payload jsonb not null,
    last_updated_utc timestamptz not null,
    created_utc timestamptz not null,
    sync_token text,
    -- Invoices have no Active flag in QBO: always null here.
    active boolean,
    constraint qb_invoices_raw_window_is_ordered
        check (extract_window_end_utc > extract_window_start_utc)
);

create table if not exists raw.qb_customers_raw (
    id text primary key,
    payload jsonb not null,
    ingested_at_utc timestamptz not null,
    extract_window_start_utc timestamptz not null,
    extract_window_end_utc timestamptz not null,
    page_number integer not null,
    page_size integer not null,
    request_payload jsonb not null,
    last_updated_utc timestamptz not null,
    created_utc timestamptz not null,
    sync_token text,
    active boolean,
    constraint qb_customers_raw_window_is_ordered
        check (extract_window_end_utc > extract_window_start_utc)
);

create table if not exists raw.qb_items_raw (
    id text primary key,
    payload jsonb not null,
    ingested_at_utc timestamptz not null,
    extract_window_start_utc timestamptz not null,
    extract_window_end_utc timestamptz not null,
    page_number integer not null,
    page_size integer not null,
    request_payload jsonb not null,
    last_updated_utc timestamptz not null,
    created_utc timestamptz not null,
    sync_token text,
    active boolean,
    constraint qb_items_raw_window_is_ordered
        check (extract_window_end_utc > extract_window_start_utc)
);

-- One audit row per entity and window: the latest extraction of that window.
create table if not exists raw.qb_extract_windows (
    entity text not null,
    window_start_utc timestamptz not null,
    window_end_utc timestamptz not null,
    window_field text not null,
    -- QBO's COUNT(*) for the window when its extraction started.
    qbo_count bigint,
    records_emitted bigint not null,
    pages bigint not null,
    requests bigint not null,
    retries bigint not null,
    throttles bigint not null,
    started_at_utc timestamptz not null,
    finished_at_utc timestamptz,
    run_id text not null,
    outcome text not null,
    primary key (entity, window_start_utc, window_end_utc),
    constraint qb_extract_windows_window_is_ordered
        check (window_end_utc > window_start_utc)
);

-- Incremental reads and validation select by the window field and by the window
-- that last wrote a row.
create index if not exists qb_invoices_raw_last_updated_utc_idx
    on raw.qb_invoices_raw (last_updated_utc);
create index if not exists qb_invoices_raw_extract_window_idx
    on raw.qb_invoices_raw (extract_window_start_utc, extract_window_end_utc);
create index if not exists qb_customers_raw_last_updated_utc_idx
    on raw.qb_customers_raw (last_updated_utc);
create index if not exists qb_customers_raw_extract_window_idx
    on raw.qb_customers_raw (extract_window_start_utc, extract_window_end_utc);
create index if not exists qb_items_raw_last_updated_utc_idx
    on raw.qb_items_raw (last_updated_utc);
create index if not exists qb_items_raw_extract_window_idx
    on raw.qb_items_raw (extract_window_start_utc, extract_window_end_utc);
create index if not exists qb_extract_windows_run_id_idx
    on raw.qb_extract_windows (run_id);
