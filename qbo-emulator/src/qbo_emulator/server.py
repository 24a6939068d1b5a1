"""The HTTP server: QBO API routes, the OAuth token route and the control API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from qbo_emulator import CONTROL_PREFIX, TOKEN_PATH
from qbo_emulator.company import ENTITIES, Company, CompanySpec
from qbo_emulator.control_routes import add_control_routes
from qbo_emulator.query import QueryError, execute, parse_query
from qbo_emulator.responses import (
    JSON,
    XML,
    dumps,
    fault,
    gateway_auth_fault,
    new_intuit_tid,
    processing_fault,
    system_fault,
    throttle_body,
    to_xml,
)
from qbo_emulator.state import (
    FaultPlan,
    FaultRule,
    RateLimiter,
    RequestLog,
    ScheduledChange,
    Settings,
    TokenStore,
)
from qbo_emulator.timeutil import CompanyClock

LOGGER = logging.getLogger("qbo_emulator")
ROWS_KEY = web.RequestKey("rows", int)
THROTTLE_KEY = web.RequestKey("throttled_by", str)
EXTRA_ROW_KEY = web.RequestKey("extra_row", bool)
ENTITY_PATHS = {name.lower(): name for name in ENTITIES}


class Emulator:
    """Everything one running emulator holds: company, tokens, limits, log."""

    def __init__(self, spec: CompanySpec, settings: Settings) -> None:
        settings.validate()
        self.spec = spec
        self.settings = settings
        self.clock = CompanyClock(spec.timezone)
        self.company = Company(spec, self.clock)
        self.tokens = TokenStore("", self.clock.now(), settings.refresh_token_ttl)
        self.faults = FaultPlan(settings.fault_seed)
        self.limiter = RateLimiter()
        self.log = RequestLog(limit=settings.request_log_limit)
        self.schedule: list[ScheduledChange] = []
        self.query_requests = 0
        # Rows that fail any page containing them, per entity, with the QBO error
        # code to return ("4002" or "10000").
        self.broken_records: dict[str, dict[int, str]] = {}

    def set_initial_refresh_token(self, token: str) -> None:
        """Set the refresh token accepted first (the demo token by default)."""
        self.tokens.initial_refresh_token = token
        self.tokens.reset(self.clock.now(), self.settings.refresh_token_ttl)

    def rebuild_company(self, spec: CompanySpec | None = None) -> None:
        """Replace the company by a freshly generated one."""
        if spec is not None:
            self.spec = spec
            self.clock = CompanyClock(spec.timezone, self.clock.offset_seconds)
        self.company = Company(self.spec, self.clock)
        self.schedule.clear()
        self.broken_records.clear()

    def now_text(self) -> str:
        """Return the current time as QBO's ``time`` field (ms, company offset)."""
        return self.clock.format_millis(self.clock.now())

    def apply_action(self, action: dict[str, Any]) -> Any:
        """Apply one change described as a dict (used by schedule and control).

        Raises:
            ValueError: unknown operation or entity.
            KeyError: the record does not exist.
        """
        operation = action.get("op") or action.get("action")
        entity = normalize_entity(str(action.get("entity", "")))
        company = self.company
        last_updated = parse_instant(self.clock, action.get("last_updated"))
        if operation == "create":
            created_at = parse_instant(self.clock, action.get("created_at"))
            return company.create(entity, action.get("record") or {}, created_at)
        record_id = action.get("id")
        if record_id is None:
            raise ValueError(f"action {operation!r} needs an 'id'")
        if operation == "update":
            return company.update(entity, record_id, action.get("changes") or {},
                                  last_updated)
        if operation == "deactivate":
            return company.deactivate(entity, record_id, last_updated)
        if operation == "delete":
            return company.delete(entity, record_id, last_updated)
        if operation == "void":
            return company.void(entity, record_id, last_updated)
        raise ValueError(
            f"unknown action {operation!r}; use create, update, deactivate, delete or void"
        )

    def run_due_changes(self) -> None:
        """Apply scheduled changes whose query request count has been reached."""
        for change in self.schedule:
            if not change.applied and self.query_requests >= change.due_after:
                try:
                    change.result = self.apply_action(change.action)
                except (KeyError, ValueError) as error:
                    change.result = {"error": str(error)}
                    LOGGER.warning("scheduled change %s failed: %s", change.action, error)
                change.applied = True


