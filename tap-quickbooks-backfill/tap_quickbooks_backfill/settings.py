"""Typed settings parsed from the tap's config, with the input checks.

The tap's config schema (``tap.py``) declares each setting with its description and
default. This module turns a config dict into a frozen :class:`Settings` object and
reports every invalid value with a message that names the setting and the fix, before
any request reaches QBO.
"""

from __future__ import annotations

import datetime as dt
import re
import typing as t
from dataclasses import dataclass

from tap_quickbooks_backfill import __version__

PRODUCTION_API_BASE_URL = "https://quickbooks.api.intuit.com"
SANDBOX_API_BASE_URL = "https://sandbox-quickbooks.api.intuit.com"
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"  # noqa: S105

ENVIRONMENT_BASE_URLS = {
    "production": PRODUCTION_API_BASE_URL,
    "sandbox": SANDBOX_API_BASE_URL,
}
WINDOW_FIELDS = ("LastUpdatedTime", "CreateTime")
CREDENTIAL_SETTINGS = ("client_id", "client_secret", "refresh_token", "realm_id")

MAX_PAGE_SIZE = 1000
MAX_CONCURRENT_REQUESTS = 10
# Maximum windows scanned at once. Scans beyond the requests in flight wait for a
# slot, but under QBO's latency they keep every slot busy until the end.
MAX_WINDOW_CONCURRENCY = 50
# Largest increment that nice(2) accepts on Linux: 19 is the lowest CPU priority.
MAX_NICENESS = 19
QBO_REQUESTS_PER_MINUTE = 500

DEFAULTS: dict[str, t.Any] = {
    "environment": "production",
    "window_size": "7d",
    "window_field": "LastUpdatedTime",
    "page_size": MAX_PAGE_SIZE,
    "max_requests_per_minute": 450,
    "max_requests_per_second": 8,
    "max_concurrent_requests": MAX_CONCURRENT_REQUESTS,
    "window_concurrency": 1,
    "minor_version": 75,
    # QBO ends a request after 120 s on its side; the extra 30 s lets its own error
    # arrive first, so the client timeout only catches connections that hang.
    "request_timeout": 150,
    "user_agent": f"tap-quickbooks-backfill/{__version__}",
    "token_store_path": ".secrets/qbo-tokens",
    "max_retries": 8,
    "throttle_wait_seconds": 60,
    "cpu_niceness": 0,
}

_WINDOW_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_WINDOW_SIZE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class SettingsError(ValueError):
    """Invalid tap settings: ``errors`` lists one message per invalid setting."""

    def __init__(self, errors: list[str]) -> None:
        """Store the messages and build a summary from them.

        Args:
            errors: One message per invalid setting.
        """
        self.errors = errors
        super().__init__("invalid tap settings: " + "; ".join(errors))


@dataclass(frozen=True)
class Settings:
    """Validated settings of one tap run. All instants are aware and in UTC."""

    client_id: str
    client_secret: str
    refresh_token: str
    realm_id: str
    environment: str = "production"
    api_base_url: str = PRODUCTION_API_BASE_URL
    token_url: str = INTUIT_TOKEN_URL
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    window_size: dt.timedelta = dt.timedelta(days=7)
    window_field: str = "LastUpdatedTime"
    page_size: int = MAX_PAGE_SIZE
    max_requests_per_minute: int = 450
    max_requests_per_second: int = 8
    max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS
    window_concurrency: int = 1
    minor_version: int = 75
    request_timeout: float = 150.0
    user_agent: str = DEFAULTS["user_agent"]
    token_store_path: str = ".secrets/qbo-tokens"  # noqa: S105 - a folder, not a secret
    max_retries: int = 8
    throttle_wait_seconds: float = 60.0
    cpu_niceness: int = 0

    def __repr__(self) -> str:
        """Show the non-secret settings only, so a logged object leaks nothing."""
        return (
            f"Settings(realm_id={self.realm_id!r}, api_base_url={self.api_base_url!r}, "
            f"start_date={self.start_date}, end_date={self.end_date}, "
            f"window_size={self.window_size}, window_field={self.window_field!r}, "
            f"page_size={self.page_size})"
        )


