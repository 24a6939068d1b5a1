"""The request limits per minute and per second, shared by every process of one company.

QBO counts requests per realm, not per process. Three extractors started one after
another, or three Mage pipelines started at once, would together send more than QBO
allows if each had a limit of its own. A second run would start with a full minute of
budget while QBO still counts the first run's last minute, and the 429 that follows
costs a minute's wait. The limiter therefore keeps its request log in a SQLite file beside the
token store, locked with a file lock, so every tap process on this machine that serves
one realm draws on the same budget.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyrate_limiter import Duration, Limiter, Rate, SQLiteBucket

# Table of the request log inside the limiter file.
_TABLE = "qbo_requests"
MS_PER_SECOND = 1000
MS_PER_MINUTE = 60_000
WAIT_SLACK_MS = 1


def limiter_path(directory: str | os.PathLike[str], realm_id: str) -> Path:
    """Return the path of the file that contains one realm's request log.

    Args:
        directory: The token store folder.
        realm_id: QBO company id.

    Returns:
        ``<directory>/<realm_id>.requests.sqlite``.
    """
    return Path(directory) / f"{realm_id}.requests.sqlite"


def realm_limiter(
    directory: str | os.PathLike[str],
    realm_id: str,
    *,
    per_minute: int,
    per_second: int | None = None,
) -> Limiter:
    """Build a limiter that all processes of a realm share.

    Each process checks the shared log against its own limits, so a run with lower
    limits than another still keeps to its own.

    Args:
        directory: The token store folder; created with mode 0700 when missing, so
            the log (request times only, no secrets) is private like the tokens.
        realm_id: QBO company id.
        per_minute: Requests allowed in any 60 seconds.
        per_second: Requests allowed in any second; no such limit when ``None``.

    Returns:
        A pyrate-limiter ``Limiter``; ``try_acquire(name, blocking=True)`` waits for room.
    """
    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = limiter_path(folder, realm_id)
    bucket = SQLiteBucket.init_from_file(
        _rates(per_minute, per_second),
        table=_TABLE,
        db_path=str(path),
        create_new_table=True,
        use_file_lock=True,
    )
    # pyrate-limiter sleeps 50 ms past each computed wait by default, which would
    # stretch 125 ms spacing to 175 ms. Every process here reads the same local clock,
    # so the slack is kept at 1 ms.
    return Limiter(bucket, buffer_ms=WAIT_SLACK_MS)


def _rates(per_minute: int, per_second: int | None) -> list[Rate]:
    """Return the limits that can bind, shorter interval first as pyrate-limiter wants.

    The limit per second is kept as an even spacing of one request per
    ``1/per_second`` seconds. A burst of ``per_second`` requests at the start of each
    second would also keep the limit at the client. But a few milliseconds of delay
    on the way can put two bursts into one server second, which QBO rejects with 429.
    A spacing that allows at least the minute's budget never binds, nor does a limit
    per minute that the spacing cannot reach.
    """
    minute = Rate(per_minute, Duration.MINUTE)
    if per_second is None or per_second >= per_minute:
        return [minute]
    spacing_ms = max(1, MS_PER_SECOND // per_second)
    spacing = Rate(1, spacing_ms)
    if per_minute * spacing_ms >= MS_PER_MINUTE:
        return [spacing]
    return [spacing, minute]
