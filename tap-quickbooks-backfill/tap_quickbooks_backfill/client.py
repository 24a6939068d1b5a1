"""HTTP client of the QBO query endpoint, independent of singer-sdk streams.

One client serves every stream of a run (and the validation command). It refreshes
the access token, keeps requests under ``max_requests_per_minute`` and
``max_requests_per_second`` and at most ``max_concurrent_requests`` in flight, and
retries the failures that QBO reports as temporary.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
import threading
import time
import typing as t
from dataclasses import dataclass

import requests
import tenacity
from requests.adapters import HTTPAdapter

from tap_quickbooks_backfill import queries
from tap_quickbooks_backfill.auth import TokenGrant, TokenStore, request_token_refresh
from tap_quickbooks_backfill.errors import (
    QBORequestError,
    RefreshTokenRejectedError,
    RetriesExhaustedError,
    RetryableError,
    ScanCancelledError,
    TokenEndpointUnavailableError,
)
from tap_quickbooks_backfill.inflight import RealmSlots
from tap_quickbooks_backfill.ratelimit import realm_limiter
from tap_quickbooks_backfill.rows import MalformedBodyError, decode_query_body
from tap_quickbooks_backfill.settings import Settings, parse_settings

if t.TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Mapping

LOGGER = logging.getLogger("tap_quickbooks_backfill.client")

RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
MAX_MALFORMED_ATTEMPTS = 3
MAX_BACKOFF_SECONDS = 60.0
MAX_RETRY_AFTER_SECONDS = 600.0
# Refresh a little before QBO's one-hour expiry, so no request carries a token that
# expires in flight.
TOKEN_EXPIRY_MARGIN_SECONDS = 120.0

_XML_CODE = re.compile(r'<Error[^>]*\bcode="([^"]*)"', re.IGNORECASE)
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.IGNORECASE | re.DOTALL)
_XML_DETAIL = re.compile(r"<Detail>(.*?)</Detail>", re.IGNORECASE | re.DOTALL)


def backoff_sleep(seconds: float) -> None:
    """Wait between retries; the one place tests replace to skip the waits.

    Args:
        seconds: How long to wait.
    """
    time.sleep(seconds)


@dataclass
class RequestStats:
    """Counters of the query requests sent for one unit of work, such as a window.

    Attributes:
        requests: HTTP requests sent, retries included.
        retries: Attempts that failed and were sent again.
        throttles: Responses with HTTP 429.
        cancel: When set, the unit of work was abandoned: the next attempt or retry
            wait raises :class:`ScanCancelledError` instead of going on.
    """

    requests: int = 0
    retries: int = 0
    throttles: int = 0
    cancel: threading.Event | None = None


@dataclass(frozen=True)
class Fault:
    """The parts of a QBO Fault body that logs and errors need."""

    type: str | None
    code: str | None
    message: str
    detail: str




def _fault_from_json(body: Mapping[str, t.Any]) -> Fault | None:
    # QBO's API returns "Fault"/"Error"/"Message", and its gateway (401) returns
    # lower-case "fault"/"error"/"message".
    fault = body.get("Fault") or body.get("fault")
    if not isinstance(fault, dict):
        return None

    errors = fault.get("Error") or fault.get("error") or [{}]
    first = errors[0] if isinstance(errors, list) and errors else {}
    return Fault(
        type=fault.get("type"),
        code=str(first.get("code")) if first.get("code") is not None else None,
        message=str(first.get("Message") or first.get("message") or ""),
        detail=str(first.get("Detail") or first.get("detail") or ""),
    )


def parse_fault(response: requests.Response) -> Fault | None:
    """Read QBO's Fault from a response body, JSON or XML (429 bodies are XML).

    Args:
        response: The HTTP response.

    Returns:
        The fault, or ``None`` when the body carries none.
    """
    try:
        body = response.json()
    except ValueError:
        body = None

    if isinstance(body, dict):
        return _fault_from_json(body)

    text = response.text or ""
    code = _XML_CODE.search(text)
    message = _XML_MESSAGE.search(text)
    detail = _XML_DETAIL.search(text)
    if not (code or message):
        return None

    return Fault(
        type=None,
        code=code.group(1) if code else None,
        message=message.group(1).strip() if message else "",
        detail=detail.group(1).strip() if detail else "",
    )


def parse_retry_after(value: str | None) -> float | None:
    """Read a ``Retry-After`` header: seconds or an HTTP date.

    Args:
        value: The header value, or ``None``.

    Returns:
        Seconds to wait (at least 0), or ``None`` when absent or unreadable.
    """
    if not value:
        return None

    value = value.strip()
    if value.isdigit():
        return float(value)

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None

    return max(0.0, when.timestamp() - time.time())


class QBOClient:
    """Client of one QBO company (realm): OAuth refresh, rate limit, retries, queries."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """Create a client; no request is sent until the first query.

        Args:
            settings: Validated tap settings.
            session: HTTP session to use, for tests; a new one by default.
            sleep: Function that waits between retries; :func:`backoff_sleep` by
                default.
        """
        self.settings = settings
        self.totals = RequestStats()
        self._session = session or self._new_session(settings.max_concurrent_requests)
        # Looked up at each call, so a test that replaces backoff_sleep reaches
        # clients created inside the tap.
        self._sleep = sleep or (lambda seconds: backoff_sleep(seconds))
        self._store = TokenStore(settings.token_store_path, settings.realm_id)
        # Checked before any token exchange: a refresh rotates the refresh token, and
        # a new token that cannot be saved is lost, which means reconnecting the app.
        self._store.check_writable()
        # Shared through a file with every other process of this realm on this machine.
        self._limiter = realm_limiter(
            settings.token_store_path,
            settings.realm_id,
            per_minute=settings.max_requests_per_minute,
            per_second=settings.max_requests_per_second,
        )
        # Also shared through lock files with every other process of this realm.
        self._in_flight = RealmSlots(
            settings.token_store_path,
            settings.realm_id,
            settings.max_concurrent_requests,
        )
        self._token_lock = threading.Lock()
        self._refresh_rejection: RefreshTokenRejectedError | None = None
        self._totals_lock = threading.Lock()
        self._access_token: str | None = None
        self._token_expires_at = 0.0
        self._token_generation = 0
        self._secrets = {
            s
            for s in (settings.client_id, settings.client_secret, settings.refresh_token)
            if s
        }

    @classmethod
    def from_config(cls, config: Mapping[str, t.Any]) -> QBOClient:
        """Build a client from a tap config dict (``start_date`` is not needed).

        Args:
            config: The tap config, with credentials and optional connection settings.

        Returns:
            A client that shares the tap's token store.
        """
        return cls(parse_settings(config, require_range=False))

    @property
    def query_url(self) -> str:
        """URL of the company's query endpoint."""
        return f"{self.settings.api_base_url}/v3/company/{self.settings.realm_id}/query"

    def close(self) -> None:
        """Close the HTTP session and the shared limiter's file."""
        self._session.close()
        self._limiter.close()

    def __enter__(self) -> t.Self:  # noqa: D105
        return self

    def __exit__(self, *_: object) -> None:  # noqa: D105
        self.close()

    # Queries

    def query(self, text: str, *, stats: RequestStats | None = None) -> dict[str, t.Any]:
        """Send one query and return QBO's JSON response.

        Args:
            text: A query such as ``SELECT * FROM Invoice MAXRESULTS 10``.
            stats: Counters of the caller's unit of work, updated in place.

        Returns:
            The response body, which has a ``QueryResponse`` object whose arrays
            (the entity's rows) are lists of :class:`~tap_quickbooks_backfill.rows.Row`.

        Raises:
            QBORequestError: QBO rejected the query (for example code 4000 or 4001).
            RetriesExhaustedError: Every attempt failed with a temporary error.
        """
        stats = stats if stats is not None else RequestStats()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetryableError),
            stop=self._should_stop,
            wait=self._wait_seconds,
            sleep=lambda seconds: self._wait_before_retry(seconds, stats),
            before_sleep=lambda state: self._log_retry(state, text, stats),
            reraise=True,
        )
        try:
            return retrying(self._send_query, text, stats)
        except RetryableError as exc:
            raise RetriesExhaustedError(self._redact(self._exhausted_message(exc, text))) from None

    def count(
        self,
        entity: str,
        start: dt.datetime,
        end: dt.datetime,
        window_field: str = "LastUpdatedTime",
        *,
        stats: RequestStats | None = None,
    ) -> int:
        """Ask QBO for ``COUNT(*)`` of an entity over ``[start, end)``.

        Customer and Item are counted active and inactive alike.

        Args:
            entity: ``Invoice``, ``Customer`` or ``Item``.
            start: First instant (inclusive).
            end: Last instant (exclusive).
            window_field: ``LastUpdatedTime`` or ``CreateTime``.
            stats: Counters of the caller's unit of work.

        Returns:
            The number of records.
        """
        text = queries.count_in_range(entity, window_field, start, end)
        return self.count_query(text, stats=stats)

    def count_query(self, text: str, *, stats: RequestStats | None = None) -> int:
        """Send a ``COUNT(*)`` query and return ``totalCount``.

        Args:
            text: The query.
            stats: Counters of the caller's unit of work.

        Returns:
            QBO's count; 0 when QBO omits ``totalCount``.
        """
        body = self.query(text, stats=stats)
        return int(body["QueryResponse"].get("totalCount", 0))

    # One attempt

    def _send_query(self, text: str, stats: RequestStats) -> dict[str, t.Any]:
        if stats.cancel is not None and stats.cancel.is_set():
            raise ScanCancelledError

        access_token, generation = self._valid_access_token()
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/json",
            "User-Agent": self.settings.user_agent,
        }
        params = {"query": text, "minorversion": str(self.settings.minor_version)}

        with self._in_flight.hold(stats.cancel):
            self._limiter.try_acquire("qbo-query", blocking=True)
            self._count_request(stats)
            try:
                response = self._session.get(
                    self.query_url,
                    params=params,
                    headers=headers,
                    timeout=self.settings.request_timeout,
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                msg = f"no response from QBO ({type(exc).__name__})"
                raise RetryableError(msg) from None

        return self._read_response(response, text, generation)

    def _read_response(
        self,
        response: requests.Response,
        text: str,
        generation: int,
    ) -> dict[str, t.Any]:
        status = response.status_code
        tid = response.headers.get("intuit_tid")

        if status == 200:  # noqa: PLR2004
            return self._read_ok_response(response, text, tid)

        fault = parse_fault(response)
        code = fault.code if fault else None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))

        if status == 401:  # noqa: PLR2004
            self._expire_access_token(generation)
            # The detail of a 401 can quote part of the token, so it stays out of logs.
            msg = "access token rejected (HTTP 401); refreshing it"
            raise RetryableError(msg, status=status, code=code, intuit_tid=tid, retry_after=0)

        if status == 429:  # noqa: PLR2004
            msg = "request limit reached (HTTP 429, ThrottleExceeded)"
            raise RetryableError(
                msg,
                status=status,
                code=code,
                intuit_tid=tid,
                retry_after=retry_after,
                throttled=True,
            )

        if status in RETRYABLE_STATUSES:
            msg = f"QBO returned HTTP {status}: {self._fault_text(fault)}"
            raise RetryableError(
                msg, status=status, code=code, intuit_tid=tid, retry_after=retry_after
            )

        hint = ""
        if status == 403:  # noqa: PLR2004
            hint = (
                " Check that environment (production or sandbox) matches the app's keys "
                "and realm_id."
            )
        msg = (
            f"QBO rejected the query with HTTP {status}, code {code or '-'} "
            f"(intuit_tid {tid or '-'}): {self._fault_text(fault)}. Query: {text}.{hint}"
        )
        raise QBORequestError(self._redact(msg))

    def _read_ok_response(
        self,
        response: requests.Response,
        text: str,
        tid: str | None,
    ) -> dict[str, t.Any]:
        try:
            body = decode_query_body(response.content)
        except MalformedBodyError as exc:
            msg = f"QBO returned HTTP 200 with a malformed body: {exc}"
            raise RetryableError(msg, status=200, intuit_tid=tid, malformed=True) from None

        fault = _fault_from_json(body)
        if fault is not None:
            # An HTTP 200 can carry a Fault. A SystemFault is QBO's own failure and may
            # pass; any other fault is about the request and would fail again.
            if fault.type == "SystemFault":
                msg = f"QBO returned HTTP 200 with a SystemFault: {self._fault_text(fault)}"
                raise RetryableError(msg, status=200, code=fault.code, intuit_tid=tid)
            msg = (
                f"QBO rejected the query with a {fault.type or 'Fault'}, code "
                f"{fault.code or '-'} (intuit_tid {tid or '-'}): "
                f"{self._fault_text(fault)}. Query: {text}"
            )
            raise QBORequestError(self._redact(msg))

        if not isinstance(body.get("QueryResponse"), dict):
            msg = "QBO returned HTTP 200 without a QueryResponse object"
            raise RetryableError(msg, status=200, intuit_tid=tid, malformed=True)

        return body

    # Retry policy

    def _exhausted_message(self, exc: RetryableError, text: str) -> str:
        if exc.malformed:
            attempts = f"{MAX_MALFORMED_ATTEMPTS} malformed responses"
        else:
            attempts = f"{self.settings.max_retries + 1} attempts"
        hint = ""
        if exc.throttled:
            hint = (
                " QBO kept rejecting requests with HTTP 429: another program may be using "
                "the company's limit, or lower max_requests_per_minute."
            )
        return (
            f"QBO query failed after {attempts}; last error: {self._describe(exc)}. "
            f"Query: {text}.{hint} Re-run the same command to resume from the last "
            "completed window"
        )

    def _should_stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number > self.settings.max_retries:
            return True

        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.malformed:
            malformed = getattr(state, "malformed_responses", 0) + 1
            state.malformed_responses = malformed  # type: ignore[attr-defined]
            return malformed >= MAX_MALFORMED_ATTEMPTS

        return False

    def _wait_seconds(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError):
            if exc.retry_after is not None:
                return min(exc.retry_after, MAX_RETRY_AFTER_SECONDS)
            if exc.throttled:
                # Intuit's guidance is to wait about a minute after a 429.
                return self.settings.throttle_wait_seconds

        backoff = tenacity.wait_exponential_jitter(initial=1, max=MAX_BACKOFF_SECONDS)
        return float(backoff(state))

    def _wait_before_retry(self, seconds: float, stats: RequestStats) -> None:
        if stats.cancel is None:
            self._sleep(seconds)
        elif stats.cancel.wait(seconds):
            raise ScanCancelledError

    def _log_retry(
        self,
        state: tenacity.RetryCallState,
        text: str,
        stats: RequestStats,
    ) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        throttled = isinstance(exc, RetryableError) and exc.throttled

        stats.retries += 1
        stats.throttles += int(throttled)
        with self._totals_lock:
            self.totals.retries += 1
            self.totals.throttles += int(throttled)

        LOGGER.warning(
            "QBO query attempt %d of %d failed, retrying in %.1f s: %s. Query: %s",
            state.attempt_number,
            self.settings.max_retries + 1,
            wait,
            self._describe(exc),
            text,
        )

    def _describe(self, exc: BaseException | None) -> str:
        if isinstance(exc, RetryableError):
            return self._redact(
                f"HTTP {exc.status if exc.status is not None else '-'}, QBO code "
                f"{exc.code or '-'}, intuit_tid {exc.intuit_tid or '-'}: {exc}"
            )
        return self._redact(str(exc))

    def _count_request(self, stats: RequestStats) -> None:
        stats.requests += 1
        with self._totals_lock:
            self.totals.requests += 1

    # Access token

    def _valid_access_token(self) -> tuple[str, int]:
        with self._token_lock:
            # Once QBO rejected the refresh token, every thread of this run fails with
            # that error instead of sending the dead token again.
            if self._refresh_rejection is not None:
                raise self._refresh_rejection
            if self._access_token is None or time.monotonic() >= self._token_expires_at:
                try:
                    self._refresh_access_token()
                except RefreshTokenRejectedError as exc:
                    self._refresh_rejection = exc
                    raise
            assert self._access_token is not None  # noqa: S101 - set by the refresh
            return self._access_token, self._token_generation

    def _expire_access_token(self, generation: int) -> None:
        # Several threads can see a 401 for the same token; only the first one to
        # report it forces a refresh.
        with self._token_lock:
            if generation == self._token_generation:
                self._access_token = None

    def _refresh_access_token(self) -> None:
        settings = self.settings
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TokenEndpointUnavailableError),
            stop=tenacity.stop_after_attempt(settings.max_retries + 1),
            wait=tenacity.wait_exponential_jitter(initial=1, max=MAX_BACKOFF_SECONDS),
            sleep=self._sleep,
            before_sleep=self._log_token_retry,
            reraise=True,
        )

        # The file lock makes concurrent runs of the same realm rotate one at a time,
        # each starting from the token the previous one stored.
        with self._store.locked():
            refresh_token = self._store.refresh_token_to_use(settings.refresh_token)
            self._secrets.add(refresh_token)
            try:
                grant = self._exchange_with_fallback(retrying, refresh_token)
            except TokenEndpointUnavailableError as exc:
                msg = (
                    f"token endpoint still unavailable after {settings.max_retries + 1} "
                    f"attempts ({exc}); the stored refresh token is unchanged, so "
                    "re-running later is safe"
                )
                raise RetriesExhaustedError(msg) from None

            self._secrets.update({grant.access_token, grant.refresh_token})
            # Persist before use: once QBO has rotated the refresh token, the old one
            # may be dead, so losing the new one would lock the next run out.
            self._store.save(grant.refresh_token, configured=settings.refresh_token)

        # Short-lived tokens (as an emulator may issue) keep half their life as margin.
        margin = min(TOKEN_EXPIRY_MARGIN_SECONDS, grant.expires_in / 2)
        self._access_token = grant.access_token
        self._token_expires_at = time.monotonic() + grant.expires_in - margin
        self._token_generation += 1
        LOGGER.info(
            "Refreshed the QBO access token for realm %s (valid %d s)",
            settings.realm_id,
            int(grant.expires_in),
        )

    def _exchange_with_fallback(
        self,
        retrying: tenacity.Retrying,
        refresh_token: str,
    ) -> TokenGrant:
        settings = self.settings

        def exchange(token: str) -> TokenGrant:
            return retrying(
                request_token_refresh,
                self._session,
                token_url=settings.token_url,
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                refresh_token=token,
                timeout=settings.request_timeout,
                user_agent=settings.user_agent,
            )

        try:
            return exchange(refresh_token)
        except RefreshTokenRejectedError as exc:
            if exc.error != "invalid_grant":
                raise
            first_rejection = exc

        # The stored token can be dead while the configured one still works, for example
        # when QBO keeps a replaced token alive for a while or the store outlived the
        # company it was issued for. Tokens rotated from the configured one under another
        # realm (a mistyped realm ID) come next. When every one is rejected, the run ends.
        fallbacks = [] if refresh_token == settings.refresh_token else [settings.refresh_token]
        fallbacks += self._store.tokens_seeded_elsewhere(settings.refresh_token)
        for candidate in dict.fromkeys(fallbacks):
            if candidate == refresh_token:
                continue
            self._secrets.add(candidate)
            LOGGER.warning(
                "Refresh token for realm %s rejected (invalid_grant); trying the %s",
                settings.realm_id,
                "configured one"
                if candidate == settings.refresh_token
                else "one rotated from it and stored under another realm ID",
            )
            try:
                return exchange(candidate)
            except RefreshTokenRejectedError as exc:
                if exc.error != "invalid_grant":
                    raise

        raise first_rejection

    def _log_token_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        LOGGER.warning(
            "Token refresh attempt %d of %d failed, retrying in %.1f s: %s",
            state.attempt_number,
            self.settings.max_retries + 1,
            wait,
            self._redact(str(exc)),
        )

    # Helpers

    def _fault_text(self, fault: Fault | None) -> str:
        if fault is None:
            return "no Fault in the body"
        parts = [part for part in (fault.message, fault.detail) if part]
        return self._redact(": ".join(parts) or "Fault without a message")

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret and secret in text:
                text = text.replace(secret, "[redacted]")
        return text

    @staticmethod
    def _new_session(pool_size: int) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 2))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session


@contextlib.contextmanager
def open_client(config: Mapping[str, t.Any]) -> t.Iterator[QBOClient]:
    """Open a client from a tap config and close it on exit.

    Args:
        config: The tap config.

    Yields:
        The client.
    """
    client = QBOClient.from_config(config)
    try:
        yield client
    finally:
        client.close()
