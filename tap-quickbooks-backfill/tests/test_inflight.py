"""The cap on requests in flight is shared by every process of one realm on a machine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from qbo_emulator.control import ControlClient
from qbo_emulator.testing import run_emulator

from tap_quickbooks_backfill.errors import ScanCancelledError
from tap_quickbooks_backfill.inflight import RealmSlots, slot_path

from .tap_runner import emulator_config

REALM = "4620816365"
# Holds ``count`` slots in another Python process, as a second tap would, until its
# standard input closes.
_OTHER_PROCESS = textwrap.dedent(
    """
    import contextlib, sys
    from tap_quickbooks_backfill.inflight import RealmSlots

    directory, realm, slots, count = sys.argv[1:5]
    shared = RealmSlots(directory, realm, int(slots))
    with contextlib.ExitStack() as stack:
        for _ in range(int(count)):
            stack.enter_context(shared.hold())
        print("holding", flush=True)
        sys.stdin.read()
    """
)


def _hold_in_other_process(directory, slots, count) -> subprocess.Popen[str]:
    process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed script
        [sys.executable, "-c", _OTHER_PROCESS, str(directory), REALM, str(slots), str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    return process


def _free_slots(shared: RealmSlots, requested: int) -> int:
    # Take slots without waiting, release them, and return how many were free.
    slots = [shared._try_take() for _ in range(requested)]  # noqa: SLF001 - probe without waiting
    for slot in slots:
        if slot is not None:
            shared._locks[slot].release()  # noqa: SLF001
            shared._free.append(slot)  # noqa: SLF001
    return sum(slot is not None for slot in slots)


def test_other_process_slots_are_taken(tmp_path):
    other = _hold_in_other_process(tmp_path, slots=3, count=2)
    try:
        shared = RealmSlots(tmp_path, REALM, 3)
        assert _free_slots(shared, 3) == 1
    finally:
        other.communicate("", timeout=30)

    assert _free_slots(RealmSlots(tmp_path, REALM, 3), 3) == 3  # noqa: PLR2004


def test_killed_process_frees_its_slots(tmp_path):
    other = _hold_in_other_process(tmp_path, slots=2, count=2)
    shared = RealmSlots(tmp_path, REALM, 2)
    assert _free_slots(shared, 2) == 0

    other.kill()
    other.wait(timeout=30)

    assert _free_slots(shared, 2) == 2  # noqa: PLR2004


def test_threads_of_one_process_share_slots(tmp_path):
    shared = RealmSlots(tmp_path, REALM, 2, poll_seconds=0.001)
    in_flight = 0
    max_in_flight = 0
    lock = threading.Lock()

    def one_request() -> None:
        nonlocal in_flight, max_in_flight
        with shared.hold():
            with lock:
                in_flight += 1
                max_in_flight = max(max_in_flight, in_flight)
            time.sleep(0.02)
            with lock:
                in_flight -= 1

    threads = [threading.Thread(target=one_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert max_in_flight == 2  # noqa: PLR2004
    assert slot_path(tmp_path, REALM, 1).exists()


def test_wait_for_slot_ends_on_cancel(tmp_path):
    other = _hold_in_other_process(tmp_path, slots=1, count=1)
    try:
        shared = RealmSlots(tmp_path, REALM, 1)
        cancel = threading.Event()
        threading.Timer(0.1, cancel.set).start()
        with pytest.raises(ScanCancelledError), shared.hold(cancel):
            pass
    finally:
        other.communicate("", timeout=30)


def test_two_taps_share_emulator_cap(tmp_path):
    # The emulator returns HTTP 429 beyond 3 requests in flight. Two taps of the same
    # company, each allowed 3, run at once, and only the shared cap keeps them within it.
    script = textwrap.dedent(
        """
        import json, sys
        from tap_quickbooks_backfill.tap import TapQuickBooksBackfill
        config = json.loads(sys.argv[1])
        TapQuickBooksBackfill(config=config).sync_all()
        """
    )
    with run_emulator(
        invoices=600, customers=5, items=5, max_concurrent=3, latency_base_ms=40
    ) as emu:
        config = emulator_config(
            emu, tmp_path, start_date="2023-01-01T00:00:00Z",
            end_date="2025-02-01T00:00:00Z", window_size="30d", page_size=20,
            window_concurrency=3, max_concurrent_requests=3, throttle_wait_seconds=0,
        )
        runs = [
            subprocess.Popen(  # noqa: S603 - this interpreter, fixed script
                [sys.executable, "-c", script, json.dumps(config)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            for _ in range(2)
        ]
        for run in runs:
            _, errors = run.communicate(timeout=300)
            assert run.returncode == 0, errors[-2000:]
        log = ControlClient(emu.base_url).requests(endpoint="query")

    throttled = [entry for entry in log if entry.get("status") == 429]  # noqa: PLR2004
    assert len(log) > 60  # noqa: PLR2004
    assert throttled == []
