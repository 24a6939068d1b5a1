"""Targets of the benchmark and its printed table."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

# End-to-end throughput as a share of target-postgres alone loading the same messages.
MIN_RATIO_TO_CEILING = 0.8
# Wall time under QBO's limits as a multiple of pages needed / requests per minute.
MAX_RATIO_TO_BOUND = 1.25


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare a result with the throughput and request targets.

    Args:
        result: The result document (``scenarios`` with ``local`` and ``limited``).

    Returns:
        One entry per target that the run measured: ``name``, ``value``,
        ``limit`` and ``met``.
    """
    checks: list[dict[str, Any]] = []
    local = result.get("scenarios", {}).get("local")
    if local:
        for entity, figures in local["entities"].items():
            api = figures["api"]
            checks.append({
                "name": f"{entity}: requests <= pages + 3 per window",
                "value": api["requests"],
                "limit": api["requests_allowed"],
                "met": api["requests"] <= api["requests_allowed"],
            })
        ratio = local["total"].get("ratio_to_ceiling")
        if ratio is not None:
            checks.append({
                "name": "local: end to end / target-postgres alone",
                "value": ratio,
                "limit": MIN_RATIO_TO_CEILING,
                "met": ratio >= MIN_RATIO_TO_CEILING,
            })

    limited = result.get("scenarios", {}).get("limited")
    if limited:
        ratio = limited["ratio_to_bound"]
        checks.append({
            "name": "limited: wall time / rate-limit bound",
            "value": ratio,
            "limit": MAX_RATIO_TO_BOUND,
            "met": ratio <= MAX_RATIO_TO_BOUND,
        })
    return checks


def _mib(usage: dict[str, Any], role: str) -> Any:  # noqa: ANN401
    return usage.get(role, {}).get("peak_rss_mib")


def _cpu(usage: dict[str, Any], role: str) -> Any:  # noqa: ANN401
    return usage.get(role, {}).get("cpu_seconds")


def _local_table(local: dict[str, Any]) -> str:
    headers = [
        "entity", "records", "e2e s", "e2e rec/s", "ceiling rec/s", "ratio",
        "tap alone rec/s", "req/1000 rec", "tap MiB", "target MiB", "tap cpu s",
        "target cpu s", "meltano cpu s", "api busy s",
    ]
    rows = []
    for entity, figures in local["entities"].items():
        e2e = figures["end_to_end"]
        usage = e2e["usage"]
        rows.append([
            entity,
            figures["records"],
            e2e["seconds"],
            e2e["records_per_second"],
            figures.get("ceiling", {}).get("records_per_second"),
            figures.get("ratio_to_ceiling"),
            figures.get("tap_alone", {}).get("records_per_second"),
            figures["api"]["requests_per_1000_records"],
            _mib(usage, "tap"),
            _mib(usage, "target"),
            _cpu(usage, "tap"),
            _cpu(usage, "target"),
            _cpu(usage, "meltano"),
            e2e["time_split"]["api_busy_seconds"],
        ])
    total = local["total"]
    rows.append([
        "total",
        total["records"],
        total["end_to_end_seconds"],
        total["end_to_end_records_per_second"],
        total.get("ceiling_records_per_second"),
        total.get("ratio_to_ceiling"),
        None,
        total["requests_per_1000_records"],
        total["tap_peak_rss_mib"],
        total["target_peak_rss_mib"],
        None, None, None, None,
    ])
    settings = ", ".join(f"{k}={v}" for k, v in local["target_settings"].items())
    title = (
        f"Local scenario (emulator: {local['emulator']}; target-postgres: {settings}; "
        f"window_size {local['tap_options']['window_size']})"
    )
    table = title + "\n" + tabulate(rows, headers=headers, missingval="-")
    if local.get("checkpoint_before_each_load") is False:
        table += (
            "\nno CHECKPOINT before the loads (the administrator may not run one): "
            "where Postgres's own checkpoints fall can move a load by seconds"
        )
    if total.get("entities_in_one_run"):
        table += (
            "\ntotal: one meltano run of all entities against target-postgres alone "
            "loading one file of them all (entity by entity: end to end "
            f"{total['end_to_end_one_after_another_seconds']} s, target alone "
            f"{total.get('ceiling_one_after_another_seconds', '-')} s)"
        )
    return table


def _limited_lines(limited: dict[str, Any]) -> str:
    api = limited["api"]
    options = limited["tap_options"]
    return "\n".join([
        f"Limited scenario (emulator: {limited['emulator']}; tap: page_size "
        f"{options['page_size']}, window_size {options['window_size']} "
        f"(customers and items {options['name_list_window_size']}), "
        f"window_concurrency {options['window_concurrency']}, "
        f"max_requests_per_minute {options['max_requests_per_minute']}, "
        f"max_requests_per_second {options.get('max_requests_per_second', '-')})",
        f"  extractors {_together(limited)}",
        f"  records {limited['records']}, pages needed {limited['pages_needed']}, "
        f"windows {limited['windows']}, requests sent {api['requests']}, "
        f"HTTP 429 answers {api['throttled']}{_throttle_causes(api)}",
        f"  bound {limited['bound_seconds']} s, wall {limited['seconds']} s, "
        f"ratio {limited['ratio_to_bound']} (target <= {MAX_RATIO_TO_BOUND}), "
        f"{limited['records_per_second']} records/s",
        f"  peak RSS: tap {_mib(limited['usage'], 'tap')} MiB, target "
        f"{_mib(limited['usage'], 'target')} MiB",
        *_timeline_lines(limited.get("timeline") or {}),
    ])


def _together(limited: dict[str, Any]) -> str:
    if not limited.get("entities_together"):
        return "one after another in one meltano run"
    cap = limited.get("shared_in_flight_cap", "-")
    return f"run at once, sharing {cap} requests in flight"


def _timeline_lines(timeline: dict[str, Any]) -> list[str]:
    if not timeline:
        return []
    return [
        f"  first request after {timeline['before_first_request_seconds']} s, requests "
        f"over {timeline['requests_span_seconds']} s at "
        f"{timeline['requests_per_minute_in_span']} per minute (at most "
        f"{timeline['most_requests_in_60_seconds']} in any 60 s), end "
        f"{timeline['after_last_answer_seconds']} s after the last answer",
    ]


def render_table(result: dict[str, Any]) -> str:
    """Render the printed summary of a result.

    Args:
        result: The result document, with ``targets`` filled in.

    Returns:
        A few lines of plain text.
    """
    parts = []
    scenarios = result.get("scenarios", {})
    if "local" in scenarios:
        parts.append(_local_table(scenarios["local"]))
    if "limited" in scenarios:
        parts.append(_limited_lines(scenarios["limited"]))
    if result.get("targets"):
        rows = [
            [check["name"], check["value"], check["limit"], "met" if check["met"] else "MISSED"]
            for check in result["targets"]
        ]
        parts.append(tabulate(rows, headers=["target", "value", "limit", ""]))
    if result.get("error"):
        parts.append(f"error: {result['error']}")
    return "\n\n".join(parts)


def _throttle_causes(api: dict[str, Any]) -> str:
    """Format the emulator limits that rejected requests with HTTP 429, as " (per_second 2)"."""
    causes = api.get("throttled_by") or {}
    if not causes:
        return ""
    return " (" + ", ".join(f"{name} {count}" for name, count in sorted(causes.items())) + ")"
