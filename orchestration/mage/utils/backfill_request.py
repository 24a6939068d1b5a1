"""Backfill request of one pipeline run: entity, UTC range, windows and settings.

Every value here is non-secret. Pipeline variables (the trigger's variables or
`mage run --runtime-vars`) come first, then the environment variable named in
`SETTINGS`, then the default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

# The Meltano environment that talks to the QBO emulator, and the emulator's
# demo company and default port.
DEV_ENVIRONMENT = "dev"
EMULATOR_REALM_ID = "9130357766900011"
EMULATOR_PORT = 8765

ENTITY_BY_PIPELINE = {
    "qb_invoices_backfill": "invoices",
    "qb_customers_backfill": "customers",
    "qb_items_backfill": "items",
}

# Accepted spellings of a true flag in variables and environment variables.
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
_WINDOW_SIZE_PATTERN = re.compile(r"^\s*\d+\s*[mhdw]\s*$")


class BackfillRequestError(ValueError):
    """Raised when a pipeline variable or setting is invalid or missing."""


@dataclass(frozen=True)
class Setting:
    """Non-secret setting read from a pipeline variable or an environment variable."""

    variable: str
    env_var: str
    default: str | None
    meaning: str


SETTINGS: dict[str, Setting] = {
    setting.variable: setting
    for setting in (
        Setting(
            "meltano_environment",
            "QBO_BACKFILL_MELTANO_ENVIRONMENT",
            "dev",
            "Meltano environment: dev (emulator) or prod (real QBO)",
        ),
        Setting(
            "project_root",
            "QBO_BACKFILL_PROJECT_ROOT",
            None,
            "folder of meltano.yml; default: two folders above the Mage project",
        ),
        Setting(
            "chain_window_days",
            "QBO_BACKFILL_CHAIN_WINDOW_DAYS",
            "0",
            "days per chained window, each its own Meltano run and state; "
            "0 runs the whole range at once",
        ),
        Setting(
            "full_refresh",
            "QBO_BACKFILL_FULL_REFRESH",
            "false",
            "ignore Meltano state and finished windows and extract the range again",
        ),
        Setting(
            "qbo_realm_id",
            "QBO_REALM_ID",
            None,
            "QBO company (realm) id; required with the prod environment, the "
            "emulator's demo company with dev",
        ),
        Setting(
            "qbo_emulator_url",
            "QBO_EMULATOR_URL",
            None,
            "base URL of the QBO emulator, used with the dev environment only; "
            "default: http://127.0.0.1:QBO_EMULATOR_PORT (port 8765 when unset)",
        ),
        Setting(
            "tap_window_size",
            "QBO_BACKFILL_TAP_WINDOW_SIZE",
            None,
            "length of the tap's own extraction windows inside each Meltano run, "
            "such as 7d or 12h; default: the Meltano environment's value",
        ),
    )
}


@dataclass(frozen=True)
class UtcWindow:
    """Half-open UTC interval `[start, end)`."""

    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        """Compact, file-name-safe label such as `20240101T000000Z-20240201T000000Z`."""
        return f"{_compact(self.start)}-{_compact(self.end)}"

    def __str__(self) -> str:
        return f"[{format_utc(self.start)}, {format_utc(self.end)})"


@dataclass(frozen=True)
class BackfillRequest:
    """Range, entity and settings of one pipeline run."""

    pipeline_uuid: str
    entity: str
    window: UtcWindow
    chain: tuple[UtcWindow, ...]
    meltano_environment: str
    project_root: Path
    full_refresh: bool
    qbo_realm_id: str
    qbo_emulator_url: str | None
    tap_window_size: str | None

    @property
    def meltano_job(self) -> str:
        """Meltano job of the entity, which pairs its extractor with target-postgres."""
        return f"qb_{self.entity}_backfill"

    @property
    def extractor(self) -> str:
        """Inheriting extractor that selects the entity's stream."""
        return f"tap-qb-{self.entity}"

    @property
    def extractor_env_prefix(self) -> str:
        """Prefix of the extractor's setting environment variables."""
        return f"TAP_QB_{self.entity.upper()}"

    @property
    def meltano_executable(self) -> Path:
        """Meltano in the project's virtual environment."""
        return self.project_root / ".venv" / "bin" / "meltano"

    @property
    def qbo_backfill_executable(self) -> Path:
        """Project command that validates volumetry."""
        return self.project_root / ".venv" / "bin" / "qbo-backfill"

    def to_output(self) -> dict[str, Any]:
        """Return the request as plain JSON values, the form Mage stores as block output."""
        return {
            "pipeline_uuid": self.pipeline_uuid,
            "entity": self.entity,
            "fecha_inicio": format_utc(self.window.start),
            "fecha_fin": format_utc(self.window.end),
            "chain": [
                [format_utc(window.start), format_utc(window.end)] for window in self.chain
            ],
            "meltano_environment": self.meltano_environment,
            "project_root": str(self.project_root),
            "full_refresh": self.full_refresh,
            "qbo_realm_id": self.qbo_realm_id,
            "qbo_emulator_url": self.qbo_emulator_url,
            "tap_window_size": self.tap_window_size,
        }

    @classmethod
    def from_output(cls, output: Mapping[str, Any]) -> BackfillRequest:
        """Rebuild a request from `to_output`'s value, as a downstream block receives it."""
        return cls(
            pipeline_uuid=output["pipeline_uuid"],
            entity=output["entity"],
            window=UtcWindow(
                parse_utc_instant("fecha_inicio", output["fecha_inicio"]),
                parse_utc_instant("fecha_fin", output["fecha_fin"]),
            ),
            chain=tuple(
                UtcWindow(parse_utc_instant("chain", start), parse_utc_instant("chain", end))
                for start, end in output["chain"]
            ),
            meltano_environment=output["meltano_environment"],
            project_root=Path(output["project_root"]),
            full_refresh=bool(output["full_refresh"]),
            qbo_realm_id=output["qbo_realm_id"],
            qbo_emulator_url=output["qbo_emulator_url"],
            tap_window_size=output["tap_window_size"],
        )


