"""Run-time state of an emulator: settings, tokens, limits, faults, log."""

from __future__ import annotations

import collections
import random
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from qbo_emulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REALM_ID,
)

FAULT_KINDS = frozenset({
    "429", "500", "503", "401", "fault_200", "reset", "malformed_json", "slow",
    "extra_row",
})
FAULT_TARGETS = frozenset({"query", "token", "cdc", "batch", "read", "api", "any"})
API_ENDPOINTS = frozenset({"query", "cdc", "batch", "read"})


@dataclass
class Settings:
    """Settings a test may change while the emulator runs.

    Attributes:
        realm_id: the one company (realm) this emulator serves.
        client_id: OAuth client id the token endpoint accepts.
        client_secret: OAuth client secret the token endpoint accepts.
        access_token_ttl: access token lifetime in seconds (QBO: 3600).
        refresh_token_ttl: rolling refresh token lifetime in seconds
            (QBO: 8726400, about 101 days).
        rotation: ``every_refresh`` (a new refresh token on every refresh) or
            ``period:SECONDS`` (a new one once the current one is that old).
            Either way the replaced token is rejected with invalid_grant.
        requests_per_minute: API requests per realm in any 60 s (QBO: 500);
            0 turns the limit off.
        requests_per_second: API requests per realm in any 1 s; 0 is off
            (QBO's newer 10 per second rule is off by default).
        max_concurrent: API requests of a realm in flight at once (QBO: 10);
            0 turns the limit off.
        batch_requests_per_minute: batch requests per realm in any 60 s (QBO: 40).
        batch_max_items: items allowed in one batch request.
        latency_base_ms: added to every API response, in milliseconds.
        latency_per_record_ms: added per returned record, in milliseconds.
        max_start_position: largest STARTPOSITION accepted; 0 is unlimited.
        cdc_max_days: how far back CDC may look, in days.
        cdc_max_objects: objects in one CDC answer across all entities.
        fault_seed: seed of the random choice of ``fraction`` faults.
        request_log_limit: request log entries kept (oldest dropped first).
        encoded_cache_mib: MiB of served records kept as JSON, so that a record read
            again is not built and encoded again; 0 keeps none.
    """

    realm_id: str = DEFAULT_REALM_ID
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    access_token_ttl: int = 3600
    refresh_token_ttl: int = 8_726_400
    rotation: str = "every_refresh"
    requests_per_minute: int = 500
    requests_per_second: int = 0
    max_concurrent: int = 10
    batch_requests_per_minute: int = 40
    batch_max_items: int = 10
    latency_base_ms: float = 0.0
    latency_per_record_ms: float = 0.0
    max_start_position: int = 100_000
    cdc_max_days: int = 30
    cdc_max_objects: int = 1000
    fault_seed: int = 0
    request_log_limit: int = 200_000
    encoded_cache_mib: int = 256

    def validate(self) -> None:
        """Check values that would otherwise fail later.

        Raises:
            ValueError: a setting has an impossible value.
        """
        rotation_period(self.rotation)
        for name in ("access_token_ttl", "refresh_token_ttl"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        for name in ("requests_per_minute", "requests_per_second", "max_concurrent",
                     "batch_requests_per_minute", "max_start_position",
                     "encoded_cache_mib"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or positive")

    def public(self) -> dict[str, Any]:
        """Return the settings without the client secret."""
        values = asdict(self)
        values["client_secret"] = "***"
        return values

    def update(self, changes: dict[str, Any]) -> None:
        """Apply changes by name, converting to each field's type.

        Raises:
            ValueError: an unknown name or an invalid value.
        """
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        previous = asdict(self)
        for name, value in changes.items():
            current = getattr(self, name)
            setattr(self, name, type(current)(value) if value is not None else current)
        try:
            self.validate()
        except ValueError:
            for name, value in previous.items():
                setattr(self, name, value)
            raise


def rotation_period(rotation: str) -> float:
    """Return the rotation period in seconds (0 for every refresh).

    Raises:
        ValueError: the policy is neither every_refresh nor period:SECONDS.
    """
    if rotation == "every_refresh":
        return 0.0
    if rotation.startswith("period:"):
        try:
            seconds = float(rotation.split(":", 1)[1])
        except ValueError:
            seconds = -1
        if seconds > 0:
            return seconds
    raise ValueError(
        f"invalid rotation {rotation!r}: use 'every_refresh' or 'period:SECONDS'"
    )


@dataclass
class RefreshToken:
    """A refresh token the token endpoint still accepts."""

    issued_at: float
    expires_at: float


class TokenStore:
    """Refresh and access tokens of the one OAuth client."""

    def __init__(self, initial_refresh_token: str, now: float, ttl: int) -> None:
        self.initial_refresh_token = initial_refresh_token
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, float] = {}
        self.reset(now, ttl)

    def reset(self, now: float, ttl: int) -> None:
        """Forget all tokens and accept the initial refresh token again."""
        self.refresh_tokens = {
            self.initial_refresh_token: RefreshToken(issued_at=now, expires_at=now + ttl)
        }
        self.access_tokens = {}

    def refresh(self, token: str, now: float, settings: Settings) -> dict[str, Any] | None:
        """Exchange a refresh token. Return the token response, or None if invalid."""
        current = self.refresh_tokens.get(token)
        if current is None or current.expires_at <= now:
            self.refresh_tokens.pop(token, None)
            return None

        period = rotation_period(settings.rotation)
        if period == 0 or now - current.issued_at >= period:
            del self.refresh_tokens[token]
            token = "RT1-" + secrets.token_urlsafe(24)
            current = RefreshToken(issued_at=now, expires_at=now + settings.refresh_token_ttl)
            self.refresh_tokens[token] = current
        else:
            current.expires_at = now + settings.refresh_token_ttl

        access_token = "eyJ-emu-" + secrets.token_urlsafe(32)
        self.access_tokens[access_token] = now + settings.access_token_ttl
        self._drop_expired(now)
        return {
            "token_type": "bearer",
            "expires_in": settings.access_token_ttl,
            "refresh_token": token,
            "x_refresh_token_expires_in": int(current.expires_at - now),
            "access_token": access_token,
        }

    def _drop_expired(self, now: float) -> None:
        if len(self.access_tokens) > 10_000:
            self.access_tokens = {k: v for k, v in self.access_tokens.items() if v > now}

    def check_access(self, token: str, now: float) -> str | None:
        """Return None for a valid access token, else why it is rejected."""
        expires_at = self.access_tokens.get(token)
        if expires_at is None:
            return "Token invalid"
        if expires_at <= now:
            return "Token expired"
        return None


@dataclass
class FaultRule:
    """A scripted fault for the next requests of one target."""

    kind: str
    target: str = "query"
    remaining: int | None = None
    fraction: float | None = None
    delay_seconds: float = 130.0
    code: str | None = None
    injected: int = 0

    def applies_to(self, endpoint: str) -> bool:
        """Return whether a request to the endpoint is in this rule's target."""
        if self.target == "any":
            return True
        if self.target == "api":
            return endpoint in API_ENDPOINTS
        return self.target == endpoint


class FaultPlan:
    """Scripted faults, checked in the order they were added."""

    def __init__(self, seed: int = 0) -> None:
        self.rules: list[FaultRule] = []
        self.random = random.Random(seed)

    def add(self, kind: str, count: int | None = None, fraction: float | None = None,
            target: str = "query", delay_seconds: float = 130.0,
            code: str | None = None) -> FaultRule:
        """Add a rule; without count or fraction it hits the next request only.

        Raises:
            ValueError: unknown kind or target, or an impossible count or fraction.
        """
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        if target not in FAULT_TARGETS:
            raise ValueError(f"unknown fault target {target!r}; known: {sorted(FAULT_TARGETS)}")
        if count is None and fraction is None:
            count = 1
        if count is not None and count < 1:
            raise ValueError("count must be 1 or more")
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        rule = FaultRule(kind=kind, target=target, remaining=count, fraction=fraction,
                         delay_seconds=delay_seconds, code=code)
        self.rules.append(rule)
        return rule

    def take(self, endpoint: str) -> FaultRule | None:
        """Return the fault for this request, if any, and use it up."""
        for rule in list(self.rules):
            if not rule.applies_to(endpoint):
                continue
            if rule.fraction is not None and self.random.random() >= rule.fraction:
                continue
            rule.injected += 1
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self.rules.remove(rule)
            return rule
        return None

    def clear(self) -> None:
        """Remove all rules."""
        self.rules.clear()


class RateLimiter:
    """QBO's per-realm limits: requests per minute and second, and in flight."""

    def __init__(self) -> None:
        self.recent: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque)
        self.recent_batches: dict[str, collections.deque[float]] = (
            collections.defaultdict(collections.deque))
        self.in_flight: dict[str, int] = collections.defaultdict(int)
        self.throttled = 0
        # Rejected requests per limit ("in_flight", "per_minute", ...).
        self.rejections: collections.Counter[str] = collections.Counter()

    @staticmethod
    def _count_since(window: collections.deque[float], since: float) -> int:
        return sum(1 for moment in window if moment > since)

    def admit(self, realm: str, settings: Settings, cost: int = 1,
              batch: bool = False) -> bool:
        """Record a request if every limit allows it; return False to throttle."""
        return self.rejecting_limit(realm, settings, cost=cost, batch=batch) is None

    def rejecting_limit(self, realm: str, settings: Settings, cost: int = 1,
                        batch: bool = False) -> str | None:
        """Record a request if every limit allows it, else name the limit it exceeds.

        Returns:
            None when the request is admitted, else the first limit it exceeds:
            ``in_flight``, ``per_minute``, ``per_second`` or ``batch_per_minute``.
        """
        now = time.monotonic()
        window = self.recent[realm]
        while window and window[0] <= now - 60:
            window.popleft()

        limit_minute = settings.requests_per_minute
        limit_second = settings.requests_per_second
        limit_flight = settings.max_concurrent
        exceeded = [name for name, over in (
            ("in_flight", limit_flight and self.in_flight[realm] >= limit_flight),
            ("per_minute", limit_minute and len(window) + cost > limit_minute),
            ("per_second", limit_second
             and self._count_since(window, now - 1) + cost > limit_second),
        ) if over]
        if batch:
            batches = self.recent_batches[realm]
            while batches and batches[0] <= now - 60:
                batches.popleft()
            if (settings.batch_requests_per_minute
                    and len(batches) >= settings.batch_requests_per_minute):
                exceeded.append("batch_per_minute")
            elif not exceeded:
                batches.append(now)

        if exceeded:
            self.throttled += 1
            self.rejections[exceeded[0]] += 1
            return exceeded[0]
        window.extend([now] * cost)
        return None

    def reset(self) -> None:
        """Forget recent requests, as if a minute had passed."""
        self.recent.clear()
        self.recent_batches.clear()


@dataclass
class ScheduledChange:
    """A change to apply right after a given query request."""

    due_after: int
    action: dict[str, Any]
    applied: bool = False
    result: Any = None


@dataclass
class RequestLog:
    """Recent requests, oldest first."""

    limit: int = 200_000
    entries: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    sequence: int = 0

    def add(self, entry: dict[str, Any]) -> None:
        """Append an entry, dropping the oldest beyond the limit."""
        self.sequence += 1
        entry["seq"] = self.sequence
        self.entries.append(entry)
        while len(self.entries) > self.limit:
            self.entries.popleft()

    def clear(self) -> None:
        """Drop all entries (sequence numbers keep growing)."""
        self.entries.clear()