def parse_window_size(text: str) -> dt.timedelta:
    """Parse a window size such as ``7d``, ``12h``, ``30m`` or ``2w``.

    Args:
        text: A positive whole number followed by one unit letter: ``m`` (minutes),
            ``h`` (hours), ``d`` (days) or ``w`` (weeks).

    Returns:
        The window length.

    Raises:
        ValueError: If the text does not match that form or is zero.
    """
    match = _WINDOW_SIZE_PATTERN.match(str(text))
    if not match:
        msg = (
            f"window_size {text!r} is invalid: use a whole number and a unit "
            "m, h, d or w, for example 7d or 12h"
        )
        raise ValueError(msg)

    amount, unit = int(match.group(1)), match.group(2)
    if amount == 0:
        msg = f"window_size {text!r} is invalid: it must be longer than zero"
        raise ValueError(msg)

    return dt.timedelta(**{_WINDOW_SIZE_UNITS[unit]: amount})


def parse_instant(name: str, value: t.Any) -> dt.datetime:  # noqa: ANN401
    """Parse an ISO-8601 date or date-time into an aware UTC datetime.

    A date or a date-time without offset is read as UTC. Fractions of a second are
    dropped, because QBO timestamps and query literals carry whole seconds.

    Args:
        name: Setting name, used in the error message.
        value: A string such as ``2023-02-01`` or ``2023-02-01T08:00:00-05:00``, or a
            datetime.

    Returns:
        The instant in UTC.

    Raises:
        ValueError: If the value is not a date or date-time.
    """
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            msg = (
                f"{name} {value!r} is not a valid date: use ISO 8601, for example "
                "2023-02-01 or 2023-02-01T00:00:00Z"
            )
            raise ValueError(msg) from None

    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)

    return parsed.astimezone(dt.UTC).replace(microsecond=0)


def _integer_in_range(
    config: t.Mapping[str, t.Any],
    name: str,
    low: int,
    high: int | None,
    errors: list[str],
) -> int:
    value = config.get(name)
    if value is None:
        return int(DEFAULTS[name])

    try:
        number = int(value)
    except (TypeError, ValueError):
        errors.append(f"{name} {value!r} is not a whole number")
        return int(DEFAULTS[name])

    if isinstance(value, float) and value != number:
        errors.append(f"{name} {value!r} is not a whole number")
    elif number < low or (high is not None and number > high):
        upper = f" and {high}" if high is not None else ""
        bound = f"between {low}{upper}" if high is not None else f"at least {low}"
        errors.append(f"{name} {number} is out of range: it must be {bound}")

    return number


