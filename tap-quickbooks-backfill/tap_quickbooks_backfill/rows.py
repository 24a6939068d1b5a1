"""QBO query responses: the few fields the tap reads, and each row's JSON as QBO sent it.

A page of 1,000 invoices is about 2.7 MB of JSON. Decoding all of it into Python
objects only to encode it again for the ``payload`` column took about a quarter
of the tap's CPU time, and turned numbers into floats (``1.10`` became ``1.1``). The
tap decodes instead the fields it uses (``Id``, ``SyncToken``, ``Active`` and
``MetaData``) and passes each row's bytes through unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t
from dataclasses import dataclass
from decimal import Decimal

import msgspec

LOGGER = logging.getLogger("tap_quickbooks_backfill.rows")


class MalformedBodyError(ValueError):
    """A response body that is not the JSON a QBO query returns."""


class _Keys(msgspec.Struct):
    """The fields of a QBO object that the tap reads. Decoding skips the others."""

    Id: t.Any = None  # noqa: N815 - QBO's names
    SyncToken: t.Any = None  # noqa: N815
    Active: t.Any = None  # noqa: N815
    MetaData: t.Any = None  # noqa: N815


@dataclass(frozen=True, slots=True)
class Row:
    """One QBO object of a query page.

    Attributes:
        id: ``Id`` as text, or ``None`` when it is missing, empty, or not a string
            or number.
        sync_token: ``SyncToken`` as QBO sent it.
        active: ``Active`` as QBO sent it (name-list entities only).
        metadata: ``MetaData``, an empty mapping when missing or not an object.
        payload: The object's JSON, byte for byte as it came from QBO.
    """

    id: str | None
    sync_token: t.Any
    active: t.Any
    metadata: t.Mapping[str, t.Any]
    payload: msgspec.Raw

    @classmethod
    def from_json(cls, raw: msgspec.Raw) -> Row:
        """Read one row from its JSON.

        Raises:
            MalformedBodyError: If the row is not a JSON object.
        """
        try:
            keys = _KEYS.decode(raw)
        except msgspec.DecodeError as exc:
            msg = f"a row is not a JSON object ({exc})"
            raise MalformedBodyError(msg) from None
        metadata = keys.MetaData if isinstance(keys.MetaData, dict) else {}
        # QBO's ids are strings. A number is read as its text, anything else as no id.
        valid_id = isinstance(keys.Id, (str, int)) and not isinstance(keys.Id, bool)
        return cls(
            id=str(keys.Id) if valid_id and keys.Id != "" else None,
            sync_token=keys.SyncToken,
            active=keys.Active,
            metadata=metadata,
            payload=raw,
        )


_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ROWS = msgspec.json.Decoder(list[msgspec.Raw])
_KEYS = msgspec.json.Decoder(_Keys)
_ANY = msgspec.json.Decoder()
_PAYLOAD = msgspec.json.Decoder(float_hook=Decimal)
_DECIMAL_ENCODER = msgspec.json.Encoder(decimal_format="number")
_NUL_ESCAPE = b"\\u0000"


def payload_object(payload: msgspec.Raw) -> t.Any:  # noqa: ANN401 - any JSON value
    """Return a payload as Python objects, numbers with a fraction as ``Decimal``."""
    return _PAYLOAD.decode(payload)


def decode_query_body(content: bytes) -> dict[str, t.Any]:
    """Decode a QBO response body, turning every array of ``QueryResponse`` into rows.

    Args:
        content: The HTTP response body.

    Returns:
        The body as Python objects, except that each array inside
        ``QueryResponse`` (the entity's rows) is a list of :class:`Row`, and
        ``QueryResponse`` itself is left as found when it is not an object.

    Raises:
        MalformedBodyError: If the body is not UTF-8 or not a JSON object, or a row
            is not an object.
    """
    try:
        # msgspec checks the UTF-8 of the strings it decodes, not of the values it
        # keeps as Raw, and target-postgres would fail on such a line later.
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"the body is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        raise MalformedBodyError(msg) from None
    try:
        top = _TOP.decode(content)
        body: dict[str, t.Any] = {}
        for key, raw in top.items():
            if key == "QueryResponse" and _starts_with(raw, b"{"):
                body[key] = _query_response(raw)
            else:
                body[key] = _ANY.decode(raw)
    except msgspec.DecodeError as exc:
        msg = f"the body is not a JSON object ({exc})"
        raise MalformedBodyError(msg) from None
    except RecursionError:
        msg = "the body nests JSON deeper than msgspec decodes"
        raise MalformedBodyError(msg) from None
    return body


def _query_response(raw: msgspec.Raw) -> dict[str, t.Any]:
    response: dict[str, t.Any] = {}
    for key, value in _TOP.decode(raw).items():
        if _starts_with(value, b"["):
            text = bytes(value)
            if b"\n" in text or b"\r" in text:
                # A payload must fit on one line of a Singer message. Dropping the
                # whitespace between tokens keeps every value as QBO wrote it.
                text = msgspec.json.format(text, indent=-1)
            rows = [Row.from_json(row) for row in _ROWS.decode(text)]
            if _NUL_ESCAPE in text:
                rows = [_without_nul(row) for row in rows]
            response[key] = rows
        else:
            response[key] = _ANY.decode(value)
    return response


def _without_nul(row: Row) -> Row:
    """Return the row with each NUL character of its payload replaced by U+FFFD.

    Postgres cannot store ``\\u0000`` in jsonb, so the row's window would fail to
    load on every run. target-postgres's ``sanitize_null_text_characters`` makes
    the same replacement, in top-level strings only.
    """
    if _NUL_ESCAPE not in bytes(row.payload):
        return row
    original = payload_object(row.payload)
    cleaned = _replace_nul(original)
    if cleaned == original:
        # The bytes were an escaped backslash followed by "u0000", not a NUL.
        return row
    LOGGER.warning(
        "QBO record %s holds NUL characters, which Postgres jsonb cannot store; "
        "its payload has U+FFFD in their place",
        row.id,
    )
    return dataclasses.replace(row, payload=msgspec.Raw(_DECIMAL_ENCODER.encode(cleaned)))


def _replace_nul(value: t.Any) -> t.Any:  # noqa: ANN401 - any JSON value
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_replace_nul(item) for item in value]
    if isinstance(value, dict):
        return {_replace_nul(key): _replace_nul(item) for key, item in value.items()}
    return value


def _starts_with(raw: msgspec.Raw, prefix: bytes) -> bool:
    # A Raw value starts at its first token, so its first byte shows the JSON type.
    return bytes(memoryview(raw)[:1]) == prefix
