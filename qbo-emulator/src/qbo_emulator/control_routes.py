"""The control API for tests, under its own path prefix (not part of QBO)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from qbo_emulator.company import CompanySpec, RecordNotFoundError
from qbo_emulator.state import FaultPlan, ScheduledChange

if TYPE_CHECKING:
    from qbo_emulator.server import Emulator

LOGGER = logging.getLogger("qbo_emulator.control")


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload),
                        content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    payload = orjson.loads(raw)
    if not isinstance(payload, dict):
        raise ValueError("the request body must be a JSON object")
    return payload


def add_control_routes(app: web.Application, emulator: Emulator, prefix: str) -> None:
    """Register every control route on the app."""
    from qbo_emulator.server import normalize_entity

    def guarded(handler: Any) -> Any:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except RecordNotFoundError as error:
                LOGGER.warning("control %s %s failed: %s", request.method, request.path,
                               error.args[0])
                return _error(404, str(error.args[0]))
            except (ValueError, TypeError, orjson.JSONDecodeError) as error:
                LOGGER.warning("control %s %s rejected: %s", request.method, request.path,
                               error)
                return _error(400, str(error))
        return wrapper

    def entity_of(request: web.Request) -> str:
        return normalize_entity(request.match_info["entity"])

    async def health(request: web.Request) -> web.StreamResponse:
        return _json({"status": "ok", "realm_id": emulator.settings.realm_id})

    async def get_config(request: web.Request) -> web.StreamResponse:
        return _json({"settings": emulator.settings.public(),
                      "company": vars(emulator.spec),
                      "clock_offset_seconds": emulator.clock.offset_seconds,
                      "now": emulator.now_text()})

    async def set_config(request: web.Request) -> web.StreamResponse:
        changes = await _body(request)
        emulator.settings.update(changes)
        if "request_log_limit" in changes:
            emulator.log.limit = emulator.settings.request_log_limit
        if "fault_seed" in changes:
            emulator.faults.random.seed(emulator.settings.fault_seed)
        return _json({"settings": emulator.settings.public()})

    async def list_records(request: web.Request) -> web.StreamResponse:
        entity = entity_of(request)
        company = emulator.company
        table = company.table(entity)
        include_inactive = request.query.get("include_inactive", "true") != "false"
        limit = int(request.query.get("limit", "0"))
        offset = int(request.query.get("offset", "0"))
        rows = [int(row) for row in table.order_by("ids") if not table.deleted[row]
                and (include_inactive or table.active[row])]
        if limit:
            rows = rows[offset:offset + limit]
        elif offset:
            rows = rows[offset:]
        records = [company.record(entity, row) for row in rows]
        return _json({"entity": entity, "records": records})

    async def get_record(request: web.Request) -> web.StreamResponse:
        entity = entity_of(request)
        row = emulator.company.find_row(entity, request.match_info["id"])
        return _json(emulator.company.record(entity, row))

    async def counts(request: web.Request) -> web.StreamResponse:
        entity = entity_of(request)
        return _json(emulator.company.counts(entity))

    async def create(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        record = body.get("record", body)
        return _json(emulator.apply_action({
            "op": "create", "entity": entity_of(request), "record": record,
            "created_at": body.get("created_at") if "record" in body else None,
        }), 201)

    async def update(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        return _json(emulator.apply_action({
            "op": "update", "entity": entity_of(request), "id": request.match_info["id"],
            "changes": body.get("changes", {}), "last_updated": body.get("last_updated"),
        }))

    def simple(operation: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = await _body(request)
            return _json(emulator.apply_action({
                "op": operation, "entity": entity_of(request),
                "id": request.match_info["id"], "last_updated": body.get("last_updated"),
            }))
        return handler

    async def break_record(request: web.Request) -> web.StreamResponse:
        entity = entity_of(request)
        body = await _body(request)
        code = str(body.get("code", "4002"))
        if code not in {"4002", "10000"}:
            raise ValueError(f"code {code!r} is not supported: use 4002 or 10000")
        row = emulator.company.find_row(entity, request.match_info["id"])
        emulator.broken_records.setdefault(entity, {})[row] = code
        return _json({"entity": entity, "id": request.match_info["id"], "code": code})

    async def repair_record(request: web.Request) -> web.StreamResponse:
        entity = entity_of(request)
        row = emulator.company.find_row(entity, request.match_info["id"])
        emulator.broken_records.get(entity, {}).pop(row, None)
        return _json({"entity": entity, "id": request.match_info["id"], "code": None})

    async def delete(request: web.Request) -> web.StreamResponse:
        return _json(emulator.apply_action({
            "op": "delete", "entity": entity_of(request), "id": request.match_info["id"],
            "last_updated": request.query.get("deleted_at"),
        }))

    async def schedule(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        after = int(body.get("after_query_requests", 1))
        if after < 0:
            raise ValueError("after_query_requests must be 0 or more")
        action = body.get("action")
        if not isinstance(action, dict):
            raise ValueError("action must be an object such as "
                             '{"op": "update", "entity": "Invoice", "id": "1001", '
                             '"changes": {...}}')
        normalize_entity(str(action.get("entity", "")))
        change = ScheduledChange(due_after=emulator.query_requests + after, action=action)
        emulator.schedule.append(change)
        if after == 0:
            emulator.run_due_changes()
        return _json({"scheduled": len(emulator.schedule),
                      "due_after_query_request": change.due_after}, 201)

    async def list_schedule(request: web.Request) -> web.StreamResponse:
        return _json({"query_requests": emulator.query_requests, "changes": [
            {"due_after_query_request": c.due_after, "action": c.action,
             "applied": c.applied, "result": c.result}
            for c in emulator.schedule
        ]})

    async def clear_schedule(request: web.Request) -> web.StreamResponse:
        emulator.schedule.clear()
        return _json({"scheduled": 0})

    async def add_faults(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        rule = emulator.faults.add(
            kind=str(body.get("kind")),
            count=body.get("count"),
            fraction=body.get("fraction"),
            target=body.get("target", "query"),
            delay_seconds=float(body.get("delay_seconds", 130.0)),
            code=body.get("code"),
        )
        return _json({"kind": rule.kind, "target": rule.target,
                      "count": rule.remaining, "fraction": rule.fraction}, 201)

    async def list_faults(request: web.Request) -> web.StreamResponse:
        return _json({"faults": [vars(rule) for rule in emulator.faults.rules]})

    async def clear_faults(request: web.Request) -> web.StreamResponse:
        emulator.faults.clear()
        return _json({"faults": []})

    async def revoke_refresh(request: web.Request) -> web.StreamResponse:
        emulator.tokens.refresh_tokens.clear()
        return _json({"revoked": "refresh_tokens"})

    async def expire_access(request: web.Request) -> web.StreamResponse:
        emulator.tokens.access_tokens.clear()
        return _json({"revoked": "access_tokens"})

    async def reset_tokens(request: web.Request) -> web.StreamResponse:
        emulator.tokens.reset(emulator.clock.now(), emulator.settings.refresh_token_ttl)
        return _json({"reset": "tokens"})

    async def get_requests(request: web.Request) -> web.StreamResponse:
        endpoint = request.query.get("endpoint")
        since = int(request.query.get("since_seq", "0"))
        entries = [e for e in emulator.log.entries
                   if e["seq"] > since and (endpoint is None or e["endpoint"] == endpoint)]
        return _json({"requests": entries, "query_requests": emulator.query_requests,
                      "throttled": emulator.limiter.throttled,
                      "throttled_by": dict(emulator.limiter.rejections)})

    async def clear_requests(request: web.Request) -> web.StreamResponse:
        emulator.log.clear()
        return _json({"requests": []})

    async def clock(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        if "advance_seconds" in body:
            emulator.clock.offset_seconds += float(body["advance_seconds"])
        if "offset_seconds" in body:
            emulator.clock.offset_seconds = float(body["offset_seconds"])
        return _json({"now": emulator.now_text(),
                      "offset_seconds": emulator.clock.offset_seconds})

    async def reset_limits(request: web.Request) -> web.StreamResponse:
        emulator.limiter.reset()
        return _json({"reset": "limits"})

    async def reset_all(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        spec = None
        if body:
            values = vars(emulator.spec) | body
            spec = CompanySpec(**values)
        emulator.rebuild_company(spec)
        emulator.faults = FaultPlan(emulator.settings.fault_seed)
        emulator.limiter.reset()
        emulator.log.clear()
        emulator.tokens.reset(emulator.clock.now(), emulator.settings.refresh_token_ttl)
        return _json({"company": vars(emulator.spec)})

    routes = [
        ("GET", "/health", health),
        ("GET", "/config", get_config),
        ("POST", "/config", set_config),
        ("GET", "/records/{entity}", list_records),
        ("POST", "/records/{entity}", create),
        ("GET", "/records/{entity}/{id}", get_record),
        ("PATCH", "/records/{entity}/{id}", update),
        ("POST", "/records/{entity}/{id}/deactivate", simple("deactivate")),
        ("POST", "/records/{entity}/{id}/void", simple("void")),
        ("DELETE", "/records/{entity}/{id}", delete),
        ("POST", "/records/{entity}/{id}/broken", break_record),
        ("DELETE", "/records/{entity}/{id}/broken", repair_record),
        ("GET", "/counts/{entity}", counts),
        ("POST", "/schedule", schedule),
        ("GET", "/schedule", list_schedule),
        ("DELETE", "/schedule", clear_schedule),
        ("POST", "/faults", add_faults),
        ("GET", "/faults", list_faults),
        ("DELETE", "/faults", clear_faults),
        ("POST", "/tokens/revoke-refresh", revoke_refresh),
        ("POST", "/tokens/expire-access", expire_access),
        ("POST", "/tokens/reset", reset_tokens),
        ("GET", "/requests", get_requests),
        ("DELETE", "/requests", clear_requests),
        ("POST", "/clock", clock),
        ("POST", "/limits/reset", reset_limits),
        ("POST", "/reset", reset_all),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, prefix + path, guarded(handler))