def format_utc(instant: datetime) -> str:
    """Format an aware datetime as ISO 8601 in UTC with a `Z` suffix."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_utc_instant(name: str, value: object) -> datetime:
    """Parse a pipeline variable holding a UTC instant in ISO 8601.

    Accepts `2024-01-01`, `2024-01-01T00:00:00`, `2024-01-01T00:00:00Z` and
    `2024-01-01T00:00:00+00:00`. A value without an offset is read as UTC,
    because the variables are defined in UTC.

    Args:
        name: Variable name, used in error messages.
        value: The variable's value, a string or a datetime.

    Returns:
        An aware datetime in UTC.

    Raises:
        BackfillRequestError: The value is missing, not ISO 8601, or has a
            non-zero UTC offset.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BackfillRequestError(
            f"pipeline variable {name} is missing: pass it in UTC ISO 8601, for example "
            f"--runtime-vars '{{\"{name}\": \"2024-01-01T00:00:00Z\"}}'"
        )

    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise BackfillRequestError(
                f"pipeline variable {name}={value!r} is not an ISO 8601 date or time: "
                "use a UTC instant such as 2024-01-01T00:00:00Z"
            ) from None
    else:
        raise BackfillRequestError(
            f"pipeline variable {name} must be an ISO 8601 string, got "
            f"{type(value).__name__} {value!r}"
        )

    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)

    if parsed.utcoffset():
        offset = parsed.strftime("%z")
        raise BackfillRequestError(
            f"pipeline variable {name}={value!r} is not in UTC "
            f"(offset {offset[:3]}:{offset[3:5]}): "
            f"pass its UTC equivalent {format_utc(parsed)} instead"
        )
    return parsed.astimezone(UTC)


def split_into_windows(window: UtcWindow, days: int) -> tuple[UtcWindow, ...]:
    """Cut a range into consecutive half-open windows of `days` days.

    The last window ends at the range's end, so windows neither overlap nor
    leave gaps. `days` of 0 returns the range as one window.
    """
    if days == 0:
        return (window,)

    step = timedelta(days=days)
    windows = []
    start = window.start
    while start < window.end:
        end = min(start + step, window.end)
        windows.append(UtcWindow(start, end))
        start = end
    return tuple(windows)


def resolve_setting(variables: Mapping[str, Any], variable: str) -> str | None:
    """Return a setting from the pipeline variables, the environment or its default."""
    setting = SETTINGS[variable]
    value = variables.get(variable)
    if value is None or value == "":
        value = os.environ.get(setting.env_var)
    if value is None or value == "":
        return setting.default
    return str(value)


def _parse_flag(variable: str, text: str | None) -> bool:
    normalized = (text or "").strip().lower()
    if normalized in _TRUE_WORDS:
        return True
    if normalized in _FALSE_WORDS:
        return False
    raise BackfillRequestError(
        f"setting {variable}={text!r} is not a boolean: use true or false"
    )


def _check_window_size(text: str | None) -> str | None:
    # Same form as the tap's window_size setting, checked here so a typo fails
    # before Meltano starts.
    if text is None:
        return None
    if not _WINDOW_SIZE_PATTERN.match(text) or int(text.strip()[:-1]) == 0:
        raise BackfillRequestError(
            f"setting tap_window_size={text!r} is invalid: use a whole number above "
            "zero and a unit m, h, d or w, for example 7d or 12h"
        )
    return text.strip()


