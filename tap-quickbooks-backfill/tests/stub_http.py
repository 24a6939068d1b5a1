"""A scripted stand-in for ``requests.Session``: no network, one response per request."""

from __future__ import annotations

import json
import typing as t
from collections import deque

import requests


def response(
    status: int,
    body: t.Any = None,
    *,
    text: str | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """Build a ``requests.Response`` with a JSON body (or raw text)."""
    answer = requests.Response()
    answer.status_code = status
    content = text if text is not None else ("" if body is None else json.dumps(body))
    answer._content = content.encode()
    answer.headers.update({"intuit_tid": f"tid-{status}", **(headers or {})})
    answer.encoding = "utf-8"
    return answer


def token_answer(
    access: str = "access-1",
    refresh: str = "refresh-2",
    expires_in: float = 3600,
) -> requests.Response:
    """A successful OAuth refresh answer."""
    return response(
        200,
        {
            "token_type": "bearer",
            "expires_in": expires_in,
            "refresh_token": refresh,
            "x_refresh_token_expires_in": 8726400,
            "access_token": access,
        },
    )


def page(entity: str, rows: list[dict[str, t.Any]]) -> requests.Response:
    """A query answer; QBO omits the entity key when there are no rows."""
    query_response: dict[str, t.Any] = {}
    if rows:
        query_response = {entity: rows, "startPosition": 1, "maxResults": len(rows)}
    return response(200, {"QueryResponse": query_response, "time": "2023-02-18T12:00:00-08:00"})


def count_answer(total: int) -> requests.Response:
    """A COUNT(*) answer."""
    return response(200, {"QueryResponse": {"totalCount": total}, "time": "x"})


class ScriptedSession:
    """Answers GET (queries) and POST (token refreshes) from two scripts, in order.

    A script entry may be an exception instance, which is raised instead.
    """

    def __init__(
        self,
        queries: list[t.Any] | None = None,
        tokens: list[t.Any] | None = None,
    ) -> None:
        self.queries: deque[t.Any] = deque(queries or [])
        self.tokens: deque[t.Any] = deque(tokens or [token_answer()])
        self.sent_queries: list[dict[str, t.Any]] = []
        self.sent_tokens: list[dict[str, t.Any]] = []

    def get(self, url: str, **kwargs: t.Any) -> requests.Response:
        self.sent_queries.append({"url": url, **kwargs})
        return self._next(self.queries, "query")

    def post(self, url: str, **kwargs: t.Any) -> requests.Response:
        self.sent_tokens.append({"url": url, **kwargs})
        return self._next(self.tokens, "token")

    def close(self) -> None:
        pass

    @staticmethod
    def _next(script: deque[t.Any], kind: str) -> requests.Response:
        if not script:
            msg = f"no scripted {kind} answer left"
            raise AssertionError(msg)
        item = script.popleft()
        if isinstance(item, BaseException):
            raise item
        return item
