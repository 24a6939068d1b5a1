"""Exceptions raised by the QBO client, the token store and the window scan."""

from __future__ import annotations


class QBOError(Exception):
    """Base class of every error the tap raises about QBO."""


class RetryableError(QBOError):
    """A failed request that may succeed when sent again.

    Attributes:
        status: HTTP status, or ``None`` when no response arrived.
        code: QBO error code from the Fault body, when there is one.
        intuit_tid: Intuit's transaction id from the response headers.
        retry_after: Seconds from a ``Retry-After`` header, when present.
        throttled: Whether QBO returned 429 (request limit reached).
        malformed: Whether the body was not the JSON QBO should send.
    """

    def __init__(  # noqa: PLR0913
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        intuit_tid: str | None = None,
        retry_after: float | None = None,
        throttled: bool = False,
        malformed: bool = False,
    ) -> None:
        """Store the details that the retry log line and the backoff need."""
        super().__init__(message)
        self.status = status
        self.code = code
        self.intuit_tid = intuit_tid
        self.retry_after = retry_after
        self.throttled = throttled
        self.malformed = malformed


class QBORequestError(QBOError):
    """A request that QBO rejected for good, such as a query error (4000, 4001)."""


class RetriesExhaustedError(QBOError):
    """A request still failed after the configured number of attempts."""


class RefreshTokenRejectedError(QBOError):
    """The token endpoint rejected the refresh token or the client credentials.

    Attributes:
        error: OAuth error code, such as ``invalid_grant`` or ``invalid_client``.
    """

    def __init__(self, message: str, *, error: str | None = None) -> None:
        """Store the message and the OAuth error code."""
        super().__init__(message)
        self.error = error


class TokenEndpointUnavailableError(QBOError):
    """The token endpoint returned 429 or 5xx, or did not respond, so a retry may work."""


class TokenStoreError(QBOError):
    """The token store folder cannot be created or written."""


class WindowScanError(QBOError):
    """A window scan could not prove that it read every record of the window."""


class ScanCancelledError(QBOError):
    """A window scan fetched ahead was abandoned because its consumer stopped."""
