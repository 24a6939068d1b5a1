"""Singer tap that backfills QuickBooks Online Invoice, Customer and Item."""

from __future__ import annotations

__version__ = "0.1.0"
