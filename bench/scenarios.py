"""The two benchmark scenarios: local ceiling and QBO's limits with latency."""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import math
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qbo_emulator.control import ControlClient

from bench.meltano_runs import (
    RANGE_END,
    RANGE_START,
    CommandFailedError,
    MeltanoRunner,
    ParallelCommand,
    TimedRun,
    run_target_alone,
)
from bench.procmon import ROLE_MELTANO, ROLE_TAP, ROLE_TARGET
from bench.services import (
    EMULATOR_NICENESS,
    BenchDatabase,
    EmulatorLimits,
    EmulatorProcess,
    emulator_process,
)

if TYPE_CHECKING:
    from pathlib import Path

LOGGER = logging.getLogger("bench")

# The extractor that the per-entity ones inherit from: with no select filter of its
# own, it extracts every entity in one tap process.
PARENT_EXTRACTOR = "tap-quickbooks-backfill"
# Entity name used in the Meltano plugin names, QBO entity, raw table.
ENTITIES = {
    "invoices": ("Invoice", "qb_invoices_raw"),
    "customers": ("Customer", "qb_customers_raw"),
    "items": ("Item", "qb_items_raw"),
}
# Each window adds a COUNT(*) and at most one short or repeated page. A second tied
# by more rows than a page adds two more COUNT(*) queries per pass.
ALLOWED_REQUESTS_PER_WINDOW = 3
MIB = 1024 * 1024


@dataclass(frozen=True)
class Company:
    """Sizes of a generated emulator company."""

    invoices: int
    customers: int
    items: int

    def size(self, entity: str) -> int:
        """Return the number of records of one entity (``invoices`` and so on)."""
        return int(getattr(self, entity))


@dataclass(frozen=True)
class TapOptions:
    """Tap settings that a scenario sets through ``TAP_QUICKBOOKS_BACKFILL_*``."""

    window_size: str
    page_size: int
    window_concurrency: int
    max_requests_per_minute: int
    max_requests_per_second: int
    max_concurrent_requests: int
    # nice(1) increment of the tap (``cpu_niceness``).
    cpu_niceness: int = 0
    # Window size of Customer and Item, when it differs from ``window_size``.
    name_list_window_size: str | None = None

    def environment(self) -> dict[str, str]:
        """Return the variables that set these options."""
        prefix = "TAP_QUICKBOOKS_BACKFILL_"
        environment = {
            f"{prefix}WINDOW_SIZE": self.window_size,
            f"{prefix}PAGE_SIZE": str(self.page_size),
            f"{prefix}WINDOW_CONCURRENCY": str(self.window_concurrency),
            f"{prefix}MAX_REQUESTS_PER_MINUTE": str(self.max_requests_per_minute),
            f"{prefix}MAX_REQUESTS_PER_SECOND": str(self.max_requests_per_second),
            f"{prefix}MAX_CONCURRENT_REQUESTS": str(self.max_concurrent_requests),
            f"{prefix}CPU_NICENESS": str(self.cpu_niceness),
        }
        if self.name_list_window_size:
            for entity in ("customers", "items"):
                key = f"TAP_QB_{entity.upper()}_WINDOW_SIZE"
                environment[key] = self.name_list_window_size
        return environment

    def as_dict(self) -> dict[str, Any]:
        """Return the options for the result file."""
        return {
            "window_size": self.window_size,
            "name_list_window_size": self.name_list_window_size or self.window_size,
            "page_size": self.page_size,
            "window_concurrency": self.window_concurrency,
            "max_requests_per_minute": self.max_requests_per_minute,
            "max_requests_per_second": self.max_requests_per_second,
            "max_concurrent_requests": self.max_concurrent_requests,
            "cpu_niceness": self.cpu_niceness,
        }


def range_environment(entity: str) -> dict[str, str]:
    """Return the variables that set one entity's date range to the whole company."""
    prefix = f"TAP_QB_{entity.upper()}"
    return {f"{prefix}_START_DATE": RANGE_START, f"{prefix}_END_DATE": RANGE_END}


