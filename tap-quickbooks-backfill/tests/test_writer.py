"""The block writer: fewer flushes, nothing held back past a STATE message."""

from __future__ import annotations

import io
import json
import sys

import pytest
from singer_sdk.singerlib import RecordMessage, StateMessage

from tap_quickbooks_backfill import writer as writer_module
from tap_quickbooks_backfill.writer import BlockMsgSpecWriter


class CountingStdout:
    """Text stdout stand-in that records bytes written and flushes."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines()]


def _patch_stdout(monkeypatch: pytest.MonkeyPatch) -> CountingStdout:
    # Patched in the test body: pytest puts its own capture back on sys.stdout
    # when the call phase starts, after fixtures ran.
    fake = CountingStdout()
    monkeypatch.setattr(sys, "stdout", fake)
    return fake


def _record(number: int) -> RecordMessage:
    return RecordMessage(stream="qb_items_raw", record={"id": str(number)})


def test_records_held_until_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_stdout = _patch_stdout(monkeypatch)
    writer = BlockMsgSpecWriter()
    for number in range(10):
        writer.write_message(_record(number))

    assert fake_stdout.buffer.getvalue() == b""

    writer.write_message(StateMessage(value={"bookmarks": {}}))

    assert fake_stdout.flushes == 1
    lines = fake_stdout.lines()
    assert [line["record"]["id"] for line in lines[:-1]] == [str(n) for n in range(10)]
    assert lines[-1]["type"] == "STATE"


def test_full_block_written_without_state(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_stdout = _patch_stdout(monkeypatch)
    monkeypatch.setattr(writer_module, "BLOCK_BYTES", 200)
    writer = BlockMsgSpecWriter()
    # About 62 bytes a record: a block fills every 4 records, so 2 of 18 stay held.
    for number in range(18):
        writer.write_message(_record(number))

    written = len(fake_stdout.lines())
    assert 0 < written < 18
    assert fake_stdout.flushes < 18

    writer.flush_block()

    assert [line["record"]["id"] for line in fake_stdout.lines()] == [str(n) for n in range(18)]
