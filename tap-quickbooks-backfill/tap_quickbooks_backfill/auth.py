"""OAuth 2.0 refresh against Intuit's token endpoint and the rotated-token store.

QBO rotates refresh tokens: a refresh can return a new refresh token, and once it has,
the old one may stop working. The store therefore writes every new refresh token to
disk (atomically, mode 0600, under a file lock) before the caller uses the access token
that came with it, so the next run, however it is launched, starts from a valid token.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import typing as t
from dataclasses import dataclass
from pathlib import Path

import requests
from filelock import FileLock

from tap_quickbooks_backfill.errors import (
    RefreshTokenRejectedError,
    TokenEndpointUnavailableError,
    TokenStoreError,
)

if t.TYPE_CHECKING:
    from collections.abc import Iterator

LOGGER = logging.getLogger("tap_quickbooks_backfill.auth")

TOKEN_FILE_MODE = 0o600
TOKEN_DIR_MODE = 0o700
LOCK_TIMEOUT_SECONDS = 300

INVALID_GRANT_MESSAGE = (
    "refresh token rejected by QBO (invalid_grant): reconnect the app and update the "
    "refresh token secret (refresh_token setting)"
)
INVALID_CLIENT_MESSAGE = (
    "client credentials rejected by QBO (invalid_client): check client_id and "
    "client_secret"
)


def fingerprint(secret: str) -> str:
    """Return a SHA-256 hex digest that identifies a token without revealing it.

    Args:
        secret: The token.

    Returns:
        The digest.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenGrant:
    """Tokens returned by one refresh."""

    access_token: str
    refresh_token: str
    expires_in: float

    def __repr__(self) -> str:
        """Hide the tokens so a logged grant leaks nothing."""
        return f"TokenGrant(expires_in={self.expires_in})"


