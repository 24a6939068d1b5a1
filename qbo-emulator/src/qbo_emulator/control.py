"""HTTP client of the emulator's control API, for tests in any process."""

from __future__ import annotations

from typing import Any

import requests

from qbo_emulator import CONTROL_PREFIX


class ControlError(RuntimeError):
    """The control API rejected a request."""


class ControlClient:
    """Drives a running emulator through ``/_emulator/...``.

    Args:
        base_url: the emulator's base URL, such as ``http://127.0.0.1:8765``.
        timeout: seconds to wait for each control request.
    """

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, json: Any = None,
              params: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{CONTROL_PREFIX}{path}"
        response = self.session.request(method, url, json=json, params=params,
                                        timeout=self.timeout)
        if response.status_code >= 400:
            raise ControlError(
                f"{method} {path} failed with HTTP {response.status_code}: {response.text}"
            )
        return response.json()

    # ------------------------------------------------------------- records
    def create(self, entity: str, record: dict[str, Any],
               created_at: str | float | None = None) -> dict[str, Any]:
        """Create a record (Id, SyncToken and MetaData are assigned) and return it."""
        return self._call("POST", f"/records/{entity}",
                          json={"record": record, "created_at": created_at})

    def update(self, entity: str, record_id: str | int, changes: dict[str, Any],
               last_updated: str | float | None = None) -> dict[str, Any]:
        """Change fields, bump SyncToken and set LastUpdatedTime.

        Args:
            entity: Invoice, Customer or Item.
            record_id: the record's Id.
            changes: fields to set; nested objects merge, None removes a field.
            last_updated: the new LastUpdatedTime (ISO text or epoch seconds);
                the emulator's clock ("now") when None.
        """
        return self._call("PATCH", f"/records/{entity}/{record_id}",
                          json={"changes": changes, "last_updated": last_updated})

    def deactivate(self, entity: str, record_id: str | int,
                   last_updated: str | float | None = None) -> dict[str, Any]:
        """Make a Customer or Item inactive (QBO's delete of a name)."""
        return self._call("POST", f"/records/{entity}/{record_id}/deactivate",
                          json={"last_updated": last_updated})

    def void(self, record_id: str | int,
             last_updated: str | float | None = None) -> dict[str, Any]:
        """Void an Invoice."""
        return self._call("POST", f"/records/Invoice/{record_id}/void",
                          json={"last_updated": last_updated})

    def delete(self, entity: str, record_id: str | int,
               deleted_at: str | float | None = None) -> dict[str, Any]:
        """Hard-delete an Invoice, or deactivate a Customer or Item."""
        params = {"deleted_at": deleted_at} if deleted_at is not None else None
        return self._call("DELETE", f"/records/{entity}/{record_id}", params=params)

    def break_record(self, entity: str, record_id: str | int,
                     code: str = "4002") -> dict[str, Any]:
        """Make every query page that contains the record fail, as a bad stored
        record does in QBO: ``4002`` gives HTTP 400 QueryProcessingError,
        ``10000`` gives HTTP 500 SystemFault. COUNT(*) still works."""
        return self._call("POST", f"/records/{entity}/{record_id}/broken",
                          json={"code": code})

    def repair_record(self, entity: str, record_id: str | int) -> dict[str, Any]:
        """Undo ``break_record``."""
        return self._call("DELETE", f"/records/{entity}/{record_id}/broken")

    def record(self, entity: str, record_id: str | int) -> dict[str, Any]:
        """Return the current record with that Id."""
        return self._call("GET", f"/records/{entity}/{record_id}")

    def records(self, entity: str, include_inactive: bool = True, limit: int = 0,
                offset: int = 0) -> list[dict[str, Any]]:
        """Return current live records in Id order (deleted invoices left out)."""
        params = {"include_inactive": "true" if include_inactive else "false",
                  "limit": limit, "offset": offset}
        return self._call("GET", f"/records/{entity}", params=params)["records"]

    def counts(self, entity: str) -> dict[str, int]:
        """Return counts of total, active, inactive and deleted records."""
        return self._call("GET", f"/counts/{entity}")

    # ------------------------------------------------------------ schedule
    def schedule(self, after_query_requests: int, action: dict[str, Any]) -> dict[str, Any]:
        """Apply a change right after the k-th query request from now.

        Args:
            after_query_requests: k; 0 applies the change at once.
            action: ``{"op": "update" | "create" | "deactivate" | "delete" |
                "void", "entity": ..., "id": ..., "changes": {...},
                "record": {...}, "last_updated": ...}``.
        """
        return self._call("POST", "/schedule",
                          json={"after_query_requests": after_query_requests,
                                "action": action})

    def scheduled(self) -> dict[str, Any]:
        """Return scheduled changes with whether each was applied."""
        return self._call("GET", "/schedule")

    def clear_schedule(self) -> None:
        """Drop all scheduled changes."""
        self._call("DELETE", "/schedule")

    # -------------------------------------------------------------- faults
    def inject_faults(self, kind: str | int, count: int | None = None,
                      fraction: float | None = None, target: str = "query",
                      delay_seconds: float | None = None,
                      code: str | None = None) -> dict[str, Any]:
        """Script faults on the next requests.

        Args:
            kind: ``429``, ``500``, ``503``, ``401``, ``fault_200``, ``reset``,
                ``malformed_json``, ``slow`` or ``extra_row``.
            count: how many requests get the fault (default 1 without fraction).
            fraction: share of requests that get it, chosen at random.
            target: ``query``, ``token``, ``cdc``, ``batch``, ``read``,
                ``api`` (all QBO API routes) or ``any``.
            delay_seconds: seconds a ``slow`` response waits.
            code: ``4002`` makes ``fault_200`` a QueryProcessingError.
        """
        body: dict[str, Any] = {"kind": str(kind), "count": count, "fraction": fraction,
                                "target": target, "code": code}
        if delay_seconds is not None:
            body["delay_seconds"] = delay_seconds
        return self._call("POST", "/faults", json=body)

    def faults(self) -> list[dict[str, Any]]:
        """Return the fault rules still pending."""
        return self._call("GET", "/faults")["faults"]

    def clear_faults(self) -> None:
        """Remove all pending fault rules."""
        self._call("DELETE", "/faults")

    # -------------------------------------------------------------- tokens
    def revoke_refresh_tokens(self) -> None:
        """Reject every refresh token issued so far (invalid_grant)."""
        self._call("POST", "/tokens/revoke-refresh")

    def expire_access_tokens(self) -> None:
        """Reject every access token issued so far (401)."""
        self._call("POST", "/tokens/expire-access")

    def reset_tokens(self) -> None:
        """Forget all tokens and accept the initial refresh token again."""
        self._call("POST", "/tokens/reset")

    # ------------------------------------------------------------- logging
    def requests(self, endpoint: str | None = None, since_seq: int = 0) -> list[dict[str, Any]]:
        """Return logged requests: method, path, query, status, time and more."""
        params: dict[str, Any] = {"since_seq": since_seq}
        if endpoint is not None:
            params["endpoint"] = endpoint
        return self._call("GET", "/requests", params=params)["requests"]

    def clear_requests(self) -> None:
        """Empty the request log."""
        self._call("DELETE", "/requests")

    # -------------------------------------------------------- configuration
    def set_config(self, **settings: Any) -> dict[str, Any]:
        """Change settings such as requests_per_minute, max_concurrent,
        access_token_ttl, rotation, latency_base_ms or latency_per_record_ms."""
        return self._call("POST", "/config", json=settings)["settings"]

    def config(self) -> dict[str, Any]:
        """Return settings (secret masked), company spec and clock."""
        return self._call("GET", "/config")

    def advance_clock(self, seconds: float) -> str:
        """Move the emulator's clock forward; return the new time."""
        return self._call("POST", "/clock", json={"advance_seconds": seconds})["now"]

    def reset_limits(self) -> None:
        """Forget recent requests counted by the rate limits."""
        self._call("POST", "/limits/reset")

    def reset(self, **company: Any) -> dict[str, Any]:
        """Regenerate the company (optionally with new sizes) and clear state."""
        return self._call("POST", "/reset", json=company)

    def health(self) -> dict[str, Any]:
        """Return the status and realm id of the emulator."""
        return self._call("GET", "/health")
