"""Singer message writer that sends stdout in blocks instead of one flush per message."""

from __future__ import annotations

import sys
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib import SingerMessageType

try:
    from typing import override  # type: ignore[attr-defined]
except ImportError:  # Python 3.11
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk.singerlib import Message

# Roughly 400 invoice records of about 2.5 KB. Large enough to cut the tap's, Meltano's and the
# target's wake-ups per record, small enough to keep the tap's memory flat.
BLOCK_BYTES = 1 << 20


class BlockMsgSpecWriter(MsgSpecWriter):
    """msgspec writer that flushes at every STATE message or once a block is full.

    singer-sdk's writers flush stdout after every message, so each record costs
    a pipe write and a wake-up of Meltano and the target. Holding records back
    until the next STATE message is safe: a STATE is only written after the
    records it covers, and it is flushed together with them.
    """

    _block: bytearray

    @override
    def write_message(self, message: Message) -> None:
        block = self.__dict__.setdefault("_block", bytearray())
        # format_message returns a buffer that msgspec reuses, so copy it now.
        block += self.format_message(message)
        if message.type == SingerMessageType.STATE or len(block) >= BLOCK_BYTES:
            self.flush_block()

    def flush_block(self) -> None:
        """Write the held messages to stdout and flush it."""
        block = self.__dict__.get("_block")
        if block:
            sys.stdout.buffer.write(block)
            block.clear()
        sys.stdout.flush()