def normalize_entity(name: str) -> str:
    """Return the QBO entity name for any spelling (control API only).

    Raises:
        ValueError: not Invoice, Customer or Item.
    """
    entity = ENTITY_PATHS.get(name.lower())
    if entity is None:
        raise ValueError(f"unknown entity {name!r}; use Invoice, Customer or Item")
    return entity


def parse_instant(clock: CompanyClock, value: Any) -> float | None:
    """Read an instant given as epoch seconds or ISO 8601 text."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return clock.parse_literal(str(value))


# ------------------------------------------------------------------ helpers
def _response(status: int, body: bytes, content_type: str, tid: str,
              headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, body=body, content_type=content_type)
    response.headers["intuit_tid"] = tid
    if headers:
        response.headers.update(headers)
    return response


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "json" in accept.lower()


def _api_answer(emulator: Emulator, request: web.Request, status: int,
                payload: dict[str, Any], tid: str) -> web.Response:
    # QBO responds in XML unless the Accept header requests JSON.
    if _wants_json(request):
        return _response(status, dumps(payload), JSON, tid)
    return _response(status, to_xml(payload, emulator.now_text()), XML, tid)


def _reset_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 makes close() send a TCP RST instead of a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _ConnectionReset(Exception):
    """Raised after resetting a connection so no response is written."""


async def _fault_response(emulator: Emulator, request: web.Request, rule: FaultRule,
                          tid: str, endpoint: str) -> web.StreamResponse | None:
    """Return the response of an injected fault, or None to continue normally."""
    now_text = emulator.now_text()
    kind = rule.kind
    if kind == "slow":
        await asyncio.sleep(rule.delay_seconds)
        return None
    if kind == "extra_row":
        request[EXTRA_ROW_KEY] = True
        return None
    if kind == "429":
        return _response(429, throttle_body(now_text), XML, tid)
    if kind == "500":
        if endpoint == "token":
            return _response(500, dumps({"error": "server_error"}), JSON, tid)
        return _response(500, dumps(system_fault(now_text)), JSON, tid)
    if kind == "503":
        body = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
        return _response(503, body, "text/html", tid)
    if kind == "401":
        if endpoint == "token":
            return _response(401, dumps({"error": "invalid_client"}), JSON, tid)
        body = gateway_auth_fault("Token expired", int(emulator.clock.now() * 1000))
        return _response(401, dumps(body), JSON, tid)
    if kind == "fault_200":
        payload = processing_fault(now_text) if rule.code == "4002" else system_fault(
            now_text)
        return _response(200, dumps(payload), JSON, tid)
    if kind == "malformed_json":
        body = dumps({"QueryResponse": {"Invoice": [{"Id": "1", "SyncToken": "0"}]},
                      "time": now_text})
        return _response(200, body[: len(body) // 2], JSON, tid)
    if kind == "reset":
        _reset_connection(request)
        raise _ConnectionReset
    raise AssertionError(f"unhandled fault kind {kind}")


# ------------------------------------------------------------------ routing
Handler = Callable[[web.Request, str], Awaitable[tuple[int, dict[str, Any], int]]]


def build_app(emulator: Emulator) -> web.Application:
    """Create the aiohttp application serving one emulator."""
    app = web.Application(client_max_size=20 * 1024 * 1024)

    async def logged(request: web.Request, endpoint: str,
                     handler: Callable[[str], Awaitable[web.StreamResponse]],
                     query_text: str | None = None) -> web.StreamResponse:
        tid = new_intuit_tid()
        started = time.perf_counter()
        status = 0
        fault_kind: str | None = None
        response: web.StreamResponse | None = None
        try:
            rule = emulator.faults.take(endpoint)
            if rule is not None:
                fault_kind = rule.kind
                response = await _fault_response(emulator, request, rule, tid, endpoint)
            if response is None:
                response = await handler(tid)
            status = response.status
            return response
        except _ConnectionReset:
            status = 0
            return web.Response(status=204)
        finally:
            if status != 200:
                LOGGER.info("%s %s returned %s (fault %s, intuit_tid %s)", request.method,
                            request.path, status or "reset", fault_kind, tid)
            if endpoint == "query":
                emulator.query_requests += 1
                emulator.run_due_changes()
            emulator.log.add({
                "method": request.method,
                "path": request.path,
                "endpoint": endpoint,
                "query": query_text,
                "status": status,
                "fault": fault_kind,
                "rows": request.get(ROWS_KEY),
                # The limit that rejected the request with HTTP 429, if any.
                "throttled_by": request.get(THROTTLE_KEY),
                "intuit_tid": tid,
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            })

    async def api_call(request: web.Request, tid: str, realm: str,
                       work: Callable[[], tuple[int, dict[str, Any], int]],
                       cost: int = 1, batch: bool = False) -> web.StreamResponse:
        settings = emulator.settings
        now = emulator.clock.now()
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            body = gateway_auth_fault("Token invalid", int(now * 1000))
            return _response(401, dumps(body), JSON, tid)
        problem = emulator.tokens.check_access(header[len("Bearer "):].strip(), now)
        if problem is not None:
            body = gateway_auth_fault(problem, int(now * 1000))
            return _response(401, dumps(body), JSON, tid)
        if realm != settings.realm_id:
            # The token was issued for another company.
            body = gateway_auth_fault("Realm id not authorized for this token",
                                      int(now * 1000), status=403)
            return _response(403, dumps(body), JSON, tid)
        limit = emulator.limiter.rejecting_limit(realm, settings, cost=cost, batch=batch)
        if limit is not None:
            request[THROTTLE_KEY] = limit
            return _response(429, throttle_body(emulator.now_text()), XML, tid)

        emulator.limiter.in_flight[realm] += 1
        try:
            status, payload, rows = work()
            request[ROWS_KEY] = rows
            delay_ms = settings.latency_base_ms + settings.latency_per_record_ms * rows
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            return _api_answer(emulator, request, status, payload, tid)
        finally:
            emulator.limiter.in_flight[realm] -= 1

    # ------------------------------------------------------------ query
    def run_query(text: str, extra_row: bool,
                  as_json: bool = False) -> tuple[int, dict[str, Any], int]:
        now_text = emulator.now_text()
        max_start = emulator.settings.max_start_position or None
        try:
            query = parse_query(text, emulator.company, max_start)
        except QueryError as error:
            return 400, fault(error.code, error.message, error.detail, "ValidationFault",
                              now_text, element=""), 0
        if extra_row:
            query.max_results += 1
        result = execute(query, emulator.company)
        if query.count:
            return 200, {"QueryResponse": {"totalCount": result.total}, "time": now_text}, 0
        broken = emulator.broken_records.get(query.entity, {})
        for row in result.rows:
            if row in broken:
                # One bad stored record fails the whole page in QBO.
                if broken[row] == "10000":
                    return 500, system_fault(now_text), 0
                return 400, processing_fault(now_text), 0
        company = emulator.company
        if as_json:
            # orjson embeds the fragments as they are, so the page is the same bytes.
            company.encoded_cache_limit = emulator.settings.encoded_cache_mib << 20
            records: list[Any] = company.encoded_records(query.entity, result.rows)
        else:
            records = company.records(query.entity, result.rows)
        body: dict[str, Any] = {}
        if records:
            # QBO leaves the entity key out of an empty page.
            body[query.entity] = records
            body["startPosition"] = query.start_position
            body["maxResults"] = len(records)
        return 200, {"QueryResponse": body, "time": now_text}, len(records)

    async def query_route(request: web.Request) -> web.StreamResponse:
        realm = request.match_info["realm"]
        text: str | None
        content_error: str | None = None
        if request.method == "POST":
            content_type = request.headers.get("Content-Type", "")
            raw = await request.read()
            text = raw.decode("utf-8", errors="replace")
            if not content_type.lower().startswith("application/text"):
                content_error = (f"Content-Type {content_type or '(none)'} is not "
                                 "supported: send the query as application/text")
        else:
            text = request.query.get("query")

        async def handle(tid: str) -> web.StreamResponse:
            if content_error is not None:
                payload = fault("4000", "Error parsing query", content_error,
                                "ValidationFault", emulator.now_text(), element="")
                return _response(415, dumps(payload), JSON, tid)
            extra_row = bool(request.get(EXTRA_ROW_KEY))
            as_json = _wants_json(request)
            return await api_call(request, tid, realm,
                                  lambda: run_query(text or "", extra_row, as_json))

        return await logged(request, "query", handle, text)

    # -------------------------------------------------------------- cdc
    def run_cdc(entities_text: str, since_text: str) -> tuple[int, dict[str, Any], int]:
        from qbo_emulator.cdc import change_data_capture

        return change_data_capture(emulator, entities_text, since_text)

    async def cdc_route(request: web.Request) -> web.StreamResponse:
        realm = request.match_info["realm"]
        entities_text = request.query.get("entities", "")
        since_text = request.query.get("changedSince", "")

        async def handle(tid: str) -> web.StreamResponse:
            return await api_call(request, tid, realm,
                                  lambda: run_cdc(entities_text, since_text))

        return await logged(request, "cdc", handle,
                            f"entities={entities_text}&changedSince={since_text}")

    # ------------------------------------------------------------ batch
    async def batch_route(request: web.Request) -> web.StreamResponse:
        from qbo_emulator.cdc import run_batch

        realm = request.match_info["realm"]
        try:
            payload = orjson.loads(await request.read())
            items = payload["BatchItemRequest"]
            if not isinstance(items, list):
                raise TypeError("BatchItemRequest is not a list")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            items = None

        async def handle(tid: str) -> web.StreamResponse:
            now_text = emulator.now_text()
            if items is None:
                body = fault("4000", "Error parsing request",
                             "The body must be JSON with a BatchItemRequest list",
                             "ValidationFault", now_text)
                return _response(400, dumps(body), JSON, tid)
            if len(items) > emulator.settings.batch_max_items:
                body = fault("1040", "Batch size exceeds allowed limit",
                             f"{len(items)} items were sent; the maximum is "
                             f"{emulator.settings.batch_max_items}",
                             "ValidationFault", now_text)
                return _response(400, dumps(body), JSON, tid)
            # Each batch item is metered as one API call.
            return await api_call(
                request, tid, realm,
                lambda: run_batch(emulator, items, run_query),
                cost=max(1, len(items)), batch=True,
            )

        return await logged(request, "batch", handle, None)

    # ------------------------------------------------------------- read
    async def read_route(request: web.Request) -> web.StreamResponse:
        realm = request.match_info["realm"]
        entity = ENTITY_PATHS.get(request.match_info["entity"])
        record_id = request.match_info["id"]

        def work() -> tuple[int, dict[str, Any], int]:
            now_text = emulator.now_text()
            if entity is None:
                return 400, fault("4000", "Unsupported entity",
                                  f"{request.match_info['entity']} is not served",
                                  "ValidationFault", now_text), 0
            try:
                row = emulator.company.find_row(entity, record_id)
            except KeyError:
                return 400, fault("610", "Object Not Found",
                                  f"Object Not Found : Something you're trying to use "
                                  f"has been made inactive. Check the fields with "
                                  f"accounts, customers, items, vendors or employees. "
                                  f"{entity} {record_id}",
                                  "ValidationFault", now_text, element=""), 0
            return 200, {entity: emulator.company.record(entity, row),
                         "time": now_text}, 1

        async def handle(tid: str) -> web.StreamResponse:
            return await api_call(request, tid, realm, work)

        return await logged(request, "read", handle, None)

    # ------------------------------------------------------------ token
    async def token_route(request: web.Request) -> web.StreamResponse:
        form = await request.post() if request.content_type == (
            "application/x-www-form-urlencoded") else None

        async def handle(tid: str) -> web.StreamResponse:
            settings = emulator.settings
            if not _client_ok(request.headers.get("Authorization", ""), settings):
                return _response(401, dumps({"error": "invalid_client"}), JSON, tid)
            if form is None:
                return _response(400, dumps({
                    "error": "invalid_request",
                    "error_description": "send the body as application/x-www-form-urlencoded",
                }), JSON, tid)
            if form.get("grant_type") != "refresh_token":
                return _response(400, dumps({"error": "unsupported_grant_type"}), JSON, tid)
            refresh_token = str(form.get("refresh_token") or "")
            if not refresh_token:
                return _response(400, dumps({"error": "invalid_request"}), JSON, tid)
            answer = emulator.tokens.refresh(refresh_token, emulator.clock.now(), settings)
            if answer is None:
                body = {"error_description": "Token invalid", "error": "invalid_grant"}
                return _response(400, dumps(body), JSON, tid)
            return _response(200, dumps(answer), JSON, tid,
                             headers={"Cache-Control": "no-cache, no-store"})

        return await logged(request, "token", handle, None)

    async def not_found(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound(headers={"intuit_tid": new_intuit_tid()},
                               text=f"no route for {request.method} {request.path}")

    app.router.add_route("GET", "/v3/company/{realm}/query", query_route)
    app.router.add_route("POST", "/v3/company/{realm}/query", query_route)
    app.router.add_route("GET", "/v3/company/{realm}/cdc", cdc_route)
    app.router.add_route("POST", "/v3/company/{realm}/batch", batch_route)
    app.router.add_route("GET", "/v3/company/{realm}/{entity}/{id}", read_route)
    app.router.add_route("POST", TOKEN_PATH, token_route)
    add_control_routes(app, emulator, CONTROL_PREFIX)

    @web.middleware
    async def tid_everywhere(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as error:
            if "intuit_tid" not in error.headers:
                error.headers["intuit_tid"] = new_intuit_tid()
            raise
        if "intuit_tid" not in response.headers:
            response.headers["intuit_tid"] = new_intuit_tid()
        return response

    app.middlewares.append(tid_everywhere)
    return app


def _client_ok(header: str, settings: Settings) -> bool:
    if not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[len("Basic "):].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    client_id, _, client_secret = decoded.partition(":")
    return client_id == settings.client_id and client_secret == settings.client_secret


# ------------------------------------------------------------------ running
class ServerThread:
    """Runs an emulator's app on a loopback socket in a background thread."""

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start serving and wait until the socket accepts connections.

        Raises:
            RuntimeError: the server could not start (for example, port in use).
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,),
                                        name=f"qbo-emulator:{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"emulator failed to start: {self._error}") from self._error

    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            # Cancelling handlers of closed connections ends a "slow" fault once
            # the client gives up, and a short shutdown keeps stop() quick.
            runner = web.AppRunner(build_app(self.emulator), access_log=None,
                                   handle_signals=False, handler_cancellation=True,
                                   shutdown_timeout=1.0)
            loop.run_until_complete(runner.setup())
            site = web.SockSite(runner, sock)
            loop.run_until_complete(site.start())
            self._runner = runner
        except BaseException as error:  # noqa: BLE001 - reported to start()
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