def emulator_environment(emulator: EmulatorProcess, token_store: Path) -> dict[str, str]:
    """Return the variables that point the ``dev`` environment at ``emulator``."""
    return {
        "QBO_EMULATOR_PORT": str(emulator.port),
        "TAP_QUICKBOOKS_BACKFILL_CLIENT_ID": "demo-client-id",
        "TAP_QUICKBOOKS_BACKFILL_CLIENT_SECRET": "demo-client-secret",
        "TAP_QUICKBOOKS_BACKFILL_REFRESH_TOKEN": "demo-refresh-token",
        "TAP_QUICKBOOKS_BACKFILL_REALM_ID": emulator.realm_id,
        "TAP_QUICKBOOKS_BACKFILL_TOKEN_STORE_PATH": str(token_store),
    }


def api_figures(log: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise the emulator's request log of one run.

    Args:
        log: Entries of ``GET /_emulator/requests``: ``time`` is when the response was
            sent (UTC ISO 8601) and ``duration_ms`` how long the request took.

    Returns:
        Requests, HTTP 429 responses, rows returned, the summed request time and the wall
        time with at least one request in flight (``busy_seconds``).
    """
    intervals = []
    for entry in log:
        end = dt.datetime.fromisoformat(entry["time"]).timestamp()
        intervals.append((end - float(entry["duration_ms"]) / 1000, end))
    intervals.sort()

    busy = 0.0
    current_start, current_end = None, None
    for start, end in intervals:
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                busy += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        busy += current_end - current_start

    return {
        "requests": len(log),
        "throttled": sum(1 for entry in log if entry.get("status") == 429),  # noqa: PLR2004
        "throttled_by": dict(collections.Counter(
            entry["throttled_by"] for entry in log if entry.get("throttled_by"))),
        "rows": sum(int(entry.get("rows") or 0) for entry in log),
        "request_seconds_sum": round(sum(end - start for start, end in intervals), 3),
        "busy_seconds": round(busy, 3),
    }


def _save_request_log(log: list[dict[str, Any]], path: Path) -> None:
    """Keep the emulator's request log of a run beside its Meltano logs."""
    with path.open("w", encoding="utf-8") as out:
        for entry in log:
            out.write(json.dumps(entry) + "\n")


def requests_by_entity(log: list[dict[str, Any]], entities: list[str]) -> dict[str, int]:
    """Count the query requests of each entity, from the query text in the log."""
    counts = dict.fromkeys(entities, 0)
    for entry in log:
        words = str(entry.get("query") or "").split()
        for entity in entities:
            if ENTITIES[entity][0] in words:
                counts[entity] += 1
    return counts


def timeline_figures(log: list[dict[str, Any]], run: TimedRun) -> dict[str, Any]:
    """Place a run's requests on its wall time.

    Args:
        log: Entries of ``GET /_emulator/requests`` for the run.
        run: The timed command.

    Returns:
        Seconds from the command's start to the first request and from the last response
        to the command's end, the seconds in between, the requests per minute over
        them, and the most requests that started in any 60 seconds.
    """
    if not log:
        return {}
    starts, ends = [], []
    for entry in log:
        end = dt.datetime.fromisoformat(entry["time"]).timestamp()
        ends.append(end)
        starts.append(end - float(entry["duration_ms"]) / 1000)
    starts.sort()
    first, last = starts[0], max(ends)
    span = max(last - first, 1e-9)
    busiest, low = 0, 0
    for high, start in enumerate(starts):
        while start - starts[low] >= 60.0:  # noqa: PLR2004 - one minute
            low += 1
        busiest = max(busiest, high - low + 1)
    return {
        "before_first_request_seconds": round(first - run.started, 2),
        "after_last_answer_seconds": round(run.finished - last, 2),
        "requests_span_seconds": round(span, 2),
        "requests_per_minute_in_span": round(60.0 * len(log) / span, 1),
        "most_requests_in_60_seconds": busiest,
    }


def usage_figures(run: TimedRun) -> dict[str, Any]:
    """Return the per-role peak memory (MiB), CPU and wall seconds of a run."""
    figures: dict[str, Any] = {}
    for role, usage in sorted(run.roles.items()):
        figures[role] = {
            "processes": usage.processes,
            "peak_rss_mib": round(usage.peak_rss_bytes / MIB, 1),
            "cpu_seconds": round(usage.cpu_seconds, 2),
            "wall_seconds": round(usage.wall_seconds, 2),
        }
    return figures


def _rate(records: int, seconds: float | None) -> float | None:
    if not seconds:
        return None
    return round(records / seconds, 1)


def _check_loaded(database: BenchDatabase, entity: str, expected: int, what: str) -> None:
    table = ENTITIES[entity][1]
    loaded = database.count(table)
    if loaded != expected:
        msg = (
            f"{what}: raw.{table} holds {loaded} rows but the company has {expected} "
            f"{entity}; the benchmark figures would be wrong, see the logs in the work "
            "folder"
        )
        raise CommandFailedError(msg)


@dataclass
class LocalScenario:
    """Local ceiling: the emulator without limits or latency.

    For each entity, the tap alone writes its Singer messages to a file, and the
    target alone loads that file (the ceiling). Then ``meltano run`` does both end
    to end. With several entities, the total compares one ``meltano run`` of the
    parent extractor, which extracts them all in one tap process, with
    target-postgres alone loading one file of all their messages, so that each side
    pays one start-up. Raw tables are emptied before each load.
    """

    runner: MeltanoRunner
    database: BenchDatabase
    company: Company
    tap: TapOptions
    work_dir: Path
    measure_ceiling: bool = True
    entities: tuple[str, ...] = tuple(ENTITIES)
    checkpoints: bool = True

    def _start_clean(self) -> None:
        self.checkpoints = self.database.start_clean() and self.checkpoints

    def run(self) -> dict[str, Any]:
        """Run the scenario and return its figures."""
        limits = EmulatorLimits()
        token_store = self.work_dir / "tokens-local"
        with emulator_process(
            invoices=self.company.invoices, customers=self.company.customers,
            items=self.company.items, limits=limits,
            log_path=self.work_dir / "emulator-local.log",
            # Real QBO builds its responses on Intuit's machines. The emulator builds
            # them here, so it takes only the CPU that the tap, Meltano, the target
            # and Postgres leave on this machine's cores.
            niceness=EMULATOR_NICENESS,
        ) as emulator:
            self.runner.environment.update(emulator_environment(emulator, token_store))
            self.runner.environment.update(self.tap.environment())
            control = ControlClient(emulator.base_url)
            config_path = self.work_dir / "target-config.json"
            target_config = self.runner.dump_target_config(config_path)
            entities = {
                entity: self._run_entity(entity, emulator, control, config_path)
                for entity in self.entities
            }
            all_in_one = self._run_all_in_one(config_path) if len(self.entities) > 1 else None
            emulator_usage = {
                "cpu_seconds": round(emulator.cpu_seconds(), 2),
                "peak_rss_mib": round(emulator.peak_rss_bytes() / MIB, 1),
            }

        return {
            "emulator": limits.describe(),
            "emulator_process": emulator_usage,
            "tap_options": self.tap.as_dict(),
            "target_settings": _loader_settings(target_config),
            "checkpoint_before_each_load": self.checkpoints,
            "entities": entities,
            "total": _local_total(entities, all_in_one),
        }

    def _run_all_in_one(self, config_path: Path) -> dict[str, float]:
        figures: dict[str, float] = {}
        if self.measure_ceiling:
            LOGGER.info("all entities: target-postgres alone from one file of them all")
            combined = self.work_dir / "all.singer.jsonl"
            with combined.open("wb") as out:
                for entity in self.entities:
                    part = self.work_dir / f"{entity}.singer.jsonl"
                    with part.open("rb") as source:
                        shutil.copyfileobj(source, out)
                    part.unlink()
            self._start_clean()
            ceiling = run_target_alone(
                config_path, combined, log_path=self.work_dir / "target-alone-all.log"
            )
            self._check_all_loaded("target-postgres alone")
            combined.unlink()
            figures["ceiling_seconds"] = ceiling.wall_seconds

        LOGGER.info("all entities: meltano run %s target-postgres", PARENT_EXTRACTOR)
        streams = [ENTITIES[entity][1] for entity in self.entities]
        prefix = PARENT_EXTRACTOR.upper().replace("-", "_")
        env = {
            f"{prefix}_START_DATE": RANGE_START,
            f"{prefix}_END_DATE": RANGE_END,
            f"{prefix}__SELECT_FILTER": json.dumps([*streams, "qb_extract_windows"]),
        }
        self._start_clean()
        run = self.runner.run(
            ["run", PARENT_EXTRACTOR, "target-postgres"], label="run-all", env=env
        )
        self._check_all_loaded("meltano run of all entities")
        self.database.truncate()
        figures["end_to_end_seconds"] = run.wall_seconds
        return figures

    def _check_all_loaded(self, step: str) -> None:
        for entity in self.entities:
            _check_loaded(self.database, entity, self.company.size(entity), step)

    def _run_entity(
        self,
        entity: str,
        emulator: EmulatorProcess,
        control: ControlClient,
        config_path: Path,
    ) -> dict[str, Any]:
        expected = self.company.size(entity)
        env = range_environment(entity)
        figures: dict[str, Any] = {"records": expected}

        if self.measure_ceiling:
            LOGGER.info("%s: tap alone into a file of Singer messages", entity)
            messages = self.work_dir / f"{entity}.singer.jsonl"
            tap_alone = self.runner.run(
                ["invoke", f"tap-qb-{entity}"], label=f"tap-alone-{entity}", env=env,
                stdout_path=messages,
            )
            tap_usage = tap_alone.role(ROLE_TAP)
            figures["tap_alone"] = {
                "seconds": round(tap_usage.wall_seconds, 2) if tap_usage else None,
                "records_per_second": _rate(
                    expected, tap_usage.wall_seconds if tap_usage else None
                ),
                "messages_mib": round(messages.stat().st_size / MIB, 1),
                "usage": usage_figures(tap_alone),
            }

            LOGGER.info("%s: target-postgres alone from the file (the ceiling)", entity)
            self._start_clean()
            ceiling = run_target_alone(
                config_path, messages, log_path=self.work_dir / f"target-alone-{entity}.log"
            )
            _check_loaded(self.database, entity, expected, "target-postgres alone")
            if len(self.entities) == 1:
                messages.unlink()
            figures["ceiling"] = {
                "seconds": round(ceiling.wall_seconds, 2),
                "records_per_second": _rate(expected, ceiling.wall_seconds),
                "usage": usage_figures(ceiling),
            }

        LOGGER.info("%s: meltano run tap-qb-%s target-postgres", entity, entity)
        self._start_clean()
        control.clear_requests()
        e2e = self.runner.run(
            ["run", f"tap-qb-{entity}", "target-postgres"], label=f"run-{entity}", env=env
        )
        _check_loaded(self.database, entity, expected, "meltano run")
        api = api_figures(control.requests(endpoint="query"))
        windows = self.database.window_totals(ENTITIES[entity][0])
        allowed = math.ceil(expected / self.tap.page_size) + (
            ALLOWED_REQUESTS_PER_WINDOW * windows["windows"]
        )
        figures["end_to_end"] = {
            "seconds": round(e2e.wall_seconds, 2),
            "records_per_second": _rate(expected, e2e.wall_seconds),
            "pipeline_seconds": _round(e2e.pipeline_seconds()),
            "usage": usage_figures(e2e),
            "time_split": _time_split(e2e, api),
        }
        figures["api"] = {
            **api,
            "requests_per_1000_records": round(1000 * api["requests"] / expected, 2)
            if expected
            else None,
            "windows": windows["windows"],
            "requests_allowed": allowed,
        }
        if self.measure_ceiling:
            ceiling_rate = figures["ceiling"]["records_per_second"]
            e2e_rate = figures["end_to_end"]["records_per_second"]
            figures["ratio_to_ceiling"] = (
                round(e2e_rate / ceiling_rate, 3) if ceiling_rate and e2e_rate else None
            )
        self.database.truncate()
        return figures


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _time_split(run: TimedRun, api: dict[str, Any]) -> dict[str, Any]:
    tap = run.role(ROLE_TAP)
    target = run.role(ROLE_TARGET)
    meltano = run.role(ROLE_MELTANO)
    return {
        "tap_cpu_seconds": _round(tap.cpu_seconds if tap else None),
        "target_cpu_seconds": _round(target.cpu_seconds if target else None),
        "meltano_cpu_seconds": _round(meltano.cpu_seconds if meltano else None),
        "api_busy_seconds": api["busy_seconds"],
        "target_wall_seconds": _round(target.wall_seconds if target else None),
        "tap_wall_seconds": _round(tap.wall_seconds if tap else None),
    }


def _loader_settings(config: dict[str, Any]) -> dict[str, Any]:
    names = ("load_method", "use_copy", "batch_size_rows", "validate_records")
    return {name: config.get(name) for name in names}


def _local_total(
    entities: dict[str, dict[str, Any]], all_in_one: dict[str, float] | None
) -> dict[str, Any]:
    # Entity by entity, each run pays Meltano's, the tap's and the target's start-up,
    # which dominates the small entities and is no part of throughput. With several
    # entities the total therefore compares one run of them all with one load.
    records = sum(figures["records"] for figures in entities.values())
    if all_in_one is not None:
        e2e_seconds = all_in_one["end_to_end_seconds"]
    else:
        e2e_seconds = sum(figures["end_to_end"]["seconds"] for figures in entities.values())
    requests = sum(figures["api"]["requests"] for figures in entities.values())
    total: dict[str, Any] = {
        "records": records,
        "end_to_end_seconds": round(e2e_seconds, 2),
        "entities_in_one_run": all_in_one is not None,
        "end_to_end_one_after_another_seconds": round(
            sum(figures["end_to_end"]["seconds"] for figures in entities.values()), 2
        ),
        "end_to_end_records_per_second": _rate(records, e2e_seconds),
        "requests_per_1000_records": round(1000 * requests / records, 2) if records else None,
        "tap_peak_rss_mib": max(
            figures["end_to_end"]["usage"].get(ROLE_TAP, {}).get("peak_rss_mib", 0)
            for figures in entities.values()
        ),
        "target_peak_rss_mib": max(
            figures["end_to_end"]["usage"].get(ROLE_TARGET, {}).get("peak_rss_mib", 0)
            for figures in entities.values()
        ),
    }
    if all_in_one is not None and "ceiling_seconds" in all_in_one:
        ceiling_seconds = all_in_one["ceiling_seconds"]
        total["ceiling_one_after_another_seconds"] = round(
            sum(figures["ceiling"]["seconds"] for figures in entities.values()), 2
        )
    elif all("ceiling" in figures for figures in entities.values()):
        ceiling_seconds = sum(figures["ceiling"]["seconds"] for figures in entities.values())
    else:
        ceiling_seconds = None
    if ceiling_seconds is not None:
        total["ceiling_seconds"] = round(ceiling_seconds, 2)
        total["ceiling_records_per_second"] = _rate(records, ceiling_seconds)
        total["ratio_to_ceiling"] = (
            round(ceiling_seconds / e2e_seconds, 3) if e2e_seconds else None
        )
    return total


@dataclass
class LimitedScenario:
    """QBO's limits with a latency model: wall time against the rate-limit bound.

    By default one ``meltano run`` per entity runs at once, as the three Mage
    pipelines would, and the tap processes share the company's request limits
    through the limiter file in their common token store. Otherwise one
    ``meltano run`` extracts items, customers and invoices one after another.
    """

    runner: MeltanoRunner
    database: BenchDatabase
    company: Company
    tap: TapOptions
    limits: EmulatorLimits
    work_dir: Path
    entities: tuple[str, ...] = tuple(ENTITIES)
    # Run one `meltano run` per entity at once, as three Mage pipelines would, instead
    # of one `meltano run` that extracts the entities one after another.
    together: bool = True

    def run(self) -> dict[str, Any]:
        """Run the scenario and return its figures."""
        order = [e for e in ("items", "customers", "invoices") if e in self.entities]
        token_store = self.work_dir / "tokens-limited"
        with emulator_process(
            invoices=self.company.invoices, customers=self.company.customers,
            items=self.company.items, limits=self.limits,
            log_path=self.work_dir / "emulator-limited.log",
            # QBO's limits count requests as they arrive at Intuit. At the lowest
            # priority, the emulator would take in requests that queued while the
            # pipeline held the CPU all at once, and count them as a burst.
            niceness=0,
        ) as emulator:
            self.runner.environment.update(emulator_environment(emulator, token_store))
            self.runner.environment.update(self.tap.environment())
            control = ControlClient(emulator.base_url)
            self.database.start_clean()
            control.clear_requests()
            if self.together:
                commands = [
                    ParallelCommand(
                        args=["run", f"tap-qb-{entity}", "target-postgres"],
                        label=f"run-limited-{entity}",
                        env=range_environment(entity),
                    )
                    for entity in order
                ]
                # The taps share the cap on requests in flight through lock files
                # in the token store, as they share the limits per minute and second.
                LOGGER.info(
                    "limited: %d meltano runs at once, sharing %d requests in flight (%s)",
                    len(commands), self.tap.max_concurrent_requests, self.limits.describe(),
                )
                run = self.runner.run_together(commands)
            else:
                env: dict[str, str] = {}
                args = ["run"]
                for entity in order:
                    env.update(range_environment(entity))
                    args += [f"tap-qb-{entity}", "target-postgres"]
                LOGGER.info(
                    "limited: meltano %s (%s)", " ".join(args), self.limits.describe()
                )
                run = self.runner.run(args, label="run-limited", env=env)
            for entity in order:
                _check_loaded(self.database, entity, self.company.size(entity), "limited run")
            log = control.requests(endpoint="query")
            _save_request_log(log, self.work_dir / "requests-limited.jsonl")
            api = api_figures(log)
            api["requests_by_entity"] = requests_by_entity(log, order)
            timeline = timeline_figures(log, run)
            windows = sum(
                self.database.window_totals(ENTITIES[entity][0])["windows"]
                for entity in order
            )
        self.database.truncate()

        pages = sum(
            math.ceil(self.company.size(entity) / self.tap.page_size) for entity in order
        )
        bound = 60.0 * pages / self.limits.requests_per_minute
        records = sum(self.company.size(entity) for entity in order)
        return {
            "emulator": self.limits.describe(),
            "tap_options": self.tap.as_dict(),
            "entities_together": self.together,
            "shared_in_flight_cap": self.tap.max_concurrent_requests,
            "records": records,
            "pages_needed": pages,
            "windows": windows,
            "bound_seconds": round(bound, 2),
            "seconds": round(run.wall_seconds, 2),
            "pipeline_seconds": _round(run.pipeline_seconds()),
            "ratio_to_bound": round(run.wall_seconds / bound, 3),
            "records_per_second": _rate(records, run.wall_seconds),
            "api": api,
            "timeline": timeline,
            "usage": usage_figures(run),
        }