def _parse_days(variable: str, text: str | None, *, allow_zero: bool) -> int | None:
    if text is None:
        return None
    try:
        days = int(str(text).strip())
    except ValueError:
        raise BackfillRequestError(
            f"setting {variable}={text!r} is not a whole number of days"
        ) from None
    if days < 0 or (days == 0 and not allow_zero):
        minimum = 0 if allow_zero else 1
        raise BackfillRequestError(
            f"setting {variable}={days} is out of range: use a number of days >= {minimum}"
        )
    return days


def _resolve_realm(variables: Mapping[str, Any], environment: str) -> str:
    realm = resolve_setting(variables, "qbo_realm_id")
    if realm:
        return realm.strip()
    if environment == DEV_ENVIRONMENT:
        return EMULATOR_REALM_ID
    raise BackfillRequestError(
        f"no QBO realm for Meltano environment {environment!r}: set the pipeline "
        "variable qbo_realm_id or the environment variable QBO_REALM_ID to the "
        "company's realm id"
    )


def _resolve_emulator_url(variables: Mapping[str, Any], environment: str) -> str | None:
    if environment != DEV_ENVIRONMENT:
        return None
    url = resolve_setting(variables, "qbo_emulator_url")
    if not url:
        url = f"http://127.0.0.1:{os.environ.get('QBO_EMULATOR_PORT') or EMULATOR_PORT}"
    if not url.startswith(("http://", "https://")):
        raise BackfillRequestError(
            f"setting qbo_emulator_url={url!r} is not an http(s) URL: use for "
            "example http://127.0.0.1:8765"
        )
    return url.rstrip("/")


def default_project_root(mage_project_path: str | os.PathLike[str]) -> Path:
    """Return the folder two levels above the Mage project (`orchestration/mage`)."""
    return Path(mage_project_path).resolve().parent.parent


def build_backfill_request(
    variables: Mapping[str, Any],
    *,
    pipeline_uuid: str,
    mage_project_path: str | os.PathLike[str],
    now: datetime | None = None,
) -> BackfillRequest:
    """Validate a pipeline run's variables and settings into a `BackfillRequest`.

    Args:
        variables: The block's keyword arguments (pipeline and runtime variables).
        pipeline_uuid: UUID of the running pipeline, which names the entity.
        mage_project_path: Folder of the Mage project.
        now: Current time, for tests.

    Raises:
        BackfillRequestError: A variable or setting is invalid, with what to change.
    """
    entity = ENTITY_BY_PIPELINE.get(pipeline_uuid)
    if entity is None:
        raise BackfillRequestError(
            f"pipeline {pipeline_uuid!r} has no QBO entity: expected one of "
            f"{', '.join(sorted(ENTITY_BY_PIPELINE))}"
        )

    start = parse_utc_instant("fecha_inicio", variables.get("fecha_inicio"))
    end = parse_utc_instant("fecha_fin", variables.get("fecha_fin"))
    if start >= end:
        raise BackfillRequestError(
            f"fecha_inicio {format_utc(start)} must be before fecha_fin {format_utc(end)}: "
            "the range is the half-open interval [fecha_inicio, fecha_fin)"
        )

    current = now or datetime.now(UTC)
    if end > current:
        raise BackfillRequestError(
            f"fecha_fin {format_utc(end)} is in the future (now {format_utc(current)}): "
            "use an instant in the past so the range's counts stop changing"
        )

    window = UtcWindow(start, end)
    chain_days = _parse_days(
        "chain_window_days",
        resolve_setting(variables, "chain_window_days"),
        allow_zero=True,
    )

    environment = resolve_setting(variables, "meltano_environment") or "dev"
    root_text = resolve_setting(variables, "project_root")
    project_root = (
        Path(root_text).resolve() if root_text else default_project_root(mage_project_path)
    )

    return BackfillRequest(
        pipeline_uuid=pipeline_uuid,
        entity=entity,
        window=window,
        chain=split_into_windows(window, chain_days or 0),
        meltano_environment=environment,
        project_root=project_root,
        full_refresh=_parse_flag("full_refresh", resolve_setting(variables, "full_refresh")),
        qbo_realm_id=_resolve_realm(variables, environment),
        qbo_emulator_url=_resolve_emulator_url(variables, environment),
        tap_window_size=_check_window_size(resolve_setting(variables, "tap_window_size")),
    )


def check_project_layout(request: BackfillRequest) -> None:
    """Raise when the project root lacks meltano.yml or its virtual environment."""
    if not (request.project_root / "meltano.yml").is_file():
        raise BackfillRequestError(
            f"no meltano.yml in {request.project_root}: set the pipeline variable "
            "project_root or QBO_BACKFILL_PROJECT_ROOT to the qbo-backfill project folder"
        )
    for executable in (request.meltano_executable, request.qbo_backfill_executable):
        if not os.access(executable, os.X_OK):
            raise BackfillRequestError(
                f"{executable} not found or not executable: create the project's "
                "virtual environment with `make setup` in the project folder"
            )