def _seconds(
    config: t.Mapping[str, t.Any],
    name: str,
    errors: list[str],
    *,
    allow_zero: bool,
) -> float:
    value = config.get(name)
    if value is None:
        return float(DEFAULTS[name])

    try:
        number = float(value)
    except (TypeError, ValueError):
        errors.append(f"{name} {value!r} is not a number of seconds")
        return float(DEFAULTS[name])

    if number < 0 or (number == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "greater than 0"
        errors.append(f"{name} {value!r} is out of range: it must be {bound} seconds")

    return number


def _check_credentials(config: t.Mapping[str, t.Any], errors: list[str]) -> None:
    missing = [name for name in CREDENTIAL_SETTINGS if not str(config.get(name) or "")]
    if missing:
        errors.append(
            "missing QBO credentials: set "
            + ", ".join(missing)
            + " (in Meltano through the extractor's settings or environment variables)"
        )


def _api_urls(config: t.Mapping[str, t.Any], errors: list[str]) -> tuple[str, str, str]:
    environment = str(config.get("environment") or DEFAULTS["environment"])
    if environment not in ENVIRONMENT_BASE_URLS:
        errors.append(
            f"environment {environment!r} is unknown: use production or sandbox"
        )
    default_base = ENVIRONMENT_BASE_URLS.get(environment, PRODUCTION_API_BASE_URL)
    base_url = str(config.get("api_base_url") or default_base).rstrip("/")
    token_url = str(config.get("token_url") or INTUIT_TOKEN_URL)

    for name, url in (("api_base_url", base_url), ("token_url", token_url)):
        if not url.startswith(("https://", "http://")):
            errors.append(f"{name} {url!r} is not an http(s) URL")

    return environment, base_url, token_url


def _date_range(
    config: t.Mapping[str, t.Any],
    now: dt.datetime,
    errors: list[str],
) -> tuple[dt.datetime | None, dt.datetime | None]:
    start = end = None
    if not config.get("start_date"):
        errors.append("start_date is missing: set the first instant to backfill")
    else:
        try:
            start = parse_instant("start_date", config["start_date"])
        except ValueError as exc:
            errors.append(str(exc))

    if config.get("end_date"):
        try:
            end = parse_instant("end_date", config["end_date"])
        except ValueError as exc:
            errors.append(str(exc))
    else:
        end = now.astimezone(dt.UTC).replace(microsecond=0)

    if start is not None and end is not None and end <= start:
        errors.append(
            f"end_date {end.isoformat()} is not after start_date {start.isoformat()}: "
            "the range [start_date, end_date) would be empty"
        )

    return start, end


def parse_settings(
    config: t.Mapping[str, t.Any],
    *,
    now: dt.datetime | None = None,
    require_range: bool = True,
) -> Settings:
    """Check a tap config and return its typed settings.

    Args:
        config: The tap config, as Meltano or ``--config`` passes it.
        now: The run's start instant, which an absent ``end_date`` stands for.
        require_range: Whether ``start_date`` must be set. The validation command
            passes ``False`` because it gives its own range to each call.

    Returns:
        The settings, with defaults filled in.

    Raises:
        SettingsError: If any setting is missing or invalid; it lists all of them.
    """
    errors: list[str] = []
    now = now or dt.datetime.now(dt.UTC)

    _check_credentials(config, errors)
    environment, base_url, token_url = _api_urls(config, errors)

    if require_range or config.get("start_date"):
        start, end = _date_range(config, now, errors)
    else:
        start, end = None, None

    window_size = dt.timedelta(days=7)
    try:
        window_size = parse_window_size(config.get("window_size") or "7d")
    except ValueError as exc:
        errors.append(str(exc))

    if config.get("batch_config"):
        errors.append(
            "batch_config is not supported: the tap writes a window's STATE after its "
            "RECORD messages, and BATCH files written later would let the bookmark pass "
            "records not loaded yet; remove batch_config"
        )

    window_field = str(config.get("window_field") or DEFAULTS["window_field"])
    if window_field not in WINDOW_FIELDS:
        errors.append(
            f"window_field {window_field!r} is invalid: use LastUpdatedTime or CreateTime"
        )

    settings = Settings(
        client_id=str(config.get("client_id") or ""),
        client_secret=str(config.get("client_secret") or ""),
        refresh_token=str(config.get("refresh_token") or ""),
        realm_id=str(config.get("realm_id") or ""),
        environment=environment,
        api_base_url=base_url,
        token_url=token_url,
        start_date=start,
        end_date=end,
        window_size=window_size,
        window_field=window_field,
        page_size=_integer_in_range(config, "page_size", 1, MAX_PAGE_SIZE, errors),
        max_requests_per_minute=_integer_in_range(
            config, "max_requests_per_minute", 1, None, errors
        ),
        max_requests_per_second=_integer_in_range(
            config, "max_requests_per_second", 1, None, errors
        ),
        max_concurrent_requests=_integer_in_range(
            config, "max_concurrent_requests", 1, MAX_CONCURRENT_REQUESTS, errors
        ),
        window_concurrency=_integer_in_range(
            config, "window_concurrency", 1, MAX_WINDOW_CONCURRENCY, errors
        ),
        minor_version=_integer_in_range(config, "minor_version", 1, None, errors),
        request_timeout=_seconds(config, "request_timeout", errors, allow_zero=False),
        user_agent=str(config.get("user_agent") or DEFAULTS["user_agent"]),
        token_store_path=str(config.get("token_store_path") or DEFAULTS["token_store_path"]),
        max_retries=_integer_in_range(config, "max_retries", 0, None, errors),
        throttle_wait_seconds=_seconds(
            config, "throttle_wait_seconds", errors, allow_zero=True
        ),
        cpu_niceness=_integer_in_range(config, "cpu_niceness", 0, MAX_NICENESS, errors),
    )

    if errors:
        raise SettingsError(errors)

    return settings
