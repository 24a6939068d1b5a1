"""Record pages of a window fetched ahead, kept in memory up to a limit, then on disk."""

from __future__ import annotations

import tempfile
import typing as t

import msgspec

if t.TYPE_CHECKING:
    from collections.abc import Iterator

# Pages of one window up to this size stay in memory; larger spools move to a file.
SPOOL_MEMORY_BYTES = 1024 * 1024
_LENGTH_BYTES = 8


class PageSpool:
    """An append-only sequence of record pages, read back once in order.

    A window fetched ahead of the one being emitted writes its pages here instead of
    waiting for the consumer, so every window keeps its requests going while the tap's
    memory stays bounded.
    """

    def __init__(self, memory_bytes: int = SPOOL_MEMORY_BYTES) -> None:
        """Open an empty spool.

        Args:
            memory_bytes: Size up to which the spool stays in memory.
        """
        self._file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by close()
            max_size=memory_bytes, mode="w+b", prefix="qbo-window-pages-"
        )
        self.pages = 0

    def write(self, page: list[dict[str, t.Any]]) -> None:
        """Append one page.

        Args:
            page: Raw-table records.
        """
        data = msgspec.json.encode(page)
        self._file.write(len(data).to_bytes(_LENGTH_BYTES, "little"))
        self._file.write(data)
        self.pages += 1

    def read(self) -> Iterator[list[dict[str, t.Any]]]:
        """Yield the pages in the order they were written, then close the spool.

        Yields:
            Raw-table records, one page at a time.
        """
        try:
            self._file.seek(0)
            for _ in range(self.pages):
                length = int.from_bytes(self._file.read(_LENGTH_BYTES), "little")
                yield msgspec.json.decode(self._file.read(length))
        finally:
            self.close()

    def close(self) -> None:
        """Release the memory or delete the file."""
        self._file.close()
