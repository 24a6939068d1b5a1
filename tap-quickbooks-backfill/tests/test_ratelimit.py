"""The per-minute request limit is shared by every process of one realm on a machine."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
import time

import pytest

from tap_quickbooks_backfill.client import QBOClient
from tap_quickbooks_backfill.ratelimit import limiter_path, realm_limiter
from tap_quickbooks_backfill.settings import parse_settings

from .stub_http import ScriptedSession, count_answer, token_answer

# Acquires ``count`` requests of the limit in another Python process, as a second tap would.
# Each attempt waits at most WAIT seconds: far less than the minute a full budget frees.
WAIT = 0.2
_OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from tap_quickbooks_backfill.ratelimit import realm_limiter

    directory, realm, per_minute, count = sys.argv[1:5]
    limiter = realm_limiter(directory, realm, per_minute=int(per_minute))
    acquired = sum(limiter.try_acquire("qbo-query", timeout=0.2) for _ in range(int(count)))
    limiter.close()
    print(acquired)
    """
)


def _take_in_other_process(directory, realm, per_minute, count) -> int:
    completed = subprocess.run(  # noqa: S603 - this interpreter, fixed script
        [sys.executable, "-c", _OTHER_PROCESS, str(directory), realm, str(per_minute),
         str(count)],
        capture_output=True, text=True, check=True, timeout=120,
    )
    return int(completed.stdout.strip())


def _take_here(limiter, count) -> int:
    return sum(limiter.try_acquire("qbo-query", timeout=WAIT) for _ in range(count))


def test_second_process_gets_remainder(tmp_path):
    assert _take_in_other_process(tmp_path, "4620816365", 5, 4) == 4

    with realm_limiter(tmp_path, "4620816365", per_minute=5) as limiter:
        # An in-memory limit would allow 5 here; the shared one allows what is left.
        assert _take_here(limiter, 5) == 1


def test_later_process_finds_budget_spent(tmp_path):
    with realm_limiter(tmp_path, "4620816365", per_minute=6) as limiter:
        assert _take_here(limiter, 6) == 6

    assert _take_in_other_process(tmp_path, "4620816365", 6, 3) == 0


def test_realms_have_separate_budgets(tmp_path):
    assert _take_in_other_process(tmp_path, "111", 3, 3) == 3

    with realm_limiter(tmp_path, "222", per_minute=3) as limiter:
        assert _take_here(limiter, 3) == 3


def test_process_keeps_its_lower_limit(tmp_path):
    assert _take_in_other_process(tmp_path, "4620816365", 10, 2) == 2

    with realm_limiter(tmp_path, "4620816365", per_minute=3) as limiter:
        assert _take_here(limiter, 3) == 1


def test_limiter_file_in_private_folder(tmp_path):
    folder = tmp_path / "tokens"
    limiter = realm_limiter(folder, "4620816365", per_minute=5)
    limiter.close()

    assert limiter_path(folder, "4620816365").exists()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_client_requests_use_shared_limit(base_config, tmp_path):
    config = {
        **base_config,
        "token_store_path": str(tmp_path / "store"),
        "max_requests_per_minute": 3,
    }
    session = ScriptedSession(
        queries=[count_answer(1), count_answer(2)], tokens=[token_answer()]
    )
    client = QBOClient(parse_settings(config), session=session, sleep=lambda _: None)
    try:
        client.count_query("SELECT COUNT(*) FROM Invoice")
        client.count_query("SELECT COUNT(*) FROM Invoice")
    finally:
        client.close()

    assert _take_in_other_process(
        tmp_path / "store", config["realm_id"], 3, 3
    ) == 1


def test_per_second_limit_spaces_requests(tmp_path):
    acquired_at = []
    with realm_limiter(tmp_path, "4620816365", per_minute=450, per_second=4) as limiter:
        for _ in range(9):
            assert limiter.try_acquire("qbo-query", timeout=5)
            acquired_at.append(time.monotonic())

    gaps = [later - earlier for earlier, later in zip(acquired_at, acquired_at[1:])]
    # One request per 250 ms, less a little for the clocks' rounding to milliseconds.
    assert min(gaps) >= 0.245
    for start in acquired_at:
        assert sum(1 for moment in acquired_at if start <= moment < start + 1) <= 4


@pytest.mark.parametrize(
    ("per_minute", "per_second", "intervals"),
    [
        (450, 8, [125, 60000]),
        (450, 9, [111, 60000]),
        (450, None, [60000]),
        (5, 9, [60000]),
        (480, 8, [125]),
        (600, 10, [100]),
        (900, 10, [100]),
    ],
)
def test_rates_that_never_bind_dropped(tmp_path, per_minute, per_second, intervals):
    with realm_limiter(tmp_path, "1", per_minute=per_minute, per_second=per_second) as limiter:
        assert [rate.interval for rate in limiter.buckets()[0].rates] == intervals
