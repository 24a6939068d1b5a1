"""Running the tap in-process against the QBO emulator and collecting its output."""

from __future__ import annotations

import contextlib
import io
import json
import typing as t
from collections import defaultdict
from dataclasses import dataclass, field

from tap_quickbooks_backfill.tap import TapQuickBooksBackfill

ENTITY_STREAMS = {
    "Invoice": "qb_invoices_raw",
    "Customer": "qb_customers_raw",
    "Item": "qb_items_raw",
}


def emulator_config(emu: t.Any, tmp_path: t.Any, **overrides: t.Any) -> dict[str, t.Any]:
    """A tap config pointing at a running emulator, tokens kept under tmp_path."""
    return {
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "refresh_token": emu.refresh_token,
        "realm_id": emu.realm_id,
        "api_base_url": emu.base_url,
        "token_url": emu.token_url,
        "start_date": "2020-01-01T00:00:00Z",
        "window_size": "3650d",
        "token_store_path": str(tmp_path / "tokens"),
        "throttle_wait_seconds": 0,
        # The emulator of these tests has no limit per second; the tap's own is tested
        # in test_ratelimit.py and would only slow the scans down here.
        "max_requests_per_second": 1000,
        **overrides,
    }


@dataclass
class TapRun:
    """Singer messages written by one tap run, grouped for assertions."""

    messages: list[dict[str, t.Any]] = field(default_factory=list)
    error: BaseException | None = None
    tap: TapQuickBooksBackfill | None = None

    @property
    def records(self) -> dict[str, list[dict[str, t.Any]]]:
        grouped: dict[str, list[dict[str, t.Any]]] = defaultdict(list)
        for message in self.messages:
            if message["type"] == "RECORD":
                grouped[message["stream"]].append(message["record"])
        return grouped

    def ids(self, stream: str) -> set[str]:
        return {record["id"] for record in self.records[stream]}

    @property
    def audits(self) -> list[dict[str, t.Any]]:
        return self.records["qb_extract_windows"]

    @property
    def states(self) -> list[dict[str, t.Any]]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    def bookmark(self, stream: str) -> str | None:
        if not self.states:
            return None
        entry = self.states[-1].get("bookmarks", {}).get(stream, {})
        return entry.get("replication_key_value")


def run_tap(
    config: dict[str, t.Any],
    *,
    streams: t.Iterable[str] | None = None,
    state: dict[str, t.Any] | None = None,
    expect_error: bool = False,
    deselected: t.Mapping[str, t.Iterable[str]] | None = None,
) -> TapRun:
    """Run the tap once and collect its output.

    ``streams`` selects entity streams (all by default); ``qb_extract_windows`` is
    selected with them, as Meltano's inheriting extractors do. ``deselected`` maps a
    stream to top-level properties that the catalog leaves out.
    """
    tap = TapQuickBooksBackfill(config=config, state=state or {})
    if streams is not None:
        wanted = {*streams, "qb_extract_windows"}
        for name, stream in tap.streams.items():
            stream.selected = name in wanted
    for name, properties in (deselected or {}).items():
        for prop in properties:
            tap.streams[name].metadata[("properties", prop)].selected = False
        tap.streams[name]._mask = None  # the SDK caches the selection  # noqa: SLF001

    # The tap writes bytes to sys.stdout.buffer, so stdout needs a binary buffer.
    buffer = io.BytesIO()
    stdout = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)
    run = TapRun(tap=tap)
    with contextlib.redirect_stdout(stdout):
        try:
            tap.sync_all()
        except Exception as exc:
            if not expect_error:
                raise
            run.error = exc
    stdout.flush()
    # Singer messages end at "\n" only: splitlines() would also cut at U+2028 in a payload.
    lines = buffer.getvalue().decode("utf-8").split("\n")
    run.messages = [json.loads(line) for line in lines if line]
    if expect_error and run.error is None:
        msg = "the tap run was expected to fail but succeeded"
        raise AssertionError(msg)
    return run
