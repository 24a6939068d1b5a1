"""Local QuickBooks Online Accounting API v3 and Intuit OAuth 2.0 emulator."""

from __future__ import annotations

DEFAULT_CLIENT_ID = "demo-client-id"
DEFAULT_CLIENT_SECRET = "demo-client-secret"
DEFAULT_REFRESH_TOKEN = "demo-refresh-token"
DEFAULT_REALM_ID = "9130357766900011"
DEFAULT_TIMEZONE = "America/Los_Angeles"
TOKEN_PATH = "/oauth2/v1/tokens/bearer"
CONTROL_PREFIX = "/_emulator"

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REALM_ID",
    "DEFAULT_REFRESH_TOKEN",
    "DEFAULT_TIMEZONE",
    "TOKEN_PATH",
]