class TokenStore:
    """Rotated refresh tokens, one JSON file per realm in a private directory.

    The file records the refresh token to use next and the fingerprint of the
    configured refresh token that seeded it. A configured token that differs from that
    seed is taken as a deliberate replacement by an operator and wins over the stored
    one; otherwise the stored (newer) token wins.
    """

    def __init__(self, directory: str | os.PathLike[str], realm_id: str) -> None:
        """Point the store at ``directory/<realm_id>.json``.

        Args:
            directory: Folder of the token files, created with mode 0700 on first write.
            realm_id: QBO company id, used as the file name.
        """
        self.directory = Path(directory)
        self.path = self.directory / f"{realm_id}.json"
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_SECONDS)

    def check_writable(self) -> None:
        """Create the store's folder if needed and check that this user can write in it.

        Raises:
            TokenStoreError: If the folder cannot be created or written.
        """
        try:
            self._ensure_directory()
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".write-check-"):
                pass
        except OSError as exc:
            msg = (
                f"token_store_path {str(self.directory)!r} is not a writable folder "
                f"({exc.strerror or type(exc).__name__}): the tap saves each rotated "
                "refresh token there before using it; make the folder writable for this "
                "user or set token_store_path to one that is"
            )
            raise TokenStoreError(msg) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's file lock, so concurrent runs rotate one at a time.

        Yields:
            Nothing; the lock is held inside the ``with`` block.
        """
        self._ensure_directory()
        with self._lock:
            yield

    def read(self) -> dict[str, t.Any] | None:
        """Return the stored record, or ``None`` when there is none or it is unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            LOGGER.warning(
                "Token store %s is not valid JSON; using the configured refresh token",
                self.path,
            )
            return None

        if not isinstance(record, dict) or not record.get("refresh_token"):
            return None

        return record

    def refresh_token_to_use(self, configured: str) -> str:
        """Choose between the stored refresh token and the configured one.

        Args:
            configured: The refresh token from the tap's config.

        Returns:
            The stored token when the store was seeded from ``configured``, else
            ``configured`` (first run, or an operator replaced the secret).
        """
        record = self.read()
        if record is None:
            return configured

        if record.get("seed_fingerprint") != fingerprint(configured):
            LOGGER.info(
                "Configured refresh token differs from the one the token store was "
                "seeded with; using the configured one"
            )
            return configured

        return str(record["refresh_token"])

    def tokens_seeded_elsewhere(self, configured: str) -> list[str]:
        """Return tokens stored under other realms but rotated from ``configured``.

        A run with a mistyped realm ID rotates the token and stores the new one under
        that realm before QBO rejects the realm, so the working token sits in another
        realm's file. A refresh token belongs to one app connection, so a file seeded
        from the same configured token contains this company's token.

        Args:
            configured: The refresh token from the tap's config.

        Returns:
            Those tokens, the most recently stored first.
        """
        seed = fingerprint(configured)
        found: list[tuple[str, str]] = []
        for path in self.directory.glob("*.json"):
            if path == self.path:
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if (
                isinstance(record, dict)
                and record.get("seed_fingerprint") == seed
                and record.get("refresh_token")
            ):
                found.append((str(record.get("updated_at_utc", "")), str(record["refresh_token"])))

        return [token for _, token in sorted(found, reverse=True)]

    def save(self, refresh_token: str, configured: str) -> None:
        """Write the refresh token to use next, atomically and readable by the owner only.

        Args:
            refresh_token: The newest refresh token from the token endpoint.
            configured: The configured refresh token, remembered by fingerprint as the
                seed of this store.
        """
        self._ensure_directory()
        record = {
            "refresh_token": refresh_token,
            "seed_fingerprint": fingerprint(configured),
            "updated_at_utc": dt.datetime.now(dt.UTC).isoformat(),
        }
        descriptor, temporary = tempfile.mkstemp(
            dir=self.directory, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            os.fchmod(descriptor, TOKEN_FILE_MODE)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            Path(temporary).replace(self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                Path(temporary).unlink()
            raise

        self._fsync_directory()

    def _ensure_directory(self) -> None:
        self.directory.mkdir(mode=TOKEN_DIR_MODE, parents=True, exist_ok=True)

    def _fsync_directory(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def request_token_refresh(  # noqa: PLR0913
    session: requests.Session,
    *,
    token_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    timeout: float,
    user_agent: str,
) -> TokenGrant:
    """Exchange a refresh token for new tokens, in one HTTP request.

    Args:
        session: HTTP session.
        token_url: Intuit's token endpoint (or the emulator's).
        client_id: OAuth client id.
        client_secret: OAuth client secret.
        refresh_token: The refresh token to exchange.
        timeout: Seconds to wait for the response.
        user_agent: ``User-Agent`` header.

    Returns:
        The new tokens. The refresh token may equal the one sent.

    Raises:
        RefreshTokenRejectedError: On ``invalid_grant``, ``invalid_client`` or another
            4xx response, which no retry can fix.
        TokenEndpointUnavailableError: On 429, 5xx, a timeout, a dropped connection or
            a body that is not the expected JSON.
    """
    try:
        response = session.post(
            token_url,
            auth=(client_id, client_secret),
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"Accept": "application/json", "User-Agent": user_agent},
            timeout=timeout,
        )
    except (requests.Timeout, requests.ConnectionError) as exc:
        msg = f"token endpoint did not respond: {type(exc).__name__}"
        raise TokenEndpointUnavailableError(msg) from None

    tid = response.headers.get("intuit_tid", "-")
    status = response.status_code
    if status == 429 or status >= 500:  # noqa: PLR2004
        msg = f"token endpoint returned HTTP {status} (intuit_tid {tid})"
        raise TokenEndpointUnavailableError(msg)

    try:
        body = response.json()
    except ValueError:
        body = None

    if status >= 400:  # noqa: PLR2004
        error = body.get("error") if isinstance(body, dict) else None
        if error == "invalid_grant":
            raise RefreshTokenRejectedError(INVALID_GRANT_MESSAGE, error=error)
        if error == "invalid_client":
            raise RefreshTokenRejectedError(INVALID_CLIENT_MESSAGE, error=error)
        msg = (
            f"token endpoint rejected the refresh with HTTP {status} "
            f"(error {error or 'unknown'}, intuit_tid {tid}): check the app's "
            "credentials and token_url"
        )
        raise RefreshTokenRejectedError(msg, error=error)

    if not isinstance(body, dict) or not body.get("access_token"):
        msg = f"token endpoint returned HTTP {status} without an access token"
        raise TokenEndpointUnavailableError(msg)

    return TokenGrant(
        access_token=str(body["access_token"]),
        refresh_token=str(body.get("refresh_token") or refresh_token),
        expires_in=float(body.get("expires_in") or 3600),
    )
