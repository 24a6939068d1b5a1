"""The cap on requests in flight, shared by every process of one company on this machine.

QBO allows a company a limited number of requests in flight (10). Three extractors
running at once, each with a cap of its own, could together send 30. Each slot is
therefore a lock file in the token store folder, ``<realm_id>.in-flight-<n>.lock``:
a request goes out only while its thread holds one. A process may use the first
``max_concurrent_requests`` slots, so processes with different caps stay within the
largest. The kernel releases a dead process's locks, so a killed run leaves no slot
taken.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import typing as t
from pathlib import Path

from filelock import FileLock, Timeout

from tap_quickbooks_backfill.errors import ScanCancelledError

if t.TYPE_CHECKING:
    import os
    from collections.abc import Iterator

# Wait between two rounds over the slots when every slot is taken. It is short next
# to a QBO request (0.5 s and more in the benchmark's latency model) and costs a few
# system calls per slot and round.
POLL_SECONDS = 0.01


def slot_path(directory: str | os.PathLike[str], realm_id: str, slot: int) -> Path:
    """Return the lock file of one slot: ``<directory>/<realm_id>.in-flight-<slot>.lock``."""
    return Path(directory) / f"{realm_id}.in-flight-{slot}.lock"


class RealmSlots:
    """Slots for requests in flight, counted across the processes of one company."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        realm_id: str,
        slots: int,
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        """Prepare ``slots`` lock files; none is locked until a request needs it.

        Args:
            directory: The token store folder; created with mode 0700 when missing.
            realm_id: QBO company id.
            slots: Requests this process may have in flight, at least 1.
            poll_seconds: Wait between two rounds over the slots when all are taken.
        """
        folder = Path(directory)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # One lock object per slot, shared by this process's threads. The free list
        # below keeps two threads off the same slot, and the file lock keeps other
        # processes off it.
        self._locks = [
            FileLock(
                slot_path(folder, realm_id, slot),
                timeout=0,
                mode=0o600,
                thread_local=False,
                preserve_lock_file=True,
            )
            for slot in range(slots)
        ]
        self._free = list(range(slots))
        self._guard = threading.Lock()
        self._threads = threading.BoundedSemaphore(slots)
        self._poll_seconds = poll_seconds

    @contextlib.contextmanager
    def hold(self, cancel: threading.Event | None = None) -> Iterator[int]:
        """Wait for a free slot and hold it for the duration of the block.

        Args:
            cancel: When set while waiting, the wait ends with ``ScanCancelledError``.

        Yields:
            The slot's number.
        """
        with self._threads:
            slot = self._take(cancel)
            try:
                yield slot
            finally:
                with self._guard:
                    self._locks[slot].release()
                    self._free.append(slot)

    def _take(self, cancel: threading.Event | None) -> int:
        while True:
            slot = self._try_take()
            if slot is not None:
                return slot
            if cancel is None:
                time.sleep(self._poll_seconds)
            elif cancel.wait(self._poll_seconds):
                raise ScanCancelledError

    def _try_take(self) -> int | None:
        with self._guard:
            # A random order spreads the processes over the slots, so they do not all
            # try the same taken slot first.
            for slot in random.sample(self._free, len(self._free)):
                try:
                    self._locks[slot].acquire()
                except Timeout:
                    continue
                self._free.remove(slot)
                return slot
        return None
