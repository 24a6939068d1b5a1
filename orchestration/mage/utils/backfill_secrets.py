"""Credentials of a backfill, read from Mage Secrets.

Values stay in memory: they go to the Meltano subprocess as environment
variables and never into a block's output, a log line or an error message.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

SECRET_NAMES = (
    "qb_client_id",
    "qb_secret_id",
    "qb_refresh_token",
    "pg_host",
    "pg_port",
    "pg_user",
    "pg_password",
    "pg_db",
)

SecretReader = Callable[[str], "str | None"]


class MissingSecretError(RuntimeError):
    """Raised when a Mage Secret the backfill needs is missing, empty or invalid."""


@dataclass(frozen=True)
class BackfillSecrets:
    """Mage Secrets of one backfill. `repr` shows no value."""

    qb_client_id: str = field(repr=False)
    qb_secret_id: str = field(repr=False)
    qb_refresh_token: str = field(repr=False)
    pg_host: str = field(repr=False)
    pg_port: str = field(repr=False)
    pg_user: str = field(repr=False)
    pg_password: str = field(repr=False)
    pg_db: str = field(repr=False)

    def credential_values(self) -> list[str]:
        """Return the values a log line must never show.

        These are the QBO client id, client secret and refresh token, the
        Postgres password, and the HTTP Basic form of the client id and secret
        that the OAuth token request carries. Host, port, user and database
        name locate the server and are often ordinary words (`postgres`), so
        redacting them would garble log lines: they are not printed by this
        project's code, but Meltano or its plugins may show them.
        """
        basic = base64.b64encode(
            f"{self.qb_client_id}:{self.qb_secret_id}".encode()
        ).decode()
        values = [
            self.qb_client_id,
            self.qb_secret_id,
            self.qb_refresh_token,
            self.pg_password,
            basic,
        ]
        return [value for value in values if value]


def read_mage_secret(name: str) -> str | None:
    """Return a Mage Secret's value, or None when it does not exist."""
    from mage_ai.data_preparation.shared.secrets import get_secret_value

    return get_secret_value(name, suppress_warning=True)


def read_backfill_secrets(read_secret: SecretReader = read_mage_secret) -> BackfillSecrets:
    """Read every secret in `SECRET_NAMES`.

    Args:
        read_secret: Function from a secret's name to its value or None.

    Returns:
        The secrets, with `pg_port` checked to be a TCP port.

    Raises:
        MissingSecretError: Naming each missing or empty secret (never a value).
    """
    values = {name: read_secret(name) for name in SECRET_NAMES}
    missing = [name for name, value in values.items() if value is None or not value.strip()]
    if missing:
        raise MissingSecretError(
            f"Mage secret{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} missing or empty: create "
            f"{'them' if len(missing) > 1 else 'it'} in Mage under Settings > Secrets "
            "(names are case-sensitive) and run the pipeline again"
        )

    port = values["pg_port"].strip()
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise MissingSecretError(
            "Mage secret pg_port is not a TCP port number (1-65535): correct it under "
            "Settings > Secrets"
        )

    # QBO credentials, host, port, user and database never contain blanks, so
    # blanks around them are paste accidents. A password may, so it stays as is.
    cleaned = {
        name: value if name == "pg_password" else value.strip()
        for name, value in values.items()
    }
    return BackfillSecrets(**cleaned)
