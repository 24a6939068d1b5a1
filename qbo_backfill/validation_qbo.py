"""QBO side of validation: the tap's configuration, a client, and the queries sent.

Validation writes its own query texts instead of calling the tap's window scan,
so that a mistake in the tap's queries shows up as a mismatch instead of being
repeated. It reuses the tap's client for OAuth, the token store, retries and
rate limits, so a refresh token that QBO rotates during validation is stored
where the next tap run reads it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qbo_backfill.validation_windows import as_utc, format_utc

if TYPE_CHECKING:
    from tap_quickbooks_backfill.rows import Row

    from qbo_backfill.validation_db import QueryLog
    from qbo_backfill.validation_entities import EntitySpec, WindowField

LOGGER = logging.getLogger(__name__)

PAGE_SIZE = 1000
"""Rows asked per QBO page; 1000 is the largest MAXRESULTS that QBO accepts."""

IDS_PER_QUERY = 100
"""Ids per ``Id IN (...)`` lookup, which keeps the query text short."""

SECRET_SETTINGS = ("client_id", "client_secret", "refresh_token", "access_token")
"""Tap settings whose values must never appear in output, logs or evidence."""


class ConfigError(RuntimeError):
    """The QBO configuration could not be read."""


class QueryClient(Protocol):
    """The part of the tap's ``QBOClient`` that validation uses."""

    def query(self, text: str) -> dict[str, Any]:
        """Send one QBO query and return the decoded response body."""
        ...


@dataclass(frozen=True)
class QboRecordTimes:
    """The timestamps of one QBO record that validation compares, in UTC."""

    last_updated: datetime | None
    created: datetime | None

    def value_of(self, field: WindowField) -> datetime | None:
        """Return the value of a window field."""
        return self.last_updated if field.name == "LastUpdatedTime" else self.created


def load_tap_config(
    spec: EntitySpec,
    *,
    config_file: Path | None,
    environment: str | None,
    project_root: Path,
) -> dict[str, Any]:
    """Read the tap configuration that the entity's Meltano extractor runs with.

    With ``config_file`` the JSON file is the configuration, as for the tap's own
    ``--config``. Otherwise Meltano resolves it (``meltano.yml``, the environment,
    ``.env`` and the system database), so validation talks to the same QBO company
    with the same token store as the backfill.

    Raises:
        ConfigError: If the file or Meltano yields no usable configuration.
    """
    if config_file is not None:
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            msg = f"cannot read tap config file {config_file}: {error}"
            raise ConfigError(msg) from None
    else:
        config = _meltano_config(spec.extractor, environment, project_root)

    if not isinstance(config, dict):
        msg = "the tap configuration is not a JSON object"
        raise ConfigError(msg)
    return config


def _meltano_config(
    extractor: str, environment: str | None, project_root: Path
) -> dict[str, Any]:
    meltano = _meltano_executable()
    command = [meltano]
    if environment:
        command.append(f"--environment={environment}")
    command += ["config", "--unsafe", "print", "--format=json", extractor]

    LOGGER.info("reading the %s configuration with meltano config", extractor)
    try:
        completed = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            command,
            cwd=project_root,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        msg = f"could not run meltano to read the {extractor} configuration: {error}"
        raise ConfigError(msg) from None

    if completed.returncode != 0:
        # Meltano's error output names settings, not their values, but it is cut
        # to its last lines so a long trace does not bury the cause.
        tail = "\n".join(completed.stderr.strip().splitlines()[-5:])
        msg = (
            f"meltano config print {extractor} failed with exit code "
            f"{completed.returncode} in {project_root}: {tail}\n"
            "Check that meltano.yml is there and `meltano install` ran, or pass "
            "--tap-config FILE."
        )
        raise ConfigError(msg)
    try:
        return json.loads(completed.stdout)
    except json.JSONDecodeError:
        msg = f"meltano config print {extractor} did not print a JSON object"
        raise ConfigError(msg) from None


def _meltano_executable() -> str:
    # Meltano is installed in the same virtual environment as this package.
    beside_python = Path(sys.executable).parent / "meltano"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("meltano")
    if found is None:
        msg = "meltano is not installed: run `make setup`, or pass --tap-config FILE"
        raise ConfigError(msg)
    return found


def secret_values(config: dict[str, Any]) -> list[str]:
    """Return the configuration's secret values, for redaction and leak checks."""
    return [
        str(config[key]) for key in SECRET_SETTINGS if config.get(key) not in (None, "")
    ]


