"""Bodies of QBO and Intuit OAuth responses, in their exact shapes."""

from __future__ import annotations

import importlib.resources
import uuid
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import orjson

JSON = "application/json"
XML = "application/xml"


def new_intuit_tid() -> str:
    """Return a transaction id like the ``intuit_tid`` header QBO sends."""
    return f"1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"


def throttle_body(time_text: str) -> bytes:
    """Return QBO's XML 429 body; QBO sends XML here even when JSON was asked."""
    template = (importlib.resources.files("qbo_emulator") / "captured" /
                "throttle_429.xml").read_text("utf-8")
    # The captured body carries the capture's time; replace it with ours.
    start = template.index('time="') + len('time="')
    end = template.index('"', start)
    return (template[:start] + time_text + template[end:]).encode("utf-8")


def fault(code: str, message: str, detail: str, fault_type: str, time_text: str,
          element: str | None = None) -> dict[str, Any]:
    """Return a Fault body as QBO's API (not its gateway) sends it."""
    error: dict[str, Any] = {"Message": message, "Detail": detail, "code": code}
    if element is not None:
        error["element"] = element
    return {"Fault": {"Error": [error], "type": fault_type}, "time": time_text}


def gateway_auth_fault(detail: str, epoch_ms: int, status: int = 401) -> dict[str, Any]:
    """Return the gateway's lower-case 401/403 body.

    QBO puts a prefix of the rejected token in ``detail``; the emulator never
    echoes a token, so the detail stops at the reason.
    """
    if status == 403:
        message = "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403"
        code, fault_type = "3100", "AUTHORIZATION"
    else:
        message = "message=AuthenticationFailed; errorCode=003200; statusCode=401"
        code, fault_type = "3200", "AUTHENTICATION"
    return {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [{"message": message, "detail": detail, "code": code,
                       "element": None}],
            "type": fault_type,
        },
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": epoch_ms,
        "status": None,
        "cdcresponse": [],
    }


def system_fault(time_text: str) -> dict[str, Any]:
    """Return the SystemFault QBO sends with an HTTP 500 (or inside a 200)."""
    return fault(
        "10000",
        "An application error has occurred while processing your request",
        "System Failure Error: An unexpected error occurred while accessing or "
        "saving your data. Please wait a few minutes and try again.",
        "SystemFault",
        time_text,
    )


def processing_fault(time_text: str) -> dict[str, Any]:
    """Return a 4002 QueryProcessingError, as when one stored record is bad."""
    return fault(
        "4002",
        "Error processing query",
        "QueryProcessingError: An error occurred while processing the query",
        "ValidationFault",
        time_text,
    )


def dumps(payload: Any) -> bytes:
    """Serialize to JSON bytes, keeping key order and float text as Python's json."""
    return orjson.dumps(payload)


def to_xml(payload: dict[str, Any], time_text: str) -> bytes:
    """Render a JSON response body as QBO's ``IntuitResponse`` XML."""
    parts = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
             f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" '
             f"time={quoteattr(time_text)}>"]
    for key, value in payload.items():
        if key != "time":
            _xml_element(parts, key, value)
    parts.append("</IntuitResponse>")
    return "".join(parts).encode("utf-8")


def _xml_element(parts: list[str], name: str, value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _xml_element(parts, name, item)
        return
    if isinstance(value, dict):
        attributes = {k: v for k, v in value.items()
                      if k in {"startPosition", "maxResults", "totalCount", "type",
                               "code", "domain", "sparse"} and not isinstance(v, dict)}
        attribute_text = "".join(f" {k}={quoteattr(_xml_text(v))}"
                                 for k, v in attributes.items())
        parts.append(f"<{name}{attribute_text}>")
        for key, child in value.items():
            if key not in attributes:
                _xml_element(parts, key, child)
        parts.append(f"</{name}>")
        return
    if value is None:
        return
    parts.append(f"<{name}>{escape(_xml_text(value))}</{name}>")


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
