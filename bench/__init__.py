"""End-to-end benchmark of the backfill: ``python -m bench`` or ``make bench``."""
