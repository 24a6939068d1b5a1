"""Tooling of the qbo-backfill Meltano project: embedded Postgres and raw schema."""