def public_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Return the settings that identify the QBO company, without any secret."""
    keys = ("environment", "api_base_url", "realm_id", "window_field", "window_size")
    return {key: config[key] for key in keys if config.get(key) not in (None, "")}


def build_client(config: dict[str, Any]) -> QueryClient:
    """Create the tap's QBO client from a tap configuration.

    Raises:
        ConfigError: If the tap is not installed in this environment.
    """
    try:
        from tap_quickbooks_backfill.client import QBOClient  # noqa: PLC0415
    except ImportError as error:
        msg = (
            f"the tap's client cannot be imported ({error}): install the tap into "
            "this virtual environment with `make setup`"
        )
        raise ConfigError(msg) from None
    return QBOClient.from_config(config)


def _window_condition(spec: EntitySpec, field: WindowField, start: datetime,
                      end: datetime) -> str:
    condition = (
        f"{field.qbo_property} >= '{format_utc(start)}' "
        f"AND {field.qbo_property} < '{format_utc(end)}'"
    )
    # Customer and Item queries return active rows only unless Active is named.
    if spec.name_list:
        condition += " AND Active IN (true, false)"
    return condition


def count_query(spec: EntitySpec, field: WindowField, start: datetime,
                end: datetime) -> str:
    """Return the QBO ``COUNT(*)`` query of one window."""
    condition = _window_condition(spec, field, start, end)
    return f"SELECT COUNT(*) FROM {spec.qbo_entity} WHERE {condition}"


def window_page_query(spec: EntitySpec, field: WindowField, start: datetime,
                      end: datetime, start_position: int) -> str:
    """Return the QBO query of one page of the records in a window."""
    condition = _window_condition(spec, field, start, end)
    return (
        f"SELECT * FROM {spec.qbo_entity} WHERE {condition} "
        f"ORDERBY {field.qbo_property} STARTPOSITION {start_position} "
        f"MAXRESULTS {PAGE_SIZE}"
    )


def ids_query(spec: EntitySpec, ids: list[str]) -> str:
    """Return the QBO query of the records with the given ids."""
    quoted = ", ".join("'" + record_id.replace("'", "\\'") + "'" for record_id in ids)
    condition = f"Id IN ({quoted})"
    if spec.name_list:
        condition += " AND Active IN (true, false)"
    return f"SELECT * FROM {spec.qbo_entity} WHERE {condition} MAXRESULTS {PAGE_SIZE}"


class QboSource:
    """QBO counts and records for validation, each query logged in a :class:`QueryLog`."""

    def __init__(self, client: QueryClient, log: QueryLog) -> None:
        """Wrap a client that sends query texts to one QBO company."""
        self._client = client
        self._log = log

    def count(self, spec: EntitySpec, field: WindowField, start: datetime,
              end: datetime) -> int:
        """Return QBO's current ``COUNT(*)`` of the records in ``[start, end)``.

        Raises:
            RuntimeError: If the response has no ``QueryResponse``.
        """
        text = count_query(spec, field, start, end)
        response = self._query(text)
        if "QueryResponse" not in response:
            msg = f"QBO answered without a QueryResponse to: {text}"
            raise RuntimeError(msg)
        # QBO may leave totalCount out of the response when nothing matches.
        return int(response["QueryResponse"].get("totalCount", 0))

    def window_records(self, spec: EntitySpec, field: WindowField, start: datetime,
                       end: datetime) -> dict[str, QboRecordTimes]:
        """Return the records that QBO has in ``[start, end)`` now, keyed by id.

        Offset paging can skip a record when another one is edited during the
        scan; callers look such ids up with :meth:`records_by_id` before calling
        them missing.
        """
        records: dict[str, QboRecordTimes] = {}
        start_position = 1
        while True:
            text = window_page_query(spec, field, start, end, start_position)
            page = self._entity_rows(spec, self._query(text))
            new_ids = 0
            for row in page:
                if row.id not in records:
                    new_ids += 1
                records[row.id] = record_times(row)

            # QBO can return more rows than asked, so only a short page ends the scan.
            if len(page) < PAGE_SIZE or new_ids == 0:
                return records
            start_position += len(page)

    def records_by_id(self, spec: EntitySpec, ids: list[str]) -> dict[str, QboRecordTimes]:
        """Return the QBO records with the given ids; absent ids are not in QBO."""
        found: dict[str, QboRecordTimes] = {}
        ordered = sorted(ids)
        for offset in range(0, len(ordered), IDS_PER_QUERY):
            chunk = ordered[offset : offset + IDS_PER_QUERY]
            for row in self._entity_rows(spec, self._query(ids_query(spec, chunk))):
                found[row.id] = record_times(row)
        return found

    def _query(self, text: str) -> dict[str, Any]:
        self._log.record_qbo(text)
        return self._client.query(text)

    @staticmethod
    def _entity_rows(spec: EntitySpec, response: dict[str, Any]) -> list[Row]:
        # QBO leaves the entity key out of an empty page instead of sending [].
        rows = response.get("QueryResponse", {}).get(spec.qbo_entity, [])
        if not isinstance(rows, list) or any(not row.id for row in rows):
            msg = (
                f"QBO answered with malformed {spec.qbo_entity} rows (not a list of "
                "objects with an Id); run the validation again later"
            )
            raise RuntimeError(msg)
        return rows


def record_times(record: Row) -> QboRecordTimes:
    """Read ``MetaData.LastUpdatedTime`` and ``MetaData.CreateTime`` of a QBO record."""
    metadata = record.metadata
    return QboRecordTimes(
        last_updated=_parse_qbo_time(metadata.get("LastUpdatedTime")),
        created=_parse_qbo_time(metadata.get("CreateTime")),
    )


def _parse_qbo_time(value: str | None) -> datetime | None:
    # QBO writes the company's local offset (for example -08:00); it is kept
    # through the conversion to UTC.
    if not value:
        return None
    return as_utc(datetime.fromisoformat(value))
